"""Building blocks of the networks: reflection padding, instance normalisation, weight init."""

from __future__ import annotations

import keras
from keras import layers, ops

#: The reference's initialisation: conv weights N(0, 0.02), biases zero.
CONV_INIT_STDDEV = 0.02


def conv_init(seed=None) -> keras.initializers.Initializer:
    return keras.initializers.RandomNormal(mean=0.0, stddev=CONV_INIT_STDDEV, seed=seed)


@keras.saving.register_keras_serializable(package="ghibli_keras")
class ReflectionPadding2D(layers.Layer):
    """Pads H and W by `padding` pixels, mirroring the picture (no edge repeat), like PyTorch's
    `nn.ReflectionPad2d`.

    Args:
        padding: pixels on each side (int), less than the input's H and W.

    Example:
    >>> import numpy as np
    >>> ReflectionPadding2D(1)(np.zeros((1, 4, 4, 3))).shape
    (1, 6, 6, 3)
    """

    def __init__(self, padding: int = 1, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(padding, int) or padding < 0:
            raise ValueError(f"padding must be a non-negative int, got {padding!r}")
        self.padding = padding

    def call(self, x):
        p = self.padding
        return ops.pad(x, [[0, 0], [p, p], [p, p], [0, 0]], mode="reflect")

    def compute_output_shape(self, input_shape):
        b, h, w, c = input_shape
        grow = lambda n: None if n is None else n + 2 * self.padding  # noqa: E731
        return (b, grow(h), grow(w), c)

    def get_config(self):
        return {**super().get_config(), "padding": self.padding}


def instance_norm(name: str, affine: bool = False, epsilon: float = 1e-5) -> layers.Layer:
    """Instance normalisation: per image, per channel, as `GroupNormalization(groups=-1)`.

    `affine=False` with epsilon 1e-5 is PyTorch's `InstanceNorm2d` default, the reference's;
    `affine=True` adds a learnable scale (init N(1, 0.02)) and offset (init 0).
    """
    return layers.GroupNormalization(
        groups=-1,
        epsilon=epsilon,
        center=affine,
        scale=affine,
        gamma_initializer=keras.initializers.RandomNormal(1.0, CONV_INIT_STDDEV),
        name=name,
    )
