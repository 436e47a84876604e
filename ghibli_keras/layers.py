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

    It takes the form that measured fastest where it runs:

    - on TensorFlow's CPU kernels (oneDNN, no XLA): one gather of the input's pixels by the
      padded picture's pixel indices, with `MirrorPadGrad` as its gradient (`ops.pad`'s): at
      a plain pass's rate, where TensorFlow's mirror-pad kernel ran at a quarter of it (64x64
      x256: 0.23 against 0.94 ms; 256x256x64: 1.16 against 3.48 ms); the paper generator's
      forward pass 1.04x (256², batch 4) and 1.035x (1024²) as fast, its step 1.014x;
    - under XLA on a GPU (with static H and W): the sum of the zero-padded input and each
      mirrored edge row and column zero-padded into place, which XLA fuses into one pass with
      its neighbours; on an H200 a residual block's training pass was 1.18x faster so, the
      paper step 1.09x; XLA's CPU backend does not fuse the sum and ran the generator
      0.8-0.9x as fast with it;
    - elsewhere `ops.pad(mode="reflect")`, which XLA makes a concatenation of slices
      (benchmarks/RESULTS.md).

    Args:
        padding: pixels on each side (int), less than the input's H and W.

    Example:
    >>> import numpy as np
    >>> tuple(ReflectionPadding2D(1)(np.zeros((1, 4, 4, 3))).shape)
    (1, 6, 6, 3)
    """

    def __init__(self, padding: int = 1, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(padding, int) or padding < 0:
            raise ValueError(f"padding must be a non-negative int, got {padding!r}")
        self.padding = padding

    def call(self, x):  # (B, H, W, C) -> (B, H + 2p, W + 2p, C)
        static = None not in tuple(x.shape)[1:3]
        if static:
            self._check_size(x)
        if in_xla_context() and on_gpu() and static:
            return self._edge_sums(x)
        if on_onednn():
            return self._gathered(x)
        return self._reflect(x)

    def _check_size(self, x):
        for axis in (1, 2):
            if self.padding >= x.shape[axis]:
                raise ValueError(f"ReflectionPadding2D({self.padding}) needs inputs larger than "
                                 f"{self.padding} pixels, got {x.shape[axis]} along axis {axis}")

    def _reflect(self, x):
        p = self.padding
        return ops.pad(x, [[0, 0], [p, p], [p, p], [0, 0]], mode="reflect")

    def _gathered(self, x):
        """`_reflect` as one `tf.gather` of `x`'s pixels, flattened to `(B, H·W, C)`, by the
        padded picture's `(H + 2p, W + 2p)` indices; TensorFlow's gradient of `_reflect`."""
        import tensorflow as tf

        p = self.padding
        paddings = [[0, 0], [p, p], [p, p], [0, 0]]

        @tf.custom_gradient
        def pad(x):  # (B, H, W, C) -> (B, H + 2p, W + 2p, C)
            shape = tf.shape(x)
            b, h, w, c = (x.shape[i] if x.shape[i] is not None else shape[i] for i in range(4))

            def mirrored(n):  # (n + 2p,): the source of each padded position, in [0, n)
                return (n - 1) - tf.abs((n - 1) - tf.abs(tf.range(-p, n + p)))

            index = mirrored(h)[:, None] * w + mirrored(w)[None, :]  # (H + 2p, W + 2p)
            y = tf.gather(tf.reshape(x, [b, h * w, c]), index, axis=1)

            def grad(dy):
                return tf.raw_ops.MirrorPadGrad(input=dy, paddings=paddings, mode="REFLECT")

            return y, grad

        return pad(x)

    def _edge_sums(self, x):  # `call` has checked the size
        p = self.padding
        for axis in (1, 2):  # H, then W
            n = x.shape[axis]
            place = lambda part, before, after, axis=axis: ops.pad(  # noqa: E731
                part, [[0, 0]] * axis + [[before, after]] + [[0, 0]] * (3 - axis))
            edge = lambda i, axis=axis: x[:, i:i + 1] if axis == 1 else x[:, :, i:i + 1]  # noqa: E731
            y = place(x, p, p)
            for k in range(1, p + 1):
                y = y + place(edge(k), p - k, n + p + k - 1)  # position p - k mirrors k
                y = y + place(edge(n - 1 - k), n + p + k - 1, p - k)  # n + p - 1 + k mirrors n - 1 - k
            x = y
        return x

    def compute_output_shape(self, input_shape):
        b, h, w, c = input_shape
        grow = lambda n: None if n is None else n + 2 * self.padding  # noqa: E731
        return (b, grow(h), grow(w), c)

    def get_config(self):
        return {**super().get_config(), "padding": self.padding}


@keras.saving.register_keras_serializable(package="ghibli_keras")
class InstanceNormalization(layers.GroupNormalization):
    """Instance normalisation of `(B, H, W, C)` images: `GroupNormalization(groups=-1)` (one
    group per channel) with the same weights, config and result, but the statistics taken over
    H and W of the input as it is instead of over Keras' `(B, H, W, C, 1)` reshape, whose
    gradients XLA's CPU backend runs 1.2x slower (benchmarks/RESULTS.md). On TensorFlow
    without XLA it runs as TensorFlow's fused batch normalisation of each image alone
    (epsilon then at least 1.001e-5): a norm's forward and gradients 2.3x (float32) to
    4-5.6x (bfloat16) faster on a CPU at batch 1.

    Args:
        epsilon: added to the variance (1e-5, PyTorch's `InstanceNorm2d` default).
        center, scale: learnable offset (beta) and scale (gamma) per channel.
        **kwargs: other `GroupNormalization` arguments (initialisers, regularisers, `name`);
            `groups` may only be -1 or, as in a saved config, the number of channels, and
            `axis` only -1.

    Example:
    >>> import numpy as np
    >>> x = np.random.default_rng(0).normal(3.0, 2.0, size=(2, 5, 6, 4)).astype("float32")
    >>> y = InstanceNormalization()(x)
    >>> bool(np.allclose(y.numpy().mean(axis=(1, 2)), 0.0, atol=1e-5))
    True
    """

    def __init__(self, epsilon: float = 1e-5, center: bool = False, scale: bool = False, **kwargs):
        axis = kwargs.pop("axis", -1)
        if axis != -1:
            raise ValueError(f"InstanceNormalization normalises channels-last images (axis=-1); "
                             f"got axis={axis!r}")
        super().__init__(epsilon=epsilon, center=center, scale=scale, axis=-1,
                         groups=kwargs.pop("groups", -1), **kwargs)

    def build(self, input_shape):
        channels = input_shape[-1]
        if self.groups not in (-1, channels):
            raise ValueError(f"InstanceNormalization has one group per channel: groups must be "
                             f"-1 or {channels}, got groups={self.groups!r}")
        super().build(input_shape)

    def call(self, x):  # (B, H, W, C)
        if keras.backend.backend() == "tensorflow" and not in_xla_context():
            return self._fused(x)
        return self._moments(x)

    def _moments(self, x):
        """The norm from its statistics in float32. On a GPU (under XLA) the variance is E[x²] -
        E[x]², whose two sums XLA takes in one read of x, and the centred values are scaled:
        the gradients then take two reductions over H, W, fewer than those of `ops.moments` and
        `x * inv + offset` (G's training pass 1.30x, then 1.04x, on an H200). Elsewhere that
        plain form, as before: on a CPU the centred one ran no faster."""
        x = ops.cast(x, "float32")  # statistics in float32, as GroupNormalization takes them
        beta = ops.cast(self.beta, "float32") if self.center else 0.0
        if on_gpu():
            mean = ops.mean(x, axis=(1, 2), keepdims=True)  # (B, 1, 1, C)
            squares = ops.mean(ops.square(x), axis=(1, 2), keepdims=True)
            inv = self._inverse_std(ops.maximum(squares - ops.square(mean), 0.0))
            y = (x - mean) * inv + beta
        else:
            mean, variance = ops.moments(x, axes=(1, 2), keepdims=True)  # (B, 1, 1, C) each
            inv = self._inverse_std(variance)
            y = x * inv + (-mean * inv + beta)
        return ops.cast(y, self.compute_dtype)

    def _inverse_std(self, variance):
        """1 / sqrt(variance + epsilon), times gamma when the norm scales."""
        inv = ops.rsqrt(variance + self.epsilon)
        return inv * ops.cast(self.gamma, inv.dtype) if self.scale else inv

    def _fused(self, x):
        """TensorFlow's fused batch normalisation (one kernel forward, one for the gradients;
        statistics in float32) of each image alone, which is its instance normalisation: the
        images split apart where the batch is known when traced, else one at a time in a
        `tf.while_loop`. On a 2-core CPU in float32 that ran 1.37-1.6x (split) and 1.15-1.44x
        (loop) as fast as one batch normalisation of the images stacked as the channels of one
        image, whose two transposes cost as much as the norm. It raises epsilon to at least
        1.001e-5."""
        import tensorflow as tf

        x = tf.cast(x, self.compute_dtype)
        channels = x.shape[-1]
        scale = tf.cast(self.gamma, tf.float32) if self.scale else tf.ones([channels])
        offset = tf.cast(self.beta, tf.float32) if self.center else tf.zeros([channels])

        def normalise(image):  # (1, H, W, C)
            y, _, _ = tf.compat.v1.nn.fused_batch_norm(image, scale, offset, epsilon=self.epsilon,
                                                       is_training=True)
            return y

        batch = x.shape[0]
        if batch == 1:
            return normalise(x)
        if batch is not None:
            return tf.concat([normalise(image) for image in tf.split(x, batch)], axis=0)
        return _each_image(normalise, x)


def _each_image(fn, x):
    """`fn` of each `(1, H, W, C)` image of `x` `(B, H, W, C)`, B unknown until run time, one
    after the other (each `fn` uses every core), stacked back (TensorFlow)."""
    import tensorflow as tf

    count = tf.shape(x)[0]
    images = tf.TensorArray(x.dtype, size=count, infer_shape=False)

    def body(i, images):
        return i + 1, images.write(i, fn(x[i:i + 1])[0])  # x[i:i+1]: a view of x

    _, images = tf.while_loop(lambda i, _: i < count, body, (0, images), parallel_iterations=1)
    y = images.stack()
    y.set_shape(x.shape)
    return y


def instance_norm(name: str, affine: bool = False, epsilon: float = 1e-5) -> layers.Layer:
    """Instance normalisation: per image, per channel (`InstanceNormalization`, a
    `GroupNormalization(groups=-1)`).

    `affine=False` with epsilon 1e-5 is PyTorch's `InstanceNorm2d` default, the reference's;
    `affine=True` adds a learnable scale (init N(1, 0.02)) and offset (init 0).
    """
    return InstanceNormalization(
        epsilon=epsilon,
        center=affine,
        scale=affine,
        gamma_initializer=keras.initializers.RandomNormal(1.0, CONV_INIT_STDDEV),
        name=name,
    )


def _xla_context_check():
    """TensorFlow's internal `GraphOrParentsInXlaContext(graph)`, or None where this TensorFlow
    no longer has it (module or function gone)."""
    try:
        from tensorflow.python.ops import control_flow_util
    except ImportError:
        return None
    return getattr(control_flow_util, "GraphOrParentsInXlaContext", None)


def in_xla_context() -> bool:
    """Whether the code being traced now will be compiled by XLA (a `tf.function` with
    `jit_compile=True`, as Keras makes for `jit_compile=True`). False when eager, in a plain
    graph, or where TensorFlow no longer has this internal helper (the layers then run their
    Keras form, which is correct everywhere, only slower under XLA). On the JAX backend
    always True (`jax.jit` and JAX's eager operations alike run through XLA); on the others
    False."""
    backend = keras.backend.backend()
    if backend != "tensorflow":
        return backend == "jax"
    import tensorflow as tf

    if tf.executing_eagerly():
        return False
    check = _xla_context_check()
    if check is None:
        return False
    return bool(check(tf.compat.v1.get_default_graph()))


def on_onednn() -> bool:
    """Whether the computation runs on TensorFlow's own CPU kernels (oneDNN): the TensorFlow
    backend, not under XLA, not on a GPU."""
    return keras.backend.backend() == "tensorflow" and not in_xla_context() and not on_gpu()


def on_gpu() -> bool:
    """Whether the computation runs on a GPU: JAX's default backend is one, or TensorFlow sees
    one (a model placed on the CPU of a machine with a GPU counts as on the GPU)."""
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        return jax.default_backend() == "gpu"
    if backend == "tensorflow":
        import tensorflow as tf

        return bool(tf.config.list_logical_devices("GPU"))
    return False


# Sub-pixel form of UpConv2D. Output row 2j takes tap 1 of the 3x3 kernel at input row j; row
# 2j+1 takes tap 2 at row j and tap 0 at row j+1. _TAPS[phase][offset] is that tap (None: none).
_TAPS = ((1, None), (2, 0))


@keras.saving.register_keras_serializable(package="ghibli_keras")
class UpConv2D(layers.Conv2DTranspose):
    """PyTorch's `ConvTranspose2d(kernel_size=3, stride=2, padding=1, output_padding=1)`:
    `(B, H, W, C) -> (B, 2H, 2W, filters)`, the reference's up-sampling layer.

    Its weights are a `Conv2DTranspose(filters, 3, strides=2)`'s (kernel `(3, 3, filters, C)`,
    bias `(filters,)`), and its output is that layer's `(2H+1, 2W+1)` output without the first
    row and column. Under XLA (`jit_compile=True`) it runs as the equivalent sub-pixel
    convolution — a 2x2 convolution to `4 * filters` channels, then `depth_to_space(2)` — which
    XLA's CPU backend runs 1.6-2.2x faster than its transposed convolution
    (benchmarks/RESULTS.md); elsewhere as the transposed convolution, which oneDNN runs faster.
    On TensorFlow on a CPU without XLA its gradients are those of the transposed convolution
    with the first row and column cut by explicit padding (`[[1, 0], [1, 0]]`), which oneDNN
    takes without padding the output's gradient back to `(2H+1, 2W+1)` first: the training
    pass of the paper generator's two up-sampling layers at batch 1 1.35x and 1.35x as fast;
    the forward pass stays the cropped one (explicit padding made it 0.9x as fast). In
    bfloat16 the gradients take an explicitly padded copy of the output's gradient instead:
    oneDNN has no bfloat16 kernel gradient with explicit padding, and TensorFlow's fallback
    made the two layers 73% of the paper generator's bf16 training pass on a CPU with AMX (the
    layer's pass 370 ms, then 7-8 ms).

    Args:
        filters: output channels.
        **kwargs: other `Conv2DTranspose` arguments (initialisers, `use_bias`, `name`, ...);
            `kernel_size`, `strides` and `padding` are fixed at 3, 2 and "valid".

    Example:
    >>> import numpy as np
    >>> tuple(UpConv2D(8)(np.zeros((1, 5, 6, 4), "float32")).shape)
    (1, 10, 12, 8)
    """

    #: Arguments of Conv2DTranspose this layer fixes (kernel 3, stride 2, valid, channels last,
    #: no dilation, output padding or activation).
    FIXED_ARGUMENTS = ("kernel_size", "strides", "padding", "output_padding", "data_format",
                       "dilation_rate", "activation")

    def __init__(self, filters: int, **kwargs):
        fixed = sorted(set(kwargs) & set(self.FIXED_ARGUMENTS))
        if fixed:
            raise ValueError(f"UpConv2D fixes kernel_size=3, strides=2, padding='valid'; "
                             f"do not pass {', '.join(fixed)}")
        super().__init__(filters, kernel_size=3, strides=2, padding="valid", **kwargs)

    def call(self, x):  # (B, H, W, C)
        if in_xla_context():
            return self._sub_pixel(x)
        if on_onednn():
            y = self._cropped_transpose(x, ops.convert_to_tensor(self.kernel))
            return y + ops.convert_to_tensor(self.bias) if self.use_bias else y
        return super().call(x)[:, 1:, 1:, :]  # (B, 2H+1, 2W+1, F) -> (B, 2H, 2W, F)

    def _cropped_transpose(self, x, kernel):
        """The transposed convolution without its first row and column; its gradients with
        them cut by explicit padding (TensorFlow)."""
        import tensorflow as tf

        cut = [[0, 0], [1, 0], [1, 0], [0, 0]]  # the first row and column

        @tf.custom_gradient
        def up(x, kernel):  # (B, H, W, C), (3, 3, F, C) -> (B, 2H, 2W, F)
            shape = tf.shape(x)
            full = tf.stack([shape[0], 2 * shape[1] + 1, 2 * shape[2] + 1, kernel.shape[2]])
            y = tf.nn.conv2d_transpose(x, kernel, full, strides=2, padding="VALID")[:, 1:, 1:]

            def grad(dy):  # (B, 2H, 2W, F)
                if dy.dtype == tf.float32:
                    padding, dk_padding = cut, {"padding": "EXPLICIT",
                                                 "explicit_paddings": sum(cut, [])}
                else:
                    # oneDNN has no bfloat16 kernel gradient with explicit padding (TensorFlow's
                    # fallback took 370 ms a layer, against 4 ms on a padded copy with AMX)
                    dy = tf.pad(dy, cut)  # (B, 2H+1, 2W+1, F)
                    padding, dk_padding = "VALID", {"padding": "VALID"}
                dx = tf.nn.conv2d(dy, kernel, strides=2, padding=padding)
                dk = tf.raw_ops.Conv2DBackpropFilter(
                    input=dy, filter_sizes=tf.shape(kernel), out_backprop=x, strides=[1, 2, 2, 1],
                    **dk_padding)
                return dx, dk  # (B, H, W, C), (3, 3, F, C)

            return y, grad

        return up(x, tf.convert_to_tensor(kernel))  # a tensor, not the variable: no `variables`

    def _sub_pixel(self, x):
        kernel = ops.transpose(ops.convert_to_tensor(self.kernel), (0, 1, 3, 2))  # (3, 3, C, F)
        zero = ops.zeros_like(kernel[0, 0])  # (C, F)
        tap = lambda ty, tx: zero if ty is None or tx is None else kernel[ty, tx]  # noqa: E731
        phases = [(py, px) for py in (0, 1) for px in (0, 1)]  # depth_to_space's channel order
        sub_kernel = ops.stack([
            ops.stack([
                ops.concatenate([tap(_TAPS[py][dy], _TAPS[px][dx]) for py, px in phases], axis=-1)
                for dx in (0, 1)
            ])
            for dy in (0, 1)
        ])  # (2, 2, C, 4F)
        x = ops.pad(x, [[0, 0], [0, 1], [0, 1], [0, 0]])  # row/col H, W are zero
        y = ops.conv(x, sub_kernel, strides=1, padding="valid")  # (B, H, W, 4F)
        if self.use_bias:
            y = y + ops.tile(ops.convert_to_tensor(self.bias), [4])
        b, h, w = ops.shape(x)[0], ops.shape(x)[1] - 1, ops.shape(x)[2] - 1
        y = ops.reshape(y, (b, h, w, 2, 2, self.filters))  # channels (phase y, phase x, F)
        y = ops.transpose(y, (0, 1, 3, 2, 4, 5))  # (B, H, 2, W, 2, F): depth_to_space(2)
        return ops.reshape(y, (b, 2 * h, 2 * w, self.filters))  # (B, 2H, 2W, F)

    def compute_output_shape(self, input_shape):
        b, h, w, _ = input_shape
        double = lambda n: None if n is None else 2 * n  # noqa: E731
        return (b, double(h), double(w), self.filters)

    def get_config(self):
        config = super().get_config()
        return {k: v for k, v in config.items() if k not in self.FIXED_ARGUMENTS}


class _FixedConv2D(layers.Conv2D):
    """A `Conv2D` some of whose arguments are fixed (`FIXED_ARGUMENTS`): they may still be
    passed, as `get_config` returns them, but only with the fixed value."""

    FIXED_ARGUMENTS = {"strides": (1, 1), "padding": "valid", "dilation_rate": (1, 1),
                       "groups": 1, "data_format": "channels_last"}

    def __init__(self, filters: int, kernel_size, **kwargs):
        for key, value in self.FIXED_ARGUMENTS.items():  # present in get_config()
            given = kwargs.pop(key, value)
            given = (given, given) if isinstance(value, tuple) and isinstance(given, int) else given
            if (tuple(given) if isinstance(given, list) else given) != value:
                raise ValueError(f"{type(self).__name__} has {key}={value!r}; got {key}={given!r}")
        super().__init__(filters, kernel_size, **self.FIXED_ARGUMENTS, **kwargs)

    def _finish(self, y, bias: bool = True):
        """Bias (unless already added) and activation, as `Conv2D.call` adds them."""
        if bias and self.use_bias:
            y = y + ops.convert_to_tensor(self.bias)
        return self.activation(y) if self.activation is not None else y


@keras.saving.register_keras_serializable(package="ghibli_keras")
class NarrowConv2D(_FixedConv2D):
    """A stride-1, valid `Conv2D` for outputs with few channels, like the generator's 7x7 head
    to RGB: the same weights, arguments and result as `Conv2D`.

    Under XLA (`jit_compile=True`) it runs as a `1 x kw` convolution to `kh * filters`
    channels followed by the sum of `kh` row-shifted slices of that result — XLA's CPU
    backend runs a convolution to 3 channels at a tenth of its peak, and this form 4.5x (forward)
    and 2.8x (forward and gradients) faster (benchmarks/RESULTS.md); so too on a CPU without
    XLA, where oneDNN ran it faster than its own convolution to 3 channels: in bfloat16 1.7x
    (forward and gradients) to 1.9x (forward), in float32 1.5x and 2.3-2.4x; on a GPU
    without XLA as `Conv2D`. Training there, its gradients are its own instead of the
    row-split form's: the input's a convolution of the zero-padded output gradient with the
    flipped kernel (`filters` -> C channels), the kernel's `row_tap_kernel_gradient`; the
    paper generator's head (7x7, 64 -> 3 at 262x262) 1.37x (float32, batch 1), 1.35x (batch
    4) and 1.23x (bfloat16) as fast, the paper step 1.02x (alternating rounds, 7.43 -> 7.25 s
    on an Emerald Rapids VM); the discriminator's head (4x4, 512 -> 1) as fast.

    Args:
        filters: output channels.
        kernel_size: int or (kh, kw).
        **kwargs: other `Conv2D` arguments (initialisers, `use_bias`, `activation`, `name`, ...);
            `strides`, `padding`, `dilation_rate`, `groups` and `data_format` keep their
            defaults (1, "valid", 1, 1, channels last).

    Example:
    >>> import numpy as np
    >>> tuple(NarrowConv2D(3, 7)(np.zeros((1, 16, 20, 8), "float32")).shape)
    (1, 10, 14, 3)
    """

    def call(self, x, training=False):  # (B, H, W, C)
        if training and on_onednn():
            return self._finish(self._onednn_conv(x))
        if in_xla_context() or not on_gpu():
            return self._finish(self._row_split_conv(x, ops.convert_to_tensor(self.kernel)))
        return super().call(x)

    def _row_split_conv(self, x, kernel):  # (B, H, W, C), (kh, kw, C, F)
        kh, kw = self.kernel_size
        f = self.filters
        h = ops.shape(x)[1] - kh + 1
        rows = ops.reshape(ops.transpose(kernel, (1, 2, 0, 3)), (1, kw, -1, kh * f))  # (1, kw, C, kh·F)
        z = ops.conv(x, rows, strides=1, padding="valid")  # (B, H+kh-1, W-kw+1, kh·F)
        return sum(z[:, dy:dy + h, :, dy * f:(dy + 1) * f] for dy in range(kh))  # (B, H-kh+1, ·, F)

    def _onednn_conv(self, x):
        """The row-split convolution with gradients of its own: the input's as a convolution
        of the zero-padded output gradient with the flipped kernel (F -> C channels, the
        generator stem's shape, which oneDNN runs well), the kernel's by
        `row_tap_kernel_gradient` — instead of the gradients of the row-split form (kh·F
        channels, slices)."""
        import tensorflow as tf

        kh, kw = self.kernel_size

        @tf.custom_gradient
        def conv(x, kernel):  # (B, H, W, C), (kh, kw, C, F) -> (B, H-kh+1, W-kw+1, F)
            def grad(dy):
                flipped = tf.transpose(tf.reverse(kernel, [0, 1]), (0, 1, 3, 2))  # (kh, kw, F, C)
                full = tf.pad(dy, [[0, 0], [kh - 1, kh - 1], [kw - 1, kw - 1], [0, 0]])
                dx = tf.nn.conv2d(full, flipped, strides=1, padding="VALID")  # (B, H, W, C)
                return dx, row_tap_kernel_gradient(x, dy, kh, kw)

            return self._row_split_conv(x, kernel), grad

        return conv(x, tf.convert_to_tensor(self.kernel))


@keras.saving.register_keras_serializable(package="ghibli_keras")
class TapGradConv2D(_FixedConv2D):
    """A stride-1, valid `Conv2D` between many channels, like the generator's residual 3x3
    convolutions: the same weights, arguments and result as `Conv2D`. On TensorFlow on a CPU
    without XLA (oneDNN's convolutions) it takes two forms where they pay:

    - **Row strips** when the batch is smaller than the threads running an operation
      (`intra_op_threads()`): the input is cut into `ceil(threads / B)` strips of output rows
      (each with its `kh - 1` rows of halo; the last padded where the rows do not part
      evenly, at least kh rows each) stacked along the batch, so oneDNN, which shares a
      convolution's work out by image, keeps every thread busy. At batch 1 on 2 threads, 256
      channels, float32: alone 1.2x (64x64), 1.23x (128x128), 1.44x (256x256) as fast; the
      paper generator's forward pass at 1024x1024 1.18x, at 256x256 1.17x, its training pass
      at batch 1 1.07x; where the batch fills the threads it would be slower (the gather's
      copy), so it is not taken; in bfloat16 as fast either way on an Emerald Rapids CPU.
      The gradients stay oneDNN's (as fast at batch 1) on the whole input. With the batch
      or the height unknown while tracing (as `translate` and the SavedModel trace), both
      forms are in the graph and the shape picks one; a SavedModel keeps the thread count of
      the machine that exported it (the result is the same for any).
    - **The kernel gradient tap by tap** when training in bfloat16 and `C * filters` is at
      least `MIN_CHANNEL_PRODUCT`: for kernel tap (i, j), the input flattened to
      `(B·H·W, C)` from row `i·W + j` on, transposed, times the output gradient zero-padded
      to the input's H and W and flattened alike — `kh·kw` matrix products of row slices
      that TensorFlow takes without a copy. oneDNN's bf16 matrix product runs at its
      convolutions' forward rate, its bf16 kernel gradient only at the fp32 rate: alone
      1.23-1.32x faster so at 256 channels and more, 0.9-1.03x at 64-128 channels, and not
      faster in float32; the paper generator's training pass (batch 1) 1.06-1.11x, the paper
      step 1.04-1.06x, its peak memory +0.1-0.35 GiB on a Zen 5 CPU (benchmarks/RESULTS.md).

    Elsewhere (XLA, a GPU, other backends) it is `Conv2D`.

    Args:
        filters: output channels.
        kernel_size: int or (kh, kw).
        **kwargs: other `Conv2D` arguments, as for `NarrowConv2D`; `strides`, `padding`,
            `dilation_rate`, `groups` and `data_format` keep their defaults.

    Example:
    >>> import numpy as np
    >>> tuple(TapGradConv2D(8, 3)(np.zeros((1, 16, 20, 4), "float32"), training=True).shape)
    (1, 14, 18, 8)
    """

    #: The smallest `C * filters` whose kernel gradient is taken tap by tap (256 x 256).
    MIN_CHANNEL_PRODUCT = 256 * 256

    def call(self, x, training=False):  # (B, H, W, C)
        if not on_onednn():
            return super().call(x)
        taps = training and self._taps_pay(x)
        strips, use_strips = self._strips(x)
        if not taps and use_strips is False:
            return super().call(x)
        if not training:  # the bias inside, where oneDNN adds it as it writes the output
            y = self._forward(x, ops.convert_to_tensor(self.kernel), strips, use_strips,
                              ops.convert_to_tensor(self.bias) if self.use_bias else None)
            return self._finish(y, bias=False)
        return self._finish(self._onednn_conv(x, taps, strips, use_strips))

    def _taps_pay(self, x) -> bool:
        return (self.compute_dtype == "bfloat16"
                and x.shape[-1] * self.filters >= self.MIN_CHANNEL_PRODUCT)

    def _strips(self, x):
        """`(n, use)`: the strips of rows for `x`, and whether to cut it into them — a bool
        where `x`'s batch and height are known, else a scalar bool tensor."""
        import tensorflow as tf

        threads = intra_op_threads()
        b, h = x.shape[0], x.shape[1]
        if threads < 2 or (b is not None and b >= threads):
            return 1, False
        n = -(-threads // b) if b is not None else threads
        kh = self.kernel_size[0]
        if b is not None and h is not None:
            return n, -(-(h - kh + 1) // n) >= kh  # strips of at least kh rows
        shape = tf.shape(x)
        rows = (shape[1] - kh + 1 + n - 1) // n
        return n, (shape[0] < threads) & (rows >= kh)

    @staticmethod
    def _forward(x, kernel, strips: int, use_strips, bias=None):
        """The convolution (plus `bias`), in strips where `use_strips` (a bool or a bool tensor)."""
        import tensorflow as tf

        def plain():
            y = tf.nn.conv2d(x, kernel, strides=1, padding="VALID")
            return y if bias is None else tf.nn.bias_add(y, bias)

        if use_strips is False:
            return plain()
        if use_strips is True:
            return strip_conv(x, kernel, strips, bias)
        return tf.cond(use_strips, lambda: strip_conv(x, kernel, strips, bias), plain)

    def _onednn_conv(self, x, taps: bool, strips: int, use_strips):
        """The convolution with oneDNN's gradients, or the kernel's tap by tap (`taps`)."""
        import tensorflow as tf

        kh, kw = self.kernel_size

        @tf.custom_gradient
        def conv(x, kernel):  # (B, H, W, C), (kh, kw, C, F) -> (B, H-kh+1, W-kw+1, F)
            def grad(dy):
                dx = tf.raw_ops.Conv2DBackpropInput(
                    input_sizes=tf.shape(x), filter=kernel, out_backprop=dy,
                    strides=[1, 1, 1, 1], padding="VALID")
                if taps:
                    return dx, tap_kernel_gradient(x, dy, kh, kw)
                return dx, tf.raw_ops.Conv2DBackpropFilter(
                    input=x, filter_sizes=tf.shape(kernel), out_backprop=dy,
                    strides=[1, 1, 1, 1], padding="VALID")

            return self._forward(x, kernel, strips, use_strips), grad

        return conv(x, tf.convert_to_tensor(self.kernel))


def intra_op_threads() -> int:
    """The threads TensorFlow runs one operation on: its intra-op setting, else the CPUs this
    process may use."""
    import os

    import tensorflow as tf

    threads = tf.config.threading.get_intra_op_parallelism_threads()
    if threads:
        return threads
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def strip_conv(x, kernel, n: int, bias=None):
    """`tf.nn.conv2d(x, kernel, 1, "VALID")` (plus `bias`) of `x` `(B, H, W, C)` as one
    convolution of its `n` strips of `ceil((H - kh + 1) / n)` output rows gathered image by
    image along the batch: `(B·n, rows + kh - 1, W, C)`, one copy (the last strip repeats
    `x`'s last row where the rows do not part evenly); the result, `(B·n, rows, W', F)`, is
    `(B, n·rows, W', F)` reshaped without a copy, then cut to `H - kh + 1` rows (TensorFlow)."""
    import tensorflow as tf

    kh, kw, c, f = kernel.shape
    shape = tf.shape(x)
    dim = lambda i: x.shape[i] if x.shape[i] is not None else shape[i]  # noqa: E731
    b, h, w = dim(0), dim(1), dim(2)
    out = h - kh + 1
    rows = (out + n - 1) // n  # output rows a strip
    starts = tf.range(n) * rows  # each strip's first input row
    index = tf.minimum(starts[:, None] + tf.range(rows + kh - 1)[None, :], h - 1)  # (n, rows+kh-1)
    strips = tf.reshape(tf.gather(x, tf.reshape(index, [-1]), axis=1), [b * n, rows + kh - 1, w, c])
    y = tf.nn.conv2d(strips, kernel, strides=1, padding="VALID")  # (B·n, rows, W-kw+1, F)
    if bias is not None:
        y = tf.nn.bias_add(y, bias)
    y = tf.reshape(y, [b, n * rows, w - kw + 1, f])
    uneven = not isinstance(out, int) or n * rows != out
    return y[:, :out] if uneven else y  # (B, H-kh+1, W-kw+1, F)


def tap_kernel_gradient(x, dy, kh: int, kw: int):
    """The kernel gradient of a stride-1, valid `(kh, kw)` convolution of `x` `(B, H, W, C)`
    whose output's gradient is `dy` `(B, H-kh+1, W-kw+1, F)`, as `kh·kw` matrix products:
    `(kh, kw, C, F)` in `x`'s dtype (TensorFlow).

    Output pixel p = (b, r, c) reads input pixel (b, r+i, c+j) at tap (i, j). With both
    flattened on the input's grid (dy zero-padded to H, W), that pixel is row p + i·W + j: tap
    (i, j)'s gradient is `x_rows[i·W+j : i·W+j+n]ᵀ · dy_rows[:n]`, n the rows up to the last
    output pixel. The padding's zeros cost `(H·W) / ((H-kh+1)(W-kw+1))` more products (6% at
    66x66, 3x3).
    """
    import tensorflow as tf

    static = x.shape[:3].is_fully_defined()  # plain ints make one constant-bounds slice a tap
    b, h, w = x.shape[:3] if static else (tf.shape(x)[0], tf.shape(x)[1], tf.shape(x)[2])
    rows = b * h * w
    n = rows - (kh - 1) * w - (kw - 1)
    x_rows = tf.reshape(x, (rows, x.shape[-1]))  # (B·H·W, C)
    dy = tf.pad(dy, [[0, 0], [0, kh - 1], [0, kw - 1], [0, 0]])  # (B, H, W, F)
    dy_rows = tf.reshape(dy, (rows, dy.shape[-1]))[:n]  # (n, F)
    taps = [tf.matmul(x_rows[i * w + j: i * w + j + n], dy_rows, transpose_a=True)  # (C, F)
            for i in range(kh) for j in range(kw)]
    return tf.reshape(tf.stack(taps), (kh, kw, x.shape[-1], dy.shape[-1]))


def row_tap_kernel_gradient(x, dy, kh: int, kw: int):
    """The kernel gradient of a stride-1, valid `(kh, kw)` convolution of `x` `(B, H, W, C)`
    to few channels, whose output's gradient is `dy` `(B, H-kh+1, W-kw+1, F)`, as `kh` matrix
    products: `(kh, kw, C, F)` (TensorFlow).

    `dy`, zero-padded to the input's H and W, is stacked with its `kw` shifts along W as
    `kw·F` channels (`d[h, w, (j, f)] = dy[h, w - j, f]`); with both flattened on the input's
    grid, kernel row i's gradient is `x_rows[i·W : i·W + n]ᵀ · d_rows[:n]` (`(C, kw·F)`), n
    the rows up to the last output row. For few output channels that is `kw` times wider than
    `tap_kernel_gradient`'s products.
    """
    import tensorflow as tf

    static = x.shape[:3].is_fully_defined()
    b, h, w = x.shape[:3] if static else (tf.shape(x)[0], tf.shape(x)[1], tf.shape(x)[2])
    c, f = x.shape[-1], dy.shape[-1]
    rows = b * h * w
    n = rows - (kh - 1) * w
    d = tf.pad(dy, [[0, 0], [0, kh - 1], [0, kw - 1], [0, 0]])  # (B, H, W, F)
    shifts = tf.concat([tf.pad(d[:, :, :w - j], [[0, 0], [0, 0], [j, 0], [0, 0]])
                        for j in range(kw)], axis=-1)  # (B, H, W, kw·F)
    d_rows = tf.reshape(shifts, (rows, kw * f))[:n]  # (n, kw·F)
    x_rows = tf.reshape(x, (rows, c))  # (B·H·W, C)
    taps = [tf.matmul(x_rows[i * w: i * w + n], d_rows, transpose_a=True)  # (C, kw·F)
            for i in range(kh)]
    return tf.transpose(tf.reshape(tf.stack(taps), (kh, c, kw, f)), (0, 2, 1, 3))


@keras.saving.register_keras_serializable(package="ghibli_keras")
class ShallowConv2D(_FixedConv2D):
    """A stride-1, valid `Conv2D` for inputs with few channels, like the generator's 7x7 stem
    from RGB: the same weights, arguments and result as `Conv2D`.

    Under XLA it runs as a `1 x kw` convolution of the `kh` row-shifted slices of the input
    stacked along the channels (`kh * C` of them): XLA's CPU backend ran the paper
    generator's stem (7x7, 3 -> 64 channels at 256x256) forward and with its gradients 2.8x
    as fast so, the forward pass alone as fast; on an H200 (JAX) the paper generator's
    training pass at batch 8 in bf16 ran 1.06x as fast (benchmarks/RESULTS.md). Without XLA
    as `Conv2D`.

    Args:
        filters: output channels.
        kernel_size: int or (kh, kw).
        **kwargs: other `Conv2D` arguments, as for `NarrowConv2D`; `strides`, `padding`,
            `dilation_rate`, `groups` and `data_format` keep their defaults.

    Example:
    >>> import numpy as np
    >>> tuple(ShallowConv2D(8, 7)(np.zeros((1, 16, 20, 3), "float32")).shape)
    (1, 10, 14, 8)
    """

    def call(self, x):  # (B, H, W, C)
        if in_xla_context():
            return self._finish(self._row_stack_conv(x))
        return super().call(x)

    def _row_stack_conv(self, x):
        kh, kw = self.kernel_size
        h = ops.shape(x)[1] - kh + 1
        stacked = ops.concatenate([x[:, dy:dy + h] for dy in range(kh)], axis=-1)  # (B, H-kh+1, W, kh·C)
        kernel = ops.convert_to_tensor(self.kernel)  # (kh, kw, C, F)
        rows = ops.reshape(ops.transpose(kernel, (1, 0, 2, 3)), (1, kw, -1, self.filters))  # (1, kw, kh·C, F)
        return ops.conv(stacked, rows, strides=1, padding="valid")  # (B, H-kh+1, W-kw+1, F)


@keras.saving.register_keras_serializable(package="ghibli_keras")
class DownConv2D(_FixedConv2D):
    """A stride-2, valid `Conv2D` with a kernel of at most 4x4, like the generator's and the
    discriminator's down-sampling layers: the same weights, arguments and result as
    `Conv2D(filters, kernel_size, strides=2)`.

    When training under XLA (with static H and W) it runs as a 2x2, stride-1 convolution of
    `space_to_depth(2)` of the input (`4 * C` channels), the kernel zero-padded to 4x4 and
    split by phase: XLA's CPU backend ran the paper generator's first down-sampling (3x3, 64
    -> 128 channels at 256x256) forward and with its gradients 2.1x as fast so, though its
    forward pass alone 0.5x as fast — hence the plain `Conv2D` in inference, as without XLA;
    on an H200 (JAX) the paper discriminator's training pass at batch 8 in bf16 ran 1.10x as
    fast (benchmarks/RESULTS.md).

    Args:
        filters: output channels.
        kernel_size: int or (kh, kw), each at most 4.
        **kwargs: other `Conv2D` arguments, as for `NarrowConv2D`; `strides` is 2 and
            `padding`, `dilation_rate`, `groups` and `data_format` keep their defaults.

    Example:
    >>> import numpy as np
    >>> tuple(DownConv2D(8, 4)(np.zeros((1, 18, 20, 3), "float32"), training=True).shape)
    (1, 8, 9, 8)
    """

    FIXED_ARGUMENTS = {**_FixedConv2D.FIXED_ARGUMENTS, "strides": (2, 2)}
    #: The largest kernel side: the space-to-depth form's kernel is 2x2 blocks of 2x2 taps.
    MAX_KERNEL = 4

    def __init__(self, filters: int, kernel_size, **kwargs):
        sides = (kernel_size, kernel_size) if isinstance(kernel_size, int) else tuple(kernel_size)
        if not all(isinstance(k, int) and 1 <= k <= self.MAX_KERNEL for k in sides):
            raise ValueError(f"DownConv2D takes kernels of at most {self.MAX_KERNEL}x"
                             f"{self.MAX_KERNEL}; got kernel_size={kernel_size!r}")
        super().__init__(filters, kernel_size, **kwargs)

    def call(self, x, training=False):  # (B, H, W, C)
        static = None not in tuple(x.shape)[1:3]
        if training and static and in_xla_context():
            return self._finish(self._space_to_depth_conv(x))
        return super().call(x)

    def _space_to_depth_conv(self, x):
        kh, kw = self.kernel_size
        out = [(n - k) // 2 + 1 for n, k in zip(tuple(x.shape)[1:3], (kh, kw))]
        # Blocks (H', W') = out + 1: output i reads blocks i and i + 1. Crop or zero-pad x to
        # 2 (out + 1); what is cropped or added lies beyond the last output's window.
        hb, wb = out[0] + 1, out[1] + 1
        x = x[:, : 2 * hb, : 2 * wb]
        x = ops.pad(x, [[0, 0], [0, 2 * hb - x.shape[1]], [0, 2 * wb - x.shape[2]], [0, 0]])
        b, c = ops.shape(x)[0], x.shape[3]
        x = ops.reshape(x, (b, hb, 2, wb, 2, c))
        x = ops.reshape(ops.transpose(x, (0, 1, 3, 2, 4, 5)), (b, hb, wb, 4 * c))  # (B, H', W', (py, px, C))
        kernel = ops.convert_to_tensor(self.kernel)  # (kh, kw, C, F)
        m = self.MAX_KERNEL
        kernel = ops.pad(kernel, [[0, m - kh], [0, m - kw], [0, 0], [0, 0]])  # (4, 4, C, F)
        kernel = ops.reshape(kernel, (2, 2, 2, 2, c, self.filters))  # (block y, py, block x, px, C, F)
        kernel = ops.reshape(ops.transpose(kernel, (0, 2, 1, 3, 4, 5)), (2, 2, 4 * c, self.filters))
        return ops.conv(x, kernel, strides=1, padding="valid")  # (B, out_h, out_w, F)
