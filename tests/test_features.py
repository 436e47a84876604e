"""Inception features: shapes, value ranges, sources, the cache, the TTUR graph, offline use."""

import os
import re

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from conftest import SAMPLE, shard_with_a_bad_record, smooth_image
from ghibli_keras import data, features, images
from ghibli_keras.errors import InputError


def assert_same(a, b):
    """Equal up to float32 rounding, relative to the features' scale (random-initialised
    InceptionV3 gives features of about 1e-4, so absolute tolerances would say nothing)."""
    assert np.abs(a - b).max() <= 1e-3 * np.abs(b).max()


def assert_different(a, b):
    assert np.abs(a - b).mean() >= 0.02 * np.abs(b).mean()


@pytest.fixture(scope="module")
def random_inception():
    """A random-initialised extractor and the InceptionV3 trunk inside it."""
    keras.utils.set_random_seed(0)
    built = []
    with pytest.MonkeyPatch.context() as patch:
        original = features._keras_inception
        patch.setattr(features, "_keras_inception", lambda w: built.append(original(w)) or built[-1])
        extractor = features.inception(weights=None)
    return extractor, built[0]


@pytest.fixture(scope="module")
def random_extractor(random_inception):
    return random_inception[0]


@pytest.fixture(scope="module")
def weights_file(tmp_path_factory):
    """A local weights file (random initialisation), as users pass with --inception-weights."""
    keras.utils.set_random_seed(1)
    path = tmp_path_factory.mktemp("inception") / "inception_random.weights.h5"
    features._keras_inception(None).save_weights(path)
    return path


def test_shape_and_value_ranges(random_extractor, rng):
    pictures = np.stack([smooth_image(rng, 80, 96) for _ in range(3)])  # uint8 (3, 80, 96, 3)
    from_uint8 = features.extract(pictures, random_extractor, batch_size=2)
    from_unit = features.extract(pictures / 127.5 - 1.0, random_extractor, value_range=(-1, 1))
    from_zero_one = features.extract(pictures / 255.0, random_extractor, value_range=(0, 1))
    assert from_uint8.shape == (3, features.FEATURE_DIM) and from_uint8.dtype == np.float32
    assert_same(from_unit, from_uint8)
    assert_same(from_zero_one, from_uint8)
    assert_different(from_uint8[0], from_uint8[1])  # different pictures, different rows
    assert_different(features.extract(255 - pictures, random_extractor), from_uint8)


def test_keras_inception_sees_its_own_preprocessing(random_inception, rng):
    """The features are the trunk's on x / 127.5 - 1 (keras' inception_v3.preprocess_input):
    tests comparing the extractor with itself would pass without that scaling."""
    extractor, trunk = random_inception
    pictures = np.stack([smooth_image(rng, 299, 299) for _ in range(2)])  # no resizing
    expected = trunk(pictures.astype(np.float32) / 127.5 - 1.0, training=False).numpy()
    assert_same(features.extract(pictures, extractor), expected)


def _scaled(array, value_range=None):
    """What image_dataset makes of an array: float32 (N, H, W, 3) in [0, 255]."""
    ds, count, files = features.image_dataset(array, value_range)
    assert count == len(array) and files == []
    return np.stack(list(ds.as_numpy_iterator()))


def test_array_value_ranges_are_given_not_guessed(rng):
    pictures = rng.integers(0, 256, size=(2, 5, 6, 3)).astype(np.uint8)
    expected = pictures.astype(np.float32)
    np.testing.assert_array_equal(_scaled(pictures), expected)
    unit = pictures / 127.5 - 1.0
    np.testing.assert_allclose(_scaled(unit, (-1, 1)), expected, atol=1e-3)
    # [-1, 1] data that happens to be all positive is still [-1, 1]: given, not guessed
    np.testing.assert_allclose(_scaled(np.abs(unit), (-1, 1)), (np.abs(unit) + 1) * 127.5,
                               atol=1e-3)
    np.testing.assert_allclose(_scaled(pictures / 255.0, (0, 1)), expected, atol=1e-3)
    np.testing.assert_allclose(_scaled(expected, (0, 255)), expected)
    # a generator's output a hair outside [-1, 1] is clipped into [0, 255]
    overshoot = np.clip(unit * 1.005, -1.005, 1.005)
    scaled = _scaled(overshoot, (-1, 1))
    assert scaled.min() == 0.0 and scaled.max() == 255.0
    uint16 = pictures.astype(np.uint16)
    for array, value_range, message in [
        (unit, None, r"dtype float64, values from -1 to 1, needs value_range=\(low, high\)"),
        (uint16, None, "dtype uint16, values from 0 to 255, needs value_range"),
        (pictures[:0], None, r"no images: the array has shape \(0, 5, 6, 3\)"),
        (expected, (-1, 1), r"value_range \(-1, 1\), but the images' values run from 0 to 255"),
        (pictures > 0, (0, 1), "integers or floats, got dtype bool"),
        (unit, (1, -1), "low < high"),
        (unit, (0, 1, 2), "must be \\(low, high\\)"),
        (np.full((1, 2, 2, 3), np.nan), (0, 1), "NaN or infinity"),
    ]:
        with pytest.raises(ValueError, match=message):
            features.image_dataset(array, value_range)
    np.testing.assert_array_equal(_scaled(uint16, (0, 255)), expected)  # other types: given


