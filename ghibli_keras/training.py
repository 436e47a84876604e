"""A training run: `train(config, workdir)` builds the data and the model under the strategy and
runs `model.fit`; rerunning it on the same workdir resumes where it stopped.

The workdir holds:
  config.json      the resolved config (a rerun must match it)
  model.keras      the latest CycleGAN (networks + four optimizers), saved each epoch
  backup/          BackupAndRestore's state, for resuming (deleted when training completes)
  log.csv          per-epoch losses (CSVLogger)
  metrics.csv      KID/FID of G(held-out photos) every train.metrics_every epochs, if set
  tensorboard/     scalars and sample translations
  samples/         epoch_NNN.png grids and latest.png
  loss_curves.png  at the end
  done.json        written when training completes
  .lock            held while a process trains the run (a second one is refused)
"""

from __future__ import annotations

import csv
import json
import logging
import shutil
import sys
from pathlib import Path
from typing import Optional, Sequence

import keras
import numpy as np
import tensorflow as tf

from . import callbacks as cb
from . import data, models
from . import multiworker as multiworker_loop
from . import strategy as strategies
from . import workdir as workdir_files
from .config import Config
from .cyclegan import CycleGAN
from .errors import InputError
from .files import atomic_path, checkpoint_epoch
from .schedules import LinearDecay

log = logging.getLogger("ghibli_keras")

SAMPLE_PICTURES = 4  # rows of the per-epoch grid
METRIC_PHOTOS = 1000  # at most this many held-out photos are translated for KID/FID
#: What a bad record in the shards leaves, for its message.
STOPPED = "training stopped here; then rerun the same command to go on from its last backup"
RERUN_MAY_CHANGE = workdir_files.RERUN_MAY_CHANGE
RESUME_SEED_STEP = 1000  # the data seed of a run resumed after N epochs: seed + N * this


def resolve_workdir_config(config: Config, workdir: Path) -> Config:
    """Writes config.json into `workdir`, which `workdir.check` has let this run use (checked
    when the run begins: its callbacks may have made folders in it since, e.g. tensorboard/)."""
    path = workdir / workdir_files.CONFIG
    try:
        workdir.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            tmp.write_text(config.to_json())
    except OSError as e:
        raise InputError(f"workdir {str(workdir)!r}: cannot write {path.name} there "
                         f"({e.strerror or e}); choose a --workdir you can write in") from None
    return config


BACKUP_FILES = ("latest.weights.h5", "training_metadata.json")  # BackupAndRestore's pair


LOCK_FILE = workdir_files.LOCK_FILE


