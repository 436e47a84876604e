"""The command line: fast help, one-line errors before TensorFlow, and make-tfrecords."""

import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

from ghibli_keras import cli, data


#: The command line in a fresh interpreter, failing if it imported TensorFlow.
MAIN_WITHOUT_TENSORFLOW = (
    "import sys, ghibli_keras_cli; "
    "rc = ghibli_keras_cli.main(sys.argv[1:]); "
    "assert 'tensorflow' not in sys.modules, 'tensorflow was imported'; sys.exit(rc)"
)


def _run(*args, **kwargs):
    return subprocess.run(
        [sys.executable, "-m", "ghibli_keras", *args], capture_output=True, text=True, **kwargs
    )


def test_help_for_every_subcommand():
    result = _run("--help")
    assert result.returncode == 0 and "make-tfrecords" in result.stdout and "demo" in result.stdout
    for command in ("make-tfrecords", "train", "demo", "fid", "translate", "export", "submission",
                    "style-transfer", "ui"):
        result = _run(command, "--help")
        assert result.returncode == 0 and "usage: ghibli-keras " + command in result.stdout


def test_errors_before_tensorflow_is_imported(tmp_path):
    """Validation runs with only the standard library and Pillow loaded: no TensorFlow import,
    so no TensorFlow log noise, and one line on stderr."""
    (tmp_path / "empty").mkdir()
    for args, message in [
        ([str(tmp_path / "missing"), str(tmp_path / "out"), "--prefix", "p"], "does not exist"),
        ([str(tmp_path / "empty"), str(tmp_path / "out"), "--prefix", "p"], "no pictures found"),
        ([str(tmp_path / "empty"), str(tmp_path / "out"), "--prefix", "p", "--size", "-3"], "--size"),
        ([str(tmp_path / "empty"), str(tmp_path / "out"), "--prefix", "../p"],
         "argument --prefix: must be the start of a file name (no '/'), got '../p'"),
        ([str(tmp_path / "empty"), str(tmp_path / "out"), "--prefix", "p" * 201],
         "argument --prefix: 201 bytes long; at most 200"),
        ([str(tmp_path / "empty"), str(tmp_path / "out" / "sub"), "--prefix", "p"],
         f"cannot be made: '{tmp_path / 'out'}' is a file"),
    ]:
        (tmp_path / "out").unlink(missing_ok=True)
        if "sub" in args[1]:
            (tmp_path / "out").write_text("a file in the way")
        result = subprocess.run(
            [sys.executable, "-c", MAIN_WITHOUT_TENSORFLOW, "make-tfrecords", *args],
            capture_output=True, text=True,
        )
        assert result.returncode == 2, result.stderr
        assert message in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert not (tmp_path / "out").is_dir()


def test_make_tfrecords_end_to_end(tmp_path, capsys, rng):
    src = tmp_path / "src"
    src.mkdir()
    for i in range(5):
        Image.fromarray(rng.integers(0, 255, (40, 30, 3), dtype=np.uint8)).save(src / f"{i}.jpg")
    (src / "broken.png").write_bytes(b"\x89PNG broken")
    rc = cli.main(["make-tfrecords", str(src), str(tmp_path / "out"), "--prefix", "photo",
                   "--size", "16", "--shard-size", "2", "--quiet"])
    out = capsys.readouterr().out
    assert rc == 0
    assert "wrote 5 images in 3 shard(s)" in out and "broken.png" in out
    assert data.count_images(tmp_path / "out") == 5
    rc = cli.main(["make-tfrecords", str(src), str(tmp_path / "out2"), "--prefix", "photo",
                   "--strict", "--quiet"])
    assert rc == 2 and "broken.png" in capsys.readouterr().err
    assert not list((tmp_path / "out2").glob("*"))


