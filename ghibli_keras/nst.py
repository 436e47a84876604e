"""Neural style transfer (Gatys, Ecker & Bethge, 2016) from one reference picture.

No training set: the picture itself is optimised so that its VGG19 features keep the content
photo's (`block5_conv2`) while the Gram matrices of `block1_conv1` … `block5_conv1` match the
style picture's, with a total-variation regulariser against high-frequency noise. It starts
from the content photo and runs Adam in a compiled `tf.function` (or scipy's L-BFGS-B, which
needs fewer steps and keeps pixels in range with bounds). The loss and its default weights
are those of TensorFlow's style-transfer tutorial, tuned with the ImageNet weights.

Not to be confused with `ghibli_keras.sample.stylize`, the fixed filter that made the
sample data's style pictures.

VGG19 weights: `"imagenet"` (the Keras cache, downloaded when online), a local `.h5` file of
`keras.applications.VGG19(include_top=False)` weights, or `None` — random initialisation,
for tests: it still moves colours and textures towards the style picture, but it is not
style transfer as the paper means it.

Example:
>>> photo = images.read_image("photo.jpg")                        # doctest: +SKIP
>>> style = images.read_image("still.jpg")                        # doctest: +SKIP
>>> result = stylize(photo, style, StyleConfig(steps=200, size=384))  # doctest: +SKIP
>>> result.image.shape, result.losses[-1]["total"]                # doctest: +SKIP
((288, 384, 3), 81234.5)
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Callable, Optional

import keras
import numpy as np
import tensorflow as tf

from . import images
from .errors import InputError, gist, warnings_only_if_it_works
from .files import check_cached_weights, keras_cache_path

CONTENT_LAYERS = ("block5_conv2",)
STYLE_LAYERS = ("block1_conv1", "block2_conv1", "block3_conv1", "block4_conv1", "block5_conv1")
VGG_WEIGHTS_FILE = "vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5"
VGG_WEIGHTS_URL = "https://storage.googleapis.com/tensorflow/keras-applications/vgg19/" + VGG_WEIGHTS_FILE
VGG_WEIGHTS_MD5 = "253f8cb515780f3b799900260a226db6"  # what keras.applications.VGG19 checks
#: Environment variable naming the weights used when none are given (a path or "imagenet").
WEIGHTS_ENV = "GHIBLI_KERAS_VGG_WEIGHTS"
MIN_SIDE = 32  # block5_conv1 sees the picture at 1/16: smaller sides leave it nothing
OPTIMIZERS = ("adam", "lbfgs")
LOSS_NAMES = ("total", "content", "style", "tv")


@dataclasses.dataclass(frozen=True)
class StyleConfig:
    """How to transfer a style.

    Args:
        steps: optimiser steps (Adam) or iterations (L-BFGS).
        size: the longer side of the result (and of the style picture's analysis), in pixels;
            None keeps the content photo's size.
        content_weight, style_weight, tv_weight: the weights of the three losses (the
            TensorFlow tutorial's: 1e4, 1e-2, 30).
        optimizer: "adam" or "lbfgs".
        learning_rate: Adam's step on pixels in [0, 1].
        xla: compile each step with XLA (10-20% faster steps on a 2-core CPU at 384×256, for
            ~7 s of compiling).
    """

    steps: int = 200
    size: Optional[int] = 384
    content_weight: float = 1e4
    style_weight: float = 1e-2
    tv_weight: float = 30.0
    optimizer: str = "adam"
    learning_rate: float = 0.02
    xla: bool = True

    def __post_init__(self):
        if self.steps < 1:
            raise ValueError(f"steps must be at least 1, got {self.steps}")
        if self.size is not None and self.size < MIN_SIDE:
            raise ValueError(f"size must be at least {MIN_SIDE}, got {self.size}")
        for name in ("content_weight", "style_weight", "tv_weight"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be non-negative, got {getattr(self, name)}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        if self.learning_rate <= 0:
            raise ValueError(f"learning_rate must be positive, got {self.learning_rate}")


@dataclasses.dataclass
class StyleResult:
    image: np.ndarray  # uint8 (H, W, 3)
    losses: list  # one dict of LOSS_NAMES -> float per step, the first before any step
    weights: str  # which VGG19 weights made it


# --------------------------------------------------------------------------------------------
# VGG19 weights


def keras_weights_cache_path() -> Path:
    """Where `keras.applications` keeps the downloaded VGG19 weights."""
    return keras_cache_path(VGG_WEIGHTS_FILE)


def default_weights() -> str:
    """$GHIBLI_KERAS_VGG_WEIGHTS, else "imagenet"."""
    return os.environ.get(WEIGHTS_ENV) or "imagenet"


def offline_message(reason: str) -> str:
    return (
        f"could not get the VGG19 ImageNet weights ({reason}). Without a network: on a machine "
        f"that has one, download {VGG_WEIGHTS_URL} and either copy it to "
        f"{keras_weights_cache_path()} or pass --vgg-weights PATH (or set {WEIGHTS_ENV}=PATH)"
    )


def feature_extractor(weights: Optional[str] = "imagenet") -> keras.Model:
    """VGG19 up to `block5_conv2`: float images `(B, H, W, 3)` in [0, 1] -> a dict of the
    style and content layers' activations, `{name: (B, h, w, c)}`.

    Args:
        weights: "imagenet", the path of an `.h5` file of VGG19 weights without the top, or
            None (random initialisation).

    Raises:
        InputError: the weights file is missing or is not VGG19's, or the ImageNet weights are
            neither cached nor downloadable (the message says what to do offline).
    """
    if weights not in (None, "imagenet") and not Path(weights).is_file():
        raise InputError(f"VGG19 weights file {weights!r} not found")
    if weights == "imagenet":
        check_cached_weights(keras_weights_cache_path(), VGG_WEIGHTS_MD5, VGG_WEIGHTS_URL)
    try:
        with warnings_only_if_it_works():
            vgg = keras.applications.VGG19(include_top=False, weights=weights)
    except Exception as e:  # urllib/http errors, h5py errors, layer-count mismatches
        first = gist(e)
        if weights == "imagenet":
            raise InputError(offline_message(first)) from None
        raise InputError(f"{weights}: not VGG19 weights without the top ({first})") from None
    vgg.trainable = False
    images = keras.Input((None, None, 3), name="images")  # (B, H, W, 3) in [0, 1]
    x = keras.applications.vgg19.preprocess_input(images * 255.0)  # BGR, ImageNet mean removed
    outputs = {}
    for layer in vgg.layers[1:]:
        x = layer(x)
        if layer.name in STYLE_LAYERS + CONTENT_LAYERS:
            outputs[layer.name] = x
        if layer.name == CONTENT_LAYERS[-1]:
            break
    return keras.Model(images, outputs, name="vgg19_style_features")


# --------------------------------------------------------------------------------------------
# Losses: small pure functions


def gram_matrix(features: tf.Tensor) -> tf.Tensor:
    """`(B, H, W, C)` -> `(B, C, C)`: channel correlations averaged over the H·W positions."""
    positions = tf.cast(tf.shape(features)[1] * tf.shape(features)[2], features.dtype)
    return tf.einsum("bijc,bijd->bcd", features, features) / positions


def content_loss(features: dict, targets: dict) -> tf.Tensor:
    return tf.add_n([tf.reduce_mean(tf.square(features[n] - targets[n])) for n in CONTENT_LAYERS]) \
        / len(CONTENT_LAYERS)


def style_loss(features: dict, target_grams: dict) -> tf.Tensor:
    return tf.add_n([tf.reduce_mean(tf.square(gram_matrix(features[n]) - target_grams[n]))
                     for n in STYLE_LAYERS]) / len(STYLE_LAYERS)


def total_variation(image: tf.Tensor) -> tf.Tensor:
    """Sum of absolute differences between neighbouring pixels (as `tf.image.total_variation`)."""
    return tf.reduce_sum(tf.image.total_variation(image))


class StyleLoss:
    """The weighted loss of an image `(1, H, W, 3)` in [0, 1], with the content photo's
    features and the style picture's Gram matrices computed once."""

    def __init__(self, extractor: keras.Model, content: np.ndarray, style: np.ndarray,
                 config: StyleConfig):
        self.extractor = extractor
        self.config = config
        self.content_targets = {n: extractor(to_unit(content))[n] for n in CONTENT_LAYERS}
        style_features = extractor(to_unit(style))
        self.style_targets = {n: gram_matrix(style_features[n]) for n in STYLE_LAYERS}

    def __call__(self, image: tf.Tensor) -> dict:
        features = self.extractor(image)
        parts = {
            "content": self.config.content_weight * content_loss(features, self.content_targets),
            "style": self.config.style_weight * style_loss(features, self.style_targets),
            "tv": self.config.tv_weight * total_variation(image),
        }
        parts["total"] = parts["content"] + parts["style"] + parts["tv"]
        return parts


# --------------------------------------------------------------------------------------------
# Pictures


def to_unit(image: np.ndarray) -> tf.Tensor:
    """uint8 `(H, W, 3)` -> float32 `(1, H, W, 3)` in [0, 1]."""
    return tf.constant(image[None], tf.float32) / 255.0


def fit_size(image: np.ndarray, size: Optional[int]) -> np.ndarray:
    """Resize (Lanczos) so the longer side is `size`; None keeps it. Sides stay >= MIN_SIDE."""
    out = image if size is None else images.resize_longer_side(image, size)
    if min(out.shape[:2]) < MIN_SIDE:
        raise InputError(f"a {out.shape[1]}x{out.shape[0]} picture is too small for VGG19: "
                         f"each side needs at least {MIN_SIDE} pixels (raise the size)")
    return out


# --------------------------------------------------------------------------------------------
# Optimisers


Progress = Callable[[int, dict], None]  # (steps done, losses as floats)


def _floats(parts: dict) -> dict:
    return {k: float(parts[k]) for k in LOSS_NAMES}


def run_adam(loss: StyleLoss, start: tf.Tensor, config: StyleConfig,
             progress: Optional[Progress] = None) -> tuple[tf.Tensor, list]:
    """`config.steps` Adam steps on the pixels, each clipped back to [0, 1] (the TensorFlow
    tutorial's β1 = 0.99, ε = 0.1). Returns the image and the losses before each step and
    after the last."""
    image = tf.Variable(start, name="image")
    optimizer = keras.optimizers.Adam(config.learning_rate, beta_1=0.99, epsilon=0.1)

    @tf.function(jit_compile=config.xla)
    def step():
        with tf.GradientTape() as tape:
            parts = loss(image)
        optimizer.apply_gradients([(tape.gradient(parts["total"], image), image)])
        image.assign(tf.clip_by_value(image, 0.0, 1.0))
        return parts  # of the image before this step

    history = []
    for i in range(config.steps):
        history.append(_floats(step()))
        if progress:
            progress(i + 1, history[-1])
    history.append(_floats(tf.function(loss)(image)))
    return tf.convert_to_tensor(image), history


def run_lbfgs(loss: StyleLoss, start: tf.Tensor, config: StyleConfig,
              progress: Optional[Progress] = None) -> tuple[tf.Tensor, list]:
    """scipy's L-BFGS-B for `config.steps` iterations, pixels bounded to [0, 1]. Returns the
    image and the losses of the start and of each iteration's image."""
    from scipy.optimize import minimize

    shape = start.shape

    @tf.function(input_signature=[tf.TensorSpec(shape, tf.float32)], jit_compile=config.xla)
    def value_and_grad(image):
        with tf.GradientTape() as tape:
            tape.watch(image)
            parts = loss(image)
        return parts, tape.gradient(parts["total"], image)

    last = {}

    def fun(x: np.ndarray):
        parts, grad = value_and_grad(tf.constant(x.reshape(shape), tf.float32))
        last.update(x=x.copy(), parts=_floats(parts))
        return float(parts["total"]), grad.numpy().astype(np.float64).ravel()

    x0 = start.numpy().astype(np.float64).ravel()
    fun(x0)
    history = [dict(last["parts"])]

    def callback(xk):
        if not np.array_equal(xk, last["x"]):  # the accepted point is the last one evaluated
            fun(xk)
        history.append(dict(last["parts"]))
        if progress:
            progress(len(history) - 1, history[-1])

    result = minimize(fun, x0, jac=True, method="L-BFGS-B", bounds=[(0.0, 1.0)] * x0.size,
                      callback=callback, options={"maxiter": config.steps, "maxcor": 20})
    return tf.constant(result.x.reshape(shape), tf.float32), history


def stylize(content: np.ndarray, style: np.ndarray, config: StyleConfig = StyleConfig(),
            weights: Optional[str] = "imagenet", extractor: Optional[keras.Model] = None,
            progress: Optional[Progress] = None) -> StyleResult:
    """Paints uint8 `content` `(H, W, 3)` in the style of uint8 `style` `(h, w, 3)`.

    Args:
        content, style: the photo and the style picture (any sizes; both are resized so their
            longer side is `config.size`).
        config: steps, size, loss weights and optimiser.
        weights: the VGG19 weights (see `feature_extractor`); with `extractor`, only the
            name recorded in the result.
        extractor: a `feature_extractor` to reuse between calls.
        progress: called after every step with (steps done, that step's losses).

    Returns:
        A `StyleResult`: the uint8 picture (content's aspect ratio, longer side `config.size`),
        the losses of every step, and the weights used.
    """
    content = fit_size(content, config.size)
    style = fit_size(style, config.size)
    if extractor is None:
        extractor = feature_extractor(weights)
    loss = StyleLoss(extractor, content, style, config)
    run = run_adam if config.optimizer == "adam" else run_lbfgs
    image, history = run(loss, to_unit(content), config, progress)
    pixels = np.clip(np.round(image.numpy()[0] * 255.0), 0, 255).astype(np.uint8)
    return StyleResult(pixels, history, "random" if weights is None else str(weights))
