"""Steady-state training-step speed per preset, against this machine's convolution peak.

    python benchmarks/train_step.py [--quick] [--presets tiny,paper] [--batches 1,4]
                                    [--xla off,on] [--precision off,bf16,fp16] [--steps 5]
                                    [--spe 1,20] [--reference auto|conv|matmul]

For each combination it builds the preset's CycleGAN (synthetic data at the preset's crop
size), times `fit` steps after the first (compilation) and prints seconds per step, images/s
(photos + styles) and the achieved GFLOP/s from an analytic count of the step's convolution
FLOPs, as a fraction of the fp32 rate of a large 3x3 convolution measured in the same process
just before and just after each row (the host's load drifts; a peak measured once moved the
ratios by up to ±0.1).
On a GPU (`--reference auto` there, or `matmul` anywhere) the reference is instead the rate
of a large bfloat16 matrix product (issue 8's target 5: the fraction of it at batch 8, bf16 +
XLA) and the memory column the GPU's peak allocation during the row.
With several `--spe` values (`steps_per_execution`: steps run per call from Python) it also
prints how much faster each is than the first: the per-step Python and dispatch overhead.

Analytic count: benchmarks/flops.py.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from ghibli_keras import models  # noqa: E402
from ghibli_keras.config import get_preset  # noqa: E402
from ghibli_keras.cyclegan import CycleGAN  # noqa: E402
from flops import step_flops  # noqa: E402


POLICIES = {"off": "float32", "bf16": "mixed_bfloat16", "fp16": "mixed_float16"}  # --precision
PEAK_SHAPES = ((1, 128, 128, 256), (8, 32, 32, 512), (4, 64, 64, 256))  # (B, H, W, C)
ROW_PEAK_SECONDS = 1.0  # per shape, for the peak measured between rows


def conv_peak(seconds: float = 2.0) -> float:
    """fp32 GFLOP/s of large 3x3 convolutions (C -> C, SAME): the best of a few shapes."""
    best = 0.0
    for b, h, w, c in PEAK_SHAPES:
        x, k = tf.random.uniform([b, h, w, c]), tf.random.uniform([3, 3, c, c])
        conv = tf.function(tf.autograph.experimental.do_not_convert(lambda: tf.nn.conv2d(x, k, 1, "SAME")))
        conv()
        n, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            conv().numpy()
            n += 1
        best = max(best, n * 2.0 * b * h * w * 9 * c * c / (time.perf_counter() - start) / 1e9)
    return best


MATMUL_SIZE = 8192  # (n, n) @ (n, n) bf16: enough work to keep a GPU's tensor cores busy


def matmul_peak(seconds: float = 2.0, size: int = MATMUL_SIZE) -> float:
    """bf16 GFLOP/s of an `(size, size) @ (size, size)` product (the GPU target's reference)."""
    a = tf.cast(tf.random.uniform([size, size]), tf.bfloat16)
    b = tf.cast(tf.random.uniform([size, size]), tf.bfloat16)
    product = tf.function(tf.autograph.experimental.do_not_convert(lambda: tf.matmul(a, b)[0, 0]))
    product().numpy()  # one element back: waits for the product without copying it
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        product().numpy()
        n += 1
    return n * 2.0 * size**3 / (time.perf_counter() - start) / 1e9


class PeakBeside:
    """The fp32 convolution peak measured just before and just after each measurement: a
    measurement's peak is the mean of the two, and its 'after' is the next one's 'before' (the
    host's load drifts; a peak measured once moved the ratios by up to ±0.1).
    `measure(seconds)` gives one peak (`conv_peak` by default); `around(measurement)` returns
    `(measurement(), its peak)`."""

    def __init__(self, seconds: float = 1.0, measure=None):
        self.seconds = seconds
        self.measure = measure or conv_peak
        self.before = self.measure(seconds)

    def around(self, measurement):
        """(measurement(), the peak beside it)."""
        value = measurement()
        after = self.measure(self.seconds)
        peak, self.before = (self.before + after) / 2, after
        return value, peak


def bf16_supported() -> bool:
    from ghibli_keras.strategy import cpu_has_bf16

    return cpu_has_bf16()


def peak_rss_gib() -> float:
    """The process's peak resident memory so far (Linux reports ru_maxrss in KiB)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def peak_gpu_gib(reset: bool = False) -> float:
    """The first GPU's peak allocation since the last reset (`reset=True`: reset it, give 0)."""
    if reset:
        tf.config.experimental.reset_memory_stats("GPU:0")
        return 0.0
    return tf.config.experimental.get_memory_info("GPU:0")["peak"] / 2**30


def time_step(config, batch: int, xla: bool, precision: str, steps: int, spe: int = 1) -> float:
    """Median seconds per step, `steps` executions of `spe` steps after the compiling one."""
    keras.config.set_dtype_policy(POLICIES[precision])
    try:
        size = config.data.image_size
        model = CycleGAN(**models.build_networks(config.model), pool_size=config.train.pool_size,
                         image_size=size)
        model.compile(lambda_identity=config.train.lambda_identity, gan_loss=config.train.gan_loss,
                      jit_compile=xla, steps_per_execution=spe)
        x = tf.random.uniform([batch, size, size, 3], -1, 1)
        data = tf.data.Dataset.from_tensors((x, x)).repeat()
        times = []

        class Clock(keras.callbacks.Callback):
            def on_train_batch_end(self, b, logs=None):
                times.append(time.perf_counter())

        model.fit(data, steps_per_epoch=(steps + 2) * spe, epochs=1, verbose=0,
                  callbacks=[Clock()], shuffle=False)  # Clock ticks once per execution
        return float(np.median(np.diff(times[1:]))) / spe  # after the first (compiling) one
    finally:
        keras.config.set_dtype_policy("float32")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny preset only, 3 steps")
    parser.add_argument("--presets", default="tiny,kaggle,paper")
    parser.add_argument("--batches", default="1,4")
    parser.add_argument("--xla", default="off,on")
    parser.add_argument("--precision", default="off,bf16")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--spe", default="1", help="steps_per_execution values, e.g. 1,20")
    parser.add_argument("--reference", choices=("auto", "conv", "matmul"), default="auto",
                        help="what each row is a fraction of: the fp32 3x3 convolution peak, or a "
                             "bf16 matmul's rate (auto: matmul on a GPU)")
    parser.add_argument("--matmul-size", type=int, default=MATMUL_SIZE)
    args = parser.parse_args()
    gpu = bool(tf.config.list_logical_devices("GPU"))
    matmul = args.reference == "matmul" or (args.reference == "auto" and gpu)
    presets = ["tiny"] if args.quick else args.presets.split(",")
    batches = [int(b) for b in args.batches.split(",")]
    xlas, precisions = args.xla.split(","), args.precision.split(",")
    spes = [int(s) for s in args.spe.split(",")]
    steps = 3 if args.quick else args.steps
    # The first measurement in a process runs slow (allocator and thread-pool warm-up: up to
    # 1.5x here), which would bias whichever row comes first: one throwaway run first.
    time_step(get_preset(presets[0]), batches[0], xlas[0] == "on", precisions[0], 2)
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, bf16 instructions: "
          f"{'yes' if bf16_supported() else 'no'}; TensorFlow {tf.__version__}, Keras {keras.__version__}")
    if matmul:
        print(f"peak: a ({args.matmul_size}, {args.matmul_size}) @ ({args.matmul_size}, "
              f"{args.matmul_size}) bf16 matmul, GFLOP/s, the mean of its measurements just "
              f"before and just after the row")
    else:
        print(f"peak: fp32 3x3 convolution (best of {len(PEAK_SHAPES)} large shapes), GFLOP/s, "
              f"the mean of its measurements just before and just after the row")
    memory, memory_label = peak_rss_gib, "peak RSS"
    if gpu:
        memory, memory_label = peak_gpu_gib, "peak GPU"
        print(f"peak GPU: the GPU's peak allocation during the row ({tf.config.list_logical_devices('GPU')[0].name})")
    else:
        print("peak RSS: the process's peak resident memory after the row (rows run in order)")
    print(f"{'preset':8} {'batch':>5} {'xla':>4} {'prec':>5} {'spe':>4} {'s/step':>8} {'img/s':>7} "
          f"{'GFLOP/step':>10} {'GFLOP/s':>8} {'peak':>6} {'of peak':>7} {memory_label:>9}")
    measure = (lambda seconds: matmul_peak(seconds, args.matmul_size)) if matmul else None
    peaks = PeakBeside(ROW_PEAK_SECONDS, measure)
    for name in presets:
        config = get_preset(name)
        for batch in batches:
            flops = step_flops(config, batch)
            for xla in xlas:
                for precision in precisions:
                    first = None  # (spe, seconds) of the first --spe value
                    for spe in spes:
                        if gpu:
                            peak_gpu_gib(reset=True)
                        (seconds, rss), peak = peaks.around(lambda: (
                            time_step(config, batch, xla == "on", precision, steps, spe), memory()))
                        rate = flops / seconds / 1e9
                        gain = "" if first is None else f"  {first[1] / seconds:.2f}x as fast as spe {first[0]}"
                        first = first or (spe, seconds)
                        print(f"{name:8} {batch:5d} {xla:>4} {precision:>5} {spe:4d} {seconds:8.3f} "
                              f"{2 * batch / seconds:7.1f} {flops / 1e9:10.1f} {rate:8.1f} "
                              f"{peak:6.1f} {rate / peak:7.2f} {rss:7.2f} GiB{gain}", flush=True)


if __name__ == "__main__":
    main()
