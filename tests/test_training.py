"""Training runs: the workdir, resuming, config checks, NaN handling, the command line."""

import csv
import json
import math

import keras
import numpy as np
import pytest

import ghibli_keras  # noqa: F401  (registers the classes for load_model)
from conftest import SAMPLE, tiny_test_config
from ghibli_keras import cli, training
from ghibli_keras.callbacks import TerminateOnNaN, TrainingDiverged
from ghibli_keras.errors import InputError


def _log(workdir):
    with open(workdir / "log.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_workdir_holds_everything(trained_workdir):
    w = trained_workdir
    for name in ("config.json", "model.keras", "log.csv", "loss_curves.png", "done.json",
                 "samples/epoch_001.png", "samples/epoch_002.png", "samples/latest.png"):
        assert (w / name).is_file(), name
    assert list((w / "tensorboard").rglob("events.out.tfevents.*"))
    assert list((w / "tensorboard" / "samples").rglob("events.out.tfevents.*"))  # images
    assert not (w / "backup").exists()  # deleted once training completed
    rows = _log(w)
    assert [r["epoch"] for r in rows] == ["0", "1"]
    assert {"g_loss", "d_x_loss", "d_y_loss", "cycle_loss", "val_cycle_loss"} <= set(rows[0])
    assert all(math.isfinite(float(r["g_loss"])) for r in rows)
    assert json.loads((w / "config.json").read_text())["model"]["ngf"] == 4
    import tensorflow as tf

    def steps(folder):  # the steps of the summaries in a folder's event files
        return sorted({event.step for path in folder.glob("events.out.tfevents.*")
                       for event in tf.compat.v1.train.summary_iterator(str(path))
                       if event.summary.value})

    assert steps(w / "tensorboard" / "samples") == steps(w / "tensorboard" / "train") == [0, 1]


def test_model_keras_loads_and_translates(trained_workdir):
    model = keras.models.load_model(trained_workdir / "model.keras")
    x = np.random.default_rng(0).uniform(-1, 1, (2, 48, 40, 3)).astype("float32")
    y = np.asarray(model(x))
    assert y.shape == x.shape and -1.0 <= y.min() and y.max() <= 1.0
    assert {k: int(o.iterations.numpy()) for k, o in model.optimizers.items()} == {"g": 6, "f": 6, "d_x": 6, "d_y": 6}


def test_finished_run_is_not_repeated(trained_workdir):
    assert training.train(tiny_test_config(), trained_workdir) is None


def test_rerun_with_other_settings_is_refused(tmp_path):
    workdir = tmp_path / "w"
    workdir.mkdir()
    (workdir / "config.json").write_text(tiny_test_config().to_json())
    (workdir / "log.csv").write_text("epoch,g_loss\n0,1.0\n")  # the run had started
    with pytest.raises(InputError, match="model.ngf=4.*asks for 8.*another --workdir"):
        training.train(tiny_test_config(**{"model.ngf": 8}), workdir)


def test_bad_shards_leave_no_workdir_and_a_plain_message(tmp_path):
    bad = tmp_path / "photos00-1.tfrec"
    bad.write_bytes(b"not a tfrecord file")
    with pytest.raises(InputError) as info:
        training.train(tiny_test_config(**{"data.photos": str(bad)}), tmp_path / "w")
    message = str(info.value)
    assert "photos00-1.tfrec: not a readable TFRecord file" in message
    assert "{{" not in message and "[Op:" not in message
    assert not (tmp_path / "w" / "config.json").exists()


def test_a_record_that_does_not_decode_stops_training_by_name(tmp_path, monkeypatch):
    """Among the headers sampled for the window side, before training starts; past them, when
    training reaches it (then with how to resume)."""
    from conftest import shard_with_a_bad_record
    from ghibli_keras import data

    (tmp_path / "photos").mkdir()
    bad = shard_with_a_bad_record(tmp_path / "photos" / "photo00-6.tfrec", size=40)
    config = tiny_test_config(**{"data.photos": str(tmp_path / "photos")})
    for sampled, ending in ((64, "skips pictures it cannot read)"), (2, training.STOPPED)):
        monkeypatch.setattr(data, "SIDE_SAMPLE", sampled)
        with pytest.raises(InputError) as info:
            training.train(config, tmp_path / f"w{sampled}", verbose=0)
        message = str(info.value)
        assert message.startswith(f"{bad}: record 3 (image_name 'p3'): the image is not a JPEG picture")
        assert message.endswith(ending) and "{{" not in message
    assert not (tmp_path / "w64" / "log.csv").exists()  # nothing trained


class _StopAtEpoch(keras.callbacks.Callback):
    """Simulates a kill at the start of an epoch (after the previous epoch's backup), or with
    `at_end` at its end (after its log row, before its backup)."""

    def __init__(self, epoch, at_end=False):
        super().__init__()
        self.epoch, self.at_end = epoch, at_end

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.epoch and not self.at_end:
            raise KeyboardInterrupt

    def on_epoch_end(self, epoch, logs=None):
        if epoch == self.epoch and self.at_end:
            raise KeyboardInterrupt


class _RecordStart(keras.callbacks.Callback):
    def on_train_begin(self, logs=None):
        self.iterations = {k: int(o.iterations.numpy()) for k, o in self.model.optimizers.items()}

    def on_epoch_begin(self, epoch, logs=None):
        if not hasattr(self, "first_epoch"):
            self.first_epoch = epoch


def _interrupted_run(tmp_path, at_epoch):
    """A 3-epoch run killed at the start of `at_epoch`; returns its config and workdir."""
    config = tiny_test_config(**{"train.epochs": 3, "train.decay_epochs": 1})
    workdir = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        training.train(config, workdir, extra_callbacks=[_StopAtEpoch(at_epoch)], verbose=0)
    return config, workdir


@pytest.mark.slow
def test_interrupted_run_resumes_with_epoch_and_optimizer_state(tmp_path):
    config, workdir = _interrupted_run(tmp_path, at_epoch=1)
    assert (workdir / "backup").is_dir() and not (workdir / "done.json").exists()
    record = _RecordStart()
    training.train(config, workdir, extra_callbacks=[record], verbose=0)
    assert record.first_epoch == 1  # epoch 0 is not trained again
    assert record.iterations == {"g": 3, "f": 3, "d_x": 3, "d_y": 3}  # restored, not restarted
    assert [r["epoch"] for r in _log(workdir)] == ["0", "1", "2"]
    model = keras.models.load_model(workdir / "model.keras")
    assert int(model.d_y_optimizer.iterations.numpy()) == 9


@pytest.mark.slow
def test_kill_while_writing_the_backup_resumes_from_the_previous_one(tmp_path):
    config, workdir = _interrupted_run(tmp_path, at_epoch=2)
    weights = next((workdir / "backup").glob("*.weights.h5"))
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])  # a torn write
    record = _RecordStart()
    training.train(config, workdir, extra_callbacks=[record], verbose=0)
    assert record.first_epoch == 1  # the previous backup (after epoch 0) was used
    assert record.iterations == {"g": 3, "f": 3, "d_x": 3, "d_y": 3}
    assert [r["epoch"] for r in _log(workdir)] == ["0", "1", "2"]  # epoch 1's first row gone


