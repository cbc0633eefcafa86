"""Image decoding and preprocessing.

Colour contract: every function in facesdk takes and returns **RGB** ``uint8``
arrays of shape ``(H, W, 3)`` unless it says otherwise. Arrays handed to
:func:`load_image` are taken as RGB; pass ``color="BGR"`` for OpenCV arrays.

Decoding handles EXIF orientation, grey, grey+alpha, RGBA, palette, 16-bit and
32-bit integer, float and CMYK images, and refuses images with more than
``max_pixels`` pixels *before* decoding the pixel data (decompression bombs).
Every input kind (path, bytes, array, PIL image) goes through the same checks.

Arrays other than ``uint8`` are scaled only when their value range is unambiguous: floats within
[0, 1] (× 255), integers above 255 and up to 65535 (16-bit: ``round(v × 255 / 65535)``). A float image
with values above 1 (an 8-bit range? a [0, 1] image that overshoots?) or a 16/32-bit integer array
holding only values up to 255 (8-bit data in a wide type, or a nearly black 16-bit image?) is refused
with :class:`~facesdk.errors.ImageDecodeError` unless ``value_range=(lo, hi)`` says which values map
to 0 and 255. Transparent pixels are composited onto white (Porter-Duff "over", alpha / 255).

Decoding keeps peak memory near 7 bytes per pixel (Pillow's 4-byte pixels + the 3-byte result):
large images leave Pillow in row blocks (no whole-image ``tobytes`` copies), conversions work on row
blocks instead of whole-image temporaries, EXIF rotation is done in place.
PIL's process-wide ``Image.MAX_IMAGE_PIXELS`` is never modified (it was not thread-safe): facesdk
checks ``max_pixels`` itself from the header; for limits above PIL's own, raise that setting.
"""

from __future__ import annotations

import io
import logging
import os
import struct
from pathlib import Path
from typing import Any, Callable, Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import ConfigError, ImageDecodeError, ImageError, ImageTooLargeError

__all__ = ["ImageInput", "load_image", "DEFAULT_MAX_PIXELS", "resize", "letterbox", "to_tensor",
           "check_max_pixels"]

log = logging.getLogger(__name__)


def _env_max_pixels() -> int:
    raw = os.environ.get("FACESDK_MAX_PIXELS")
    if raw is None:
        return 89_478_485
    try:
        v = int(raw)
        if v > 0:
            return v
    except ValueError:
        pass
    log.warning("ignoring FACESDK_MAX_PIXELS=%r (not a positive integer)", raw)
    return 89_478_485


#: Default pixel-count limit (about 89 MP, e.g. 10000×8900); override per call or with FACESDK_MAX_PIXELS.
DEFAULT_MAX_PIXELS = _env_max_pixels()

ImageInput = Union[str, os.PathLike, bytes, bytearray, memoryview, np.ndarray, Image.Image]

#: Pixels converted per block (bounds the temporaries of a conversion).
_BLOCK = 1 << 20
#: Pixels per row block cropped from a decoded Pillow image above ``_BLOCK`` pixels (each crop and its
#: ``tobytes`` copies are held at once; 256 K pixels measured 7.6 / 5.4 / 7.3 B/px peak for RGBA PNG /
#: 16-bit PNG / JPEG vs 8.9 / 6.5 / 8.0 with 1 M, decode-memory stage).
_PIL_BLOCK = 1 << 18
#: What Pillow's decoders raise on hostile data besides OSError (struct/IndexError from plugins …).
_PIL_ERRORS = (OSError, ValueError, SyntaxError, EOFError, TypeError, IndexError, KeyError,
               ZeroDivisionError, struct.error, AttributeError, RuntimeError, OverflowError, MemoryError)


def check_max_pixels(max_pixels: Any) -> int:
    """Validate a ``max_pixels`` argument (``None`` → :data:`DEFAULT_MAX_PIXELS`).

    Raises:
        ConfigError: not a positive integer (floats, strings and booleans are refused).
    """
    if max_pixels is None:
        return DEFAULT_MAX_PIXELS
    if isinstance(max_pixels, (bool, np.bool_)) or not isinstance(max_pixels, (int, np.integer)):
        raise ConfigError(f"max_pixels must be a positive integer, not {max_pixels!r}")
    if max_pixels <= 0:
        raise ConfigError(f"max_pixels must be a positive integer, not {max_pixels}")
    return int(max_pixels)


