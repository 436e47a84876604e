"""CycleGAN losses as pure functions of tensors, each returning one value per example `(B,)`.

Per-example values let the caller average over the *global* batch
(`tf.nn.compute_average_loss`), so an update is the same on one device or many.
Written with `keras.ops`, so they run on any Keras backend (the training API needs
TensorFlow; benchmarks/jax_step.py runs the same objective on JAX).
"""

from __future__ import annotations

from keras import ops

GAN_LOSSES = ("lsgan", "bce")


def _per_example_mean(values):
    """(B, ...) -> (B,), in float32 whatever the compute dtype."""
    values = ops.cast(values, "float32")
    return ops.mean(values, axis=tuple(range(1, len(values.shape))))


def adversarial(logits, real: bool, kind: str = "lsgan"):
    """How far the discriminator's patch logits `(B, h, w, 1)` are from saying `real`.

    lsgan: mean squared distance to 1 (real) or 0 (fake), the reference's choice;
    bce: sigmoid cross-entropy with logits, the original GAN loss.
    """
    logits = ops.cast(logits, "float32")
    target = ops.ones_like(logits) if real else ops.zeros_like(logits)
    if kind == "lsgan":
        return _per_example_mean(ops.square(logits - target))
    if kind == "bce":
        return _per_example_mean(ops.binary_crossentropy(target, logits, from_logits=True))
    raise ValueError(f"gan loss must be one of {GAN_LOSSES}, got {kind!r}")


def discriminator(real_logits, fake_logits, kind: str = "lsgan"):
    """The reference's discriminator loss: half the sum of the real and the fake terms."""
    return 0.5 * (adversarial(real_logits, True, kind) + adversarial(fake_logits, False, kind))


def l1(a, b):
    """Mean absolute difference per example: the cycle and identity losses."""
    return _per_example_mean(ops.abs(ops.cast(a, "float32") - ops.cast(b, "float32")))


def generator_objective(G, F, D_X, D_Y, x, y, *, lambda_cycle: float, lambda_identity: float,
                        gan_loss: str = "lsgan", adversarial_weight=1.0) -> dict:
    """The generators' joint objective of one step, per example.

    `G: X -> Y`, `F: Y -> X`, `D_X`, `D_Y` are callables on `(B, S, S, 3)` batches (the
    networks in training mode); `x`, `y` are `(B, S, S, 3)` in [-1, 1]. One objective trains
    both generators, as in the reference: each cycle term reaches both.
    `adversarial_weight` is 1 after the reconstruction-only warm-up, 0 during it (then the
    objective is `|G(x) - x| + |F(y) - y|`).

    Returns a dict of `(B,)` values `loss` (the objective), `g_adv`, `f_adv`, `cycle`,
    `identity` (zeros when `lambda_identity` is 0), and the fakes `fake_x = F(y)`,
    `fake_y = G(x)` for the discriminators' updates.
    """
    fake_y = G(x)  # G(x)
    fake_x = F(y)  # F(y)
    g_adv = adversarial(D_Y(fake_y), True, gan_loss)
    f_adv = adversarial(D_X(fake_x), True, gan_loss)
    cycle = l1(F(fake_y), x) + l1(G(fake_x), y)  # |F(G(x)) - x| + |G(F(y)) - y|
    if lambda_identity > 0:
        identity = l1(G(y), y) + l1(F(x), x)
    else:
        identity = ops.zeros_like(cycle)
    joint = g_adv + f_adv + lambda_cycle * cycle + lambda_cycle * lambda_identity * identity
    reconstruction = l1(fake_y, x) + l1(fake_x, y)
    loss = adversarial_weight * joint + (1.0 - adversarial_weight) * reconstruction  # (B,)
    return {"loss": loss, "g_adv": g_adv, "f_adv": f_adv, "cycle": cycle,
            "identity": identity, "fake_x": fake_x, "fake_y": fake_y}
