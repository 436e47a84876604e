"""FID, KID and MiFID from feature vectors (numpy and scipy only; no TensorFlow).

Features come from `ghibli_keras.features` (InceptionV3 pool-3, 2048-d), one row per image.

Example:
>>> rng = np.random.default_rng(0)
>>> a, b = rng.normal(size=(500, 8)), rng.normal(size=(500, 8)) + 1.0
>>> abs(fid(a, a)) < 1e-9, fid(a, b) > 7
(True, True)
"""

from __future__ import annotations

import logging
import warnings
from typing import NamedTuple, Optional

import numpy as np
from scipy import linalg

log = logging.getLogger(__name__)

#: FID's covariance is only full-rank with more images than feature dimensions; below this
#: the score is biased upwards (still computable, and what Kaggle does with 300 Monet pictures).
FID_MIN_IMAGES = 2048
#: Kaggle gan-getting-started: memorisation distances below this count as memorised.
MIFID_EPSILON = 0.1
#: Kaggle's MiFID divides by the thresholded distance plus this (its code: `eps=10e-15`).
MIFID_DIVISOR_OFFSET = 1e-14
#: scipy's sqrtm is judged failed above this relative error (|X·X - A| / |A|).
_SQRTM_TOLERANCE = 1e-3
#: The largest imaginary component of sqrtm's diagonal accepted as rounding noise.
_IMAGINARY_TOLERANCE = 1e-3
#: A Fréchet distance below zero by more than this times |mu1 - mu2|² + tr(sigma1 + sigma2) + 1
#: is a failed square root, not rounding: a root accepted with a residual up to
#: `_SQRTM_TOLERANCE` may put its trace off by about as much.
_ROUNDING = _SQRTM_TOLERANCE


class Statistics(NamedTuple):
    """Mean `(D,)` and covariance `(D, D)` of a set of features."""

    mu: np.ndarray
    sigma: np.ndarray


class KID(NamedTuple):
    """Kernel Inception Distance: the unbiased MMD² averaged over subsets, and its std over
    them (NaN when every subset is both whole sets: see `kid`)."""

    mean: float
    std: float


def _features(name: str, x) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or len(x) < 2:
        raise ValueError(f"{name}: expected features of shape (N >= 2, D), got {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{name}: features contain NaN or infinity")
    return x


def statistics(features) -> Statistics:
    """Mean and (unbiased) covariance of features `(N, D)`."""
    x = _features("features", features)
    return Statistics(x.mean(axis=0), np.cov(x, rowvar=False))


def frechet_distance(mu1, sigma1, mu2, sigma2, eps: float = 1e-6) -> float:
    """Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2):

        |mu1 - mu2|² + tr(sigma1 + sigma2 - 2 (sigma1 sigma2)^½)

    The matrix square root is scipy's `sqrtm`. When the product is singular (fewer images
    than dimensions) and the root comes out non-finite or inaccurate, `eps` is added to both
    diagonals and the root taken again. A root whose diagonal has a non-negligible imaginary
    part is an error (the covariances are not valid); rounding noise is dropped.

    Args:
        mu1, mu2: means `(D,)`.
        sigma1, sigma2: covariances `(D, D)`, symmetric positive semi-definite.
        eps: the diagonal offset used when the product is singular.
    Returns:
        The distance, a float >= 0 (rounding below zero, as for a set against itself, is 0).
    Raises:
        ValueError: the shapes do not match; an input holds NaN or infinity; the root is not
            finite, or has an imaginary diagonal; or the distance comes out below zero by more
            than rounding (and the offset) explain, which means the square root failed.
    """
    mu1, mu2 = np.atleast_1d(mu1).astype(np.float64), np.atleast_1d(mu2).astype(np.float64)
    sigma1, sigma2 = np.atleast_2d(sigma1).astype(np.float64), np.atleast_2d(sigma2).astype(np.float64)
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != mu1.shape * 2:
        raise ValueError(
            f"shapes do not match: mu1 {mu1.shape}, sigma1 {sigma1.shape}, mu2 {mu2.shape}, "
            f"sigma2 {sigma2.shape}"
        )
    for name, value in (("mu1", mu1), ("sigma1", sigma1), ("mu2", mu2), ("sigma2", sigma2)):
        if not np.all(np.isfinite(value)):
            raise ValueError(f"FID: {name} contains NaN or infinity")
    diff = mu1 - mu2  # (D,)
    product = sigma1 @ sigma2  # (D, D)
    covmean = _sqrtm(product)
    offset_error = 0.0  # how far the diagonal offset may move the distance
    if not _good_root(covmean, product):
        log.warning("FID: sigma1·sigma2 is singular; adding %g to the diagonals", eps)
        offset = np.eye(len(mu1)) * eps
        product = (sigma1 + offset) @ (sigma2 + offset)
        covmean = _sqrtm(product)
        offset_error = 2.0 * len(mu1) * eps
        if not np.all(np.isfinite(covmean)):
            raise ValueError("FID: the covariance product has no finite square root")
    if np.iscomplexobj(covmean):
        worst = np.max(np.abs(np.diagonal(covmean).imag))
        if worst > _IMAGINARY_TOLERANCE:
            raise ValueError(
                f"FID: the square root of sigma1·sigma2 has an imaginary component of {worst:.3g} "
                f"on its diagonal; the covariances are not valid (NaN features or too few images?)"
            )
        covmean = covmean.real
    distance = float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * np.trace(covmean))
    scale = float(diff @ diff + np.trace(sigma1) + np.trace(sigma2)) + 1.0
    return _clamp_rounding(distance, _ROUNDING * scale + offset_error)