@pytest.mark.slow
def test_demo_command_writes_pictures_and_scores(tmp_path):
    """The demo end to end, shortened (the full run is `make demo`)."""
    repo = cli.__file__.rsplit("/ghibli_keras", 1)[0]
    missing = str(tmp_path / "no_inception.h5")  # no weights: KID/FID skipped, with the reason
    result = _run("demo", "--out", str(tmp_path / "demo"), "--epochs", "2",
                  "--steps-per-epoch", "3", cwd=repo,
                  env={**os.environ, "GHIBLI_KERAS_INCEPTION_WEIGHTS": missing})
    assert result.returncode == 0, result.stderr[-3000:]
    assert "held-out score on 64 photos never seen in training" in result.stdout
    assert f"KID/FID skipped: --inception-weights {missing!r}: no such file" in result.stdout
    out = tmp_path / "demo"
    for name in ("before_after.png", "samples.png", "loss_curves.png", "scores.json",
                 "translated/00_photo.png", "translated/00_ghibli.png", "workdir/model.keras"):
        assert (out / name).is_file(), name
    scores = json.loads((out / "scores.json").read_text())
    assert scores["images"] == 64 and abs(scores["psnr_identity_baseline_db"] - 17.24) < 0.05


def test_the_sample_defaults_work_from_any_folder(tmp_path):
    """`train --preset tiny` and `demo` find the embedded sample from outside the checkout's
    root: each run here gets past the shard checks to a later argument's error (before
    TensorFlow); a path that is not the sample's is taken as given."""
    checkout = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {**os.environ, "PYTHONPATH": checkout}  # this checkout, run from another folder
    for args, message in [
        (["train", "--preset", "tiny", "--image-size", "30", "--workdir", "wd"], "--image-size"),
        (["demo", "--inception-weights", "missing.h5"], "--inception-weights"),
        (["train", "--photos", "shards/*.tfrec", "--workdir", "wd"], "--photos 'shards/*.tfrec'"),
        (["demo", "--sample", "."], "sample shards 'photo' not found"),
    ]:
        result = subprocess.run([sys.executable, "-c", MAIN_WITHOUT_TENSORFLOW, *args],
                                capture_output=True, text=True, cwd=tmp_path, env=env)
        assert result.returncode == 2, result.stderr
        assert message in result.stderr and "--styles" not in result.stderr, result.stderr
    assert not (tmp_path / "wd").exists()


def test_train_says_to_convert_pictures_before_tensorflow(tmp_path):
    (tmp_path / "pictures" / "sub").mkdir(parents=True)
    (tmp_path / "pictures" / "sub" / "a.jpg").write_bytes(b"")  # by name: the check reads none
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("")
    convert = "convert them first: ghibli-keras make-tfrecords"
    for photos, message in [
        ("pictures", f"--photos 'pictures' holds pictures, not TFRecord shards; {convert} pictures"),
        ("pictures/sub/*.jpg", f"matches pictures, not TFRecord shards; {convert} pictures/sub "),
        ("other", "--photos 'other': a folder with no TFRecord shards (.tfrec, "),
    ]:
        result = subprocess.run([sys.executable, "-c", MAIN_WITHOUT_TENSORFLOW, "train",
                                 "--photos", photos, "--workdir", "wd"],
                                capture_output=True, text=True, cwd=tmp_path)
        assert result.returncode == 2 and message in result.stderr, result.stderr
        assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "wd").exists()


def test_log_lines_go_once_to_the_current_stderr(capsys):
    """`main` run again in one process (a notebook, these tests) adds no second handler, and
    writes to the sys.stderr of the moment, not one a previous caller had."""
    import logging

    for attempt in range(2):
        cli._log_to_stderr()
        logging.getLogger("ghibli_keras.test").info("attempt %d", attempt)
        assert capsys.readouterr().err == f"ghibli-keras: attempt {attempt}\n"


def test_train_setting_errors_name_the_flags_before_tensorflow(tmp_path):
    for args, message in [
        (["--learning-rate", "-1"], "argument --learning-rate: must be positive, got -1"),
        (["--max-hours", "0"], "argument --max-hours: must be positive, got 0"),
        (["--epochs", "3", "--decay-epochs", "9"], "error: --decay-epochs must be in 0..epochs (3), got 9"),
        (["--image-size", "64", "--load-size", "32"], "error: --load-size (32) must be >= --image-size (64)"),
    ]:
        result = subprocess.run([sys.executable, "-c", MAIN_WITHOUT_TENSORFLOW, "train", "--preset",
                                 "tiny", "--workdir", "wd", *args],
                                capture_output=True, text=True, cwd=tmp_path)
        assert result.returncode == 2 and message in result.stderr, result.stderr
    assert not (tmp_path / "wd").exists()


