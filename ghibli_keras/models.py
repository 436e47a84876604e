"""The networks: ResNet and U-Net generators, PatchGAN discriminator. Functional Keras models,
every layer named, weights N(0, 0.02).

With the defaults (convolution biases, instance norm without affine parameters, eps 1e-5) they
are the reference networks of junyanz/pytorch-CycleGAN-and-pix2pix, layer for layer:
`resnet_generator(64, 9)` has 11,378,179 parameters, `resnet_generator(64, 6)` 7,837,699 and
`patch_discriminator(64, 3)` (70x70) 2,764,737. PyTorch's `padding=1` is an explicit
`ZeroPadding2D` before a valid convolution, and its transposed convolution with `padding=1,
output_padding=1` an `UpConv2D` (a valid `Conv2DTranspose` cropped by one pixel at the top and
left; generators saved before UpConv2D have those two layers and still load), so the sampling
grids match too.
"""

from __future__ import annotations

import itertools

import keras
from keras import layers, ops

from .layers import (
    DownConv2D, NarrowConv2D, ReflectionPadding2D, ShallowConv2D, TapGradConv2D, UpConv2D,
    conv_init, instance_norm,
)

IMAGE_CHANNELS = 3
LEAKY_SLOPE = 0.2  # the reference's PatchGAN
UNET_LEAKY_SLOPE = 0.3  # the Kaggle tutorial's (tf.keras LeakyReLU default)
UNET_DROPOUT = 0.5


def _initializers(seed):
    """A factory of N(0, 0.02) initialisers: with a seed, each layer gets its own
    (seed, layer) stream, so the network is repeatable and no two layers start alike."""
    counter = itertools.count()
    return lambda: conv_init(None if seed is None else seed * 1000 + next(counter))


def _check_positive(**values):
    for name, value in values.items():
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise ValueError(f"{name} must be a positive int, got {value!r}")


def _check_epsilon(value) -> None:
    """Instance norm divides by sqrt(variance + epsilon): 0 gives NaN on a flat picture."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(f"norm_epsilon must be a positive number, got {value!r}")


@keras.saving.register_keras_serializable(package="ghibli_keras")
class GlobalSkip(layers.Layer):
    """`clip(x + residual, -1, 1)`: a generator with this head starts as the identity."""

    def call(self, inputs):
        x, residual = inputs
        return ops.clip(ops.cast(x, "float32") + ops.cast(residual, "float32"), -1.0, 1.0)

    def compute_output_shape(self, input_shapes):
        return input_shapes[0]


def _output(inputs, head, global_skip: bool):
    """The generator's output in [-1, 1], float32: `clip(x + head)` or `tanh(head)`."""
    if global_skip:
        return GlobalSkip(dtype="float32", name="global_skip")([inputs, head])
    return layers.Activation("tanh", dtype="float32", name="head_tanh")(head)


def resnet_generator(
    ngf: int = 64,
    n_blocks: int = 9,
    *,
    affine_norm: bool = False,
    norm_epsilon: float = 1e-5,
    global_skip: bool = False,
    seed=None,
    name: str = "resnet_generator",
) -> keras.Model:
    """The reference's ResNet generator (c7s1-ngf, d2ngf, d4ngf, n_blocks × R4ngf, u2ngf, ungf,
    c7s1-3, tanh).

    Fully convolutional: takes any `(B, H, W, 3)` in [-1, 1] with H and W divisible by 4 and
    returns the same shape in [-1, 1].

    Args:
        ngf: filters of the first layer (64 in the paper).
        n_blocks: residual blocks at 1/4 resolution (9 for 256 px, 6 for 128 px in the paper).
        affine_norm: learnable scale and offset in the instance norms.
        norm_epsilon: instance-norm epsilon (1e-5, PyTorch's).
        global_skip: output `clip(x + head(x))` instead of `tanh(head(x))`; the head starts at
            zero, so the untrained generator is the identity.
        seed: initialiser seed.

    Example:
    >>> g = resnet_generator(ngf=8, n_blocks=1)
    >>> g(keras.ops.zeros((1, 32, 48, 3))).shape
    (1, 32, 48, 3)
    """
    _check_positive(ngf=ngf)
    _check_epsilon(norm_epsilon)
    if not isinstance(n_blocks, int) or n_blocks < 0:
        raise ValueError(f"n_blocks must be a non-negative int, got {n_blocks!r}")
    norm = lambda n: instance_norm(n, affine_norm, norm_epsilon)  # noqa: E731
    init = _initializers(seed)

    inputs = keras.Input(shape=(None, None, IMAGE_CHANNELS), name="image")  # (B, H, W, 3)
    h = ReflectionPadding2D(3, name="stem_pad")(inputs)
    h = ShallowConv2D(ngf, 7, kernel_initializer=init(), name="stem_conv")(h)
    h = norm("stem_norm")(h)
    h = layers.ReLU(name="stem_relu")(h)  # (B, H, W, ngf)
    for i in (1, 2):
        h = layers.ZeroPadding2D(1, name=f"down{i}_pad")(h)
        h = DownConv2D(ngf * 2**i, 3, kernel_initializer=init(), name=f"down{i}_conv")(h)
        h = norm(f"down{i}_norm")(h)
        h = layers.ReLU(name=f"down{i}_relu")(h)  # (B, H/2^i, W/2^i, ngf·2^i)
    for b in range(1, n_blocks + 1):
        r = h
        for j in (1, 2):
            r = ReflectionPadding2D(1, name=f"block{b}_pad{j}")(r)
            r = TapGradConv2D(ngf * 4, 3, kernel_initializer=init(), name=f"block{b}_conv{j}")(r)
            r = norm(f"block{b}_norm{j}")(r)
            if j == 1:
                r = layers.ReLU(name=f"block{b}_relu")(r)
        h = layers.Add(name=f"block{b}_add")([h, r])  # (B, H/4, W/4, 4ngf)
    for i in (1, 2):
        filters = ngf * 2 ** (2 - i)
        h = UpConv2D(filters, kernel_initializer=init(), name=f"up{i}_conv")(h)
        h = norm(f"up{i}_norm")(h)
        h = layers.ReLU(name=f"up{i}_relu")(h)  # (B, H/2^(2-i), W/2^(2-i), ngf·2^(2-i))
    h = ReflectionPadding2D(3, name="head_pad")(h)
    head_init = "zeros" if global_skip else init()
    h = NarrowConv2D(IMAGE_CHANNELS, 7, kernel_initializer=head_init, name="head_conv")(h)
    return keras.Model(inputs, _output(inputs, h, global_skip), name=name)  # (B, H, W, 3)


