"""Keras callbacks of a training run: sample grids, the latest model, NaN handling, plots."""

from __future__ import annotations

import csv
import math
import time
from pathlib import Path
from typing import Optional

import keras
import numpy as np
import tensorflow as tf

from .errors import TrainingDiverged
from .files import atomic_path, write_backup


def to_uint8(images) -> np.ndarray:
    """[-1, 1] floats -> uint8."""
    return np.uint8(np.clip(np.rint((np.asarray(images, np.float32) + 1.0) * 127.5), 0, 255))


def save_grid(rows: list, titles: list, path, figure_title: str = "") -> None:
    """A grid of uint8 pictures (`rows[r][c]`), one column title each, as a PNG (atomically)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n_rows, n_cols = len(rows), len(titles)
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(2.2 * n_cols, 2.2 * n_rows), squeeze=False)
    for r, row in enumerate(rows):
        for c, image in enumerate(row):
            axes[r][c].imshow(image)
            axes[r][c].axis("off")
            if r == 0:
                axes[r][c].set_title(titles[c], fontsize=9)
    if figure_title:
        fig.suptitle(figure_title, fontsize=10)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)


def translation_rows(model, photos: np.ndarray, styles: np.ndarray) -> list:
    """Rows x | G(x) | F(G(x)) | y | F(y) | G(F(y)) for float pictures in [-1, 1]."""
    # Direct calls, not predict(): they run on this process alone, so the chief can draw the
    # grid under MultiWorkerMirroredStrategy without collectives the other workers never join.
    G, F = model.generator_g, model.generator_f
    fake_y = np.asarray(G(photos, training=False))
    fake_x = np.asarray(F(styles, training=False))
    columns = [
        photos, fake_y, np.asarray(F(fake_y, training=False)),
        styles, fake_x, np.asarray(G(fake_x, training=False)),
    ]
    columns = [to_uint8(c) for c in columns]
    return [[c[i] for c in columns] for i in range(len(photos))]


GRID_TITLES = ["photo x", "G(x)", "F(G(x))", "style y", "F(y)", "G(F(y))"]


class SampleGrid(keras.callbacks.Callback):
    """After each epoch: a PNG grid of translations of fixed held-out pictures
    (`samples/epoch_NNN.png` and `samples/latest.png`) and the same as TensorBoard images.

    Args:
        photos, styles: float32 `(N, H, W, 3)` in [-1, 1], the same N.
        out_dir: folder for the PNGs.
        log_dir: TensorBoard folder (images under `samples/`), or None.
    """

    def __init__(self, photos, styles, out_dir, log_dir: Optional[str] = None):
        super().__init__()
        self.photos, self.styles = np.asarray(photos), np.asarray(styles)
        self.out_dir = Path(out_dir)
        self.writer = tf.summary.create_file_writer(str(Path(log_dir) / "samples")) if log_dir else None

    def on_epoch_end(self, epoch, logs=None):
        rows = translation_rows(self.model, self.photos, self.styles)
        title = f"epoch {epoch + 1}"
        save_grid(rows, GRID_TITLES, self.out_dir / f"epoch_{epoch + 1:03d}.png", title)
        save_grid(rows, GRID_TITLES, self.out_dir / "latest.png", title)
        if self.writer is not None:
            strips = np.stack([np.concatenate(row, axis=1) for row in rows])  # (N, H, 6W, 3)
            with self.writer.as_default():
                # step: the 0-based epoch, as the TensorBoard callback's epoch scalars
                tf.summary.image("x | G(x) | F(G(x)) | y | F(y) | G(F(y))", strips, step=epoch,
                                 max_outputs=len(strips))
            self.writer.flush()


class SaveLatestModel(keras.callbacks.Callback):
    """Saves the whole CycleGAN (networks and the four optimizers) to `path` after each epoch,
    through a temporary file, so `path` is always a complete model."""

    def __init__(self, path):
        super().__init__()
        self.path = Path(path)

    def on_epoch_end(self, epoch, logs=None):
        with atomic_path(self.path) as tmp:
            self.model.save(tmp)


class MarkedBackupAndRestore(keras.callbacks.BackupAndRestore):
    """Keras' `BackupAndRestore`, whose weights and metadata are each written under a temporary
    name and renamed, the weights marked with their epoch (`files.mark_epoch`): Keras writes
    the weights in place, then the metadata, so a kill between the two left one epoch's
    weights beside the previous epoch's metadata, which `files.checkpoint_epoch` now refuses
    (the run resumes from the pair before, kept by `double_checkpoint`)."""

    def _save_model(self):
        previous = (Path(self._prev_weights_path), Path(self._prev_training_metadata_path))
        write_backup(lambda path: self.model.save_weights(path, overwrite=True),
                     Path(self._weights_path), Path(self._training_metadata_path),
                     {"epoch": self._current_epoch, "batch": self._last_batch_seen},
                     previous if self.double_checkpoint else None)


def backup_and_restore(backup_dir, keep=lambda: False) -> tuple[keras.callbacks.Callback,
                                                                 keras.callbacks.Callback]:
    """Keras' `BackupAndRestore` (with `double_checkpoint`) as two callbacks: list `restore`
    first and `save` last. `restore` brings the run back at the start of `fit`, before the other
    callbacks look at the model; `save` backs up each epoch after the others have written its
    model, log row and samples, so a kill in between trains the epoch again rather than
    leaving it without them; it removes the backup when training ends, unless `keep()` says
    the run stopped before its last epoch (a `TimeLimit`) and will be resumed."""
    backup = MarkedBackupAndRestore(str(backup_dir), double_checkpoint=True)

    class Restore(keras.callbacks.Callback):
        def set_model(self, model):
            super().set_model(model)
            backup.set_model(model)

        def on_train_begin(self, logs=None):
            backup.on_train_begin(logs)

    class Save(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            backup.on_epoch_end(epoch, logs)

        def on_train_end(self, logs=None):
            if not keep():
                backup.on_train_end(logs)

    return Restore(), Save()


class TimeLimit(keras.callbacks.Callback):
    """Stops training at the end of an epoch when another would end more than `hours` after
    `fit` began (judged by the longest epoch so far), so a run fits a session's time limit
    (Kaggle's). The backup is kept: rerunning resumes. `stopped_epoch` is the 0-based epoch it
    stopped after, or None when the run went to its last epoch.

    Example:
    >>> model.fit(dataset, epochs=25, callbacks=[TimeLimit(4.0)])  # doctest: +SKIP
    """

    def __init__(self, hours: float, clock=time.monotonic):
        super().__init__()
        if not hours > 0:
            raise ValueError(f"hours must be positive, got {hours}")
        self.hours, self.clock = hours, clock
        self.stopped_epoch: Optional[int] = None

    def on_train_begin(self, logs=None):
        self.start, self.longest, self.stopped_epoch = self.clock(), 0.0, None

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch_start = self.clock()

    def on_epoch_end(self, epoch, logs=None):
        now = self.clock()
        self.longest = max(self.longest, now - self.epoch_start)
        last = epoch + 1 >= self.params.get("epochs", epoch + 1)
        if not last and now - self.start + self.longest > self.hours * 3600:
            self.model.stop_training = True
            self.stopped_epoch = epoch


def csv_columns(path) -> Optional[list]:
    """The header of the CSV log at `path` (None where it is missing or empty)."""
    try:
        with open(path, newline="") as f:
            return next(csv.reader(f), None) or None
    except FileNotFoundError:
        return None


class CSVLogger(keras.callbacks.CSVLogger):
    """Keras' `CSVLogger` (appending), whose rows follow the columns of a log it appends to:
    Keras' makes each row from this run's metrics under the old header, so a resumed run
    that logs other metrics (one from before identity_loss was left out of runs without the
    identity term) shifted every later value into the wrong column. A column this run lacks
    gets NA; a metric the header lacks is not written."""

    def __init__(self, filename: str):
        super().__init__(filename, append=True)

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        header = csv_columns(self.filename)
        if header and header[0] == "epoch":
            self.keys = header[1:]


class TerminateOnNaN(keras.callbacks.TerminateOnNaN):
    """Stops at the first NaN or infinite loss with an error that says how to resume.

    It raises rather than setting `stop_training`, so `BackupAndRestore` keeps the backup of
    the last finished epoch instead of deleting it as it does when training ends.
    """

    def __init__(self, workdir):
        super().__init__()
        self.workdir = workdir
        self.epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("g_loss")
        if loss is not None and not math.isfinite(float(loss)):
            where = f"the generator loss became {loss} in epoch {self.epoch + 1}, step {batch + 1}"
            if (Path(self.workdir) / "backup").exists():
                raise TrainingDiverged(
                    f"{where}. The backup of the last finished epoch is kept in "
                    f"{self.workdir}/backup: rerun the same command to resume from it, with a "
                    f"lower --learning-rate if it happens again.")
            raise TrainingDiverged(
                f"{where}, before any epoch had finished: rerun with a lower --learning-rate "
                f"(the workdir {self.workdir} takes it).")


def _number(text) -> float:
    try:
        return float(text)
    except (TypeError, ValueError):
        return float("nan")


def plot_losses(csv_path, png_path) -> None:
    """Loss curves (generator, discriminators, cycle, identity) from the run's log.csv."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with open(csv_path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        return
    epochs = [int(r["epoch"]) + 1 for r in rows]
    panels = {
        "generators": ["g_loss", "g_adv", "f_adv"],
        "discriminators": ["d_x_loss", "d_y_loss"],
        "cycle / identity": ["cycle_loss", "identity_loss", "val_cycle_loss", "val_identity_loss"],
    }
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.5))
    for ax, (title, keys) in zip(axes, panels.items()):
        for key in keys:
            values = [_number(r.get(key)) for r in rows]
            if any(math.isfinite(v) for v in values):  # CSVLogger writes "NA" for gaps
                ax.plot(epochs, values, marker="o", ms=3, label=key)
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_path(png_path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)


