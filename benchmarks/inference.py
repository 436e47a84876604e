"""Translation speed: the Keras generator and the exported SavedModel, XLA off and on, in
float32 and bfloat16.

    python benchmarks/inference.py [--quick] [--preset paper] [--seconds 20] [--sizes 256,1024]
                                   [--precisions off,bf16]

For 256×256 and 1024×1024 pictures (batch chosen as `translate` does: as many as fit in
`inference.BATCH_PIXELS`), prints images/s of
  - the Keras generator (`inference.Translator`, as `ghibli-keras translate` runs it),
  - the SavedModel's `translate` signature (float in, float out) and `serving_default`
    (JPEG bytes in and out, one request of the same batch), loaded with `tf.saved_model.load`,
with XLA off and on, in float32 (`off`) and, where the CPU has bf16 instructions (or when
asked), in mixed_bfloat16 (`bf16`: `translate --mixed-precision bf16`, `export
--mixed-precision bf16`), and the achieved GFLOP/s of the network's forward pass (analytic
count) against the fp32 peak. The variants of a size and the reference convolution are measured in alternating rounds
(median over the rounds), so load that drifts during the run hits them all alike: each row's
"of peak" divides by the median of the peaks measured between that size's rounds.
The generator is randomly initialised: speed does not depend on the weights.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from ghibli_keras import export, inference, models  # noqa: E402
from ghibli_keras.config import get_preset  # noqa: E402
from flops import conv_flops  # noqa: E402
from train_step import POLICIES, conv_peak  # noqa: E402

KAGGLE_PHOTOS = 7038  # photo_jpg of gan-getting-started, all 256x256
PEAK_SECONDS = 1.0  # per reference shape, in each round


def images_per_second(fn, batch, seconds: float, warm_up: bool = True) -> float:
    if warm_up:
        fn(batch)  # trace / compile
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds or n == 0:
        fn(batch)
        n += len(batch)
    return n / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny preset, 256 only, 3 s each")
    parser.add_argument("--preset", default="paper")
    parser.add_argument("--seconds", type=float, default=20.0, help="per variant, over all rounds (20)")
    parser.add_argument("--rounds", type=int, default=4, help="alternating rounds (4)")
    parser.add_argument("--sizes", default="256,1024", help="picture sides (256,1024)")
    parser.add_argument("--precisions", help="of off,bf16 (off, and bf16 where the CPU has it)")
    args = parser.parse_args()
    from ghibli_keras.strategy import cpu_has_bf16

    precisions = (args.precisions or ("off,bf16" if cpu_has_bf16() else "off")).split(",")
    bad = [p for p in precisions if p not in POLICIES]
    if bad:
        parser.error(f"--precisions: {bad[0]!r} is not one of {', '.join(POLICIES)}")
    preset = "tiny" if args.quick else args.preset
    sizes = (256,) if args.quick else tuple(int(s) for s in args.sizes.split(","))
    rounds = 1 if args.quick else args.rounds
    seconds = 3.0 if args.quick else args.seconds
    generator = models.build_networks(get_preset(preset).model, seed=0)["generator_g"]
    generators = {p: generator if p == "off" else inference.with_policy(generator, POLICIES[p])
                  for p in precisions}
    variants = [(p, xla) for p in precisions for xla in (False, True)]
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores; TensorFlow {tf.__version__}")
    print(f"{preset} preset generator ({generator.count_params():,} parameters)")
    print("reference: fp32 3x3 convolution peak (forward, best of large shapes), measured in "
          "each round")
    print(f"{'size':>9} {'batch':>5} {'prec':>4} {'xla':>4}  {'keras img/s':>11} {'translate':>10} "
          f"{'serving':>8}  {'GFLOP/img':>9} {'keras GFLOP/s':>13} {'peak':>6} {'of peak':>7} "
          f"{'serving':>7}")
    best_256 = 0.0
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        for size in sizes:
            batch_size = max(1, inference.BATCH_PIXELS // (size * size))
            pixels = rng.integers(0, 256, (batch_size, size, size, 3)).astype(np.uint8)
            floats = pixels.astype(np.float32) / 127.5 - 1.0
            jpegs = tf.constant([tf.io.encode_jpeg(p, quality=95).numpy() for p in pixels])
            flops = conv_flops(generator, size)
            rates = {}  # (precision, xla, "keras" | "translate" | "serving") -> [images/s per round]
            calls = {}
            for precision, xla in variants:
                net = generators[precision]
                keras_fn = inference.Translator(
                    tf.function(lambda x, net=net: net(x, training=False), jit_compile=xla),
                    models.size_multiple(net), "keras")
                folder = Path(tmp) / f"{size}-{precision}-{xla}"
                export.export(net, folder, jit_compile=xla)
                loaded = tf.saved_model.load(str(folder))
                translate = loaded.signatures["translate"]
                serving = loaded.signatures["serving_default"]
                floats_t = tf.constant(floats)
                calls[precision, xla, "keras"] = keras_fn
                calls[precision, xla, "translate"] = lambda b, f=translate: f(images=floats_t)
                calls[precision, xla, "serving"] = lambda b, f=serving: f(image_bytes=jpegs)
            peaks = []
            for round_ in range(rounds):  # alternate the variants: drifting load hits them all
                peaks.append(conv_peak(PEAK_SECONDS))
                for key, fn in calls.items():
                    rate = images_per_second(fn, floats, seconds / rounds, warm_up=round_ == 0)
                    rates.setdefault(key, []).append(rate)
            peak = float(np.median(peaks))
            for precision, xla in variants:
                keras_rate, saved_rate, serving_rate = (float(np.median(rates[precision, xla, kind]))
                                                        for kind in ("keras", "translate", "serving"))
                print(f"{size:4d}x{size:<4d} {batch_size:5d} {precision:>4} {'on' if xla else 'off':>4}  "
                      f"{keras_rate:11.2f} {saved_rate:10.2f} {serving_rate:8.2f}  "
                      f"{flops / 1e9:9.1f} {keras_rate * flops / 1e9:13.1f} {peak:6.1f} "
                      f"{keras_rate * flops / 1e9 / peak:7.2f} {serving_rate * flops / 1e9 / peak:7.2f}",
                      flush=True)
                if size == 256:
                    best_256 = max(best_256, keras_rate, saved_rate, serving_rate)
    if best_256:
        print(f"{KAGGLE_PHOTOS:,} Kaggle photos (256x256) at the best rate above: "
              f"{KAGGLE_PHOTOS / best_256 / 60:.0f} min for the network alone")


if __name__ == "__main__":
    main()