def unet_generator(
    *,
    affine_norm: bool = True,
    norm_epsilon: float = 1e-3,
    global_skip: bool = False,
    seed=None,
    name: str = "unet_generator",
) -> keras.Model:
    """The Kaggle "Monet CycleGAN" tutorial's U-Net: 8 stride-2 4×4 convolutions down
    (64-128-256-512×5, no norm on the first), 7 transposed convolutions up (512×4, dropout 0.5
    on the first three, 256, 128, 64) with skip concatenations, and a transposed 4×4 head with
    tanh. Biases off, instance norm with learnable scale (initialised N(1, 0.02); the tutorial's
    N(0, 0.02) starts with the norm's output silenced), LeakyReLU 0.3.

    Takes `(B, H, W, 3)` with H and W divisible by 256 (eight halvings).

    Example:
    >>> unet_generator()(keras.ops.zeros((1, 256, 256, 3))).shape
    (1, 256, 256, 3)
    """
    _check_epsilon(norm_epsilon)
    down_filters = (64, 128, 256, 512, 512, 512, 512, 512)
    up_filters = (512, 512, 512, 512, 256, 128, 64)
    init = _initializers(seed)
    inputs = keras.Input(shape=(None, None, IMAGE_CHANNELS), name="image")  # (B, H, W, 3)
    h, skips = inputs, []
    for i, filters in enumerate(down_filters, start=1):
        h = layers.Conv2D(
            filters, 4, strides=2, padding="same", use_bias=False, kernel_initializer=init(),
            name=f"down{i}_conv",
        )(h)
        if i > 1:
            h = instance_norm(f"down{i}_norm", affine_norm, norm_epsilon)(h)
        h = layers.LeakyReLU(UNET_LEAKY_SLOPE, name=f"down{i}_lrelu")(h)  # (B, H/2^i, W/2^i, ·)
        skips.append(h)
    for i, (filters, skip) in enumerate(zip(up_filters, reversed(skips[:-1])), start=1):
        h = layers.Conv2DTranspose(
            filters, 4, strides=2, padding="same", use_bias=False, kernel_initializer=init(),
            name=f"up{i}_conv",
        )(h)
        h = instance_norm(f"up{i}_norm", affine_norm, norm_epsilon)(h)
        if i <= 3:
            h = layers.Dropout(UNET_DROPOUT, name=f"up{i}_dropout")(h)
        h = layers.ReLU(name=f"up{i}_relu")(h)
        h = layers.Concatenate(name=f"up{i}_skip")([h, skip])
    head_init = "zeros" if global_skip else init()
    h = layers.Conv2DTranspose(
        IMAGE_CHANNELS, 4, strides=2, padding="same", kernel_initializer=head_init, name="head_conv"
    )(h)
    return keras.Model(inputs, _output(inputs, h, global_skip), name=name)  # (B, H, W, 3)


