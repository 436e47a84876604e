"""Reading pictures of every format and mode into uint8 sRGB."""

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from conftest import smooth_image
from ghibli_keras import images
from ghibli_keras.images import ImageReadError, read_image


def _save(tmp_path, name, img, **kwargs):
    path = tmp_path / name
    img.save(path, **kwargs)
    return path


@pytest.mark.parametrize(
    "suffix, kwargs, tol",
    [
        (".png", {}, 0),
        (".bmp", {}, 0),
        (".tif", {}, 0),
        (".webp", {"lossless": True}, 0),
        (".jpg", {"quality": 95}, 4),
    ],
)
def test_formats_read_as_rgb(tmp_path, rng, suffix, kwargs, tol):
    pixels = smooth_image(rng, 24, 40)
    path = _save(tmp_path, "x" + suffix, Image.fromarray(pixels), **kwargs)
    out = read_image(path)
    assert out.dtype == np.uint8 and out.shape == (24, 40, 3)
    assert np.abs(out.astype(int) - pixels).mean() <= tol


def test_gif_first_frame(tmp_path):
    frames = [Image.new("RGB", (8, 8), c) for c in [(255, 0, 0), (0, 0, 255)]]
    path = tmp_path / "anim.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100)
    out = read_image(path)
    assert out.shape == (8, 8, 3)
    assert out[..., 0].mean() > 200 and out[..., 2].mean() < 50  # red, not blue


def test_grayscale_becomes_three_equal_channels(tmp_path):
    path = _save(tmp_path, "g.png", Image.fromarray(np.full((5, 6), 77, np.uint8), "L"))
    out = read_image(path)
    assert out.shape == (5, 6, 3) and (out == 77).all()


def test_alpha_is_composited_on_white(tmp_path):
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., 0] = 255  # red
    rgba[0, :, 3] = 0  # first row fully transparent
    rgba[1, :, 3] = 255  # second row opaque
    rgba[2:, :, 3] = 128  # half transparent
    out = read_image(_save(tmp_path, "a.png", Image.fromarray(rgba, "RGBA")))
    assert (out[0] == 255).all()  # white
    assert (out[1] == [255, 0, 0]).all()
    assert np.allclose(out[2], [255, 127, 127], atol=2)


def test_la_and_palette_with_transparency(tmp_path):
    la = Image.fromarray(np.stack([np.zeros((3, 3), np.uint8)] * 2, -1), "LA")  # black, alpha 0
    assert (read_image(_save(tmp_path, "la.png", la)) == 255).all()
    p = Image.new("P", (3, 3), 0)
    p.putpalette([0, 0, 0, 10, 20, 30] + [0] * 762)
    p.putpixel((1, 1), 1)
    out = read_image(_save(tmp_path, "p.png", p, transparency=0))
    assert (out[0, 0] == 255).all() and (out[1, 1] == [10, 20, 30]).all()


def test_cmyk_jpeg(tmp_path):
    img = Image.new("CMYK", (6, 6), (0, 255, 255, 0))  # pure red in CMYK
    out = read_image(_save(tmp_path, "c.jpg", img, quality=95))
    assert out.shape == (6, 6, 3)
    assert out[..., 0].mean() > 200 and out[..., 1].mean() < 60 and out[..., 2].mean() < 60


def test_16bit_png_scaled_to_8bit(tmp_path):
    sixteen = np.full((4, 4), 40000, np.uint16)
    path = _save(tmp_path, "d.png", Image.fromarray(sixteen))
    out = read_image(path)
    assert out.shape == (4, 4, 3)
    assert np.all(np.abs(out.astype(int) - round(40000 / 65535 * 255)) <= 1)


def test_exif_orientation_is_applied(tmp_path):
    pixels = np.zeros((10, 20, 3), np.uint8)
    pixels[:, :10] = [255, 0, 0]  # left half red, right half black
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    path = _save(tmp_path, "o.jpg", Image.fromarray(pixels), exif=exif.tobytes(), quality=95)
    out = read_image(path)
    assert out.shape == (20, 10, 3)  # portrait once rotated
    assert out[:10, :, 0].mean() > 200 and out[10:, :, 0].mean() < 50  # red now on top


