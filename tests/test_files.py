from pathlib import Path

import pytest

from ghibli_keras import features, nst
from ghibli_keras.files import atomic_path, keras_cache_path


def test_keras_cache_path_follows_keras_home(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    assert keras_cache_path("w.h5") == tmp_path / "models" / "w.h5"
    assert features.keras_weights_cache_path() == tmp_path / "models" / features.KERAS_WEIGHTS_FILE
    assert nst.keras_weights_cache_path() == tmp_path / "models" / nst.VGG_WEIGHTS_FILE
    monkeypatch.delenv("KERAS_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert keras_cache_path("w.h5") == tmp_path / "home" / ".keras" / "models" / "w.h5"


def test_atomic_path_renames_on_success_and_cleans_up_on_error(tmp_path):
    target = tmp_path / "sub" / "out.txt"
    with atomic_path(target) as tmp:
        assert tmp.parent == target.parent and tmp.suffix == ".txt" and tmp != target
        Path(tmp).write_text("all")
    assert target.read_text() == "all"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            Path(tmp).write_text("half")
            raise RuntimeError("interrupted")
    assert target.read_text() == "all"
    assert [p.name for p in target.parent.iterdir()] == ["out.txt"]


def test_atomic_path_for_a_name_of_the_longest_length(tmp_path):
    path = tmp_path / ("x" * 249 + ".keras")  # 255 bytes: the longest name
    with atomic_path(path) as tmp:
        assert tmp.suffix == ".keras" and tmp.parent == tmp_path
        tmp.write_text("whole")
    assert path.read_text() == "whole" and [p.name for p in tmp_path.iterdir()] == [path.name]
