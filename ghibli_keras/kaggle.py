"""The Kaggle kernel: build its folder, push it, submit a zip (`ghibli-keras kaggle ...`).

`build` writes two folders Kaggle's API uploads as they are:
  DIR/kernel/   kernel-metadata.json + ghibli_cyclegan.ipynb (from kaggle_kernel/)
  DIR/wheel/    dataset-metadata.json + the ghibli_keras wheel, a dataset the kernel installs
                from (Kaggle kernels often run without internet)
Building needs no credentials; pushing and submitting do.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Optional

from .errors import InputError

COMPETITION = "gan-getting-started"
KERNEL_SLUG = "ghibli-cyclegan"
KERNEL_TITLE = "Ghibli CycleGAN"
WHEEL_SLUG = "ghibli-keras-wheel"
WHEEL_TITLE = "ghibli-keras wheel"
PLACEHOLDER_USER = "your-kaggle-username"
NOTEBOOK = "ghibli_cyclegan.ipynb"
ACCELERATORS = ("gpu", "tpu", "none")
REPO = Path(__file__).resolve().parents[1]
KERNEL_SOURCE = REPO / "kaggle_kernel"


def username(explicit: Optional[str] = None) -> tuple[str, bool]:
    """(the Kaggle user for ids, whether it is the placeholder): the flag, else
    $KAGGLE_USERNAME, else `PLACEHOLDER_USER`."""
    name = explicit or os.environ.get("KAGGLE_USERNAME")
    return (name, False) if name else (PLACEHOLDER_USER, True)


def kernel_metadata(user: str, accelerator: str = "gpu", internet: bool = False) -> dict:
    """kernel-metadata.json: every field of Kaggle's kernel metadata, with its type."""
    if accelerator not in ACCELERATORS:
        raise InputError(f"--accelerator must be one of {ACCELERATORS}, got {accelerator!r}")
    return {
        "id": f"{user}/{KERNEL_SLUG}",
        "title": KERNEL_TITLE,
        "code_file": NOTEBOOK,
        "language": "python",
        "kernel_type": "notebook",
        "is_private": True,
        "enable_gpu": accelerator == "gpu",
        "enable_tpu": accelerator == "tpu",
        "enable_internet": internet,
        "dataset_sources": [f"{user}/{WHEEL_SLUG}"],
        "competition_sources": [COMPETITION],
        "kernel_sources": [],
        "model_sources": [],
    }


def dataset_metadata(user: str) -> dict:
    return {"title": WHEEL_TITLE, "id": f"{user}/{WHEEL_SLUG}", "licenses": [{"name": "apache-2.0"}]}


def build_wheel(out_dir: Path) -> Path:
    """`pip wheel` of this package (no dependencies) into `out_dir`."""
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(out_dir), str(REPO)],
        capture_output=True, text=True,
    )
    wheels = sorted(out_dir.glob("ghibli_keras-*.whl"))
    if result.returncode or not wheels:
        raise InputError(f"building the wheel failed: {result.stderr.strip()[-500:]}")
    return wheels[-1]


def build(out, *, user: Optional[str] = None, accelerator: str = "gpu", internet: bool = False,
          wheel: bool = True) -> Path:
    """Writes DIR/kernel and DIR/wheel (see the module docstring); returns DIR."""
    out = Path(out)
    name, placeholder = username(user)
    if placeholder:
        print(f"warning: no --username and no KAGGLE_USERNAME: the ids say {PLACEHOLDER_USER!r}; "
              f"edit {out / 'kernel' / 'kernel-metadata.json'} and "
              f"{out / 'wheel' / 'dataset-metadata.json'} before pushing", file=sys.stderr)
    notebook = KERNEL_SOURCE / NOTEBOOK
    if not notebook.is_file():
        raise InputError(f"{notebook} is missing: build from a checkout of the repository")
    kernel = out / "kernel"
    kernel.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(notebook, kernel / NOTEBOOK)
    (kernel / "kernel-metadata.json").write_text(
        json.dumps(kernel_metadata(name, accelerator, internet), indent=2) + "\n")
    wheel_dir = out / "wheel"
    wheel_dir.mkdir(parents=True, exist_ok=True)
    (wheel_dir / "dataset-metadata.json").write_text(json.dumps(dataset_metadata(name), indent=2) + "\n")
    if wheel:
        for old in wheel_dir.glob("ghibli_keras-*.whl"):
            old.unlink()
        build_wheel(wheel_dir)
    return out