class WorkdirLock:
    """One run at a time in a workdir: an exclusive `flock` on `WORKDIR/.lock`, taken by
    `acquire()` (a second call does nothing) and given up by `release()` or when the process
    ends, however it ends. Where there is no `flock` (Windows, some network file systems),
    runs go unlocked."""

    def __init__(self, workdir):
        self.path = Path(workdir) / LOCK_FILE
        self._file = None

    def acquire(self) -> None:
        if self._file is not None:
            return
        try:
            import fcntl
        except ImportError:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            file = open(self.path, "a")
        except OSError as e:
            raise InputError(f"workdir {str(self.path.parent)!r}: cannot be made or written "
                             f"({e.strerror or e}); choose a --workdir you can write in") from None
        try:
            fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            file.close()
            raise InputError(f"{self.path.parent} is being trained by another process (it "
                             f"holds {self.path}): wait for that run, or choose another "
                             f"--workdir") from None
        except OSError:  # the file system has no locks
            file.close()
            return
        self._file = file

    def release(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def resumed_epochs(workdir: Path, multiworker: bool) -> int:
    """The epochs a rerun in `workdir` resumes after: from Keras' BackupAndRestore folder, or
    under several workers from their own loop's backup."""
    if multiworker:
        return multiworker_loop.backup_epoch(workdir / "backup")
    return restore_point(workdir / "backup")


def restore_point(backup: Path) -> int:
    """The number of epochs the run in `backup` (BackupAndRestore's folder) has finished: 0
    when there is no backup. A damaged latest pair is replaced by the one before it (kept by
    `double_checkpoint`), as Keras would do, so the epoch is known before `fit`.

    Raises:
        InputError: the backup is damaged and there is no readable one before it.
    """
    latest = [backup / name for name in BACKUP_FILES]
    if not any(path.exists() for path in latest):
        return 0
    epoch = checkpoint_epoch(*latest)
    if epoch is not None:
        return epoch
    previous = [path.with_name(path.name + ".bkp") for path in latest]
    epoch = checkpoint_epoch(*previous)
    if epoch is None:
        raise InputError(f"{backup}: the backup does not read whole (a kill while it was "
                         f"written?) and there is no earlier one: delete {backup} to train this "
                         f"run again from its first epoch")
    log.warning("%s: the latest backup does not read whole; resuming from the one before "
                "(epoch %d)", backup, epoch)
    for old, new in zip(previous, latest):
        shutil.copyfile(old, new)
    return epoch


def forget_epochs_from(workdir: Path, epoch: int) -> None:
    """Removes the rows of epochs >= `epoch` (0-based) from log.csv and metrics.csv: a run
    stopped after they were written but before its backup trains them again."""
    for path in (workdir / "log.csv", workdir / "metrics.csv"):
        if not path.exists():
            continue
        with open(path, newline="") as f:
            rows = list(csv.reader(f))
        if not rows or "epoch" not in rows[0]:
            continue
        column = rows[0].index("epoch")
        kept = [rows[0]] + [r for r in rows[1:] if len(r) > column and r[column].isdigit()
                            and int(r[column]) < epoch]
        if len(kept) < len(rows):
            with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
                csv.writer(f).writerows(kept)


def steps_per_execution(wanted: int, steps_per_epoch: int) -> int:
    """The largest divisor of `steps_per_epoch` that is at most `wanted`.

    Keras runs whole executions, so an epoch of 3 steps at 20 steps per execution would run
    20 steps (and the learning-rate schedule and the step counts would drift).

    >>> steps_per_execution(20, 100), steps_per_execution(20, 50), steps_per_execution(20, 3)
    (20, 10, 3)
    """
    best = next(k for k in range(min(wanted, steps_per_epoch), 0, -1) if steps_per_epoch % k == 0)
    if best != wanted:
        log.info("steps per execution %d -> %d (a divisor of %d steps per epoch)",
                 wanted, best, steps_per_epoch)
    return best


def build_model(config: Config, steps_per_epoch: int, jit_compile: bool = False) -> CycleGAN:
    """The compiled CycleGAN of a config. Call inside `strategy.scope()`."""
    t = config.train
    model = CycleGAN(
        **models.build_networks(config.model, seed=t.seed),
        pool_size=t.pool_size,
        image_size=config.data.image_size,
    )
    total = t.epochs * steps_per_epoch
    decay_start = (t.epochs - t.decay_epochs) * steps_per_epoch
    # D's optimizers do not count the warm-up steps: their schedule adds them back
    schedules = [LinearDecay(t.learning_rate, total, decay_start, offset=offset)
                 for offset in (0, 0, t.warmup_steps, t.warmup_steps)]  # G, F, D_X, D_Y
    model.compile(
        *[keras.optimizers.Adam(schedule, beta_1=t.beta_1) for schedule in schedules],
        gan_loss=t.gan_loss,
        lambda_cycle=t.lambda_cycle,
        lambda_identity=t.lambda_identity,
        warmup_steps=t.warmup_steps,
        steps_per_execution=steps_per_execution(t.steps_per_execution, steps_per_epoch),
        jit_compile=jit_compile,
    )
    return model


def sample_pictures(config: Config, count: int = SAMPLE_PICTURES):
    """Fixed pictures for the per-epoch grid: held-out photos (or training photos) and styles."""
    d = config.data
    photos = d.heldout_photos or d.photos
    x = next(iter(data.evaluation_dataset(photos, batch_size=count, image_size=d.image_size)))
    y = next(iter(data.evaluation_dataset(d.styles, batch_size=count, image_size=d.image_size)))
    n = min(len(x), len(y))
    return x.numpy()[:n], y.numpy()[:n]


def metrics_callback(config: Config, workdir: Path) -> Optional[keras.callbacks.Callback]:
    """The KID/FID callback when `train.metrics_every` asks for it (needs held-out photos)."""
    d, t = config.data, config.train
    if not t.metrics_every:
        return None
    if not d.heldout_photos:
        log.warning("train.metrics_every is set but there are no held-out photos: no KID/FID")
        return None
    from . import features

    extractor = features.inception(t.inception_weights or features.default_weights())
    real = features.extract(d.styles, extractor, progress=False, description="style features")
    photos = data.load_tfrecords(d.heldout_photos).take(METRIC_PHOTOS)
    photos = np.stack(list(photos.map(lambda image: data.center_square(image, d.image_size))))
    return cb.GenerationMetrics(
        photos, real, extractor, workdir / "metrics.csv", log_dir=str(workdir / "tensorboard"),
        every=t.metrics_every, batch_size=max(t.batch_size, 8),
    )


def make_callbacks(config: Config, workdir: Path, extra: Sequence = (),
                   time_limit: Optional[cb.TimeLimit] = None) -> list:
    """The run's callbacks. The backup is restored first and saved last: an epoch counts as
    done only once its model, log row and samples are written (a kill in between trains it
    again); a run that `time_limit` stops keeps it."""
    photos, styles = sample_pictures(config)
    stopped = (lambda: time_limit.stopped_epoch is not None) if time_limit else (lambda: False)
    restore, save = cb.backup_and_restore(workdir / "backup", keep=stopped)
    return [
        restore,
        cb.TerminateOnNaN(workdir),
        cb.SaveLatestModel(workdir / "model.keras"),
        cb.CSVLogger(str(workdir / "log.csv")),
        keras.callbacks.TensorBoard(str(workdir / "tensorboard"), write_graph=False),
        cb.SampleGrid(photos, styles, workdir / "samples", log_dir=str(workdir / "tensorboard")),
        *extra,
        *([time_limit] if time_limit else []),
        save,
    ]


def train(
    config: Config,
    workdir,
    *,
    extra_callbacks: Sequence = (),
    verbose="auto",
    strategy: Optional[tf.distribute.Strategy] = None,
) -> Optional[keras.callbacks.History]:
    """Trains (or resumes) the run of `config` in `workdir`.

    Args:
        config: the full config (see `config.PRESETS`).
        workdir: the run's folder (created if missing). Rerunning with the same workdir resumes.
        extra_callbacks: more Keras callbacks for `fit` (not used by the multi-worker loop).
        verbose: passed to `fit` (Keras prints `Epoch N/M` progress lines to stdout); "auto"
            is a live progress bar on a terminal and one line per epoch otherwise (logs, CI).
        strategy: a `tf.distribute` strategy already made (e.g. by `strategy.auto()`); by
            default the one `train.strategy` names.

    Returns:
        `fit`'s History (under `MultiWorkerMirroredStrategy`, the loop's `LoopHistory`, with the
        same `.model` and `.history`), or None when the workdir's run had already completed.

    The run's precision (`train.mixed_precision`) is Keras' global dtype policy while the
    model is built and trained; the caller's policy is back when this returns.
    """
    previous = keras.config.dtype_policy()
    lock = WorkdirLock(workdir)
    try:
        return _train(config, workdir, extra_callbacks, verbose, strategy, lock)
    finally:
        lock.release()
        keras.config.set_dtype_policy(previous)


def _train(config: Config, workdir, extra_callbacks: Sequence, verbose,
           strategy: Optional[tf.distribute.Strategy],
           lock: WorkdirLock) -> Optional[keras.callbacks.History]:
    """`train`, which sets the global dtype policy (strategy.set_precision); the chief takes
    `lock` before it reads or writes the workdir."""
    if "://" in str(workdir):
        raise InputError(f"workdir {str(workdir)!r}: a local folder is needed (the run writes it "
                         f"with file operations; mount a bucket with gcsfuse)")
    workdir = Path(workdir)
    config = config.validated()
    if verbose == "auto":
        verbose = 1 if sys.stdout.isatty() else 2
    workdir_files.check(config, workdir)  # before anything is read or made
    done = workdir_files.finished_epochs(workdir)
    if done is not None:
        log.info("%s already finished (%s epochs); nothing to do", workdir, done)
        return None
    d, t = config.data, config.train
    strategy = strategy or strategies.get(t.strategy)
    multiworker = isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
    chief = strategies.is_chief()
    strategies.set_precision(t.mixed_precision, strategy)
    jit = strategies.use_xla(t.xla, strategy, config.model.generator, config.model.ngf)
    if t.seed is not None:
        keras.utils.set_random_seed(t.seed)
    steps = t.steps_per_epoch or data.steps_per_epoch(d.photos, d.styles, t.batch_size)
    if chief and workdir.is_dir():  # a rerun: locked before its backup is read
        lock.acquire()
    resumed = resumed_epochs(workdir, multiworker)
    dataset = data.training_dataset(
        d.photos, d.styles, t.batch_size,
        image_size=d.image_size, load_size=d.load_size, shuffle_buffer=d.shuffle_buffer,
        # a resumed run goes on with other shuffles and crops, not the first epoch's again
        seed=None if t.seed is None else t.seed + RESUME_SEED_STEP * resumed,
        strategy=strategy, resize_on_device=True,
    )
    validation = None
    if d.heldout_photos:
        validation = data.evaluation_dataset(
            d.heldout_photos, d.styles, batch_size=t.batch_size, image_size=d.image_size
        )
    extra_callbacks = list(extra_callbacks)
    time_limit = cb.TimeLimit(t.max_hours) if t.max_hours and not multiworker else None
    if multiworker and t.max_hours:
        log.warning("train.max_hours: not applied under several workers; give fewer epochs")
    if multiworker and t.metrics_every:
        log.warning("train.metrics_every: KID/FID during training is not done under several "
                    "workers; score the model afterwards with `ghibli-keras fid`")
    elif t.metrics_every:  # checks the Inception weights before anything is written
        extra_callbacks = [c for c in [metrics_callback(config, workdir)] if c] + extra_callbacks
    if chief:  # after the data was checked: a bad --photos leaves no workdir behind
        lock.acquire()
        config = resolve_workdir_config(config, workdir)
        if not multiworker:
            forget_epochs_from(workdir, resumed)
    with strategy.scope():
        model = build_model(config, steps, jit_compile=jit)
    shards = [f for f in (d.photos, d.styles, d.heldout_photos) if f]
    with data.naming_unreadable_records(shards, STOPPED):
        if multiworker:  # Keras 3.15's fit fails here (keras#20585): our own small loop
            photos, styles = sample_pictures(config)
            history = multiworker_loop.fit(
                model, strategy, dataset, epochs=t.epochs, steps_per_epoch=steps,
                workdir=workdir, sample_photos=photos, sample_styles=styles, verbose=verbose,
            )
        else:
            history = model.fit(
                dataset,
                epochs=t.epochs,
                steps_per_epoch=steps,
                validation_data=validation,
                callbacks=make_callbacks(config, workdir, extra_callbacks, time_limit),
                shuffle=False,  # the dataset shuffles its shards and records itself
                verbose=verbose,
            )
    if chief:
        cb.plot_losses(workdir / "log.csv", workdir / "loss_curves.png")
    if time_limit and time_limit.stopped_epoch is not None:
        done = time_limit.stopped_epoch + 1
        log.warning("stopped after epoch %d of %d: another would pass train.max_hours (%g h); "
                    "%s holds epoch %d, and rerunning the same command goes on from there",
                    done, t.epochs, t.max_hours, workdir / "model.keras", done)
        return history
    if chief:
        with atomic_path(workdir / "done.json") as tmp:
            tmp.write_text(json.dumps({"epochs": t.epochs, "steps_per_epoch": steps}))
    return history