@pytest.mark.slow
def test_an_epoch_killed_before_its_backup_is_trained_again_with_new_data(tmp_path, monkeypatch):
    config = tiny_test_config(**{"train.epochs": 3, "train.decay_epochs": 1})
    workdir = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        training.train(config, workdir, extra_callbacks=[_StopAtEpoch(1, at_end=True)], verbose=0)
    assert [r["epoch"] for r in _log(workdir)] == ["0", "1"]  # epoch 1 logged, not backed up
    seeds, real = [], training.data.training_dataset

    def recording(*args, **kwargs):
        seeds.append(kwargs["seed"])
        return real(*args, **kwargs)

    monkeypatch.setattr(training.data, "training_dataset", recording)
    record = _RecordStart()
    training.train(config, workdir, extra_callbacks=[record], verbose=0)
    assert record.first_epoch == 1
    assert [r["epoch"] for r in _log(workdir)] == ["0", "1", "2"]  # no row twice
    assert (workdir / "samples" / "epoch_002.png").is_file()
    assert seeds == [config.train.seed + training.RESUME_SEED_STEP]  # not epoch 0's batches


def test_time_limit_stops_before_an_epoch_that_would_overrun():
    from ghibli_keras.callbacks import TimeLimit

    now = [0.0]
    limit = TimeLimit(1.0, clock=lambda: now[0])  # one hour
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
    limit.set_model(model)

    def run(epochs, seconds):
        now[0], model.stop_training = 0.0, False
        limit.set_params({"epochs": epochs})
        limit.on_train_begin()
        for epoch, spent in enumerate(seconds):
            limit.on_epoch_begin(epoch)
            now[0] += spent
            limit.on_epoch_end(epoch)
            if model.stop_training:
                return epoch
        return None

    # ends at 1000, 1900 (+ the longest, 1000: 2900 fits), 2900 (+ 1000 would pass 3600)
    assert run(5, [1000, 900, 1000, 1000, 1000]) == 2 == limit.stopped_epoch
    assert run(3, [1000, 900, 3000]) is None and limit.stopped_epoch is None  # the last epoch
    assert run(4, [100, 2000, 1000]) == 1  # judged by the longest epoch, not the last
    with pytest.raises(ValueError, match="hours must be positive, got 0"):
        TimeLimit(0)


