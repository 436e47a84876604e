"""SavedModel export for TF Serving (`ghibli-keras export MODEL --out DIR`).

The SavedModel, written with `keras.export.ExportArchive` straight into DIR, has two signatures:

  serving_default  image_bytes: string (N,) of JPEG/PNG bytes  ->  image_bytes: string (N,),
                   JPEG (quality 95) of the same size as each input as shown (a JPEG turned
                   by its EXIF orientation, a PNG's transparency on white; a PNG's rare eXIf
                   orientation is not read, unlike `translate`). TF Serving's REST API
                   takes inputs as {"b64": ...} and returns outputs named *_bytes base64-encoded.
                   Sizes the network cannot take are reflect-padded at the bottom and right and
                   cropped back; a picture with a side over 1024 is translated in
                   overlapping tiles, as the `translate` command does, so memory stays that of
                   one tile. Malformed bytes, other formats (GIF, WebP, ...) and pictures
                   over `max_pixels` (read from the header, before decoding) are refused with
                   INVALID_ARGUMENT. A request's pictures of one size (from their headers)
                   go through the network together, up to `inference.BATCH_PIXELS` a pass.
  translate        images: float32 (N, H, W, 3) in [-1, 1]  ->  output_0: float32 (N, H, W, 3),
                   any H, W: the network itself, untiled (memory grows with H × W).

Beside it: `generator.keras` (the generator as a Keras file), TF Serving warm-up requests in
`assets.extra/tf_serving_warmup_requests`, and a README with `saved_model_cli` and REST
examples. For TF Serving, export into a numbered version folder: `models/ghibli/1`.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from .errors import InputError
from .files import temporary_name
from .images import JPEG_QUALITY
from .inference import BATCH_PIXELS, DEFAULT_OVERLAP, DEFAULT_TILE, pad_run_crop, tf_translate_tiled

DEFAULT_MAX_PIXELS = 4096 * 4096
WARMUP_SIZES = ((256, 256), (512, 768))  # (H, W) of the warm-up pictures
WARMUP_FILE = "tf_serving_warmup_requests"


PNG_MAGIC, JPEG_MAGIC = b"\x89PNG\r\n\x1a\n", b"\xff\xd8"
EXIF_SCAN_BYTES = 1 << 17  # the EXIF segment (at most 64 KiB) follows at most one other
EXIF_MAX_SEGMENTS = 16  # JPEG segments walked to find it
EXIF_MAX_ENTRIES = 64  # IFD0 entries looked at for the orientation tag
ORIENTATION_TAG = 0x0112


def _exif_orientation(data: tf.Tensor) -> tf.Tensor:
    """A JPEG's EXIF orientation (int32 1..8, as phones write it), read in the graph from its
    APP1 segment's first IFD; 1 (upright) when there is none or it is not understood."""
    head = tf.io.decode_raw(tf.strings.substr(data, 0, EXIF_SCAN_BYTES), tf.uint8)
    head = tf.cast(tf.pad(head, [[0, EXIF_SCAN_BYTES + 16 - tf.size(head)]]), tf.int32)

    def byte(i):  # zeros past the end
        return tf.gather(head, tf.clip_by_value(i, 0, EXIF_SCAN_BYTES + 15))

    def segment(pos, found):  # the next JPEG marker segment: FF xx, big-endian length
        marker = byte(pos + 1)
        exif = tf.logical_and(tf.equal(marker, 0xE1), tf.reduce_all(tf.equal(
            byte(pos + 4 + tf.range(6)), tf.constant([69, 120, 105, 102, 0, 0]))))  # "Exif\0\0"
        return tf.where(exif, pos, pos + 2 + byte(pos + 2) * 256 + byte(pos + 3)), exif

    def walking(pos, found):
        header = tf.logical_and(tf.equal(byte(pos), 0xFF), pos < EXIF_SCAN_BYTES)
        return tf.logical_and(tf.logical_not(found), tf.logical_and(
            header, tf.logical_not(tf.reduce_any(tf.equal(byte(pos + 1), [0xDA, 0xD9])))))

    pos, found = tf.while_loop(walking, segment, (tf.constant(2), tf.constant(False)),
                               maximum_iterations=EXIF_MAX_SEGMENTS)
    tiff = pos + 10  # after FF E1, the length and "Exif\0\0"
    little = tf.equal(byte(tiff), ord("I"))  # "II": little-endian, "MM": big-endian

    def u16(i):
        return tf.where(little, byte(i) + 256 * byte(i + 1), 256 * byte(i) + byte(i + 1))

    def u32(i):
        low, high = u16(i), u16(i + 2)
        return tf.where(little, low + 65536 * high, 65536 * low + high)

    ifd = tiff + u32(tiff + 4)
    entries = ifd + 2 + 12 * tf.range(EXIF_MAX_ENTRIES)  # tag, type, count, value: 12 bytes
    is_orientation = tf.logical_and(tf.equal(u16(entries), ORIENTATION_TAG),
                                    tf.range(EXIF_MAX_ENTRIES) < u16(ifd))
    value = tf.reduce_max(tf.where(is_orientation, u16(entries + 8), 0))
    ok = tf.logical_and(found, tf.logical_and(value >= 1, value <= 8))
    return tf.where(ok, value, 1)


