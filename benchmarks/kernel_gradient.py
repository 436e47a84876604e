"""What `TapGradConv2D` gains: the kernel gradient of a stride-1 convolution as `kh·kw` matrix
products of row slices (`layers.tap_kernel_gradient`) against TensorFlow's own
(`Conv2DBackpropFilter`, oneDNN on a CPU), without XLA, in the same process.

    python benchmarks/kernel_gradient.py [--quick] [--preset paper] [--size 256] [--seconds 2]
                                         [--rounds 3]

Prints, for each distinct `TapGradConv2D` of the preset's generator and discriminator (batch 1,
as a training step runs), both kernel gradients' milliseconds and GFLOP/s in bf16 and fp32 and
the ratio, with whether this layer takes the tap form (bf16, `C * filters` at least
`TapGradConv2D.MIN_CHANNEL_PRODUCT`); then the whole generator's and discriminator's training
pass in bf16 with and without the tap form (the same network and weights). Rounds alternate the
variants, so drifting load hits all; each figure is the median over the rounds.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from pathlib import Path
from unittest import mock

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from ghibli_keras import models  # noqa: E402
from ghibli_keras.config import get_preset  # noqa: E402
from ghibli_keras.layers import TapGradConv2D, tap_kernel_gradient  # noqa: E402
from flops import conv_shapes  # noqa: E402
from profile_step import train_pass  # noqa: E402
from train_step import bf16_supported  # noqa: E402
from xla_forms import alternate  # noqa: E402

DTYPES = (("bf16", tf.bfloat16), ("fp32", tf.float32))


def kernel_gradients(in_shape, out_shape, kernel, dtype):
    """Both kernel gradients of one convolution, as compiled functions on random data."""
    rng = np.random.default_rng(0)
    x = tf.cast(rng.normal(size=in_shape).astype("float32"), dtype)
    dy = tf.cast(rng.normal(size=out_shape).astype("float32"), dtype)
    kh, kw = kernel
    sizes = [kh, kw, in_shape[-1], out_shape[-1]]
    native = tf.function(lambda: tf.raw_ops.Conv2DBackpropFilter(
        input=x, filter_sizes=sizes, out_backprop=dy, strides=[1, 1, 1, 1], padding="VALID"))
    taps = tf.function(lambda: tap_kernel_gradient(x, dy, kh, kw))
    return [lambda f=f: f().numpy() for f in (native, taps)]


def without_taps():
    """Traces TapGradConv2D as `Conv2D` (TensorFlow's own kernel gradient)."""
    return mock.patch.object(TapGradConv2D, "MIN_CHANNEL_PRODUCT", float("inf"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny preset, 1 round of 0.3 s")
    parser.add_argument("--preset", default="paper")
    parser.add_argument("--size", type=int, default=256, help="picture side (256)")
    parser.add_argument("--seconds", type=float, default=2.0, help="per measurement (2)")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    preset = "tiny" if args.quick else args.preset
    size = 32 if args.quick else args.size
    seconds, rounds = (0.3, 1) if args.quick else (args.seconds, args.rounds)

    keras.config.set_dtype_policy("mixed_bfloat16")
    nets = models.build_networks(get_preset(preset).model, seed=0)
    plain = models.build_networks(get_preset(preset).model, seed=0)
    print(f"{preset} preset, {size}x{size}, batch 1, no XLA; bf16 instructions: "
          f"{'yes' if bf16_supported() else 'no'}; TensorFlow {tf.__version__}")
    print(f"{'layer':48} {'prec':4} {'oneDNN ms':>9} {'GFLOP/s':>8} {'taps ms':>8} {'GFLOP/s':>8} "
          f"{'ratio':>6}  used")
    seen = set()
    for net in (nets["generator_g"], nets["discriminator_x"]):
        for layer, in_shape, out_shape in conv_shapes(net, size):
            key = (in_shape, out_shape, layer.kernel_size)
            if not isinstance(layer, TapGradConv2D) or key in seen:
                continue
            seen.add(key)
            kh, kw = layer.kernel_size
            flops = 2.0 * np.prod(out_shape) * kh * kw * in_shape[-1]
            used = in_shape[-1] * layer.filters >= TapGradConv2D.MIN_CHANNEL_PRODUCT
            name = f"{net.name}/{layer.name} {kh}x{kw} {in_shape[1]}x{in_shape[2]}x{in_shape[3]}->{layer.filters}"
            for prec, dtype in DTYPES:
                native, taps = alternate(kernel_gradients(in_shape, out_shape, layer.kernel_size,
                                                          dtype), rounds, seconds)
                print(f"{name:48} {prec:4} {native * 1e3:9.2f} {flops / native / 1e9:8.0f} "
                      f"{taps * 1e3:8.2f} {flops / taps / 1e9:8.0f} {native / taps:6.2f}  "
                      f"{'yes' if used and prec == 'bf16' else 'no'}")

    x = tf.constant(np.random.default_rng(1).uniform(-1, 1, (1, size, size, 3)).astype("float32"))
    print("\ntraining pass (forward + gradients), bf16, batch 1")
    for key in ("generator_g", "discriminator_x"):
        with_taps, net_plain = nets[key], plain[key]
        net_plain.set_weights(with_taps.get_weights())
        runs = []
        for n, context in ((net_plain, without_taps()), (with_taps, contextlib.nullcontext())):
            run = train_pass(lambda v, n=n: n(v, training=True), n.trainable_variables, x, xla=False)
            with context:
                run()  # traced now: the form is chosen while tracing
            runs.append(run)
        before, after = alternate(runs, rounds, seconds)
        print(f"  {key:16} oneDNN's kernel gradients {before * 1e3:8.1f} ms   tap form "
              f"{after * 1e3:8.1f} ms   ratio {before / after:.3f}")


if __name__ == "__main__":
    main()
