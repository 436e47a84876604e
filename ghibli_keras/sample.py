"""The embedded sample dataset: a known "anime look" filter and the recipe that built
`tfrecords/sample/`.

Domain B of the sample set is `stylize(photo crop)`, a deterministic function of photos, so
anything trained on it can be measured: the PSNR of G(photo) against `stylize(photo)` on photos
it never saw, beside the identity baseline PSNR(photo, stylize(photo)).

`stylize` (numpy/scipy only, no TensorFlow):
  1. edge-preserving smoothing: a 5×5 median, then Perona–Malik anisotropic diffusion, so
     regions flatten while their borders stay sharp;
  2. cel shading: luminance is mapped through a soft staircase of a few tone bands (a smooth
     sigmoid step between bands rather than hard posterisation), chroma is kept;
  3. ink: thin dark outlines from the negative lobe of a difference of Gaussians of luminance;
  4. grading: saturation boosted, warm (red/yellow up, blue down), brightened by a gamma below
     one and shadows lifted: an airy, pastel palette.

Rebuild the sample shards (needs scikit-image for its four public-domain/CC0 photos):

    python -m ghibli_keras.sample --out tfrecords/sample
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Iterator, Optional

import numpy as np
from scipy import ndimage

# Rec. 601 luma weights.
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


@dataclasses.dataclass(frozen=True)
class StyleParams:
    """The knobs of `stylize`; the defaults are the sample dataset's look."""

    median_size: int = 5  # pixels
    diffusion_steps: int = 12
    diffusion_kappa: float = 0.08  # edge-stopping contrast (on [0, 1] luminance)
    diffusion_rate: float = 0.2  # ≤ 0.25 for stability
    tone_bands: int = 4
    band_softness: float = 9.0  # slope of the sigmoid step between bands
    ink_sigma: float = 1.0  # inner Gaussian of the DoG; the outer is 1.6× wider
    ink_threshold: float = 0.012
    ink_width: float = 0.02
    ink_strength: float = 0.75
    saturation: float = 1.45
    warm_gain: tuple = (1.08, 1.02, 0.86)  # R, G, B
    shadow_lift: float = 0.04
    gamma: float = 0.75  # < 1 brightens: the airy, pastel palette


DEFAULT_STYLE = StyleParams()


def stylize(image: np.ndarray, params: StyleParams = DEFAULT_STYLE) -> np.ndarray:
    """Gives a photo a deterministic cel-shaded "anime look".

    Args:
        image: uint8 `(H, W, 3)` RGB.
        params: the filter's settings (`DEFAULT_STYLE` built the sample set).

    Returns:
        uint8 `(H, W, 3)`; the same input always gives the same output.

    Example:
    >>> import numpy as np
    >>> photo = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    >>> stylize(photo).shape
    (64, 64, 3)
    """
    if image.ndim != 3 or image.shape[-1] != 3 or image.dtype != np.uint8:
        raise ValueError(f"stylize expects uint8 (H, W, 3), got {image.dtype} {image.shape}")
    p = params
    rgb = image.astype(np.float32) / 255.0  # (H, W, 3) in [0, 1]

    # 1. Edge-preserving smoothing.
    rgb = ndimage.median_filter(rgb, size=(p.median_size, p.median_size, 1), mode="reflect")
    rgb = _anisotropic_diffusion(rgb, p.diffusion_steps, p.diffusion_kappa, p.diffusion_rate)

    # 2. Cel shading of luminance into soft tone bands, chroma kept.
    luma = rgb @ _LUMA  # (H, W)
    t = luma * p.tone_bands
    band = np.minimum(np.floor(t), p.tone_bands - 1)
    step = _unit_sigmoid(t - band, p.band_softness)
    shaded = (band + step) / p.tone_bands
    rgb = rgb + (shaded - luma)[..., None]

    # 3. Thin ink outlines where luminance dips below its surroundings.
    dog = ndimage.gaussian_filter(luma, p.ink_sigma) - ndimage.gaussian_filter(
        luma, 1.6 * p.ink_sigma
    )
    ink = np.clip((-dog - p.ink_threshold) / p.ink_width, 0.0, 1.0)
    rgb = rgb * (1.0 - p.ink_strength * ink)[..., None]

    # 4. Saturated, warm grading.
    grey = (rgb @ _LUMA)[..., None]
    rgb = grey + p.saturation * (rgb - grey)
    rgb = rgb * np.asarray(p.warm_gain, np.float32)
    rgb = np.clip(rgb, 0.0, 1.0) ** p.gamma
    rgb = p.shadow_lift + (1.0 - p.shadow_lift) * rgb
    return np.clip(np.rint(rgb * 255.0), 0, 255).astype(np.uint8)


def _unit_sigmoid(f: np.ndarray, softness: float) -> np.ndarray:
    """A sigmoid step on [0, 1] rescaled to go exactly from 0 to 1."""
    lo, hi = 1 / (1 + np.exp(softness * 0.5)), 1 / (1 + np.exp(-softness * 0.5))
    return (1 / (1 + np.exp(-softness * (f - 0.5))) - lo) / (hi - lo)