def _upright(image: tf.Tensor, orientation: tf.Tensor) -> tf.Tensor:
    """`(H, W, C)` pixels as stored -> as shown, for EXIF orientation 1..8 (as Pillow's
    `ImageOps.exif_transpose`)."""
    def transpose(x):
        return tf.transpose(x, [1, 0, 2])

    return tf.switch_case(orientation - 1, [
        lambda: image,
        lambda: tf.reverse(image, [1]),  # 2: mirrored
        lambda: tf.reverse(image, [0, 1]),  # 3: upside down
        lambda: tf.reverse(image, [0]),  # 4: mirrored upside down
        lambda: transpose(image),  # 5
        lambda: tf.reverse(transpose(image), [1]),  # 6: turned 90° clockwise to show
        lambda: tf.reverse(transpose(image), [0, 1]),  # 7
        lambda: tf.reverse(transpose(image), [0]),  # 8: turned 90° anticlockwise to show
    ])


def _header_shape(data: tf.Tensor) -> tf.Tensor:
    """(height, width) as shown, from a JPEG's (and its EXIF orientation) or PNG's header,
    before any pixel is decoded (int64, shape (2,)); zeros for other formats, which
    `_decode_upright` refuses."""
    is_png = tf.strings.substr(data, 0, 8) == PNG_MAGIC
    is_jpeg = tf.strings.substr(data, 0, 2) == JPEG_MAGIC

    def png():  # IHDR: width, then height, big-endian
        size = tf.io.decode_raw(tf.strings.substr(data, 16, 8), tf.int32, little_endian=False)
        return tf.cast(tf.stack([size[1], size[0]]), tf.int64)

    def jpeg():
        shape = tf.cast(tf.io.extract_jpeg_shape(data)[:2], tf.int64)
        return tf.where(_exif_orientation(data) >= 5, shape[::-1], shape)

    return tf.case([(is_png, png), (is_jpeg, jpeg)], default=lambda: tf.zeros([2], tf.int64))


def _decode_upright(data: tf.Tensor) -> tf.Tensor:
    """JPEG or PNG bytes -> uint8 `(H, W, 3)` as `translate` reads files: a JPEG turned by its
    EXIF orientation, a PNG's transparency composited on white (but a PNG's eXIf chunk, which
    cameras do not write, is not read for an orientation). Other formats are refused
    (INVALID_ARGUMENT): their sizes are not read from a header, so `max_pixels` could only be
    checked after decoding, and a GIF of 200 kB can decode to gigabytes."""
    is_png = tf.strings.substr(data, 0, 8) == PNG_MAGIC
    is_jpeg = tf.strings.substr(data, 0, 2) == JPEG_MAGIC
    known = tf.debugging.assert_equal(tf.logical_or(is_png, is_jpeg), True, message=(
        "serving_default takes JPEG or PNG bytes; convert other pictures (GIF, WebP, BMP, "
        "TIFF) to one of them first"))

    def png():  # RGBA over white
        rgba = tf.cast(tf.io.decode_png(data, channels=4), tf.float32)
        alpha = rgba[..., 3:] / 255.0
        return tf.cast(tf.round(rgba[..., :3] * alpha + 255.0 * (1.0 - alpha)), tf.uint8)

    def jpeg():
        return _upright(tf.io.decode_jpeg(data, channels=3), _exif_orientation(data))

    with tf.control_dependencies([known]):
        return tf.ensure_shape(tf.cond(is_png, png, jpeg), [None, None, 3])


def _header_pixels(data: tf.Tensor) -> tf.Tensor:
    """Width × height from a JPEG's or PNG's header (int64); 0 for other formats."""
    return tf.reduce_prod(_header_shape(data))


