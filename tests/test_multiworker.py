"""Two worker processes on 127.0.0.1 under MultiWorkerMirroredStrategy (TF_CONFIG)."""

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

from conftest import tiny_test_config

WORKER = """
import sys
import numpy as np
from ghibli_keras import training
from ghibli_keras.config import Config

config = Config.from_json(open(sys.argv[1]).read())
history = training.train(config, sys.argv[2], verbose=2)
model = history.model
nets = [model.generator_g, model.generator_f, model.discriminator_x, model.discriminator_y]
np.savez(sys.argv[3], *[w for net in nets for w in net.get_weights()])
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_workers_train_in_sync_and_only_the_chief_writes(tmp_path):
    config = tiny_test_config(**{"train.strategy": "multiworker", "train.epochs": 2,
                                 "train.steps_per_epoch": 2, "train.batch_size": 2})
    (tmp_path / "config.json").write_text(config.to_json())
    cluster = {"worker": [f"127.0.0.1:{_free_port()}", f"127.0.0.1:{_free_port()}"]}
    workdir = tmp_path / "run"
    procs = []
    for index in range(2):
        scratch = tmp_path / f"tmp{index}"
        scratch.mkdir()
        env = {
            **os.environ,
            "TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}}),
            "TF_CPP_MIN_LOG_LEVEL": "2",
            "TMPDIR": str(scratch),
        }
        procs.append(subprocess.Popen(
            [sys.executable, "-c", WORKER, str(tmp_path / "config.json"), str(workdir),
             str(tmp_path / f"weights{index}.npz")],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        ))
    outputs = []
    for proc in procs:
        out, _ = proc.communicate(timeout=900)
        outputs.append(out)
        assert proc.returncode == 0, out[-3000:]
    assert "Epoch 2/2" in outputs[0] and "Epoch" not in outputs[1]  # the chief reports
    a, b = np.load(tmp_path / "weights0.npz"), np.load(tmp_path / "weights1.npz")
    assert len(a.files) == len(b.files) > 0
    for key in a.files:
        np.testing.assert_allclose(a[key], b[key], rtol=0, atol=1e-6)
    for name in ("config.json", "log.csv", "model.keras", "samples/latest.png", "done.json"):
        assert (workdir / name).exists(), name
    assert not (workdir / "backup").exists()
    assert list((tmp_path / "tmp1").iterdir()) == []  # worker 1's scratch folder removed
    rows = (workdir / "log.csv").read_text().splitlines()
    assert len(rows) == 3  # header + one row per epoch, written once (by the chief)