def test_shards_folder(random_extractor):
    real = features.extract(os.path.join(SAMPLE, "photo_test"), random_extractor, batch_size=32,
                            cache=False)
    assert real.shape == (64, features.FEATURE_DIM) and np.all(np.isfinite(real))


def test_generator_translations(random_extractor, rng):
    pictures = np.stack([smooth_image(rng, 60, 72) for _ in range(3)])  # not multiples of 4
    real = features.extract(pictures, random_extractor)
    identity = keras.Sequential([keras.Input((None, None, 3)), keras.layers.Identity()])
    same = features.extract(pictures, random_extractor,
                            transform=features.generator_transform(identity))
    assert_same(same, real)
    negative = keras.Sequential([keras.Input((None, None, 3)), keras.layers.Lambda(lambda x: -x)])
    changed = features.extract(pictures, random_extractor,
                               transform=features.generator_transform(negative))
    assert_different(changed, real)


def _pictures_and_extractor(weights_file, tmp_path, rng, monkeypatch):
    """A folder of 3 pictures, and an extractor with cached-able weights that counts its calls."""
    folder = tmp_path / "pictures"
    folder.mkdir()
    for i in range(3):
        Image.fromarray(smooth_image(rng, 48, 48)).save(folder / f"{i}.png")
    extractor = features.inception(str(weights_file))
    calls = []
    original = extractor._fn
    monkeypatch.setattr(extractor, "_fn", lambda x: calls.append(len(x)) or original(x))
    return folder, extractor, calls


def test_cache_hit_then_invalidated_by_a_changed_file(weights_file, tmp_path, rng, monkeypatch):
    folder, extractor, calls = _pictures_and_extractor(weights_file, tmp_path, rng, monkeypatch)
    assert extractor.key and "weights inception_random.weights.h5" in extractor.name
    cache = tmp_path / "cache"

    first = features.extract(folder, extractor, cache=cache)
    assert calls == [3] and len(list((cache / "features").glob("*.npy"))) == 1
    second = features.extract(folder, extractor, cache=cache)
    assert calls == [3]  # served from the cache
    np.testing.assert_array_equal(first, second)

    Image.fromarray(smooth_image(rng, 48, 48)).save(folder / "1.png")  # new content, same name
    third = features.extract(folder, extractor, cache=cache)
    assert calls == [3, 3]
    np.testing.assert_array_equal(third[0], first[0])
    assert_different(third[1], first[1])


