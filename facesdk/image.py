"""Image decoding and preprocessing.

Colour contract: every function in facesdk takes and returns **RGB** ``uint8``
arrays of shape ``(H, W, 3)`` unless it says otherwise. Arrays handed to
:func:`load_image` are taken as RGB; pass ``color="BGR"`` for OpenCV arrays.

Decoding handles EXIF orientation, grey, grey+alpha, RGBA, palette, 16-bit and
32-bit integer, float and CMYK images, and refuses images with more than
``max_pixels`` pixels *before* decoding the pixel data (decompression bombs).
"""

from __future__ import annotations

import io
import logging
import os
import warnings
from pathlib import Path
from typing import Any, Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import ConfigError, ImageDecodeError, ImageError, ImageTooLargeError

__all__ = ["ImageInput", "load_image", "DEFAULT_MAX_PIXELS", "resize", "letterbox", "to_tensor"]

log = logging.getLogger(__name__)

#: Default pixel-count limit (about 89 MP, e.g. 10000×8900); override per call or with FACESDK_MAX_PIXELS.
DEFAULT_MAX_PIXELS = int(os.environ.get("FACESDK_MAX_PIXELS", 89_478_485))

ImageInput = Union[str, os.PathLike, bytes, bytearray, memoryview, np.ndarray, Image.Image]


def _check_pixels(w: int, h: int, max_pixels: int, what: str) -> None:
    if w <= 0 or h <= 0:
        raise ImageDecodeError(f"{what}: image has no pixels ({w}x{h})")
    if w * h > max_pixels:
        raise ImageTooLargeError(
            f"{what}: {w}x{h} = {w * h:,} pixels exceeds the limit of {max_pixels:,} "
            "(raise max_pixels if this image is trusted)"
        )


def _scale_to_uint8(a: np.ndarray) -> np.ndarray:
    if a.dtype == np.uint8:
        return a
    if a.dtype == np.bool_:
        return a.astype(np.uint8) * 255
    if a.dtype == np.uint16:
        return (a >> 8).astype(np.uint8)
    if np.issubdtype(a.dtype, np.floating):
        if not np.isfinite(a).all():
            raise ImageDecodeError("image array contains NaN or infinite values")
        hi = float(a.max()) if a.size else 0.0
        scale = 255.0 if hi <= 1.0 else 1.0
        return np.clip(np.rint(a * scale), 0, 255).astype(np.uint8)
    if np.issubdtype(a.dtype, np.integer):
        hi = int(a.max()) if a.size else 0
        if hi <= 255:
            return np.clip(a, 0, 255).astype(np.uint8)
        if hi <= 65535:
            return (np.clip(a, 0, 65535) >> 8).astype(np.uint8)
        return np.clip(a >> 24, 0, 255).astype(np.uint8)
    raise ImageDecodeError(f"unsupported image array dtype {a.dtype}")


def _from_array(a: np.ndarray, color: str, max_pixels: int) -> np.ndarray:
    if a.ndim == 2:
        _check_pixels(a.shape[1], a.shape[0], max_pixels, "array")
        g = _scale_to_uint8(a)
        return np.repeat(g[:, :, None], 3, axis=2)
    if a.ndim != 3 or a.shape[2] not in (1, 3, 4):
        raise ImageDecodeError(f"image array must be HxW, HxWx1, HxWx3 or HxWx4, got shape {a.shape}")
    _check_pixels(a.shape[1], a.shape[0], max_pixels, "array")
    a = _scale_to_uint8(a)
    if a.shape[2] == 1:
        return np.repeat(a, 3, axis=2)
    a = a[:, :, :3]
    if color == "BGR":
        a = a[:, :, ::-1]
    return np.ascontiguousarray(a)


def _pil_to_rgb(img: Image.Image) -> np.ndarray:
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        arr = np.asarray(img)
        arr = arr.astype(np.int64)
        hi = 65535 if mode.startswith("I;16") or arr.max(initial=0) <= 65535 else int(arr.max())
        g = (np.clip(arr, 0, hi) * 255 // max(hi, 1)).astype(np.uint8)
        return np.repeat(g[:, :, None], 3, axis=2)
    if mode == "F":
        return _from_array(np.asarray(img, dtype=np.float32), "RGB", 1 << 62)
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in img.info):
        # Composite onto white so transparent regions do not become black shapes.
        rgba = img.convert("RGBA")
        bg = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return np.asarray(Image.alpha_composite(bg, rgba).convert("RGB"))
    if mode != "RGB":
        img = img.convert("RGB")  # L, 1, P, CMYK, YCbCr, LAB, HSV
    return np.asarray(img)


def _decode_pil(fp: Any, what: str, max_pixels: int) -> np.ndarray:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(fp)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageTooLargeError(f"{what}: {exc}") from None
    except UnidentifiedImageError:
        raise ImageDecodeError(f"{what}: not a recognised image format") from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise ImageDecodeError(f"{what}: cannot open image: {exc}") from None
    with img:
        _check_pixels(img.width, img.height, max_pixels, what)
        try:
            img.load()
            img = ImageOps.exif_transpose(img) or img
            out = _pil_to_rgb(img)
        except Image.DecompressionBombError as exc:
            raise ImageTooLargeError(f"{what}: {exc}") from None
        except (OSError, ValueError, SyntaxError, EOFError) as exc:
            raise ImageDecodeError(f"{what}: corrupt or truncated image data: {exc}") from None
    return np.ascontiguousarray(out)


def load_image(
    src: ImageInput,
    *,
    color: str = "RGB",
    max_pixels: int | None = None,
) -> np.ndarray:
    """Decode ``src`` into an ``(H, W, 3)`` uint8 RGB array.

    Args:
        src: a file path, encoded bytes, a numpy array (RGB, or BGR with
            ``color="BGR"``; grey, 16-bit and float arrays are scaled) or a PIL image.
        color: channel order of an array ``src``: ``"RGB"`` (default) or ``"BGR"``.
        max_pixels: refuse images with more pixels than this (default
            :data:`DEFAULT_MAX_PIXELS`).

    Raises:
        ImageError: the file does not exist or cannot be read.
        ImageDecodeError: corrupt, truncated or unsupported data.
        ImageTooLargeError: more pixels than ``max_pixels``.
    """
    if color not in ("RGB", "BGR"):
        raise ConfigError(f"color must be 'RGB' or 'BGR', not {color!r}")
    limit = DEFAULT_MAX_PIXELS if max_pixels is None else int(max_pixels)
    old_limit = Image.MAX_IMAGE_PIXELS
    if isinstance(src, np.ndarray):
        return _from_array(src, color, limit)
    if isinstance(src, Image.Image):
        _check_pixels(src.width, src.height, limit, "PIL image")
        img = ImageOps.exif_transpose(src) or src
        return np.ascontiguousarray(_pil_to_rgb(img))
    try:
        Image.MAX_IMAGE_PIXELS = max(limit, 1)
        if isinstance(src, (bytes, bytearray, memoryview)):
            if len(src) == 0:
                raise ImageDecodeError("image bytes are empty")
            return _decode_pil(io.BytesIO(bytes(src)), "image bytes", limit)
        if isinstance(src, (str, os.PathLike)):
            p = Path(src)
            if not p.is_file():
                raise ImageError(f"image file not found: {p}")
            if p.stat().st_size == 0:
                raise ImageDecodeError(f"{p}: file is empty")
            return _decode_pil(p, str(p), limit)
    finally:
        Image.MAX_IMAGE_PIXELS = old_limit
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
