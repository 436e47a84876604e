"""What a run's folder (its workdir) holds, read before a run writes there. Imports nothing
heavy, so the command line checks a workdir before TensorFlow is loaded.

A workdir is a folder with `config.json` (written when a run starts), then `log.csv`,
`model.keras`, `backup/` while it trains, and `done.json` once it has finished. A rerun in the
same workdir resumes the run, so it must ask for the same settings but `RERUN_MAY_CHANGE`.
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import Optional

from .config import Config, locate_sample
from .errors import InputError
from .images import resolve_files

CONFIG = "config.json"
DONE = "done.json"
LOCK_FILE = ".lock"
#: Settings a rerun may change: to train longer, to measure differently, or to go on with a
#: lower learning rate after a loss became NaN (the optimizers' steps come from the backup).
RERUN_MAY_CHANGE = ("epochs", "decay_epochs", "learning_rate", "metrics_every",
                    "inception_weights", "max_hours")
#: What a run makes in its workdir before config.json: a run killed then left only these.
MADE_BEFORE_CONFIG = (LOCK_FILE, "tensorboard")
SHARD_FIELDS = ("photos", "styles", "heldout_photos")  # paths: compared as the files they name


def started(workdir: Path) -> bool:
    """Whether the run in `workdir` got to train: a backup, a model, done.json, or a row in
    its log (Keras' CSVLogger makes an empty log.csv as training begins, before any epoch)."""
    if any((workdir / name).exists() for name in ("backup", "model.keras", DONE)):
        return True
    try:
        with open(workdir / "log.csv", newline="") as f:
            return sum(1 for row in csv.reader(f) if row) > 1  # a header and a row
    except FileNotFoundError:
        return False


def finished_epochs(workdir: Path) -> Optional[int]:
    """The epochs of the finished run in `workdir` (its done.json), or None while unfinished."""
    path = workdir / DONE
    if not path.exists():
        return None
    try:
        return int(json.loads(path.read_text())["epochs"])
    except (ValueError, KeyError, TypeError) as e:
        raise InputError(f"{path}: damaged ({e}); the run in {workdir} had finished: use its "
                         f"model.keras, or choose another --workdir to train again") from None


def _same_shards(a: Optional[str], b: Optional[str]) -> bool:
    """Two shard paths name the same files: equal, equal once made absolute (the presets'
    sample shards are found from any folder, relative in a checkout, absolute elsewhere), or
    a folder and a glob of the same shards."""
    if a == b:
        return True
    if not a or not b or "://" in a or "://" in b:
        return False
    if os.path.abspath(locate_sample(a)) == os.path.abspath(locate_sample(b)):
        return True
    files = _shard_files(a)
    return bool(files) and files == _shard_files(b)


def _shard_files(pattern: str) -> set:
    """The shard files a folder or glob names, as absolute paths (empty where it names none)."""
    try:
        kind, files = resolve_files(locate_sample(pattern))
    except InputError:
        return set()
    return {os.path.abspath(f) for f in files} if kind == "shards" else set()


def check(config: Config, workdir) -> None:
    """Refuses a run in `workdir` that would spoil what is there: a folder that is not a
    ghibli-keras workdir but holds files (a run writes, and removes, backup/, log.csv, ...), a
    rerun of a started run with other settings than `RERUN_MAY_CHANGE`, and more epochs for a
    finished run. A workdir whose run never got to train takes the new settings.

    Raises:
        InputError: naming the workdir, what differs and what to do.
    """
    workdir = Path(workdir)
    if not workdir.exists():
        return
    if not workdir.is_dir():
        raise InputError(f"--workdir {str(workdir)!r} exists and is not a folder")
    path = workdir / CONFIG
    if not path.exists():
        others = sorted(p.name for p in workdir.iterdir() if p.name not in MADE_BEFORE_CONFIG)
        if others:
            shown = ", ".join(others[:3]) + (", ..." if len(others) > 3 else "")
            raise InputError(f"{workdir} is not the workdir of a ghibli-keras run (no {CONFIG}) "
                             f"and holds other files ({shown}), which a run could overwrite or "
                             f"remove: choose a new or empty --workdir")
        return
    if not started(workdir):
        return
    try:
        saved = Config.from_json(path.read_text())
    except (ValueError, TypeError, AttributeError, KeyError) as e:
        raise InputError(f"{path} is not a valid config ({e}); use a new --workdir") from None
    mine, theirs = config.to_dict(), saved.to_dict()
    for section in ("data", "model", "train"):
        for key, value in mine[section].items():
            was = theirs[section].get(key)
            same = (_same_shards(was, value) if section == "data" and key in SHARD_FIELDS
                    else was == value)
            if key not in RERUN_MAY_CHANGE and not same:
                raise InputError(
                    f"{workdir} holds a run with {section}.{key}={was!r}, this run asks for "
                    f"{value!r}: rerun with the same settings to resume, or choose another "
                    f"--workdir")
    done = finished_epochs(workdir)
    if done is not None and config.train.epochs > done:
        raise InputError(
            f"{workdir} holds a run that finished its {done} epochs; this run asks for "
            f"train.epochs={config.train.epochs}: a finished run is not trained further (its "
            f"backup is gone and its learning rate has decayed to 0): choose another --workdir")
