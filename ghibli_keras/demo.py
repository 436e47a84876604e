"""The demo on the embedded sample data (`make demo`, `ghibli-keras demo`).

Today it shows the data path end to end: it writes a folder of pictures from the sample shards,
converts that folder back into shards with `write_tfrecords`, reads them with `load_tfrecords`,
prints what it read, and saves a preview of one training batch.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from . import data

PICTURES_PER_DOMAIN = 24
PREVIEW_BATCH = 4
PREVIEW_SIZE = 96  # crop side of the preview batch (the sample crops are 128 px)
PREVIEW_LOAD_SIZE = 112


def run(sample: Path, out: Path) -> None:
    from PIL import Image

    out = Path(out)
    pictures = out / "pictures"
    shards = out / "shards"
    for domain in ("photo", "ghibli"):
        folder = pictures / domain
        folder.mkdir(parents=True, exist_ok=True)
        ds = data.load_tfrecords(sample / domain, with_names=True).take(PICTURES_PER_DOMAIN)
        for name, image in ds.as_numpy_iterator():
            Image.fromarray(image).save(folder / f"{name.decode()}.png")
        print(f"wrote {PICTURES_PER_DOMAIN} pictures to {folder}")
        report = data.write_tfrecords(
            folder, shards, domain, size=128, shard_size=16, overwrite=True, progress=False
        )
        print(report.summary())

    for domain in ("photo", "ghibli"):
        images = list(data.load_tfrecords(shards / f"{domain}*.tfrec").as_numpy_iterator())
        shapes = sorted({im.shape for im in images})
        print(
            f"read {len(images)} {domain} images back from {shards}: shapes {shapes}, "
            f"dtype {images[0].dtype}, values {min(im.min() for im in images)}.."
            f"{max(im.max() for im in images)}"
        )

    batch = data.training_dataset(
        shards / "photo*.tfrec",
        shards / "ghibli*.tfrec",
        PREVIEW_BATCH,
        image_size=PREVIEW_SIZE,
        load_size=PREVIEW_LOAD_SIZE,
        seed=0,
    )
    x, y = next(iter(batch))  # (B, S, S, 3) each, in [-1, 1]
    print(f"training batch: x {tuple(x.shape)}, y {tuple(y.shape)}, {x.dtype.name} in [-1, 1]")
    grid = np.concatenate(
        [np.concatenate(list(x.numpy()), axis=1), np.concatenate(list(y.numpy()), axis=1)], axis=0
    )
    preview = out / "training_batch.png"
    Image.fromarray(np.uint8(np.rint((grid + 1.0) * 127.5))).save(preview)
    print(f"preview of a training batch (top: photos x, bottom: styles y): {preview}")
