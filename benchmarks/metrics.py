"""How fast FID/KID/MiFID are: feature extraction, scoring 7,000 images, and sqrtm's share.

    python benchmarks/metrics.py [--quick] [--images 7000] [--batch-size 32]
                                 [--inception-weights PATH]

Builds 256×256 JPEG shards (the sample crops upscaled, as Kaggle's photos), then measures in
one run:
  - the InceptionV3 forward pass alone on in-memory batches (images/s), with and without XLA;
  - `features.extract` from the shards (read, decode, resize to 299, forward) in images/s;
  - the time to score `--images` generated images against 300 real ones (Kaggle's sizes:
    7,038 photos translated vs 300 Monet paintings): extraction + FID + KID + MiFID;
  - the share of that time spent in scipy's `sqrtm` (one 2048×2048 matrix square root).
Speed does not depend on the weights: without --inception-weights the network is randomly
initialised (the scores printed are then meaningless; the times are not).
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

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from scipy import linalg  # noqa: E402

from ghibli_keras import data, features, images, metrics  # noqa: E402

SAMPLE = Path(__file__).resolve().parents[1] / "tfrecords" / "sample"
SIZE = 256
REAL_IMAGES = 300


def make_shards(folder: Path, count: int) -> str:
    crops = list(data.load_tfrecords(SAMPLE / "photo").as_numpy_iterator())
    with data.ShardWriter(folder, "photo", shard_size=512) as writer:
        for i in range(count):
            image = images.resize_and_center_crop(crops[i % len(crops)], SIZE)
            writer.write(data.make_example(f"{i}", data.encode_jpeg(image), "photo"))
    return str(folder)


def forward_rate(extractor, batch_size: int, jit: bool, seconds: float = 10.0) -> float:
    batch = tf.random.uniform([batch_size, features.INCEPTION_SIZE, features.INCEPTION_SIZE, 3], 0, 255)
    fn = extractor._xla if jit else extractor._fn
    fn(batch).numpy()
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        fn(batch).numpy()
        n += batch_size
    return n / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="600 images instead of 7,000")
    parser.add_argument("--images", type=int, default=7000)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--inception-weights", default=None)
    args = parser.parse_args()
    count = 600 if args.quick else args.images
    extractor = features.inception(args.inception_weights)
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores; TensorFlow {tf.__version__}")
    print(f"network: {extractor.name}")

    plain = forward_rate(extractor, args.batch_size, jit=False)
    xla = forward_rate(extractor, args.batch_size, jit=True)
    print(f"InceptionV3 forward pass, batch {args.batch_size}: {plain:.1f} images/s, "
          f"with XLA {xla:.1f} images/s ({xla / plain:.2f}x)")

    with tempfile.TemporaryDirectory() as tmp:
        shards = make_shards(Path(tmp) / "fake", count)
        real_source = np.stack(list(data.load_tfrecords(SAMPLE / "ghibli").take(REAL_IMAGES)))
        real = features.extract(real_source, extractor, batch_size=args.batch_size)
        start = time.perf_counter()
        fake = features.extract(shards, extractor, batch_size=args.batch_size, cache=False)
        extraction = time.perf_counter() - start
    start = time.perf_counter()
    fid = metrics.fid(real, fake)
    kid = metrics.kid(real, fake)
    mifid = metrics.mifid(real, fake, fid_value=fid)
    scoring = time.perf_counter() - start
    real_stats, fake_stats = metrics.statistics(real), metrics.statistics(fake)
    start = time.perf_counter()
    linalg.sqrtm(real_stats.sigma @ fake_stats.sigma)
    sqrtm = time.perf_counter() - start
    total = extraction + scoring
    print(f"features.extract from 256x256 JPEG shards: {count / extraction:.1f} images/s "
          f"({count / extraction / plain:.2f} of the bare forward pass)")
    print(f"scoring {count} images against {REAL_IMAGES}: {total:.1f} s = extraction "
          f"{extraction:.1f} s + FID/KID/MiFID {scoring:.1f} s")
    print(f"sqrtm (2048x2048): {sqrtm:.2f} s, {sqrtm / total:.1%} of the total")
    print(f"(scores, meaningful only with real weights: FID {fid:.2f}, KID {kid.mean:.4f}, "
          f"MiFID {mifid:.2f})")


if __name__ == "__main__":
    main()
