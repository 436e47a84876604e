"""FID, KID and MiFID against closed forms and hand computations (numpy only)."""

import logging
import math
import warnings

import numpy as np
import pytest

from ghibli_keras import metrics


def _spd(rng, d):
    a = rng.normal(size=(d, d))
    return a @ a.T / d + 0.1 * np.eye(d)


def _trace_sqrt_product(s1, s2):
    """tr((s1 s2)^½) via s1^½ s2 s1^½ (symmetric, same eigenvalues), with eigh: no sqrtm."""
    w, v = np.linalg.eigh(s1)
    root = v @ np.diag(np.sqrt(w)) @ v.T
    return np.sum(np.sqrt(np.clip(np.linalg.eigvalsh(root @ s2 @ root), 0, None)))


def test_frechet_distance_diagonal_closed_form():
    rng = np.random.default_rng(0)
    mu1, mu2 = rng.normal(size=16), rng.normal(size=16)
    a, b = rng.uniform(0.1, 3, 16), rng.uniform(0.1, 3, 16)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    got = metrics.frechet_distance(mu1, np.diag(a), mu2, np.diag(b))
    assert got == pytest.approx(expected, rel=1e-9)


def test_frechet_distance_full_covariance_closed_form():
    rng = np.random.default_rng(1)
    d = 32
    mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
    s1, s2 = _spd(rng, d), _spd(rng, d)
    expected = (
        np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * _trace_sqrt_product(s1, s2)
    )
    assert metrics.frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-7)
    # Gaussians in one dimension: (m1 - m2)^2 + (s1 - s2)^2 with standard deviations s.
    assert metrics.frechet_distance([1.0], [[4.0]], [-2.0], [[9.0]]) == pytest.approx(9 + 1)


def test_frechet_distance_singular_and_invalid():
    rng = np.random.default_rng(2)
    few = rng.normal(size=(10, 64))  # 10 images, 64 dimensions: rank-deficient covariances
    s = metrics.statistics(few)
    other = metrics.statistics(rng.normal(size=(12, 64)) + 0.5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # scipy's LinAlgWarning is handled, not shown
        value = metrics.frechet_distance(s.mu, s.sigma, other.mu, other.sigma)
    assert np.isfinite(value) and value > 0
    with pytest.raises(ValueError, match="imaginary"):
        metrics.frechet_distance(np.zeros(4), -np.eye(4), np.zeros(4), np.eye(4))
    with pytest.raises(ValueError, match="shapes"):
        metrics.frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))


def test_fid_zero_for_same_set_and_symmetric():
    rng = np.random.default_rng(3)
    a = rng.normal(size=(400, 16))
    b = rng.normal(size=(300, 16)) * 1.5 + 0.3
    assert abs(metrics.fid(a, a)) < 1e-8
    assert metrics.fid(a, b) == pytest.approx(metrics.fid(b, a), rel=1e-9)
    assert metrics.fid(a, b) > 1.0
    with pytest.raises(ValueError, match="NaN"):
        metrics.fid(a, np.full((5, 16), np.nan))


def test_kid_near_zero_for_one_distribution_and_positive_for_two():
    rng = np.random.default_rng(4)
    d = 64
    a, b = rng.normal(size=(600, d)), rng.normal(size=(600, d))
    same = metrics.kid(a, b, subsets=20, subset_size=300)
    different = metrics.kid(a, rng.normal(size=(600, d)) + 0.5, subsets=20, subset_size=300)
    assert abs(same.mean) < 3 * max(same.std, 1e-3)
    assert different.mean > 10 * max(different.std, abs(same.mean))


def test_kid_matches_a_direct_computation():
    rng = np.random.default_rng(5)
    x, y = rng.normal(size=(30, 8)), rng.normal(size=(30, 8)) + 0.2
    k = lambda a, b: (a @ b / 8 + 1) ** 3  # noqa: E731
    m = 30
    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(m)) / (m * m)
    got = metrics.kid(x, y, subsets=1, subset_size=30)  # the whole sets
    assert got.mean == pytest.approx(xx + yy - 2 * xy, rel=1e-9)
    assert math.isnan(got.std)  # no spread over subsets that are all the whole sets


def test_kid_of_two_whole_sets_is_computed_once_with_no_std(monkeypatch):
    """m == N == M: every subset is both whole sets, so 100 subsets would repeat one number
    (and report a std of 1e-16). When only one set is whole, the other is still subsampled."""
    rng = np.random.default_rng(7)
    x, y = rng.normal(size=(40, 8)), rng.normal(size=(40, 8)) + 0.2
    assert math.isnan(metrics.kid(x, y, subsets=100, subset_size=1000).std)
    calls = []
    original = metrics._mmd2
    monkeypatch.setattr(metrics, "_mmd2", lambda a, b: calls.append(len(a)) or original(a, b))
    whole = metrics.kid(x, y, subsets=100, subset_size=1000)
    assert calls == [40] and math.isnan(whole.std)
    assert whole.mean == pytest.approx(metrics.kid(x, y[::-1], subset_size=40).mean, rel=1e-9)
    calls.clear()
    one_whole = metrics.kid(x, np.concatenate([y, y + 0.1]), subsets=10, subset_size=1000)
    assert calls == [40] * 10 and np.isfinite(one_whole.std) and one_whole.std > 1e-6
    calls.clear()
    smaller = metrics.kid(x, y, subsets=10, subset_size=30)  # subsets of both: a real spread
    assert calls == [30] * 10 and smaller.std > 1e-6


