"""Where a training step's time goes: each convolution of the generator and discriminator
timed alone, beside the whole networks and the whole step, each against this machine's fp32
3×3-convolution peak measured in the same process just before and after it (the `peak` column:
the host's load drifts, and a peak measured once moved the ratios by up to ±0.1).

    python benchmarks/profile_step.py [--quick] [--preset paper] [--xla on|off] [--batch 1]
    python benchmarks/profile_step.py --forward [--size 1024] [--batch 4]   # what translate runs

For every distinct convolution shape of G and D (e.g. the 18 residual-block convolutions of
the paper generator share one shape) it times forward + both gradients, XLA-compiled like the
step, and prints FLOPs, GFLOP/s, the fraction of the peak and the share of the network's
convolution time. Then G and D as a whole (forward + gradients), so the difference is what the
non-convolution layers (instance norm, reflection padding, activations) cost, and the
predicted step (6 G/F passes, 6 D passes as the step runs them) against the measured one:
the remainder is the optimizers, the image pool and the loss arithmetic.

`--forward` profiles inference instead: the generator's forward pass alone (convolutions and
the whole network), at `--size` (the preset's crop by default), no discriminator, no step.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from ghibli_keras import models  # noqa: E402
from ghibli_keras.config import get_preset  # noqa: E402
from flops import conv_groups, layer_flops, step_flops  # noqa: E402
from train_step import POLICIES, PeakBeside, peak_rss_gib, time_step  # noqa: E402


def timed(fn, seconds: float) -> float:
    """Median seconds of `fn()` over about `seconds`, after one call that compiles."""
    fn()
    times, start = [], time.perf_counter()
    while time.perf_counter() - start < seconds or len(times) < 3:
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def train_pass(net_fn, variables, x, xla: bool):
    """forward + gradients for the inputs and the variables, like a training step. The loss is
    mean(y²): with mean(y) the output's gradient is a constant, which TensorFlow and XLA
    simplify (one 3x3 convolution's pass then took 25 ms instead of 36-41 ms)."""

    @tf.function(jit_compile=xla)
    def run():
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = net_fn(x)
            loss = tf.reduce_mean(tf.square(tf.cast(y, tf.float32)))
        grads = tape.gradient(loss, [x, *variables])
        return tf.add_n([tf.reduce_sum(g) for g in grads])  # one scalar back to the host

    return lambda: run().numpy()


def forward_pass(net_fn, variables, x, xla: bool):
    """the forward pass alone, as inference runs it."""

    @tf.function(jit_compile=xla)
    def run():
        return tf.reduce_sum(tf.cast(net_fn(x), tf.float32))  # one scalar back to the host

    return lambda: run().numpy()


def conv_table(net: keras.Model, size: int, batch: int, xla: bool, seconds: float, peaks: PeakBeside,
               pass_fn=train_pass):
    """[(description, count, forward FLOPs each, seconds each, peak beside)] for each distinct
    conv shape."""
    rows = []
    for desc, members in conv_groups(net, size):
        first, i, o = members[0]
        layer = type(first).from_config(first.get_config())
        x = tf.random.uniform((batch, *i[1:]))
        layer.build(x.shape)
        flops = batch * layer_flops(layer, i, o)
        t, peak = peaks.around(lambda: timed(pass_fn(layer, layer.trainable_variables, x, xla), seconds))
        rows.append((desc, len(members), flops, t, peak))
    return rows


def network_time(net: keras.Model, size: int, batch: int, xla: bool, seconds: float,
                 pass_fn=train_pass) -> float:
    x = tf.random.uniform((batch, size, size, 3), -1, 1)
    training = pass_fn is train_pass
    return timed(pass_fn(lambda v: net(v, training=training), net.trainable_variables, x, xla), seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny preset, 1 s per measurement")
    parser.add_argument("--preset", default="paper")
    parser.add_argument("--xla", choices=["on", "off"], default="on")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=4.0, help="per measurement (4)")
    parser.add_argument("--forward", action="store_true",
                        help="profile the generator's forward pass (inference) instead of the step")
    parser.add_argument("--size", type=int, help="picture side (the preset's crop)")
    parser.add_argument("--precision", choices=list(POLICIES), default="off",
                        help="off: float32; bf16: mixed_bfloat16, as training's --mixed-precision")
    args = parser.parse_args()
    preset = "tiny" if args.quick else args.preset
    seconds = 1.0 if args.quick else args.seconds
    xla = args.xla == "on"
    config = get_preset(preset)
    size, batch = args.size or config.data.image_size, args.batch
    peaks = PeakBeside(1.0)
    print(f"{preset} preset, {size}x{size}, batch {batch}, XLA {args.xla}, {POLICIES[args.precision]}; "
          f"'peak': the fp32 3x3 convolution rate (GFLOP/s) measured just before and after each row")
    keras.config.set_dtype_policy(POLICIES[args.precision])  # the networks' layers keep it
    nets = models.build_networks(config.model)
    totals = {}
    pass_fn, passes, what = ((forward_pass, 1, "forward") if args.forward
                             else (train_pass, 3, "forward + gradients"))
    for name in ("generator_g",) if args.forward else ("generator_g", "discriminator_x"):
        net = nets[name]
        rows = conv_table(net, size, batch, xla, seconds, peaks, pass_fn)
        conv_total = sum(row[1] * row[3] for row in rows)
        print(f"\n{name}: convolutions, {what}")
        print(f"  {'layer':40} {'n':>3} {'GFLOP':>7} {'ms':>8} {'GFLOP/s':>8} {'peak':>6} {'of peak':>7} "
              f"{'share':>6}")
        for desc, count, flops, t, peak in rows:
            rate = passes * flops / t / 1e9
            print(f"  {desc:40} {count:3d} {passes * flops / 1e9:7.2f} {1e3 * t:8.1f} {rate:8.1f} "
                  f"{peak:6.1f} {rate / peak:7.2f} {count * t / conv_total:6.1%}")
        # the convolutions' sum against their rows' peaks, weighted by each row's share of the time
        peak = sum(row[1] * row[3] * row[4] for row in rows) / conv_total
        whole, whole_peak = peaks.around(lambda: network_time(net, size, batch, xla, seconds, pass_fn))
        flops = sum(passes * row[1] * row[2] for row in rows)
        print(f"  sum of the convolutions alone: {conv_total:.3f} s ({flops / conv_total / 1e9:.1f} GFLOP/s, "
              f"{flops / conv_total / 1e9 / peak:.2f} of peak)")
        print(f"  the whole network:             {whole:.3f} s ({flops / whole / 1e9:.1f} GFLOP/s, "
              f"{flops / whole / 1e9 / whole_peak:.2f} of peak {whole_peak:.1f}); non-convolution layers "
              f"{(whole - conv_total) / whole:.0%} of it")
        totals[name] = whole
    if args.forward:
        print(f"\npeak resident memory: {peak_rss_gib():.2f} GiB")
        return
    step, peak = peaks.around(lambda: time_step(config, batch, xla, args.precision, steps=2 if args.quick else 3))
    # The step's passes: G and F run 6 times in all with the identity loss (4 without), each a
    # full train pass. The discriminators run 2 times in the generator update (forward + input
    # gradients) and 4 times in their own (forward + weight gradients): 12 forwards, i.e. about
    # 4 train passes (forward + both gradients = 3 forwards).
    passes_g = 6 if config.train.lambda_identity > 0 else 4
    predicted = passes_g * totals["generator_g"] + 4 * totals["discriminator_x"]
    print(f"\nwhole step: {step:.3f} s measured ({step_flops(config, batch) / step / 1e9:.1f} GFLOP/s, "
          f"{step_flops(config, batch) / step / 1e9 / peak:.2f} of peak {peak:.1f}); the networks' passes "
          f"predict {predicted:.3f} s, so {max(step - predicted, 0) / step:.0%} is the rest "
          f"(optimizers, pool, losses)")
    print(f"peak resident memory: {peak_rss_gib():.2f} GiB")


if __name__ == "__main__":
    main()
