"""Neural style transfer: Gram matrix, losses, both optimisers, weights, the command line."""

import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from conftest import smooth_image
from ghibli_keras import cli, nst
from ghibli_keras.errors import InputError


@pytest.fixture(scope="module")
def extractor(vgg_weights_file):
    return nst.feature_extractor(str(vgg_weights_file))


def pictures(seed=0):
    rng = np.random.default_rng(seed)
    return smooth_image(rng, 48, 64), smooth_image(rng, 40, 40)


def test_gram_matrix_of_a_known_tensor():
    # 2x2 positions, 2 channels: rows of F are [1, 2], [3, 4], [5, 6], [7, 8]
    features = tf.reshape(tf.range(1.0, 9.0), (1, 2, 2, 2))
    expected = np.array([[1 + 9 + 25 + 49, 2 + 12 + 30 + 56],
                         [2 + 12 + 30 + 56, 4 + 16 + 36 + 64]]) / 4  # FᵀF / (H·W)
    np.testing.assert_allclose(nst.gram_matrix(features).numpy()[0], expected)
    batch = tf.concat([features, 2 * features], 0)  # each image its own Gram matrix
    np.testing.assert_allclose(nst.gram_matrix(batch).numpy()[1], 4 * expected)


def test_total_variation_and_losses_by_hand():
    image = tf.constant([[[[0.0] * 3, [1.0] * 3], [[0.5] * 3, [0.5] * 3]]])  # (1, 2, 2, 3)
    # vertical |0.5-0| + |0.5-1|, horizontal |1-0| + |0.5-0.5|, per channel
    assert float(nst.total_variation(image)) == pytest.approx(3 * (0.5 + 0.5 + 1.0))
    a = {name: tf.ones((1, 2, 2, 4)) for name in nst.STYLE_LAYERS + nst.CONTENT_LAYERS}
    b = {name: 3 * tf.ones((1, 2, 2, 4)) for name in nst.STYLE_LAYERS + nst.CONTENT_LAYERS}
    assert float(nst.content_loss(a, b)) == pytest.approx(4.0)  # mean (1 - 3)²
    grams = {name: nst.gram_matrix(v) for name, v in b.items()}
    assert float(nst.style_loss(a, grams)) == pytest.approx(64.0)  # mean (1 - 9)²


def test_feature_extractor_layers_and_shapes(extractor):
    out = extractor(tf.zeros((2, 64, 48, 3)))
    assert set(out) == set(nst.STYLE_LAYERS + nst.CONTENT_LAYERS)
    assert out["block1_conv1"].shape == (2, 64, 48, 64)
    assert out["block3_conv1"].shape == (2, 16, 12, 256)
    assert out["block5_conv1"].shape == (2, 4, 3, 512)
    assert out["block5_conv2"].shape == (2, 4, 3, 512)
    assert not extractor.trainable_weights


def test_weights_from_a_path_are_the_saved_ones(vgg_weights_file, extractor):
    vgg = keras.applications.VGG19(include_top=False, weights=None)
    vgg.load_weights(vgg_weights_file)
    expected = vgg.get_layer("block1_conv1").kernel.numpy()
    np.testing.assert_array_equal(extractor.get_layer("block1_conv1").kernel.numpy(), expected)


def test_first_layer_sees_bgr_less_the_imagenet_mean(extractor):
    """block1_conv1 as a convolution taken here: VGG19 was trained on caffe's input, BGR in
    [0, 255] less the ImageNet mean per channel; an RGB picture fed as it is would still run."""
    rng = np.random.default_rng(3)
    x = rng.uniform(0, 1, size=(2, 32, 40, 3)).astype(np.float32)  # RGB in [0, 1]
    layer = extractor.get_layer("block1_conv1")
    kernel, bias = layer.kernel.numpy(), layer.bias.numpy()  # (3, 3, 3, 64), (64,)
    assert np.abs(kernel[:, :, 0] - kernel[:, :, 2]).max() > 1e-2  # B and R weigh differently
    caffe = x[..., ::-1] * 255.0 - np.array([103.939, 116.779, 123.68], np.float32)  # BGR
    expected = np.maximum(tf.nn.conv2d(caffe, kernel, 1, "SAME").numpy() + bias, 0.0)
    got = extractor(x)["block1_conv1"].numpy()  # (2, 32, 40, 64)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-3)