def test_a_run_stopped_by_max_hours_keeps_its_backup_and_resumes(tmp_path):
    config = tiny_test_config(**{"train.epochs": 3, "train.decay_epochs": 1,
                                 "train.max_hours": 1e-9})
    workdir = tmp_path / "run"
    training.train(config, workdir, verbose=0)  # any epoch overruns: stops after the first
    assert [r["epoch"] for r in _log(workdir)] == ["0"]
    assert (workdir / "backup").is_dir() and (workdir / "model.keras").is_file()
    assert not (workdir / "done.json").exists() and (workdir / "loss_curves.png").is_file()
    record = _RecordStart()
    training.train(config.override(**{"train.max_hours": 100.0}), workdir,
                   extra_callbacks=[record], verbose=0)
    assert record.first_epoch == 1 and record.iterations["g"] == 3
    assert [r["epoch"] for r in _log(workdir)] == ["0", "1", "2"]
    assert (workdir / "done.json").exists() and not (workdir / "backup").exists()


def test_a_backup_with_nothing_readable_is_named(tmp_path):
    backup = tmp_path / "backup"
    backup.mkdir()
    assert training.restore_point(backup) == 0  # none yet
    (backup / "latest.weights.h5").write_bytes(b"torn")
    (backup / "training_metadata.json").write_text('{"epoch": 2}')
    with pytest.raises(InputError, match="backup: the backup does not read whole .* delete"):
        training.restore_point(backup)


def test_damaged_workdir_files_are_named(tmp_path):
    workdir = tmp_path / "w"
    workdir.mkdir()
    (workdir / "config.json").write_text(tiny_test_config().to_json())
    (workdir / "done.json").write_text("")
    with pytest.raises(InputError, match="done.json: damaged .* had finished"):
        training.train(tiny_test_config(), workdir)
    (workdir / "done.json").unlink()
    (workdir / "config.json").write_text("[]")
    (workdir / "log.csv").write_text("epoch,g_loss\n0,1.0\n")
    with pytest.raises(InputError, match="config.json is not a valid config"):
        training.train(tiny_test_config(), workdir)


def _optimizer_state(model):
    """Each optimizer's (iterations, loss scale) under mixed_float16."""
    return {k: (int(o.iterations.numpy()), float(o.dynamic_scale.numpy()))
            for k, o in model.optimizers.items()}