def test_frechet_distance_refuses_nan_and_infinity():
    """max(0.0, nan) is 0.0: a NaN mean used to score a perfect FID of 0."""
    mu, sigma = np.zeros(4), np.eye(4)
    for args, name in [((np.full(4, np.nan), sigma, mu, sigma), "mu1"),
                       ((mu, sigma, np.array([0, np.inf, 0, 0]), sigma), "mu2"),
                       ((mu, np.full((4, 4), np.nan), mu, sigma), "sigma1"),
                       ((mu, sigma, mu, np.diag([1.0, np.inf, 1.0, 1.0])), "sigma2")]:
        with pytest.raises(ValueError, match=f"{name} contains NaN or infinity"):
            metrics.frechet_distance(*args)


def test_a_failed_square_root_is_an_error_and_rounding_is_clamped(monkeypatch):
    rng = np.random.default_rng(8)
    mu, sigma = rng.normal(size=8), _spd(rng, 8)
    assert metrics.frechet_distance(mu, sigma, mu, sigma) < 1e-9
    exact = metrics._sqrtm
    # A root a hair too large: rounding below zero, which counts as 0.
    monkeypatch.setattr(metrics, "_sqrtm", lambda product: exact(product) * (1 + 1e-9))
    assert metrics.frechet_distance(mu, sigma, mu, sigma) == 0.0
    # A root 1.5 times too large, before and after the offset: far below zero, not a score.
    monkeypatch.setattr(metrics, "_sqrtm", lambda product: exact(product) * 1.5)
    with pytest.raises(ValueError, match=r"came out as -[\d.]+, below zero .*square root .* failed"):
        metrics.frechet_distance(mu, sigma, mu, sigma)


def test_sqrtm_retried_with_a_diagonal_offset(monkeypatch, caplog):
    """sqrtm's first root is not finite: the second, with `eps` added to both diagonals, is
    used, and matches an eigenvalue computation of the offset covariances' root."""
    rng = np.random.default_rng(9)
    d, eps = 12, 0.05  # an offset large enough to tell from none
    mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
    s1, s2 = _spd(rng, d), _spd(rng, d)
    exact, calls = metrics._sqrtm, []

    def failing_once(product):
        calls.append(product)
        return np.full_like(product, np.nan) if len(calls) == 1 else exact(product)

    monkeypatch.setattr(metrics, "_sqrtm", failing_once)
    with caplog.at_level(logging.WARNING, logger=metrics.__name__):
        got = metrics.frechet_distance(mu1, s1, mu2, s2, eps=eps)
    offset = eps * np.eye(d)
    expected = (np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2)
                - 2 * _trace_sqrt_product(s1 + offset, s2 + offset))
    without_offset = metrics.frechet_distance(mu1, s1, mu2, s2)
    assert len(calls) == 3  # the failed root, the retry; then the call without the failure
    assert got == pytest.approx(expected, rel=1e-9)
    assert abs(got - without_offset) > 1e-3 * without_offset  # the offset did take effect
    assert "singular; adding 0.05 to the diagonals" in caplog.text
    monkeypatch.setattr(metrics, "_sqrtm", lambda product: np.full_like(product, np.inf))
    with pytest.raises(ValueError, match="no finite square root"):
        metrics.frechet_distance(mu1, s1, mu2, s2)


def test_memorization_distance_as_kaggle():
    real = np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]])  # the zero row is ignored
    fake = np.array([[-2.0, 0.0], [1.0, 1.0]])  # anti-parallel counts as a copy (|cos|)
    expected = np.mean([0.0, 1 - 1 / np.sqrt(2)])
    assert metrics.memorization_distance(real, fake) == pytest.approx(expected)


def test_mifid_on_both_sides_of_epsilon():
    rng = np.random.default_rng(6)
    real = rng.normal(size=(300, 32)) + 3.0
    copies = real[:200] + rng.normal(size=(200, 32)) * 0.05  # near-copies: d < 0.1
    fresh = rng.normal(size=(200, 32)) * 2 + 3.0  # new pictures of the same kind: d >= 0.1
    d_copies = metrics.memorization_distance(real, copies)
    d_fresh = metrics.memorization_distance(real, fresh)
    assert d_copies < metrics.MIFID_EPSILON <= d_fresh
    assert metrics.mifid(real, copies) == pytest.approx(metrics.fid(real, copies) / d_copies)
    assert metrics.mifid(real, fresh) == pytest.approx(metrics.fid(real, fresh))
    # A different epsilon moves the threshold.
    assert metrics.mifid(real, fresh, eps=1.0) == pytest.approx(metrics.fid(real, fresh) / d_fresh)
    assert metrics.mifid(real, copies, fid_value=2.0) == pytest.approx(2.0 / d_copies)


def test_a_set_against_itself_scores_zero_and_mifid_stays_finite():
    """Rounding must not give a negative FID or distance (Kaggle's MiFID would then be a huge
    negative number), and a distance of exactly 0 divides by Kaggle's 1e-14, not by zero."""
    rng = np.random.default_rng(3)
    features = rng.gamma(2.0, size=(300, 64))  # non-negative, like Inception's pool features
    assert metrics.fid(features, features) == 0.0 or 0.0 < metrics.fid(features, features) < 1e-9
    assert metrics.memorization_distance(features, features) >= 0.0
    one_hot = np.eye(4)
    assert metrics.memorization_distance(one_hot, one_hot) == 0.0
    assert metrics.mifid(one_hot, one_hot, fid_value=1.0) == pytest.approx(1e14)
    assert metrics.mifid(features, features) >= 0.0
