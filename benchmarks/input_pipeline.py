"""Input pipeline throughput against the raw JPEG-decode ceiling, measured in the same run.

    python benchmarks/input_pipeline.py [--quick] [--batch-size 8] [--images 1024]

Builds 256×256 JPEG shards (the sample crops upscaled; two domains), then measures:
  - ceiling: TFRecordDataset -> parse -> tf.io.decode_jpeg, in parallel on all cores;
  - pipeline: `data.training_dataset` (the same plus resize 286, random crop 256, flip, scale to
    [-1, 1], zip of both domains, batching), counting both domains' images;
and prints images/s for each and their ratio (target: >= 0.7).
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

from ghibli_keras import data, images  # noqa: E402

SAMPLE = Path(__file__).resolve().parents[1] / "tfrecords" / "sample"
SIZE = 256


def make_shards(folder: Path, count: int) -> tuple[str, str]:
    """Two domains of `count` 256×256 JPEGs each, 4 shards per domain."""
    for domain in ("photo", "ghibli"):
        crops = list(data.load_tfrecords(SAMPLE / domain).as_numpy_iterator())
        with data.ShardWriter(folder / domain, domain, shard_size=max(1, count // 4)) as writer:
            for i in range(count):
                image = images.resize_and_center_crop(crops[i % len(crops)], SIZE)
                writer.write(data.make_example(f"{i}", data.encode_jpeg(image), domain))
    return str(folder / "photo"), str(folder / "ghibli")


def rate(dataset: tf.data.Dataset, images_per_element: int, elements: int, warmup: int) -> float:
    """Images per second over `elements` elements after `warmup` elements."""
    iterator = iter(dataset)
    for _ in range(warmup):
        next(iterator)
    start = time.perf_counter()
    for _ in range(elements):
        next(iterator)
    return elements * images_per_element / (time.perf_counter() - start)


def decode_ceiling(photos: str, styles: str, batch_size: int) -> tf.data.Dataset:
    files = data.list_shards(photos) + data.list_shards(styles)
    ds = tf.data.TFRecordDataset(files, num_parallel_reads=tf.data.AUTOTUNE).repeat()
    ds = ds.map(
        lambda r: data.decode_image(data.parse_example(r)["image"]),
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=False,
    )
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def without_resize(photos: str, styles: str, batch_size: int) -> tf.data.Dataset:
    """Profile: the pipeline's own work minus the final bilinear resize (window decode + flip)."""
    files = data.list_shards(photos) + data.list_shards(styles)
    seeds = tf.data.Dataset.random(seed=0).batch(2)
    ds = tf.data.Dataset.zip((tf.data.TFRecordDataset(files, num_parallel_reads=8).repeat(), seeds))

    def window(record, seed):
        jpeg = data.parse_example(record)["image"]
        side = tf.reduce_min(tf.io.extract_jpeg_shape(jpeg)[:2]) * 256 // 286
        crop = tf.io.decode_and_crop_jpeg(jpeg, tf.stack([tf.cast(seed[0] % 8, tf.int32), 0, side, side]), channels=3)
        return tf.reverse(crop, axis=[1])

    ds = ds.map(window, num_parallel_calls=tf.data.AUTOTUNE, deterministic=False)
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer images, for a smoke run")
    parser.add_argument("--batch-size", type=int, default=8, help="global batch size (8)")
    parser.add_argument("--images", type=int, default=1024, help="images per domain (1024)")
    args = parser.parse_args()
    per_domain = 128 if args.quick else args.images
    batches = 16 if args.quick else 96
    warmup = 4 if args.quick else 16
    b = args.batch_size
    with tempfile.TemporaryDirectory() as tmp:
        photos, styles = make_shards(Path(tmp), per_domain)
        ceiling = rate(decode_ceiling(photos, styles, 2 * b), 2 * b, batches, warmup)
        pipeline = rate(data.training_dataset(photos, styles, b), 2 * b, batches, warmup)
        no_resize = rate(without_resize(photos, styles, 2 * b), 2 * b, batches, warmup)
        ceiling2 = rate(decode_ceiling(photos, styles, 2 * b), 2 * b, batches, warmup)
    ceiling = max(ceiling, ceiling2)  # the better of two runs around the pipeline
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
          f"TensorFlow {tf.__version__}")
    print(f"256x256 JPEG shards, batch {b} per domain, {batches} batches")
    print(f"  decode ceiling (parse + decode_jpeg):      {ceiling:8.1f} images/s")
    print(f"  training pipeline (decode + jitter + zip): {pipeline:8.1f} images/s")
    print(f"  ratio pipeline / ceiling:                  {pipeline / ceiling:8.2f}  (target >= 0.70)")
    print(f"profile: window decode + flip, no resize:    {no_resize:8.1f} images/s "
          f"({no_resize / ceiling:.2f} of the ceiling): the bilinear resize to 256x256 costs "
          f"{1 / pipeline - 1 / no_resize:.2e} s/image, the decode {1 / no_resize:.2e} s/image")


if __name__ == "__main__":
    main()