def make_endpoints(generator: keras.Model, max_pixels: int = DEFAULT_MAX_PIXELS,
                   jit_compile: bool = False, tile: int = DEFAULT_TILE,
                   overlap: int = DEFAULT_OVERLAP):
    """The two endpoint functions (`translate`, `serve`) for `generator`; with `jit_compile`
    the network runs XLA-compiled (the flag is saved: TF Serving compiles it too). `serve`
    translates a picture with a side over `tile` in tiles overlapping by `overlap` pixels, as
    the `translate` command does, so a request's memory is that of one tile's pass (about
    1.2 GiB for 1024×1024 in float32) rather than growing with the picture (a 4096×4096 one
    whole: about 19 GiB)."""
    from .models import size_multiple, smallest_side

    multiple, smallest = size_multiple(generator), smallest_side(generator)
    network = tf.function(lambda x: generator(x, training=False), jit_compile=jit_compile)

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32, name="images")])
    def translate(images):  # (N, H, W, 3) in [-1, 1]
        return pad_run_crop(network, images, multiple, smallest)

    def decode(data):  # scalar string -> (H, W, 3) uint8
        pixels = _header_pixels(data)
        check = tf.debugging.assert_less_equal(
            pixels, tf.constant(max_pixels, tf.int64),
            message=f"picture has more pixels than the limit of {max_pixels}")
        with tf.control_dependencies([check]):
            image = _decode_upright(data)  # (H, W, 3)
        shape = tf.shape(image, out_type=tf.int64)
        check = tf.debugging.assert_less_equal(
            shape[0] * shape[1], tf.constant(max_pixels, tf.int64),
            message=f"picture has more pixels than the limit of {max_pixels}")
        with tf.control_dependencies([check]):
            return tf.identity(image)

    def tiled(x):  # (N, H, W, 3) -> (N, H, W, 3), each picture tile by tile
        return tf.map_fn(lambda image: tf_translate_tiled(network, image, tile, overlap,
                                                          multiple, smallest), x)

    def run(images):  # (N, H, W, 3) uint8 -> (N,) JPEG strings
        x = tf.cast(images, tf.float32) / 127.5 - 1.0
        y = tf.cond(tf.reduce_max(tf.shape(x)[1:3]) > tile, lambda: tiled(x),
                    lambda: translate(x))
        y = tf.cast(tf.round((tf.clip_by_value(y, -1.0, 1.0) + 1.0) * 127.5), tf.uint8)
        return tf.map_fn(lambda image: tf.io.encode_jpeg(image, quality=JPEG_QUALITY), y,
                         fn_output_signature=tf.string)

    def one_by_one(image_bytes):
        return tf.map_fn(lambda data: run(decode(data)[None])[0], image_bytes,
                         fn_output_signature=tf.string)

    def together(image_bytes, height, width):  # pictures of one size: BATCH_PIXELS a pass
        count = tf.size(image_bytes)
        chunk = tf.maximum(tf.cast(BATCH_PIXELS // (height * width), tf.int32), 1)
        parts = tf.TensorArray(tf.string, size=(count + chunk - 1) // chunk, infer_shape=False)

        def body(i, parts):
            part = image_bytes[i * chunk:(i + 1) * chunk]
            images = tf.map_fn(decode, part, fn_output_signature=tf.TensorSpec([None, None, 3], tf.uint8))
            return i + 1, parts.write(i, run(images))

        _, parts = tf.while_loop(lambda i, _: i < parts.size(), body, (0, parts))
        return parts.concat()

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="image_bytes")])
    def serve(image_bytes):
        # A request of pictures whose headers give one size runs them through the network
        # together, as translate batches them; any other, one picture at a time.
        shapes = tf.map_fn(_header_shape, image_bytes,
                           fn_output_signature=tf.TensorSpec([2], tf.int64))  # (N, 2)
        first = shapes[:1]  # (1, 2); (0, 2) for an empty request
        same = tf.logical_and(tf.size(image_bytes) > 1, tf.reduce_all(shapes == first))
        same = tf.logical_and(same, tf.reduce_all(first > 0))
        out = tf.cond(same, lambda: together(image_bytes, first[0, 0], first[0, 1]),
                      lambda: one_by_one(image_bytes))
        return {"image_bytes": tf.ensure_shape(out, [None])}

    return translate, serve