def patch_discriminator(
    ndf: int = 64,
    n_layers: int = 3,
    *,
    affine_norm: bool = False,
    norm_epsilon: float = 1e-5,
    seed=None,
    name: str = "patch_discriminator",
) -> keras.Model:
    """The reference's PatchGAN: `n_layers` stride-2 4×4 convolutions (ndf, 2ndf, 4ndf, ... up
    to 8ndf), a stride-1 one, and a 1-channel stride-1 head; LeakyReLU 0.2, no norm on the
    first. With `n_layers=3` each output judges a 70×70 patch; a 256×256 input gives 30×30
    logits.

    Example:
    >>> patch_discriminator(ndf=8)(keras.ops.zeros((1, 256, 256, 3))).shape
    (1, 30, 30, 1)
    """
    _check_positive(ndf=ndf, n_layers=n_layers)
    _check_epsilon(norm_epsilon)
    init = _initializers(seed)
    inputs = keras.Input(shape=(None, None, IMAGE_CHANNELS), name="image")  # (B, H, W, 3)
    h = layers.ZeroPadding2D(1, name="layer1_pad")(inputs)
    for i in range(n_layers + 1):
        filters = ndf * min(2**i, 8)
        conv = DownConv2D if i < n_layers else TapGradConv2D  # stride 2, then 1
        h = conv(filters, 4, kernel_initializer=init(), name=f"layer{i + 1}_conv")(h)
        if i > 0:
            h = instance_norm(f"layer{i + 1}_norm", affine_norm, norm_epsilon)(h)
        # The next convolution's zero padding comes before the activation: the same values
        # (LeakyReLU(0) = 0), and TensorFlow's graph optimiser (Grappler's remapper, without
        # XLA) otherwise fuses conv + bias + LeakyReLU ahead of a pad into a graph it cannot
        # build ("remapper failed: ... LeakyReluGrad ... missing node", TF 2.21).
        h = layers.ZeroPadding2D(1, name=f"layer{i + 2}_pad" if i < n_layers else "head_pad")(h)
        h = layers.LeakyReLU(LEAKY_SLOPE, name=f"layer{i + 1}_lrelu")(h)
    outputs = NarrowConv2D(1, 4, kernel_initializer=init(), dtype="float32", name="head_conv")(h)
    return keras.Model(inputs, outputs, name=name)  # (B, h, w, 1) logits


def build_networks(model_config, seed=None) -> dict:
    """G, F, D_X, D_Y from a `ModelConfig`."""
    m = model_config
    if m.generator == "resnet":
        make_g = lambda n, s: resnet_generator(  # noqa: E731
            m.ngf, m.n_blocks, affine_norm=m.affine_norm, norm_epsilon=m.norm_epsilon,
            global_skip=m.global_skip, seed=s, name=n,
        )
    else:
        make_g = lambda n, s: unet_generator(  # noqa: E731
            affine_norm=m.affine_norm, norm_epsilon=m.norm_epsilon, global_skip=m.global_skip,
            seed=s, name=n,
        )
    make_d = lambda n, s: patch_discriminator(  # noqa: E731
        m.ndf, m.n_layers, affine_norm=m.affine_norm, norm_epsilon=m.norm_epsilon, seed=s, name=n
    )
    seeds = [None] * 4 if seed is None else [seed + i for i in range(4)]
    return {
        "generator_g": make_g("generator_g", seeds[0]),  # G: X -> Y
        "generator_f": make_g("generator_f", seeds[1]),  # F: Y -> X
        "discriminator_x": make_d("discriminator_x", seeds[2]),  # D_X: real X vs F(y)
        "discriminator_y": make_d("discriminator_y", seeds[3]),  # D_Y: real Y vs G(x)
    }


def size_multiple(generator: keras.Model) -> int:
    """What a generator's input height and width must be divisible by: 2 to the number of its
    stride-2 convolutions (4 for the ResNet generators, 256 for the U-Net)."""
    halvings = sum(
        1
        for layer in generator.layers
        if isinstance(layer, layers.Conv2D) and tuple(layer.strides) == (2, 2)
    )
    return 2**halvings


def smallest_side(generator: keras.Model) -> int:
    """The smallest input height and width `generator` takes: the least multiple of
    `size_multiple` at which each reflection padding's input is larger than its padding (8
    for the ResNet generators, whose residual blocks pad their H/4 x W/4 input by 1; the
    size multiple for the U-Net). Follows the resolution through the layers in order, halved
    by each stride-2 convolution and doubled by each stride-2 transposed one."""
    multiple, scale, needed = size_multiple(generator), 1, 1
    for layer in generator.layers:
        if isinstance(layer, ReflectionPadding2D):
            needed = max(needed, layer.padding * scale + 1)  # side / scale > padding
        elif tuple(getattr(layer, "strides", ())) == (2, 2):
            scale = scale // 2 if isinstance(layer, layers.Conv2DTranspose) else scale * 2
    return -(-needed // multiple) * multiple
