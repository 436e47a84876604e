"""The Kaggle submission: the zip validator and `ghibli-keras submission`."""

import io
import os
import subprocess
import sys
import zipfile

import numpy as np
import pytest
from PIL import Image

from conftest import SAMPLE
from ghibli_keras import cli, images, submission
from ghibli_keras.submission import SubmissionError


def _jpeg(size=16, mode="RGB", fmt="JPEG"):
    buffer = io.BytesIO()
    Image.new(mode, (size, size), 128).save(buffer, fmt)
    return buffer.getvalue()


def _noise_jpeg(size=16):
    buffer = io.BytesIO()
    pixels = np.random.default_rng(0).integers(0, 256, (size, size, 3), np.uint8)
    Image.fromarray(pixels).save(buffer, "JPEG", quality=95)
    return buffer.getvalue()


def _zip(path, entries):
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in entries:
            archive.writestr(name, data)
    return path


def _check(path, **kwargs):
    return submission.check_zip(path, min_images=3, max_images=5, size=16, **kwargs)


def test_valid_zip_passes(tmp_path):
    path = _zip(tmp_path / "images.zip", [(f"{i}.jpg", _jpeg()) for i in range(4)])
    assert _check(path) == 4


@pytest.mark.parametrize("entries, message", [
    ([(f"{i}.jpg", _jpeg()) for i in range(2)], "2 images; the competition needs 3 to 5"),
    ([(f"{i}.jpg", _jpeg()) for i in range(6)], "6 images; the competition needs 3 to 5"),
    ([(f"{i}.jpg", _jpeg(size=15 + (i == 0))) for i in range(4)], "3 entries are not 16x16: 1.jpg (15x15)"),
    ([("0.jpg", _jpeg(fmt="PNG"))] + [(f"{i}.jpg", _jpeg()) for i in range(1, 4)], "1 entry is not a JPEG: 0.jpg"),
    ([("a.jpg", _jpeg()), ("A.JPG", _jpeg()), ("b.jpg", _jpeg())], "1 entry is duplicate name: A.JPG"),
    ([("d/a.jpg", _jpeg())] + [(f"{i}.jpg", _jpeg()) for i in range(3)], "inside a folder"),
    ([("a.png", _jpeg())] + [(f"{i}.jpg", _jpeg()) for i in range(3)], "not named .jpg"),
    ([("g.jpg", _jpeg(mode="L"))] + [(f"{i}.jpg", _jpeg()) for i in range(3)], "not RGB (3 channels): g.jpg (L)"),
    ([("t.jpg", _noise_jpeg()[:-100])] + [(f"{i}.jpg", _jpeg()) for i in range(3)],
     "1 entry is not a readable picture: t.jpg"),  # a whole header, the pixels cut short
])
def test_validator_rejects(tmp_path, entries, message):
    path = _zip(tmp_path / "images.zip", entries)
    with pytest.raises(SubmissionError, match=message.replace("(", r"\(").replace(")", r"\)")):
        _check(path)


