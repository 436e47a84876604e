"""CycleGAN losses as pure functions of tensors, each returning one value per example `(B,)`.

Per-example values let the caller average over the *global* batch
(`tf.nn.compute_average_loss`), so an update is the same on one device or many.
"""

from __future__ import annotations

import tensorflow as tf

GAN_LOSSES = ("lsgan", "bce")


def _per_example_mean(values: tf.Tensor) -> tf.Tensor:
    """(B, ...) -> (B,), in float32 whatever the compute dtype."""
    values = tf.cast(values, tf.float32)
    return tf.reduce_mean(tf.reshape(values, [tf.shape(values)[0], -1]), axis=1)


def adversarial(logits: tf.Tensor, real: bool, kind: str = "lsgan") -> tf.Tensor:
    """How far the discriminator's patch logits `(B, h, w, 1)` are from saying `real`.

    lsgan: mean squared distance to 1 (real) or 0 (fake), the reference's choice;
    bce: sigmoid cross-entropy with logits, the original GAN loss.
    """
    logits = tf.cast(logits, tf.float32)
    target = tf.ones_like(logits) if real else tf.zeros_like(logits)
    if kind == "lsgan":
        return _per_example_mean(tf.square(logits - target))
    if kind == "bce":
        return _per_example_mean(tf.nn.sigmoid_cross_entropy_with_logits(target, logits))
    raise ValueError(f"gan loss must be one of {GAN_LOSSES}, got {kind!r}")


def discriminator(real_logits: tf.Tensor, fake_logits: tf.Tensor, kind: str = "lsgan") -> tf.Tensor:
    """The reference's discriminator loss: half the sum of the real and the fake terms."""
    return 0.5 * (adversarial(real_logits, True, kind) + adversarial(fake_logits, False, kind))


def l1(a: tf.Tensor, b: tf.Tensor) -> tf.Tensor:
    """Mean absolute difference per example: the cycle and identity losses."""
    return _per_example_mean(tf.abs(tf.cast(a, tf.float32) - tf.cast(b, tf.float32)))
