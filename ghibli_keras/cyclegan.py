"""`CycleGAN(keras.Model)`: two generators, two discriminators, four optimizers, one
`train_step`. Nothing here knows about files or the command line.

Naming follows the paper: G: X -> Y (photo -> style), F: Y -> X, D_X judges X, D_Y judges Y.
"""

from __future__ import annotations

from functools import partial

import keras
import tensorflow as tf

from . import losses
from .data import finish_jitter
from .image_pool import ImagePool

DEFAULT_LEARNING_RATE = 2e-4
DEFAULT_BETA_1 = 0.5
_TRAIN_METRICS = (
    "g_loss",  # the joint generator objective
    "g_adv",  # D_Y(G(x)) adversarial term
    "f_adv",  # D_X(F(y)) adversarial term
    "cycle_loss",  # |F(G(x)) - x| + |G(F(y)) - y|
    "identity_loss",  # |G(y) - y| + |F(x) - x|
    "d_x_loss",
    "d_y_loss",
)


def default_optimizer(learning_rate=DEFAULT_LEARNING_RATE) -> keras.optimizers.Optimizer:
    """The paper's Adam(2e-4, beta_1=0.5)."""
    return keras.optimizers.Adam(learning_rate=learning_rate, beta_1=DEFAULT_BETA_1)


