"""Input pipeline throughput against the raw JPEG-decode ceiling, measured in the same run.

    python benchmarks/input_pipeline.py [--quick] [--batch-size 8] [--images 1024]

Builds 256×256 JPEG shards (the sample crops upscaled; two domains), then measures:
  - ceiling: TFRecordDataset -> parse -> tf.io.decode_jpeg, in parallel on all cores;
  - pipeline: `data.training_dataset(resize_on_device=True)` as `train()` runs it (the random
    crop window of 286 -> 256 jitter decoded alone, flipped, both domains zipped and batched,
    uint8), counting both domains' images; the bilinear resize of the windows to 256 runs in
    the train step, on the accelerator;
  - the all-on-host variant (`resize_on_device=False`), and what the train step's resize costs
    on this CPU;
and prints images/s for each and the ratio pipeline / ceiling (target: >= 0.7).
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


def device_resize_cost(batch: int, window: int, jit: bool, repeats: int = 50) -> float:
    """Seconds per image of `finish_jitter` (the step the training pipeline leaves to the
    accelerator), batched as in the train step, here on this machine's CPU."""
    windows = tf.random.uniform([batch, window, window, 3], 0, 255, tf.int32)
    windows = tf.cast(windows, tf.uint8)
    finish = tf.function(lambda w: data.finish_jitter(w, SIZE), jit_compile=jit)
    finish(windows).numpy()
    start = time.perf_counter()
    for _ in range(repeats):
        finish(windows).numpy()
    return (time.perf_counter() - start) / (repeats * batch)


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
        def training(on_device):
            return data.training_dataset(photos, styles, b, resize_on_device=on_device)

        ceiling = rate(decode_ceiling(photos, styles, 2 * b), 2 * b, batches, warmup)
        pipeline = rate(training(True), 2 * b, batches, warmup)
        all_on_host = rate(training(False), 2 * b, batches, warmup)
        ceiling2 = rate(decode_ceiling(photos, styles, 2 * b), 2 * b, batches, warmup)
        window = next(iter(training(True)))[0].shape[1]
    ceiling = max(ceiling, ceiling2)  # the better of two runs around the pipelines
    resize, resize_xla = (device_resize_cost(2 * b, window, jit) for jit in (False, True))
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
          f"TensorFlow {tf.__version__}")
    print(f"256x256 JPEG shards, batch {b} per domain, {batches} batches")
    print(f"  decode ceiling (parse + decode_jpeg):           {ceiling:8.1f} images/s")
    print(f"  training pipeline, as train() runs it:          {pipeline:8.1f} images/s  "
          f"(uint8 {window}x{window} windows; the resize to {SIZE} runs in the train step)")
    print(f"  ratio pipeline / ceiling:                       {pipeline / ceiling:8.2f}  (target >= 0.70)")
    print(f"  the same with the resize on the host too:       {all_on_host:8.1f} images/s  "
          f"({all_on_host / ceiling:.2f} of the ceiling)")
    print(f"  the train step's resize on this CPU, batched:   {resize:.2e} s/image, with XLA "
          f"{resize_xla:.2e} (decode: {1 / ceiling:.2e} s/image)")


if __name__ == "__main__":
    main()