def _check_pixels(w: int, h: int, max_pixels: int, what: str) -> None:
    if w <= 0 or h <= 0:
        raise ImageDecodeError(f"{what}: image has no pixels ({w}x{h})")
    if w * h > max_pixels:
        raise ImageTooLargeError(
            f"{what}: {w}x{h} = {w * h:,} pixels exceeds the limit of {max_pixels:,} "
            "(raise max_pixels if this image is trusted)"
        )


def _map_rows(a: np.ndarray, fn: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """``fn`` applied to row blocks of ``a`` (H, W[, C]) into a new uint8 array of the same shape."""
    out = np.empty(a.shape, np.uint8)
    step = max(1, _BLOCK // max(a.shape[1], 1))
    for r in range(0, a.shape[0], step):
        out[r : r + step] = fn(a[r : r + step])
    return out


def _value_range(a: np.ndarray, value_range: Any) -> tuple[float, float] | None:
    """The (lo, hi) that map to 0 and 255, or None for uint8/bool data taken as it is."""
    if value_range is not None:
        try:
            lo, hi = (float(v) for v in value_range)
        except (TypeError, ValueError):
            raise ConfigError(f"value_range must be two numbers (lo, hi), not {value_range!r}") from None
        if not (np.isfinite(lo) and np.isfinite(hi) and hi > lo):
            raise ConfigError(f"value_range must be finite with hi > lo, not {value_range!r}")
        return lo, hi
    if a.dtype == np.uint8 or a.dtype == np.bool_:
        return None
    if a.size == 0:
        return 0.0, 255.0
    if np.issubdtype(a.dtype, np.floating):
        lo, hi = float(np.min(a)), float(np.max(a))
        if not (np.isfinite(lo) and np.isfinite(hi)):
            raise ImageDecodeError("image array contains NaN or infinite values")
        if lo >= 0.0 and hi <= 1.0:
            return 0.0, 1.0
        raise ImageDecodeError(
            f"ambiguous float image: values span [{lo:.4g}, {hi:.4g}], not [0, 1]; pass value_range=(0, 1) "
            "(values outside are clipped) or value_range=(0, 255), or convert it to uint8 yourself")
    if np.issubdtype(a.dtype, np.integer):
        lo_i, hi_i = int(np.min(a)), int(np.max(a))
        if lo_i >= 0 and 255 < hi_i <= 65535:
            return 0.0, 65535.0
        raise ImageDecodeError(
            f"ambiguous {a.dtype} image: values span [{lo_i}, {hi_i}] (8-bit data in a wider type, or a "
            "nearly black 16-bit image?); pass value_range=(0, 255) or (0, 65535), or convert it to uint8")
    raise ImageDecodeError(f"unsupported image array dtype {a.dtype}")


def _to_uint8(a: np.ndarray, value_range: Any = None) -> np.ndarray:
    if a.dtype == np.bool_ and value_range is None:
        return _map_rows(a, lambda b: b.astype(np.uint8) * 255)
    rng = _value_range(a, value_range)
    if rng is None:
        return a
    lo, hi = rng
    if (lo, hi) == (0.0, 65535.0) and np.issubdtype(a.dtype, np.integer):  # exact rounding, no float
        return _map_rows(a, lambda b: ((np.clip(b, 0, 65535).astype(np.uint32) * 255 + 32767) // 65535)
                         .astype(np.uint8))
    k = 255.0 / (hi - lo)
    return _map_rows(a, lambda b: np.clip(np.rint((b.astype(np.float64) - lo) * k), 0, 255).astype(np.uint8))


def _grey3(g: np.ndarray) -> np.ndarray:
    out = np.empty(g.shape[:2] + (3,), np.uint8)
    out[...] = g[:, :, None]
    return out


def _from_array(a: np.ndarray, color: str, max_pixels: int, value_range: Any = None) -> np.ndarray:
    if a.ndim == 2:
        _check_pixels(a.shape[1], a.shape[0], max_pixels, "array")
        return _grey3(_to_uint8(a, value_range))
    if a.ndim != 3 or a.shape[2] not in (1, 3, 4):
        raise ImageDecodeError(f"image array must be HxW, HxWx1, HxWx3 or HxWx4, got shape {a.shape}")
    _check_pixels(a.shape[1], a.shape[0], max_pixels, "array")
    if a.shape[2] == 1:
        return _grey3(_to_uint8(a[:, :, 0], value_range))
    a = _to_uint8(a[:, :, :3], value_range)
    if color == "BGR":
        a = a[:, :, ::-1]
    return np.ascontiguousarray(a)


def _pil_rows(img: Image.Image, fn: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """``fn`` of the pixels of ``img`` into an ``(H, W, 3)`` uint8 array, one row block at a time.

    ``np.asarray(img)`` goes through ``Image.tobytes``, whose encoder chunks and their join hold two more
    copies of the pixels; for images above one block the rows are cropped block by block instead, so the
    peak stays near Pillow's own pixels + the result. ``fn`` maps a block to ``(h, w, 3)`` or ``(h, w)``
    (grey, broadcast into the three channels).
    """
    w, h = img.size
    if w * h <= _BLOCK:
        b = fn(np.asarray(img))
        return _grey3(b) if b.ndim == 2 else b
    out = np.empty((h, w, 3), np.uint8)
    step = max(1, _PIL_BLOCK // max(w, 1))
    for r in range(0, h, step):
        with img.crop((0, r, w, min(h, r + step))) as blk:
            b = fn(np.asarray(blk))
        out[r : r + step] = b[:, :, None] if b.ndim == 2 else b
    return out


def _composite_block(b: np.ndarray) -> np.ndarray:
    """RGBA uint8 → RGB over opaque white: ``(c·α + 255·(255−α) + 127) // 255``."""
    al = b[:, :, 3:4].astype(np.uint16)
    return ((b[:, :, :3] * al + 255 * (255 - al) + 127) // 255).astype(np.uint8)


def _pil_to_rgb(img: Image.Image) -> np.ndarray:
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        hi = 65535 if mode.startswith("I;16") else max(int(img.getextrema()[1]), 65535)

        def scale(b: np.ndarray) -> np.ndarray:
            return ((np.clip(b, 0, hi).astype(np.uint64) * 255) // hi).astype(np.uint8)

        return _pil_rows(img, scale)
    if mode == "F":
        return _from_array(np.asarray(img, dtype=np.float32), "RGB", 1 << 62)
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in img.info):
        rgba = img if mode == "RGBA" else img.convert("RGBA")
        try:
            return _pil_rows(rgba, _composite_block)
        finally:
            if rgba is not img:
                rgba.close()
    if mode not in ("L", "1", "RGB"):
        img = img.convert("RGB")  # P, CMYK, YCbCr, LAB, HSV
    elif mode == "1":
        img = img.convert("L")
    return _pil_rows(img, lambda b: b)


def _decode_pil(fp: Any, what: str, max_pixels: int) -> np.ndarray:
    try:
        img = Image.open(fp)
    except Image.DecompressionBombError as exc:
        raise ImageTooLargeError(f"{what}: {exc} (Pillow's own Image.MAX_IMAGE_PIXELS)") from None
    except UnidentifiedImageError:
        raise ImageDecodeError(f"{what}: not a recognised image format") from None
    except _PIL_ERRORS as exc:
        raise ImageDecodeError(f"{what}: cannot open image: {exc}") from None
    with img:
        _check_pixels(img.width, img.height, max_pixels, what)
        try:
            img.load()
            ImageOps.exif_transpose(img, in_place=True)
            out = _pil_to_rgb(img)
        except Image.DecompressionBombError as exc:
            raise ImageTooLargeError(f"{what}: {exc}") from None
        except ImageDecodeError:
            raise
        except _PIL_ERRORS as exc:
            raise ImageDecodeError(
                f"{what}: corrupt or truncated image data: {type(exc).__name__}: {exc}") from None
    return np.ascontiguousarray(out)


def load_image(
    src: ImageInput,
    *,
    color: str = "RGB",
    max_pixels: int | None = None,
    value_range: tuple[float, float] | None = None,
) -> np.ndarray:
    """Decode ``src`` into an ``(H, W, 3)`` uint8 RGB array.

    Args:
        src: a file path, encoded bytes, a numpy array (RGB, or BGR with
            ``color="BGR"``; grey, 16-bit and float arrays are scaled, see the module notes) or a
            PIL image.
        color: channel order of an array ``src``: ``"RGB"`` (default) or ``"BGR"``.
        max_pixels: refuse images with more pixels than this (a positive integer; default
            :data:`DEFAULT_MAX_PIXELS`).
        value_range: for non-uint8 arrays, the values that map to 0 and 255 (e.g. ``(0, 1)`` or
            ``(0, 255)`` for floats); required when the range is ambiguous.

    Raises:
        ConfigError: bad ``color``, ``max_pixels``, ``value_range`` or input type.
        ImageError: the file does not exist or cannot be read (directory, permission, bad name).
        ImageDecodeError: corrupt, truncated or unsupported data; ambiguous value scaling.
        ImageTooLargeError: more pixels than ``max_pixels``.
    """
    if color not in ("RGB", "BGR"):
        raise ConfigError(f"color must be 'RGB' or 'BGR', not {color!r}")
    limit = check_max_pixels(max_pixels)
    if isinstance(src, np.ndarray):
        return _from_array(src, color, limit, value_range)
    if isinstance(src, Image.Image):
        try:
            _check_pixels(src.width, src.height, limit, "PIL image")
            img = ImageOps.exif_transpose(src) or src
            if img.mode == "F" or value_range is not None:
                return _from_array(np.asarray(img, dtype=np.float32) if img.mode == "F" else np.asarray(img),
                                   "RGB", limit, value_range)
            return np.ascontiguousarray(_pil_to_rgb(img))
        except (ImageError, ConfigError):
            raise
        except _PIL_ERRORS as exc:
            raise ImageDecodeError(f"PIL image cannot be converted: {type(exc).__name__}: {exc}") from None
    if isinstance(src, (bytes, bytearray, memoryview)):
        if len(src) == 0:
            raise ImageDecodeError("image bytes are empty")
        return _decode_pil(io.BytesIO(bytes(src)), "image bytes", limit)
    if isinstance(src, (str, os.PathLike)):
        try:
            p = Path(src)
            if p.is_dir():
                raise ImageError(f"{p} is a directory, not an image file")
            if not p.is_file():
                raise ImageError(f"image file not found: {p}")
            if p.stat().st_size == 0:
                raise ImageDecodeError(f"{p}: file is empty")
            fh = open(p, "rb")  # noqa: SIM115 - closed below
        except (OSError, ValueError, TypeError) as exc:  # name too long, permission, NUL in the name
            why = getattr(exc, "strerror", None) or exc
            raise ImageError(f"cannot read image file {str(src)[:200]}: {why}") from None
        with fh:
            return _decode_pil(fh, str(p), limit)
    raise ConfigError(f"cannot load an image from a {type(src).__name__}")


def resize(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize an RGB uint8 image to ``size`` = (width, height), bilinear."""
    w, h = size
    if image.shape[1] == w and image.shape[0] == h:
        return image
    return np.asarray(Image.fromarray(image).resize((w, h), Image.BILINEAR))


def letterbox(image: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, float]:
    """Scale to fit inside ``size`` (w, h) keeping aspect, pad bottom/right with zeros.

    Returns the padded image and the scale factor (model pixels per image pixel).
    """
    w, h = size
    ih, iw = image.shape[:2]
    scale = min(w / iw, h / ih)
    nw, nh = max(1, round(iw * scale)), max(1, round(ih * scale))
    out = np.zeros((h, w, 3), dtype=np.uint8)
    out[:nh, :nw] = resize(image, (nw, nh))
    return out, scale


def to_tensor(
    images: np.ndarray,
    *,
    layout: str = "NCHW",
    color: str = "RGB",
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0),
    std: tuple[float, float, float] = (1.0, 1.0, 1.0),
    dtype: str = "float32",
) -> np.ndarray:
    """Turn RGB uint8 images ``[N,H,W,3]`` into a model tensor: colour order, (x-mean)/std, layout."""
    x = images
    if color == "BGR":
        x = x[..., ::-1]
    elif color == "GRAY":
        x = (x.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32))[..., None]
    if dtype in ("uint8", "int8"):
        t = x.astype(np.int16) - (128 if dtype == "int8" else 0)
        t = t.astype(dtype)
    else:
        m = np.asarray(mean, np.float32)[: x.shape[-1]]
        s = np.asarray(std, np.float32)[: x.shape[-1]]
        t = (x.astype(np.float32) - m) / s
        t = t.astype(dtype, copy=False)
    if layout == "NCHW":
        t = t.transpose(0, 3, 1, 2)
    return np.ascontiguousarray(t)
