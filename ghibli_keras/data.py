"""TFRecord shards in the Kaggle schema, and the tf.data pipelines that feed training.

The schema is Kaggle's `gan-getting-started` one: each record is a `tf.train.Example` with
`image_name` (bytes), `image` (JPEG bytes) and `target` (bytes). Shards are named
`{prefix}{index:02d}-{count}.tfrec`, like Kaggle's `monet00-60.tfrec`, so counting images needs no
pass over the data.

Writing:  `write_tfrecords(src_dir, out_dir, prefix)` (the `make-tfrecords` command).
Reading:  `load_tfrecords(files_or_glob)` -> uint8 `(H, W, 3)` images.
Training: `training_dataset(photos, styles, global_batch_size)` -> `(x, y)` batches in [-1, 1],
          each domain shuffled and repeated on its own, so neither is truncated to the other.
Eval:     `evaluation_dataset(photos, styles)` -> the same without augmentation, finite.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterable, Optional, Sequence, Union

import numpy as np
import tensorflow as tf

from . import images
from .errors import InputError

AUTOTUNE = tf.data.AUTOTUNE

#: Parsing spec of the Kaggle schema. Only `image` is required.
FEATURES = {
    "image_name": tf.io.FixedLenFeature([], tf.string, default_value=""),
    "image": tf.io.FixedLenFeature([], tf.string),
    "target": tf.io.FixedLenFeature([], tf.string, default_value=""),
}
SHARD_SUFFIX = ".tfrec"
JPEG_MAX_SIDE = 65535  # the format's limit (its sizes are 16-bit)
PARTIAL_SUFFIX = ".partial"  # a shard being written; never matches `*.tfrec`
REPLACED_SUFFIX = ".replaced"  # an old shard set aside while a new set takes its names
DEFAULT_SHARD_SIZE = 256
DEFAULT_JPEG_QUALITY = 95
DEFAULT_SHUFFLE_BUFFER = 256  # serialized records (not decoded images) per domain

#: The count in a shard name as Kaggle and `ShardWriter` write it (`monet00-60.tfrec`): after
#: a shard index of two digits or more. Not `train-00000-of-00002.tfrecord`, `styles-2024.tfrec`.
_COUNT_IN_NAME = re.compile(r"\d{2}-(\d+)\.tfrec$")
_TFRECORD_SUFFIXES = images.TFRECORD_SUFFIXES

PathOrGlob = Union[str, os.PathLike]
Files = Union[PathOrGlob, Sequence[PathOrGlob]]


# --------------------------------------------------------------------------------------------
# Writing shards


def shard_name(prefix: str, index: int, count: int) -> str:
    """Kaggle-style shard name: `shard_name("monet", 0, 60) == "monet00-60.tfrec"`."""
    return f"{prefix}{index:02d}-{count}{SHARD_SUFFIX}"


def make_example(name: str, jpeg: bytes, target: str) -> tf.train.Example:
    """One record of the Kaggle schema."""

    def _bytes(value: bytes) -> tf.train.Feature:
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))

    return tf.train.Example(
        features=tf.train.Features(
            feature={
                # surrogateescape: a file name that is not UTF-8 keeps its bytes
                "image_name": _bytes(name.encode("utf-8", "surrogateescape")),
                "image": _bytes(jpeg),
                "target": _bytes(target.encode("utf-8", "surrogateescape")),
            }
        )
    )


def encode_jpeg(image: np.ndarray, quality: int = DEFAULT_JPEG_QUALITY) -> bytes:
    """uint8 `(H, W, 3)` -> JPEG bytes (tf.io; 4:2:0 chroma like most cameras and Kaggle)."""
    return tf.io.encode_jpeg(image, quality=quality, optimize_size=True).numpy()


class ShardWriter:
    """Writes records into `{prefix}{index:02d}-{count}.tfrec` shards of `shard_size` records.

    Shards are written as `{prefix}{index:02d}.tfrec.partial` and renamed to their final names
    only when the whole set is complete (`close()`), so an interrupted run never leaves files
    that look like a finished set, nor half of a new set beside an old one. `close(replacing)`
    sets the old shards `replacing` names aside (`*.tfrec.replaced`), renames the new set in,
    then removes the old: an exception in between (Ctrl-C, a full disk) puts the old set back
    as it was (only a kill -9 during the renames can leave a mix: write the set again). `abort()`
    removes everything this writer wrote. Use as a context manager: an exception aborts.
    """

    def __init__(self, out_dir: PathOrGlob, prefix: str, shard_size: int = DEFAULT_SHARD_SIZE):
        if shard_size <= 0:
            raise InputError(f"shard_size must be positive, got {shard_size}")
        if not prefix or "/" in prefix or os.sep in prefix:
            raise InputError(f"prefix must be a non-empty file-name prefix, got {prefix!r}")
        self.out_dir = Path(out_dir)
        self.prefix = prefix
        self.shard_size = shard_size
        self.shards: list[Path] = []
        self.num_records = 0
        self._finished: list[tuple[Path, Path]] = []  # (partial, final) of each full shard
        self._made_folder = False  # out_dir did not exist: abort() removes it again
        self._writer: Optional[tf.io.TFRecordWriter] = None
        self._partial: Optional[Path] = None
        self._in_shard = 0

    def write(self, example: tf.train.Example) -> None:
        if self._writer is None:
            index = len(self._finished)
            self._partial = self.out_dir / f"{self.prefix}{index:02d}{SHARD_SUFFIX}{PARTIAL_SUFFIX}"
            try:
                if not self.out_dir.exists():
                    self.out_dir.mkdir(parents=True)
                    self._made_folder = True
                self._writer = tf.io.TFRecordWriter(str(self._partial))
            except (OSError, tf.errors.OpError) as e:
                raise InputError(f"cannot write shards in {str(self.out_dir)!r} "
                                 f"({getattr(e, 'message', None) or e}): choose another "
                                 f"output folder or a shorter --prefix") from None
        self._writer.write(example.SerializeToString(deterministic=True))  # sorted map keys
        self._in_shard += 1
        self.num_records += 1
        if self._in_shard == self.shard_size:
            self._finish_shard()

    def _finish_shard(self) -> None:
        self._writer.close()
        final = self.out_dir / shard_name(self.prefix, len(self._finished), self._in_shard)
        self._finished.append((self._partial, final))
        self._writer, self._partial, self._in_shard = None, None, 0

    def close(self, replacing: Sequence[Path] = ()) -> list[Path]:
        """Finishes the last shard and gives every shard its final name; removes the shards of
        `replacing` that were not overwritten. Returns the paths of all shards written."""
        if self._writer is not None:
            self._finish_shard()
        # the old set out of the way first, whole: an interruption puts it back as it was
        aside = [(path, path.with_name(path.name + REPLACED_SUFFIX))
                 for path in sorted(set(replacing)) if path.exists()]
        try:
            for path, moved in aside:
                os.replace(path, moved)
            for partial, final in self._finished:
                os.replace(partial, final)
                self.shards.append(final)
        except BaseException:
            for final in self.shards:
                final.unlink(missing_ok=True)
            self.shards = []
            for path, moved in aside:
                if moved.exists():
                    os.replace(moved, path)
            raise
        self._finished = []
        for _, moved in aside:
            moved.unlink(missing_ok=True)
        return self.shards

    def abort(self) -> None:
        """Removes the shard being written and every shard finished so far."""
        if self._writer is not None:
            self._writer.close()
            self._partial.unlink(missing_ok=True)
            self._writer, self._partial = None, None
        for partial, _ in self._finished:
            partial.unlink(missing_ok=True)
        for path in self.shards:
            path.unlink(missing_ok=True)
        self._finished, self.shards = [], []
        if self._made_folder and not any(self.out_dir.iterdir()):
            self.out_dir.rmdir()

    def __enter__(self) -> "ShardWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


@dataclasses.dataclass
class WriteReport:
    """What `write_tfrecords` did: shards written, images in them, inputs skipped and why."""

    shards: list[Path]
    num_images: int
    skipped: list[tuple[Path, str]]

    def summary(self) -> str:
        lines = [f"wrote {self.num_images} images in {len(self.shards)} shard(s)"]
        lines += [f"  {p.name}" for p in self.shards]
        if self.skipped:
            lines.append(f"skipped {len(self.skipped)} file(s):")
            lines += [f"  {p}: {reason}" for p, reason in self.skipped]
        return "\n".join(lines)


def existing_shards(out_dir: PathOrGlob, prefix: str) -> list[Path]:
    """Shards already in `out_dir` whose names this prefix would produce."""
    pattern = re.compile(re.escape(prefix) + r"(\d+)-(\d+)" + re.escape(SHARD_SUFFIX) + "$")
    folder = Path(out_dir)
    if not folder.is_dir():
        return []

    found = {}  # index digits -> path
    for path in folder.iterdir():
        match = pattern.match(path.name)
        if match:
            found.setdefault(match[1], []).append(path)
    # Two-digit indices are this prefix's; "set200-3" may also be set2's shard 00, so a longer
    # index counts only as the continuation of this prefix's run 99, 100, 101, ...
    ours = [digits for digits in found if len(digits) == 2]
    index = 100
    while "99" in found and str(index) in found:
        ours.append(str(index))
        index += 1
    return sorted(path for digits in ours for path in found[digits])


def write_tfrecords(
    src_dir: PathOrGlob,
    out_dir: PathOrGlob,
    prefix: str,
    *,
    size: Optional[int] = None,
    shard_size: int = DEFAULT_SHARD_SIZE,
    target: Optional[str] = None,
    strict: bool = False,
    max_pixels: int = images.DEFAULT_MAX_PIXELS,
    quality: int = DEFAULT_JPEG_QUALITY,
    overwrite: bool = False,
    workers: Optional[int] = None,
    progress: bool = True,
) -> WriteReport:
    """Converts every picture below `src_dir` into Kaggle-schema TFRecord shards in `out_dir`.

    Args:
        src_dir: folder searched recursively for JPEG, PNG, WebP, BMP, GIF and TIFF files.
        out_dir: folder for the shards (created if missing).
        prefix: shard name prefix: `photo` gives `photo00-256.tfrec`, `photo01-17.tfrec`, ...
        size: if given, resize the shorter side to `size` and centre-crop to `size`×`size`;
            otherwise pictures keep their size.
        shard_size: records per shard.
        target: the `target` feature of every record (default: `prefix`).
        strict: any unreadable input is an error and nothing is written.
        max_pixels: pictures with more pixels than this are skipped (or, with `strict`, fail).
        quality: JPEG quality of the stored images.
        overwrite: replace shards of the same prefix already in `out_dir` (else an error).
        workers: threads that read, resize and encode (default: all cores).
        progress: show a progress bar.

    Returns:
        A `WriteReport`; `report.skipped` lists each unreadable input with the reason.

    Raises:
        InputError: `src_dir` is missing or holds no picture, `out_dir` already holds shards of
            this prefix (without `overwrite`), an argument is out of range, or (with `strict`)
            an input is unreadable.

    Example:
    >>> report = write_tfrecords("stills/", "shards/", "ghibli", size=256)  # doctest: +SKIP
    >>> print(report.summary())                                             # doctest: +SKIP
    """
    src = Path(src_dir)
    if not src.is_dir():
        raise InputError(f"source folder {str(src)!r} does not exist or is not a folder")
    if size is not None and size <= 0:
        raise InputError(f"--size must be a positive number of pixels, got {size}")
    if max_pixels <= 0:
        raise InputError(f"--max-pixels must be positive, got {max_pixels}")
    if not 1 <= quality <= 100:
        raise InputError(f"JPEG quality (--quality) must be in 1..100, got {quality}")
    files = images.list_images(src)
    if not files:
        raise InputError(
            f"no pictures found in {str(src)!r} (looked recursively for "
            f"{', '.join(images.IMAGE_SUFFIXES)})"
        )
    old = existing_shards(out_dir, prefix)
    if old and not overwrite:
        raise InputError(
            f"{str(out_dir)!r} already holds shards named {prefix}NN-COUNT{SHARD_SUFFIX} "
            f"({old[0].name}, ...): remove them, choose another --prefix, or pass --overwrite"
        )
    target = prefix if target is None else target

    def prepare(path: Path):
        try:
            image = images.read_image(path, max_pixels=max_pixels)
            if size is not None:
                image = images.resize_and_center_crop(image, size)
            if max(image.shape[:2]) > JPEG_MAX_SIDE:
                height, width = image.shape[:2]
                return None, (f"{width}x{height}: a JPEG stores at most {JPEG_MAX_SIDE} pixels a "
                              f"side; pass --size to resize the pictures")
            return encode_jpeg(image, quality), None
        except images.ImageReadError as e:
            return None, e.reason

    skipped: list[tuple[Path, str]] = []
    workers = workers or os.cpu_count() or 1
    chunk = 8 * workers  # bounded look-ahead: at most this many encoded pictures in memory
    with ShardWriter(out_dir, prefix, shard_size) as writer, ThreadPoolExecutor(workers) as pool, \
            _progress(total=len(files), desc=f"{prefix} shards", enabled=progress) as bar:
        for start in range(0, len(files), chunk):
            batch = files[start : start + chunk]
            for path, (jpeg, reason) in zip(batch, pool.map(prepare, batch)):
                bar.update(1)
                if reason is not None:
                    if strict:
                        raise InputError(f"{path}: {reason} (--strict: nothing was written)")
                    skipped.append((path, reason))
                    continue
                name = path.relative_to(src).with_suffix("").as_posix()
                writer.write(make_example(name, jpeg, target))
        if writer.num_records == 0:
            raise InputError(
                f"none of the {len(files)} file(s) in {str(src)!r} could be read: "
                + "; ".join(f"{p.name}: {r}" for p, r in skipped[:3])
            )
        writer.close(replacing=old)  # the old shards go only once the new set is complete
    return WriteReport(shards=writer.shards, num_images=writer.num_records, skipped=skipped)


def _progress(total: int, desc: str, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="img", disable=not enabled)


# --------------------------------------------------------------------------------------------
# Reading shards


def list_shards(files_or_glob: Files) -> list[str]:
    """Expands files, globs and folders (their `*.tfrec*` files) into a sorted list of paths.

    Accepts local paths and anything `tf.io.gfile` reads (`gs://...` on Kaggle TPUs).

    Raises:
        InputError: a pattern matches nothing.
    """
    patterns = (
        [files_or_glob] if isinstance(files_or_glob, (str, os.PathLike)) else list(files_or_glob)
    )
    if not patterns:
        raise InputError("no TFRecord files given")
    found: list[str] = []
    for pattern in map(os.fspath, patterns):
        if tf.io.gfile.isdir(pattern):
            matches = [
                os.path.join(pattern, name)
                for name in tf.io.gfile.listdir(pattern)
                if name.endswith(_TFRECORD_SUFFIXES)
            ]
        else:
            matches = tf.io.gfile.glob(pattern)
        matches = [m for m in matches if not m.endswith((PARTIAL_SUFFIX, REPLACED_SUFFIX))]
        if not matches:
            raise InputError(
                f"no TFRecord files match {pattern!r}: check the path, e.g. "
                f"'tfrecords/sample/photo/*.tfrec' or '/kaggle/input/gan-getting-started/"
                f"photo_tfrec/*.tfrec'"
            )
        found.extend(sorted(matches))
    return sorted(set(found))


def count_in_name(path: str) -> Optional[int]:
    """The image count a Kaggle-style shard name carries (`monet00-60.tfrec` -> 60), or None."""
    match = _COUNT_IN_NAME.search(os.path.basename(path))
    return int(match.group(1)) if match else None


def count_images(files_or_glob: Files) -> int:
    """Number of images in the shards: from the names when they carry it, else by counting."""
    total = 0
    for path in list_shards(files_or_glob):
        count = count_in_name(path)
        if count is None:
            with naming_unreadable_records(path, "its images could not be counted"):
                count = int(tf.data.TFRecordDataset(path).reduce(np.int64(0), lambda n, _: n + 1))
        total += count
    return total


def check_schema(files: Iterable[str]) -> None:
    """Reads the first record of each file; raises `InputError` naming a file that is not a
    TFRecord file of `tf.train.Example`s with an `image` feature."""
    for path in files:
        try:
            first = next(iter(tf.data.TFRecordDataset(path).take(1)), None)
        except (tf.errors.DataLossError, tf.errors.InvalidArgumentError) as e:
            raise InputError(f"{path}: not a readable TFRecord file ({_plain(e.message)})") from None
        if first is None:
            size = tf.io.gfile.stat(path).length
            if size:  # shorter than one record's header: TensorFlow reads it as empty
                raise InputError(f"{path}: not a readable TFRecord file ({size} bytes, no "
                                 f"complete record)")
            continue  # an empty shard is fine
        try:
            example = tf.train.Example.FromString(first.numpy())
        except Exception as e:  # protobuf's DecodeError; its module path varies by version
            raise InputError(f"{path}: records are not tf.train.Example protos ({e})") from None
        if "image" not in example.features.feature:
            keys = ", ".join(sorted(example.features.feature)) or "none"
            raise InputError(
                f"{path}: records have no 'image' feature (features found: {keys}); expected the "
                f"Kaggle schema image_name, image (JPEG bytes), target"
            )


#: TensorFlow's errors for a truncated shard and for image bytes that do not decode.
READ_ERRORS = (tf.errors.DataLossError, tf.errors.InvalidArgumentError)


#: The first bytes of a JPEG file, and of the pictures sometimes found in its place.
JPEG_MAGIC = b"\xff\xd8"
OTHER_MAGIC = {b"\x89PNG": "PNG", b"GIF8": "GIF", b"BM": "BMP", b"RIFF": "WebP"}


def record_problem(record: tf.Tensor) -> tuple[str, Optional[str]]:
    """(image_name, why the record's image cannot be trained on, or None if it can)."""
    try:
        example = parse_example(record)
    except READ_ERRORS as e:
        return "", f"not a tf.train.Example of the Kaggle schema ({_plain(e.message)})"
    name = example["image_name"].numpy().decode(errors="replace")
    jpeg = example["image"].numpy()
    if not jpeg.startswith(JPEG_MAGIC):
        kind = next((k for magic, k in OTHER_MAGIC.items() if jpeg.startswith(magic)), None)
        return name, (f"the image is a {kind} picture; the Kaggle schema (and training's "
                      f"crop-while-decoding) needs JPEG" if kind else "the image is not a JPEG picture")
    try:
        decode_image(jpeg)
    except READ_ERRORS as e:
        return name, f"the image does not decode ({_plain(e.message)})"
    return name, None


def find_unreadable_record(files: Iterable[str]) -> Optional[str]:
    """The first record of the shards that cannot be read or whose image is not a JPEG that
    decodes, as "PATH: record N (image_name 'NAME'): why"; None if every record is fine.

    Each shard is first decoded in one tf.data pass (thousands of images a second); only a
    shard that fails is read again record by record to find the one."""

    def check(record):  # what training does to a record: its JPEG header, then the pixels
        jpeg = parse_example(record)["image"]
        return tf.io.extract_jpeg_shape(jpeg), tf.shape(decode_image(jpeg))

    for path in files:
        try:
            tf.data.TFRecordDataset(path).map(check, num_parallel_calls=AUTOTUNE).reduce(
                np.int64(0), lambda n, _: n + 1)
            continue
        except READ_ERRORS:
            pass
        records = iter(tf.data.TFRecordDataset(path))
        index = 0
        while True:
            try:
                record = next(records, None)
            except READ_ERRORS as e:
                return f"{path}: cannot be read from record {index} on ({_plain(e.message)})"
            if record is None:
                break
            name, problem = record_problem(record)
            if problem:
                named = f" (image_name {name!r})" if name else ""
                return f"{path}: record {index}{named}: {problem}"
            index += 1
    return None


@contextlib.contextmanager
def naming_unreadable_records(files: Files, doing: str = ""):
    """Within the block, TensorFlow's error for a truncated shard or an image that does not
    decode — raised by whatever reads `files` — becomes an `InputError` that names the shard and
    the record, and says what to do; other errors pass unchanged.

    Args:
        files: the shards the block reads (a file, glob or folder, or a list of them).
        doing: what stopped, for the message (e.g. "training stopped; ...").
    """
    try:
        yield
    except READ_ERRORS:
        where = find_unreadable_record(list_shards(files))
        if where is None:
            raise
        advice = ("remove the shard or rebuild it from the pictures "
                  "(ghibli-keras make-tfrecords skips pictures it cannot read)")
        raise InputError(f"{where}; {advice}" + (f"; {doing}" if doing else "")) from None


def _plain(message: str) -> str:
    """TensorFlow's error text without its graph-node wrapper and op suffix."""
    first = re.sub(r"\{\{.*?\}\}\s*", "", message.splitlines()[0])
    return re.sub(r"\s*\[Op:.*$", "", first).strip().rstrip(".")


def parse_example(serialized: tf.Tensor) -> dict:
    """Serialized `tf.train.Example` -> dict of the three string features."""
    return tf.io.parse_single_example(serialized, FEATURES)


def decode_image(jpeg: tf.Tensor) -> tf.Tensor:
    """JPEG bytes -> uint8 `(H, W, 3)`."""
    image = tf.io.decode_jpeg(jpeg, channels=3)
    return tf.ensure_shape(image, [None, None, 3])


def load_tfrecords(files_or_glob: Files, *, with_names: bool = False) -> tf.data.Dataset:
    """Images from TFRecord shards of the Kaggle schema, in file order.

    Args:
        files_or_glob: a file, glob or folder, or a list of them. Kaggle's
            `gan-getting-started/monet_tfrec/*.tfrec` and `photo_tfrec/*.tfrec` read unchanged.
        with_names: yield `(image_name, image)` instead of `image`.

    Returns:
        A `tf.data.Dataset` of uint8 `(H, W, 3)` images (or `(name, image)` pairs).

    Raises:
        InputError: a pattern matches nothing, or a file is not of the schema.

    Example:
    >>> ds = load_tfrecords("tfrecords/sample/photo/*.tfrec")   # doctest: +SKIP
    >>> next(iter(ds)).shape                                    # doctest: +SKIP
    TensorShape([128, 128, 3])
    """
    files = list_shards(files_or_glob)
    check_schema(files)
    ds = tf.data.TFRecordDataset(files, num_parallel_reads=None).map(
        parse_example, num_parallel_calls=AUTOTUNE
    )
    if with_names:
        return ds.map(
            lambda f: (f["image_name"], decode_image(f["image"])), num_parallel_calls=AUTOTUNE
        )
    return ds.map(lambda f: decode_image(f["image"]), num_parallel_calls=AUTOTUNE)


# --------------------------------------------------------------------------------------------
# Training and evaluation input


def to_unit_range(image: tf.Tensor) -> tf.Tensor:
    """uint8 (or float in [0, 255]) -> float32 in [-1, 1]."""
    return tf.cast(image, tf.float32) / 127.5 - 1.0


def resize_shorter_side(image: tf.Tensor, size: int) -> tf.Tensor:
    """Bilinear resize so the shorter side is `size`, antialiased when it shrinks the picture;
    keeps the aspect ratio. Returns float32."""
    shape = tf.cast(tf.shape(image)[:2], tf.float32)
    scale = tf.cast(size, tf.float32) / tf.reduce_min(shape)
    new_size = tf.maximum(tf.cast(tf.round(shape * scale), tf.int32), size)
    return tf.image.resize(image, new_size, method="bilinear", antialias=True)


def window_side(image_size: int, load_size: int, shorter_side) -> int:
    """Side of the source square that becomes an `image_size` crop after the shorter side is
    resized to `load_size`: `round(image_size * shorter_side / load_size)` (229 for Kaggle's
    256-pixel pictures and the reference's 286 -> 256)."""
    return max(int(round(image_size * shorter_side / load_size)), 1)


def random_window(jpeg: tf.Tensor, seed: tf.Tensor, load_size: int, image_size: int) -> tf.Tensor:
    """The reference's random crop and flip, in the source picture's pixels: a random square
    window of side `window_side(image_size, load_size, min(H, W))`, decoded alone
    (`tf.io.decode_and_crop_jpeg`) and flipped left-right half of the time, still uint8.
    Resizing it to `image_size` (antialiased where it shrinks: `random_jitter`) gives the
    reference's picture: resize the shorter side to `load_size`, random `image_size` crop,
    random flip. Stateless: a given
    `seed` (int `(2,)`) always gives the same window.

    Returns:
        uint8 `(side, side, 3)`.
    """
    shape = tf.io.extract_jpeg_shape(jpeg)[:2]  # (H, W) from the header
    shorter = tf.cast(tf.reduce_min(shape), tf.float32)
    side = tf.maximum(tf.cast(tf.round(image_size * shorter / load_size), tf.int32), 1)
    u = tf.random.stateless_uniform([3], seed=seed)  # y offset, x offset, flip
    top = tf.cast(u[0] * tf.cast(shape[0] - side + 1, tf.float32), tf.int32)
    left = tf.cast(u[1] * tf.cast(shape[1] - side + 1, tf.float32), tf.int32)
    crop = tf.io.decode_and_crop_jpeg(jpeg, tf.stack([top, left, side, side]), channels=3)
    crop = tf.cond(u[2] < 0.5, lambda: tf.reverse(crop, axis=[1]), lambda: crop)
    return tf.ensure_shape(crop, [None, None, 3])  # (side, side, 3)


def finish_jitter(windows: tf.Tensor, image_size: int) -> tf.Tensor:
    """uint8 windows `(..., w, w, 3)` -> float32 `(..., S, S, 3)` in [-1, 1]: the bilinear
    resize that completes the jitter (none for windows already `image_size` a side: the input
    pipeline shrinks larger ones itself, antialiased). `CycleGAN.train_step` runs it on the
    accelerator for batches of uint8 windows; float input is returned unchanged."""
    if windows.dtype != tf.uint8:
        return windows
    windows = tf.cast(windows, tf.float32)
    if windows.shape[-3:-1] != (image_size, image_size):
        windows = tf.image.resize(windows, [image_size, image_size])
    return windows / 127.5 - 1.0


def _resized_window(window: tf.Tensor, side: int) -> tf.Tensor:
    """A uint8 window resized to `side` pixels, antialiased where it shrinks (bilinear alone
    would skip most of a much larger window's pixels and alias); still uint8."""
    resized = tf.image.resize(window, [side, side], antialias=True)
    return tf.cast(tf.clip_by_value(tf.round(resized), 0, 255), tf.uint8)


def random_jitter(jpeg: tf.Tensor, seed: tf.Tensor, load_size: int, image_size: int) -> tf.Tensor:
    """`random_window` then `finish_jitter`, all here: float32 `(image_size, image_size, 3)`
    in [-1, 1]. A window larger than `image_size` is first shrunk to it, antialiased."""
    window = random_window(jpeg, seed, load_size, image_size)
    larger = tf.shape(window)[0] > image_size
    window = tf.cond(larger, lambda: _resized_window(window, image_size), lambda: window)
    return finish_jitter(window, image_size)


def _fixed_window(window: tf.Tensor, side: int) -> tf.Tensor:
    """A uint8 window at `side` pixels: unchanged when it already is (the usual case: shards of
    one picture size), else resized, so windows from pictures of any size batch together."""
    same = tf.logical_and(tf.shape(window)[0] == side, tf.shape(window)[1] == side)
    resized = tf.cond(same, lambda: window, lambda: _resized_window(window, side))
    return tf.ensure_shape(resized, [side, side, 3])


def first_record(files: Sequence[str]) -> tf.Tensor:
    """The shards' first record (empty shards skipped); `InputError` when they hold none."""
    record = next(iter(tf.data.TFRecordDataset(files).take(1)), None)
    if record is None:
        raise InputError(f"no pictures in {', '.join(files)}: every shard is empty")
    return record


SIDE_SAMPLE = 64  # pictures whose JPEG headers choose a domain's window side
SIDE_SAMPLE_SHARDS = 8  # ... taken in turn from this many shards


def picture_sides(files: Sequence[str], count: Optional[int] = None) -> list[int]:
    """The shorter sides of up to `count` (default `SIDE_SAMPLE`) of the shards' pictures,
    from their JPEG headers, taken in turn from the first `SIDE_SAMPLE_SHARDS` shards;
    `InputError` naming the record when they hold no picture, or when one of these is not a
    JPEG (so training does not start on it)."""
    count = count or SIDE_SAMPLE
    first_record(files)  # InputError for shards without pictures
    ds = tf.data.Dataset.from_tensor_slices(list(files)).interleave(
        tf.data.TFRecordDataset, cycle_length=min(len(files), SIDE_SAMPLE_SHARDS), block_length=1)
    ds = ds.take(count).map(
        lambda record: tf.reduce_min(tf.io.extract_jpeg_shape(parse_example(record)["image"])[:2]))
    with naming_unreadable_records(files):
        return [int(side) for side in ds]


def domain_window(sides: Sequence[int], image_size: int, load_size: int) -> int:
    """The one side a domain's uint8 windows reach the train step at: the largest window of
    pictures with these shorter `sides`, at most `image_size` (larger ones are shrunk on the
    host, antialiased; smaller ones enlarged there to it, and to `image_size` in the step).
    Kaggle's 256-pixel pictures at 286 -> 256: 229."""
    return min(max(window_side(image_size, load_size, side) for side in sides), image_size)


def center_square(image: tf.Tensor, image_size: int) -> tf.Tensor:
    """Evaluation transform: shorter side to `image_size`, centre crop, to [-1, 1]."""
    image = resize_shorter_side(image, image_size)
    image = tf.image.resize_with_crop_or_pad(image, image_size, image_size)
    return image / 127.5 - 1.0


def _domain_stream(
    files: list[str],
    *,
    load_size: int,
    image_size: int,
    shuffle_buffer: int,
    seed: Optional[int],
    window: Optional[int],
) -> tf.data.Dataset:
    """One domain, shuffled and repeated forever, jittered: uint8 `(window, window, 3)` windows
    for `finish_jitter`, or, with `window=None`, float32 `(S, S, 3)` in [-1, 1]."""
    deterministic = seed is not None
    ds = tf.data.Dataset.from_tensor_slices(files)
    ds = ds.shuffle(len(files), seed=seed, reshuffle_each_iteration=True)
    ds = ds.interleave(
        tf.data.TFRecordDataset,
        cycle_length=min(len(files), 8),
        num_parallel_calls=AUTOTUNE,
        deterministic=deterministic,
    )
    # Shuffle the serialized records (small) rather than decoded images, then repeat: every
    # epoch of this domain is a full pass over it, whatever the other domain's size.
    ds = ds.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True).repeat()
    seeds = tf.data.Dataset.random(seed=seed).batch(2)  # per-image augmentation seeds
    ds = tf.data.Dataset.zip((ds, seeds))

    def transform(serialized, aug_seed):
        jpeg = parse_example(serialized)["image"]
        if window is None:
            return random_jitter(jpeg, aug_seed, load_size, image_size)
        return _fixed_window(random_window(jpeg, aug_seed, load_size, image_size), window)

    return ds.map(transform, num_parallel_calls=AUTOTUNE, deterministic=deterministic)


