"""Drawing helpers: boxes, landmarks and names on RGB images (Pillow only).

Used by ``facesdk detect/identify --annotate DIR`` for still images and video frames.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image, ImageDraw

from .fileio import atomic_writer

if TYPE_CHECKING:  # pragma: no cover
    from .detect import Detection
    from .pipeline import Face

__all__ = ["draw_faces", "save_image"]

KNOWN = (40, 200, 80)
UNKNOWN = (230, 60, 40)
PLAIN = (40, 140, 255)


def _label(f: Any) -> tuple[str, tuple[int, int, int]]:
    m = getattr(f, "match", None)
    if m is None:
        return f"{float(f.score):.2f}", PLAIN
    return f"{m.name} {m.similarity:.2f}", (KNOWN if m.known else UNKNOWN)


def draw_faces(
    image: np.ndarray, faces: Sequence[Face | Detection], *, landmarks: bool = True, labels: bool = True
) -> np.ndarray:
    """A copy of an RGB uint8 image with each face's box, landmarks and name (or score) drawn."""
    im = Image.fromarray(np.asarray(image, np.uint8))
    d = ImageDraw.Draw(im)
    lw = max(1, round(min(im.size) / 200))
    for f in faces:
        x1, y1, x2, y2 = (float(v) for v in f.box)
        text, colour = _label(f)
        d.rectangle([x1, y1, x2, y2], outline=colour, width=lw)
        lm = getattr(f, "landmarks", None)
        if landmarks and lm is not None:
            r = lw + 1
            for x, y in np.asarray(lm, np.float32).reshape(-1, 2):
                d.ellipse([x - r, y - r, x + r, y + r], fill=colour)
        if labels:
            tb = d.textbbox((x1, y1), text)
            ty = y1 - (tb[3] - tb[1]) - 4 if y1 - (tb[3] - tb[1]) - 4 >= 0 else y2 + 2
            d.rectangle([x1, ty, x1 + (tb[2] - tb[0]) + 4, ty + (tb[3] - tb[1]) + 4], fill=colour)
            d.text((x1 + 2, ty + 1), text, fill=(255, 255, 255))
    return np.asarray(im)


def save_image(image: np.ndarray, path: str | os.PathLike) -> Path:
    """Write an RGB uint8 image atomically (format from the suffix; JPEG quality 92)."""
    p = Path(path)
    fmt = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".bmp": "BMP", ".webp": "WEBP"}.get(
        p.suffix.lower(), "PNG"
    )
    with atomic_writer(p) as f:
        Image.fromarray(np.asarray(image, np.uint8)).save(
            f, format=fmt, **({"quality": 92} if fmt == "JPEG" else {})
        )
    return p
