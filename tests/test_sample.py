"""The stylize filter and the embedded sample dataset."""

import os

import numpy as np
import pytest

from conftest import SAMPLE
from ghibli_keras import data, sample
from ghibli_keras.sample import psnr, stylize


@pytest.fixture(scope="module")
def photos():
    """Crops of the committed photo domain (real photos: astronaut, chelsea, coffee)."""
    return np.stack(list(data.load_tfrecords(f"{SAMPLE}/photo").take(24).as_numpy_iterator()))


def test_stylize_is_deterministic_and_keeps_shape(photos):
    a, b = stylize(photos[0]), stylize(photos[0].copy())
    assert a.dtype == np.uint8 and a.shape == photos[0].shape
    np.testing.assert_array_equal(a, b)


def test_stylize_is_a_strong_change(photos):
    styled = np.stack([stylize(p) for p in photos])
    assert psnr(photos, styled) < 21.0  # what the brief asks for "ordinary photos"
    # Warm and saturated: red up relative to blue, colour spread up.
    assert styled[..., 0].mean() - styled[..., 2].mean() > photos[..., 0].mean() - photos[..., 2].mean()
    chroma = lambda x: np.std(x.astype(float), axis=-1).mean()  # noqa: E731
    assert chroma(styled) > chroma(photos)


def test_stylize_flattens_texture_and_draws_ink():
    rng = np.random.default_rng(0)
    noisy = np.clip(128 + rng.normal(0, 12, (64, 64, 3)), 0, 255).astype(np.uint8)
    spatial_std = lambda x: x.std(axis=(0, 1)).mean()  # noqa: E731  (per channel, over pixels)
    assert spatial_std(stylize(noisy)) < spatial_std(noisy) / 2  # smoothing removes the noise
    step = np.full((64, 64, 3), 200, np.uint8)
    step[:, 32:] = 60  # a sharp edge from light to dark
    out = stylize(step).astype(int).sum(-1)
    dark_side = out[:, 33:38].min()
    assert dark_side < out[:, 50:].mean() - 30  # a dark ink line along the edge


def test_stylize_rejects_bad_input():
    with pytest.raises(ValueError, match="uint8"):
        stylize(np.zeros((8, 8, 3), np.float32))
    with pytest.raises(ValueError, match=r"\(8, 8\)"):
        stylize(np.zeros((8, 8), np.uint8))


def test_committed_sample_dataset():
    counts = {d: data.count_images(f"{SAMPLE}/{d}") for d in ("photo", "ghibli", "photo_test")}
    assert counts == {"photo": 300, "ghibli": 300, "photo_test": 64}
    shapes = {im.shape for im in data.load_tfrecords(f"{SAMPLE}/ghibli").as_numpy_iterator()}
    assert shapes == {(128, 128, 3)}
    total = sum(
        os.path.getsize(os.path.join(root, f)) for root, _, files in os.walk(SAMPLE) for f in files
    )
    assert total < 10 * 2**20


@pytest.mark.slow
def test_recipe_rebuilds_the_committed_shards(tmp_path):
    """The committed script is the provenance: rebuilding gives the committed pictures."""
    pytest.importorskip("skimage")
    counts = sample.build_sample_dataset(tmp_path)
    assert counts == {"photo": 300, "ghibli": 300, "photo_test": 64}
    for domain in counts:
        ours = data.load_tfrecords(tmp_path / domain, with_names=True).as_numpy_iterator()
        theirs = data.load_tfrecords(f"{SAMPLE}/{domain}", with_names=True).as_numpy_iterator()
        off = total = 0
        for (n1, a), (n2, b) in zip(ours, theirs):
            assert n1 == n2
            off += int((np.abs(a.astype(int) - b) > 2).sum())
            total += a.size
        # JPEG rounding: within 2 levels everywhere on the Xeon the shards were built on; on a
        # Zen 5 CPU the stylization moved a few pixels of 3 pictures (8e-6 of the values, by up to 8)
        assert off <= 1e-3 * total, f"{domain}: {off} of {total} values differ by more than 2"


def test_an_interrupted_rebuild_leaves_no_hidden_folder(tmp_path, monkeypatch):
    """A domain is written in a hidden staging folder and renamed whole; interrupted, that
    folder goes too (it was left as `.photo-XXXX` in the output root)."""
    pytest.importorskip("skimage")
    written = []

    def interrupted(name, jpeg, target):
        written.append(name)
        if len(written) == 3:
            raise KeyboardInterrupt
        return real(name, jpeg, target)

    real = data.make_example
    monkeypatch.setattr(data, "make_example", interrupted)
    with pytest.raises(KeyboardInterrupt):
        sample.build_sample_dataset(tmp_path)
    assert list(tmp_path.iterdir()) == []