def training_dataset(
    photos: Files,
    styles: Files,
    global_batch_size: int,
    *,
    image_size: int = 256,
    load_size: int = 286,
    shuffle_buffer: int = DEFAULT_SHUFFLE_BUFFER,
    seed: Optional[int] = None,
    strategy: Optional[tf.distribute.Strategy] = None,
    resize_on_device: bool = False,
) -> tf.data.Dataset:
    """The unpaired training input: an infinite dataset of `(x, y)` batches.

    Each domain is read from its own shards (interleaved in parallel), shuffled and repeated on
    its own, then jittered (resize the shorter side to `load_size`, random `image_size` crop,
    random horizontal flip) and scaled to [-1, 1]; the two infinite streams are zipped, so a
    small style set is cycled while the photos are read once per epoch, and neither is cut.

    The jitter is done in the cheapest order that gives the same picture: only the source
    window that becomes the crop is decoded, and flipped while still uint8; the bilinear resize
    of that window to `image_size` is the one costly step left (on a 2-core CPU it costs more
    than the JPEG decode). With `resize_on_device=True` the pipeline stops before it and yields
    the uint8 windows, all at one side per domain (`domain_window`; windows of pictures of
    other sizes are resized to it on the host); `CycleGAN.train_step` finishes the
    jitter on the accelerator (`finish_jitter`), where it is nearly free, and the host only
    decodes. `train()` does this. A window larger than `image_size` (pictures larger than
    `load_size`) is shrunk here, antialiased (XLA has no antialiased resize, and bilinear
    alone would alias); with `resize_on_device`, windows reach the step at one side per
    domain, `domain_window` of a sample of its pictures: at most `image_size`.

    Args:
        photos: shards of domain X (files, globs or folders).
        styles: shards of domain Y.
        global_batch_size: images per domain per step, over all replicas.
        image_size: side of the training crops.
        load_size: side the images are resized to before cropping (≥ `image_size`).
        shuffle_buffer: records per domain in the shuffle buffer.
        seed: makes order and augmentation repeatable (and turns on deterministic order);
            `None` is faster.
        strategy: if given, checks that `global_batch_size` splits evenly over its replicas.
            Pass the returned dataset to `model.fit` (Keras splits each global batch between
            replicas) or to `strategy.experimental_distribute_dataset`.

        resize_on_device: yield uint8 windows for `finish_jitter` (see above).

    Returns:
        `tf.data.Dataset` of `(x, y)`, each float32 `(global_batch_size, S, S, 3)` in [-1, 1],
        or with `resize_on_device`, uint8 `(global_batch_size, w, w, 3)` (w per domain,
        at most `image_size`).

    Example:
    >>> ds = training_dataset("tfrecords/sample/photo", "tfrecords/sample/ghibli", 4,
    ...                       image_size=64, load_size=72)   # doctest: +SKIP
    """
    if global_batch_size <= 0:
        raise InputError(f"batch size must be positive, got {global_batch_size}")
    if image_size <= 0 or load_size < image_size:
        raise InputError(
            f"need 0 < image_size <= load_size, got image_size={image_size}, load_size={load_size}"
        )
    if shuffle_buffer <= 0:
        raise InputError(f"shuffle_buffer must be positive, got {shuffle_buffer}")
    if strategy is not None and global_batch_size % strategy.num_replicas_in_sync:
        raise InputError(
            f"batch size {global_batch_size} does not split evenly over "
            f"{strategy.num_replicas_in_sync} replicas: use a multiple of "
            f"{strategy.num_replicas_in_sync}"
        )
    streams = []
    for index, files in enumerate((photos, styles)):
        shards = list_shards(files)
        check_schema(shards)
        sides = picture_sides(shards)  # InputError for a domain without pictures
        streams.append(
            _domain_stream(
                shards,
                load_size=load_size,
                image_size=image_size,
                shuffle_buffer=shuffle_buffer,
                seed=None if seed is None else seed + index,  # domains differ, both repeatable
                window=domain_window(sides, image_size, load_size) if resize_on_device else None,
            )
        )
    ds = tf.data.Dataset.zip(tuple(streams))  # both infinite: nothing is truncated
    ds = ds.batch(global_batch_size, drop_remainder=True)
    return ds.with_options(_options(deterministic=seed is not None)).prefetch(AUTOTUNE)


