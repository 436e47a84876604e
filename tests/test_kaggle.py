"""The Kaggle kernel: build output, notebook/script sync, an end-to-end notebook run against a
fake /kaggle root, and push/submit against a stand-in for the Kaggle API (no network)."""

import json
import os
import shutil
import types
from pathlib import Path

import pytest

from conftest import REPO, SAMPLE
from ghibli_keras import kaggle, submission
from ghibli_keras.errors import InputError

KERNEL_FIELDS = {  # Kaggle's kernel-metadata.json: field -> type
    "id": str, "title": str, "code_file": str, "language": str, "kernel_type": str,
    "is_private": bool, "enable_gpu": bool, "enable_tpu": bool, "enable_internet": bool,
    "dataset_sources": list, "competition_sources": list, "kernel_sources": list,
    "model_sources": list,
}


def test_build_writes_kernel_and_wheel_dataset(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("KAGGLE_USERNAME", raising=False)
    out = kaggle.build(tmp_path / "k", user="alice", accelerator="tpu")
    metadata = json.loads((out / "kernel" / "kernel-metadata.json").read_text())
    assert set(metadata) == set(KERNEL_FIELDS)
    for field, kind in KERNEL_FIELDS.items():
        assert isinstance(metadata[field], kind), field
    assert metadata["id"] == "alice/ghibli-cyclegan"
    assert metadata["id"].split("/")[1] == metadata["title"].lower().replace(" ", "-")  # Kaggle's rule
    assert (out / "kernel" / metadata["code_file"]).is_file()
    assert (metadata["language"], metadata["kernel_type"]) == ("python", "notebook")
    assert (metadata["enable_tpu"], metadata["enable_gpu"]) == (True, False)
    assert metadata["competition_sources"] == ["gan-getting-started"]
    assert metadata["dataset_sources"] == ["alice/ghibli-keras-wheel"]
    dataset = json.loads((out / "wheel" / "dataset-metadata.json").read_text())
    assert dataset["id"] == "alice/ghibli-keras-wheel" and dataset["title"]
    assert all(isinstance(l["name"], str) for l in dataset["licenses"])
    assert len(list((out / "wheel").glob("ghibli_keras-*.whl"))) == 1
    assert "warning" not in capsys.readouterr().err

    kaggle.build(tmp_path / "p", wheel=False)  # no user anywhere: the placeholder, and a warning
    assert "warning: no --username" in capsys.readouterr().err
    placeholder = json.loads((tmp_path / "p" / "kernel" / "kernel-metadata.json").read_text())
    assert placeholder["id"] == "your-kaggle-username/ghibli-cyclegan"
    assert placeholder == json.loads((Path(REPO) / "kaggle_kernel" / "kernel-metadata.json").read_text())


def test_notebook_is_in_sync_with_its_script():
    import jupytext
    import nbformat

    folder = Path(REPO) / "kaggle_kernel"
    script = jupytext.read(folder / "ghibli_cyclegan.py")
    notebook = nbformat.read(folder / "ghibli_cyclegan.ipynb", as_version=4)
    assert [(c.cell_type, c.source) for c in notebook.cells] == \
        [(c.cell_type, c.source) for c in script.cells]


class FakeApi:
    """Records the calls the Kaggle API would get."""

    def __init__(self, known_datasets=(), submit_error=None, statuses=("ready",), response=None,
                 create_error=None, submit_response="ok"):
        self.calls, self.known, self.submit_error = [], set(known_datasets), submit_error
        self.submit_response = submit_response
        self.statuses, self.response, self.create_error = list(statuses), response, create_error

    def dataset_status(self, dataset):
        self.calls.append(("dataset_status", dataset))
        if dataset not in self.known:
            raise RuntimeError("404 Not Found")
        return self.statuses.pop(0) if len(self.statuses) > 1 else self.statuses[0]

    def dataset_create_new(self, folder, public=False, quiet=False):
        self.calls.append(("dataset_create_new", folder, public))
        self.known.add(json.loads((Path(folder) / "dataset-metadata.json").read_text())["id"])
        return types.SimpleNamespace(error=self.create_error, status="ok")

    def dataset_create_version(self, folder, version_notes, quiet=False):
        self.calls.append(("dataset_create_version", folder))
        return types.SimpleNamespace(error=self.create_error, status="ok")

    def kernels_push(self, folder):
        self.calls.append(("kernels_push", folder))
        return self.response or types.SimpleNamespace(error=None, url="https://kaggle.example/k",
                                                      invalidDatasetSources=[])

    def competition_submit(self, file_name, message, competition):
        self.calls.append(("competition_submit", file_name, message, competition))
        if self.submit_error:
            raise self.submit_error
        return self.submit_response


def _built(folder, **kwargs):
    """`kaggle build` without running pip: a stand-in wheel file in DIR/wheel."""
    out = kaggle.build(folder, wheel=False, **kwargs)
    (out / "wheel" / "ghibli_keras-0.0.0-py3-none-any.whl").write_bytes(b"PK")
    return out


def test_push_uploads_the_wheel_dataset_then_the_kernel(tmp_path):
    out = _built(tmp_path / "k", user="alice")
    api = FakeApi()
    kaggle.push(out, client=api)
    assert api.calls == [("dataset_status", "alice/ghibli-keras-wheel"),
                         ("dataset_create_new", str(out / "wheel"), False),
                         ("dataset_status", "alice/ghibli-keras-wheel"),  # ready: push
                         ("kernels_push", str(out / "kernel"))]
    again = FakeApi(known_datasets={"alice/ghibli-keras-wheel"})
    kaggle.push(out, client=again)
    assert [c[0] for c in again.calls] == [  # a new version is waited for too
        "dataset_status", "dataset_create_version", "dataset_status", "kernels_push"]
    placeholder = _built(tmp_path / "p")
    with pytest.raises(InputError, match="placeholder id"):
        kaggle.push(placeholder, client=FakeApi())
    without = kaggle.build(tmp_path / "w", user="alice", wheel=False)
    with pytest.raises(InputError, match="holds no ghibli_keras wheel.*without --no-wheel"):
        kaggle.push(without, client=FakeApi())


def test_push_waits_for_a_new_dataset_and_raises_kaggles_refusals(tmp_path):
    out = _built(tmp_path / "k", user="alice")
    waits = []
    api = FakeApi(statuses=["pending", "pending", "ready"])
    kaggle.push(out, client=api, sleep=waits.append)
    assert waits == [kaggle.DATASET_POLL_SECONDS] * 2 and api.calls[-1][0] == "kernels_push"
    never = FakeApi(statuses=["pending"])
    with pytest.raises(InputError, match="ghibli-keras-wheel is pending after 300 s.*kernel was "
                                         "not pushed"):
        kaggle.push(out, client=never, sleep=lambda s: None)
    assert "kernels_push" not in [c[0] for c in never.calls]
    waits = []
    with pytest.raises(InputError, match="ghibli-keras-wheel is failed after 0 s"):
        kaggle.push(out, client=FakeApi(statuses=["failed"]), sleep=waits.append)
    assert waits == []  # a final status: no waiting out the 300 s
    with pytest.raises(InputError, match="Kaggle refused the new dataset alice/ghibli-keras-wheel: "
                                         "title in use"):
        kaggle.push(out, client=FakeApi(create_error="title in use"))
    with pytest.raises(InputError, match="refused the kernel alice/ghibli-cyclegan: bad slug"):
        kaggle.push(out, client=FakeApi(known_datasets={"alice/ghibli-keras-wheel"},
                                        response=types.SimpleNamespace(error="bad slug")))
    class Unauthorized(FakeApi):
        def dataset_status(self, dataset):
            raise RuntimeError("401 Client Error: Unauthorized")

        def kernels_push(self, folder):
            raise ConnectionError("Max retries exceeded with url: /api/v1/kernels/push")

    with pytest.raises(InputError, match="could not ask Kaggle about the dataset alice/ghibli-"
                                         "keras-wheel: 401 Client Error"):
        kaggle.push(out, client=Unauthorized())
    with pytest.raises(InputError, match="refused the kernel alice/ghibli-cyclegan: Max retries"):
        kaggle.push(out, client=type("Offline", (FakeApi,), {
            "kernels_push": Unauthorized.kernels_push})(known_datasets={"alice/ghibli-keras-wheel"}))
    unattached = types.SimpleNamespace(error="", url="u", invalidDatasetSources=["alice/x"])
    with pytest.raises(InputError, match=r"could not attach its dataset source\(s\) \['alice/x'\]"):
        kaggle.push(out, client=FakeApi(known_datasets={"alice/ghibli-keras-wheel"},
                                        response=unattached))


def test_submit_and_the_notebook_route(tmp_path, monkeypatch):
    archive = tmp_path / "images.zip"
    archive.write_bytes(b"PK")
    api = FakeApi()
    with pytest.raises(submission.SubmissionError, match="not a zip file"):
        kaggle.submit(archive, "first try", client=api)  # checked before any upload
    with pytest.raises(InputError, match="no such file"):
        kaggle.submit(tmp_path / "missing.zip", "x", client=api)
    assert api.calls == []
    checked = []
    monkeypatch.setattr(submission, "check_zip", checked.append)  # (a 7,000-picture zip)
    kaggle.submit(archive, "first try", client=api)
    assert checked == [archive]
    assert api.calls == [("competition_submit", str(archive), "first try", "gan-getting-started")]
    refusing = FakeApi(submit_error=RuntimeError("400: Submission not allowed: this is a Code Competition; submit from a Notebook"))
    with pytest.raises(InputError, match="(?s)Kaggle answered: 400.*Output -> Submit to competition"):
        kaggle.submit(archive, "again", client=refusing)
    failed = FakeApi(submit_response=types.SimpleNamespace(message=kaggle.UPLOAD_FAILED))
    with pytest.raises(InputError, match="the upload of .*images.zip failed"):
        kaggle.submit(archive, "again", client=failed)  # kaggle 2.x answers, does not raise


@pytest.mark.slow
def test_notebook_runs_end_to_end_against_a_fake_kaggle_root(tmp_path, monkeypatch):
    """The tiny preset for two steps on sample shards laid out as Kaggle's, ending with a valid
    images.zip. 64 photos only, so the count rule is lowered explicitly (GHIBLI_MIN_IMAGES)."""
    import nbclient
    import nbformat

    root = tmp_path / "kaggle"
    data = root / "input" / "competitions" / "gan-getting-started"  # Kaggle's newer layout
    shutil.copytree(os.path.join(SAMPLE, "photo_test"), data / "photo_tfrec")
    shutil.copytree(os.path.join(SAMPLE, "ghibli"), data / "monet_tfrec")
    (root / "working").mkdir()
    overrides = {"train.epochs": 1, "train.decay_epochs": 0, "train.steps_per_epoch": 2,
                 "data.image_size": 32, "data.load_size": 36, "model.ngf": 4, "model.n_blocks": 1,
                 "model.ndf": 4, "train.batch_size": 2, "train.xla": "off"}
    monkeypatch.setenv("GHIBLI_KAGGLE_ROOT", str(root))
    monkeypatch.setenv("GHIBLI_PRESET", "tiny")
    monkeypatch.setenv("GHIBLI_OVERRIDES", json.dumps(overrides))
    monkeypatch.setenv("GHIBLI_MIN_IMAGES", "60")
    monkeypatch.setenv("GHIBLI_KERAS_INCEPTION_WEIGHTS", str(tmp_path / "no_weights.h5"))
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "2")
    notebook = nbformat.read(Path(REPO) / "kaggle_kernel" / "ghibli_cyclegan.ipynb", as_version=4)
    client = nbclient.NotebookClient(notebook, timeout=900, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()
    printed = "".join(o.get("text", "") for c in notebook.cells if c.cell_type == "code"
                      for o in c.outputs)
    assert "images.zip: 64 images" in printed and "MiFID skipped:" in printed
    assert submission.check_zip(root / "working" / "images.zip", min_images=60) == 64


def test_missing_credentials_say_what_to_do(tmp_path, monkeypatch):
    for name in ("KAGGLE_USERNAME", "KAGGLE_KEY", "KAGGLE_API_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(tmp_path / ".kaggle"))
    with pytest.raises(InputError, match="no Kaggle credentials: create an API token"):
        kaggle.api()


def test_a_kaggle_that_exits_when_imported_is_a_credentials_error(tmp_path, monkeypatch):
    """kaggle < 2.1 logs in when imported and, without credentials, prints why and exits."""
    package = tmp_path / "kaggle"
    (package / "api").mkdir(parents=True)
    (package / "__init__.py").write_text("print('Could not find kaggle.json'); exit(1)\n")
    (package / "api" / "__init__.py").write_text("")
    (package / "api" / "kaggle_api_extended.py").write_text("class KaggleApi: pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in [m for m in list(__import__("sys").modules) if m.split(".")[0] == "kaggle"]:
        monkeypatch.delitem(__import__("sys").modules, name)
    with pytest.raises(InputError, match=r"no Kaggle credentials.*\(Kaggle said: Could not find "
                                         r"kaggle.json\)"):
        kaggle.api()


def test_the_login_kaggle_makes_when_imported_is_reused(tmp_path, monkeypatch):
    """kaggle 1.8 logs in when imported (as `kaggle.api`) and takes KAGGLE_API_TOKEN out of the
    environment as it does: a second login fails, so the first is used."""
    package = tmp_path / "kaggle"
    (package / "api").mkdir(parents=True)
    (package / "__init__.py").write_text(
        "from kaggle.api.kaggle_api_extended import KaggleApi\n"
        "api = KaggleApi()\napi.authenticate()\n")
    (package / "api" / "__init__.py").write_text("")
    (package / "api" / "kaggle_api_extended.py").write_text(
        "import os\n\nclass KaggleApi:\n    def authenticate(self):\n"
        "        self.token = os.environ.pop('KAGGLE_API_TOKEN')  # KeyError the second time\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in [m for m in list(__import__("sys").modules) if m.split(".")[0] == "kaggle"]:
        monkeypatch.delitem(__import__("sys").modules, name)
    monkeypatch.setenv("KAGGLE_API_TOKEN", "KGAT_secret")
    assert kaggle.api().token == "KGAT_secret"