def test_an_odd_exif_tag_does_not_stop_the_picture(tmp_path):
    """Orientation 6 beside an ASCII value under a numeric tag (0x0116): Pillow decodes the
    picture, but ImageOps.exif_transpose, writing the EXIF back, raised struct.error."""
    exif = Image.Exif()
    exif[0x0112], exif[0x010F], exif[0x8769] = 6, "Maker", {0x9003: "2020:01:01 00:00:00"}
    raw = exif.tobytes().replace(b"\x01\x0f\x00\x02", b"\x01\x16\x00\x02")  # 0x010F -> 0x0116
    path = _save(tmp_path, "odd.jpg", Image.new("RGB", (10, 12), (200, 30, 30)), exif=raw)
    out = read_image(path)
    assert out.shape == (10, 12, 3) and abs(int(out[..., 0].mean()) - 200) < 8  # turned upright


def test_a_plugin_s_own_error_names_the_file(tmp_path, monkeypatch):
    path = _save(tmp_path, "a.png", Image.new("RGB", (4, 4)))

    def failing(img):
        raise TypeError("unpack requires a buffer")

    monkeypatch.setattr("ghibli_keras.images._to_rgb", failing)
    with pytest.raises(ImageReadError, match=r"a.png.*cannot be decoded \(TypeError: unpack"):
        read_image(path)


def test_one_transparent_colour_is_white(tmp_path):
    """A PNG whose tRNS chunk makes one grey or one RGB colour transparent (as the SavedModel
    reads it), also at 16 bits, where the grey is compared before it is rounded to 8."""
    grey = np.array([[7, 8], [9, 7]], np.uint8)
    out = read_image(_save(tmp_path, "l.png", Image.fromarray(grey, "L"), transparency=7))
    assert (out[0, 0] == 255).all() and (out[1, 1] == 255).all() and (out[0, 1] == 8).all()
    rgb = np.zeros((2, 2, 3), np.uint8)
    rgb[0, 0] = [1, 2, 3]
    out = read_image(_save(tmp_path, "rgb.png", Image.fromarray(rgb, "RGB"), transparency=(1, 2, 3)))
    assert (out[0, 0] == 255).all() and (out[1, 1] == 0).all()
    sixteen = np.array([[40000, 40001], [0, 65535]], np.uint16)
    out = read_image(_save(tmp_path, "l16.png", Image.fromarray(sixteen), transparency=40000))
    assert (out[0, 0] == 255).all() and (out[0, 1] == round(40001 / 65535 * 255)).all()
    assert (out[1, 0] == 0).all()


def _linear_rgb_icc() -> bytes:
    """A minimal ICC v2 RGB profile: sRGB primaries with a linear (gamma 1.0) tone curve."""

    def s15(v):
        return struct.pack(">i", round(v * 65536))

    def xyz(x, y, z):
        return b"XYZ " + b"\0" * 4 + s15(x) + s15(y) + s15(z)

    curve = b"curv" + b"\0" * 4 + struct.pack(">IH", 1, 256) + b"\0\0"  # gamma 1.0 (u8.8)
    tags = [
        (b"wtpt", xyz(0.9642, 1.0, 0.8249)),
        (b"rXYZ", xyz(0.4361, 0.2225, 0.0139)),
        (b"gXYZ", xyz(0.3851, 0.7169, 0.0971)),
        (b"bXYZ", xyz(0.1431, 0.0606, 0.7141)),
        (b"rTRC", curve),
        (b"gTRC", curve),
        (b"bTRC", curve),
    ]
    offset = 128 + 4 + 12 * len(tags)
    table, body = struct.pack(">I", len(tags)), b""
    for sig, data in tags:
        table += sig + struct.pack(">II", offset + len(body), len(data))
        body += data
    size = offset + len(body)
    header = (
        struct.pack(">I", size) + b"lcms" + struct.pack(">I", 0x02100000) + b"mntrRGB XYZ "
        + b"\0" * 12 + b"acsp" + b"\0" * 24 + struct.pack(">I", 0) + s15(0.9642) + s15(1.0)
        + s15(0.8249)
    )
    header += b"\0" * (128 - len(header))
    return header + table + body


