"""Losses, the image pool and the learning-rate schedule."""

import numpy as np
import pytest
import tensorflow as tf

from ghibli_keras import losses
from ghibli_keras.image_pool import ImagePool
from ghibli_keras.schedules import LinearDecay


def test_losses_per_example():
    logits = tf.constant(np.full((2, 3, 3, 1), 0.5, np.float32))
    np.testing.assert_allclose(losses.adversarial(logits, True), [0.25, 0.25])
    np.testing.assert_allclose(losses.adversarial(logits, False), [0.25, 0.25])
    bce = losses.adversarial(tf.zeros((2, 3, 3, 1)), True, "bce")
    np.testing.assert_allclose(bce, [np.log(2)] * 2, rtol=1e-6)
    d = losses.discriminator(tf.ones((1, 2, 2, 1)), tf.zeros((1, 2, 2, 1)))
    np.testing.assert_allclose(d, [0.0])
    a, b = tf.zeros((2, 4, 4, 3)), tf.concat([tf.zeros((1, 4, 4, 3)), tf.ones((1, 4, 4, 3))], 0)
    np.testing.assert_allclose(losses.l1(a, b), [0.0, 1.0])
    with pytest.raises(ValueError, match="wgan"):
        losses.adversarial(logits, True, "wgan")


def test_generator_objective_terms():
    x = tf.random.uniform((2, 4, 4, 3), -1, 1)
    y = tf.random.uniform((2, 4, 4, 3), -1, 1)
    identity = lambda t: t  # noqa: E731
    says_fake = lambda t: tf.zeros((tf.shape(t)[0], 2, 2, 1))  # noqa: E731  (logits 0: LSGAN 1)
    out = losses.generator_objective(identity, identity, says_fake, says_fake, x, y,
                                     lambda_cycle=10.0, lambda_identity=0.5)
    np.testing.assert_allclose(out["g_adv"], [1.0, 1.0])
    np.testing.assert_allclose(out["cycle"], [0.0, 0.0])
    np.testing.assert_allclose(out["identity"], [0.0, 0.0])
    np.testing.assert_allclose(out["loss"], [2.0, 2.0])  # g_adv + f_adv
    # G shifts by 0.5: cycles |F(G(x)) - x| = 0.5 and |G(F(y)) - y| = 0.5, identity |G(y) - y| = 0.5
    shift = lambda t: t + 0.5  # noqa: E731
    out = losses.generator_objective(shift, identity, says_fake, says_fake, x, y,
                                     lambda_cycle=10.0, lambda_identity=0.5)
    np.testing.assert_allclose(out["cycle"], [1.0, 1.0], rtol=1e-6)
    np.testing.assert_allclose(out["identity"], [0.5, 0.5], rtol=1e-6)
    np.testing.assert_allclose(out["loss"], [2.0 + 10.0 + 10.0 * 0.5 * 0.5] * 2, rtol=1e-6)
    np.testing.assert_allclose(out["fake_y"], x + 0.5)
    # warm-up (adversarial weight 0): only |G(x) - x| + |F(y) - y| = 0.5
    out = losses.generator_objective(shift, identity, says_fake, says_fake, x, y,
                                     lambda_cycle=10.0, lambda_identity=0.0, adversarial_weight=0.0)
    np.testing.assert_allclose(out["loss"], [0.5, 0.5], rtol=1e-6)
    np.testing.assert_allclose(out["identity"], [0.0, 0.0])


def _images(values):
    return tf.constant(np.stack([np.full((2, 2, 3), v, np.float32) for v in values]))


def _values(batch):
    return [float(v) for v in batch.numpy().mean(axis=(1, 2, 3))]


def test_pool_fills_then_mixes_history():
    tf.random.set_seed(0)
    pool = ImagePool(3, (2, 2, 3))
    assert _values(pool(_images([1, 2]))) == [1, 2]  # filling: returned as given
    assert _values(pool(_images([3]))) == [3]
    assert int(pool.count.numpy()) == 3
    seen_old, seen_new = False, False
    for step in range(20):
        new = 10 + step
        (out,) = _values(pool(_images([new])))
        seen_new |= out == new
        seen_old |= out != new
        stored = sorted(_values(tf.convert_to_tensor(pool.images)))
        assert len(stored) == 3
        if out != new:  # a swap: the old image left the pool, the new one entered
            assert out not in stored and new in stored
    assert seen_old and seen_new


def test_non_finite_fakes_pass_through_the_pool_unstored():
    """A float16 overflow's NaN fake is shown once (that discriminator step is skipped) but
    never kept: stored, it would come back and make later steps non-finite too."""
    pool = ImagePool(2, (2, 2, 3))
    out = pool(_images([np.nan, 1, np.nan, 2, np.inf]))
    assert np.isnan(_values(out)[0]) and np.isinf(_values(out)[4])
    assert sorted(_values(tf.convert_to_tensor(pool.images))) == [1, 2]
    for _ in range(10):
        pool(_images([np.nan]))
        assert np.isfinite(pool.images.numpy()).all()


def test_pool_of_size_zero_is_identity():
    x = _images([1, 2, 3])
    np.testing.assert_array_equal(ImagePool(0, (2, 2, 3))(x), x)


def test_pool_in_a_tf_function():
    pool = ImagePool(2, (2, 2, 3))
    f = tf.function(lambda x: pool(x))
    assert f(_images([1, 2, 3])).shape == (3, 2, 2, 3)
    assert int(pool.count.numpy()) == 2


