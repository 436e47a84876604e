"""Training under `MultiWorkerMirroredStrategy` with a small loop of our own.

Keras 3.15's `model.fit` fails under this strategy with several workers (keras-team/keras#20585:
the symbolic build and `reduce_per_replica`), so this loop drives the same
`CycleGAN.train_step` with `strategy.run` inside a `tf.function` and reduces the losses with
`strategy.reduce`. Every worker runs the same steps; only the chief (task `chief`, or worker 0
without one) writes the workdir: `log.csv`, `model.keras`, `samples/`, the backup. Every worker
resumes from the chief's backup, so the workdir must be on storage all workers see (one
machine, or a network file system such as NFS or a bucket mounted with gcsfuse).

The backup is `backup/latest.weights.h5` + `backup/training_metadata.json`, each written under
a temporary name and renamed, with the previous pair kept as `backup/previous.weights.h5` +
`backup/previous_training_metadata.json`: a kill at any moment leaves a complete backup to
resume from. The weights file carries its epoch too (`files.mark_epoch`), so a pair of one
epoch's weights and another's metadata (a kill between the two renames) is not taken.
"""

from __future__ import annotations

import csv
import logging
import shutil
import tempfile
import time
from pathlib import Path

import tensorflow as tf

from . import callbacks as cb
from . import strategy as strategies
from .files import atomic_path, checkpoint_epoch, write_backup

log = logging.getLogger("ghibli_keras")

WEIGHTS = "latest.weights.h5"
METADATA = "training_metadata.json"
#: The backup before the latest, kept while the latest is written. Its weights file must end
#: in `.weights.h5` too: Keras refuses to load any other name.
PREVIOUS = ("previous.weights.h5", "previous_training_metadata.json")
BACKUPS = ((WEIGHTS, METADATA), PREVIOUS)


class LoopHistory:
    """What `fit` would return: `.model` and `.history` (metric name -> per-epoch values)."""

    def __init__(self, model):
        self.model = model
        self.history: dict = {}


def _save_backup(model, backup: Path, epoch: int) -> None:
    write_backup(model.save_weights, backup / WEIGHTS, backup / METADATA, {"epoch": epoch},
                 previous=(backup / PREVIOUS[0], backup / PREVIOUS[1]))


def _backups(backup: Path, warn: bool = True):
    """`(weights file, epochs it holds)` for each backup pair in `backup` that reads whole,
    the latest first; with `warn`, a pair that does not is logged."""
    for weights, metadata in ((backup / w, backup / m) for w, m in BACKUPS):
        epoch = checkpoint_epoch(weights, metadata)
        if epoch is not None:
            yield weights, epoch
        elif warn and (weights.exists() or metadata.exists()):
            log.warning("backup %s does not read whole, or its epoch differs from %s's",
                        weights, metadata.name)


def _restore_backup(model, backup: Path) -> int:
    """Loads the latest complete backup; returns the number of epochs it holds (0 if none)."""
    for weights, epoch in _backups(backup):
        try:
            model.load_weights(weights)
            return epoch
        except (OSError, ValueError) as e:
            log.warning("backup %s does not fit this model (%s); trying the previous one",
                        weights, e)
    return 0


def backup_epoch(backup: Path) -> int:
    """The epochs the latest backup in `backup` holds (0 if none), read before the model is
    built: where `fit` will resume, known before the training data is made (its seed moves on).
    Silent: `fit`'s restore, which follows, logs a pair it cannot take."""
    return next((epoch for _, epoch in _backups(backup, warn=False)), 0)


def fit(model, strategy, dataset, *, epochs: int, steps_per_epoch: int, workdir: Path,
        sample_photos=None, sample_styles=None, verbose: int = 2) -> LoopHistory:
    """Trains `model` (built and compiled in `strategy.scope()`) for `epochs` epochs."""
    chief = strategies.is_chief()
    scratch = None if chief else Path(tempfile.mkdtemp(prefix="ghibli-keras-worker-"))
    out = workdir if chief else scratch
    history = LoopHistory(model)
    try:
        start = _restore_backup(model, workdir / "backup")
        if start:
            log.info("resuming after epoch %d from %s", start, workdir / "backup")
        iterator = iter(strategy.experimental_distribute_dataset(dataset))

        @tf.function
        def train_step(iterator):
            outputs = strategy.run(model.train_step, args=(next(iterator),))
            return {k: strategy.reduce("MEAN", v, axis=None) for k, v in outputs.items()}

        for epoch in range(start, epochs):
            for tracker in model.metrics:
                tracker.reset_state()
            began = time.time()
            for _ in range(steps_per_epoch):
                logs = train_step(iterator)
            logs = {k: float(v) for k, v in logs.items()}
            for k, v in logs.items():
                history.history.setdefault(k, []).append(v)
            _save_backup(model, out / "backup", epoch + 1)  # every worker: collective-safe
            if chief:
                _write_epoch(model, workdir, epoch, logs, sample_photos, sample_styles)
                if verbose:
                    values = " - ".join(f"{k}: {v:.4f}" for k, v in logs.items())
                    print(f"Epoch {epoch + 1}/{epochs}\n{steps_per_epoch}/{steps_per_epoch} - "
                          f"{time.time() - began:.0f}s - {values}", flush=True)
        if chief:
            shutil.rmtree(workdir / "backup", ignore_errors=True)
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
    return history


def _write_epoch(model, workdir: Path, epoch: int, logs: dict, photos, styles) -> None:
    path = workdir / "log.csv"
    header = cb.csv_columns(path)  # a resumed run's rows follow the columns already there
    with open(path, "a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=header or ["epoch", *sorted(logs)], restval="NA",
                                extrasaction="ignore")
        if not header:
            writer.writeheader()
        writer.writerow({"epoch": epoch, **logs})
    with atomic_path(workdir / "model.keras") as tmp:
        model.save(tmp)
    if photos is not None:
        rows = cb.translation_rows(model, photos, styles)
        for name in (f"epoch_{epoch + 1:03d}.png", "latest.png"):
            cb.save_grid(rows, cb.GRID_TITLES, workdir / "samples" / name, f"epoch {epoch + 1}")
