"""Reading any picture file into an 8-bit RGB array.

One place for everything a picture on disk can throw at us: formats (JPEG, PNG, WebP, BMP, GIF's
first frame, TIFF), EXIF orientation, embedded ICC colour profiles (converted to sRGB), alpha
(composited on white), palette, grayscale, CMYK and 16-bit or float pixels, and a pixel limit that
is checked from the header, before any pixel is decoded, so a decompression bomb cannot exhaust
memory. Used by the shard writer, and later by translation and the UI.

This module imports no TensorFlow.

Example:
>>> image = read_image("holiday.jpg")   # doctest: +SKIP
>>> image.shape, image.dtype            # doctest: +SKIP
((3024, 4032, 3), dtype('uint8'))
"""

from __future__ import annotations

import contextlib
import glob
import io
import os
import warnings
from pathlib import Path
from typing import Sequence, Union

import numpy as np
from PIL import Image, ImageCms, UnidentifiedImageError

from .errors import InputError
from .files import atomic_path

#: File suffixes read when a folder is scanned (lower case).
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")

#: File suffixes of TFRecord shards.
TFRECORD_SUFFIXES = (".tfrec", ".tfrecord", ".tfrecords")

#: JPEG quality of the pictures this package writes.
JPEG_QUALITY = 95

#: Pillow format of each picture suffix this package writes.
WRITE_FORMATS = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG"}

#: Default pixel limit (width × height): 100 megapixels.
DEFAULT_MAX_PIXELS = 100_000_000

_WHITE = (255, 255, 255, 255)
_SRGB = ImageCms.createProfile("sRGB")

Source = Union[str, os.PathLike, bytes]


class ImageReadError(InputError):
    """A picture that cannot be used, with a short human `reason` (the message names the file)."""

    def __init__(self, source: str, reason: str):
        super().__init__(f"{source}: {reason}")
        self.source = source
        self.reason = reason


def list_images(folder: Union[str, os.PathLike]) -> list[Path]:
    """All picture files below `folder` (recursively, by suffix), sorted by relative path.

    Hidden files and folders (names starting with '.') are skipped; linked folders are
    followed, each real folder once.
    """
    root = Path(folder)
    found = []
    seen = set()  # folders already walked (real paths): a link back up is not a loop
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in seen:
            dirnames[:] = []
            continue
        seen.add(real)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in filenames:
            if not name.startswith(".") and name.lower().endswith(IMAGE_SUFFIXES):
                found.append(Path(dirpath) / name)
    return sorted(found, key=lambda p: p.relative_to(root).as_posix())


def resolve_files(source: Union[str, os.PathLike]) -> tuple[str, list[str]]:
    """A folder, glob or file -> ("images" | "shards", sorted paths).

    A folder is read for pictures (recursively); if it holds none, for TFRecord shards.

    Raises:
        InputError: nothing usable matches, or pictures and shards are mixed.
    """
    text = os.fspath(source)
    path = Path(text)
    if path.is_dir():
        found = [str(p) for p in list_images(path)]
        if found:
            return "images", found
        shards = sorted(str(p) for p in path.iterdir() if p.name.endswith(TFRECORD_SUFFIXES))
        if shards:
            return "shards", shards
        raise InputError(f"{text!r}: a folder with no pictures and no TFRecord shards")
    matches = sorted(glob.glob(text)) if not path.is_file() else [text]
    matches = [m for m in matches if Path(m).is_file()]
    if not matches:
        raise InputError(f"{text!r} matches no file (quote globs: 'shards/*.tfrec')")
    shards = [m for m in matches if m.endswith(TFRECORD_SUFFIXES)]
    pictures = [m for m in matches if m.lower().endswith(IMAGE_SUFFIXES)]
    if shards and pictures:
        raise InputError(f"{text!r} matches both pictures and TFRecord shards; choose one")
    if shards:
        return "shards", shards
    if pictures:
        return "images", pictures
    raise InputError(f"{text!r} matches no picture ({', '.join(IMAGE_SUFFIXES)}) and no shard")


