"""What a rerun may do in a workdir (`workdir.check`), read with the standard library alone."""

import json

import pytest

from conftest import REPO, tiny_test_config
from ghibli_keras import workdir
from ghibli_keras.errors import InputError


def _started_run(path, config, epochs_done=None):
    """A workdir as a run leaves it: config.json, a log row, and done.json when finished."""
    path.mkdir()
    (path / "config.json").write_text(config.to_json())
    (path / "log.csv").write_text("epoch,g_loss\n0,1.0\n")
    if epochs_done is not None:
        (path / "done.json").write_text(json.dumps({"epochs": epochs_done}))
    return path


def test_a_folder_of_other_files_is_not_taken_for_a_workdir(tmp_path):
    """A run writes log.csv and model.keras and removes backup/ when it ends: a folder that is
    not a run's (no config.json) but holds files is refused, so nothing of the user's goes."""
    config = tiny_test_config()
    workdir.check(config, tmp_path / "new")  # missing: made by the run
    (tmp_path / "empty").mkdir()
    workdir.check(config, tmp_path / "empty")
    (tmp_path / "empty" / ".lock").write_text("")  # a run killed before its config.json
    (tmp_path / "empty" / "tensorboard").mkdir()  # (the KID/FID callback's writer, made first)
    workdir.check(config, tmp_path / "empty")
    home = tmp_path / "home"
    (home / "backup").mkdir(parents=True)
    (home / "backup" / "photos2019.txt").write_text("precious")
    (home / "log.csv").write_text("epoch,score\n1,0.5\n")
    with pytest.raises(InputError, match=r"home is not the workdir of a ghibli-keras run \(no "
                                         r"config.json\) and holds other files \(backup, log.csv\)"
                                         r".*choose a new or empty --workdir"):
        workdir.check(config, home)
    (tmp_path / "file").write_text("")
    with pytest.raises(InputError, match="exists and is not a folder"):
        workdir.check(config, tmp_path / "file")


def test_a_run_that_never_trained_takes_new_settings(tmp_path):
    """Keras' CSVLogger makes log.csv (its header) as training begins: a run killed, or failed,
    in its first epoch has not started, so a rerun may change e.g. the batch size."""
    config = tiny_test_config()
    run = _started_run(tmp_path / "run", config)
    other = config.override(**{"train.batch_size": 4})
    with pytest.raises(InputError, match="holds a run with train.batch_size=2, this run asks for 4"):
        workdir.check(other, run)
    (run / "log.csv").write_text("epoch,g_loss\n")
    assert not workdir.started(run)
    workdir.check(other, run)
    (run / "backup").mkdir()
    assert workdir.started(run)


def test_a_rerun_may_lower_the_learning_rate(tmp_path):
    """The advice after a NaN loss: the same command with a lower --learning-rate."""
    config = tiny_test_config()
    run = _started_run(tmp_path / "run", config)
    workdir.check(config.override(**{"train.learning_rate": 1e-5}), run)


def test_a_finished_run_is_compared_too(tmp_path):
    """A finished run (done.json) is not trained further, and a rerun with other settings is
    refused, not answered 'nothing to do'."""
    config = tiny_test_config()
    run = _started_run(tmp_path / "run", config, epochs_done=2)
    workdir.check(config, run)
    workdir.check(config.override(**{"train.epochs": 1, "train.decay_epochs": 1}), run)
    with pytest.raises(InputError, match="holds a run with data.image_size=32, this run asks for 64"):
        workdir.check(config.override(**{"data.image_size": 64, "data.load_size": 72}), run)
    with pytest.raises(InputError, match=r"finished its 2 epochs; this run asks for "
                                         r"train.epochs=5: a finished run is not trained further"):
        workdir.check(config.override(**{"train.epochs": 5}), run)
    (run / "done.json").write_text("{")
    with pytest.raises(InputError, match="done.json: damaged"):
        workdir.check(config, run)


def test_the_sample_shards_are_the_same_from_any_folder(tmp_path, monkeypatch):
    """The presets' sample shards are relative in a checkout and absolute elsewhere: a run
    started in the checkout resumes from another folder."""
    config = tiny_test_config(**{"data.photos": "tfrecords/sample/photo/*.tfrec",
                                 "data.styles": "tfrecords/sample/ghibli/*.tfrec",
                                 "data.heldout_photos": None})
    monkeypatch.chdir(REPO)
    run = _started_run(tmp_path / "run", config)
    monkeypatch.chdir(tmp_path)
    absolute = config.override(**{"data.photos": f"{REPO}/tfrecords/sample/photo/*.tfrec",
                                  "data.styles": f"{REPO}/tfrecords/sample/ghibli/*.tfrec"})
    workdir.check(absolute, run)
    with pytest.raises(InputError, match="holds a run with data.styles="):
        workdir.check(absolute.override(**{"data.styles": f"{REPO}/tfrecords/sample/photo/*.tfrec"}),
                      run)


def test_a_folder_of_shards_and_their_glob_are_the_same_setting(tmp_path):
    shards = tmp_path / "photos"
    shards.mkdir()
    for name in ("p00-2.tfrec", "p01-1.tfrec"):
        (shards / name).write_bytes(b"")
    config = tiny_test_config(**{"data.photos": str(shards)})
    run = _started_run(tmp_path / "run", config)
    workdir.check(config.override(**{"data.photos": f"{shards}/*.tfrec"}), run)
    with pytest.raises(InputError, match="holds a run with data.photos="):
        workdir.check(config.override(**{"data.photos": f"{shards}/p00*.tfrec"}), run)