@pytest.mark.slow
def test_interrupted_fp16_run_resumes_with_its_loss_scales(tmp_path, float32_after):
    """Under mixed_float16 each optimizer is a LossScaleOptimizer whose loss scale (and step
    count: steps with non-finite gradients are skipped) must come back from the backup."""

    class StopAndRecord(_StopAtEpoch):
        def on_epoch_begin(self, epoch, logs=None):
            self.state = _optimizer_state(self.model)
            super().on_epoch_begin(epoch, logs)

    class RecordState(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            self.state = _optimizer_state(self.model)

    config = tiny_test_config(**{"train.epochs": 3, "train.decay_epochs": 1,
                                 "train.mixed_precision": "fp16"})
    workdir = tmp_path / "run"
    stop, record = StopAndRecord(1), RecordState()
    with pytest.raises(KeyboardInterrupt):
        training.train(config, workdir, extra_callbacks=[stop], verbose=0)
    assert stop.state["g"][1] != 2.0**15  # the scale moved from its start (2^15) in epoch 0
    training.train(config, workdir, extra_callbacks=[record], verbose=0)
    assert record.state == stop.state


def test_nan_stops_with_a_message_on_how_to_resume(tmp_path):
    """With a backup: resume from it; in the first epoch (none yet): rerun with a lower
    learning rate, which the workdir takes (`workdir.RERUN_MAY_CHANGE`)."""
    callback = TerminateOnNaN(tmp_path)
    callback.on_epoch_begin(0)
    with pytest.raises(TrainingDiverged, match=r"epoch 1, step 2, before any epoch had finished: "
                                               r"rerun with a lower --learning-rate"):
        callback.on_batch_end(1, {"g_loss": float("inf")})
    (tmp_path / "backup").mkdir()
    callback.on_epoch_begin(4)
    callback.on_batch_end(0, {"g_loss": 1.0})
    with pytest.raises(TrainingDiverged, match=r"epoch 5, step 8.*backup.*rerun the same command"):
        callback.on_batch_end(7, {"g_loss": float("nan")})


def test_a_kill_between_the_backup_s_two_files_resumes_from_the_pair_before(tmp_path, monkeypatch):
    """Keras wrote the weights, then the metadata: killed between them, the next epoch's
    weights stood beside this epoch's metadata and were taken for it. Now the weights carry
    their epoch, and such a pair gives way to the one before (`double_checkpoint`)."""
    from ghibli_keras import callbacks as cbs
    from ghibli_keras import files

    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    backup = cbs.MarkedBackupAndRestore(str(tmp_path / "backup"), double_checkpoint=True)
    backup.set_model(model)
    for epoch in (0, 1):
        model.set_weights([np.full_like(w, epoch + 1) for w in model.get_weights()])
        backup.on_epoch_end(epoch)
    assert training.restore_point(tmp_path / "backup") == 2
    model.set_weights([np.full_like(w, 3) for w in model.get_weights()])

    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(files.json, "dumps", killed)  # epoch 3's metadata is never written
    with pytest.raises(KeyboardInterrupt):
        backup.on_epoch_end(2)
    monkeypatch.undo()
    assert training.restore_point(tmp_path / "backup") == 2  # epoch 2's pair, copied back
    restored = keras.models.clone_model(model)
    restored.load_weights(tmp_path / "backup" / "latest.weights.h5")
    assert all((w == 2).all() for w in restored.get_weights())


def test_the_callers_dtype_policy_is_back_after_training(tmp_path):
    """train() builds its model under the run's precision, then puts the caller's back (a run
    with mixed_precision auto on a bf16 CPU left mixed_bfloat16 for everything built after)."""
    keras.config.set_dtype_policy("float32")
    history = training.train(tiny_test_config(**{"train.mixed_precision": "bf16", "train.epochs": 1,
                                                 "train.steps_per_epoch": 1}), tmp_path / "w", verbose=0)
    assert history.model.generator_g.get_layer("stem_conv").compute_dtype == "bfloat16"
    assert keras.config.dtype_policy().name == "float32"


@pytest.mark.slow
def test_train_command_prints_keras_progress(tmp_path, capsys):
    rc = cli.main([
        "train", "--preset", "tiny", "--photos", f"{SAMPLE}/photo", "--styles", f"{SAMPLE}/ghibli",
        "--workdir", str(tmp_path / "w"), "--epochs", "2", "--steps-per-epoch", "1",
        "--batch-size", "2", "--image-size", "32", "--xla", "off", "--steps-per-execution", "3",
    ])
    out = capsys.readouterr().out
    assert rc == 0 and "Epoch 1/2" in out and "Epoch 2/2" in out
    assert (tmp_path / "w" / "model.keras").is_file()
    saved = json.loads((tmp_path / "w" / "config.json").read_text())
    assert saved["data"]["image_size"] == 32 and saved["data"]["load_size"] == 36
    assert saved["data"]["heldout_photos"] is None
    assert saved["train"]["steps_per_execution"] == 3  # kept as asked; lowered to 1 when fitting


def test_steps_per_execution_divides_the_epoch():
    assert [training.steps_per_execution(w, n) for w, n in [(20, 100), (20, 50), (20, 3), (1, 7), (4, 7)]] \
        == [20, 10, 3, 1, 1]


def test_several_steps_per_execution_run_exactly_the_epochs_steps():
    import tensorflow as tf

    config = tiny_test_config(**{"train.steps_per_execution": 4})
    model = training.build_model(config, steps_per_epoch=6)
    assert model.steps_per_execution == 3  # 4 would run 8 steps per epoch of 6
    batch = tf.random.uniform((2, 32, 32, 3), -1, 1)
    model.fit(tf.data.Dataset.from_tensors((batch, batch)).repeat(), epochs=2, steps_per_epoch=6,
              verbose=0)
    assert {k: int(o.iterations) for k, o in model.optimizers.items()} == \
        {"g": 12, "f": 12, "d_x": 12, "d_y": 12}


def test_steps_per_execution_must_be_positive(capsys):
    with pytest.raises(SystemExit) as stop:
        cli.main(["train", "--workdir", "w", "--steps-per-execution", "0"])
    assert stop.value.code == 2 and "--steps-per-execution" in capsys.readouterr().err


def test_a_workdir_trains_in_one_process_at_a_time(tmp_path):
    import fcntl

    workdir = tmp_path / "w"
    workdir.mkdir()
    with open(workdir / training.LOCK_FILE, "a") as held:  # another run's lock
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(InputError, match="w is being trained by another process .*another "
                                             "--workdir"):
            training.train(tiny_test_config(), workdir)
    lock = training.WorkdirLock(workdir)  # free again once the holder closed it
    lock.acquire()
    lock.acquire()  # a second call does nothing
    lock.release()