def evaluation_dataset(
    photos: Files,
    styles: Optional[Files] = None,
    *,
    batch_size: int = 1,
    image_size: int = 256,
) -> tf.data.Dataset:
    """Held-out input without augmentation, in file order, finite.

    Images are resized (shorter side to `image_size`), centre-cropped and scaled to [-1, 1].
    With `styles`, yields `(x, y)` pairs covering the larger domain once, the smaller one
    repeated as needed; without, yields `x` only.

    Returns:
        `tf.data.Dataset` of float32 `(B, S, S, 3)` batches (or pairs of them); the last batch
        may be smaller.
    """
    if batch_size <= 0:
        raise InputError(f"batch size must be positive, got {batch_size}")
    if image_size <= 0:
        raise InputError(f"image_size must be positive, got {image_size}")

    def domain(files):
        first_record(list_shards(files))  # InputError for shards without pictures
        return load_tfrecords(files).map(
            lambda image: center_square(image, image_size), num_parallel_calls=AUTOTUNE
        )

    if styles is None:
        ds = domain(photos)
    else:
        length = max(count_images(photos), count_images(styles))
        ds = tf.data.Dataset.zip(
            (domain(photos).repeat().take(length), domain(styles).repeat().take(length))
        )
    ds = ds.batch(batch_size)
    return ds.with_options(_options(deterministic=True)).prefetch(AUTOTUNE)


def steps_per_epoch(photos: Files, styles: Files, global_batch_size: int) -> int:
    """Steps for one pass over the larger domain (as the reference defines an epoch)."""
    return max(1, max(count_images(photos), count_images(styles)) // global_batch_size)


def _options(deterministic: bool) -> tf.data.Options:
    options = tf.data.Options()
    options.deterministic = deterministic
    # One file per domain is common (the sample set, small style sets): FILE sharding would
    # fail with more workers than files, DATA always works.
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return options
