"""The recipe learns: a short tiny-preset run beats the identity baseline on held-out photos."""

import numpy as np
import pytest

from pathlib import Path

from conftest import SAMPLE, shard_with_a_bad_record, smooth_image
from ghibli_keras import cli, data, demo, models, training
from ghibli_keras.errors import InputError


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


def test_heldout_photos_of_any_one_size_are_scored(tmp_path, rng):
    """The PSNR is taken at the photos' own size: 70x70 is padded to what G takes."""
    config = demo.demo_config(Path(SAMPLE))
    generator = models.build_networks(config.model, seed=0)["generator_g"]
    photos = np.stack([smooth_image(rng, 70, 70) for _ in range(3)])
    score = demo.heldout_score(generator, photos)
    assert score["images"] == 3 and score["translated"].shape == (3, 70, 70, 3)


def test_too_few_heldout_photos_are_refused_before_training(tmp_path):
    shards = shard_with_a_bad_record(tmp_path / "held00-3.tfrec", 3, bad=None)
    config = demo.demo_config(Path(SAMPLE)).override(**{"data.heldout_photos": shards})
    with pytest.raises(InputError, match=r"held-out photos .*held00-3.tfrec': 3 of sizes 16x16; "
                                         r"the demo needs at least 8 of one size"):
        demo.run(Path(SAMPLE), tmp_path / "out", config)
    assert not (tmp_path / "out").exists()


def test_a_demo_rerun_with_other_settings_names_the_demo_s_flags():
    message = ("w holds a run with train.steps_per_epoch=2, this run asks for 100: rerun with the "
               "same settings to resume, or choose another --workdir")
    assert cli._in_demo_flags(message) == (
        "w holds a run with --steps-per-epoch=2, this run asks for 100: rerun with the same "
        "settings to resume, or choose another --out")