def api():
    """An authenticated `KaggleApi`, or InputError saying how to give credentials."""
    quiet = io.StringIO()
    with contextlib.redirect_stdout(quiet), contextlib.redirect_stderr(quiet):
        try:
            import kaggle  # logs in, as `kaggle.api` (kaggle < 2.1 exits if it cannot)
            from kaggle.api.kaggle_api_extended import KaggleApi

            client = getattr(kaggle, "api", None)  # reused: kaggle 1.8's login takes
            if not (isinstance(client, KaggleApi)  # KAGGLE_API_TOKEN out of os.environ
                    and getattr(client, "_authenticated", True)):  # (kaggle 2.x: a flag)
                client = KaggleApi()
                client.authenticate()
        except ImportError:
            raise InputError("the Kaggle API is not installed: pip install 'kaggle>=1.6,<3'") from None
        except (SystemExit, Exception):  # (kaggle < 2.1 logs in, or exits, when imported)
            said = quiet.getvalue().strip().splitlines()
            raise InputError(
                "no Kaggle credentials: create an API token at https://www.kaggle.com/settings/api "
                "and save it as ~/.kaggle/kaggle.json (or set KAGGLE_USERNAME and KAGGLE_KEY, or "
                "KAGGLE_API_TOKEN)" + (f" (Kaggle said: {said[-1]})" if said else "")) from None
    return client


#: How long `push` waits for a new wheel dataset to be ready, and how often it asks.
DATASET_READY_SECONDS, DATASET_POLL_SECONDS = 300, 5
DATASET_FAILED = ("error", "failed", "deleted")  # final statuses (kaggle < 1.7: "error")


def _refused(response, what: str) -> None:
    """The Kaggle API answers many refusals with a response carrying `error` rather than an
    exception: raise them."""
    error = getattr(response, "error", None)
    if error:
        raise InputError(f"Kaggle refused the {what}: {error}")


def _call(what: str, method, *args, **kwargs):
    """`method(*args, **kwargs)` of the Kaggle API; its HTTP or network errors, and refusals
    carried in its response, become an `InputError` naming `what`."""
    try:
        response = method(*args, **kwargs)
    except Exception as e:  # requests' HTTPError, ConnectionError, kagglesdk's errors...
        raise InputError(f"Kaggle refused the {what}: {str(e).strip() or type(e).__name__}"
                         ) from None
    _refused(response, what)
    return response


def _not_found(error: Exception) -> bool:
    status = getattr(getattr(error, "response", None), "status_code", None)
    return status == 404 or "404" in str(error)


def _wait_until_ready(client, dataset_id: str, sleep) -> None:
    waited = 0
    while True:
        status = str(_call(f"status request for {dataset_id}", client.dataset_status,
                           dataset_id) or "").lower()
        if status == "ready":
            return
        if status in DATASET_FAILED or waited >= DATASET_READY_SECONDS:
            raise InputError(f"the wheel dataset {dataset_id} is {status or 'not ready'} after "
                             f"{waited} s: check it on kaggle.com/datasets/{dataset_id}, then push "
                             f"again (the kernel was not pushed)")
        sleep(DATASET_POLL_SECONDS)
        waited += DATASET_POLL_SECONDS


