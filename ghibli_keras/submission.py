"""The Kaggle "I'm Something of a Painter Myself" submission: `images.zip` of 256×256 JPEGs.

`write_submission` translates every photo and writes the zip atomically (a temporary name,
then a rename, only after `check_zip` passed); `check_zip` is the validator, also run alone by
`ghibli-keras submission --check images.zip`. Kaggle's rules are the defaults: 7,000–10,000
images, each a 256×256 RGB JPEG, unique names, no folders.

Example:
>>> write_submission(Translator.load("workdirs/kaggle"),                      # doctest: +SKIP
...                  "/kaggle/input/gan-getting-started/photo_tfrec/*.tfrec",
...                  "/kaggle/working/images.zip")
7038
"""

from __future__ import annotations

import io
import os
import zipfile
import zlib
from pathlib import Path
from typing import Iterator, Optional

import numpy as np
from PIL import Image

from . import images
from .errors import InputError
from .files import temporary_name

MIN_IMAGES = 7_000
MAX_IMAGES = 10_000
SIZE = 256
BATCH_SIZE = 16
_SHOWN = 5  # problems of one kind listed by name


class SubmissionError(InputError):
    """The zip breaks the competition's rules; the message lists what is wrong."""


def check_zip(path, *, min_images: int = MIN_IMAGES, max_images: int = MAX_IMAGES,
              size: int = SIZE, shown_as=None) -> int:
    """Validates a submission zip; returns its number of images. `shown_as`: the name its
    messages give it (default `path`; a zip being written is checked under a temporary name).

    Raises:
        SubmissionError: listing every kind of problem found: not a zip, too few or too many
            images, entries in folders, names that are not .jpg/.jpeg, duplicate names
            (ignoring case), entries that are not JPEG, not `size`×`size` or not RGB.
    """
    path = Path(path)
    shown_as = path if shown_as is None else shown_as
    if not path.is_file():
        what = "a folder, not a zip file" if path.is_dir() else "no such file"
        raise SubmissionError(f"{shown_as}: {what}")
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as e:
        raise SubmissionError(f"{shown_as}: not a zip file ({e})") from None
    problems: dict[str, list[str]] = {}

    def problem(kind: str, name: str) -> None:
        problems.setdefault(kind, []).append(name)

    with archive:
        entries = [info for info in archive.infolist() if not info.is_dir()]
        seen: set[str] = set()
        for info in entries:
            name = info.filename
            if "/" in name or "\\" in name:
                problem("inside a folder (images must be at the top of the zip)", name)
            if not name.lower().endswith((".jpg", ".jpeg")):
                problem("not named .jpg or .jpeg", name)
            key = name.lower()
            if key in seen:
                problem("duplicate name", name)
            seen.add(key)
            try:
                data = archive.read(info)
            except (zipfile.BadZipFile, NotImplementedError, RuntimeError, zlib.error, EOFError,
                    OSError):  # damaged (bad CRC), Deflate64, encrypted, cut short
                problem("not readable from the zip (damaged, encrypted or compressed in a "
                        "way Python cannot read)", name)
                continue
            if not data.startswith(b"\xff\xd8"):
                problem("not a JPEG", name)
                continue
            try:
                picture = Image.open(io.BytesIO(data))
                if picture.size != (size, size):  # before decoding: a huge one is not decoded
                    problem(f"not {size}x{size}", f"{name} ({picture.width}x{picture.height})")
                    continue
                picture.load()  # the pixels too: a truncated JPEG has a whole header
            except (OSError, SyntaxError, ValueError, Image.DecompressionBombError):
                problem("not a readable picture", name)
                continue
            if picture.mode != "RGB":
                problem("not RGB (3 channels)", f"{name} ({picture.mode})")
    count = len(entries)
    messages = []
    if not min_images <= count <= max_images:
        messages.append(f"{count} images; the competition needs {min_images:,} to {max_images:,}")
    for kind, names in problems.items():
        listed = ", ".join(names[:_SHOWN]) + (f", ... ({len(names)} in all)" if len(names) > _SHOWN else "")
        messages.append(f"{len(names)} {'entry is' if len(names) == 1 else 'entries are'} {kind}: {listed}")
    if messages:
        raise SubmissionError(f"{shown_as} is not a valid submission: " + "; ".join(messages))
    return count


