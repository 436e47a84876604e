"""Translation at any size (padding, tiles, batching, files) and the SavedModel export."""

import base64
import io
import json
import logging
import struct
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from conftest import smooth_image
from ghibli_keras import cli, export, images, inference
from ghibli_keras.errors import InputError


@pytest.fixture(scope="module")
def translator(trained_workdir):
    return inference.Translator.load(trained_workdir)


@pytest.fixture(scope="module")
def exported(trained_workdir, tmp_path_factory):
    out = tmp_path_factory.mktemp("models") / "ghibli" / "1"
    assert cli.main(["export", str(trained_workdir), "--out", str(out)]) == 0
    return out


def _jpeg(pixels, quality=95):
    return tf.io.encode_jpeg(pixels, quality=quality).numpy()


# ------------------------------------------------------------------------------ any size


def test_cli_defaults_match_the_modules():
    assert (cli.DEFAULT_TILE, cli.DEFAULT_OVERLAP) == (inference.DEFAULT_TILE, inference.DEFAULT_OVERLAP)
    assert cli.DEFAULT_EXPORT_MAX_PIXELS == export.DEFAULT_MAX_PIXELS
    assert cli.DEFAULT_READ_MAX_PIXELS == images.DEFAULT_MAX_PIXELS
    assert cli.TRANSLATION_PRECISIONS == inference.PRECISIONS


def test_reflect_indices_any_amount():
    assert list(inference.reflect_indices(4, 11)) == [0, 1, 2, 3, 2, 1, 0, 1, 2, 3, 2]
    assert list(inference.reflect_indices(1, 3)) == [0, 0, 0]
    got = inference.tf_reflect_indices(tf.constant(4), tf.constant(11)).numpy()
    assert list(got) == list(inference.reflect_indices(4, 11))


def test_odd_sizes_come_back_at_their_size(translator, rng):
    picture = smooth_image(rng, 57, 83)  # not multiples of 4
    out = inference.translate_image(translator, picture)
    assert out.shape == (57, 83, 3) and out.dtype == np.uint8
    # The crop is of the translation of the padded picture: the same pixels as translating a
    # picture that is already a multiple of 4 and holds the same top-left content.
    padded = picture[inference.reflect_indices(57, 60)][:, inference.reflect_indices(83, 84)]
    full = inference.to_uint8(translator.fn(inference.to_unit(padded)[None]).numpy()[0])
    np.testing.assert_array_equal(out, full[:57, :83])


def test_bucket_sides_are_few_and_close():
    for multiple, smallest in ((4, 8), (256, 256)):
        sides = {n: inference.bucket_side(n, multiple, smallest) for n in range(1, 5000)}
        assert all(b >= max(n, smallest) and b % multiple == 0 for n, b in sides.items())
        assert all(b <= max(n + n / 8, n + multiple, smallest) for n, b in sides.items())
    sides = {inference.bucket_side(n, 4) for n in range(512, 1024)}
    assert sides == set(range(512, 1025, 64))  # eight an octave (and the next power of two)


def test_bucketed_pictures_of_many_sizes_share_one_shape(translator, rng):
    """With buckets (the web UI's translator) pictures of 257..288 pixels a side all run at
    288×288, and each comes back at its size as the translation of its reflected padding."""
    import dataclasses

    shapes = []
    record = lambda x: shapes.append(tuple(x.shape[1:3])) or translator.fn(x)  # noqa: E731
    bucketed = dataclasses.replace(translator, fn=record, buckets=True)
    for h, w in ((257, 288), (270, 261), (288, 280)):
        picture = smooth_image(rng, h, w)
        out = inference.translate_image(bucketed, picture)
        padded = picture[inference.reflect_indices(h, 288)][:, inference.reflect_indices(w, 288)]
        full = inference.to_uint8(translator.fn(inference.to_unit(padded)[None]).numpy()[0])
        np.testing.assert_array_equal(out, full[:h, :w])
    assert set(shapes) == {(288, 288)}