def test_damaged_and_huge_entries_are_named_not_raised(tmp_path):
    """A bad CRC (a flipped byte) raised zipfile's BadZipFile through `--check`; a picture far
    larger than the rules' size is reported from its header, never decoded."""
    noise = _noise_jpeg()
    path = tmp_path / "images.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr("bad.jpg", noise)
        archive.writestr("huge.jpg", _jpeg(size=6000))
        for i in range(2):
            archive.writestr(f"{i}.jpg", _jpeg())
    raw = bytearray(path.read_bytes())
    raw[raw.find(noise) + len(noise) // 2] ^= 0xFF
    path.write_bytes(bytes(raw))
    with pytest.raises(SubmissionError, match=r"1 entry is not readable from the zip .*: bad.jpg.*"
                                              r"1 entry is not 16x16: huge.jpg \(6000x6000\)"):
        _check(path)


def test_kaggle_bounds_are_the_defaults_and_junk_is_not_a_zip(tmp_path):
    path = _zip(tmp_path / "images.zip", [(f"{i}.jpg", _jpeg(256)) for i in range(4)])
    with pytest.raises(SubmissionError, match="4 images; the competition needs 7,000 to 10,000"):
        submission.check_zip(path)
    (tmp_path / "junk.zip").write_bytes(b"nope")
    with pytest.raises(SubmissionError, match="not a zip file"):
        submission.check_zip(tmp_path / "junk.zip")
    with pytest.raises(SubmissionError, match="missing.zip: no such file$"):
        submission.check_zip(tmp_path / "missing.zip")
    with pytest.raises(SubmissionError, match="a folder, not a zip file"):
        submission.check_zip(tmp_path)


def test_check_command_runs_without_tensorflow(tmp_path):
    good = _zip(tmp_path / "good.zip", [(f"{i}.jpg", _jpeg()) for i in range(4)])
    bad = _zip(tmp_path / "bad.zip", [(f"{i}.jpg", _jpeg()) for i in range(2)])
    code = ("import sys, ghibli_keras_cli; rc = ghibli_keras_cli.main(sys.argv[1:]); "
            "assert 'tensorflow' not in sys.modules; sys.exit(rc)")
    args = ["submission", "--size", "16", "--min-images", "3", "--max-images", "5", "--check"]
    result = subprocess.run([sys.executable, "-c", code, *args, str(good)], capture_output=True, text=True)
    assert result.returncode == 0 and "a valid submission of 4 16x16 JPEGs" in result.stdout, result.stderr
    result = subprocess.run([sys.executable, "-c", code, *args, str(bad)], capture_output=True, text=True)
    assert result.returncode == 2 and "2 images; the competition needs 3 to 5" in result.stderr


@pytest.mark.parametrize("limit", [None, 50])
def test_a_bad_picture_is_named_before_the_model_loads(tmp_path, limit):
    """An empty file, or (with --max-pixels 50) an 8x8 picture: named before anything loads."""
    model = tmp_path / "served"
    model.mkdir()
    (model / "saved_model.pb").write_bytes(b"")  # never read: the photos are refused first
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(3):
        Image.fromarray(np.full((8, 8, 3), 40 * i, np.uint8)).save(photos / f"{i}.png")
    if limit is None:
        (photos / "1.png").write_bytes(b"")
    code = ("import sys, ghibli_keras_cli; rc = ghibli_keras_cli.main(sys.argv[1:]); "
            "assert 'tensorflow' not in sys.modules; sys.exit(rc)")
    result = subprocess.run([sys.executable, "-c", code, "submission", str(model), "--photos",
                             str(photos), "--out", str(tmp_path / "images.zip"), "--min-images",
                             "2", "--max-images", "5",
                             *(["--max-pixels", str(limit)] if limit else [])],
                            capture_output=True, text=True)
    assert result.returncode == 2, result.stderr
    problem = ("empty file (0 bytes)" if limit is None else
               "8x8 = 64 pixels, more than the limit of 50 (raise it with --max-pixels if the "
               "picture is genuine)")
    assert result.stderr.strip().endswith(
        f"--photos: {photos / ('1.png' if limit is None else '0.png')}: {problem}; remove or "
        f"replace it"), result.stderr
    assert not (tmp_path / "images.zip").exists()


def test_submission_command_end_to_end(trained_workdir, tmp_path, capsys):
    """64 held-out sample photos (128 px) -> 64x64 JPEGs; the count bounds are lowered to
    suit this small set, explicitly."""
    out = tmp_path / "images.zip"
    photos = os.path.join(SAMPLE, "photo_test", "*.tfrec")
    rc = cli.main(["submission", str(trained_workdir), "--photos", photos, "--out", str(out),
                   "--size", "64", "--min-images", "60", "--max-images", "70", "--quiet"])
    assert rc == 0, capsys.readouterr().err
    with zipfile.ZipFile(out) as archive:
        names = archive.namelist()
        first = np.asarray(Image.open(io.BytesIO(archive.read(names[0]))))
    assert len(names) == len(set(names)) == 64 and first.shape == (64, 64, 3)
    assert submission.check_zip(out, min_images=60, max_images=70, size=64) == 64

    failed = tmp_path / "too_few.zip"
    rc = cli.main(["submission", str(trained_workdir), "--photos", photos, "--out", str(failed),
                   "--size", "64", "--quiet"])  # Kaggle's bounds: 64 photos are too few
    err = capsys.readouterr().err  # counted before anything is translated
    assert rc == 2 and "64 photos; the competition needs 7,000 to 10,000 images (nothing was" in err
    assert not failed.exists() and not list(tmp_path.glob(".tmp-*"))


def test_submission_from_picture_files(trained_workdir, tmp_path, rng):
    from conftest import smooth_image

    folder = tmp_path / "photos"
    folder.mkdir()
    for i, (h, w) in enumerate([(40, 40), (50, 70), (40, 40)]):
        Image.fromarray(smooth_image(rng, h, w)).save(folder / f"p{i}.png")
    out = tmp_path / "images.zip"
    rc = cli.main(["submission", str(trained_workdir), "--photos", str(folder), "--out", str(out),
                   "--size", "32", "--min-images", "3", "--max-images", "3", "--quiet"])
    assert rc == 0
    with zipfile.ZipFile(out) as archive:
        assert sorted(archive.namelist()) == ["p0.jpg", "p1.jpg", "p2.jpg"]


def test_the_pixel_limit_applies_to_photo_files(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    for i, (h, w) in enumerate([(40, 40), (50, 70)]):
        Image.fromarray(np.zeros((h, w, 3), np.uint8)).save(folder / f"p{i}.png")
    count, stream = submission._photos(str(folder), max_pixels=3000)
    assert count == 2 and next(stream)[0] == "p0"
    with pytest.raises(images.ImageReadError, match=r"p1.png: 70x50 = 3,500 pixels"):
        next(stream)


def test_a_shard_record_that_does_not_decode_stops_it_by_name(trained_workdir, tmp_path, capsys):
    from conftest import shard_with_a_bad_record

    bad = shard_with_a_bad_record(tmp_path / "photo00-6.tfrec")
    out = tmp_path / "images.zip"
    rc = cli.main(["submission", str(trained_workdir), "--photos", bad, "--out", str(out),
                   "--size", "32", "--min-images", "1", "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2 and "photo00-6.tfrec: record 3 (image_name 'p3'): the image is not a JPEG picture" in err
    assert err.rstrip().endswith("no zip was written") and "Traceback" not in err
    assert not out.exists() and not list(tmp_path.glob(".tmp-*"))


def test_wrong_counts_and_outputs_are_refused_before_translating(trained_workdir, tmp_path, rng,
                                                                 capsys):
    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(3):
        Image.fromarray(rng.integers(0, 256, (8, 8, 3), np.uint8)).save(folder / f"p{i}.png")
    rc = cli.main(["submission", str(trained_workdir), "--photos", str(folder),
                   "--out", str(tmp_path / "images.zip"), "--min-images", "5", "--quiet"])
    assert rc == 2
    assert f"--photos {str(folder)!r}: 3 pictures; the competition needs 5 to 10,000" in (
        capsys.readouterr().err)
    (tmp_path / "a_folder.zip").mkdir()
    (tmp_path / "file").write_text("in the way")
    for out, message in [(tmp_path / "a_folder.zip", "is a folder; name a file"),
                         (tmp_path / "file" / "images.zip", "file' exists and is not a folder")]:
        with pytest.raises(SystemExit):
            cli.main(["submission", str(trained_workdir), "--photos", str(folder),
                      "--out", str(out)])
        assert message in capsys.readouterr().err


def test_zip_names_are_unique_and_at_the_top():
    used = set()
    names = [submission._unique(n, used) for n in ("a.png", "A.jpg", "dir\\b.png", "x/c.webp", "")]
    assert names == ["a.jpg", "A_2.jpg", "dir_b.jpg", "c.jpg", "image.jpg"]
