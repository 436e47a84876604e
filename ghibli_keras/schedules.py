"""The paper's learning-rate schedule: constant, then linear decay to zero."""

from __future__ import annotations

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="ghibli_keras")
class LinearDecay(keras.optimizers.schedules.LearningRateSchedule):
    """`initial_rate` for `decay_start` steps, then linearly to 0 at `total_steps`.

    The paper trains 100 epochs at 2e-4 and 100 more decaying to zero:
    `LinearDecay(2e-4, total_steps=200 * E, decay_start=100 * E)` for E steps per epoch.

    `offset` steps are added to the step an optimizer reports: the discriminators' optimizers
    do not count the generator-only warm-up steps (`train.warmup_steps`, see
    `CycleGAN._discriminator_step`), and with `offset=warmup_steps` their rate decays in step
    with the generators'.

    Example:
    >>> s = LinearDecay(1.0, total_steps=10, decay_start=5)
    >>> [round(float(s(i)), 2) for i in (0, 5, 6, 10, 12)]
    [1.0, 1.0, 0.8, 0.0, 0.0]
    >>> round(float(LinearDecay(1.0, total_steps=10, decay_start=5, offset=3)(3)), 2)
    0.8
    """

    def __init__(self, initial_rate: float, total_steps: int, decay_start: int, offset: int = 0):
        if initial_rate <= 0:
            raise ValueError(f"initial_rate must be positive, got {initial_rate}")
        if not 0 <= decay_start <= total_steps:
            raise ValueError(
                f"need 0 <= decay_start <= total_steps, got decay_start={decay_start}, "
                f"total_steps={total_steps}"
            )
        if offset < 0:
            raise ValueError(f"offset must be >= 0, got {offset}")
        self.initial_rate = float(initial_rate)
        self.total_steps = int(total_steps)
        self.decay_start = int(decay_start)
        self.offset = int(offset)

    def __call__(self, step):
        step = ops.cast(step, "float32") + self.offset
        span = max(self.total_steps - self.decay_start, 1)
        fraction = 1.0 - ops.maximum(step - self.decay_start, 0.0) / span
        return self.initial_rate * ops.clip(fraction, 0.0, 1.0)

    def get_config(self):
        return {
            "initial_rate": self.initial_rate,
            "total_steps": self.total_steps,
            "decay_start": self.decay_start,
            "offset": self.offset,
        }
