"""The CycleGAN model: one fit step, strategy invariance, saving, evaluation."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import ghibli_keras  # noqa: F401  (registers the classes for load_model)
from ghibli_keras import models
from ghibli_keras.config import ModelConfig
from ghibli_keras.cyclegan import CycleGAN

SMALL = ModelConfig(ngf=4, n_blocks=1, ndf=4, n_layers=2)
SIZE = 32


def _model(pool_size=4, seed=0, **compile_kwargs):
    model = CycleGAN(**models.build_networks(SMALL, seed=seed), pool_size=pool_size, image_size=SIZE)
    model.compile(**compile_kwargs)
    return model


def _batch(n=4, seed=0):
    rng = np.random.default_rng(seed)
    return tuple(rng.uniform(-1, 1, (n, SIZE, SIZE, 3)).astype("float32") for _ in range(2))


def _networks(model):
    return [model.generator_g, model.generator_f, model.discriminator_x, model.discriminator_y]


@pytest.mark.parametrize("policy", ["float32", "mixed_float16"])
def test_one_fit_step_updates_all_four_networks_with_finite_losses(policy, float32_after):
    """Also under mixed_float16, whose loss-scale optimizers need the scaled losses computed
    inside the tape (scaled outside it, no variable had a gradient)."""
    keras.config.set_dtype_policy(policy)
    model = _model()
    scaled = isinstance(model.g_optimizer, keras.optimizers.LossScaleOptimizer)
    assert scaled is (policy == "mixed_float16")
    before = [[w.copy() for w in net.get_weights()] for net in _networks(model)]
    history = model.fit(tf.data.Dataset.from_tensors(_batch()).repeat(), steps_per_epoch=1, epochs=1, verbose=0)
    for net, old in zip(_networks(model), before):
        assert any(not np.array_equal(a, b) for a, b in zip(net.get_weights(), old)), net.name
    for name in ("g_loss", "g_adv", "f_adv", "cycle_loss", "identity_loss", "d_x_loss", "d_y_loss"):
        assert np.isfinite(history.history[name][0]), name
    assert {k: int(o.iterations.numpy()) for k, o in model.optimizers.items()} == {"g": 1, "f": 1, "d_x": 1, "d_y": 1}


def test_fp16_generator_steps_are_skipped_together(float32_after):
    """G's loss scale overflows float16 (its gradients inf), F's does not: one objective
    trains both, so both skip the step, as the reference's one scaler does (F's optimizer
    used to step alone)."""
    keras.config.set_dtype_policy("mixed_float16")
    scaled = lambda scale: keras.optimizers.LossScaleOptimizer(  # noqa: E731
        keras.optimizers.SGD(0.1), initial_scale=scale)
    model = _model(g_optimizer=scaled(2.0 ** 100), f_optimizer=scaled(1.0))
    before = [w.copy() for w in model.generator_f.get_weights()]
    model.fit(tf.data.Dataset.from_tensors(_batch()), epochs=1, verbose=0)
    assert int(model.g_optimizer.iterations) == int(model.f_optimizer.iterations) == 0
    assert float(model.f_optimizer.dynamic_scale) == 0.5  # halved, as G's was
    for a, b in zip(model.generator_f.get_weights(), before):
        np.testing.assert_array_equal(a, b)
    assert int(model.d_x_optimizer.iterations) == 1  # the discriminators' own losses were finite


def test_an_overflow_on_any_replica_skips_the_step_on_all():
    """Keras' LossScaleOptimizer judges only the first replica's gradients under a strategy;
    _skip_together makes an inf on the second replica (or in the other optimizer's gradients)
    non-finite everywhere, and leaves finite ones and float32 optimizers alone. (Reduced on
    one device: a second strategy's collectives in this process would reuse these' keys.)"""
    strategy = tf.distribute.MirroredStrategy(
        ["/cpu:0", "/cpu:1"], cross_device_ops=tf.distribute.ReductionToOneDevice())
    scaled = keras.optimizers.LossScaleOptimizer(keras.optimizers.SGD(0.1))
    plain = keras.optimizers.SGD(0.1)

    @tf.function
    def run(bad_replica):
        def fn():
            replica = tf.distribute.get_replica_context().replica_id_in_sync_group
            bad = tf.where(tf.equal(replica, bad_replica), float("inf"), 1.0)
            g, f = CycleGAN._skip_together((scaled, [None, tf.ones(2)]),
                                           (scaled, [tf.fill([3], bad)]))
            (kept,) = CycleGAN._skip_together((plain, [tf.fill([3], bad)]))
            return tf.reduce_all(tf.math.is_finite(g[1])), tf.reduce_all(tf.math.is_finite(kept[0]))
        return [strategy.experimental_local_results(r) for r in strategy.run(fn)]

    for bad_replica, finite in ((1, False), (0, False), (-1, True)):
        g_finite, kept_finite = run(tf.constant(bad_replica))
        assert [bool(v) for v in g_finite] == [finite, finite], bad_replica
        assert [bool(v) for v in kept_finite] == [r != bad_replica for r in (0, 1)]


def test_train_step_finishes_uint8_jitter_windows_itself():
    """uint8 windows (what train()'s pipeline yields) train exactly as the float crops that
    finish_jitter makes of them on the host."""
    from ghibli_keras.data import finish_jitter

    rng = np.random.default_rng(1)
    windows = tuple(tf.constant(rng.integers(0, 256, (2, 29, 29, 3)), tf.uint8) for _ in range(2))
    finished = tuple(finish_jitter(w, SIZE) for w in windows)
    weights = []
    for batch in (windows, finished):
        model = _model(pool_size=0, seed=3, **{  # no pool: nothing random in the step; SGD:
            name: keras.optimizers.SGD(0.5)  # Adam would magnify rounding in tiny gradients
            for name in ("g_optimizer", "f_optimizer", "d_x_optimizer", "d_y_optimizer")
        })
        model.fit(tf.data.Dataset.from_tensors(batch).repeat(), steps_per_epoch=1, epochs=1, verbose=0)
        weights.append(model.generator_g.get_weights())
    for a, b in zip(*weights):  # equal up to rounding (XLA's resize vs TensorFlow's)
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-5)


def test_joint_generator_loss_gives_g_gradient_from_the_x_cycle():
    """|F(G(x)) - x| must train G too (the keras-io example's split losses do not)."""
    model = _model(lambda_identity=0.0)
    x, y = _batch()
    with tf.GradientTape() as tape:
        cycle = tf.reduce_mean(tf.abs(model.generator_f(model.generator_g(x, training=True), training=True) - x))
    grads = tape.gradient(cycle, model.generator_g.trainable_variables)
    assert all(g is not None for g in grads) and any(float(tf.reduce_max(tf.abs(g))) > 0 for g in grads)


def test_same_update_on_one_device_and_under_mirrored_strategy():
    """SGD, not Adam: Adam's update ignores the gradient's scale, so it would hide a loss that
    is averaged over the local instead of the global batch."""
    batch = _batch(4)

    def run(strategy):
        with strategy.scope():
            model = _model(pool_size=50, **{
                name: keras.optimizers.SGD(0.5)
                for name in ("g_optimizer", "f_optimizer", "d_x_optimizer", "d_y_optimizer")
            })
        model.fit(tf.data.Dataset.from_tensors(batch), epochs=1, verbose=0)
        return [w for net in _networks(model) for w in net.get_weights()]

    single = run(tf.distribute.get_strategy())
    mirrored_strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    assert mirrored_strategy.num_replicas_in_sync == 2
    mirrored = run(mirrored_strategy)
    for a, b in zip(single, mirrored):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_keras_save_and_load_round_trip(tmp_path):
    model = _model()
    model.fit(tf.data.Dataset.from_tensors(_batch()).repeat(), steps_per_epoch=2, epochs=1, verbose=0)
    path = tmp_path / "cyclegan.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    x = _batch(2, seed=5)[0]
    np.testing.assert_allclose(loaded(x), model(x), atol=1e-6)
    assert loaded(x).shape == x.shape and float(tf.reduce_max(tf.abs(loaded(x)))) <= 1.0
    assert {k: int(o.iterations.numpy()) for k, o in loaded.optimizers.items()} == {"g": 2, "f": 2, "d_x": 2, "d_y": 2}
    for a, b in zip(loaded.g_optimizer.variables, model.g_optimizer.variables):
        np.testing.assert_allclose(a.numpy(), b.numpy())
    assert (loaded.gan_loss, loaded.lambda_cycle, loaded.lambda_identity) == ("lsgan", 10.0, 0.5)


def test_an_identity_loss_not_computed_is_not_logged():
    """With lambda_identity 0 (the tiny preset) training does not compute the identity loss,
    so it logs none (it used to log 0); validation still measures it."""
    model = _model(lambda_identity=0.0)
    data = tf.data.Dataset.from_tensors(_batch())
    history = model.fit(data, validation_data=data, epochs=1, verbose=0)
    assert "identity_loss" not in history.history and "cycle_loss" in history.history
    assert history.history["val_identity_loss"][0] > 0
    # the epoch's logs still come from the metrics (summed over replicas), not the last step's
    trained = {k for k in history.history if not k.startswith("val_")}
    assert set(model.get_metrics_result()) == trained


def test_validation_losses_are_the_mean_over_every_example_under_a_strategy():
    """Seven held-out pairs in batches of four and three over two replicas (the last split
    two and one): val losses are the mean over the seven, read from the metrics; the last
    step's values per replica averaged gave (mean of four + mean of three) / 2."""
    from ghibli_keras import losses

    strategy = tf.distribute.MirroredStrategy(
        ["/cpu:0", "/cpu:1"], cross_device_ops=tf.distribute.ReductionToOneDevice())
    with strategy.scope():
        model = _model()
    x, y = _batch(7, seed=4)
    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(4)
    result = model.evaluate(data, verbose=0, return_dict=True)
    G, F = model.generator_g, model.generator_f
    cycle = losses.l1(F(G(x)), x) + losses.l1(G(F(y)), y)  # (7,)
    identity = losses.l1(G(y), y) + losses.l1(F(x), x)
    np.testing.assert_allclose(result["cycle_loss"], np.mean(cycle), rtol=1e-5)
    np.testing.assert_allclose(result["identity_loss"], np.mean(identity), rtol=1e-5)


def test_test_step_reports_cycle_and_identity():
    model = _model()
    result = model.evaluate(tf.data.Dataset.from_tensors(_batch()), verbose=0, return_dict=True)
    assert set(result) == {"cycle_loss", "identity_loss"}
    assert all(np.isfinite(v) and v > 0 for v in result.values())


@pytest.mark.parametrize("replicas", [1, 2])
def test_warmup_trains_generators_only_and_leaves_adam_fresh(replicas):
    """During warm-up the discriminators and their optimizers stay as they were: no weight
    moves, and Adam's step count stays 0 (advanced, it would spend the bias correction and the
    first real updates would be ~10x the learning rate). Also under MirroredStrategy."""
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]) if replicas == 2 \
        else tf.distribute.get_strategy()
    with strategy.scope():
        model = _model(warmup_steps=3)
    d_before = [w.copy() for w in model.discriminator_y.get_weights()]
    data = tf.data.Dataset.from_tensors(_batch()).repeat()
    model.fit(data, steps_per_epoch=3, epochs=1, verbose=0)
    for a, b in zip(model.discriminator_y.get_weights(), d_before):
        np.testing.assert_array_equal(a, b)
    steps = {k: int(o.iterations.numpy()) for k, o in model.optimizers.items()}
    assert steps == {"g": 3, "f": 3, "d_x": 0, "d_y": 0}
    model.fit(data, steps_per_epoch=2, epochs=1, verbose=0)
    steps = {k: int(o.iterations.numpy()) for k, o in model.optimizers.items()}
    assert steps == {"g": 5, "f": 5, "d_x": 2, "d_y": 2}
    assert any(not np.array_equal(a, b) for a, b in zip(model.discriminator_y.get_weights(), d_before))


def test_bad_compile_arguments():
    model = CycleGAN(**models.build_networks(SMALL), image_size=SIZE)
    with pytest.raises(ValueError, match="gan_loss must be one of"):
        model.compile(gan_loss="hinge")
    with pytest.raises(ValueError, match="pool_size"):
        CycleGAN(**models.build_networks(SMALL), pool_size=-1)


def test_batches_that_are_not_photo_style_pairs_are_named():
    model = _model()
    x, y = _batch()
    for data, message in [
        (x, r"CycleGAN.fit takes \(photos, styles\) batches, .* got one tensor of shape \(4, 32, 32, 3\)"),
        ((x, y, x), "got a tuple of 3"),
        ((x[:, :30, :30], y), r"photos \(x\) of shape \(4, 30, 30, 3\): .* multiples of 4"),
        ((x, y[..., :1]), r"styles \(y\) must be \(B, H, W, 3\) images, got shape \(4, 32, 32, 1\)"),
    ]:
        with pytest.raises(ValueError, match=message):
            model.fit(tf.data.Dataset.from_tensors(data).repeat(), steps_per_epoch=1, verbose=0)
    with pytest.raises(ValueError, match="CycleGAN.evaluate takes"):
        model.evaluate(tf.data.Dataset.from_tensors(x), verbose=0)


def test_a_skipped_fp16_warmup_step_leaves_the_step_count_as_it_was(float32_after):
    """A warm-up step whose gradients overflow is skipped by the loss-scale optimizer (its
    step count stays); the warm-up's undoing of the step must not then take it below 0."""
    keras.config.set_dtype_policy("mixed_float16")
    model = _model(warmup_steps=2)
    x, y = _batch()
    bad = (np.full_like(x, np.nan), y)  # (its NaN fakes are not pooled: D_Y's steps stay finite)
    model.fit(tf.data.Dataset.from_tensors(bad), epochs=1, verbose=0)
    steps = {k: int(o.iterations.numpy()) for k, o in model.optimizers.items()}
    assert steps == {"g": 0, "f": 0, "d_x": 0, "d_y": 0}
    model.fit(tf.data.Dataset.from_tensors((x, y)).repeat(), steps_per_epoch=3, verbose=0)
    steps = {k: int(o.iterations.numpy()) for k, o in model.optimizers.items()}
    assert steps == {"g": 3, "f": 3, "d_x": 1, "d_y": 1}