def test_a_damaged_keras_file_is_refused_before_tensorflow(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "model.keras").write_bytes(b"PK\x03\x04 cut short")
    (tmp_path / "a.png").write_bytes(b"")
    damaged = "model.keras: not a .keras model (a .keras file is a zip archive; this one is damaged"
    for args in (["translate", "run", "a.png", "--out", "out"], ["export", "run/model.keras", "--out", "exp"],
                 ["ui", "--model", "run"]):
        result = subprocess.run([sys.executable, "-c", MAIN_WITHOUT_TENSORFLOW, *args],
                                capture_output=True, text=True, cwd=tmp_path)
        assert result.returncode == 2 and damaged in result.stderr, result.stderr


def test_a_bad_tf_config_is_refused_before_tensorflow(tmp_path):
    env = {**os.environ, "TF_CONFIG": '{"cluster": {"worker": ["localhost:1"]}, '
                                      '"task": {"type": "worker", "index": 3}}'}
    result = subprocess.run([sys.executable, "-c", MAIN_WITHOUT_TENSORFLOW, "train", "--preset",
                             "tiny", "--strategy", "multiworker", "--workdir", "wd"],
                            capture_output=True, text=True, cwd=tmp_path, env=env)
    assert result.returncode == 2, result.stderr
    assert "TF_CONFIG task index 3 is out of range: the cluster has 1 worker task(s)" in result.stderr


def test_sigterm_stops_a_command_like_ctrl_c(tmp_path, monkeypatch, capsys):
    """`kill` or `timeout` raise inside the command, so its `with` blocks remove what they had
    half written; the exit status is 128 + SIGTERM."""
    import signal

    def killed(args):
        with cli._sigterm_as_interrupt():  # nested, as a command may be: restored on the way out
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)
        raise AssertionError("not reached")

    monkeypatch.setattr(cli, "cmd_make_tfrecords", killed)  # build_parser looks it up
    (tmp_path / "src").mkdir()
    previous = signal.getsignal(signal.SIGTERM)
    assert cli.main(["make-tfrecords", str(tmp_path / "src"), str(tmp_path / "out"),
                     "--prefix", "p"]) == 128 + signal.SIGTERM
    assert "ghibli-keras: terminated" in capsys.readouterr().err
    assert signal.getsignal(signal.SIGTERM) is previous


