"""Deterministic low-quality probes for the quality tiers (High-vs-High, Low-vs-High, Low-vs-Low).

:func:`degrade` shrinks the whole image so the face is ``face_width`` pixels wide
(32–48 px by default), blurs it, changes its brightness and re-encodes it as a
JPEG of quality 20–30. Each parameter is drawn from its range with a generator
seeded by the image key, so the same image always degrades the same way.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image, ImageEnhance, ImageFilter

from facesdk.errors import ConfigError

__all__ = ["Degradation", "degrade", "TIERS", "tier_sides"]

#: Quality tiers: which side of a pair (or gallery/probe) is degraded.
TIERS = {"high-high": (False, False), "low-high": (True, False), "low-low": (True, True)}


def tier_sides(tier: str) -> tuple[bool, bool]:
    """``(degrade_first, degrade_second)`` for a tier name."""
    if tier not in TIERS:
        raise ConfigError(f"unknown quality tier {tier!r} (known: {', '.join(TIERS)})")
    return TIERS[tier]


@dataclass(frozen=True)
class Degradation:
    """Ranges of the degradation parameters (inclusive)."""

    face_width: tuple[float, float] = (32.0, 48.0)
    jpeg_quality: tuple[int, int] = (20, 30)
    blur_sigma: tuple[float, float] = (0.5, 1.2)
    brightness: tuple[float, float] = (0.6, 1.4)
    seed: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> "Degradation":
        d = dict(d or {})
        kw: dict[str, Any] = {}
        for k in ("face_width", "jpeg_quality", "blur_sigma", "brightness"):
            if k in d:
                v = d.pop(k)
                kw[k] = tuple(v) if isinstance(v, (list, tuple)) else (v, v)
        if "seed" in d:
            kw["seed"] = int(d.pop("seed"))
        if d:
            raise ConfigError(f"unknown degradation settings: {', '.join(d)}")
        deg = cls(**kw)
        lo, hi = deg.jpeg_quality
        if not (1 <= lo <= hi <= 100) or deg.face_width[0] < 8:
            raise ConfigError("jpeg_quality must lie in 1..100 and face_width >= 8 px")
        return deg

    def tag(self) -> str:
        """A short, stable id of these settings (part of the cache namespace)."""
        s = f"{self.face_width}{self.jpeg_quality}{self.blur_sigma}{self.brightness}{self.seed}"
        return "low-" + hashlib.sha1(s.encode()).hexdigest()[:8]

    def params_for(self, key: str) -> dict[str, float]:
        """The parameters drawn for one image key."""
        h = int.from_bytes(hashlib.sha256(f"{self.seed}:{key}".encode()).digest()[:8], "little")
        rng = np.random.default_rng(h)
        return {
            "face_width": float(rng.uniform(*self.face_width)),
            "jpeg_quality": int(rng.integers(self.jpeg_quality[0], self.jpeg_quality[1] + 1)),
            "blur_sigma": float(rng.uniform(*self.blur_sigma)),
            "brightness": float(rng.uniform(*self.brightness)),
        }


def degrade(
    image: np.ndarray, face_box: np.ndarray | None, key: str, deg: Degradation | None = None
) -> np.ndarray:
    """Degrade an RGB uint8 image deterministically for ``key``.

    ``face_box`` (x1, y1, x2, y2) sets the downscale factor so the face becomes
    ``face_width`` pixels wide; without it the face is assumed to span 40 % of
    the image width. Images are only ever shrunk, never enlarged.
    """
    deg = deg or Degradation()
    p = deg.params_for(key)
    h, w = image.shape[:2]
    fw = float(face_box[2] - face_box[0]) if face_box is not None else 0.4 * w
    scale = min(1.0, p["face_width"] / max(fw, 1.0))
    im = Image.fromarray(image)
    if scale < 1.0:
        im = im.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.BILINEAR)
    if p["blur_sigma"] > 0:
        im = im.filter(ImageFilter.GaussianBlur(p["blur_sigma"]))
    im = ImageEnhance.Brightness(im).enhance(p["brightness"])
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=p["jpeg_quality"])
    buf.seek(0)
    return np.asarray(Image.open(buf).convert("RGB"))
