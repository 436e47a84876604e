"""Files: writing so a reader never sees half of one (a temporary name, then rename), and
where Keras caches downloaded weights."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Callable, Optional


@contextlib.contextmanager
def atomic_path(path):
    """Yields a temporary path beside `path`; renames it to `path` if the block succeeds.

    The temporary name keeps the suffix (`.tmp-model.keras`), so writers that go by the suffix
    (Keras, matplotlib) still recognise the format.

    >>> with atomic_path("out.txt") as tmp:          # doctest: +SKIP
    ...     Path(tmp).write_text("all or nothing")
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(temporary_name(path.name))
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


EPOCH_ATTRIBUTE = "ghibli_keras_epoch"  # in a backup's .weights.h5, where `mark_epoch` puts it


def mark_epoch(weights: Path, epoch: int) -> None:
    """Records `epoch` inside a `.weights.h5` file, so `checkpoint_epoch` can tell a pair whose
    weights and metadata are of different epochs (a kill between their two renames)."""
    import h5py

    with h5py.File(weights, "a") as f:
        f.attrs[EPOCH_ATTRIBUTE] = epoch


def write_backup(save_weights: Callable[[Path], None], weights: Path, metadata: Path,
                 content: dict, previous: Optional[tuple[Path, Path]] = None) -> None:
    """A backup pair: `save_weights(path)` writes the `.weights.h5`, marked with
    `content["epoch"]` (`mark_epoch`), then `content` as the JSON `metadata`, each under a
    temporary name and renamed; with `previous`, the pair there before is first copied to
    those two paths (a kill at any moment leaves a whole pair to resume from)."""
    if previous is not None:
        for latest, kept in zip((weights, metadata), previous):
            if latest.exists():
                with atomic_path(kept) as tmp:
                    shutil.copyfile(latest, tmp)
    with atomic_path(weights) as tmp:  # ".tmp-PID-NAME.weights.h5": Keras' suffix kept
        save_weights(tmp)
        mark_epoch(tmp, content["epoch"])
    with atomic_path(metadata) as tmp:
        tmp.write_text(json.dumps(content))


def checkpoint_epoch(weights: Path, metadata: Path) -> Optional[int]:
    """The epochs a backup pair holds (`{"epoch": N}` in `metadata`, beside a `.weights.h5`),
    or None when either file is missing or does not read whole (a kill while it was written),
    or when the weights were marked (`mark_epoch`) with another epoch."""
    import h5py

    try:
        epoch = int(json.loads(Path(metadata).read_text())["epoch"])
        with h5py.File(weights, "r") as f:  # every array, not just the header
            f.visititems(lambda name, item: item[()] if isinstance(item, h5py.Dataset) else None)
            marked = f.attrs.get(EPOCH_ATTRIBUTE)
        return epoch if marked is None or int(marked) == epoch else None
    except (OSError, ValueError, KeyError, TypeError):
        return None


NAME_MAX = 255  # bytes in a file name (Linux, macOS)


def temporary_name(name: str) -> str:
    """`.tmp-PID-NAME`, or `.tmp-PID-HASH.SUFFIX` where that would be too long a file name."""
    tmp = f".tmp-{os.getpid()}-{name}"
    if len(os.fsencode(tmp)) <= NAME_MAX:
        return tmp
    digest = hashlib.sha1(os.fsencode(name)).hexdigest()[:16]
    return f".tmp-{os.getpid()}-{digest}{Path(name).suffix}"


def keras_cache_path(filename: str) -> Path:
    """Where `keras.applications` keeps a downloaded weights file: `$KERAS_HOME/models/`
    (default `~/.keras/models/`)."""
    home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    return Path(home) / "models" / filename


def check_cached_weights(path: Path, md5: str, url: str) -> None:
    """A weights file in the Keras cache (`keras_cache_path`) whose MD5 is not `md5` (the one
    `keras.applications` checks) is refused here, before Keras sees it: Keras would delete it
    and try to download it again, so offline the copy is lost and the error says nothing of
    it. A missing file passes (Keras downloads it, or the caller says what to do offline)."""
    from .errors import InputError

    if not path.is_file():
        return
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    if digest.hexdigest() != md5:
        raise InputError(f"{path}: an incomplete or damaged copy ({path.stat().st_size:,} bytes, "
                         f"MD5 {digest.hexdigest()}, expected {md5}): copy it again from {url}, "
                         f"or remove it to let Keras download it")


def check_keras_archive(path: Path) -> None:
    """A `.keras` file is a zip archive: `InputError` if `path` is not one (Keras itself says
    "File not found" of a damaged file). Reads the zip's end record only."""
    import zipfile

    from .errors import InputError

    if not zipfile.is_zipfile(path):
        raise InputError(f"{path}: not a .keras model (a .keras file is a zip archive; this "
                         f"one is damaged or something else)")