@keras.saving.register_keras_serializable(package="ghibli_keras")
class CycleGAN(keras.Model):
    """An unpaired image-to-image translator trained with `fit` on `(x, y)` batches.

    `model(x)` is G(x): photos in [-1, 1] to the style, in [-1, 1]. Train with
    `model.fit(data.training_dataset(photos, styles, batch))`.

    Args:
        generator_g: G, X -> Y.
        generator_f: F, Y -> X.
        discriminator_x: D_X, logits of "x is real".
        discriminator_y: D_Y, logits of "y is real".
        pool_size: fakes kept in each discriminator's history (the paper's 50; 0: none).
        image_size: side of the training crops (the history buffers hold images of this size).

    Example:
    >>> from ghibli_keras import models
    >>> nets = models.build_networks(ModelConfig(ngf=8, n_blocks=1, ndf=8))  # doctest: +SKIP
    >>> model = CycleGAN(**nets, image_size=64)                            # doctest: +SKIP
    >>> model.compile()                                                      # doctest: +SKIP
    >>> model.fit(training_dataset, steps_per_epoch=100, epochs=2)           # doctest: +SKIP
    """

    def __init__(
        self,
        generator_g: keras.Model,
        generator_f: keras.Model,
        discriminator_x: keras.Model,
        discriminator_y: keras.Model,
        pool_size: int = 50,
        image_size: int = 256,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if pool_size < 0 or image_size <= 0:
            raise ValueError(
                f"need pool_size >= 0 and image_size > 0, got {pool_size}, {image_size}"
            )
        self.generator_g = generator_g
        self.generator_f = generator_f
        self.discriminator_x = discriminator_x
        self.discriminator_y = discriminator_y
        self.pool_size = pool_size
        self.image_size = image_size
        shape = (image_size, image_size, 3)
        self.pool_x = ImagePool(pool_size, shape, name="pool_x")  # history of F(y)
        self.pool_y = ImagePool(pool_size, shape, name="pool_y")  # history of G(x)
        self.trackers = {name: keras.metrics.Mean(name=name) for name in _TRAIN_METRICS}
        self.built = True  # the four networks are built functional models

    # ---------------------------------------------------------------------------- inference

    def call(self, x, training=False):
        return self.generator_g(x, training=training)  # (B, H, W, 3) in [-1, 1]

    # ---------------------------------------------------------------------------- compile

    def compile(
        self,
        g_optimizer=None,
        f_optimizer=None,
        d_x_optimizer=None,
        d_y_optimizer=None,
        gan_loss: str = "lsgan",
        lambda_cycle: float = 10.0,
        lambda_identity: float = 0.5,
        warmup_steps: int = 0,
        **kwargs,
    ):
        """Sets the four optimizers (default Adam(2e-4, beta_1=0.5)) and the loss weights.

        Args:
            g_optimizer, f_optimizer, d_x_optimizer, d_y_optimizer: one optimizer per network.
                Create them (and this model) inside `strategy.scope()`.
            gan_loss: "lsgan" (the reference's) or "bce".
            lambda_cycle: weight of the cycle-consistency loss (10).
            lambda_identity: weight of the identity loss relative to `lambda_cycle` (0.5).
            warmup_steps: first steps train the generators only to reproduce their input
                (a reconstruction-only start, as CartoonGAN does); discriminators wait.
            **kwargs: passed to `keras.Model.compile` (`steps_per_execution`, `jit_compile`).
        """
        if gan_loss not in losses.GAN_LOSSES:
            raise ValueError(f"gan_loss must be one of {losses.GAN_LOSSES}, got {gan_loss!r}")
        if lambda_cycle < 0 or lambda_identity < 0 or warmup_steps < 0:
            raise ValueError(
                f"lambda_cycle, lambda_identity and warmup_steps must be >= 0, got "
                f"{lambda_cycle}, {lambda_identity}, {warmup_steps}"
            )
        self.gan_loss = gan_loss
        self.lambda_cycle = float(lambda_cycle)
        self.lambda_identity = float(lambda_identity)
        self.warmup_steps = int(warmup_steps)
        pairs = {
            "g_optimizer": (g_optimizer, self.generator_g),
            "f_optimizer": (f_optimizer, self.generator_f),
            "d_x_optimizer": (d_x_optimizer, self.discriminator_x),
            "d_y_optimizer": (d_y_optimizer, self.discriminator_y),
        }
        for attr, (optimizer, network) in pairs.items():
            optimizer = optimizer or default_optimizer()
            if keras.config.dtype_policy().name == "mixed_float16" and not isinstance(
                optimizer, keras.optimizers.LossScaleOptimizer
            ):
                optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
            # Build now: an optimizer creating its variables inside the distributed step fails
            # (keras#19246), and restoring a backup needs them to exist.
            optimizer.build(network.trainable_variables)
            setattr(self, attr, optimizer)
        # G's optimizer doubles as `model.optimizer` (what Keras's callbacks look at), so no
        # unused default optimizer is created, built over every weight and saved.
        super().compile(optimizer=self.g_optimizer, **kwargs)

    @property
    def optimizers(self) -> dict:
        return {
            "g": self.g_optimizer,
            "f": self.f_optimizer,
            "d_x": self.d_x_optimizer,
            "d_y": self.d_y_optimizer,
        }

    @property
    def metrics(self):
        return list(self.trackers.values())

    #: What `test_step` measures (reported as val_* during fit).
    EVALUATION_METRICS = ("cycle_loss", "identity_loss")

    def get_metrics_result(self):
        """The trackers' results that the running step function reports: Keras takes its logs
        from here (each tracker summed over the replicas) only when these keys are the ones
        `train_step` or `test_step` returns, else from the last step's values per replica —
        their plain mean under MirroredStrategy (off where a partial batch splits unevenly),
        the first replica's on a TPU. Training without the identity term (`lambda_identity`
        0) does not report identity_loss."""
        results = super().get_metrics_result()
        if self._evaluating:
            return {k: v for k, v in results.items() if k in self.EVALUATION_METRICS}
        if not self.lambda_identity:
            results.pop("identity_loss", None)
        return results

    _evaluating = False

    def evaluate(self, *args, **kwargs):
        """`keras.Model.evaluate` (which `fit` calls for its validation data too)."""
        evaluating, self._evaluating = self._evaluating, True
        try:
            return super().evaluate(*args, **kwargs)
        finally:
            self._evaluating = evaluating

    # ---------------------------------------------------------------------------- training

    def _global_average(self, per_example, x):
        """Mean over the global batch, so gradients summed over replicas are the global mean's."""
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        return tf.nn.compute_average_loss(per_example, global_batch_size=tf.shape(x)[0] * replicas)

    @staticmethod
    def _skip_together(*updates):
        """`(optimizer, gradients)` pairs -> the gradients, each list made non-finite where any
        list is, on any replica, when the optimizers scale the loss (`mixed_float16`).

        A `LossScaleOptimizer` skips a step whose gradients are not finite (and halves its
        scale). G and F learn from one objective, so a step one skips the other skips too (the
        reference's one scaler over both); and under a strategy Keras judges only the first
        replica's gradients before summing every replica's, so an overflow on another replica
        reached the weights as inf. One NaN in each list's first gradient makes every
        optimizer of `updates`, on every replica, skip the step."""
        if not all(isinstance(opt, keras.optimizers.LossScaleOptimizer) for opt, _ in updates):
            return [grads for _, grads in updates]
        finite = tf.reduce_all(tf.stack([opt.check_finite(grads) for opt, grads in updates]))
        context = tf.distribute.get_replica_context()
        if context is not None and context.num_replicas_in_sync > 1:
            overflows = context.all_reduce("sum", tf.cast(tf.logical_not(finite), tf.float32))
            finite = overflows == 0.0
        poison = tf.where(finite, 0.0, float("nan"))
        out = []
        for _, grads in updates:
            grads = list(grads)
            first = next((i for i, g in enumerate(grads) if g is not None), None)
            if first is not None:  # (no gradient at all: nothing to apply)
                grads[first] = grads[first] + tf.cast(poison, grads[first].dtype)
            out.append(grads)
        return out

    def _discriminator_step(self, discriminator, optimizer, real, fake, weight):
        """One update of a discriminator on real images and (pooled) fakes; used for both
        directions. Returns the per-example loss `(B,)`."""
        with tf.GradientTape() as tape:
            per_example = losses.discriminator(
                discriminator(real, training=True), discriminator(fake, training=True), self.gan_loss
            )
            loss = optimizer.scale_loss(weight * self._global_average(per_example, real))
        variables = discriminator.trainable_variables
        (grads,) = self._skip_together((optimizer, tape.gradient(loss, variables)))
        steps = tf.identity(optimizer.iterations.value) if self.warmup_steps else None
        optimizer.apply(grads, variables)
        if self.warmup_steps:
            # A warm-up step (weight 0) must leave the optimizer as it was: its zero gradients
            # leave Adam's moments at 0, and the step count goes back too, or the first real
            # steps would find Adam's bias correction spent and move ~10x too far. (Back to
            # what it was, not one less: a step mixed_float16 skipped did not count.)
            optimizer.iterations.assign(tf.where(weight > 0, optimizer.iterations.value, steps))
        return per_example

    def _pair(self, data, step: str):
        """A batch's `(x, y)`, checked while tracing (so a wrong dataset fails with a message
        before anything runs): two `(B, H, W, 3)` tensors whose known sides the generators
        take (multiples of `models.size_multiple`)."""
        from .models import size_multiple

        if not (isinstance(data, (tuple, list)) and len(data) == 2):
            got = f"a {type(data).__name__} of {len(data)}" if isinstance(data, (tuple, list)) \
                else f"one tensor of shape {getattr(data, 'shape', '?')}"
            raise ValueError(f"CycleGAN.{step} takes (photos, styles) batches, as "
                             f"data.training_dataset(photos, styles, batch_size) gives; got {got}")
        multiple = size_multiple(self.generator_g)
        for name, images in zip(("photos (x)", "styles (y)"), data):
            shape = images.shape
            if shape.rank != 4 or shape[-1] != 3:
                raise ValueError(f"CycleGAN.{step}: {name} must be (B, H, W, 3) images, got "
                                 f"shape {shape}")
            if images.dtype != tf.uint8 and any(n is not None and n % multiple for n in shape[1:3]):
                raise ValueError(f"CycleGAN.{step}: {name} of shape {shape}: the generators take "
                                 f"sides that are multiples of {multiple}")
        return data

    def train_step(self, data):
        # (B, S, S, 3) in [-1, 1], or uint8 jitter windows; B: this replica's share
        x, y = self._pair(data, "fit")
        x = finish_jitter(x, self.image_size)  # (B, S, S, 3) in [-1, 1]
        y = finish_jitter(y, self.image_size)
        # 0 during the reconstruction-only warm-up, then 1.
        adversarial = tf.cast(self.g_optimizer.iterations >= self.warmup_steps, tf.float32)
        G, F, D_X, D_Y = (partial(net, training=True) for net in (
            self.generator_g, self.generator_f, self.discriminator_x, self.discriminator_y))
        with tf.GradientTape(persistent=True) as tape:
            out = losses.generator_objective(
                G, F, D_X, D_Y, x, y,
                lambda_cycle=self.lambda_cycle, lambda_identity=self.lambda_identity,
                gan_loss=self.gan_loss, adversarial_weight=adversarial,
            )
            per_example = out["loss"]  # (B,)
            g_loss = self._global_average(per_example, x)
            # each optimizer its own loss scale (mixed_float16), inside the tape
            g_scaled = self.g_optimizer.scale_loss(g_loss)
            f_scaled = self.f_optimizer.scale_loss(g_loss)
        g_vars = self.generator_g.trainable_variables
        f_vars = self.generator_f.trainable_variables
        g_grads, f_grads = self._skip_together((self.g_optimizer, tape.gradient(g_scaled, g_vars)),
                                               (self.f_optimizer, tape.gradient(f_scaled, f_vars)))
        del tape
        self.g_optimizer.apply(g_grads, g_vars)
        self.f_optimizer.apply(f_grads, f_vars)

        d_x = self._discriminator_step(
            self.discriminator_x, self.d_x_optimizer, x, self.pool_x(out["fake_x"]), adversarial
        )
        d_y = self._discriminator_step(
            self.discriminator_y, self.d_y_optimizer, y, self.pool_y(out["fake_y"]), adversarial
        )
        values = {
            "g_loss": per_example, "g_adv": out["g_adv"], "f_adv": out["f_adv"],
            "cycle_loss": out["cycle"], "identity_loss": out["identity"],
            "d_x_loss": d_x, "d_y_loss": d_y,
        }
        if not self.lambda_identity:  # not computed, so not logged (val_identity_loss is)
            del values["identity_loss"]
        for name, value in values.items():
            self.trackers[name].update_state(value)
        return {name: self.trackers[name].result() for name in values}

    def test_step(self, data):
        """Cycle and identity losses on held-out `(x, y)` pairs (reported as val_*)."""
        x, y = self._pair(data, "evaluate")
        G, F = self.generator_g, self.generator_f
        fake_y, fake_x = G(x, training=False), F(y, training=False)
        cycle = losses.l1(F(fake_y, training=False), x) + losses.l1(G(fake_x, training=False), y)
        identity = losses.l1(G(y, training=False), y) + losses.l1(F(x, training=False), x)
        self.trackers["cycle_loss"].update_state(cycle)
        self.trackers["identity_loss"].update_state(identity)
        return {name: self.trackers[name].result() for name in self.EVALUATION_METRICS}

    # ---------------------------------------------------------------------------- saving

    def get_config(self):
        serialize = keras.saving.serialize_keras_object
        return {
            "name": self.name,
            "trainable": self.trainable,
            "generator_g": serialize(self.generator_g),
            "generator_f": serialize(self.generator_f),
            "discriminator_x": serialize(self.discriminator_x),
            "discriminator_y": serialize(self.discriminator_y),
            "pool_size": self.pool_size,
            "image_size": self.image_size,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        for key in ("generator_g", "generator_f", "discriminator_x", "discriminator_y"):
            config[key] = keras.saving.deserialize_keras_object(config[key])
        return cls(**config)

    def get_compile_config(self):
        if not self.compiled:
            return None
        serialize = keras.saving.serialize_keras_object
        return {
            **{name: serialize(opt) for name, opt in self._optimizer_attrs()},
            "gan_loss": self.gan_loss,
            "lambda_cycle": self.lambda_cycle,
            "lambda_identity": self.lambda_identity,
            "warmup_steps": self.warmup_steps,
        }

    def compile_from_config(self, config):
        config = dict(config)
        for name, _ in self._optimizer_attrs(named_only=True):
            config[name] = keras.saving.deserialize_keras_object(config[name])
        self.compile(**config)

    def _optimizer_attrs(self, named_only=False):
        names = ("g_optimizer", "f_optimizer", "d_x_optimizer", "d_y_optimizer")
        return [(n, None if named_only else getattr(self, n)) for n in names]
