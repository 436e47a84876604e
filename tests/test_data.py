"""Writing and reading Kaggle-schema shards, and the training / evaluation input pipelines."""

import os

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from conftest import shard_with_a_bad_record, smooth_image, truncated_shard
from ghibli_keras import data, images
from ghibli_keras.errors import InputError


def _folder_of_pictures(root, rng, count, size=(32, 48), suffix=".png"):
    pictures = {}
    for i in range(count):
        pixels = smooth_image(rng, *size)
        rel = f"sub{i % 2}/img{i:02d}{suffix}"
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(root / rel)
        pictures[rel.rsplit(".", 1)[0]] = pixels
    return pictures


def _constant_shards(path, prefix, values, size=16):
    """Shards of constant-grey pictures: the grey level identifies each picture."""
    with data.ShardWriter(path, prefix, shard_size=4) as writer:
        for v in values:
            jpeg = data.encode_jpeg(np.full((size, size, 3), v, np.uint8))
            writer.write(data.make_example(f"v{v}", jpeg, prefix))
    return str(path / f"{prefix}*.tfrec")


# ---------------------------------------------------------------------------- writing


def test_folder_to_shards_round_trip(tmp_path, rng):
    pictures = _folder_of_pictures(tmp_path / "src", rng, 7)
    report = data.write_tfrecords(tmp_path / "src", tmp_path / "out", "photo", shard_size=3)
    assert report.num_images == 7 and report.skipped == []
    assert [p.name for p in report.shards] == [
        "photo00-3.tfrec",
        "photo01-3.tfrec",
        "photo02-1.tfrec",
    ]
    read = {
        name.decode(): image
        for name, image in data.load_tfrecords(tmp_path / "out", with_names=True).as_numpy_iterator()
    }
    assert set(read) == set(pictures)
    for name, pixels in pictures.items():
        assert read[name].shape == pixels.shape
        assert np.abs(read[name].astype(int) - pixels).mean() < 2.0  # JPEG loss only
    first = next(iter(tf.data.TFRecordDataset(str(report.shards[0]))))
    example = tf.train.Example.FromString(first.numpy())
    assert example.features.feature["target"].bytes_list.value[0] == b"photo"


def test_size_resizes_and_center_crops(tmp_path, rng):
    _folder_of_pictures(tmp_path / "src", rng, 2, size=(40, 70))
    data.write_tfrecords(tmp_path / "src", tmp_path / "out", "p", size=24, target="painting")
    shapes = {im.shape for im in data.load_tfrecords(tmp_path / "out").as_numpy_iterator()}
    assert shapes == {(24, 24, 3)}


def test_bad_inputs_are_skipped_and_reported(tmp_path, rng):
    _folder_of_pictures(tmp_path / "src", rng, 3)
    (tmp_path / "src" / "empty.jpg").write_bytes(b"")
    (tmp_path / "src" / "text.png").write_bytes(b"hello")
    report = data.write_tfrecords(tmp_path / "src", tmp_path / "out", "p", max_pixels=10**6)
    assert report.num_images == 3
    reasons = {p.name: r for p, r in report.skipped}
    assert set(reasons) == {"empty.jpg", "text.png"}
    assert "empty" in reasons["empty.jpg"] and "not a picture" in reasons["text.png"]
    assert "skipped 2 file(s)" in report.summary() and "text.png" in report.summary()


def test_pixel_limit_skips_large_pictures(tmp_path, rng):
    _folder_of_pictures(tmp_path / "src", rng, 2, size=(32, 48))
    Image.fromarray(smooth_image(rng, 64, 64)).save(tmp_path / "src" / "large.png")
    report = data.write_tfrecords(tmp_path / "src", tmp_path / "out", "p", max_pixels=2000)
    assert report.num_images == 2
    assert [p.name for p, _ in report.skipped] == ["large.png"]


def _no_shards_left(folder):
    return not folder.exists() or not any(folder.iterdir())