def _warmup_records(model_name: str = "ghibli") -> list[bytes]:
    """Serialized `PredictionLog`s calling serving_default once per size in `WARMUP_SIZES`."""
    from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2

    records = []
    for h, w in WARMUP_SIZES:
        ramp = np.linspace(0, 255, h * w * 3).reshape(h, w, 3).astype(np.uint8)
        jpeg = tf.io.encode_jpeg(ramp, quality=JPEG_QUALITY).numpy()
        request = predict_pb2.PredictRequest(
            model_spec=model_pb2.ModelSpec(name=model_name, signature_name="serving_default"),
        )
        request.inputs["image_bytes"].CopyFrom(tf.make_tensor_proto([jpeg], dtype=tf.string))
        log = prediction_log_pb2.PredictionLog(
            predict_log=prediction_log_pb2.PredictLog(request=request))
        records.append(log.SerializeToString())
    return records


README_TEMPLATE = """\
# {name}: a ghibli-keras generator for TF Serving

Exported from {source}. Signatures:

- `serving_default`: `image_bytes` (string, shape (-1)) — JPEG or PNG bytes — to `image_bytes`
  (string, shape (-1)) — JPEG bytes (quality {quality}) of the same size, upright (a JPEG's EXIF
  orientation applied; a PNG's transparency composited on white; no colour management: an
  embedded ICC profile is not applied). A picture with a side over {tile} pixels is translated
  in tiles overlapping by {overlap}, so a request needs the memory of one {tile}×{tile} pass.
  At most {max_pixels:,} pixels a picture, read from the header; malformed bytes, other
  formats (GIF, WebP, BMP, TIFF) and larger pictures give INVALID_ARGUMENT.
- `translate`: `images` float32 (-1, -1, -1, 3) in [-1, 1] to `output_0` float32 of the same
  shape: the network alone, untiled, so its memory grows with the pictures' size.

Inspect:

    saved_model_cli show --dir {dir} --all

Serve (the model base path holds numbered versions, e.g. models/ghibli/1 = this folder):

    tensorflow_model_server --rest_api_port=8501 --model_name=ghibli \\
        --model_base_path=/absolute/path/to/models/ghibli

Call it over REST:

    echo '{{"instances": [{{"b64": "'"$(base64 -w0 photo.jpg)"'"}}]}}' > request.json
    curl -s -X POST http://localhost:8501/v1/models/ghibli:predict -d @request.json \\
        | python3 -c 'import base64, json, sys; r = json.load(sys.stdin); \\
    open("ghibli.jpg", "wb").write(base64.b64decode(r["predictions"][0]["b64"]))'

`generator.keras` is the same generator for `keras.models.load_model`, after
`import ghibli_keras` (which registers its layers).
"""


def export(generator: keras.Model, out_dir, *, source: str = "",
           max_pixels: int = DEFAULT_MAX_PIXELS, jit_compile: bool = False) -> Path:
    """Writes the SavedModel of `generator` into `out_dir` (which must not hold one yet):
    written into a temporary folder beside it, then renamed, so `out_dir` is complete or absent.
    """
    out_dir = Path(out_dir)
    if (out_dir / "saved_model.pb").exists():
        raise InputError(f"{out_dir} already holds a SavedModel: export into a new version "
                         f"folder (e.g. models/ghibli/2) or delete it first")
    if out_dir.exists() and any(out_dir.iterdir()):
        raise InputError(f"{out_dir} is not empty: export into a new or empty folder")
    try:
        warmup = _warmup_records()
    except ImportError:
        raise InputError("export writes TF Serving's warm-up requests with tensorflow-serving-api, "
                         "which is not installed: pip install 'tensorflow-serving-api>=2.16,<3'"
                         ) from None
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_dir.with_name(temporary_name(out_dir.name))
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        translate, serve = make_endpoints(generator, max_pixels, jit_compile)
        archive = keras.export.ExportArchive()
        archive.track(generator)
        archive.add_endpoint("serving_default", serve)
        archive.add_endpoint("translate", translate)
        archive.write_out(str(tmp), verbose=False)
        generator.save(tmp / "generator.keras")
        extra = tmp / "assets.extra"
        extra.mkdir(exist_ok=True)
        with tf.io.TFRecordWriter(str(extra / WARMUP_FILE)) as writer:
            for record in warmup:
                writer.write(record)
        (tmp / "README.md").write_text(README_TEMPLATE.format(
            name=generator.name, source=source or "a ghibli-keras model", quality=JPEG_QUALITY,
            max_pixels=max_pixels, dir=out_dir, tile=DEFAULT_TILE, overlap=DEFAULT_OVERLAP))
        if out_dir.exists():
            out_dir.rmdir()  # empty, checked above
        os.replace(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out_dir