def _clamp_rounding(distance: float, tolerance: float) -> float:
    """`distance`, with a negative value within `tolerance` of zero (rounding) taken as 0.

    Raises:
        ValueError: `distance` is not finite, or below `-tolerance`: the square root failed.
    """
    if not np.isfinite(distance) or distance < -tolerance:
        raise ValueError(
            f"FID: the distance came out as {distance:.6g}, below zero by more than rounding "
            f"(tolerance {tolerance:.3g}): the square root of sigma1·sigma2 failed"
        )
    return max(0.0, distance)


def _sqrtm(product: np.ndarray) -> np.ndarray:
    """scipy's `sqrtm`, without its LinAlgWarning for a singular product: with fewer images
    than dimensions the product always is, and `frechet_distance` checks the root itself."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", linalg.LinAlgWarning)
        return linalg.sqrtm(product)


def _good_root(root: np.ndarray, product: np.ndarray) -> bool:
    if not np.all(np.isfinite(root)):
        return False
    scale = np.linalg.norm(product)
    if scale == 0:
        return True
    return np.linalg.norm(root @ root - product) / scale < _SQRTM_TOLERANCE


def fid(real_features, fake_features) -> float:
    """Fréchet Inception Distance between two sets of features `(N, D)` and `(M, D)`."""
    real = statistics(real_features)
    fake = statistics(fake_features)
    return frechet_distance(real.mu, real.sigma, fake.mu, fake.sigma)


def kid(
    real_features,
    fake_features,
    *,
    subsets: int = 100,
    subset_size: int = 1000,
    seed: int = 0,
) -> KID:
    """Kernel Inception Distance (Bińkowski et al. 2018): the unbiased estimate of MMD² with the
    cubic polynomial kernel k(x, y) = (x·y / D + 1)³, averaged over `subsets` random subsets of
    `min(subset_size, N, M)` images of each set (drawn without replacement).

    Unbiased, so it is near zero (and may be slightly negative) for two samples of one
    distribution, even with a few hundred images: the better measure for small style sets.

    When both sets have `subset_size` images or fewer and the same count, every subset is the
    whole of both sets (in another order), so the estimate is computed once and `std` is NaN:
    it is a spread over subsets, and there is none. When only one set is whole, the other is
    still subsampled and the subsets (and their std) are kept.

    Args:
        real_features, fake_features: `(N, D)` and `(M, D)`, N, M >= 2.
        subsets: how many random subsets to average over.
        subset_size: images per subset (fewer when a set is smaller).
        seed: seeds the subset draws.
    Returns:
        `KID(mean, std)` over the subsets; std is NaN when both sets are whole (see above).
    """
    real = _features("real_features", real_features)
    fake = _features("fake_features", fake_features)
    if real.shape[1] != fake.shape[1]:
        raise ValueError(f"feature sizes differ: {real.shape[1]} and {fake.shape[1]}")
    if subsets < 1 or subset_size < 2:
        raise ValueError(f"need subsets >= 1 and subset_size >= 2, got {subsets}, {subset_size}")
    m = min(subset_size, len(real), len(fake))
    if m == len(real) == len(fake):  # every subset would be both whole sets: no spread
        return KID(_mmd2(real, fake), float("nan"))
    rng = np.random.default_rng(seed)
    scores = np.empty(subsets)
    for i in range(subsets):
        x = real[rng.choice(len(real), m, replace=False)]  # (m, D)
        y = fake[rng.choice(len(fake), m, replace=False)]  # (m, D)
        scores[i] = _mmd2(x, y)
    return KID(float(scores.mean()), float(scores.std()))


def _mmd2(x: np.ndarray, y: np.ndarray) -> float:
    """The unbiased MMD² of `x` and `y`, both `(m, D)`, with the cubic polynomial kernel."""
    m, d = x.shape
    k_xx = (x @ x.T / d + 1.0) ** 3  # (m, m)
    k_yy = (y @ y.T / d + 1.0) ** 3
    k_xy = (x @ y.T / d + 1.0) ** 3
    within = (k_xx.sum() - np.trace(k_xx) + k_yy.sum() - np.trace(k_yy)) / (m * (m - 1))
    return float(within - 2.0 * k_xy.mean())


def _normalize_rows(x: np.ndarray) -> np.ndarray:
    return np.nan_to_num(x / np.linalg.norm(x, ord=2, axis=1, keepdims=True))


def memorization_distance(real_features, fake_features) -> float:
    """Kaggle gan-getting-started's memorisation distance: for each generated image, the
    minimum cosine distance 1 - |cos| to any real image, averaged over generated images.
    All-zero feature rows are left out, as Kaggle's code does; rounding below zero (a picture
    and its copy) counts as 0."""
    real = np.asarray(real_features, dtype=np.float64)
    fake = np.asarray(fake_features, dtype=np.float64)
    real = _normalize_rows(real[np.sum(real, axis=1) != 0])
    fake = _normalize_rows(fake[np.sum(fake, axis=1) != 0])
    if not len(real) or not len(fake):
        raise ValueError("memorization distance: every feature row is zero")
    distance = 1.0 - np.abs(fake @ real.T)  # (M, N)
    return max(0.0, float(np.mean(np.min(distance, axis=1))))


def mifid(real_features, fake_features, eps: float = MIFID_EPSILON, *,
          fid_value: Optional[float] = None) -> float:
    """Memorisation-informed FID exactly as the Kaggle gan-getting-started metric:
    FID / (d_thr + 1e-14), where d is `memorization_distance` and d_thr = d if d < eps else 1.
    Pass `fid_value` when the FID of these features is already known (saves a `sqrtm`)."""
    d = memorization_distance(real_features, fake_features)
    d_thr = d if d < eps else 1.0
    if fid_value is None:
        fid_value = fid(real_features, fake_features)
    return fid_value / (d_thr + MIFID_DIVISOR_OFFSET)