def test_tiles_match_the_whole_picture_without_seams(translator, rng):
    picture = smooth_image(rng, 180, 260)
    whole = inference.translate_image(translator, picture, tile=None).astype(float)
    tiled = inference.translate_image(translator, picture, tile=96, overlap=32).astype(float)
    assert tiled.shape == whole.shape
    difference = np.abs(tiled - whole)
    assert difference.mean() < 2.0, difference.mean()  # levels of 255
    # No seam: along every tile border the tiled picture is no rougher than the whole one.
    rough = lambda img: np.abs(np.diff(img, axis=1)).mean(axis=(0, 2))  # noqa: E731
    assert rough(tiled).max() <= rough(whole).max() + 4.0
    blocky = inference.translate_image(translator, picture, tile=96, overlap=0).astype(float)
    assert np.abs(blocky - whole).mean() >= difference.mean()  # blending helps


@pytest.mark.parametrize("h, w, tile, overlap", [(70, 45, 32, 8), (30, 100, 32, 0),
                                                  (20, 20, 32, 8), (65, 33, 16, 7)])
def test_graph_tiles_are_translate_image_s_tiles(h, w, tile, overlap, rng):
    """tf_translate_tiled (the SavedModel's) gives translate_image's pixels: same tiles, same
    blending, sides tiled or not."""
    from ghibli_keras import models

    generator = models.resnet_generator(8, 1)
    multiple, smallest = models.size_multiple(generator), models.smallest_side(generator)
    fn = lambda x: generator(x, training=False)  # noqa: E731

    def translator(batch):
        return inference.pad_run_crop(fn, tf.constant(batch), multiple, smallest).numpy()

    picture = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    expected = inference.translate_image(translator, picture, tile, overlap).astype(int)
    x = tf.constant(picture, tf.float32) / 127.5 - 1.0
    got = inference.tf_translate_tiled(fn, x, tile, overlap, multiple, smallest).numpy()
    assert np.abs(inference.to_uint8(got).astype(int) - expected).max() <= 1


def test_translate_command_mirrors_names_skips_bad_files(trained_workdir, tmp_path, rng):
    src = tmp_path / "photos"
    (src / "trip").mkdir(parents=True)
    Image.fromarray(smooth_image(rng, 40, 60)).save(src / "a.png")
    Image.fromarray(smooth_image(rng, 40, 60)).save(src / "trip" / "b.jpg")
    Image.fromarray(smooth_image(rng, 33, 21)).save(src / "trip" / "c.webp")
    (src / "trip" / "broken.jpg").write_bytes(b"not a picture")
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees to display
    Image.fromarray(smooth_image(rng, 20, 44)).save(src / "rotated.jpg", exif=exif.tobytes())
    out = tmp_path / "out"
    rc = cli.main(["translate", str(trained_workdir), str(src), "--out", str(out), "--quiet"])
    assert rc == 0
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert written == ["a.jpg", "rotated.jpg", "trip/b.jpg", "trip/c.jpg"]
    assert Image.open(out / "rotated.jpg").size == (20, 44)  # (W, H) after the EXIF rotation
    assert Image.open(out / "trip" / "c.jpg").size == (21, 33)
    assert (src / "trip" / "b.jpg").is_file()  # inputs untouched

    only_bad = tmp_path / "bad"
    only_bad.mkdir()
    (only_bad / "x.png").write_bytes(b"nope")
    assert cli.main(["translate", str(trained_workdir), str(only_bad), "--out",
                     str(tmp_path / "out2"), "--quiet"]) == 1


