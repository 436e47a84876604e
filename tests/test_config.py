"""Configs: presets, JSON round trip, overrides and validation."""

import dataclasses

import numpy as np
import pytest

from ghibli_keras.config import PRESETS, Config, get_preset, smallest_crop
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


@pytest.mark.parametrize("preset", ["tiny", "paper"])
def test_smallest_crop_is_the_smallest_the_networks_take(preset):
    """At the smallest crop G and D run (D's logits 1x1); 4 pixels less, one of them cannot,
    and the config refuses that size, naming the smallest."""
    import keras

    from ghibli_keras import models

    model = get_preset(preset).model
    smallest = smallest_crop(model)
    assert smallest == {"tiny": 12, "paper": 24}[preset]
    networks = models.build_networks(dataclasses.replace(model, ngf=4, ndf=4))
    g, d = networks["generator_g"], networks["discriminator_x"]
    x = np.zeros((1, smallest, smallest, 3), "float32")
    assert g(x).shape == x.shape and d(x).shape == (1, 1, 1, 1)
    too_small = np.zeros((1, smallest - 4, smallest - 4, 3), "float32")
    try:  # D's logits come out empty here (in training TensorFlow fails), or Keras refuses
        logits = d(too_small)
    except ValueError:
        logits = np.zeros((1, 0, 0, 1))
    assert np.prod(keras.ops.shape(logits)) == 0
    with pytest.raises(InputError, match=f"image_size \\(--image-size\\) {smallest - 4} is smaller .* at least {smallest}"):
        get_preset(preset).override(**{"data.image_size": smallest - 4, "data.load_size": smallest})


def test_kaggle_preset_is_the_tutorials_unet():
    c = get_preset("kaggle")
    assert c.model.generator == "unet" and c.data.image_size == 256 and c.train.gan_loss == "bce"


def test_kaggle_preset_finds_the_competition_data_in_either_layout(tmp_path, monkeypatch):
    from ghibli_keras import config

    monkeypatch.setattr(config, "KAGGLE_INPUT", str(tmp_path))
    classic = f"{tmp_path}/gan-getting-started/photo_tfrec/*.tfrec"
    assert get_preset("kaggle").data.photos == classic  # neither: the classic path, named
    (tmp_path / "competitions" / "gan-getting-started" / "photo_tfrec").mkdir(parents=True)
    c = get_preset("kaggle")
    assert c.data.photos == f"{tmp_path}/competitions/gan-getting-started/photo_tfrec/*.tfrec"
    assert c.data.styles == f"{tmp_path}/gan-getting-started/monet_tfrec/*.tfrec"
    (tmp_path / "gan-getting-started" / "photo_tfrec").mkdir(parents=True)
    assert get_preset("kaggle").data.photos == classic


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


@pytest.mark.parametrize("raw, message", [
    ("{bad", "TF_CONFIG is not valid JSON"),
    ("[1]", "TF_CONFIG must be a JSON object with a 'cluster' object, e.g."),
    ('{"cluster": {"worker": "h:1"}}', "cluster['worker'] must be a list of 'host:port' addresses, got 'h:1'"),
    ('{"cluster": {"worker": ["h:1"]}, "task": {"type": "chief", "index": 0}}',
     "task type 'chief' is not in the cluster (worker)"),
    ('{"cluster": {"worker": ["h:1", "h:2"]}, "task": {"type": "worker", "index": 2}}',
     "task index 2 is out of range: the cluster has 2 worker task(s), indices 0..1"),
])
def test_tf_config_errors_say_what_is_wrong(raw, message):
    from ghibli_keras.config import tf_config

    with pytest.raises(InputError) as info:
        tf_config(raw)
    assert message in str(info.value)


def test_tf_config_unset_or_valid():
    from ghibli_keras.config import tf_config

    assert tf_config("") == {}
    two = '{"cluster": {"chief": ["h:1"], "worker": ["h:2"]}, "task": {"type": "worker", "index": 0}}'
    assert tf_config(two)["cluster"]["worker"] == ["h:2"]


def test_norm_epsilon_must_be_positive():
    with pytest.raises(InputError, match="model.norm_epsilon must be positive, got 0.0"):
        get_preset("tiny").override(**{"model.norm_epsilon": 0.0}).validated()
