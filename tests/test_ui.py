"""The web UI: the Streamlit page under AppTest, and the `ui` command's launcher."""

import io

import numpy as np
import pytest
from PIL import Image

from conftest import smooth_image
from ghibli_keras import cli, inference

pytest.importorskip("streamlit", reason="the UI extra (streamlit) is not installed")
from streamlit.testing.v1 import AppTest  # noqa: E402

from ghibli_keras import ui as env  # noqa: E402

APP = str(env.APP)
TIMEOUT = 300  # seconds for one run of the page (model loading and translating included)


def jpeg(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=95)
    return buffer.getvalue()


def start(monkeypatch, **variables) -> AppTest:
    for name in (env.MODEL, env.VGG_WEIGHTS, env.MAX_PIXELS):
        monkeypatch.delenv(name, raising=False)
    for name, value in variables.items():
        monkeypatch.setenv(name, str(value))
    app = AppTest.from_file(APP, default_timeout=TIMEOUT)
    app.run()
    assert not app.exception, app.exception
    return app


@pytest.mark.slow
def test_cyclegan_upload_translate_and_download(monkeypatch, trained_workdir, rng):
    photo = smooth_image(rng, 70, 90)  # run at 72×96, the sizes' buckets
    app = start(monkeypatch, **{env.MODEL: trained_workdir})
    assert app.text_input(key="model").value == str(trained_workdir)
    assert app.button(key="run").disabled  # nothing uploaded yet
    app.file_uploader(key="photo").upload("meadow.jpg", jpeg(photo), "image/jpeg").run()
    assert not app.error and not app.button(key="run").disabled
    app.button(key="run").click().run()
    assert not app.exception and not app.error, (app.exception, app.error)

    shown = app.get("image")
    captions = [caption for element in shown for caption in element.captions]
    assert captions[0] == "original" and captions[1].startswith("CycleGAN (")
    # the result is the generator's translation of the decoded upload, nothing else
    decoded = np.asarray(Image.open(io.BytesIO(jpeg(photo))).convert("RGB"))
    expected = inference.translate_image(inference.Translator.load(trained_workdir, buckets=True), decoded)
    np.testing.assert_array_equal(app.session_state["result"], expected)
    download = app.get("download_button")[0]
    assert download.proto.label == "Download the result"
    assert app.session_state["download_name"] == "meadow_ghibli.jpg"


def test_files_that_are_not_pictures_get_a_clear_message(monkeypatch, tmp_path):
    app = start(monkeypatch, **{env.MODEL: tmp_path})
    app.file_uploader(key="photo").upload("notes.jpg", b"these are my notes", "image/jpeg").run()
    assert not app.exception
    messages = [e.value for e in app.error]
    assert len(messages) == 1 and "notes.jpg" in messages[0] and "not a picture" in messages[0]
    assert app.button(key="run").disabled


def test_pictures_over_the_pixel_limit_are_refused(monkeypatch, tmp_path, rng):
    app = start(monkeypatch, **{env.MODEL: tmp_path, env.MAX_PIXELS: 1000})
    app.file_uploader(key="photo").upload("big.jpg", jpeg(smooth_image(rng, 40, 40)),
                                          "image/jpeg").run()
    messages = [e.value for e in app.error]
    assert len(messages) == 1 and "1,600 pixels" in messages[0] and "1,000" in messages[0]


def test_a_missing_model_is_reported_not_raised(monkeypatch, tmp_path, rng):
    app = start(monkeypatch)
    assert app.button(key="run").disabled and "--model" in app.info[0].value
    app.text_input(key="model").input(str(tmp_path / "nowhere")).run()
    app.file_uploader(key="photo").upload("a.jpg", jpeg(smooth_image(rng, 40, 40)),
                                          "image/jpeg").run()
    app.button(key="run").click().run()
    assert not app.exception
    assert "nowhere" in app.error[0].value and "no such file" in app.error[0].value
    assert "result" not in app.session_state


