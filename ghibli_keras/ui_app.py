"""The Streamlit page of `ghibli-keras ui`: upload a photo, see it in Ghibli style.

Run it with `ghibli-keras ui [--model PATH]` (which starts `streamlit run` on this file); the
launcher passes its options in the environment variables named in `ghibli_keras.ui`, so the
page also runs under `streamlit.testing.v1.AppTest`.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

import numpy as np
import streamlit as st

from ghibli_keras import images, ui
from ghibli_keras.errors import InputError

PICTURE_TYPES = ["jpg", "jpeg", "png", "webp", "bmp", "gif", "tif", "tiff"]
CYCLEGAN, STYLE_TRANSFER = "CycleGAN", "Style transfer"
CYCLEGAN_SIDES = [256, 512, 1024, 2048]  # the longer side the photo is shrunk to first
STYLE_SIDES = [128, 256, 384, 512]
RESULT_KEYS = ("result", "how", "original", "download_name", "request")


@st.cache_resource(show_spinner="Loading the model…", max_entries=1)
def load_translator(model: str, version: tuple):
    """The translator of `model`, cached per `version` (`model_version`): a workdir still
    training saves a new model.keras each epoch, and the page then loads that. One model is
    kept: each version would otherwise stay in memory for the life of the server. Pictures
    are padded to bucket sizes (`buckets`), so the server's memory grows with the buckets
    used, not with every new picture size."""
    from ghibli_keras import inference

    return inference.Translator.load(model, "photo2style", buckets=True)


def model_version(model: str) -> tuple:
    """(modification time, size) of the file that holds `model`: its saved_model.pb, its
    model.keras, or the .keras file itself; () when there is none (Translator.load says why)."""
    path = Path(model)
    for candidate in (path / "saved_model.pb", path / "model.keras", path):
        if candidate.is_file():
            stat = candidate.stat()
            return stat.st_mtime_ns, stat.st_size
    return ()


@st.cache_resource(show_spinner="Loading VGG19…")
def load_vgg(weights: str):
    from ghibli_keras import nst

    return nst.feature_extractor(None if weights == "random" else weights)


def read_upload(upload, what: str, max_pixels: int):
    """An uploaded file -> uint8 (H, W, 3), or None after showing why it cannot be used."""
    if upload is None:
        return None
    try:
        return images.read_image(upload.getvalue(), max_pixels=max_pixels)
    except images.ImageReadError as e:
        st.error(f"**{upload.name}** cannot be used as the {what}: {e.reason}. "
                 f"Upload a JPEG, PNG or WebP picture.")
        return None


def content_id(upload) -> str:
    """What an upload holds (its bytes' SHA-1), or "" without one: a result is shown only
    beside the upload and settings it was made from."""
    return "" if upload is None else hashlib.sha1(upload.getvalue()).hexdigest()


def run_cyclegan(photo: np.ndarray, model: str, side: int) -> tuple[np.ndarray, str]:
    from ghibli_keras import inference

    translator = load_translator(model, model_version(model))
    photo = images.resize_longer_side(photo, side, enlarge=False)
    bar = st.progress(0.0, text="Translating…")
    result = inference.translate_image(
        translator, photo,
        progress=lambda done, total: bar.progress(done / total, text=f"Translating: tile {done} of {total}"))
    bar.empty()
    return result, f"CycleGAN ({translator.name})"


def run_style_transfer(photo: np.ndarray, style: np.ndarray, weights: str, steps: int,
                       side: int) -> tuple[np.ndarray, str]:
    from ghibli_keras import nst

    extractor = load_vgg(weights)
    bar = st.progress(0.0, text="Style transfer…")

    def progress(done: int, losses: dict) -> None:
        bar.progress(done / steps, text=f"Style transfer: step {done} of {steps}, "
                                        f"loss {losses['total']:.4g}")

    # no upscaling, but at least VGG19's smallest side (a smaller picture is refused by name)
    config = nst.StyleConfig(steps=steps, size=max(nst.MIN_SIDE, min(side, max(photo.shape[:2]))))
    result = nst.stylize(photo, style, config, weights=weights, extractor=extractor,
                         progress=progress)
    bar.empty()
    return result.image, f"style transfer, {steps} steps (VGG19 weights: {weights})"


def main() -> None:
    st.set_page_config(page_title="ghibli-keras", page_icon="🎨", layout="wide")
    st.title("Photos in Studio Ghibli style")
    max_pixels = int(os.environ.get(ui.MAX_PIXELS) or ui.DEFAULT_MAX_PIXELS)

    with st.sidebar:
        method = st.radio("Method", [CYCLEGAN, STYLE_TRANSFER], key="method",
                          help="A trained CycleGAN, or neural style transfer from one picture")
        if method == CYCLEGAN:
            model = st.text_input("Model", os.environ.get(ui.MODEL, ""), key="model",
                                  help="a training workdir, a .keras file or an exported SavedModel")
            side = st.select_slider("Longer side (pixels)", CYCLEGAN_SIDES, 1024, key="cyclegan_side")
        else:
            weights = os.environ.get(ui.VGG_WEIGHTS) or "imagenet"
            st.caption(f"VGG19 weights: {weights}")
            steps = st.slider("Steps", 10, 500, 100, step=10, key="steps")
            side = st.select_slider("Longer side (pixels)", STYLE_SIDES, 256, key="style_side")

    upload = st.file_uploader("Photo", type=PICTURE_TYPES, key="photo")
    photo = read_upload(upload, "photo", max_pixels)
    style = None
    if method == STYLE_TRANSFER:
        style_upload = st.file_uploader("Style picture (e.g. a Ghibli still)", type=PICTURE_TYPES,
                                        key="style")
        style = read_upload(style_upload, "style picture", max_pixels)

    ready = photo is not None and (method == CYCLEGAN or style is not None)
    if method == CYCLEGAN and not model:
        st.info("Give a model in the sidebar (or start with `ghibli-keras ui --model PATH`).")
        ready = False
    settings = ((model, side) if method == CYCLEGAN
                else (weights, steps, side, content_id(style_upload)))
    request = (content_id(upload), method, *settings)  # what a result shown must come from
    if st.session_state.get("request") != request:  # another upload or setting: not its result
        for key in RESULT_KEYS:
            st.session_state.pop(key, None)
    if st.button("Translate" if method == CYCLEGAN else "Stylize", type="primary",
                 disabled=not ready, key="run"):
        try:
            if method == CYCLEGAN:
                if not Path(model).exists():
                    raise InputError(f"model {model!r}: no such file or folder")
                result, how = run_cyclegan(photo, model, side)
            else:
                result, how = run_style_transfer(photo, style, weights, steps, side)
        except Exception as e:  # InputError, or the run's own failure (memory...): one message
            if not isinstance(e, InputError):
                logging.getLogger("ghibli_keras").exception("the %s run failed", method)
            st.error(str(e) if isinstance(e, InputError) else
                     f"The {method.lower()} failed: {type(e).__name__}: {e}")
            for key in RESULT_KEYS:  # not the last run's
                st.session_state.pop(key, None)
        else:
            name = Path(upload.name).stem  # beside it, the photo at the side the result has
            st.session_state.update(result=result, how=how, request=request,
                                    original=images.resize_longer_side(photo, side, enlarge=False),
                                    download_name=f"{name}_ghibli.jpg")

    if "result" in st.session_state and photo is not None:
        left, right = st.columns(2)
        left.image(st.session_state["original"], caption="original", width="stretch",
                   alt="original")
        right.image(st.session_state["result"], caption=st.session_state["how"], width="stretch",
                    alt="result")
        st.download_button("Download the result", images.encode_image(st.session_state["result"]),
                           file_name=st.session_state["download_name"], mime="image/jpeg",
                           key="download")


main()