def test_a_damaged_cache_file_is_computed_again(weights_file, tmp_path, rng, monkeypatch, caplog):
    folder, extractor, calls = _pictures_and_extractor(weights_file, tmp_path, rng, monkeypatch)
    cache = tmp_path / "cache"
    first = features.extract(folder, extractor, cache=cache)
    (path,) = (cache / "features").glob("*.npy")
    whole = path.read_bytes()
    for damage in (whole[: len(whole) // 2], whole[:50], b"",  # cut short: body, header, all
                   None):  # a whole .npy of another shape
        if damage is None:
            np.save(path, np.zeros((2, features.FEATURE_DIM), np.float32))
        else:
            path.write_bytes(damage)
        calls.clear()
        caplog.clear()
        again = features.extract(folder, extractor, cache=cache)
        assert calls == [3], damage  # computed again, not read
        np.testing.assert_allclose(again, first, rtol=1e-5)
        assert f"cached features {path} are damaged" in caplog.text
        np.testing.assert_array_equal(np.load(path), again)  # and the cache is whole again
    calls.clear()
    features.extract(folder, extractor, cache=cache)
    assert calls == []


def test_a_cache_that_cannot_be_written_is_a_warning(weights_file, tmp_path, rng, monkeypatch,
                                                     caplog):
    folder, extractor, calls = _pictures_and_extractor(weights_file, tmp_path, rng, monkeypatch)
    expected = features.extract(folder, extractor, cache=False)
    not_a_folder = tmp_path / "cache_file"
    not_a_folder.write_text("a file, not a folder")
    monkeypatch.setenv("GHIBLI_KERAS_CACHE", str(not_a_folder))
    got = features.extract(folder, extractor, description="REAL")  # cache=True: the env folder
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    assert "REAL: could not write the feature cache " + str(not_a_folder / "features") in caplog.text

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(np, "save", disk_full)
    caplog.clear()
    cache = tmp_path / "cache"
    got = features.extract(folder, extractor, cache=cache)
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    assert "No space left on device" in caplog.text
    assert list((cache / "features").iterdir()) == []  # no temporary left behind
    assert calls == [3, 3, 3]


def test_ttur_graph_is_fed_at_expand_dims_and_read_at_pool_3(tmp_path, rng):
    """A GraphDef with the TTUR graph's interface: images in [0, 255] at ExpandDims:0, resized
    and scaled inside, features at pool_3:0 of shape (N, 1, 1, 2048)."""
    projection = rng.normal(size=(3, features.FEATURE_DIM)).astype(np.float32)
    graph = tf.Graph()
    with graph.as_default():
        decoded = tf.compat.v1.placeholder(tf.float32, [None, None, 3], name="Cast")
        x = tf.expand_dims(decoded, 0, name="ExpandDims")
        x = tf.compat.v1.image.resize_bilinear(x, [299, 299], name="ResizeBilinear")
        x = (x - 128.0) / 128.0
        pooled = tf.reduce_mean(x, axis=[1, 2])  # (N, 3)
        tf.reshape(tf.matmul(pooled, projection), [-1, 1, 1, features.FEATURE_DIM], name="pool_3")
    path = tmp_path / features.TTUR_GRAPH_FILE
    path.write_bytes(graph.as_graph_def().SerializeToString())

    extractor = features.inception(str(path))
    assert "TTUR" in extractor.name
    pictures = np.stack([smooth_image(rng, 256, 256), smooth_image(rng, 256, 256)[::-1]])
    got = features.extract(pictures, extractor, cache=False)
    with tf.compat.v1.Session(graph=graph) as session:  # Kaggle's way: one raw picture at a time
        expected = np.concatenate([
            session.run("pool_3:0", {"ExpandDims:0": p[None].astype(np.float32)}) for p in pictures
        ]).reshape(2, -1)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)

    bad = tmp_path / "other.pb"
    bad.write_bytes(tf.Graph().as_graph_def().SerializeToString())
    with pytest.raises(InputError, match="ExpandDims, pool_3"):
        features.inception(str(bad))


def test_offline_and_bad_weights_messages(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))

    def offline(*args, **kwargs):  # what keras.utils.get_file raises without a network
        raise Exception("URL fetch failure on https://storage.googleapis.com/...: None -- "
                        "[Errno -2] Name or service not known")

    monkeypatch.setattr(keras.src.applications.inception_v3.file_utils, "get_file", offline)
    available, why = features.weights_available("imagenet")
    assert not available and "--inception-weights" in why
    with pytest.raises(InputError, match="URL fetch failure.*--inception-weights PATH"):
        features.inception("imagenet")
    with pytest.raises(InputError, match="no such file"):
        features.inception(str(tmp_path / "missing.h5"))
    junk = tmp_path / "junk.h5"
    junk.write_bytes(b"not weights")
    with pytest.raises(InputError, match="not InceptionV3 weights"):
        features.inception(str(junk))
    cached = features.keras_weights_cache_path()  # a copy cut short: named, and kept (Keras
    cached.parent.mkdir(parents=True)  # would delete it and, offline, fail to download it)
    cached.write_bytes(b"\x89HDF\r\n\x1a\n cut short")
    with pytest.raises(InputError, match=r"notop.h5: an incomplete or damaged copy \(18 bytes, "
                                         r"MD5 \w+, expected bcbd6486424b2319ff4ef7d526e38f63\)"):
        features.inception("imagenet")
    assert cached.is_file()


def test_weights_of_another_network_one_line_without_keras_warnings(vgg_weights_file):
    import warnings

    with warnings.catch_warnings(record=True) as caught, pytest.raises(InputError) as info:
        warnings.simplefilter("always")
        features.inception(str(vgg_weights_file))
    assert "not InceptionV3 weights" in str(info.value)
    assert re.search(r"Layer '\w+' expected 1 variables, but received 2", str(info.value))  # Keras' 2nd line
    assert "\n" not in str(info.value) and not caught  # no per-layer "Skipping nested container"


