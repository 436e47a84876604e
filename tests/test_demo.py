"""The recipe learns: a short tiny-preset run beats the identity baseline on held-out photos."""

import numpy as np
import pytest

from conftest import SAMPLE
from ghibli_keras import data, demo, training
from pathlib import Path


@pytest.mark.slow
def test_short_tiny_run_improves_heldout_psnr(tmp_path):
    config = demo.demo_config(Path(SAMPLE)).override(
        **{"train.epochs": 3, "train.decay_epochs": 1, "train.steps_per_epoch": 100}
    )
    training.train(config, tmp_path / "run", verbose=0)
    import keras

    model = keras.models.load_model(tmp_path / "run" / "model.keras", compile=False)
    photos = np.stack(list(data.load_tfrecords(f"{SAMPLE}/photo_test").as_numpy_iterator()))
    score = demo.heldout_score(model.generator_g, photos)
    assert score["images"] == 64
    assert score["psnr_identity_baseline_db"] < 18.0  # the style is a strong change
    assert score["gain_db"] >= 0.5, score