def test_translate_reports_outputs_it_cannot_write_and_goes_on(trained_workdir, tmp_path, rng,
                                                                capsys):
    src = tmp_path / "photos"
    (src / "sub").mkdir(parents=True)
    for name in ("a.png", "sub/b.png", "c.png"):
        Image.fromarray(smooth_image(rng, 24, 32)).save(src / name)
    Image.fromarray(smooth_image(rng, 100, 100)).save(src / "big.png")  # 10,000 pixels
    out = tmp_path / "out"
    out.mkdir()
    (out / "sub").write_text("a file where the folder sub/ should go")
    rc = cli.main(["translate", str(trained_workdir), str(src), "--out", str(out), "--quiet",
                   "--max-pixels", "5000"])
    printed = capsys.readouterr().out
    assert rc == 1 and sorted(p.name for p in out.glob("*.jpg")) == ["a.jpg", "c.jpg"]
    assert f"could not write 1:\n  {out / 'sub' / 'b.jpg'}: " in printed
    assert "big.png: 100x100 = 10,000 pixels, more than the limit of 5,000" in printed


def test_translate_progress_counts_pictures_written(translator, tmp_path, rng, monkeypatch):
    """The bar moves when a picture is written, not when it is read (it used to reach the end
    before the network had run)."""
    import tqdm.auto

    events = []

    class Bar(tqdm.auto.tqdm):
        def update(self, n=1):
            events.append("bar")
            return super().update(n)

    def network(batch):
        events.append("network")
        return translator(batch)

    monkeypatch.setattr(tqdm.auto, "tqdm", Bar)
    for i, (h, w) in enumerate([(16, 20), (24, 20), (16, 28)]):
        Image.fromarray(smooth_image(rng, h, w)).save(tmp_path / f"{i}.png")
    inference.translate_files(network, [str(tmp_path)], tmp_path / "out", progress=False)
    assert events == ["network", "bar"] * 3


def test_translate_refuses_to_overwrite_inputs(trained_workdir, tmp_path, rng, capsys):
    Image.fromarray(smooth_image(rng, 16, 16)).save(tmp_path / "a.jpg")
    rc = cli.main(["translate", str(trained_workdir), str(tmp_path), "--out", str(tmp_path)])
    assert rc == 2 and "is an input" in capsys.readouterr().err
    with pytest.raises(InputError, match="would both be written"):
        (tmp_path / "d").mkdir()
        Image.fromarray(smooth_image(rng, 16, 16)).save(tmp_path / "d" / "a.png")
        images.output_paths([tmp_path / "a.jpg", tmp_path / "d" / "a.png"], tmp_path / "o", "jpg")


def test_tiny_pictures_are_padded_to_the_smallest_side(translator, exported, rng):
    """A 3x3 or 5x2 picture: padded to the generator's smallest side (8), not only to a
    multiple of 4 (which would leave 1 pixel for the residual blocks' padding), by the Keras
    translator and the SavedModel's endpoint alike."""
    from_export = inference.Translator.load(exported)
    for h, w in [(3, 3), (5, 2), (1, 9)]:
        picture = smooth_image(rng, h, w)
        out = inference.translate_image(translator, picture)
        assert out.shape == (h, w, 3) and out.dtype == np.uint8
        np.testing.assert_allclose(from_export(inference.to_unit(picture)[None]),
                                   translator(inference.to_unit(picture)[None]), atol=1e-5)


def test_translator_sources_and_directions(trained_workdir, exported, rng):
    picture = inference.to_unit(smooth_image(rng, 32, 32))[None]
    from_workdir = inference.Translator.load(trained_workdir)
    from_keras = inference.Translator.load(trained_workdir / "model.keras", "style2photo")
    from_generator = inference.Translator.load(exported / "generator.keras")
    from_export = inference.Translator.load(exported)
    np.testing.assert_allclose(from_generator(picture), from_workdir(picture), atol=1e-5)
    np.testing.assert_allclose(from_export(picture), from_workdir(picture), atol=1e-5)
    assert not np.allclose(from_keras(picture), from_workdir(picture), atol=1e-3)  # F, not G
    with pytest.raises(InputError, match="photo2style"):
        inference.Translator.load(exported, "style2photo")
    with pytest.raises(InputError, match="no such file"):
        inference.Translator.load(trained_workdir / "nope.keras")