def output_paths(inputs: Sequence[Union[str, os.PathLike]], out_dir: Path, fmt: str) -> list[tuple[Path, Path]]:
    """(input picture, output path) pairs. A folder's pictures keep their path relative to it
    (`photos/a/b.jpg` -> `OUT/a/b.png`), a file its name; the suffix becomes `fmt`.

    Raises:
        InputError: an input is missing or has no pictures, two inputs would write the same
            output, or an output would overwrite an input.
    """
    pairs = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found = list_images(path)
            if not found:
                raise InputError(f"{item!r}: no pictures in this folder "
                                 f"({', '.join(IMAGE_SUFFIXES)})")
            pairs += [(p, out_dir / p.relative_to(path).with_suffix(f".{fmt}")) for p in found]
        elif path.is_file():
            pairs.append((path, out_dir / path.with_suffix(f".{fmt}").name))
        else:
            raise InputError(f"{item!r}: no such file or folder")
    seen: dict[str, Path] = {}
    inputs = {_file_id(p) for p, _ in pairs}
    for src, dst in pairs:
        key = os.path.normcase(str(dst)).casefold()  # one file where names ignore case (macOS)
        if key in seen:
            raise InputError(f"{src} and {seen[key]} would both be written to {dst}: "
                             f"translate them in separate runs or rename one")
        if dst.exists() and _file_id(dst) in inputs:  # also IMG.JPG -> IMG.jpg on such disks
            raise InputError(f"{dst} is an input; choose another --out folder")
        seen[key] = src
    return pairs


def _file_id(path: Path) -> tuple[int, int]:
    """The file itself (device, inode), however its path is spelt."""
    stat = path.stat()
    return stat.st_dev, stat.st_ino