class GenerationMetrics(keras.callbacks.Callback):
    """Every `every` epochs: KID of G's translations of `photos` against the real style
    features (and FID once both sets have `fid_min_images`), written to TensorBoard and to a
    CSV of its own (Keras's CSVLogger fixes its columns at the first epoch and would drop
    metrics that appear later).

    Args:
        photos: float32 `(N, H, W, 3)` in [-1, 1], the held-out photos.
        real_features: `(M, 2048)` features of the style set.
        extractor: a `features.FeatureExtractor`; its name goes into every row.
        csv_path: the CSV (appended to; a header when new): epoch, kid, kid_std, fid, images,
            network.
        log_dir: a TensorBoard folder (scalars under `metrics/`), or None.
        every: epochs between evaluations.
    """

    COLUMNS = ("epoch", "kid", "kid_std", "fid", "images", "network")

    def __init__(self, photos, real_features, extractor, csv_path, log_dir: Optional[str] = None,
                 every: int = 1, batch_size: int = 16, fid_min_images: Optional[int] = None):
        super().__init__()
        from . import metrics

        if every < 1:
            raise ValueError(f"every must be >= 1, got {every}")
        self.photos, self.real = photos, real_features
        self.extractor, self.csv_path = extractor, Path(csv_path)
        self.every, self.batch_size = every, batch_size
        self.fid_min_images = metrics.FID_MIN_IMAGES if fid_min_images is None else fid_min_images
        self._writer = tf.summary.create_file_writer(str(Path(log_dir) / "metrics")) if log_dir else None
        self._translate = None

    def evaluate(self) -> dict:
        from . import features, metrics

        if self._translate is None:
            self._translate = features.generator_transform(self.model.generator_g)
        fake = features.extract(self.photos, self.extractor, transform=self._translate,
                                batch_size=self.batch_size, value_range=(-1.0, 1.0), cache=False)
        kid = metrics.kid(self.real, fake)
        row = {"kid": kid.mean, "kid_std": kid.std, "fid": None, "images": len(fake)}
        if min(len(fake), len(self.real)) >= self.fid_min_images:
            row["fid"] = metrics.fid(self.real, fake)
        return row

    def on_epoch_end(self, epoch, logs=None):
        if (epoch + 1) % self.every:
            return
        row = self.evaluate()
        new = not self.csv_path.exists()
        self.csv_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.csv_path, "a", newline="") as f:
            writer = csv.writer(f)
            if new:
                writer.writerow(self.COLUMNS)
            writer.writerow([epoch, f"{row['kid']:.6g}", f"{row['kid_std']:.6g}",
                             "" if row["fid"] is None else f"{row['fid']:.6g}", row["images"],
                             self.extractor.name])
        if self._writer is not None:
            with self._writer.as_default():
                tf.summary.scalar("kid", row["kid"], step=epoch)
                if row["fid"] is not None:
                    tf.summary.scalar("fid", row["fid"], step=epoch)
            self._writer.flush()