def test_xla_choice_for_translation(monkeypatch):
    from ghibli_keras import models
    from ghibli_keras import strategy as strategies

    policy = keras.config.dtype_policy()
    try:
        keras.config.set_dtype_policy("float32")
        resnet = models.resnet_generator(4, 1)
        image = keras.Input((None, None, 3))
        skip = keras.layers.Concatenate()([image, keras.layers.Conv2D(3, 1)(image)])
        unet_like = keras.Model(image, keras.layers.Conv2D(3, 1)(skip))
        keras.config.set_dtype_policy("mixed_bfloat16")
        resnet_bf16 = models.resnet_generator(4, 1)
    finally:
        keras.config.set_dtype_policy(policy)
    monkeypatch.setattr(strategies, "cpu_has_bf16", lambda cpuinfo=None: True)
    # this machine is a CPU: with bf16 instructions, oneDNN's kernels in either precision
    assert inference.translation_xla("auto", resnet) is False
    assert inference.translation_xla("auto", resnet_bf16) is False
    monkeypatch.setattr(strategies, "cpu_has_bf16", lambda cpuinfo=None: False)
    assert inference.translation_xla("auto", resnet) is True
    assert inference.translation_xla("auto", resnet_bf16) is True
    assert inference.translation_xla("auto", unet_like) is False
    monkeypatch.setattr(strategies, "device_kind", lambda strategy: "gpu")
    monkeypatch.setattr(strategies, "cpu_has_bf16", lambda cpuinfo=None: True)  # the host's CPU
    assert inference.translation_xla("auto", resnet) is True
    assert inference.translation_xla("auto", unet_like) is True
    assert inference.translation_xla("on", unet_like) is True
    assert inference.translation_xla("off", resnet) is False
    with pytest.raises(InputError, match="xla must be one of .* got 'yes'"):
        inference.translation_xla("yes", resnet)


def test_xla_on_and_off_translate_alike(trained_workdir, tmp_path, rng):
    picture = inference.to_unit(smooth_image(rng, 36, 44))[None]
    on = inference.Translator.load(trained_workdir, xla="on")
    off = inference.Translator.load(trained_workdir, xla="off")
    assert (on.fn._jit_compile, off.fn._jit_compile) == (True, False)  # tf.function's flag
    np.testing.assert_allclose(on(picture), off(picture), atol=1e-5)
    with pytest.raises(InputError, match="xla must be one of"):
        inference.Translator.load(trained_workdir, xla="maybe")
    Image.fromarray(smooth_image(rng, 20, 28)).save(tmp_path / "a.png")
    for choice in ("on", "off"):
        out = tmp_path / f"out_{choice}"
        assert cli.main(["translate", str(trained_workdir), str(tmp_path / "a.png"), "--out",
                         str(out), "--xla", choice, "--quiet"]) == 0
        assert (out / "a.jpg").is_file()


def test_a_damaged_keras_file_is_named_as_such(tmp_path):
    damaged = tmp_path / "model.keras"
    damaged.write_bytes(b"PK\x03\x04 cut short")
    with pytest.raises(InputError) as error:
        inference.Translator.load(damaged)
    assert "not a .keras model" in str(error.value) and "File not found" not in str(error.value)


def test_a_damaged_saved_model_is_named_as_such(tmp_path):
    (tmp_path / "export").mkdir()
    (tmp_path / "export" / "saved_model.pb").write_bytes(b"not a protocol buffer")
    with pytest.raises(InputError, match=r"export: not a SavedModel TensorFlow can load \(.*\); "
                                         r"export it again with `ghibli-keras export`$"):
        inference.Translator.load(tmp_path / "export")


# ------------------------------------------------------------------------------ export


