"""Memory stays flat while training: 200 steps of a tiny model through the real input pipeline
(uint8 jitter windows, image pool, four optimizers), resident memory sampled every 25 steps."""

import os

import keras
import numpy as np
import pytest

from conftest import tiny_test_config
from ghibli_keras import data, training

WARMUP_STEPS = 50  # tracing, allocator pools and the tf.data buffers fill up here
STEPS = 200
EVERY = 25
# Measured here: +3.5 MB over 200 steps (allocator noise). The limit catches leaks of 60 KB or
# more per step: a retrace per step (hundreds of KB each), an image pool that grows, a
# 2x64x64x3 float batch kept per step (~100 KB).
MAX_GROWTH_MB = 12.0


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


class RecordMemory(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.samples = []

    def on_epoch_end(self, epoch, logs=None):
        self.samples.append(rss_mb())


@pytest.mark.slow
@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="needs Linux's /proc")
def test_resident_memory_stays_flat_over_200_steps():
    config = tiny_test_config(**{"train.steps_per_epoch": EVERY})
    d, t = config.data, config.train
    dataset = data.training_dataset(d.photos, d.styles, t.batch_size, image_size=d.image_size,
                                    load_size=d.load_size, resize_on_device=True, seed=0)
    model = training.build_model(config, steps_per_epoch=EVERY)
    model.fit(dataset, epochs=WARMUP_STEPS // EVERY, steps_per_epoch=EVERY, verbose=0, shuffle=False)
    record = RecordMemory()
    model.fit(dataset, epochs=STEPS // EVERY, steps_per_epoch=EVERY, verbose=0, callbacks=[record],
              shuffle=False)
    samples = np.array(record.samples)
    growth = samples[-1] - samples[0]
    print("resident MB every", EVERY, "steps:", np.round(samples, 1).tolist())
    assert growth < MAX_GROWTH_MB, samples
    # no steady climb: the second half grows no more than the first
    half = len(samples) // 2
    assert samples[-1] - samples[half] <= max(samples[half] - samples[0], 0) + 4.0, samples