@pytest.mark.parametrize("optimizer", ["adam", "lbfgs"])
def test_total_loss_decreases(extractor, optimizer):
    content, style = pictures()
    # Adam's first steps (~lr per pixel) roughen a smooth picture; 20 steps undo that
    config = nst.StyleConfig(steps=20 if optimizer == "adam" else 12, size=64, optimizer=optimizer,
                             xla=optimizer == "adam")  # XLA tested once: it compiles for seconds
    seen = []
    result = nst.stylize(content, style, config, weights="test", extractor=extractor,
                         progress=lambda done, losses: seen.append(done))
    totals = [step["total"] for step in result.losses]
    assert totals[-1] < 0.9 * totals[0], totals
    assert all(np.isfinite(step[k]) for step in result.losses for k in nst.LOSS_NAMES)
    assert seen == list(range(1, len(seen) + 1)) and 1 <= len(seen) <= config.steps
    assert result.image.dtype == np.uint8 and result.image.shape == (48, 64, 3)
    assert not np.array_equal(result.image, content)  # it started there and moved


def test_style_term_alone_moves_the_picture_towards_the_style(extractor):
    """With content and TV weights 0, only VGG19's Gram matrices drive the pixels."""
    content, style = pictures(1)
    config = nst.StyleConfig(steps=8, size=64, content_weight=0, tv_weight=0,
                             style_weight=1.0, learning_rate=0.05, xla=False)
    result = nst.stylize(content, style, config, extractor=extractor)
    first, last = result.losses[0], result.losses[-1]
    assert last["style"] < 0.8 * first["style"], (first, last)
    assert last["content"] == first["content"] == 0 and last["tv"] == 0


def test_size_keeps_the_aspect_ratio_and_small_pictures_are_refused():
    image = np.zeros((300, 400, 3), np.uint8)
    assert nst.fit_size(image, 100).shape == (75, 100, 3)
    assert nst.fit_size(image, None).shape == image.shape
    with pytest.raises(InputError, match="at least 32"):
        nst.fit_size(np.zeros((20, 400, 3), np.uint8), 400)


def test_config_checks_name_the_bad_value():
    with pytest.raises(ValueError, match="steps.*0"):
        nst.StyleConfig(steps=0)
    with pytest.raises(ValueError, match="optimizer.*'sgd'"):
        nst.StyleConfig(optimizer="sgd")
    with pytest.raises(ValueError, match="style_weight.*-1"):
        nst.StyleConfig(style_weight=-1)


def test_weights_errors_say_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))
    with pytest.raises(InputError, match="not found"):
        nst.feature_extractor(str(tmp_path / "missing.h5"))
    junk = tmp_path / "junk.weights.h5"
    junk.write_bytes(b"not hdf5")
    with pytest.raises(InputError, match="not VGG19 weights"):
        nst.feature_extractor(str(junk))

    def offline(**kwargs):  # what keras.utils.get_file raises without a network
        raise Exception("URL fetch failure on https://storage.googleapis.com/...: None -- "
                        "[Errno -2] Name or service not known")

    monkeypatch.setattr(keras.applications, "VGG19", offline)
    with pytest.raises(InputError) as error:
        nst.feature_extractor("imagenet")
    message = str(error.value)
    assert nst.VGG_WEIGHTS_URL in message and "--vgg-weights PATH" in message
    assert "Name or service not known" in message
    cached = nst.keras_weights_cache_path()  # a copy cut short: named, and kept
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"cut short")
    with pytest.raises(InputError, match="an incomplete or damaged copy .*expected 253f8cb5"):
        nst.feature_extractor("imagenet")
    assert cached.is_file()