def read_image(source: Source, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Reads a picture file (path or encoded bytes) into a uint8 `(H, W, 3)` sRGB array.

    Args:
        source: a path, or the encoded bytes of a picture.
        max_pixels: refuse pictures whose header announces more than this many pixels
            (width × height), before decoding them.

    Returns:
        A C-contiguous uint8 array `(H, W, 3)`, oriented as the EXIF tag says.

    Raises:
        ImageReadError: the file is empty, is not a picture, is truncated or corrupt, or has
            more pixels than `max_pixels`. `error.reason` is a short explanation.
    """
    with _opened(source, max_pixels) as img:
        img.load()  # first frame only for GIF and other animations
        return _to_rgb(img)


def check_headers(paths: Sequence[Union[str, os.PathLike]], *,
                  max_pixels: int = DEFAULT_MAX_PIXELS) -> None:
    """Opens each picture's header (no pixels are decoded) and raises for the first unusable one.

    Cheap (well under a millisecond a file), so a command can refuse a folder holding an empty
    file, a non-picture or an over-large picture before it loads a network. A picture truncated
    after its header passes here and is caught when it is read.

    Raises:
        ImageReadError: as `read_image` would for that file's header.
    """
    for path in paths:
        with _opened(path, max_pixels):
            pass


@contextlib.contextmanager
def _opened(source: Source, max_pixels: int):
    """`Image.open(source)` with the pixel limit checked, and every failure inside the block
    (opening, decoding) raised as an `ImageReadError` naming `source`."""
    if max_pixels <= 0:
        raise ValueError(f"max_pixels must be positive, got {max_pixels}")
    name = "<bytes>" if isinstance(source, bytes) else str(source)
    if isinstance(source, bytes):
        if not source:
            raise ImageReadError(name, "empty (0 bytes)")
        fp = io.BytesIO(source)
    else:
        try:
            if os.path.getsize(source) == 0:
                raise ImageReadError(name, "empty file (0 bytes)")
        except OSError as e:
            raise ImageReadError(name, f"cannot be read ({e.strerror or e})") from None
        fp = source
    if Image.MAX_IMAGE_PIXELS is not None and max_pixels > Image.MAX_IMAGE_PIXELS:
        # Pillow refuses twice its own limit (179 M pixels by default) in Image.open, before
        # ours below could allow a larger picture: raise it to ours.
        Image.MAX_IMAGE_PIXELS = max_pixels
    with warnings.catch_warnings():
        # We apply our own limit below; Pillow's warning would only repeat it.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            with Image.open(fp) as img:
                width, height = img.size
                if width * height > max_pixels:
                    raise ImageReadError(
                        name,
                        f"{width}x{height} = {width * height:,} pixels, more than the limit of "
                        f"{max_pixels:,} (raise it with --max-pixels if the picture is genuine)",
                    )
                yield img
        except ImageReadError:
            raise
        except UnidentifiedImageError:
            raise ImageReadError(name, "not a picture Pillow can read") from None
        except Image.DecompressionBombError as e:
            raise ImageReadError(name, f"too many pixels ({e})") from None
        except (OSError, SyntaxError, ValueError) as e:
            raise ImageReadError(name, f"truncated or corrupt ({e})") from None
        except Exception as e:  # a plugin's own failure on odd bytes (struct.error, TypeError...)
            raise ImageReadError(name, f"cannot be decoded ({type(e).__name__}: {e})") from None


def _to_rgb(img: Image.Image) -> np.ndarray:
    """Pillow image of any mode -> uint8 (H, W, 3) sRGB, alpha composited on white."""
    img = _upright(img)
    img = _to_8bit(img)
    if img.mode == "P":
        img = img.convert("RGBA")  # palettes may carry transparency
    elif img.mode in ("LA", "PA", "La", "RGBa"):
        img = img.convert("RGBA")
    elif img.mode in ("L", "RGB") and "transparency" in img.info:  # one colour (PNG's tRNS)
        img = img.convert("RGBA")
    icc = img.info.get("icc_profile")
    if icc and img.mode in ("RGB", "RGBA", "CMYK", "L"):
        img = _icc_to_srgb(img, icc)
    if img.mode == "RGBA":
        background = Image.new("RGBA", img.size, _WHITE)
        img = Image.alpha_composite(background, img)
    if img.mode != "RGB":
        img = img.convert("RGB")
    return np.ascontiguousarray(np.asarray(img, dtype=np.uint8))


#: EXIF orientation -> the transpose that turns the picture upright (Pillow's exif_transpose).
_UPRIGHT = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180,
            4: Image.Transpose.FLIP_TOP_BOTTOM, 5: Image.Transpose.TRANSPOSE,
            6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
            8: Image.Transpose.ROTATE_90}
ORIENTATION_TAG = 0x0112


def _upright(img: Image.Image) -> Image.Image:
    """`img` turned as its EXIF orientation says. Only the tag is read: `ImageOps.
    exif_transpose` also writes the EXIF back, which fails (struct.error, TypeError) on odd
    tags of pictures that decode well."""
    method = _UPRIGHT.get(img.getexif().get(ORIENTATION_TAG))
    return img if method is None else img.transpose(method)


def _to_8bit(img: Image.Image) -> Image.Image:
    """16-bit integer and float grayscale modes -> 8-bit 'L' (Pillow keeps RGB at 8 bits),
    or 'LA' where one grey value is transparent (a PNG's tRNS); the ICC profile is kept."""
    if img.mode.startswith("I;16") or img.mode == "I":
        pixels = np.asarray(img, dtype=np.float64)
        top = 65535.0 if pixels.max(initial=0) > 255 or img.mode.startswith("I;16") else 255.0
        grey = np.clip(np.rint(pixels * 255.0 / top), 0, 255).astype(np.uint8)  # (H, W)
        transparent = img.info.get("transparency")
        if isinstance(transparent, int):  # compared at 16 bits, before the rounding
            alpha = np.where(pixels == transparent, 0, 255).astype(np.uint8)
            out = Image.fromarray(np.dstack([grey, alpha]), "LA")
        else:
            out = Image.fromarray(grey, "L")
        if "icc_profile" in img.info:
            out.info["icc_profile"] = img.info["icc_profile"]
        return out
    if img.mode == "F":
        pixels = np.asarray(img, dtype=np.float64)
        scale = 255.0 if pixels.max(initial=0) <= 1.0 else 1.0
        return Image.fromarray(np.clip(np.rint(pixels * scale), 0, 255).astype(np.uint8), "L")
    return img


def _icc_to_srgb(img: Image.Image, icc: bytes) -> Image.Image:
    """Converts pixels from their embedded ICC profile to sRGB (keeping alpha)."""
    out_mode = "RGBA" if img.mode == "RGBA" else "RGB"
    try:
        src = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        return ImageCms.profileToProfile(img, src, _SRGB, outputMode=out_mode)
    except (ImageCms.PyCMSError, OSError, ValueError):
        # A broken or unsupported profile: the pixels are still usable as they are.
        return img


def resize_and_center_crop(image: np.ndarray, size: int) -> np.ndarray:
    """Resizes the shorter side to `size` (Lanczos) and centre-crops to `size`×`size`: the
    centred square is cut first and resized alone, so a long thin picture is never enlarged
    whole.

    Args:
        image: uint8 `(H, W, 3)`.
        size: the output side in pixels, positive.

    Returns:
        uint8 `(size, size, 3)`.
    """
    if size <= 0:
        raise ValueError(f"size must be positive, got {size}")
    height, width = image.shape[:2]
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2  # the centred square, in source pixels
    square = image[top : top + side, left : left + side]
    if side != size:  # cropped first: a long thin picture is never enlarged whole
        resized = Image.fromarray(np.ascontiguousarray(square)).resize(
            (size, size), Image.Resampling.LANCZOS, reducing_gap=3.0)
        square = np.asarray(resized, dtype=np.uint8)
    return np.ascontiguousarray(square)


def resize_longer_side(image: np.ndarray, side: int, *, enlarge: bool = True) -> np.ndarray:
    """Resizes (Lanczos) so the longer side is `side` pixels, keeping the aspect ratio.

    Args:
        image: uint8 `(H, W, 3)`.
        side: the longer side wanted, positive.
        enlarge: when False, a picture whose longer side is already at most `side` is returned
            as it is (shrink only).

    Returns:
        uint8 `(H', W', 3)` with `max(H', W') == side` (or the input, unchanged).

    >>> resize_longer_side(np.zeros((300, 400, 3), np.uint8), 100).shape
    (75, 100, 3)
    """
    if side <= 0:
        raise ValueError(f"side must be positive, got {side}")
    height, width = image.shape[:2]
    longer = max(height, width)
    if longer == side or (not enlarge and longer < side):
        return image
    scale = side / longer
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return np.asarray(Image.fromarray(image).resize(size, Image.Resampling.LANCZOS))


def encode_image(image: np.ndarray, fmt: str = "JPEG", quality: int = JPEG_QUALITY) -> bytes:
    """uint8 `(H, W, 3)` -> the bytes of a JPEG (at `quality`) or PNG file (`fmt`: Pillow's name)."""
    if fmt not in ("JPEG", "PNG"):
        raise ValueError(f"fmt must be 'JPEG' or 'PNG', got {fmt!r}")
    buffer = io.BytesIO()
    options = {"quality": quality} if fmt == "JPEG" else {}
    Image.fromarray(image).save(buffer, format=fmt, **options)
    return buffer.getvalue()


def write_image(image: np.ndarray, path: Union[str, Path]) -> None:
    """Writes uint8 `(H, W, 3)` to `path` (format from its suffix: see `WRITE_FORMATS`),
    through a temporary name so no half-written file is ever left."""
    path = Path(path)
    fmt = WRITE_FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise InputError(f"{path}: cannot write a {path.suffix or 'suffix-less'} picture; "
                         f"use one of {', '.join(WRITE_FORMATS)}")
    data = encode_image(image, fmt)
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
