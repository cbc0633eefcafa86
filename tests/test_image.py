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


# ----------------------------------------------------------------------------- hardening (issue 11)

def test_max_pixels_must_be_a_positive_integer() -> None:
    """Regression: non-integer max_pixels raised untyped errors (or was silently truncated)."""
    img = np.zeros((4, 4, 3), np.uint8)
    for bad in (1.5, "10", True, -1, 0, None.__class__, [5]):
        with pytest.raises(ConfigError):
            load_image(img, max_pixels=bad)  # type: ignore[arg-type]
    assert load_image(img, max_pixels=np.int64(16)).shape == (4, 4, 3)


def test_ambiguous_array_scaling_is_refused_or_explicit() -> None:
    """Regression: floats slightly above 1.0 and uint16 arrays holding 8-bit values turned black."""
    f = np.full((3, 3, 3), 1.02, np.float32)
    with pytest.raises(ImageDecodeError, match="value_range"):
        load_image(f)
    assert (load_image(f, value_range=(0, 1)) == 255).all()
    assert (load_image(np.full((3, 3), 200.0), value_range=(0, 255)) == 200).all()
    u = np.full((3, 3, 3), 200, np.uint16)
    with pytest.raises(ImageDecodeError, match="value_range"):
        load_image(u)
    assert (load_image(u, value_range=(0, 255)) == 200).all()
    assert load_image(np.full((2, 2), 65535, np.uint16))[0, 0, 0] == 255  # unambiguous 16-bit
    assert load_image(np.full((2, 2), 0.5))[0, 0, 0] == 128  # unambiguous [0, 1]
    with pytest.raises(ImageDecodeError):
        load_image(np.full((2, 2), -3, np.int32))
    with pytest.raises(ConfigError):
        load_image(u, value_range=(5, 5))


def test_pil_input_errors_are_typed(shared: Path) -> None:
    """Regression: a PIL image input raised untyped errors (truncated lazy image, odd modes)."""
    data = (shared / "data/photos/obama-240p.jpg").read_bytes()
    lazy = Image.open(io.BytesIO(data[: len(data) // 2]))  # not loaded yet: decoding happens in load_image
    with pytest.raises(ImageDecodeError):
        load_image(lazy)
    with pytest.raises(ImageTooLargeError):
        load_image(Image.new("RGB", (100, 100)), max_pixels=10)
    for mode in ("1", "L", "LA", "P", "RGBA", "CMYK", "YCbCr", "I", "I;16", "HSV"):
        out = load_image(Image.new(mode, (5, 4)))
        assert out.shape == (4, 5, 3) and out.dtype == np.uint8, mode
    with pytest.raises(ImageDecodeError):
        load_image(Image.new("F", (5, 4), 3.5))  # ambiguous float range
    assert (load_image(Image.new("F", (5, 4), 0.5)) == 128).all()


def test_pil_global_pixel_limit_is_never_touched_even_across_threads(shared: Path) -> None:
    """Regression: load_image set PIL.Image.MAX_IMAGE_PIXELS process-wide; a thread with a small limit
    made another thread's ordinary image fail as a decompression bomb."""
    import threading

    before = Image.MAX_IMAGE_PIXELS
    photo = (shared / "data/photos/obama-240p.jpg").read_bytes()
    small = _png(Image.new("L", (50, 50)))
    errors: list[BaseException] = []
    stop = threading.Event()

    def tiny_limits() -> None:
        while not stop.is_set():
            with pytest.raises(ImageTooLargeError):
                load_image(small, max_pixels=10)

    t = threading.Thread(target=tiny_limits)
    t.start()
    try:
        for _ in range(150):
            try:
                load_image(photo)
            except BaseException as exc:  # noqa: BLE001 - collected for the assertion
                errors.append(exc)
    finally:
        stop.set()
        t.join()
    assert not errors and Image.MAX_IMAGE_PIXELS == before


def test_path_errors_are_typed(tmp_path: Path) -> None:
    """Regression: OSError (name too long) escaped; a folder said "file not found"."""
    with pytest.raises(ImageError):
        load_image(tmp_path / ("x" * 300 + ".jpg"))
    with pytest.raises(ImageError, match="directory"):
        load_image(tmp_path)
    with pytest.raises(ImageError):
        load_image("bad\0name.jpg")


def test_decode_peak_memory_is_bounded(tmp_path: Path) -> None:
    """Regression: peak memory was 20-25 bytes per pixel near the limit (2.2 GB for a 344 KB PNG), then
    12.1 / 8.4 / 10.1 (Pillow's ``tobytes`` copies). RGBA, 16-bit and JPEG files of 16 MP must decode with
    under 8.5 bytes per pixel above a warm-up decode (Pillow's own 2-4 bytes + the 3-byte result + row
    blocks), measured as the child's own high-water mark (``VmHWM``; ``ru_maxrss`` would start at the
    pytest parent's size and read low)."""
    from facesdk_bench.decode_memory import CASES, measure, write_case

    for case in CASES:
        f = write_case(case, tmp_path / f"{case}.{'jpg' if case.endswith('jpeg') else 'png'}", 4000, 4000)
        per_px = measure(f)
        assert 0.5 < per_px < 8.5, (case, per_px)
        f.unlink()


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "LA", "L", "1", "I;16", "I", "CMYK", "P"])
def test_row_block_decode_equals_whole_image(mode: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Images above one block leave Pillow in cropped row blocks (peak memory); the pixels must equal
    the whole-image conversion, in every mode, including a last block shorter than the others."""
    import io as _io

    import facesdk.image as fi

    rng = np.random.default_rng(7)
    h, w = 1100, 1000  # 1.1 MP > _BLOCK: 5 blocks of 262 rows + one of 52
    rgb = rng.integers(0, 256, (h, w, 3), np.uint8)
    a = rng.integers(0, 256, (h, w), np.uint8)
    img = {
        "RGB": lambda: Image.fromarray(rgb),
        "RGBA": lambda: Image.fromarray(np.dstack([rgb, a])),
        "LA": lambda: Image.fromarray(np.dstack([a, a[::-1]]), "LA"),
        "L": lambda: Image.fromarray(a),
        "1": lambda: Image.fromarray(a > 128),
        "I;16": lambda: Image.fromarray(rng.integers(0, 65536, (h, w)).astype(np.uint16)),
        "I": lambda: Image.fromarray(rng.integers(0, 200_000, (h, w)).astype(np.int32)),
        "CMYK": lambda: Image.fromarray(rgb).convert("CMYK"),
        "P": lambda: Image.fromarray(rgb).quantize(64),
    }[mode]()
    buf = _io.BytesIO()
    img.save(buf, "TIFF" if mode in ("I", "CMYK") else "PNG")
    blocks = load_image(buf.getvalue())
    monkeypatch.setattr(fi, "_BLOCK", 1 << 30)  # everything in one piece
    whole = load_image(buf.getvalue())
    assert blocks.shape == whole.shape == (h, w, 3) and blocks.dtype == np.uint8
    np.testing.assert_array_equal(blocks, whole)