def test_cli_defaults_match_the_module():
    defaults = nst.StyleConfig()
    args = cli.build_parser().parse_args(["style-transfer", "a", "b", "--out", "c.jpg"])
    assert (args.steps, args.size, args.content_weight, args.style_weight, args.tv_weight,
            args.optimizer, args.learning_rate, args.xla == "on") == (
        defaults.steps, defaults.size, defaults.content_weight, defaults.style_weight,
        defaults.tv_weight, defaults.optimizer, defaults.learning_rate, defaults.xla)
    assert cli.STYLE_MIN_SIDE == nst.MIN_SIDE


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "ghibli_keras", "style-transfer", *args],
                          capture_output=True, text=True)


@pytest.mark.slow
def test_style_transfer_command(tmp_path, vgg_weights_file):
    content, style = pictures(2)
    Image.fromarray(content).save(tmp_path / "photo.jpg")
    Image.fromarray(style).save(tmp_path / "still.png")
    out = tmp_path / "out" / "styled.png"
    result = _cli(str(tmp_path / "photo.jpg"), str(tmp_path / "still.png"), "--out", str(out),
                  "--steps", "5", "--size", "48", "--optimizer", "lbfgs",
                  "--vgg-weights", str(vgg_weights_file))
    assert result.returncode == 0, result.stderr
    assert Image.open(out).size == (48, 36)
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["loss", *nst.LOSS_NAMES]
    start, end = (float(line.split()[1]) for line in lines[1:3])
    assert end < start
    assert "5 lbfgs steps" in result.stdout and "style transfer" in result.stderr  # the bar
    assert [p.name for p in out.parent.iterdir()] == ["styled.png"]  # no temporary left
    # Nothing to minimise: L-BFGS stops at once, and the summary says so (it said "5 steps").
    result = _cli(str(tmp_path / "photo.jpg"), str(tmp_path / "still.png"), "--out", str(out),
                  "--steps", "5", "--size", "48", "--optimizer", "lbfgs", "--content-weight",
                  "0", "--style-weight", "0", "--tv-weight", "0",
                  "--vgg-weights", str(vgg_weights_file))
    assert result.returncode == 0, result.stderr
    assert "0 lbfgs steps" in result.stdout and "stopped before 5" in result.stdout


def test_style_transfer_input_errors_are_one_line(tmp_path):
    (tmp_path / "notes.jpg").write_text("not a picture")
    good = tmp_path / "good.png"
    Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(good)
    wide = tmp_path / "wide.png"
    Image.fromarray(np.zeros((30, 128, 3), np.uint8)).save(wide)
    for args, message in [
        ([str(good), str(wide), "--out", str(tmp_path / "o.jpg"), "--size", "64"],
         f"STYLE {wide}: 128x30 has a shorter side of 15 pixels at --size 64; VGG19 needs at "
         f"least 32: use --size 137 or more (the picture is enlarged)"),
        ([str(tmp_path / "notes.jpg"), str(good), "--out", str(tmp_path / "o.jpg")],
         "notes.jpg: not a picture"),
        ([str(good), str(tmp_path / "missing.png"), "--out", str(tmp_path / "o.jpg")],
         "missing.png"),
        ([str(good), str(good), "--out", str(tmp_path / "o.gif")], "--out"),
        ([str(good), str(good), "--out", str(tmp_path / "o.jpg"), "--vgg-weights", "nope.h5"],
         "--vgg-weights 'nope.h5'"),
        ([str(good), str(good), "--out", str(tmp_path / "o.jpg"), "--size", "8"], "--size"),
        ([str(good), str(good), "--out", str(tmp_path / "o.jpg"), "--tv-weight", "-1"],
         "--tv-weight"),
        ([str(good), str(good), "--out", str(tmp_path / "notes.jpg" / "o.jpg")],
         "notes.jpg' exists and is not a folder"),
        ([str(good), str(good), "--out", str(tmp_path / "o.jpg"), "--max-pixels", "1000"],
         "good.png: 40x40 = 1,600 pixels, more than the limit of 1,000 (raise it with "
         "--max-pixels"),
    ]:
        result = _cli(*args)
        assert result.returncode == 2, (args, result.stderr)
        assert message in result.stderr, result.stderr
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert "tensorflow" not in result.stderr.lower()
    assert not (tmp_path / "o.jpg").exists()