def _anisotropic_diffusion(rgb: np.ndarray, steps: int, kappa: float, rate: float) -> np.ndarray:
    """Perona–Malik diffusion (exponential edge-stopping on luminance gradients)."""
    out = rgb.copy()
    for _ in range(steps):
        padded = np.pad(out, ((1, 1), (1, 1), (0, 0)), mode="edge")
        flux = np.zeros_like(out)
        for neighbour in (padded[:-2, 1:-1], padded[2:, 1:-1], padded[1:-1, :-2], padded[1:-1, 2:]):
            diff = neighbour - out  # (H, W, 3)
            conductance = np.exp(-(((diff @ _LUMA) / kappa) ** 2))  # (H, W)
            flux += conductance[..., None] * diff
        out = out + rate * flux
    return out


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """Peak signal-to-noise ratio in dB of two uint8 images (or batches)."""
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else float(10 * np.log10(255.0**2 / mse))


# --------------------------------------------------------------------------------------------
# The recipe of tfrecords/sample/

#: scikit-image's four colour photos used, and which split each feeds.
TRAIN_PHOTOS = ("astronaut", "chelsea", "coffee")
HELDOUT_PHOTOS = ("rocket",)


@dataclasses.dataclass(frozen=True)
class SampleRecipe:
    crop_size: int = 128
    photos_per_domain: int = 300  # crops of each training domain
    heldout_crops: int = 64
    style_scale: tuple = (0.75, 2.0)  # domain-B crop side relative to crop_size
    jpeg_quality: int = 90
    seed: int = 2026


def _load_skimage(name: str) -> np.ndarray:
    try:
        from skimage import data as skdata
    except ImportError:
        raise SystemExit(
            "rebuilding the sample set needs scikit-image: pip install 'scikit-image>=0.22,<1'"
        )
    return getattr(skdata, name)()


def _crops(
    photos: dict, count: int, rng: np.random.Generator, size: int, scale: tuple
) -> Iterator[tuple]:
    """`count` random square crops, spread evenly over `photos`, resized to `size`."""
    from .images import resize_and_center_crop

    names = sorted(photos)
    for i in range(count):
        name = names[i % len(names)]
        photo = photos[name]
        h, w = photo.shape[:2]
        side = int(round(size * rng.uniform(*scale)))
        side = min(side, h, w)
        top, left = rng.integers(0, h - side + 1), rng.integers(0, w - side + 1)
        crop = photo[top : top + side, left : left + side]
        yield f"{name}_{i:04d}", resize_and_center_crop(crop, size)


def build_sample_dataset(out_root: Path, recipe: SampleRecipe = SampleRecipe()) -> dict:
    """Writes `photo/`, `ghibli/` and `photo_test/` shards under `out_root`; returns counts."""
    from . import data

    rng = np.random.default_rng(recipe.seed)
    train = {name: _load_skimage(name) for name in TRAIN_PHOTOS}
    heldout = {name: _load_skimage(name) for name in HELDOUT_PHOTOS}
    size = recipe.crop_size
    domains = {
        # Domain A: photo crops at their own scale.
        "photo": _crops(train, recipe.photos_per_domain, rng, size, (1.0, 1.0)),
        # Domain B: crops from other positions and scales, resized, then stylized.
        "ghibli": (
            (name, stylize(crop))
            for name, crop in _crops(train, recipe.photos_per_domain, rng, size, recipe.style_scale)
        ),
        # Held out: crops of a photo the training set never saw (PSNR against stylize()).
        "photo_test": _crops(heldout, recipe.heldout_crops, rng, size, (1.0, 1.0)),
    }
    counts = {}
    for domain, records in domains.items():
        folder = Path(out_root) / domain
        staging = Path(tempfile.mkdtemp(prefix=f".{domain}-", dir=out_root))
        try:
            with data.ShardWriter(staging, domain, shard_size=recipe.photos_per_domain) as writer:
                for name, image in records:
                    jpeg = data.encode_jpeg(image, recipe.jpeg_quality)
                    writer.write(data.make_example(name, jpeg, domain))
        except BaseException:  # the writer removed its shards; the hidden folder goes too
            shutil.rmtree(staging, ignore_errors=True)
            raise
        if folder.exists():
            shutil.rmtree(folder)
        staging.rename(folder)  # the whole domain appears at once
        folder.chmod(0o755)
        counts[domain] = writer.num_records
    return counts


def main(argv: Optional[list] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m ghibli_keras.sample", description="Rebuild the embedded sample shards."
    )
    parser.add_argument("--out", type=Path, default=Path("tfrecords/sample"))
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    counts = build_sample_dataset(args.out)
    for domain, n in counts.items():
        print(f"{args.out / domain}: {n} images")
    return 0


if __name__ == "__main__":
    sys.exit(main())