@pytest.mark.slow
def test_style_transfer_in_the_page(monkeypatch, vgg_weights_file, rng):
    app = start(monkeypatch, **{env.VGG_WEIGHTS: vgg_weights_file})
    app.radio(key="method").set_value("Style transfer").run()
    app.slider(key="steps").set_value(10).run()
    app.select_slider(key="style_side").set_value(128).run()
    app.file_uploader(key="photo").upload("photo.png", jpeg(smooth_image(rng, 48, 72)),
                                          "image/png").run()
    assert app.button(key="run").disabled  # the style picture is still missing
    app.file_uploader(key="style").upload("still.jpg", jpeg(smooth_image(rng, 64, 64)),
                                          "image/jpeg").run()
    app.button(key="run").click().run()
    assert not app.exception and not app.error, (app.exception, app.error)
    result = app.session_state["result"]
    assert result.shape == (48, 72, 3) and result.dtype == np.uint8  # never upscaled
    assert "style transfer, 10 steps" in app.session_state["how"]


def test_ui_command_line(tmp_path, trained_workdir):
    args = cli.build_parser().parse_args(
        ["ui", "--model", str(trained_workdir), "--port", "8600", "--max-upload-mb", "5"])
    command, variables = cli.ui_command(args)
    assert command[1:4] == ["-m", "streamlit", "run"] and command[4] == APP
    assert command[command.index("--server.port") + 1] == "8600"
    assert command[command.index("--server.address") + 1] == "127.0.0.1"
    assert command[command.index("--server.maxUploadSize") + 1] == "5"
    assert variables[env.MODEL] == str(trained_workdir.resolve())
    assert variables[env.MAX_PIXELS] == str(env.DEFAULT_MAX_PIXELS)

    bad = cli.build_parser().parse_args(["ui", "--model", str(tmp_path / "none")])
    with pytest.raises(cli.InputError, match="--model .*no such file"):
        cli.ui_command(bad)


def test_the_page_keeps_one_model_in_memory(monkeypatch):
    """Each version of a model still training is loaded once; older ones are dropped (all of
    them stayed in memory for the life of the server: +19 MiB a version for the tiny model)."""
    from ghibli_keras import ui_app

    loaded = []
    monkeypatch.setattr(inference.Translator, "load",
                        classmethod(lambda cls, model, direction, **kw: loaded.append(model) or object()))
    ui_app.load_translator.clear()
    first = ui_app.load_translator("wd", (1, 10))
    assert ui_app.load_translator("wd", (1, 10)) is first and loaded == ["wd"]  # cached
    ui_app.load_translator("wd", (2, 10))  # a new epoch's model.keras
    ui_app.load_translator("wd", (1, 10))  # the first was dropped: loaded again
    assert len(loaded) == 3
    ui_app.load_translator.clear()


def test_a_model_saved_again_is_loaded_again(monkeypatch, tmp_path, rng):
    """A run still training writes model.keras every epoch: the page translates with the
    file as it is now, not as it was first loaded."""
    from ghibli_keras import models
    from ghibli_keras.config import ModelConfig

    config = ModelConfig(ngf=4, n_blocks=1, ndf=4, n_layers=1)
    path = tmp_path / "g.keras"
    photo = smooth_image(rng, 24, 32)
    app = start(monkeypatch, **{env.MODEL: path})
    results = []
    for seed in (0, 1):
        generator = models.build_networks(config, seed=seed)["generator_g"]
        generator.save(path)
        app.file_uploader(key="photo").upload("p.jpg", jpeg(photo), "image/jpeg").run()
        app.button(key="run").click().run()
        assert not app.exception and not app.error, (app.exception, app.error)
        decoded = np.asarray(Image.open(io.BytesIO(jpeg(photo))).convert("RGB"))
        expected = inference.translate_image(inference.Translator.load(path, buckets=True), decoded)
        np.testing.assert_array_equal(app.session_state["result"], expected)
        results.append(app.session_state["result"])
    assert not np.array_equal(*results)
    path.unlink()  # a run that fails shows its error, not the previous run's picture
    app.button(key="run").click().run()
    assert "no such file" in app.error[0].value and "result" not in app.session_state
    assert not app.get("image")


