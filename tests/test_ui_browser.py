"""The web UI once in a real browser: `ghibli-keras ui` served on 127.0.0.1, Debian's chromium
driven by Playwright (no browser download): upload a photo, translate, wait for the result,
take a screenshot.

`make test` installs chromium (Debian's package) first; the test is skipped, saying why, only
where it could not be installed. Set GHIBLI_KERAS_SCREENSHOT=PATH to keep the screenshot (the
README's is made so, with GHIBLI_KERAS_SCREENSHOT_MODEL naming a better-trained model).
"""

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request

import numpy as np
import pytest
from PIL import Image

from conftest import smooth_image

CHROMIUM = "/usr/bin/chromium"
# As root in a container, without a screen, on a machine with no outside network.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
START_TIMEOUT = 120  # seconds for the server to answer its health check
RESULT_TIMEOUT = 300_000  # milliseconds for the translation to appear

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(url: str, server: subprocess.Popen) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise AssertionError(f"ghibli-keras ui exited with {server.returncode}: "
                                 f"{server.stdout.read()}")
        try:
            with urllib.request.urlopen(url + "/_stcore/health", timeout=2) as response:
                if response.read().strip() == b"ok":
                    return
        except OSError:
            time.sleep(0.5)
    raise AssertionError(f"no answer from {url} within {START_TIMEOUT} s")


@pytest.fixture
def chromium():
    if not os.access(CHROMIUM, os.X_OK):
        pytest.skip(f"{CHROMIUM} is not installed (Debian package chromium; `make test` "
                    f"installs it where apt-get works)")
    return pytest.importorskip("playwright.sync_api", reason="playwright is not installed")


@pytest.fixture
def server(trained_workdir, tmp_path):
    model = os.path.abspath(os.environ.get("GHIBLI_KERAS_SCREENSHOT_MODEL") or trained_workdir)
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "ghibli_keras", "ui", "--model", model, "--port", str(port)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=tmp_path)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, process)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()


def test_upload_translate_and_screenshot_in_chromium(chromium, server, tmp_path):
    sync_api = chromium
    photo = tmp_path / "rocket.jpg"
    try:
        from skimage import data  # a public-domain photo (NASA) shipped with scikit-image
        picture = data.rocket()
    except ImportError:
        picture = smooth_image(np.random.default_rng(0), 192, 256)
    Image.fromarray(picture).save(photo, quality=95)
    shot = tmp_path / "ui.png"

    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True,
                                             args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 860})
            page.goto(server, wait_until="networkidle")
            page.get_by_text("Photos in Studio Ghibli style").wait_for()
            page.locator("input[type=file]").first.set_input_files(str(photo))
            button = page.get_by_role("button", name="Translate")
            sync_api.expect(button).to_be_enabled(timeout=60_000)
            button.click()
            result = page.locator("img[alt=result]")
            result.wait_for(state="visible", timeout=RESULT_TIMEOUT)
            page.wait_for_function(
                "() => { const i = document.querySelector('img[alt=result]');"
                " return i && i.complete && i.naturalWidth > 0; }", timeout=60_000)
            width = page.evaluate("document.querySelector('img[alt=result]').naturalWidth")
            assert width == Image.open(photo).size[0]  # the result has the photo's size
            sync_api.expect(page.get_by_role("button", name="Download the result")).to_be_visible()
            page.screenshot(path=str(shot), full_page=True)
        finally:
            browser.close()

    image = Image.open(shot)
    assert image.format == "PNG" and image.size[0] == 1280
    assert np.asarray(image.convert("L")).std() > 10  # a page with pictures, not a blank one
    keep = os.environ.get("GHIBLI_KERAS_SCREENSHOT")
    if keep:
        shutil.copy(shot, keep)