def test_strict_writes_nothing(tmp_path, rng):
    _folder_of_pictures(tmp_path / "src", rng, 5)
    (tmp_path / "src" / "sub1" / "zz_broken.jpg").write_bytes(b"\xff\xd8\xff garbage")
    with pytest.raises(InputError, match="zz_broken.jpg.*nothing was written"):
        data.write_tfrecords(tmp_path / "src", tmp_path / "out", "p", shard_size=2, strict=True)
    assert _no_shards_left(tmp_path / "out")


def test_interrupted_run_leaves_no_finished_looking_shard(tmp_path, rng, monkeypatch):
    _folder_of_pictures(tmp_path / "src", rng, 6)
    real_read, calls = images.read_image, []

    def read_then_interrupt(path, **kwargs):
        calls.append(path)
        if len(calls) == 5:
            raise KeyboardInterrupt
        return real_read(path, **kwargs)

    monkeypatch.setattr(images, "read_image", read_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        data.write_tfrecords(tmp_path / "src", tmp_path / "out", "p", shard_size=2, workers=1)
    assert not (tmp_path / "out").exists()  # the folder it made is gone too


def test_partial_files_are_never_read(tmp_path):
    pattern = _constant_shards(tmp_path, "p", [10, 20])
    (tmp_path / "p01.tfrec.partial").write_bytes(b"half a shard")
    assert data.list_shards(str(tmp_path / "*")) == [str(tmp_path / "p00-2.tfrec")]
    assert data.count_images(pattern) == 2


@pytest.mark.parametrize(
    "setup, match",
    [
        (lambda d: None, "does not exist"),
        (lambda d: d.mkdir(), "no pictures found"),
    ],
)
def test_missing_or_empty_source(tmp_path, setup, match):
    setup(tmp_path / "src")
    with pytest.raises(InputError, match=match):
        data.write_tfrecords(tmp_path / "src", tmp_path / "out", "p")
    assert _no_shards_left(tmp_path / "out")


def test_all_unreadable_is_an_error(tmp_path):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "a.jpg").write_bytes(b"nope")
    with pytest.raises(InputError, match="none of the 1 file"):
        data.write_tfrecords(tmp_path / "src", tmp_path / "out", "p")
    assert _no_shards_left(tmp_path / "out")


def test_existing_shards_need_overwrite(tmp_path, rng):
    _folder_of_pictures(tmp_path / "src", rng, 3)
    data.write_tfrecords(tmp_path / "src", tmp_path / "out", "p", shard_size=2)
    with pytest.raises(InputError, match="already holds shards.*--overwrite"):
        data.write_tfrecords(tmp_path / "src", tmp_path / "out", "p")
    report = data.write_tfrecords(tmp_path / "src", tmp_path / "out", "p", overwrite=True)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["p00-3.tfrec"]
    assert report.num_images == 3


def test_another_prefix_s_shards_are_neither_refused_nor_removed(tmp_path, rng):
    """"set200-3.tfrec" is set2's shard 00; to "set" it is only ever the shard after set199."""
    _folder_of_pictures(tmp_path / "src", rng, 3)
    data.write_tfrecords(tmp_path / "src", tmp_path / "out", "set2", shard_size=3)
    data.write_tfrecords(tmp_path / "src", tmp_path / "out", "set", shard_size=2)
    data.write_tfrecords(tmp_path / "src", tmp_path / "out", "set", shard_size=3, overwrite=True)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["set00-3.tfrec",
                                                                   "set200-3.tfrec"]
    for name in ["set99-1.tfrec", "set100-1.tfrec", "set101-1.tfrec"]:
        (tmp_path / "out" / name).write_bytes(b"")
    assert [p.name for p in data.existing_shards(tmp_path / "out", "set")] == [
        "set00-3.tfrec", "set100-1.tfrec", "set101-1.tfrec", "set99-1.tfrec"]