@pytest.mark.slow
def test_a_photo_too_small_for_style_transfer_is_one_message(monkeypatch, vgg_weights_file, rng):
    app = start(monkeypatch, **{env.VGG_WEIGHTS: vgg_weights_file})
    app.radio(key="method").set_value("Style transfer").run()
    app.slider(key="steps").set_value(10).run()
    app.file_uploader(key="photo").upload("tiny.png", jpeg(smooth_image(rng, 20, 24)),
                                          "image/png").run()
    app.file_uploader(key="style").upload("still.jpg", jpeg(smooth_image(rng, 64, 64)),
                                          "image/jpeg").run()
    app.button(key="run").click().run()
    assert not app.exception, app.exception
    assert len(app.error) == 1 and "too small for VGG19" in app.error[0].value


def test_ui_address_that_does_not_resolve(trained_workdir):
    args = cli.build_parser().parse_args(["ui", "--address", "999.1.1.1"])
    with pytest.raises(cli.InputError, match="--address '999.1.1.1': not an address"):
        cli.ui_command(args)


def test_ui_refuses_a_busy_port_and_an_address_of_another_machine():
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        args = cli.build_parser().parse_args(["ui", "--address", "127.0.0.1", "--port", str(port)])
        with pytest.raises(cli.InputError, match=f"--port {port}: cannot listen there"):
            cli.ui_command(args)
    args = cli.build_parser().parse_args(["ui", "--address", "192.0.2.1"])  # TEST-NET-1
    with pytest.raises(cli.InputError, match="--address 192.0.2.1 --port 8501: cannot listen"):
        cli.ui_command(args)


def png(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.mark.slow
def test_a_result_is_shown_only_beside_what_it_was_made_from(monkeypatch, trained_workdir, rng):
    """Another upload, or another method, hides the last result (the first photo's result and
    its download were shown under the second photo); a panorama wider than a PNG or JPEG can
    hold is shown at the side it was translated at (showing the upload raised); a run's own
    failure is one message, not a traceback."""
    app = start(monkeypatch, **{env.MODEL: trained_workdir})
    app.file_uploader(key="photo").upload("first.jpg", jpeg(smooth_image(rng, 40, 60)),
                                          "image/jpeg").run()
    app.button(key="run").click().run()
    assert app.session_state["download_name"] == "first_ghibli.jpg" and app.get("download_button")
    app.file_uploader(key="photo").upload("second.jpg", jpeg(smooth_image(rng, 48, 64)),
                                          "image/jpeg").run()
    assert not app.exception and not app.get("image") and not app.get("download_button")
    app.button(key="run").click().run()
    assert app.session_state["download_name"] == "second_ghibli.jpg"
    app.radio(key="method").set_value("Style transfer").run()
    assert not app.exception and not app.get("image") and not app.get("download_button")
    app.radio(key="method").set_value("CycleGAN").run()

    line = np.tile(smooth_image(rng, 1, 700), (1, 100, 1))  # 1 × 70,000 pixels
    app.file_uploader(key="photo").upload("line.png", png(line), "image/png").run()
    app.button(key="run").click().run()
    assert not app.exception and not app.error, (app.exception, app.error)
    assert app.session_state["original"].shape == (1, 1024, 3)
    assert app.session_state["result"].shape == (1, 1024, 3)

    def out_of_memory(*args, **kwargs):
        raise MemoryError("Unable to allocate 12.0 GiB")

    monkeypatch.setattr(inference, "translate_image", out_of_memory)
    app.button(key="run").click().run()
    assert not app.exception, app.exception
    assert [e.value for e in app.error] == [
        "The cyclegan failed: MemoryError: Unable to allocate 12.0 GiB"]
    assert "result" not in app.session_state