def test_saved_model_in_a_fresh_process(exported):
    """Both signatures from `tf.saved_model.load` in a new Python, sizes 257x383 included."""
    code = f"""
import numpy as np, tensorflow as tf
m = tf.saved_model.load({str(exported)!r})
pixels = np.random.default_rng(0).integers(0, 256, (257, 383, 3)).astype(np.uint8)
out = m.signatures["serving_default"](image_bytes=tf.constant([tf.io.encode_png(pixels).numpy()]))
image = tf.io.decode_jpeg(out["image_bytes"][0]).numpy()
floats = m.signatures["translate"](images=tf.zeros([2, 30, 50, 3]))
print(image.shape, list(out), list(floats), floats[list(floats)[0]].shape)
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "(257, 383, 3) ['image_bytes']" in result.stdout and "(2, 30, 50, 3)" in result.stdout


def test_saved_model_cli_lists_the_signatures(exported):
    cli_path = [sys.executable, "-m", "tensorflow.python.tools.saved_model_cli"]
    result = subprocess.run([*cli_path, "show", "--dir", str(exported), "--all"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    text = result.stdout
    serving = text[text.index("signature_def['serving_default']"):]
    assert "inputs['image_bytes'] tensor_info:\n        dtype: DT_STRING\n        shape: (-1)" in serving
    assert "outputs['image_bytes'] tensor_info:\n        dtype: DT_STRING\n        shape: (-1)" in serving
    translate = text[text.index("signature_def['translate']"):]
    assert "dtype: DT_FLOAT\n        shape: (-1, -1, -1, 3)" in translate


def _rest_predict(signature, body: str) -> str:
    """What TF Serving's REST API does with a `predict` body of `instances` whose values are
    {"b64": ...}: decode, run the signature, base64 the `*_bytes` outputs."""
    request = json.loads(body)
    batch = [base64.b64decode(instance["b64"]) for instance in request["instances"]]
    out = signature(image_bytes=tf.constant(batch))["image_bytes"].numpy()
    return json.dumps({"predictions": [{"b64": base64.b64encode(b).decode()} for b in out]})


def test_translation_in_bf16(trained_workdir, tmp_path, rng, monkeypatch):
    """--mixed-precision: the generator copied into mixed_bfloat16 (float32 output) translates
    as float32 does, to bf16's precision; auto follows the hardware; the SavedModel too."""
    from ghibli_keras import strategy as strategies

    picture = inference.to_unit(smooth_image(rng, 36, 44))[None]
    fp32 = inference.Translator.load(trained_workdir, xla="off", precision="off")
    bf16 = inference.Translator.load(trained_workdir, xla="off", precision="bf16")
    assert inference.generator_policy(fp32.generator) == "float32"
    assert bf16.generator.get_layer("stem_conv").compute_dtype == "bfloat16"
    assert all(w.dtype == "float32" for w in bf16.generator.weights)
    got, want = bf16(picture), fp32(picture)
    assert got.dtype == np.float32 and got.shape == want.shape
    np.testing.assert_allclose(got, want, atol=0.03)
    assert np.abs(got - want).max() > 0  # it did compute in bf16
    for native, policy in ((True, "mixed_bfloat16"), (False, "float32")):
        monkeypatch.setattr(strategies, "cpu_has_bf16", lambda cpuinfo=None, native=native: native)
        monkeypatch.setattr(strategies, "cpu_bf16_pays", lambda cpuinfo=None, native=native: native)
        auto = inference.Translator.load(trained_workdir, precision="auto")
        assert inference.generator_policy(auto.generator) == policy
        assert auto.fn._jit_compile is (policy == "float32")  # XLA auto: off for native bf16
    with pytest.raises(InputError, match="mixed precision must be one of .* got 'fp8'"):
        inference.Translator.load(trained_workdir, precision="fp8")
    out = tmp_path / "bf16" / "1"
    assert cli.main(["export", str(trained_workdir), "--out", str(out), "--mixed-precision", "bf16"]) == 0
    loaded = tf.saved_model.load(str(out))  # held: its variables live as long as it does
    np.testing.assert_allclose(loaded.translate(tf.constant(picture)).numpy(), got, atol=1e-2)


