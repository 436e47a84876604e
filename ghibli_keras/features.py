"""Inception pool-3 features (2048-d) of image sets, for FID, KID and MiFID.

Two networks, and every score says which one produced it, because their numbers differ:
  - `keras.applications.InceptionV3` (pool-3 = global average pool of the last block), with
    `weights="imagenet"` (downloaded into the Keras cache when online) or a local weights
    file (`inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5`), or `None` (random
    initialisation: tests and benchmarks only);
  - the original FID network, the TF1 graph `classify_image_graph_def.pb` of the TTUR release
    (used by Kaggle's MiFID and most papers), read from a path with `tf.compat.v1.wrap_function`.

Images are resized to 299×299 (bilinear) and scaled as the network expects. Sources: a
folder of pictures, a glob of pictures or TFRecord shards, a uint8 array (0..255), an array of
another number type with its `value_range` (e.g. (-1, 1)), or a generator's translations of any
of these. Features of files are cached on disk, keyed by the files' content and the network's
weights.

Example:
>>> extractor = inception(weights=None)                          # doctest: +SKIP
>>> extract(np.zeros((4, 64, 64, 3), "uint8"), extractor).shape  # doctest: +SKIP
(4, 2048)
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Callable, Optional, Union

import keras
import numpy as np
import tensorflow as tf

from . import data, images
from .errors import InputError, gist, warnings_only_if_it_works
from .files import atomic_path, check_cached_weights, keras_cache_path

log = logging.getLogger(__name__)

INCEPTION_SIZE = 299
FEATURE_DIM = 2048
DEFAULT_BATCH_SIZE = 32
XLA_MIN_IMAGES = 512  # sets at least this large use the XLA-compiled network
KERAS_WEIGHTS_FILE = "inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5"
KERAS_WEIGHTS_URL = (
    "https://storage.googleapis.com/tensorflow/keras-applications/inception_v3/" + KERAS_WEIGHTS_FILE
)
KERAS_WEIGHTS_MD5 = "bcbd6486424b2319ff4ef7d526e38f63"  # what keras.applications checks
TTUR_GRAPH_FILE = "classify_image_graph_def.pb"
TTUR_ARCHIVE_URL = "http://download.tensorflow.org/models/image/imagenet/inception-2015-12-05.tgz"
#: Environment variable naming the weights to use when none are given (a path or "imagenet").
WEIGHTS_ENV = "GHIBLI_KERAS_INCEPTION_WEIGHTS"

Source = Union[str, os.PathLike, np.ndarray, list]


# --------------------------------------------------------------------------------------------
# The networks


class FeatureExtractor:
    """Float32 images `(B, 299, 299, 3)` in [0, 255] -> features `(B, 2048)`.

    Attributes:
        name: what produced the features, printed beside every score.
        key: identifies the weights for the feature cache; None when they are random.
    """

    def __init__(self, name: str, key: Optional[str], fn: Callable, legacy_resize: bool = False,
                 xla: bool = True):
        self.name = name
        self.key = key
        spec = [tf.TensorSpec([None, INCEPTION_SIZE, INCEPTION_SIZE, 3], tf.float32)]
        self._fn = tf.function(fn, input_signature=spec)
        # XLA-compiled, for whole batches of large sets: 1.8x faster on a 2-core CPU; it
        # compiles once per batch size (tens of seconds), so small sets skip it.
        self._xla = tf.function(fn, jit_compile=True) if xla else None
        self._legacy_resize = legacy_resize

    def resize(self, images: tf.Tensor) -> tf.Tensor:
        """Float `(..., H, W, 3)` in [0, 255] -> `(..., 299, 299, 3)`, bilinear.

        For the TTUR graph this is the graph's own resize (TF1 bilinear, no half-pixel centres),
        so resizing here and there gives exactly what the graph computes from the raw image."""
        size = [INCEPTION_SIZE, INCEPTION_SIZE]
        if self._legacy_resize:
            batched = images if images.shape.rank == 4 else images[None]
            out = tf.raw_ops.ResizeBilinear(images=batched, size=size, align_corners=False,
                                            half_pixel_centers=False)
            return out if images.shape.rank == 4 else out[0]
        return tf.image.resize(images, size, method="bilinear")

    def __call__(self, images: tf.Tensor, compiled: bool = False) -> tf.Tensor:
        images = tf.cast(images, tf.float32)
        if compiled and self._xla is not None:
            return self._xla(images)
        return self._fn(images)

    def __repr__(self) -> str:
        return f"FeatureExtractor({self.name})"


def keras_weights_cache_path() -> Path:
    """Where `keras.applications` keeps the downloaded InceptionV3 weights."""
    return keras_cache_path(KERAS_WEIGHTS_FILE)


def default_weights() -> str:
    """The weights used when none are given: $GHIBLI_KERAS_INCEPTION_WEIGHTS, else "imagenet"."""
    return os.environ.get(WEIGHTS_ENV) or "imagenet"


def weights_available(weights: Optional[str] = None) -> tuple[bool, str]:
    """Whether `weights` (default: `default_weights()`) can be loaded without a network, and
    if not, a sentence saying why and how to provide them."""
    weights = weights or default_weights()
    if weights != "imagenet":
        if Path(weights).is_file():
            return True, ""
        return False, f"Inception weights file {weights!r} not found"
    if keras_weights_cache_path().is_file():
        return True, ""
    return False, (
        f"the InceptionV3 ImageNet weights are not in the Keras cache "
        f"({keras_weights_cache_path()}); download {KERAS_WEIGHTS_URL} there, or set "
        f"{WEIGHTS_ENV}=PATH (or pass --inception-weights PATH)"
    )


def offline_message(reason: str) -> str:
    return (
        f"could not get the InceptionV3 ImageNet weights ({reason}). Without a network: on a "
        f"machine that has one, download {KERAS_WEIGHTS_URL} and either copy it to "
        f"{keras_weights_cache_path()} or pass --inception-weights PATH. For scores comparable "
        f"with Kaggle's leaderboard and papers, pass the TTUR graph instead: --inception-weights "
        f"PATH/{TTUR_GRAPH_FILE} (inside {TTUR_ARCHIVE_URL})"
    )


def _file_digest(path: Union[str, os.PathLike], chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def inception(weights: Optional[str] = "imagenet") -> FeatureExtractor:
    """The feature extractor for `weights`:

    Args:
        weights: "imagenet" (the Keras cache, else a download), a path to Keras InceptionV3
            weights (`.h5` / `.weights.h5`, without the top), a path to the TTUR graph
            (`classify_image_graph_def.pb`), or None for random initialisation.
    Raises:
        InputError: the weights cannot be found, downloaded or read; the message says what
            to do.
    """
    if weights is None:
        model = _keras_inception(None)
        return FeatureExtractor("keras.applications InceptionV3, random weights (not a real score)",
                                None, _keras_features(model))
    if weights == "imagenet":
        check_cached_weights(keras_weights_cache_path(), KERAS_WEIGHTS_MD5, KERAS_WEIGHTS_URL)
        try:
            model = _keras_inception("imagenet")
        except Exception as e:  # keras.utils.get_file raises a plain Exception when offline
            if keras_weights_cache_path().is_file():
                raise
            raise InputError(offline_message(gist(e))) from None
        return FeatureExtractor("keras.applications InceptionV3, imagenet weights",
                                "keras-inception-v3-imagenet", _keras_features(model))
    path = Path(weights)
    if not path.is_file():
        raise InputError(f"--inception-weights {weights!r}: no such file")
    if path.suffix == ".pb":
        return _ttur_extractor(path)
    try:
        with warnings_only_if_it_works():
            model = _keras_inception(str(path))
    except (ValueError, OSError, KeyError) as e:
        raise InputError(
            f"--inception-weights {weights!r}: not InceptionV3 weights without the top "
            f"({KERAS_WEIGHTS_FILE}) nor the TTUR graph ({TTUR_GRAPH_FILE}): {gist(e)}"
        ) from None
    return FeatureExtractor(f"keras.applications InceptionV3, weights {path.name}",
                            f"keras-inception-v3-{_file_digest(path)}", _keras_features(model))


def _keras_inception(weights) -> keras.Model:
    return keras.applications.InceptionV3(
        include_top=False, weights=weights, pooling="avg",
        input_shape=(INCEPTION_SIZE, INCEPTION_SIZE, 3),
    )


def _keras_features(model: keras.Model) -> Callable:
    preprocess = keras.applications.inception_v3.preprocess_input

    def features(images):  # (B, 299, 299, 3) in [0, 255] -> (B, 2048)
        return model(preprocess(images), training=False)

    return features


def _ttur_extractor(path: Path) -> FeatureExtractor:
    """The TTUR release's FID Inception graph: images in [0, 255] enter at `ExpandDims:0`
    (the graph resizes them to 299 and scales them itself); features are `pool_3:0`."""
    graph_def = tf.compat.v1.GraphDef()
    try:
        graph_def.ParseFromString(path.read_bytes())
    except Exception as e:  # protobuf's DecodeError
        raise InputError(f"--inception-weights {str(path)!r}: not a TensorFlow GraphDef ({e})") from None
    names = {node.name for node in graph_def.node}
    missing = {"ExpandDims", "pool_3"} - names
    if missing:
        raise InputError(
            f"--inception-weights {str(path)!r}: a GraphDef without the node(s) "
            f"{', '.join(sorted(missing))}; expected the TTUR FID graph {TTUR_GRAPH_FILE}"
        )

    def imports(images):
        tf.compat.v1.import_graph_def(graph_def, input_map={"ExpandDims:0": images}, name="fid")

    spec = tf.TensorSpec([None, INCEPTION_SIZE, INCEPTION_SIZE, 3], tf.float32)
    wrapped = tf.compat.v1.wrap_function(imports, [spec])
    pool_3 = wrapped.prune(wrapped.inputs, wrapped.graph.get_tensor_by_name("fid/pool_3:0"))

    def features(images):  # (B, 299, 299, 3) in [0, 255] -> (B, 2048)
        return tf.reshape(pool_3(images), [-1, FEATURE_DIM])

    return FeatureExtractor(f"TTUR FID Inception ({path.name}, as Kaggle's MiFID)",
                            f"ttur-{_file_digest(path)}", features, legacy_resize=True, xla=False)


# --------------------------------------------------------------------------------------------
# Sources


#: How far (a fraction of the span) an array may stray outside its value range and be clipped:
#: rounding, or a generator's tanh; beyond it the range is wrong.
RANGE_SLACK = 0.01


def scaled_array(array: np.ndarray, value_range: Optional[tuple] = None) -> np.ndarray:
    """Images `(N, H, W, 3)` -> float32 `(N, H, W, 3)` in [0, 255], clipped.

    Args:
        array: uint8 (0..255 unless `value_range` says otherwise), or any other integer or float
            type with `value_range`.
        value_range: `(low, high)`, the values that mean black and white: (0, 1), (-1, 1),
            (0, 255)... Not guessed from the data: [0, 1] data could as well be [-1, 1].
    Raises:
        ValueError: no images, another dtype or no `value_range` for a non-uint8 array, a
            malformed `value_range`, NaN or infinity, or values outside `value_range` by more
            than `RANGE_SLACK` of it (naming the values' minimum and maximum).
    """
    if len(array) == 0:
        raise ValueError(f"no images: the array has shape {array.shape}")
    low, high = _checked_range(array, value_range)
    lowest, highest = float(array.min()), float(array.max())
    if not (np.isfinite(lowest) and np.isfinite(highest)):
        raise ValueError("the images contain NaN or infinity")
    slack = RANGE_SLACK * (high - low)
    if lowest < low - slack or highest > high + slack:
        raise ValueError(
            f"value_range ({low:g}, {high:g}), but the images' values run from {lowest:.4g} to "
            f"{highest:.4g}; pass the range they are in, e.g. (0, 1), (-1, 1) or (0, 255)"
        )
    scaled = (array.astype(np.float32) - low) * np.float32(255.0 / (high - low))
    return np.clip(scaled, 0.0, 255.0, out=scaled)


def _checked_range(array: np.ndarray, value_range: Optional[tuple]) -> tuple[float, float]:
    """`value_range` as two floats, or (0, 255) for uint8; ValueError when there is none."""
    if value_range is None:
        if array.dtype == np.uint8:
            return 0.0, 255.0
        observed = f", values from {array.min():.4g} to {array.max():.4g}," \
            if array.dtype.kind in "iuf" else ""
        raise ValueError(
            f"an image array of dtype {array.dtype}{observed} needs value_range=(low, high), "
            f"e.g. (0, 1), (-1, 1) or (0, 255); or pass uint8 (0..255)"
        )
    if array.dtype.kind not in "iuf":
        raise ValueError(f"image arrays must be of integers or floats, got dtype {array.dtype}")
    try:
        low, high = (float(v) for v in value_range)
    except (TypeError, ValueError):
        raise ValueError(f"value_range must be (low, high), got {value_range!r}") from None
    if not (np.isfinite(low) and np.isfinite(high) and low < high):
        raise ValueError(f"value_range must be finite with low < high, got {value_range!r}")
    return low, high


def _read_picture(path, max_pixels: int = images.DEFAULT_MAX_PIXELS) -> np.ndarray:
    return images.read_image(path.decode() if isinstance(path, bytes) else path,
                             max_pixels=max_pixels)


def image_dataset(source: Source, value_range: Optional[tuple] = None, *,
                  max_pixels: int = images.DEFAULT_MAX_PIXELS) -> tuple[tf.data.Dataset, int, list]:
    """A source -> (dataset of float32 `(H, W, 3)` in [0, 255], image count, files or []).

    Args:
        source: a folder, glob or file of pictures or shards (a list of them is joined), or an
            array `(N, H, W, 3)`, N >= 1: uint8, or another number type with `value_range`.
        value_range: for an array, `(low, high)`, the values of black and white; required
            unless it is uint8 (see `scaled_array`). Values a little outside are clipped.
        max_pixels: picture files with more pixels (from the header) are refused.
    Raises:
        ValueError: an array without a usable `value_range` (see `scaled_array`).
    """
    if isinstance(source, np.ndarray):
        if source.ndim != 4 or source.shape[-1] != 3:
            raise InputError(f"expected images of shape (N, H, W, 3), got {source.shape}")
        scaled = scaled_array(source, value_range)  # (N, H, W, 3) in [0, 255]
        return tf.data.Dataset.from_tensor_slices(scaled), len(source), []
    sources = source if isinstance(source, list) else [source]
    kinds, files = set(), []
    for item in sources:
        kind, found = images.resolve_files(item)
        kinds.add(kind)
        files.extend(found)
    if len(kinds) > 1:
        raise InputError("the sources mix pictures and TFRecord shards; give one kind")
    if kinds == {"shards"}:
        ds = data.load_tfrecords(files)
        count = data.count_images(files)
    else:
        read = functools.partial(_read_picture, max_pixels=max_pixels)
        ds = tf.data.Dataset.from_tensor_slices(files).map(
            lambda p: tf.ensure_shape(tf.numpy_function(read, [p], tf.uint8), [None, None, 3]),
            num_parallel_calls=tf.data.AUTOTUNE,
        )
        count = len(files)
    return ds.map(lambda image: tf.cast(image, tf.float32)), count, files


@contextlib.contextmanager
def naming_unreadable(files: list, description: str = "features", *,
                      max_pixels: int = images.DEFAULT_MAX_PIXELS):
    """Within the block, TensorFlow's error for a picture or shard record of `files` that
    cannot be read (or has more than `max_pixels`) becomes an `InputError` naming it
    (`description` says which set stopped); other errors pass unchanged."""
    stopped = f"{description}: no features were computed"
    if files and all(f.endswith(images.TFRECORD_SUFFIXES) for f in files):
        with data.naming_unreadable_records(files, stopped):
            yield
        return
    try:
        yield
    except tf.errors.OpError:
        for path in files:  # the error path only: find the picture that failed
            try:
                images.read_image(path, max_pixels=max_pixels)
            except images.ImageReadError as e:
                raise InputError(f"{e}; remove or replace it; {stopped}") from None
        raise


# --------------------------------------------------------------------------------------------
# Extraction with an on-disk cache


def cache_dir() -> Path:
    """$GHIBLI_KERAS_CACHE, else $XDG_CACHE_HOME/ghibli_keras, else ~/.cache/ghibli_keras."""
    if os.environ.get("GHIBLI_KERAS_CACHE"):
        return Path(os.environ["GHIBLI_KERAS_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "ghibli_keras"


def cache_key(files: list, extractor: FeatureExtractor) -> str:
    """sha256 over the network's key and the content of every file, in order."""
    digest = hashlib.sha256(f"features-v1|{extractor.key}".encode())
    for path in files:
        digest.update(_file_digest(path).encode())
    return digest.hexdigest()


def extract(
    source: Source,
    extractor: FeatureExtractor,
    *,
    transform: Optional[Callable] = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    value_range: Optional[tuple] = None,
    cache: Union[bool, str, os.PathLike] = True,
    progress: bool = False,
    description: str = "features",
    max_pixels: int = images.DEFAULT_MAX_PIXELS,
) -> np.ndarray:
    """Features `(N, 2048)` of every image of `source`, in order.

    Args:
        source: see `image_dataset`.
        extractor: from `inception()`.
        transform: translate each batch first, e.g. a generator: float32 `(B, H, W, 3)` in
            [-1, 1] -> the same; the images of a batch must then share a size.
        batch_size: images per forward pass.
        value_range: the range of an array source; required unless it is uint8 (see
            `image_dataset`).
        cache: True (the default folder, `cache_dir()`), a folder, or False. Only features of
            files, untransformed, with non-random weights are cached. A cached file that does
            not read whole, or not as `(N, 2048)`, is computed again; a cache that cannot be
            written is a warning (the features are still returned).
        progress: show a tqdm progress bar.
        description: names the set in the progress bar and in errors.
        max_pixels: picture files with more pixels (from the header) are refused.
    """
    ds, count, files = image_dataset(source, value_range, max_pixels=max_pixels)
    path = None
    if cache and files and transform is None and extractor.key is not None:
        folder = cache_dir() if cache is True else Path(cache)
        path = folder / "features" / f"{cache_key(files, extractor)}.npy"
        cached = _read_cache(path, count, description)
        if cached is not None:
            return cached

    if transform is None:
        ds = ds.map(extractor.resize, num_parallel_calls=tf.data.AUTOTUNE).batch(batch_size)
    else:
        ds = ds.batch(batch_size)
    ds = ds.prefetch(tf.data.AUTOTUNE)
    from tqdm.auto import tqdm

    compiled = count >= XLA_MIN_IMAGES
    chunks = []
    with tqdm(total=count, desc=description, unit="img", disable=not progress) as bar, \
            naming_unreadable(files, description, max_pixels=max_pixels):
        for batch in ds:  # (B, H, W, 3) in [0, 255]
            if transform is not None:
                fake = transform(batch / 127.5 - 1.0)  # (B, H, W, 3) in [-1, 1]
                batch = extractor.resize((tf.clip_by_value(tf.cast(fake, tf.float32), -1.0, 1.0) + 1.0) * 127.5)
            n = len(batch)
            if compiled and n < batch_size:  # the last batch, padded: no second compilation
                batch = tf.concat([batch, tf.zeros([batch_size - n, *batch.shape[1:]])], axis=0)
            chunks.append(extractor(batch, compiled=compiled).numpy()[:n])
            bar.update(n)
    features = np.concatenate(chunks).astype(np.float32) if chunks else np.zeros((0, FEATURE_DIM), np.float32)
    if path is not None:
        _write_cache(path, features, {"network": extractor.name, "files": files}, description)
    return features


def _read_cache(path: Path, count: int, description: str) -> Optional[np.ndarray]:
    """The cached features `(count, 2048)` at `path`; None when there are none, or when the
    file is damaged (cut short, another shape, NaN): then a warning, and the file removed."""
    if not path.is_file():
        return None
    try:
        cached = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as e:
        problem = f"unreadable: {gist(e)}"
    else:
        if cached.shape != (count, FEATURE_DIM):
            problem = f"shape {cached.shape}, expected {(count, FEATURE_DIM)}"
        elif not np.all(np.isfinite(cached)):
            problem = "NaN or infinity in it"
        else:
            log.info("%s: cached features %s", description, path)
            return cached
    log.warning("%s: the cached features %s are damaged (%s); computing them again",
                description, path, problem)
    with contextlib.suppress(OSError):
        path.unlink()
    return None


def _write_cache(path: Path, features: np.ndarray, metadata: dict, description: str) -> None:
    """Writes `features` `(N, 2048)` to `path` and `metadata` beside it (`.json`), each under
    a temporary name first; a failure (no such folder, read-only, disk full) is a warning."""
    try:
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as f:
                np.save(f, features)
        with atomic_path(path.with_suffix(".json")) as tmp:
            tmp.write_text(json.dumps(metadata, indent=1))
    except OSError as e:
        log.warning("%s: could not write the feature cache %s (%s); the features are not cached "
                    "(set GHIBLI_KERAS_CACHE to a writable folder, or turn the cache off)",
                    description, path, gist(e))


def generator_transform(generator: keras.Model) -> Callable:
    """A generator as an `extract(transform=...)`: reflect-pads each batch at the bottom and
    right to the size the network takes (`models.size_multiple`, `models.smallest_side`),
    translates, crops back."""
    from .inference import pad_run_crop
    from .models import size_multiple, smallest_side

    multiple, smallest = size_multiple(generator), smallest_side(generator)

    @tf.function(reduce_retracing=True)
    def translate(x):  # (B, H, W, 3) in [-1, 1]
        return pad_run_crop(lambda padded: generator(padded, training=False), x, multiple, smallest)

    return translate
