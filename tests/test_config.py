"""Configs: presets, JSON round trip, overrides and validation."""

import pytest

from ghibli_keras.config import PRESETS, Config, get_preset
from ghibli_keras.errors import InputError


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_presets_round_trip_through_json(name):
    config = get_preset(name)
    assert Config.from_json(config.to_json()) == config


def test_paper_preset_is_the_papers():
    c = get_preset("paper")
    assert (c.model.generator, c.model.n_blocks, c.data.image_size, c.data.load_size) == ("resnet", 9, 256, 286)
    assert (c.train.epochs, c.train.decay_epochs, c.train.lambda_cycle, c.train.lambda_identity) == (200, 100, 10.0, 0.5)
    assert (c.train.pool_size, c.train.gan_loss, c.train.learning_rate) == (50, "lsgan", 2e-4)


def test_kaggle_preset_is_the_tutorials_unet():
    c = get_preset("kaggle")
    assert c.model.generator == "unet" and c.data.image_size == 256 and c.train.gan_loss == "bce"


def test_override_and_validation():
    c = get_preset("tiny").override(**{"train.epochs": 3, "train.decay_epochs": 1, "data.image_size": 32, "data.load_size": 40})
    assert c.train.epochs == 3 and c.data.image_size == 32
    with pytest.raises(InputError, match="unknown config field 'train.nope'"):
        c.override(**{"train.nope": 1})
    with pytest.raises(InputError, match="multiple of 4, got 30"):
        c.override(**{"data.image_size": 30})
    with pytest.raises(InputError, match="gan_loss"):
        c.override(**{"train.gan_loss": "wgan"})
    with pytest.raises(InputError, match="U-Net generator needs image_size divisible by 256"):
        c.override(**{"model.generator": "unet"})
    with pytest.raises(InputError, match="unknown preset 'huge'"):
        get_preset("huge")


def test_sample_paths_are_found_from_another_folder(tmp_path, monkeypatch):
    import glob

    from ghibli_keras.config import SAMPLE_DIR, SAMPLE_PHOTOS, locate_sample

    assert locate_sample(SAMPLE_PHOTOS) == SAMPLE_PHOTOS  # tests run from the checkout's root
    monkeypatch.chdir(tmp_path)
    found = locate_sample(SAMPLE_PHOTOS)
    assert found != SAMPLE_PHOTOS and found.endswith(SAMPLE_PHOTOS) and glob.glob(found)
    assert locate_sample(SAMPLE_DIR).endswith(SAMPLE_DIR)
    assert locate_sample(f"{SAMPLE_DIR}/nothing/*.tfrec") == f"{SAMPLE_DIR}/nothing/*.tfrec"
    (tmp_path / SAMPLE_DIR).mkdir(parents=True)  # a folder of that name here comes first
    assert locate_sample(SAMPLE_DIR) == SAMPLE_DIR