def push(folder, client=None, sleep=None) -> None:
    """Uploads DIR/wheel as a dataset (a new version if it exists), waits until Kaggle says it
    is ready, and pushes DIR/kernel. Kaggle's refusals, and data sources it could not attach
    to the kernel, are raised as `InputError`."""
    import time

    sleep = sleep or time.sleep
    folder = Path(folder)
    kernel, wheel = folder / "kernel", folder / "wheel"
    if not (kernel / "kernel-metadata.json").is_file():
        raise InputError(f"{kernel / 'kernel-metadata.json'} not found: run `ghibli-keras kaggle "
                         f"build --out {folder}` first")
    metadata = json.loads((kernel / "kernel-metadata.json").read_text())
    if metadata["id"].startswith(PLACEHOLDER_USER + "/"):
        raise InputError(f"{kernel / 'kernel-metadata.json'} still has the placeholder id "
                         f"{metadata['id']!r}: rebuild with --username or KAGGLE_USERNAME")
    client = client or api()
    if (wheel / "dataset-metadata.json").is_file():
        dataset_id = json.loads((wheel / "dataset-metadata.json").read_text())["id"]
        try:
            client.dataset_status(dataset_id)
            exists = True
        except Exception as e:  # the API raises an HTTP error for an unknown dataset
            if not _not_found(e):
                raise InputError(f"could not ask Kaggle about the dataset {dataset_id}: "
                                 f"{str(e).strip() or type(e).__name__}") from None
            exists = False
        if not any(wheel.glob("ghibli_keras-*.whl")):
            raise InputError(f"{wheel} holds no ghibli_keras wheel for the kernel to install: "
                             f"run `ghibli-keras kaggle build --out {folder}` without --no-wheel")
        if exists:
            _call(f"new version of {dataset_id}", client.dataset_create_version, str(wheel),
                  version_notes="ghibli-keras update", quiet=True)
        else:
            _call(f"new dataset {dataset_id}", client.dataset_create_new, str(wheel),
                  public=False, quiet=True)
        # a kernel pushed before its new wheel is ready would install the previous one
        _wait_until_ready(client, dataset_id, sleep)
    response = _call(f"kernel {metadata['id']}", client.kernels_push, str(kernel))
    for kind in ("Dataset", "Competition", "Kernel"):
        invalid = getattr(response, f"invalid{kind}Sources", None)
        if invalid:
            raise InputError(f"the kernel {metadata['id']} was pushed, but Kaggle could not attach "
                             f"its {kind.lower()} source(s) {list(invalid)}: check that they exist "
                             f"and that you may use them (join the competition), then push again")
    print(f"pushed {metadata['id']}: {getattr(response, 'url', '') or response}")


NOTEBOOK_ROUTE = (
    "This competition takes submissions from notebooks: push the kernel (`ghibli-keras kaggle "
    "push DIR`), let it run on Kaggle, then on the kernel's page choose Output -> Submit to "
    "competition (the kernel writes /kaggle/working/images.zip)."
)


UPLOAD_FAILED = "Could not submit to competition"  # kaggle 2.x answers a failed upload so


def submit(zip_path, message: str, client=None) -> None:
    """Submits `zip_path` to the competition; if Kaggle answers that only notebooks may submit,
    shows its answer and the notebook route."""
    from .submission import check_zip

    zip_path = Path(zip_path)
    check_zip(zip_path)  # SubmissionError naming what breaks the rules, before any upload
    client = client or api()
    try:
        response = client.competition_submit(str(zip_path), message, COMPETITION)
    except Exception as e:
        answer = str(e).strip() or type(e).__name__
        if "notebook" in answer.lower() or "kernel" in answer.lower() or "code competition" in answer.lower():
            raise InputError(f"Kaggle answered: {answer}\n{NOTEBOOK_ROUTE}") from None
        raise InputError(f"Kaggle refused the submission: {answer}") from None
    answer = getattr(response, "message", "") or ""
    if answer == getattr(client, "COMPETITION_SUBMIT_UPLOAD_FAILED_MESSAGE", UPLOAD_FAILED):
        raise InputError(f"the upload of {zip_path} failed (Kaggle's client: {answer!r}); "
                         f"try again, or submit it from the kernel's page")
    _refused(response, f"submission of {zip_path}")
    print(f"submitted {zip_path} to {COMPETITION}: {answer or response}")