def test_icc_profile_converted_to_srgb(tmp_path):
    grey = Image.fromarray(np.full((4, 4, 3), 128, np.uint8))
    path = _save(tmp_path, "lin.png", grey, icc_profile=_linear_rgb_icc())
    out = read_image(path)
    # Linear 128/255 is sRGB-encoded 0.735 -> 188: the profile was honoured.
    assert np.all(np.abs(out.astype(int) - 188) <= 3)
    plain = read_image(_save(tmp_path, "plain.png", grey))
    assert (plain == 128).all()


@pytest.mark.parametrize(
    "content, reason",
    [
        (b"", "empty"),
        (b"this is not a picture at all", "not a picture"),
    ],
)
def test_unreadable_bytes(tmp_path, content, reason):
    path = tmp_path / "bad.jpg"
    path.write_bytes(content)
    with pytest.raises(ImageReadError, match=reason) as info:
        read_image(path)
    assert str(path) in str(info.value)


def test_truncated_jpeg(tmp_path, rng):
    buf = io.BytesIO()
    Image.fromarray(smooth_image(rng, 64, 64)).save(buf, "JPEG")
    path = tmp_path / "cut.jpg"
    path.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    with pytest.raises(ImageReadError, match="truncated or corrupt"):
        read_image(path)


def test_check_headers_names_the_first_unusable_file_without_decoding(tmp_path, rng):
    good = [_save(tmp_path, f"{i}.png", Image.fromarray(smooth_image(rng, 30, 40))) for i in range(2)]
    images.check_headers(good)
    cut = tmp_path / "cut.jpg"  # a header and half its pixels: only reading finds it
    buf = io.BytesIO()
    Image.fromarray(smooth_image(rng, 256, 256)).save(buf, "JPEG")
    cut.write_bytes(buf.getvalue()[: len(buf.getvalue()) * 4 // 5])
    images.check_headers([*good, cut])
    with pytest.raises(ImageReadError, match="truncated"):
        read_image(cut)
    for name, content, reason in [("empty.png", b"", "empty file"),
                                  ("text.jpg", b"not a picture", "not a picture Pillow can read")]:
        bad = tmp_path / name
        bad.write_bytes(content)
        with pytest.raises(ImageReadError, match=reason) as info:
            images.check_headers([*good, bad, cut])
        assert info.value.source == str(bad)
    with pytest.raises(ImageReadError, match="more than the limit") as info:
        images.check_headers(good, max_pixels=1_000)
    assert info.value.source == str(good[0])


def test_pixel_limit(tmp_path, rng):
    path = _save(tmp_path, "big.png", Image.fromarray(smooth_image(rng, 100, 100)))
    with pytest.raises(ImageReadError, match="more than the limit"):
        read_image(path, max_pixels=9_999)
    assert read_image(path, max_pixels=10_000).shape == (100, 100, 3)


def test_decompression_bomb_refused_from_header(tmp_path):
    """A PNG announcing 60000×60000 (3.6 gigapixels) with almost no data: refused before any
    pixel is decoded, so memory stays untouched."""

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", 60000, 60000, 8, 2, 0, 0, 0)
    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
    path = tmp_path / "bomb.png"
    path.write_bytes(png + chunk(b"IEND", b""))
    with pytest.raises(ImageReadError, match="pixels"):
        read_image(path)


def test_list_images_recursive_and_sorted(tmp_path):
    for rel in ["b.png", "a/c.JPG", "a/.hidden.png", ".git/x.png", "notes.txt"]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"x")
    found = [p.relative_to(tmp_path).as_posix() for p in images.list_images(tmp_path)]
    assert found == ["a/c.JPG", "b.png"]


def test_list_images_follows_linked_folders_once(tmp_path):
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "a.png").write_bytes(b"x")
    (tmp_path / "root" / "sub").mkdir(parents=True)
    (tmp_path / "root" / "sub" / "b.png").write_bytes(b"x")
    (tmp_path / "root" / "linked").symlink_to(tmp_path / "elsewhere")
    (tmp_path / "root" / "sub" / "up").symlink_to(tmp_path / "root")  # a loop
    found = [p.relative_to(tmp_path / "root").as_posix()
             for p in images.list_images(tmp_path / "root")]
    assert found == ["linked/a.png", "sub/b.png"]


