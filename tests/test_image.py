"""Image decoding: formats, EXIF, colour contract, limits and every bad-input path."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from facesdk.errors import ConfigError, ImageDecodeError, ImageError, ImageTooLargeError
from facesdk.image import letterbox, load_image, to_tensor


def _png(img: Image.Image) -> bytes:
    b = io.BytesIO()
    img.save(b, format="PNG")
    return b.getvalue()


def test_path_bytes_array_pil_agree(shared: Path) -> None:
    p = shared / "data/photos/obama-240p.jpg"
    a = load_image(p)
    assert a.dtype == np.uint8 and a.ndim == 3 and a.shape[2] == 3
    assert np.array_equal(load_image(str(p)), a)
    assert np.array_equal(load_image(p.read_bytes()), a)
    assert np.array_equal(load_image(Image.open(p)), a)
    assert np.array_equal(load_image(a), a)


def test_bgr_contract() -> None:
    rgb = np.zeros((4, 5, 3), np.uint8)
    rgb[..., 0] = 200  # red
    assert np.array_equal(load_image(rgb[..., ::-1], color="BGR"), rgb)
    assert load_image(rgb)[0, 0, 0] == 200
    with pytest.raises(ConfigError):
        load_image(rgb, color="HSV")


def test_rgba_png_is_composited(shared: Path) -> None:
    a = load_image(shared / "data/photos/32bit.png")
    assert a.shape[2] == 3 and a.dtype == np.uint8
    # Fully transparent pixels become white, not black.
    img = Image.new("RGBA", (4, 4), (10, 20, 30, 0))
    out = load_image(_png(img))
    assert (out == 255).all()


def test_grey_16bit_cmyk_palette_float() -> None:
    g = load_image(_png(Image.new("L", (6, 4), 77)))
    assert g.shape == (4, 6, 3) and (g == 77).all()
    arr16 = np.full((4, 6), 65535 // 2, np.uint16)
    img16 = Image.fromarray(arr16)
    assert img16.mode.startswith("I")
    out = load_image(_png(img16))
    assert out.shape == (4, 6, 3) and abs(int(out[0, 0, 0]) - 127) <= 1
    b = io.BytesIO()
    Image.new("CMYK", (5, 5), (0, 255, 255, 0)).save(b, format="JPEG")
    c = load_image(b.getvalue())
    assert c[2, 2, 0] > 200 and c[2, 2, 1] < 60  # red
    p = Image.new("P", (3, 3), 1)
    p.putpalette([0, 0, 0, 0, 255, 0] + [0] * 762)
    assert tuple(load_image(_png(p))[1, 1]) == (0, 255, 0)
    f = load_image(np.full((3, 3), 0.5, np.float32))
    assert f[0, 0, 0] == 128
    assert load_image(np.full((3, 3, 3), 40000, np.uint16))[0, 0, 0] == 40000 >> 8


def test_exif_orientation_applied() -> None:
    img = Image.new("RGB", (40, 20), (0, 0, 0))
    img.paste((255, 255, 255), (0, 0, 10, 20))  # white stripe on the left
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise on display
    b = io.BytesIO()
    img.save(b, format="JPEG", exif=exif.tobytes(), quality=95)
    out = load_image(b.getvalue())
    assert out.shape[:2] == (40, 20)  # portrait after rotation
    assert out[2, 10].mean() > 200 and out[-3, 10].mean() < 50  # stripe now on top


def test_pixel_limit_checked_before_decoding() -> None:
    big = _png(Image.new("L", (3000, 3000)))
    with pytest.raises(ImageTooLargeError, match="exceeds"):
        load_image(big, max_pixels=1_000_000)
    with pytest.raises(ImageTooLargeError):
        load_image(np.zeros((2000, 2000, 3), np.uint8), max_pixels=1000)
    assert load_image(big, max_pixels=10_000_000).shape == (3000, 3000, 3)


def test_corrupt_truncated_empty_missing(tmp_path: Path, shared: Path) -> None:
    data = (shared / "data/photos/obama-240p.jpg").read_bytes()
    with pytest.raises(ImageDecodeError):
        load_image(data[: len(data) // 3])
    with pytest.raises(ImageDecodeError):
        load_image(b"not an image at all")
    with pytest.raises(ImageDecodeError):
        load_image(b"")
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    with pytest.raises(ImageDecodeError):
        load_image(empty)
    with pytest.raises(ImageError, match="not found"):
        load_image(tmp_path / "missing.jpg")
    png = bytearray(_png(Image.new("RGB", (64, 64), (1, 2, 3))))
    png[60:80] = b"\xff" * 20  # break the IDAT chunk / CRC
    with pytest.raises(ImageDecodeError):
        load_image(bytes(png))
    with pytest.raises(ImageDecodeError):
        load_image(np.zeros((4, 4, 2), np.uint8))
    with pytest.raises(ImageDecodeError):
        load_image(np.full((3, 3), np.nan, np.float32))
    with pytest.raises(ConfigError):
        load_image(12345)  # type: ignore[arg-type]


def test_letterbox_and_tensor() -> None:
    img = np.full((100, 200, 3), 50, np.uint8)
    boxed, scale = letterbox(img, (64, 64))
    assert scale == pytest.approx(0.32) and boxed.shape == (64, 64, 3)
    assert boxed[:32].mean() == pytest.approx(50, abs=1) and boxed[40:].max() == 0
    t = to_tensor(img[None], layout="NCHW", color="BGR", mean=(50, 50, 50), std=(2, 2, 2))
    assert t.shape == (1, 3, 100, 200) and float(np.abs(t).max()) == 0.0
    q = to_tensor(img[None], layout="NHWC", dtype="int8")
    assert q.dtype == np.int8 and q[0, 0, 0, 0] == 50 - 128