def test_source_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no pictures and no TFRecord"):
        images.resolve_files(tmp_path / "empty")
    with pytest.raises(InputError, match="matches no file"):
        images.resolve_files(str(tmp_path / "*.png"))
    kind, files = images.resolve_files(os.path.join(SAMPLE, "ghibli", "*.tfrec"))
    assert kind == "shards" and files


def test_an_unreadable_picture_or_record_is_named(random_extractor, tmp_path, rng):
    folder = tmp_path / "pictures"
    folder.mkdir()
    for i in range(3):
        Image.fromarray(smooth_image(rng, 40, 40)).save(folder / f"{i}.png")
    (folder / "1b.png").write_text("not a picture")
    with pytest.raises(InputError, match=r"1b.png: not a picture Pillow can read; remove or "
                                         r"replace it; REAL: no features were computed$"):
        features.extract(str(folder), random_extractor, cache=False, description="REAL")
    (folder / "1b.png").unlink()
    with pytest.raises(InputError, match=r"0.png: 40x40 = 1,600 pixels, more than the limit of "
                                         r"1,000 .*; REAL: no features were computed$"):
        features.extract(str(folder), random_extractor, cache=False, description="REAL",
                         max_pixels=1000)
    bad = shard_with_a_bad_record(tmp_path / "photos00-6.tfrec")
    with pytest.raises(InputError, match=r"photos00-6.tfrec: record 3 \(image_name 'p3'\): the "
                                         r"image is not a JPEG picture.*make-tfrecords"):
        features.extract(bad, random_extractor, cache=False)


# --------------------------------------------------------------------------------------------
# Where the features are used: the fid command, the training callback, the demo


def _run_cli(*args):
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", "ghibli_keras", *args], capture_output=True,
                          text=True)


def test_fid_command(tmp_path, weights_file, rng):
    for name, shift in (("real", 0), ("fake", 60)):
        (tmp_path / name).mkdir()
        for i in range(6):
            picture = np.clip(smooth_image(rng, 48, 48).astype(int) + shift, 0, 255)
            Image.fromarray(picture.astype(np.uint8)).save(tmp_path / name / f"{i}.png")
    result = _run_cli("fid", str(tmp_path / "real"), str(tmp_path / "fake"), "--kid", "--mifid",
                      "--inception-weights", str(weights_file), "--quiet", "--no-cache")
    assert result.returncode == 0, result.stderr[-2000:]
    network = "[keras.applications InceptionV3, weights inception_random.weights.h5]"
    lines = result.stdout.splitlines()
    assert "REAL: 6 images" in lines[0] and "FAKE: 6 images" in lines[0]
    for label in ("FID", "KID", "MiFID"):
        line = next(l for l in lines if l.startswith(label + " "))
        assert line.endswith(network) or network + " (memorisation" in line, line
    assert "biased upwards" in result.stdout


def test_fid_command_refuses_a_shard_set_of_one_image(tmp_path, weights_file, capsys):
    from conftest import shard_with_a_bad_record
    from ghibli_keras import cli

    (tmp_path / "one").mkdir()
    shard_with_a_bad_record(tmp_path / "one" / "p00-1.tfrec", count=1, bad=None, size=40)
    rc = cli.main(["fid", os.path.join(SAMPLE, "photo_test"), str(tmp_path / "one"),
                   "--inception-weights", str(weights_file), "--quiet", "--no-cache"])
    assert rc == 2 and "FAKE '" in capsys.readouterr().err


def test_fid_command_input_errors_are_instant(tmp_path):
    code = ("import sys, ghibli_keras_cli; rc = ghibli_keras_cli.main(sys.argv[1:]); "
            "assert 'tensorflow' not in sys.modules; sys.exit(rc)")
    import subprocess
    import sys

    (tmp_path / "empty").mkdir()
    (tmp_path / "one").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "one" / "a.png")
    (tmp_path / "bad").mkdir()  # a non-picture among pictures: named before Inception loads
    for name in ("a.png", "c.png"):
        Image.new("RGB", (8, 8)).save(tmp_path / "bad" / name)
    (tmp_path / "bad" / "b.png").write_text("not a picture")
    for args, message in [
        ([str(tmp_path / "nope"), str(tmp_path / "empty")], "REAL: '"),
        ([os.path.join(SAMPLE, "ghibli"), str(tmp_path / "empty")], "FAKE: '"),
        ([os.path.join(SAMPLE, "ghibli"), os.path.join(SAMPLE, "photo"), "--inception-weights",
          str(tmp_path / "w.h5")], "--inception-weights"),
        ([str(tmp_path / "one"), os.path.join(SAMPLE, "photo")],
         "REAL '" + str(tmp_path / "one") + "': 1 image(s); the scores compare covariances"),
        ([os.path.join(SAMPLE, "ghibli"), str(tmp_path / "bad")],
         "FAKE: " + str(tmp_path / "bad" / "b.png") + ": not a picture Pillow can read; remove or "
         "replace it"),
        ([os.path.join(SAMPLE, "ghibli"), str(tmp_path / "bad"), "--max-pixels", "60"],
         "FAKE: " + str(tmp_path / "bad" / "a.png") + ": 8x8 = 64 pixels, more than the limit "
         "of 60 (raise it with --max-pixels"),
    ]:
        result = subprocess.run([sys.executable, "-c", code, "fid", *args], capture_output=True,
                                text=True)
        assert result.returncode == 2 and message in result.stderr, result.stderr
        assert len(result.stderr.strip().splitlines()) == 1