def test_pixel_limit_above_pillow_s_own(tmp_path, rng, monkeypatch):
    """Pillow refuses twice its MAX_IMAGE_PIXELS in Image.open; a higher max_pixels wins."""
    path = _save(tmp_path, "big.png", Image.fromarray(smooth_image(rng, 100, 100)))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1_000)
    assert read_image(path, max_pixels=20_000).shape == (100, 100, 3)
    with pytest.raises(ImageReadError, match="more than the limit"):
        read_image(path, max_pixels=9_999)


def test_a_long_thin_picture_is_cropped_before_it_is_resized():
    """2×20000 to 256: the centred 2×2 square is enlarged, not the whole 256×2,560,000."""
    image = np.zeros((2, 20_000, 3), np.uint8)
    image[:, 9_999:10_001] = (0, 255, 0)  # the centred square is green
    out = images.resize_and_center_crop(image, 256)
    assert out.shape == (256, 256, 3)
    assert (out == (0, 255, 0)).all()


def test_resize_and_center_crop(rng):
    out = images.resize_and_center_crop(smooth_image(rng, 60, 90), 32)
    assert out.shape == (32, 32, 3) and out.dtype == np.uint8
    with pytest.raises(ValueError, match="positive"):
        images.resize_and_center_crop(out, 0)


def test_resize_longer_side(rng):
    image = smooth_image(rng, 60, 90)  # (H, W) = (60, 90)
    assert images.resize_longer_side(image, 30).shape == (20, 30, 3)
    assert images.resize_longer_side(image, 180).shape == (120, 180, 3)
    assert images.resize_longer_side(image, 180, enlarge=False) is image
    assert images.resize_longer_side(image, 90) is image
    assert images.resize_longer_side(np.zeros((1, 500, 3), np.uint8), 50).shape == (1, 50, 3)
    with pytest.raises(ValueError, match="positive, got 0"):
        images.resize_longer_side(image, 0)


@pytest.mark.parametrize("name,fmt", [("a.jpg", "JPEG"), ("b.JPEG", "JPEG"), ("c.png", "PNG")])
def test_write_image_by_suffix(tmp_path, rng, name, fmt):
    image = smooth_image(rng, 20, 30)
    images.write_image(image, tmp_path / "out" / name)
    with Image.open(tmp_path / "out" / name) as img:
        assert img.format == fmt and img.size == (30, 20)
    back = read_image(tmp_path / "out" / name)
    assert np.abs(back.astype(int) - image).mean() < (3 if fmt == "JPEG" else 1e-9)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [name]  # no temporary left


def test_write_image_refuses_unknown_suffix(tmp_path, rng):
    with pytest.raises(images.InputError, match=r"x\.gif: cannot write a \.gif picture"):
        images.write_image(smooth_image(rng, 4, 4), tmp_path / "x.gif")
    assert not list(tmp_path.iterdir())


def test_encode_image_quality():
    noisy = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    assert len(images.encode_image(noisy, quality=30)) < len(images.encode_image(noisy))
    assert images.encode_image(noisy, "PNG").startswith(b"\x89PNG")
    with pytest.raises(ValueError, match="'GIF'"):
        images.encode_image(noisy, "GIF")


def test_output_names_that_differ_only_in_case_are_one_file(tmp_path):
    """On a disk whose names ignore case (macOS, Windows) IMG.png and img.png are one file:
    two inputs that would write them are refused everywhere; an output that is an input
    (the same file, however spelt) too."""
    for name in ("IMG.jpg", "img.png"):
        Image.new("RGB", (4, 4)).save(tmp_path / name)
    with pytest.raises(images.InputError, match="would both be written to"):
        images.output_paths([tmp_path], tmp_path / "out", "png")
    (tmp_path / "img.png").unlink()
    (tmp_path / "link").symlink_to(tmp_path)
    with pytest.raises(images.InputError, match="is an input"):
        images.output_paths([tmp_path / "IMG.jpg"], tmp_path / "link", "jpg")
