"""Translating pictures of any size with a trained generator, in tiles when they are large.

A `Translator` wraps a generator from a workdir, a `.keras` file (a whole CycleGAN or one
generator) or an exported SavedModel. `translate_image` pads a picture to the size the
network takes (reflection at the bottom and right), translates it, crops it back; a picture
with a side over `tile` is cut into overlapping tiles whose translations are blended with a
smooth window, so no seams show. `translate_files` is the `ghibli-keras translate` command.

Example:
>>> translator = Translator.load("workdirs/tiny")              # doctest: +SKIP
>>> styled = translate_image(translator, read_image("a.jpg"))  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

import keras
import numpy as np
import tensorflow as tf

from . import images
from .callbacks import to_uint8
from .config import XLA_CHOICES
from .errors import InputError, gist
from .files import check_keras_archive

log = logging.getLogger(__name__)

DIRECTIONS = ("photo2style", "style2photo")
#: --mixed-precision of the commands that translate: auto, float32, bf16 or fp16 (float32
#: output either way).
PRECISIONS = ("auto", "off", "bf16", "fp16")
DEFAULT_TILE = 1024  # pictures with a side above this are translated in tiles
DEFAULT_OVERLAP = 128  # pixels shared by neighbouring tiles
BATCH_PIXELS = 4 * 256 * 256  # images per forward pass: as many as fit in this many pixels
MAX_PENDING = 64  # pictures held back waiting for others of their size
_MIN_WEIGHT = 1e-3
IMAGES_SPEC = tf.TensorSpec([None, None, None, 3], tf.float32)  # the blending window's value at a tile's very edge (never zero)


# --------------------------------------------------------------------------------------------
# Padding to what the network takes


def reflect_indices(length: int, padded: int) -> np.ndarray:
    """Indices `0..length-1` extended to `padded` by mirroring at the end (any amount:
    `0 1 2 3 2 1 0 1 ...`); a single pixel repeats."""
    if length == 1:
        return np.zeros(padded, np.int64)
    period = 2 * (length - 1)
    i = np.arange(padded) % period
    return np.where(i < length, i, period - i)


def tf_reflect_indices(length: tf.Tensor, padded: tf.Tensor) -> tf.Tensor:
    """`reflect_indices` in TensorFlow, for graphs whose sizes are only known at run time."""
    period = tf.maximum(2 * (length - 1), 1)
    i = tf.range(padded) % period
    return tf.where(i < length, i, period - i)


def pad_run_crop(fn: Callable, images_: tf.Tensor, multiple: int, smallest: int = 1,
                 buckets: bool = False) -> tf.Tensor:
    """`fn` on float `(B, H, W, 3)` of any H, W: reflect-padded at the bottom and right to
    multiples of `multiple`, at least `smallest` (`models.smallest_side`), then cropped back
    to `(B, H, W, 3)`. Graph-friendly; with `buckets`, padded to `bucket_side`s instead, which
    needs H and W known when it is called (an eager tensor, or a graph of static sides)."""
    h, w = tf.shape(images_)[1], tf.shape(images_)[2]
    if buckets:
        sides = images_.shape[1:3]
        if None in sides:
            raise ValueError(f"buckets need static sides, got shape {images_.shape}")
        ph, pw = (bucket_side(n, multiple, smallest) for n in sides)
    else:
        side = lambda n: tf.maximum((n + multiple - 1) // multiple * multiple, smallest)  # noqa: E731
        ph, pw = side(h), side(w)
    padded = tf.gather(images_, tf_reflect_indices(h, ph), axis=1)
    padded = tf.gather(padded, tf_reflect_indices(w, pw), axis=2)
    return fn(padded)[:, :h, :w, :]


def bucket_side(n: int, multiple: int = 1, smallest: int = 1) -> int:
    """`n` rounded up to one of eight sides an octave: a multiple of `multiple` (a power of
    two, as the generators' are) and of the largest power of two at most `n / 8`, so at most
    an eighth above `n`, or `multiple` where that is more; at least `smallest`. Pictures of
    many sizes then share fewer shapes (47 sides up to 1024 for a multiple of 4), each
    compiled (XLA) or given oneDNN kernels (+0.3 s and 14–19 MiB kept for the paper generator
    in bf16) only once.

    >>> [bucket_side(n, 4) for n in (7, 57, 256, 300, 1000)]
    [8, 60, 256, 320, 1024]
    """
    step = math.lcm(1 << max((n // 8).bit_length() - 1, 0), multiple)
    return max(-(-n // step) * step, smallest)


# --------------------------------------------------------------------------------------------
# The model


def translation_xla(choice: str, generator: keras.Model) -> bool:
    """Whether to XLA-compile `generator` for translation. `on`/`off` as said; `auto`: on for
    GPUs and TPUs; on a CPU with bf16 instructions (AVX512_BF16, AMX) off, whatever the
    generator's precision: oneDNN's kernels translated faster than XLA's there (float32 on a
    2-core Emerald Rapids, images/s without XLA against with it: the paper generator 1.16x
    at 256x256, 1.07x at 1024x1024, the tiny one 1.15x and 1.39x; on a 2-core Zen 5 1.19x
    and 1.07x); on other CPUs as training's `--xla auto` (`strategy.auto_xla`, given the
    generator's own dtype policy): on for ResNet generators (the paper generator 1.3x faster
    with XLA on a 2-core Xeon without bf16 instructions), off for the U-Net, which XLA slows
    down on a CPU (benchmarks/RESULTS.md)."""
    from .strategy import auto_xla, cpu_has_bf16, device_kind

    if choice not in XLA_CHOICES:
        raise InputError(f"xla must be one of {XLA_CHOICES}, got {choice!r}")
    if choice != "auto":
        return choice == "on"
    strategy = tf.distribute.get_strategy()
    unet = any(isinstance(layer, keras.layers.Concatenate) for layer in generator.layers)
    policy = generator_policy(generator)
    if device_kind(strategy) == "cpu" and cpu_has_bf16() and policy != "mixed_float16":
        on = False
    else:
        on = auto_xla(strategy, "unet" if unet else "resnet", policy)
    log.info("XLA for %s: %s (auto)", generator.name, "on" if on else "off")
    return on


def translation_policy(choice: str) -> str:
    """The Keras dtype policy to translate in: `off` float32, `bf16` mixed_bfloat16, `auto` as
    training's `--mixed-precision auto` (`strategy.auto_precision`): bf16 where the hardware
    computes it faster than float32 (TPU, GPUs from Ampere on, CPUs with AMX or AMD's
    AVX512_BF16, where oneDNN runs bf16 convolutions at about twice the float32 rate); else
    float32 (on Intel's AVX512_BF16 without AMX the bf16 generator translated at 0.68x of
    float32 with XLA's rate, benchmarks/RESULTS.md). `fp16` mixed_float16, for GPUs without
    bf16 (T4, V100); never chosen by `auto`; on a CPU, where it is slower, a warning."""
    from .strategy import POLICIES, auto_precision, warn_fp16_on_a_cpu

    if choice not in PRECISIONS:
        raise InputError(f"mixed precision must be one of {PRECISIONS}, got {choice!r}")
    if choice != "auto":
        warn_fp16_on_a_cpu(choice, tf.distribute.get_strategy())
        return POLICIES[choice]
    policy = POLICIES[auto_precision(tf.distribute.get_strategy())]  # never fp16
    log.info("mixed precision auto -> %s", policy)
    return policy


def generator_policy(generator: keras.Model) -> str:
    """The dtype policy `generator`'s layers compute in (its first layer with weights)."""
    return next(layer.dtype_policy.name for layer in generator.layers if layer.weights)


def with_policy(generator: keras.Model, policy: str) -> keras.Model:
    """A copy of `generator` (same architecture and weights) whose layers compute in `policy`,
    except its output layers, which keep theirs (float32 in this package's generators).

    Example:
    >>> from ghibli_keras.models import resnet_generator
    >>> g = with_policy(resnet_generator(4, 1), "mixed_bfloat16")
    >>> g.get_layer("stem_conv").compute_dtype, g.output.dtype
    ('bfloat16', 'float32')
    """
    outputs = {t._keras_history.operation.name for t in generator.outputs}

    def clone(layer):
        config = layer.get_config()
        if layer.name not in outputs:
            config["dtype"] = policy
        return type(layer).from_config(config)

    copy = keras.models.clone_model(generator, clone_function=clone)
    copy.set_weights(generator.get_weights())
    return copy


@dataclass
class Translator:
    """A generator ready to translate: `fn` maps float32 `(B, H, W, 3)` in [-1, 1] with H, W
    multiples of `multiple`, at least `smallest`, to the same; `name` says where it came from.
    With `buckets`, pictures are reflect-padded to `bucket_side`s (for a long-running server
    that sees many sizes: its memory and first-call time then stop growing with each new one);
    else only to multiples of `multiple`."""

    fn: Callable
    multiple: int
    name: str
    smallest: int = 1
    generator: Optional[keras.Model] = field(default=None, repr=False)
    owner: object = field(default=None, repr=False)  # keeps a loaded SavedModel's variables alive
    buckets: bool = False

    @classmethod
    def load(cls, model: os.PathLike, direction: str = "photo2style", xla: str = "auto",
             precision: Optional[str] = None, buckets: bool = False) -> "Translator":
        """From a workdir (its `model.keras`), a `.keras` file (a CycleGAN, or one generator,
        e.g. the `generator.keras` of an export) or a SavedModel folder written by `export`.
        `xla` (auto, on, off): whether to XLA-compile a Keras generator (see
        `translation_xla`); `precision` (auto, off, bf16): what it computes in (see
        `translation_policy`; None: as the model was trained; the command line's default is
        auto); a SavedModel keeps what `export` chose for both. `buckets`: see the class.

        Raises:
            InputError: no such model, a direction the model does not have, or a file Keras
                cannot read.
        """
        from . import cyclegan  # noqa: F401  (registers the classes for load_model)
        from .models import size_multiple, smallest_side

        if direction not in DIRECTIONS:
            raise InputError(f"direction must be one of {DIRECTIONS}, got {direction!r}")
        if xla not in XLA_CHOICES:
            raise InputError(f"xla must be one of {XLA_CHOICES}, got {xla!r}")
        if precision is not None and precision not in PRECISIONS:
            raise InputError(f"mixed precision must be one of {PRECISIONS}, got {precision!r}")
        path = Path(model)
        if path.is_dir() and (path / "saved_model.pb").is_file():
            if direction != "photo2style":
                raise InputError(f"{path} is an export of G (photo2style) only; use the workdir "
                                 f"or its model.keras for {direction}")
            try:
                loaded = tf.saved_model.load(str(path))
            except (OSError, ValueError, tf.errors.OpError) as e:  # a damaged or partial copy
                raise InputError(f"{path}: not a SavedModel TensorFlow can load "
                                 f"({gist(e)}); export it again with "
                                 f"`ghibli-keras export`") from None
            if not hasattr(loaded, "translate"):
                raise InputError(f"{path}: a SavedModel without the 'translate' endpoint of "
                                 f"`ghibli-keras export`")
            return cls(loaded.translate, 1, f"SavedModel {path}", owner=loaded, buckets=buckets)
        if path.is_dir():
            path = path / "model.keras"
            if not path.is_file():
                raise InputError(f"{model}: neither a workdir with model.keras nor a SavedModel")
        if not path.is_file():
            raise InputError(f"{model}: no such file or folder")
        check_keras_archive(path)
        try:
            loaded = keras.models.load_model(path, compile=False)
        except Exception as e:  # Keras raises ValueError, OSError, zipfile errors...
            raise InputError(f"{path}: not a model Keras can load ({gist(e)})") from None
        if hasattr(loaded, "generator_g"):
            generator = loaded.generator_g if direction == "photo2style" else loaded.generator_f
        elif direction == "photo2style":
            generator = loaded
        else:
            raise InputError(f"{path} holds one generator; {direction} needs the whole CycleGAN "
                             f"(the workdir or its model.keras)")
        shapes = [getattr(generator, name, None) for name in ("input_shape", "output_shape")]
        if not all(isinstance(s, tuple) and len(s) == 4 and s[-1] == 3 for s in shapes):
            raise InputError(f"{path}: {generator.name} is not a picture-to-picture generator "
                             f"(input {shapes[0]}, output {shapes[1]}; expected (B, H, W, 3) "
                             f"both): give a ghibli-keras workdir, model.keras or generator.keras")
        if precision is not None:
            policy = translation_policy(precision)
            if policy != generator_policy(generator):
                generator = with_policy(generator, policy)
        fn = tf.function(lambda x: generator(x, training=False),
                         jit_compile=translation_xla(xla, generator),
                         input_signature=[IMAGES_SPEC])  # one trace for every size
        return cls(fn, size_multiple(generator), f"{generator.name} of {path}",
                   smallest_side(generator), generator, buckets=buckets)

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        """float32 `(B, H, W, 3)` in [-1, 1], any H, W -> the same, translated."""
        images = tf.constant(batch, tf.float32)
        return pad_run_crop(self.fn, images, self.multiple, self.smallest, self.buckets).numpy()


# --------------------------------------------------------------------------------------------
# One picture, in tiles when large


def to_unit(image: np.ndarray) -> np.ndarray:
    return image.astype(np.float32) / 127.5 - 1.0




def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of tiles of side `tile` covering `length`, neighbours sharing at least
    `overlap` pixels; the last tile ends at the edge."""
    if length <= tile:
        return [0]
    step = tile - overlap
    count = math.ceil((length - tile) / step) + 1
    return [min(i * step, length - tile) for i in range(count)]


def blend_window(size: int, overlap: int) -> np.ndarray:
    """1-D weights: a raised-cosine ramp over `overlap` pixels at each end, 1 in between."""
    weights = np.ones(size, np.float32)
    if overlap > 0:
        ramp = 0.5 - 0.5 * np.cos(np.pi * (np.arange(overlap) + 0.5) / overlap)
        weights[:overlap] = np.maximum(ramp, _MIN_WEIGHT)
        weights[-overlap:] = np.maximum(ramp[::-1], _MIN_WEIGHT)
    return weights


def translate_image(translator: Translator, image: np.ndarray, tile: Optional[int] = DEFAULT_TILE,
                    overlap: int = DEFAULT_OVERLAP,
                    progress: Optional[Callable[[int, int], None]] = None) -> np.ndarray:
    """uint8 `(H, W, 3)` -> uint8 `(H, W, 3)`. Pictures with a side over `tile` (None or 0:
    never) are translated in `tile`×`tile` tiles overlapping by `overlap` pixels, blended
    with `blend_window` (weighted average, so every pixel's weights sum to one).
    `progress(done, total)` is called after each tile (once, (1, 1), for an untiled picture)."""
    h, w = image.shape[:2]
    if not tile or max(h, w) <= tile:
        out = to_uint8(translator(to_unit(image)[None])[0])
        if progress:
            progress(1, 1)
        return out
    if not 0 <= overlap < tile:
        raise InputError(f"--overlap must be in 0..tile-1 ({tile - 1}), got {overlap}")
    total = np.zeros((h, w, 3), np.float32)
    weight = np.zeros((h, w, 1), np.float32)
    x = to_unit(image)
    corners = [(top, left) for top in tile_starts(h, tile, overlap)
               for left in tile_starts(w, tile, overlap)]
    for done, (top, left) in enumerate(corners, 1):
        piece = x[top:top + tile, left:left + tile]
        out = translator(piece[None])[0]
        th, tw = piece.shape[:2]
        win = blend_window(th, overlap if h > tile else 0)[:, None] * \
            blend_window(tw, overlap if w > tile else 0)[None, :]
        total[top:top + th, left:left + tw] += out * win[..., None]
        weight[top:top + th, left:left + tw] += win[..., None]
        if progress:
            progress(done, len(corners))
    return to_uint8(total / weight)


def tf_translate_tiled(fn: Callable, image: tf.Tensor, tile: int, overlap: int, multiple: int,
                       smallest: int = 1) -> tf.Tensor:
    """`translate_image`'s tiling in TensorFlow, for graphs (the SavedModel) whose picture
    sizes are known only at run time: float `(H, W, 3)` in [-1, 1] -> float `(H, W, 3)`, `fn`
    run on one `tile`×`tile` tile at a time (each `pad_run_crop`-ped), so memory stays that of
    one tile whatever the picture's size. Same tiles and blend weights as `translate_image`."""
    if not 0 <= overlap < tile:
        raise ValueError(f"overlap must be in 0..tile-1 ({tile - 1}), got {overlap}")
    ramp = tf.constant(blend_window(2 * max(overlap, 1), overlap)[:max(overlap, 1)])
    step = tile - overlap

    def layout(length):  # tile side, tile starts, blend window along one axis (as tile_starts)
        size = tf.minimum(length, tile)
        ramped = tf.where(length > tile, overlap, 0)  # no blending along an untiled side
        count = tf.where(length > tile, (length - tile + step - 1) // step + 1, 1)
        starts = tf.minimum(tf.range(count) * step, length - size)
        i = tf.range(size)
        left = tf.gather(ramp, tf.clip_by_value(i, 0, max(overlap - 1, 0)))
        right = tf.gather(ramp, tf.clip_by_value(size - 1 - i, 0, max(overlap - 1, 0)))
        window = tf.where(i >= size - ramped, right, tf.where(i < ramped, left, 1.0))
        return size, starts, window

    h, w = tf.shape(image)[0], tf.shape(image)[1]
    th, tops, win_h = layout(h)
    tw, lefts, win_w = layout(w)
    window = (win_h[:, None] * win_w[None, :])[..., None]  # (th, tw, 1)
    columns = tf.size(lefts)

    def body(k, total, weight):
        top, left = tops[k // columns], lefts[k % columns]
        piece = image[top:top + th, left:left + tw][None]  # (1, th, tw, 3)
        out = pad_run_crop(fn, piece, multiple, smallest)[0]
        around = [[top, h - top - th], [left, w - left - tw], [0, 0]]
        return k + 1, total + tf.pad(out * window, around), weight + tf.pad(window, around)

    total, weight = tf.zeros_like(image), tf.zeros_like(image[..., :1])
    _, total, weight = tf.while_loop(lambda k, *_: k < tf.size(tops) * columns, body,
                                     (0, total, weight))
    return total / weight


# --------------------------------------------------------------------------------------------
# Files: the `translate` command


@dataclass
class TranslateReport:
    written: list = field(default_factory=list)
    skipped: list = field(default_factory=list)  # (path, reason)
    failed: list = field(default_factory=list)  # (output path, reason): could not be written

    def summary(self) -> str:
        lines = [f"translated {len(self.written)} picture(s)"]
        if self.skipped:
            lines.append(f"skipped {len(self.skipped)} unreadable:")
            lines += [f"  {path}: {reason}" for path, reason in self.skipped]
        if self.failed:
            lines.append(f"could not write {len(self.failed)}:")
            lines += [f"  {path}: {reason}" for path, reason in self.failed]
        return "\n".join(lines)


def translate_files(
    translator: Translator,
    inputs: Sequence[str],
    out_dir,
    *,
    fmt: str = "jpg",
    max_side: Optional[int] = None,
    tile: Optional[int] = DEFAULT_TILE,
    overlap: int = DEFAULT_OVERLAP,
    progress: bool = True,
    max_pixels: int = images.DEFAULT_MAX_PIXELS,
) -> TranslateReport:
    """Translates every picture of `inputs` (files or folders) into `out_dir`.

    Pictures are read with EXIF orientation applied (refused above `max_pixels`, from the
    header), optionally shrunk to `max_side`, and translated at their own size; pictures of
    the same size go through the network together (up to `BATCH_PIXELS` pixels a batch), large
    ones in tiles. Unreadable files are reported and skipped; an output that cannot be written
    (a full disk, a file where a folder should be) is reported and the others go on. Each
    output is written atomically; `out_dir` gets only translated pictures. The progress bar
    counts pictures written (or skipped).
    """
    from tqdm.auto import tqdm

    if fmt not in ("jpg", "png"):
        raise InputError(f"--format must be jpg or png, got {fmt!r}")
    out_dir = Path(out_dir)
    pairs = images.output_paths(inputs, out_dir, fmt)
    report = TranslateReport()
    pending: dict[tuple, list] = {}  # (H, W) -> [(picture, output path)]

    def write(image, dst):  # uint8 (H, W, 3)
        try:
            images.write_image(image, dst)
        except OSError as e:
            report.failed.append((dst, e.strerror or str(e)))
        else:
            report.written.append(dst)
        bar.update(1)

    def flush(key):
        group = pending.pop(key)
        batch = np.stack([to_unit(p) for p, _ in group])
        outputs = translator(batch)
        for (_, dst), out in zip(group, outputs):
            write(to_uint8(out), dst)

    with tqdm(total=len(pairs), desc="translating", unit="img", disable=not progress) as bar:
        for src, dst in pairs:
            try:
                picture = images.read_image(src, max_pixels=max_pixels)
                if max_side:
                    picture = images.resize_longer_side(picture, max_side, enlarge=False)
            except images.ImageReadError as e:
                report.skipped.append((src, e.reason))
                bar.update(1)
                continue
            h, w = picture.shape[:2]
            if tile and max(h, w) > tile:
                write(translate_image(translator, picture, tile, overlap), dst)
            else:
                pending.setdefault((h, w), []).append((picture, dst))
                if len(pending[(h, w)]) >= max(1, BATCH_PIXELS // (h * w)):
                    flush((h, w))
                elif sum(map(len, pending.values())) > MAX_PENDING:  # many sizes: bound memory
                    for key in list(pending):
                        flush(key)
        for key in list(pending):
            flush(key)
    return report