def test_translation_in_fp16(trained_workdir, tmp_path, rng, caplog):
    """--mixed-precision fp16 (GPUs without bf16): the generator copied into mixed_float16
    translates as float32 does, to float16's precision, with a warning on a CPU, where XLA
    `auto` is on for it (oneDNN's float16 convolutions ran at 0.66x float32's rate); the
    SavedModel too."""
    picture = inference.to_unit(smooth_image(rng, 36, 44))[None]
    fp32 = inference.Translator.load(trained_workdir, xla="off", precision="off")
    with caplog.at_level(logging.WARNING, logger="ghibli_keras"):
        fp16 = inference.Translator.load(trained_workdir, xla="off", precision="fp16")
    assert "fp16 on a CPU is slower than float32" in caplog.text
    assert fp16.generator.get_layer("stem_conv").compute_dtype == "float16"
    assert all(w.dtype == "float32" for w in fp16.generator.weights)
    got, want = fp16(picture), fp32(picture)
    assert got.dtype == np.float32 and got.shape == want.shape
    np.testing.assert_allclose(got, want, atol=5e-3)
    assert np.abs(got - want).max() > 0  # it did compute in float16
    assert inference.translation_xla("auto", fp16.generator) is True
    out = tmp_path / "fp16" / "1"
    assert cli.main(["export", str(trained_workdir), "--out", str(out), "--mixed-precision", "fp16"]) == 0
    loaded = tf.saved_model.load(str(out))
    np.testing.assert_allclose(loaded.translate(tf.constant(picture)).numpy(), got, atol=1e-3)


def test_rest_request_gives_the_keras_pixels(exported, translator, rng):
    pixels = smooth_image(rng, 64, 96)
    body = json.dumps({"instances": [{"b64": base64.b64encode(_jpeg(pixels, 100)).decode()}]})
    loaded = tf.saved_model.load(str(exported))
    answer = json.loads(_rest_predict(loaded.signatures["serving_default"], body))
    served = tf.io.decode_jpeg(base64.b64decode(answer["predictions"][0]["b64"])).numpy()
    decoded = tf.io.decode_jpeg(_jpeg(pixels, 100)).numpy()  # what the server saw
    expected = inference.translate_image(translator, decoded)
    assert served.shape == expected.shape
    assert np.abs(served.astype(float) - expected).mean() < 2.0  # JPEG quality 95


def _exif_jpeg(pixels, orientation, byte_order="little"):
    """A JPEG whose EXIF (a camera name, then the orientation tag) says how to show it."""
    e = "<" if byte_order == "little" else ">"
    entries = [(0x010F, 2, 4, b"Cam\0"), (0x0112, 3, 1, struct.pack(e + "HH", orientation, 0))]
    tiff = ((b"II" if byte_order == "little" else b"MM") + struct.pack(e + "HI", 42, 8)
            + struct.pack(e + "H", len(entries))
            + b"".join(struct.pack(e + "HHI", *entry[:3]) + entry[3] for entry in entries)
            + struct.pack(e + "I", 0))
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, "JPEG", quality=98, exif=b"Exif\0\0" + tiff)
    return out.getvalue()


@pytest.mark.parametrize("byte_order", ["little", "big"])
def test_served_jpegs_are_turned_by_their_exif_orientation(byte_order):
    """As Pillow's exif_transpose (what translate does), in the graph, for all 8 values."""
    y, x = np.mgrid[0:30, 0:50]
    pixels = np.stack([x * 5, y * 8, (x + y) * 3], -1).astype(np.uint8)  # no symmetry
    for orientation in range(1, 9):
        data = _exif_jpeg(pixels, orientation, byte_order)
        shown = np.asarray(images.read_image(data), dtype=int)  # Pillow, EXIF applied
        got = export._decode_upright(tf.constant(data)).numpy()
        assert got.shape == shown.shape, orientation
        assert np.abs(got - shown).max() <= 8, orientation  # two JPEG decoders
        assert tuple(export._header_shape(tf.constant(data)).numpy()) == shown.shape[:2]