def test_overwrite_keeps_the_old_shards_until_the_new_set_is_complete(tmp_path, rng):
    _folder_of_pictures(tmp_path / "src", rng, 5)
    old = data.write_tfrecords(tmp_path / "src", tmp_path / "out", "p", shard_size=2).shards
    (tmp_path / "src" / "sub1" / "zz_broken.jpg").write_bytes(b"\xff\xd8\xff garbage")
    with pytest.raises(InputError, match="nothing was written"):
        data.write_tfrecords(tmp_path / "src", tmp_path / "out", "p", shard_size=4, strict=True,
                             overwrite=True)
    assert sorted((tmp_path / "out").iterdir()) == old  # p00-2, p01-2, p02-1, untouched
    data.write_tfrecords(tmp_path / "src", tmp_path / "out", "p", shard_size=4, overwrite=True)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["p00-4.tfrec", "p01-1.tfrec"]


def test_an_interrupted_overwrite_puts_the_old_set_back(tmp_path, rng, monkeypatch):
    """Ctrl-C between the renames of a new set over an old one of the same names left a
    fragment of the old set that looked complete (p01-1.tfrec alone)."""
    _folder_of_pictures(tmp_path / "src", rng, 3)
    old = data.write_tfrecords(tmp_path / "src", tmp_path / "out", "p", shard_size=2).shards
    before = {p.name: p.read_bytes() for p in old}
    _folder_of_pictures(tmp_path / "src2", rng, 4)
    real, renamed = os.replace, []

    def interrupted(src, dst):
        if str(src).endswith(".partial"):
            renamed.append(dst)
            if len(renamed) == 2:
                raise KeyboardInterrupt  # before the second new shard's rename
        real(src, dst)

    monkeypatch.setattr(data.os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        data.write_tfrecords(tmp_path / "src2", tmp_path / "out", "p", shard_size=2, overwrite=True)
    monkeypatch.undo()
    assert {p.name: p.read_bytes() for p in (tmp_path / "out").iterdir()} == before


def test_shards_get_their_final_names_only_when_the_set_is_complete(tmp_path):
    jpeg = data.encode_jpeg(np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(RuntimeError):
        with data.ShardWriter(tmp_path, "p", shard_size=2) as writer:
            for i in range(5):
                writer.write(data.make_example(f"i{i}", jpeg, "p"))
            assert sorted(p.name for p in tmp_path.iterdir()) == [
                "p00.tfrec.partial", "p01.tfrec.partial", "p02.tfrec.partial"]
            raise RuntimeError("killed")
    assert not any(tmp_path.iterdir())


def test_pictures_a_jpeg_cannot_hold_are_skipped(tmp_path, rng):
    _folder_of_pictures(tmp_path / "src", rng, 2)
    Image.new("RGB", (70000, 2)).save(tmp_path / "src" / "wide.png")
    report = data.write_tfrecords(tmp_path / "src", tmp_path / "out", "p")
    assert report.num_images == 2
    [(path, reason)] = report.skipped
    assert path.name == "wide.png" and "70000x2: a JPEG stores at most 65535" in reason
    assert "--size" in reason
    report = data.write_tfrecords(tmp_path / "src", tmp_path / "sized", "p", size=16)
    assert report.num_images == 3


def test_file_names_that_are_not_utf8_keep_their_bytes(tmp_path, rng):
    (tmp_path / "src").mkdir()
    name = os.fsdecode(b"caf\xe9.png")  # Latin-1, as an old camera card may have it
    Image.fromarray(smooth_image(rng, 16, 16)).save(tmp_path / "src" / name)
    data.write_tfrecords(tmp_path / "src", tmp_path / "out", "p", target=os.fsdecode(b"\xe9t\xe9"))
    example = tf.train.Example.FromString(
        next(iter(tf.data.TFRecordDataset(str(tmp_path / "out" / "p00-1.tfrec")))).numpy())
    assert example.features.feature["image_name"].bytes_list.value[0] == b"caf\xe9"
    assert example.features.feature["target"].bytes_list.value[0] == b"\xe9t\xe9"


def test_unwritable_output_folder_is_named(tmp_path, rng):
    _folder_of_pictures(tmp_path / "src", rng, 1)
    (tmp_path / "file").write_text("in the way")
    with pytest.raises(InputError, match=r"cannot write shards in '.*file/sub' .*another output"):
        data.write_tfrecords(tmp_path / "src", tmp_path / "file" / "sub", "p")


# ---------------------------------------------------------------------------- reading


def test_kaggle_schema_written_by_plain_tensorflow(tmp_path, rng):
    """Shards made with nothing but tf.train.Example, exactly like Kaggle's, read unchanged;
    counts come from the names, or by counting when a name carries none."""
    pixels = [smooth_image(rng, 20, 20) for _ in range(3)]
    for name in ["monet00-3.tfrec", "nocount.tfrec"]:
        with tf.io.TFRecordWriter(str(tmp_path / name)) as w:
            for i, p in enumerate(pixels):
                feature = {
                    "image_name": tf.train.Feature(bytes_list=tf.train.BytesList(value=[b"n%d" % i])),
                    "image": tf.train.Feature(
                        bytes_list=tf.train.BytesList(value=[tf.io.encode_jpeg(p).numpy()])
                    ),
                    "target": tf.train.Feature(bytes_list=tf.train.BytesList(value=[b"monet"])),
                }
                w.write(tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString())
    got = list(data.load_tfrecords(str(tmp_path / "monet*.tfrec")).as_numpy_iterator())
    assert len(got) == 3 and all(g.shape == (20, 20, 3) and g.dtype == np.uint8 for g in got)
    assert data.count_in_name("monet00-3.tfrec") == 3 and data.count_in_name("nocount.tfrec") is None
    for other in ("train-00000-of-00002.tfrecord", "styles-2024.tfrec", "a-7.tfrec"):
        assert data.count_in_name(other) is None, other  # not a count: read them to count
    assert data.count_images(str(tmp_path / "nocount.tfrec")) == 3
    assert data.count_images(tmp_path) == 6


def test_glob_matching_nothing_names_the_pattern(tmp_path):
    with pytest.raises(InputError, match="no TFRecord files match .*nothing-here"):
        data.load_tfrecords(str(tmp_path / "nothing-here*.tfrec"))


def test_record_without_image_feature_names_the_file(tmp_path):
    path = tmp_path / "wrong00-1.tfrec"
    with tf.io.TFRecordWriter(str(path)) as w:
        feature = {"picture": tf.train.Feature(bytes_list=tf.train.BytesList(value=[b"x"]))}
        w.write(tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString())
    with pytest.raises(InputError, match="wrong00-1.tfrec.*no 'image' feature.*picture"):
        data.load_tfrecords(str(path))


def test_not_a_tfrecord_file(tmp_path):
    path = tmp_path / "junk00-1.tfrec"
    path.write_bytes(b"definitely not a tfrecord file, just some bytes")
    with pytest.raises(InputError, match="junk00-1.tfrec"):
        data.load_tfrecords(str(path))


def test_a_file_shorter_than_a_record_is_not_an_empty_shard(tmp_path):
    path = tmp_path / "tiny00-1.tfrec"
    path.write_bytes(b"garbage")  # under a record header's 12 bytes: TensorFlow reads no record
    with pytest.raises(InputError, match="tiny00-1.tfrec: not a readable TFRecord file .7 bytes"):
        data.load_tfrecords(str(path))


@pytest.mark.parametrize("bad_image, problem", [
    (b"not a picture", "the image is not a JPEG picture"),
    (b"\x89PNG\r\n\x1a\n...", "the image is a PNG picture; the Kaggle schema (and training's "
                            "crop-while-decoding) needs JPEG"),
    (data.encode_jpeg(np.zeros((64, 64, 3), np.uint8))[:200], "the image does not decode ("),
])
def test_a_record_whose_image_cannot_be_used_is_named(tmp_path, bad_image, problem):
    good = _constant_shards(tmp_path / "good", "photo", [10, 60])
    bad = shard_with_a_bad_record(tmp_path / "bad00-6.tfrec", bad=3, bad_image=bad_image)
    assert data.find_unreadable_record(data.list_shards(good)) is None
    assert data.find_unreadable_record([bad, *data.list_shards(good)]).startswith(
        f"{bad}: record 3 (image_name 'p3'): {problem}")
    with pytest.raises(InputError) as info:
        with data.naming_unreadable_records([good, bad], "nothing was written"):
            for jpeg in tf.data.TFRecordDataset([bad]).map(lambda r: data.parse_example(r)["image"]):
                data.random_window(jpeg, tf.constant([1, 2]), 20, 16)  # as training reads it
    message = str(info.value)
    assert message.startswith(f"{bad}: record 3 (image_name 'p3'): {problem}")
    assert "make-tfrecords" in message and message.endswith("; nothing was written")
    assert "{{" not in message and "[Op:" not in message


def test_a_truncated_shard_is_named_where_it_ends(tmp_path):
    cut = truncated_shard(tmp_path / "photos.tfrec")  # no count in the name: counting reads it
    with pytest.raises(InputError, match=r"photos.tfrec: cannot be read from record 3 on \(.*"
                                         r"truncated.*; its images could not be counted$"):
        data.count_images(cut)
    with pytest.raises(InputError, match=r"photos.tfrec: cannot be read from record 3 on "):
        with data.naming_unreadable_records(cut):
            list(data.load_tfrecords(cut))


def test_other_errors_pass_through_unchanged(tmp_path):
    good = _constant_shards(tmp_path, "photo", [10, 60])
    with pytest.raises(tf.errors.InvalidArgumentError, match="not about the data"):
        with data.naming_unreadable_records(good):
            raise tf.errors.InvalidArgumentError(None, None, "not about the data")


@pytest.mark.parametrize("resize_on_device", [True, False])
def test_a_domain_of_empty_shards_is_refused_and_empty_shards_are_skipped(tmp_path, resize_on_device):
    (tmp_path / "e").mkdir()
    (tmp_path / "e" / "empty00-0.tfrec").write_bytes(b"")
    styles = _constant_shards(tmp_path / "b", "style", [20, 50])
    with pytest.raises(InputError, match="no pictures in .*empty00-0.tfrec: every shard is empty"):
        data.training_dataset(str(tmp_path / "e"), styles, 2, image_size=8, load_size=10,
                              resize_on_device=resize_on_device)
    _constant_shards(tmp_path / "e", "photo", [10, 60])  # an empty shard first, then pictures
    x, _ = next(iter(data.training_dataset(str(tmp_path / "e"), styles, 2, image_size=8,
                                           load_size=10, resize_on_device=resize_on_device)))
    assert x.shape[0] == 2


def test_a_first_record_that_is_not_a_jpeg_is_named(tmp_path):
    """Training reads the first picture's JPEG header to size its windows."""
    png = (tmp_path / "p.png")
    Image.new("RGB", (16, 16)).save(png)
    photos = shard_with_a_bad_record(tmp_path / "photo00-3.tfrec", 3, bad=0,
                                     bad_image=png.read_bytes())
    styles = _constant_shards(tmp_path / "b", "style", [20, 50])
    with pytest.raises(InputError, match=r"photo00-3.tfrec: record 0 \(image_name 'p0'\): "
                                         r"the image is a PNG picture"):
        data.training_dataset(photos, styles, 2, image_size=8, load_size=10)


def test_evaluation_of_empty_shards_is_refused(tmp_path):
    (tmp_path / "e").mkdir()
    (tmp_path / "e" / "held00-0.tfrec").write_bytes(b"")
    styles = _constant_shards(tmp_path / "b", "style", [20, 50])
    for args in [(str(tmp_path / "e"),), (str(tmp_path / "e"), styles)]:
        with pytest.raises(InputError, match="no pictures in .*held00-0.tfrec: every shard is"):
            data.evaluation_dataset(*args, batch_size=2, image_size=8)


# ---------------------------------------------------------------------------- training input


def test_both_domains_fully_visited(tmp_path):
    """3 photos vs 7 styles: cycling each domain on its own visits all of both; a zip of the
    two finite datasets would have stopped after 3 styles."""
    photos = _constant_shards(tmp_path / "a", "photo", [10, 60, 110])
    styles = _constant_shards(tmp_path / "b", "style", [20, 50, 80, 120, 150, 180, 210])
    ds = data.training_dataset(photos, styles, 2, image_size=8, load_size=10, seed=3)
    seen_x, seen_y = set(), set()
    for x, y in ds.take(14):  # 28 images per domain: 4 passes over the larger one
        seen_x |= {round(float(v)) for v in (x.numpy().mean(axis=(1, 2, 3)) + 1) * 127.5}
        seen_y |= {round(float(v)) for v in (y.numpy().mean(axis=(1, 2, 3)) + 1) * 127.5}
    assert {v // 5 for v in seen_x} == {v // 5 for v in [10, 60, 110]}
    assert {v // 5 for v in seen_y} == {v // 5 for v in [20, 50, 80, 120, 150, 180, 210]}


def test_batch_shape_dtype_and_range(sample_dir):
    ds = data.training_dataset(
        f"{sample_dir}/photo", f"{sample_dir}/ghibli", 4, image_size=64, load_size=72
    )
    x, y = next(iter(ds))
    for t in (x, y):
        assert t.shape == (4, 64, 64, 3) and t.dtype == tf.float32
        assert float(tf.reduce_min(t)) >= -1.0 and float(tf.reduce_max(t)) <= 1.0
    assert float(tf.reduce_max(x)) - float(tf.reduce_min(x)) > 1.0  # real pictures, not flat


def test_seed_makes_order_and_augmentation_repeatable(sample_dir):
    def first(seed):
        ds = data.training_dataset(
            f"{sample_dir}/photo", f"{sample_dir}/ghibli", 2, image_size=48, load_size=64, seed=seed
        )
        return [t.numpy() for t in next(iter(ds))]

    a, b, c = first(7), first(7), first(8)
    assert all(np.array_equal(u, v) for u, v in zip(a, b))
    assert not np.array_equal(a[0], c[0])


def test_jitter_crops_flips_and_matches_resize_then_crop():
    """Decoding the window and resizing it equals the reference's resize-then-crop."""
    pixels = np.zeros((64, 64, 3), np.uint8)
    pixels[:, :32] = 200  # left half light, right half dark
    jpeg = tf.io.encode_jpeg(pixels, quality=100)
    outs = [data.random_jitter(jpeg, tf.constant([s, 0], tf.int64), 72, 64).numpy() for s in range(16)]
    assert all(o.shape == (64, 64, 3) and -1 <= o.min() and o.max() <= 1 for o in outs)
    light_left = [o[:, :8].mean() > o[:, -8:].mean() for o in outs]
    assert any(light_left) and not all(light_left)  # some flipped, some not
    assert len({o.tobytes() for o in outs}) > 4  # different crops
    # Scale: a 64-px picture loaded at 72 and cropped at 64 shows 64/72 of it, magnified.
    reference = tf.image.resize(tf.cast(pixels, tf.float32), [72, 72]).numpy()
    unflipped = [o for o, left in zip(outs, light_left) if left][0]
    edge = lambda img: int(np.argmax(img[32, :, 0] < (img[32, 0, 0] + img[32, -1, 0]) / 2))  # noqa: E731
    light_cols = edge(unflipped)
    assert 0 < light_cols < 64 and abs(light_cols - edge(reference)) <= 8


@pytest.mark.parametrize("image_size, load_size, window", [
    (64, 72, 64),  # the sample's 128-px pictures give 114-px windows: shrunk on the host
    (128, 143, 115),  # 115-px windows: enlarged in the step (Kaggle's 229 -> 256 alike)
])
def test_resize_on_device_gives_the_same_batches(sample_dir, image_size, load_size, window):
    """The pipeline that stops at uint8 windows (what train() uses) + finish_jitter, as the
    train step runs it, equals the pipeline that does it all on the host."""
    def batches(on_device):
        ds = data.training_dataset(f"{sample_dir}/photo", f"{sample_dir}/ghibli", 4,
                                   image_size=image_size, load_size=load_size, seed=5,
                                   resize_on_device=on_device)
        return [pair for pair in ds.take(3)]

    for (wx, wy), (x, y) in zip(batches(True), batches(False)):
        assert wx.dtype == tf.uint8 and wx.shape == (4, window, window, 3) == wy.shape
        np.testing.assert_allclose(data.finish_jitter(wx, image_size).numpy(), x.numpy(), atol=1e-5)
        np.testing.assert_allclose(data.finish_jitter(wy, image_size).numpy(), y.numpy(), atol=1e-5)
    assert data.finish_jitter(x, image_size) is x  # float input passes through


def test_a_domain_s_window_side_comes_from_a_sample_of_its_pictures(tmp_path):
    """A small first picture must not set the side for the large ones after it (their
    windows were all shrunk to its 21 pixels, then enlarged in the step: their detail lost)."""
    checks = np.kron((np.indices((18, 18)).sum(axis=0) % 2) * 255, np.ones((20, 20)))
    with data.ShardWriter(tmp_path / "mixed", "photo", shard_size=8) as writer:
        writer.write(data.make_example("small", data.encode_jpeg(np.full((24, 24, 3), 99, np.uint8)), "photo"))
        for i in range(3):
            big = np.repeat(checks[..., None], 3, axis=2).astype(np.uint8)
            writer.write(data.make_example(f"big{i}", data.encode_jpeg(big, quality=100), "photo"))
    shards = str(tmp_path / "mixed")
    assert data.picture_sides(data.list_shards(shards)) == [24, 360, 360, 360]
    assert data.domain_window([256] * 5, 256, 286) == 229  # Kaggle's
    assert data.domain_window([24, 360], 32, 36) == 32
    kwargs = dict(image_size=32, load_size=36, seed=3)
    wx, _ = next(iter(data.training_dataset(shards, shards, 8, resize_on_device=True, **kwargs)))
    x, _ = next(iter(data.training_dataset(shards, shards, 8, **kwargs)))
    assert wx.shape == (8, 32, 32, 3)
    np.testing.assert_allclose(data.finish_jitter(wx, 32).numpy(), x.numpy(), atol=1 / 127.5 + 1e-5)
    assert (x.numpy().std(axis=(1, 2, 3)) > 0.3).sum() >= 4  # the big checks keep their contrast


def _stripes(side: int) -> bytes:
    """A JPEG of one-pixel black and white columns: what a resize that skips pixels aliases."""
    pixels = np.zeros((side, side, 3), np.uint8)
    pixels[:, ::2] = 255
    return data.encode_jpeg(pixels, quality=100)


@pytest.mark.parametrize("on_device", [False, True])
def test_pictures_much_larger_than_the_crop_are_shrunk_antialiased(tmp_path, on_device):
    """A 600-px picture jittered to 32 px: its 1-px stripes must average to grey, as the
    reference's (antialiased) resize gives; bilinear alone samples a few columns and aliases
    into bands. The windows reach the train step at 32 px already."""
    with data.ShardWriter(tmp_path / "big", "photo", shard_size=8) as writer:
        writer.write(data.make_example("stripes", _stripes(600), "photo"))
    shards = str(tmp_path / "big")
    ds = data.training_dataset(shards, shards, 4, image_size=32, load_size=36, seed=0,
                               resize_on_device=on_device)
    x, _ = next(iter(ds))
    assert x.shape == (4, 32, 32, 3)
    pixels = (data.finish_jitter(x, 32).numpy() + 1) * 127.5
    assert abs(pixels.mean() - 127.5) < 8 and pixels.std() < 8, (pixels.mean(), pixels.std())
    held_out = next(iter(data.evaluation_dataset(shards, image_size=32)))
    pixels = (held_out.numpy() + 1) * 127.5
    assert pixels.std() < 8, pixels.std()


def test_windows_of_mixed_picture_sizes_batch_together(tmp_path):
    with data.ShardWriter(tmp_path / "mixed", "photo", shard_size=8) as writer:
        for i, size in enumerate([40, 80, 40, 60]):
            jpeg = data.encode_jpeg(np.full((size, size + 8, 3), 50 * i, np.uint8))
            writer.write(data.make_example(f"p{i}", jpeg, "photo"))
    styles = _constant_shards(tmp_path / "s", "style", [20, 200], size=24)
    ds = data.training_dataset(str(tmp_path / "mixed"), styles, 4, image_size=32,
                               load_size=36, seed=0, resize_on_device=True)
    x, y = next(iter(ds))
    side_x, side_y = 32, data.window_side(32, 36, 24)  # first pictures' (36 shrunk to 32), 21
    assert x.shape == (4, side_x, side_x, 3) and y.shape == (4, side_y, side_y, 3)
    assert sorted(np.unique(x.numpy().mean(axis=(1, 2, 3)).round())) == [0, 50, 100, 150]


def test_each_replica_gets_its_share_under_mirrored_strategy(sample_dir):
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    kwargs = dict(image_size=32, load_size=40, seed=1)

    def make():  # a fresh dataset each time: the same seed gives the same batches
        return data.training_dataset(
            f"{sample_dir}/photo", f"{sample_dir}/ghibli", 4, strategy=strategy, **kwargs
        )

    x_global, _ = next(iter(make()))
    x_dist, y_dist = next(iter(strategy.experimental_distribute_dataset(make())))
    parts = strategy.experimental_local_results(x_dist)
    assert len(parts) == 2
    assert all(p.shape == (2, 32, 32, 3) for p in parts)
    assert all(p.shape == (2, 32, 32, 3) for p in strategy.experimental_local_results(y_dist))
    np.testing.assert_array_equal(np.concatenate([p.numpy() for p in parts]), x_global.numpy())
    with pytest.raises(InputError, match="does not split evenly over 2 replicas"):
        data.training_dataset(f"{sample_dir}/photo", f"{sample_dir}/ghibli", 3, strategy=strategy)


def test_bad_training_arguments(sample_dir):
    p, s = f"{sample_dir}/photo", f"{sample_dir}/ghibli"
    with pytest.raises(InputError, match="image_size"):
        data.training_dataset(p, s, 2, image_size=64, load_size=32)
    with pytest.raises(InputError, match="batch size"):
        data.training_dataset(p, s, 0)
    with pytest.raises(InputError, match="no TFRecord files match"):
        data.training_dataset(p, f"{sample_dir}/nope/*.tfrec", 2)


# ---------------------------------------------------------------------------- evaluation input


def test_evaluation_dataset_is_plain_and_covers_the_larger_domain(tmp_path):
    photos = _constant_shards(tmp_path / "a", "photo", [10, 60, 110])
    styles = _constant_shards(tmp_path / "b", "style", [20, 50, 80, 120, 150])
    pairs = list(data.evaluation_dataset(photos, styles, batch_size=2, image_size=12))
    assert [tuple(x.shape) for x, _ in pairs] == [(2, 12, 12, 3)] * 2 + [(1, 12, 12, 3)]
    ys = np.concatenate([y.numpy() for _, y in pairs]).mean(axis=(1, 2, 3))
    assert np.allclose((ys + 1) * 127.5, [20, 50, 80, 120, 150], atol=2)
    xs = np.concatenate([x.numpy() for x, _ in pairs]).mean(axis=(1, 2, 3))
    assert np.allclose((xs + 1) * 127.5, [10, 60, 110, 10, 60], atol=2)  # smaller one repeated
    single = list(data.evaluation_dataset(photos, batch_size=8, image_size=12))
    assert len(single) == 1 and single[0].shape == (3, 12, 12, 3)


def test_steps_per_epoch(tmp_path):
    photos = _constant_shards(tmp_path / "a", "photo", [10, 60, 110])
    styles = _constant_shards(tmp_path / "b", "style", list(range(20, 240, 20)))
    assert data.steps_per_epoch(photos, styles, 4) == 11 // 4
    assert data.steps_per_epoch(photos, styles, 64) == 1
