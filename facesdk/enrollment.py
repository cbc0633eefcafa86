"""Enrollment results and photo quality checks.

:meth:`facesdk.FaceRecognizer.enroll` enrols every usable photo and reports, per
photo, what was used or skipped and why (:class:`EnrollmentResult`). A photo is
skipped when no face is found, it cannot be decoded, or the face fails a quality
check (:class:`QualityPolicy`):

* too small: the detected box's shorter side below ``min_face_px`` pixels;
* blurred: the variance of the Laplacian of the aligned grey-level face crop (resized to
  112×112) below ``min_sharpness`` — the "variance of Laplacian" focus measure
  (Pech-Pacheco et al., "Diatom autofocusing in brightfield microscopy: a comparative
  study", ICPR 2000);
* strongly turned: a yaw proxy from the five landmarks, the horizontal offset of the
  nose tip from the eyes' mid-point divided by the inter-ocular distance, above
  ``max_yaw_ratio`` (about 0 for a frontal face; it grows towards profile).

Defaults were set from the default detector on LFW images (deep-funneled, 250×250,
mostly news photos): on 150 LFW faces the sharpness' 1st percentile was 21 (minimum
12) and the yaw ratio's 99th percentile 0.52, so the defaults (15 and 0.6) refuse only
clearly bad photos; a face blurred with a Gaussian of sigma ≈ 4 % of its width scores
about 6.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image

from .errors import ConfigError

__all__ = ["QualityPolicy", "PhotoReport", "EnrollmentResult", "assess_face", "laplacian_variance",
           "yaw_ratio"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class QualityPolicy:
    """Thresholds of the enrollment quality checks (``None`` disables a check)."""

    min_face_px: float | None = 40.0
    min_sharpness: float | None = 15.0
    max_yaw_ratio: float | None = 0.6

    @classmethod
    def off(cls) -> "QualityPolicy":
        """No quality checks (only 'no face' skips a photo)."""
        return cls(None, None, None)


def laplacian_variance(crop: np.ndarray) -> float:
    """Variance of the 4-neighbour Laplacian of a grey 112×112 version of an RGB face crop."""
    a = np.asarray(crop)
    if a.ndim != 3 or a.shape[2] != 3:
        raise ConfigError(f"crop must be [h, w, 3], got {a.shape}")
    g = np.asarray(Image.fromarray(a.astype(np.uint8)).convert("L").resize((112, 112), Image.BILINEAR),
                   np.float64)
    lap = g[1:-1, :-2] + g[1:-1, 2:] + g[:-2, 1:-1] + g[2:, 1:-1] - 4 * g[1:-1, 1:-1]
    return float(lap.var())


def yaw_ratio(landmarks: np.ndarray) -> float | None:
    """Nose-tip offset from the eyes' mid-point over the eye distance (5 core landmarks), or None."""
    if landmarks is None:
        return None
    p = np.asarray(landmarks, np.float64)
    if p.shape != (5, 2):
        return None
    eyes = p[1] - p[0]
    iod = float(np.hypot(*eyes))
    if iod <= 1e-6:
        return None
    # offset of the nose along the eye axis, from the eyes' mid-point
    u = eyes / iod
    return float(abs(np.dot(p[2] - (p[0] + p[1]) / 2, u)) / iod)


def assess_face(box: np.ndarray, landmarks: np.ndarray | None, crop: np.ndarray,
                policy: QualityPolicy) -> tuple[str | None, dict[str, float]]:
    """Check one face: ``(reason it fails or None, measured values)``."""
    b = np.asarray(box, np.float64).reshape(4)
    side = float(min(b[2] - b[0], b[3] - b[1]))
    sharp = laplacian_variance(crop)
    yaw = yaw_ratio(landmarks) if landmarks is not None else None
    q: dict[str, float] = {"face_px": round(side, 1), "sharpness": round(sharp, 1)}
    if yaw is not None:
        q["yaw_ratio"] = round(yaw, 3)
    if policy.min_face_px is not None and side < policy.min_face_px:
        return f"face too small ({side:.0f} px < {policy.min_face_px:g} px)", q
    if policy.min_sharpness is not None and sharp < policy.min_sharpness:
        return f"face blurred (sharpness {sharp:.1f} < {policy.min_sharpness:g})", q
    if policy.max_yaw_ratio is not None and yaw is not None and yaw > policy.max_yaw_ratio:
        return f"face strongly turned (yaw ratio {yaw:.2f} > {policy.max_yaw_ratio:g})", q
    return None, q


@dataclass
class PhotoReport:
    """What happened to one enrollment photo."""

    index: int
    source: str
    enrolled: bool
    reason: str | None = None
    quality: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"index": self.index, "source": self.source, "enrolled": self.enrolled,
                "reason": self.reason, "quality": dict(self.quality)}


@dataclass
class EnrollmentResult:
    """Per-photo report of one :meth:`~facesdk.FaceRecognizer.enroll` call."""

    name: str
    photos: list[PhotoReport]

    @property
    def added(self) -> int:
        """Number of photos enrolled."""
        return sum(p.enrolled for p in self.photos)

    @property
    def skipped(self) -> list[PhotoReport]:
        """Photos not enrolled, with the reason."""
        return [p for p in self.photos if not p.enrolled]

    def __int__(self) -> int:
        return self.added

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "added": self.added, "skipped": len(self.skipped),
                "photos": [p.to_dict() for p in self.photos]}