def test_served_pictures_are_read_as_translate_reads_files(exported, translator, rng):
    """A phone's sideways JPEG comes back upright, a PNG's transparency on white."""
    photo = smooth_image(rng, 24, 40)
    rgba = np.concatenate([smooth_image(rng, 24, 40), np.zeros((24, 40, 1), np.uint8)], -1)
    rgba[:, :20, 3] = 255  # left half opaque, right half transparent
    png = io.BytesIO()
    Image.fromarray(rgba, "RGBA").save(png, "PNG")
    requests = [_exif_jpeg(photo, 6), png.getvalue(), _exif_jpeg(photo, 1)]
    serve = tf.saved_model.load(str(exported)).signatures["serving_default"]
    answers = serve(image_bytes=tf.constant(requests))["image_bytes"].numpy()
    for request, answer in zip(requests, answers):
        served = tf.io.decode_jpeg(answer).numpy().astype(float)
        expected = inference.translate_image(translator, images.read_image(request))
        assert served.shape == expected.shape
        assert np.abs(served - expected).mean() < 3.0  # JPEG quality 95, two decoders


def test_bad_bytes_and_too_many_pixels_are_invalid_argument(exported, trained_workdir, tmp_path):
    loaded = tf.saved_model.load(str(exported))
    serve = loaded.signatures["serving_default"]
    for junk in (b"not a picture", b"\xff\xd8\xff\xe0 truncated", b""):
        with pytest.raises(tf.errors.InvalidArgumentError):
            serve(image_bytes=tf.constant([junk]))
    for fmt in ("GIF", "BMP", "WEBP"):  # no header size is read: refused before decoding
        other = io.BytesIO()
        Image.new("RGB", (8, 8)).save(other, fmt)
        with pytest.raises(tf.errors.InvalidArgumentError, match="takes JPEG or PNG bytes"):
            serve(image_bytes=tf.constant([other.getvalue()]))
    generator = keras.models.load_model(trained_workdir / "model.keras", compile=False).generator_g
    small = export.export(generator, tmp_path / "small", max_pixels=1000)
    serve_small = tf.saved_model.load(str(small)).signatures["serving_default"]
    big = np.zeros((40, 40, 3), np.uint8)  # 1600 pixels
    for data in (_jpeg(big), tf.io.encode_png(big).numpy()):
        with pytest.raises(tf.errors.InvalidArgumentError, match="more pixels than the limit"):
            serve_small(image_bytes=tf.constant([data]))
    serve_small(image_bytes=tf.constant([_jpeg(big[:20])]))  # 800 pixels pass


def test_a_large_served_picture_is_translated_tile_by_tile(trained_workdir, translator, rng,
                                                           monkeypatch):
    """serving_default tiles a picture with a side over `tile` as the translate command does:
    the network sees tile-sized pieces, never the whole picture."""
    generator = keras.models.load_model(trained_workdir / "model.keras", compile=False).generator_g
    seen, real = [], inference.pad_run_crop

    def recording(fn, images, *sides):
        shape = tf.numpy_function(lambda s: seen.append(tuple(s)) or s, [tf.shape(images)], tf.int32)
        with tf.control_dependencies([shape]):
            return real(fn, tf.identity(images), *sides)

    monkeypatch.setattr(inference, "pad_run_crop", recording)
    _, serve = export.make_endpoints(generator, tile=32, overlap=8)
    picture = smooth_image(rng, 70, 45)
    served = serve(tf.constant([tf.io.encode_png(picture).numpy()]))["image_bytes"][0]
    assert seen == [(1, 32, 32, 3)] * 6  # 3 rows × 2 columns of tiles
    served = tf.io.decode_jpeg(served).numpy().astype(float)
    monkeypatch.setattr(inference, "pad_run_crop", real)
    expected = inference.translate_image(translator, picture, tile=32, overlap=8)
    assert np.abs(served - expected).mean() < 3.0  # JPEG quality 95


