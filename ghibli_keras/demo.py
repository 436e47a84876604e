"""The demo (`make demo`, `ghibli-keras demo`): train the tiny preset on the embedded sample
data, then show and score what it learned.

Writes to the output folder:
  before_after.png   held-out photo | G(photo) | stylize(photo), the target it never saw
  samples.png        the last epoch's x | G(x) | F(G(x)) | y | F(y) | G(F(y)) grid
  loss_curves.png    losses per epoch
  translated/        a few held-out photos and their translations, as PNG
  scores.json        held-out PSNR of G(photo) against stylize(photo), beside the identity
                     baseline PSNR(photo, stylize(photo)), and the gain; with Inception weights,
                     KID and FID of the held-out photos against the style set before training
                     (the photos themselves) and after (G(photos))
  workdir/           the training run (model.keras, log.csv, tensorboard/, ...)
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import Optional

import numpy as np

from . import data, sample, training
from .callbacks import save_grid, to_uint8
from .config import Config, get_preset
from .errors import InputError
from .files import atomic_path

GRID_PICTURES = 6
TRANSLATED_PICTURES = 8


def demo_config(sample_dir: Path) -> Config:
    """The tiny preset, pointed at the sample shards under `sample_dir`."""
    return get_preset("tiny").override(
        **{
            "data.photos": str(sample_dir / "photo"),
            "data.styles": str(sample_dir / "ghibli"),
            "data.heldout_photos": str(sample_dir / "photo_test"),
        }
    )


def heldout_photos(config: Config) -> np.ndarray:
    """The held-out photos, uint8 `(N, H, W, 3)`; `InputError` unless there are enough of one
    size (as in the sample's photo_test: 64 photos of 128×128)."""
    files = config.data.heldout_photos
    photos = list(data.load_tfrecords(files).as_numpy_iterator())
    shapes = sorted({p.shape for p in photos})
    wanted = max(GRID_PICTURES, TRANSLATED_PICTURES)
    if len(photos) < wanted or len(shapes) > 1:
        sizes = ", ".join(f"{h}x{w}" for h, w, _ in shapes) or "none"
        raise InputError(f"held-out photos {files!r}: {len(photos)} of sizes {sizes}; the demo "
                         f"needs at least {wanted} of one size (the sample's photo_test has 64 "
                         f"of 128x128)")
    return np.stack(photos)


def heldout_score(generator, photos: np.ndarray, batch_size: int = 16) -> dict:
    """PSNR of G(photo) against stylize(photo) on uint8 photos `(N, H, W, 3)`, beside the
    identity baseline PSNR(photo, stylize(photo)); any H and W."""
    import tensorflow as tf

    from .inference import pad_run_crop
    from .models import size_multiple, smallest_side

    targets = np.stack([sample.stylize(p) for p in photos])
    network = lambda x: generator(x, training=False)  # noqa: E731
    x = photos / 127.5 - 1.0  # (N, H, W, 3), any H, W: padded to sides the generator takes
    translated = np.concatenate([
        to_uint8(pad_run_crop(network, tf.constant(x[i:i + batch_size], tf.float32),
                              size_multiple(generator), smallest_side(generator)))
        for i in range(0, len(x), batch_size)])
    model_psnr = sample.psnr(translated, targets)
    baseline = sample.psnr(photos, targets)
    return {
        "images": int(len(photos)),
        "psnr_model_db": round(model_psnr, 3),
        "psnr_identity_baseline_db": round(baseline, 3),
        "gain_db": round(model_psnr - baseline, 3),
        "translated": translated,
        "targets": targets,
    }


def _significant(value: float, digits: int = 5) -> float:
    return float(f"{value:.{digits}g}")


def generation_scores(generator, photos: np.ndarray, styles, weights=None) -> Optional[dict]:
    """KID and FID against the style set `styles` of uint8 `photos` before training (the photos
    themselves) and after (G(photos)), or None, with one printed line saying why, when no
    Inception weights can be had."""
    from . import features, metrics

    weights = weights or features.default_weights()
    try:
        extractor = features.inception(weights)
    except InputError as e:
        print(f"KID/FID skipped: {e}")
        return None
    real = features.extract(styles, extractor, description="style features")
    before = features.extract(photos, extractor, cache=False)
    after = features.extract(photos, extractor, cache=False,
                             transform=features.generator_transform(generator))
    kid_before, kid_after = metrics.kid(real, before), metrics.kid(real, after)
    return {
        "network": extractor.name,
        "kid_before": _significant(kid_before.mean),
        "kid_after": _significant(kid_after.mean),
        "kid_std_after": _significant(kid_after.std) if math.isfinite(kid_after.std) else None,
        "fid_before": _significant(metrics.fid(real, before)),
        "fid_after": _significant(metrics.fid(real, after)),
        "note": f"{len(photos)} held-out photos against {len(real)} style pictures: FID from "
                f"fewer than {metrics.FID_MIN_IMAGES} images is biased upwards (compare before "
                f"with after only); KID is unbiased",
    }


def run(sample_dir: Path, out: Path, config: Config = None, inception_weights=None) -> dict:
    """Trains (or resumes) the demo run in `out/workdir` and writes its pictures and scores."""
    import keras

    from . import cyclegan  # noqa: F401  (registers the classes for load_model)

    sample_dir, out = Path(sample_dir), Path(out)
    config = config or demo_config(sample_dir)
    workdir = out / "workdir"
    photos = heldout_photos(config)  # checked before training
    training.train(config, workdir)

    model = keras.models.load_model(workdir / "model.keras", compile=False)
    score = heldout_score(model.generator_g, photos)
    translated, targets = score.pop("translated"), score.pop("targets")

    rows = [[photos[i], translated[i], targets[i]] for i in range(GRID_PICTURES)]
    title = (
        f"held-out photos: PSNR vs stylize {score['psnr_identity_baseline_db']:.2f} dB -> "
        f"{score['psnr_model_db']:.2f} dB ({score['gain_db']:+.2f} dB)"
    )
    save_grid(rows, ["photo (never seen)", "G(photo)", "stylize(photo), the target"],
              out / "before_after.png", title)
    shutil.copyfile(workdir / "samples" / "latest.png", out / "samples.png")
    shutil.copyfile(workdir / "loss_curves.png", out / "loss_curves.png")
    from PIL import Image

    folder = out / "translated"
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(TRANSLATED_PICTURES):
        Image.fromarray(photos[i]).save(folder / f"{i:02d}_photo.png")
        Image.fromarray(translated[i]).save(folder / f"{i:02d}_ghibli.png")
    print(
        f"held-out score on {score['images']} photos never seen in training: "
        f"PSNR(G(photo), stylize(photo)) = {score['psnr_model_db']:.2f} dB, identity baseline "
        f"{score['psnr_identity_baseline_db']:.2f} dB, gain {score['gain_db']:+.2f} dB"
    )
    generation = generation_scores(model.generator_g, photos, config.data.styles, inception_weights)
    if generation:
        score["generation"] = generation
        print(f"KID against the style set: {generation['kid_before']:.4g} before training -> "
              f"{generation['kid_after']:.4g} after; FID {generation['fid_before']:.4g} -> "
              f"{generation['fid_after']:.4g} [{generation['network']}]")
    with atomic_path(out / "scores.json") as tmp:
        tmp.write_text(json.dumps(score, indent=2))
    print(f"pictures: {out / 'before_after.png'}, {out / 'samples.png'}, {out / 'loss_curves.png'}, {folder}/")
    return score
