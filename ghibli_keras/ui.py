"""`ghibli-keras ui`: serves the Streamlit page `ui_app.py` (standard library only, so the
command line can validate its arguments before anything heavy loads).

The launcher hands its options to the page in environment variables, which also lets
`streamlit.testing.v1.AppTest` run the page with chosen settings.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Optional

MODEL = "GHIBLI_KERAS_UI_MODEL"  # a workdir, .keras file or exported SavedModel
VGG_WEIGHTS = "GHIBLI_KERAS_VGG_WEIGHTS"  # nst.WEIGHTS_ENV
MAX_PIXELS = "GHIBLI_KERAS_UI_MAX_PIXELS"
DEFAULT_MAX_PIXELS = 40_000_000  # pictures announcing more in their header are refused
DEFAULT_MAX_UPLOAD_MB = 25
DEFAULT_PORT = 8501
APP = Path(__file__).with_name("ui_app.py")


def streamlit_command(port: int = DEFAULT_PORT, address: str = "127.0.0.1",
                      model: Optional[str] = None, vgg_weights: Optional[str] = None,
                      max_upload_mb: int = DEFAULT_MAX_UPLOAD_MB,
                      max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[list[str], dict]:
    """The `streamlit run` command line and the environment that serve the page."""
    command = [
        sys.executable, "-m", "streamlit", "run", str(APP),
        "--server.port", str(port), "--server.address", address,
        "--server.headless", "true", "--server.maxUploadSize", str(max_upload_mb),
        "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none",
        "--client.toolbarMode", "viewer",
    ]
    env = dict(os.environ)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    env[MAX_PIXELS] = str(max_pixels)
    if model:
        env[MODEL] = str(Path(model).resolve())
    if vgg_weights:
        env[VGG_WEIGHTS] = vgg_weights
    return command, env