def test_a_request_of_one_size_runs_through_the_network_together(trained_workdir, rng,
                                                                 monkeypatch):
    """serving_default: pictures whose headers give one size go through the network in
    batches of up to BATCH_PIXELS pixels, with the bytes a picture alone gets; mixed sizes,
    one picture at a time."""
    generator = keras.models.load_model(trained_workdir / "model.keras", compile=False).generator_g
    seen, real = [], export.pad_run_crop  # the batch sizes the network runs on

    def counting(fn, images, *sides):
        n = tf.numpy_function(lambda n: seen.append(int(n)) or n, [tf.shape(images)[0]], tf.int32)
        with tf.control_dependencies([n]):
            return real(fn, tf.identity(images), *sides)

    monkeypatch.setattr(export, "pad_run_crop", counting)
    monkeypatch.setattr(export, "BATCH_PIXELS", 2 * 20 * 28)  # two pictures a pass
    _, serve = export.make_endpoints(generator, max_pixels=1000)
    pictures = [smooth_image(rng, 20, 28) for _ in range(5)]
    requests = [_jpeg(p) for p in pictures[:4]] + [tf.io.encode_png(pictures[4]).numpy()]
    alone = [serve(tf.constant([r]))["image_bytes"][0].numpy() for r in requests]
    assert seen == [1] * 5
    seen.clear()
    together = serve(tf.constant(requests))["image_bytes"].numpy()
    assert seen == [2, 2, 1] and list(together) == alone
    seen.clear()
    mixed = [requests[0], _jpeg(smooth_image(rng, 12, 16)), requests[1]]
    answers = serve(tf.constant(mixed))["image_bytes"].numpy()
    assert seen == [1, 1, 1]
    assert [tf.io.decode_jpeg(a).shape[:2] for a in answers] == [(20, 28), (12, 16), (20, 28)]
    assert serve(tf.constant([], tf.string))["image_bytes"].shape == (0,)
    big = _jpeg(np.zeros((40, 40, 3), np.uint8))  # 1600 pixels
    with pytest.raises(tf.errors.InvalidArgumentError, match="more pixels than the limit"):
        serve(tf.constant([big, big]))


def test_export_folder_contents_and_refusals(exported, trained_workdir, capsys):
    for name in ("saved_model.pb", "generator.keras", "README.md",
                 "assets.extra/tf_serving_warmup_requests"):
        assert (exported / name).is_file(), name
    from tensorflow_serving.apis import prediction_log_pb2

    records = list(tf.data.TFRecordDataset(str(exported / "assets.extra" / export.WARMUP_FILE)))
    assert len(records) == len(export.WARMUP_SIZES)
    log = prediction_log_pb2.PredictionLog.FromString(records[0].numpy())
    assert log.predict_log.request.model_spec.signature_name == "serving_default"
    assert "saved_model_cli show --dir" in (exported / "README.md").read_text()
    assert cli.main(["export", str(trained_workdir), "--out", str(exported)]) == 2
    assert "already holds a SavedModel" in capsys.readouterr().err


def test_a_keras_model_that_is_not_a_generator_is_named(tmp_path):
    path = tmp_path / "dense.keras"
    keras.Sequential([keras.Input((8,)), keras.layers.Dense(3)]).save(path)
    with pytest.raises(InputError, match=r"dense.keras: .* is not a picture-to-picture generator "
                                         r"\(input \(None, 8\), output \(None, 3\)"):
        inference.Translator.load(path)


def test_export_and_translate_output_refusals(trained_workdir, tmp_path, monkeypatch, capsys):
    (tmp_path / "here").mkdir()
    monkeypatch.chdir(tmp_path / "here")
    assert cli.main(["export", str(trained_workdir), "--out", "."]) == 2
    assert "--out '.' is the current folder or one above it" in capsys.readouterr().err
    (tmp_path / "file").write_text("in the way")
    for args, message in [
        (["export", str(trained_workdir), "--out", str(tmp_path / "file" / "1")], "is a file"),
        (["translate", str(trained_workdir), str(tmp_path), "--out", "o", "--tile", "-1"],
         "argument --tile: must be 0 or more, got -1"),
    ]:
        with pytest.raises(SystemExit):
            cli.main(args)
        assert message in capsys.readouterr().err