def test_linear_decay_values_and_config():
    s = LinearDecay(2e-4, total_steps=200, decay_start=100)
    values = [float(s(step)) for step in (0, 99, 100, 150, 199, 200, 250)]
    np.testing.assert_allclose(values, [2e-4, 2e-4, 2e-4, 1e-4, 2e-6, 0.0, 0.0], rtol=1e-5, atol=1e-12)
    assert LinearDecay.from_config(s.get_config()).get_config() == s.get_config()
    shifted = LinearDecay(2e-4, total_steps=200, decay_start=100, offset=50)
    assert float(shifted(100)) == float(s(150))
    assert LinearDecay.from_config(shifted.get_config()).offset == 50
    with pytest.raises(ValueError, match="decay_start"):
        LinearDecay(1e-3, total_steps=10, decay_start=11)


def test_a_multiworker_rerun_knows_its_epoch_before_the_data_is_made(tmp_path, caplog):
    """The data seed of a resumed run moves on with the epochs done (training.RESUME_SEED_STEP);
    under several workers the epoch comes from their loop's own backup (it was taken as 0, so
    a resumed run replayed the first epochs' shuffles and crops). A pair that does not read
    whole is logged once per resume, by the restore."""
    import keras

    from ghibli_keras import multiworker, training

    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    assert training.resumed_epochs(tmp_path, multiworker=True) == 0
    multiworker._save_backup(model, tmp_path / "backup", 2)
    multiworker._save_backup(model, tmp_path / "backup", 3)
    assert training.resumed_epochs(tmp_path, multiworker=True) == 3
    (tmp_path / "backup" / multiworker.METADATA).write_text("{")  # cut short: the one before
    caplog.clear()
    assert training.resumed_epochs(tmp_path, multiworker=True) == 2
    restored = keras.models.clone_model(model)
    assert multiworker._restore_backup(restored, tmp_path / "backup") == 2  # fit agrees
    assert [r.getMessage().split()[:2] for r in caplog.records if r.levelname == "WARNING"] == [
        ["backup", str(tmp_path / "backup" / multiworker.WEIGHTS)]]
    for epoch in (2, 3):
        multiworker._save_backup(model, tmp_path / "backup", epoch)
    weights = tmp_path / "backup" / multiworker.WEIGHTS
    weights.write_bytes(weights.read_bytes()[:-64])  # weights cut short: both agree on 2
    assert training.resumed_epochs(tmp_path, multiworker=True) == 2
    assert multiworker._restore_backup(restored, tmp_path / "backup") == 2
    for epoch in (2, 3):
        model.set_weights([np.full_like(w, epoch) for w in model.get_weights()])
        multiworker._save_backup(model, tmp_path / "backup", epoch)
    # killed between the two renames of epoch 3's pair: epoch 3's weights, epoch 2's metadata
    (tmp_path / "backup" / multiworker.METADATA).write_text('{"epoch": 2}')
    assert training.resumed_epochs(tmp_path, multiworker=True) == 2
    assert multiworker._restore_backup(restored, tmp_path / "backup") == 2
    assert all((w == 2).all() for w in restored.get_weights())  # epoch 2's, not 3's


def test_a_resumed_log_keeps_its_columns(tmp_path):
    """Appending to log.csv, rows follow its header (Keras' CSVLogger wrote this run's keys
    under the old header: values one column off); so do the multi-worker loop's rows."""
    import csv

    import keras

    from ghibli_keras import callbacks, multiworker

    path = tmp_path / "log.csv"
    path.write_text("epoch,cycle_loss,identity_loss,val_cycle_loss\n0,0.9,0.5,0.8\n")
    logger = callbacks.CSVLogger(str(path))
    logger.on_train_begin()
    logger.on_epoch_end(1, {"cycle_loss": 0.7, "val_cycle_loss": 0.6, "d_x_loss": 0.2})
    logger.on_train_end()
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    multiworker._write_epoch(model, tmp_path, 2, {"cycle_loss": 0.5, "val_cycle_loss": 0.4},
                             None, None)
    rows = list(csv.DictReader(path.open()))
    assert [r["val_cycle_loss"] for r in rows] == ["0.8", "0.6", "0.4"]
    assert [r["identity_loss"] for r in rows] == ["0.5", "NA", "NA"]
    assert all(None not in r for r in rows)  # no row longer than the header

    fresh = tmp_path / "new.csv"  # a new log: Keras' own header
    logger = callbacks.CSVLogger(str(fresh))
    logger.on_train_begin()
    logger.on_epoch_end(0, {"cycle_loss": 0.7, "val_cycle_loss": 0.6})
    logger.on_train_end()
    assert fresh.read_text().splitlines()[0] == "epoch,cycle_loss,val_cycle_loss"


def test_after_the_warm_up_all_four_learning_rates_decay_together():
    """The discriminators' optimizers do not count the generator-only warm-up steps; their
    schedule adds them back (D's rate lagged by warmup_steps and never reached 0)."""
    from conftest import tiny_test_config
    from ghibli_keras import training

    config = tiny_test_config(**{"train.warmup_steps": 2, "train.epochs": 2,
                                 "train.decay_epochs": 1, "train.steps_per_execution": 1})
    model = training.build_model(config, steps_per_epoch=3)  # 6 steps, decay from step 3
    x = tf.random.stateless_uniform((1, 32, 32, 3), (1, 2), -1.0, 1.0)
    model.fit(tf.data.Dataset.from_tensors((x, x)).repeat(), steps_per_epoch=5, shuffle=False,
              verbose=0)
    steps = {k: int(o.iterations.numpy()) for k, o in model.optimizers.items()}
    assert steps == {"g": 5, "f": 5, "d_x": 3, "d_y": 3}
    rates = {k: float(o.learning_rate) for k, o in model.optimizers.items()}
    expected = config.train.learning_rate * (1 - (5 - 3) / 3)
    assert rates["d_x"] == rates["d_y"] == rates["g"] == rates["f"] == pytest.approx(expected)