def test_workdir_on_a_remote_file_system_is_refused(tmp_path):
    result = subprocess.run(
        [sys.executable, "-c", MAIN_WITHOUT_TENSORFLOW, "train", "--preset", "tiny",
         "--workdir", "gs://bucket/run"], capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 2
    assert "argument --workdir: 'gs://bucket/run': a local folder is needed" in result.stderr


def test_train_refuses_a_workdir_it_could_spoil_before_tensorflow(tmp_path):
    """Before TensorFlow: a folder of the user's that is not a run's (a run would remove its
    backup/ and rewrite its log.csv), a rerun with other settings, the kaggle preset away from
    Kaggle, a field's flag named once, and a folder that cannot be made."""
    from ghibli_keras.config import get_preset

    home = tmp_path / "home"
    (home / "backup").mkdir(parents=True)
    (home / "backup" / "photos2019.txt").write_text("precious")
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(
        get_preset("tiny").override(**{"data.image_size": 32, "data.load_size": 36}).to_json())
    (run / "log.csv").write_text("epoch,g_loss\n0,1.0\n")
    cases = [
        (["--preset", "tiny", "--workdir", "home"],
         "home is not the workdir of a ghibli-keras run (no config.json) and holds other files"),
        (["--preset", "tiny", "--workdir", "run"],
         "run holds a run with data.image_size=32, this run asks for 64"),
        (["--preset", "kaggle", "--workdir", "k"],
         "the kaggle preset's shards '/kaggle/input/gan-getting-started/photo_tfrec/*.tfrec' are "
         "not on this machine (they are there in a Kaggle session): give yours with --photos"),
        (["--preset", "tiny", "--workdir", "w", "--image-size", "8"], "error: --image-size 8 is "),
    ]
    if os.path.isdir("/proc/self"):
        cases.append((["--preset", "tiny", "--workdir", "/proc/ghibli"],
                      "argument --workdir: '/proc/ghibli': "))
    for args, message in cases:
        result = subprocess.run([sys.executable, "-c", MAIN_WITHOUT_TENSORFLOW, "train", *args],
                                capture_output=True, text=True, cwd=tmp_path)
        assert result.returncode == 2 and message in result.stderr, result.stderr
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert (home / "backup" / "photos2019.txt").read_text() == "precious"
    assert not (tmp_path / "k").exists() and not (tmp_path / "w").exists()


def test_a_diverged_run_is_one_line(monkeypatch, capsys):
    from ghibli_keras.errors import TrainingDiverged

    def diverged(args):
        raise TrainingDiverged("the generator loss became nan in epoch 1, step 2, before ...")

    monkeypatch.setattr(cli, "cmd_make_tfrecords", diverged)
    assert cli.main(["make-tfrecords", ".", "out", "--prefix", "p"]) == 1
    assert capsys.readouterr().err == (
        "ghibli-keras: stopped: the generator loss became nan in epoch 1, step 2, before ...\n")


def test_a_bad_quality_and_exporting_an_export_are_refused_before_tensorflow(tmp_path):
    (tmp_path / "pictures").mkdir()
    (tmp_path / "models" / "g" / "1").mkdir(parents=True)
    (tmp_path / "models" / "g" / "1" / "saved_model.pb").write_bytes(b"")
    for args, message in [
        (["make-tfrecords", "pictures", "out", "--prefix", "p", "--quality", "500"],
         "argument --quality: a JPEG quality is 1 to 100, got 500"),
        (["export", "models/g/1", "--out", "models/g/2"],
         "MODEL 'models/g/1' is already an export; export a workdir or .keras"),
    ]:
        result = subprocess.run([sys.executable, "-c", MAIN_WITHOUT_TENSORFLOW, *args],
                                capture_output=True, text=True, cwd=tmp_path)
        assert result.returncode == 2 and message in result.stderr, result.stderr
    assert not (tmp_path / "models" / "g" / "2").exists()


def test_weights_named_by_the_environment_are_checked_as_such_before_tensorflow(tmp_path):
    """A missing file in $GHIBLI_KERAS_INCEPTION_WEIGHTS / $GHIBLI_KERAS_VGG_WEIGHTS is named
    as the variable's (not as a flag nobody gave), and a folder is told apart from no file."""
    from ghibli_keras import features, nst

    assert (cli.INCEPTION_WEIGHTS_ENV, cli.VGG_WEIGHTS_ENV) == (features.WEIGHTS_ENV, nst.WEIGHTS_ENV)
    for name in ("real", "fake"):
        (tmp_path / name).mkdir()
        for i in range(2):
            Image.new("RGB", (40, 40), (i * 90, 20, 30)).save(tmp_path / name / f"{i}.png")
    (tmp_path / "ttur").mkdir()
    for env, args, message in [
        ({cli.INCEPTION_WEIGHTS_ENV: "nope.h5"}, ["fid", "real", "fake"],
         "$GHIBLI_KERAS_INCEPTION_WEIGHTS 'nope.h5': no such file"),
        ({cli.INCEPTION_WEIGHTS_ENV: "ttur"}, ["fid", "real", "fake"],
         "$GHIBLI_KERAS_INCEPTION_WEIGHTS 'ttur' is a folder: give the weights file in it"),
        ({}, ["fid", "real", "fake", "--inception-weights", "ttur"],
         "--inception-weights 'ttur' is a folder"),
        ({cli.VGG_WEIGHTS_ENV: "vgg.h5"}, ["style-transfer", "real/0.png", "fake/1.png", "--out",
                                           "o.png"], "$GHIBLI_KERAS_VGG_WEIGHTS 'vgg.h5': no such file"),
    ]:
        result = subprocess.run([sys.executable, "-c", MAIN_WITHOUT_TENSORFLOW, *args],
                                capture_output=True, text=True, cwd=tmp_path,
                                env={**os.environ, **env})
        assert result.returncode == 2 and message in result.stderr, result.stderr