def test_generation_metrics_callback(trained_workdir, weights_file, tmp_path):
    from ghibli_keras import callbacks

    model = keras.models.load_model(trained_workdir / "model.keras", compile=False)
    photos = np.stack(list(data.load_tfrecords(os.path.join(SAMPLE, "photo_test")).take(6)))
    extractor = features.inception(str(weights_file))
    real = features.extract(photos[::-1].copy(), extractor)
    callback = callbacks.GenerationMetrics(photos / 127.5 - 1.0, real, extractor,
                                           tmp_path / "metrics.csv", log_dir=str(tmp_path / "tb"),
                                           every=2, fid_min_images=6)
    callback.set_model(model)
    for epoch in range(4):
        callback.on_epoch_end(epoch)
    import csv

    with open(tmp_path / "metrics.csv", newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["epoch", "kid", "kid_std", "fid", "images", "network"]
    assert [r[0] for r in rows[1:]] == ["1", "3"]
    epoch, kid, kid_std, fid, images, network = rows[1]
    assert float(kid) != 0 and float(fid) > 0 and images == "6" and "InceptionV3" in network
    assert list((tmp_path / "tb" / "metrics").glob("events.out.tfevents.*"))


def test_demo_generation_scores(trained_workdir, weights_file):
    from ghibli_keras import demo

    model = keras.models.load_model(trained_workdir / "model.keras", compile=False)
    photos = np.stack(list(data.load_tfrecords(os.path.join(SAMPLE, "photo_test")).take(8)))
    styles = np.stack(list(data.load_tfrecords(os.path.join(SAMPLE, "ghibli")).take(8)))
    scores = demo.generation_scores(model.generator_g, photos, styles, str(weights_file))
    assert scores["network"].startswith("keras.applications InceptionV3")
    assert scores["kid_before"] != scores["kid_after"] and scores["fid_before"] > 0
    assert demo.generation_scores(model.generator_g, photos, styles, "/missing.h5") is None


@pytest.mark.slow
def test_training_logs_kid_every_epoch(weights_file, tmp_path):
    import csv

    from conftest import tiny_test_config
    from ghibli_keras import training

    config = tiny_test_config(**{"train.metrics_every": 1,
                                 "train.inception_weights": str(weights_file)})
    training.train(config, tmp_path / "run", verbose=0)
    with open(tmp_path / "run" / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["epoch"] for r in rows] == ["0", "1"]
    assert all(float(r["kid"]) != 0 and r["fid"] == "" and r["images"] == "64" for r in rows)


def test_training_checks_the_inception_weights_before_writing(tmp_path):
    from conftest import tiny_test_config
    from ghibli_keras import training

    config = tiny_test_config(**{"train.metrics_every": 1,
                                 "train.inception_weights": str(tmp_path / "missing.h5")})
    with pytest.raises(InputError, match="no such file"):
        training.train(config, tmp_path / "run", verbose=0)
    assert not (tmp_path / "run").exists()


def test_large_sets_use_the_compiled_network_with_the_same_features(random_extractor, rng,
                                                                    monkeypatch):
    pictures = np.stack([smooth_image(rng, 40, 40) for _ in range(5)])
    plain = features.extract(pictures, random_extractor, batch_size=4)
    monkeypatch.setattr(features, "XLA_MIN_IMAGES", 4)
    calls = []
    original = random_extractor._xla
    monkeypatch.setattr(random_extractor, "_xla", lambda x: calls.append(x.shape[0]) or original(x))
    compiled = features.extract(pictures, random_extractor, batch_size=4)
    assert calls == [4, 4]  # the last batch of 1 was padded to 4: one compilation
    assert compiled.shape == (5, features.FEATURE_DIM)
    assert_same(compiled, plain)