def _photos(source, max_pixels: int = images.DEFAULT_MAX_PIXELS
            ) -> tuple[int, Iterator[tuple[str, np.ndarray]]]:
    """(count, iterator of (name, uint8 picture)) from shards or picture files (those with
    more than `max_pixels` refused)."""
    kind, files = images.resolve_files(source)
    if kind == "shards":
        from . import data

        count = data.count_images(files)
        ds = data.load_tfrecords(files, with_names=True)

        def records():
            with data.naming_unreadable_records(files, "no zip was written"):
                for name, picture in ds.as_numpy_iterator():
                    yield name.decode(errors="replace"), picture

        return count, records()

    def pictures():
        for path in files:
            yield Path(path).stem, images.read_image(path, max_pixels=max_pixels)

    return len(files), pictures()


def _unique(name: str, used: set) -> str:
    """`name`'s stem as a .jpg name not in `used` (ignoring case; `_2`, `_3`... appended),
    with no folder separator in it: Kaggle wants every image at the top of the zip."""
    stem, n = Path(name.replace("\\", "_")).stem or "image", 1
    candidate = f"{stem}.jpg"
    while candidate.lower() in used:
        n += 1
        candidate = f"{stem}_{n}.jpg"
    used.add(candidate.lower())
    return candidate


def write_submission(translator, photos, out, *, size: int = SIZE,
                     min_images: int = MIN_IMAGES, max_images: int = MAX_IMAGES,
                     progress: bool = True, max_pixels: int = images.DEFAULT_MAX_PIXELS) -> int:
    """Translates every photo of `photos` (shards or picture files: a glob, folder or file) to a
    `size`×`size` JPEG in the zip `out`, validates it with `check_zip` and only then puts it in
    place. Photos that are not `size`×`size` are resized (shorter side) and centre-cropped
    first; a picture file with more than `max_pixels` is refused. Returns the number of images.

    Raises:
        SubmissionError: the zip would break the rules (nothing is written at `out`; a zip
            already there is left as it was).
    """
    from tqdm.auto import tqdm

    from .inference import to_uint8, to_unit

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(temporary_name(out.name))
    count, stream = _photos(photos, max_pixels)
    if not min_images <= count <= max_images:  # known before anything is translated
        raise SubmissionError(f"{photos}: {count} photos; the competition needs {min_images:,} to "
                              f"{max_images:,} images (nothing was written)")
    used: set[str] = set()
    try:
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED) as archive, \
                tqdm(total=count, desc="images.zip", unit="img", disable=not progress) as bar:
            batch: list = []

            def flush():
                translated = translator(np.stack([to_unit(p) for _, p in batch]))
                for (name, _), picture in zip(batch, translated):
                    archive.writestr(_unique(name, used), images.encode_image(to_uint8(picture)))
                bar.update(len(batch))
                batch.clear()

            for name, picture in stream:
                if picture.shape[:2] != (size, size):
                    picture = images.resize_and_center_crop(picture, size)
                batch.append((name, picture))
                if len(batch) == BATCH_SIZE:
                    flush()
            if batch:
                flush()
        written = check_zip(tmp, min_images=min_images, max_images=max_images, size=size,
                            shown_as=out)
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            tmp.unlink()
    return written


def default_bounds(min_images: Optional[int], max_images: Optional[int]) -> tuple[int, int]:
    low = MIN_IMAGES if min_images is None else min_images
    high = MAX_IMAGES if max_images is None else max_images
    if not 0 < low <= high:
        raise InputError(f"need 0 < --min-images <= --max-images, got {low} and {high}")
    return low, high
