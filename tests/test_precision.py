"""Numerics are kept under mixed_bfloat16: a tiny-preset run in bf16 reaches the held-out PSNR
of the float32 run with the same seed, data and steps, within 0.3 dB."""

from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from conftest import SAMPLE
from ghibli_keras import data, demo, sample, training
from ghibli_keras import strategy as strategies
from ghibli_keras.callbacks import to_uint8

STEPS_PER_EPOCH, EPOCHS = 100, 4
HELDOUT = 32  # held-out photos scored
TOLERANCE_DB = 0.3


def train_and_score(config, photos: np.ndarray, targets: np.ndarray, precision: str) -> float:
    """PSNR of G(held-out photos) against stylize(photos) after training in `precision`."""
    d, t = config.data, config.train
    strategies.set_precision(precision, tf.distribute.get_strategy())
    keras.utils.set_random_seed(t.seed)
    dataset = data.training_dataset(d.photos, d.styles, t.batch_size, image_size=d.image_size,
                                    load_size=d.load_size, resize_on_device=True, seed=t.seed)
    model = training.build_model(config, STEPS_PER_EPOCH, jit_compile=True)
    model.fit(dataset, epochs=EPOCHS, steps_per_epoch=STEPS_PER_EPOCH, verbose=0, shuffle=False)
    translated = to_uint8(model.generator_g.predict(photos / 127.5 - 1.0, batch_size=16, verbose=0))
    return sample.psnr(translated, targets)


@pytest.mark.slow
def test_bf16_run_reaches_the_float32_psnr():
    # The tiny preset at batch 1; XLA, because emulated bf16 on a CPU without bf16 units is
    # several times slower without it.
    config = demo.demo_config(Path(SAMPLE)).override(**{
        "train.epochs": EPOCHS, "train.decay_epochs": EPOCHS // 2,
        "train.steps_per_epoch": STEPS_PER_EPOCH, "train.batch_size": 1, "train.seed": 0,
    })
    photos = np.stack(list(data.load_tfrecords(config.data.heldout_photos).as_numpy_iterator()))
    photos = photos[:HELDOUT]
    targets = np.stack([sample.stylize(p) for p in photos])
    baseline = sample.psnr(photos, targets)
    try:
        fp32 = train_and_score(config, photos, targets, "off")
        bf16 = train_and_score(config, photos, targets, "bf16")
    finally:
        keras.config.set_dtype_policy("float32")  # the policy is global: leave it as found
    print(f"held-out PSNR: identity {baseline:.2f} dB, fp32 {fp32:.2f} dB, bf16 {bf16:.2f} dB")
    # the fp32 run learned enough that a bf16 run that learned nothing would fail below
    assert fp32 > baseline + TOLERANCE_DB + 0.1, (baseline, fp32)
    assert abs(bf16 - fp32) <= TOLERANCE_DB, (fp32, bf16)
