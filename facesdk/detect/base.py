"""Detector base class; families are found through the ``facesdk_detector_families`` hook.

A detector family turns an image into :class:`Detection` objects using one or
more backend sessions. Single-network families implement :meth:`preprocess`
and :meth:`decode`; multi-network families (cascades) override :meth:`detect`.
A family is a :class:`FaceDetector` subclass with a ``family`` class attribute,
returned by a plugin's ``facesdk_detector_families`` hook (the core's own families
come from :mod:`facesdk.builtin`), so a third party adds one without touching the core.
"""

from __future__ import annotations

import logging
from abc import ABC
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from ..backend import Artifact, Backend, Session
from ..errors import ConfigError
from ..zoo import ModelCard

__all__ = ["Detection", "FaceDetector", "detector_class", "families"]

log = logging.getLogger(__name__)


@dataclass
class Detection:
    """One detected face in image pixel coordinates.

    ``landmarks`` are five (x, y) points: the eye with the smaller x, the other
    eye, the nose tip, the mouth corner with the smaller x, the other corner.
    """

    box: np.ndarray
    score: float
    landmarks: np.ndarray | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def width(self) -> float:
        return float(self.box[2] - self.box[0])

    @property
    def height(self) -> float:
        return float(self.box[3] - self.box[1])

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "box": [round(float(v), 2) for v in self.box],
            "score": round(float(self.score), 4),
        }
        if self.landmarks is not None:
            d["landmarks"] = [[round(float(x), 2), round(float(y), 2)] for x, y in self.landmarks]
        return d


def families() -> list[str]:
    """Names of the registered detector families."""
    from ..plugins import detector_families

    return sorted(detector_families())


def detector_class(family: str) -> type["FaceDetector"]:
    """The detector class of a family (raises ConfigError if unknown)."""
    from ..plugins import detector_families

    known = detector_families()
    if family not in known:
        raise ConfigError(f"no detector decoder for family {family!r} (known: {', '.join(sorted(known))})")
    return known[family]


class FaceDetector(ABC):
    """Runs a detection model through a backend and decodes faces.

    Args:
        card: the detector's model card.
        backend: the Backend instance that runs it.
        artifacts: ``role -> Artifact`` (``"main"`` for single-network models).
        score_threshold, nms_threshold: override the card's defaults.
        load_options: passed to ``Backend.load`` (device, precision, strict, threads …).
    """

    #: The card ``family`` this class decodes (set by every subclass).
    family: ClassVar[str] = ""

    def __init__(
        self,
        card: ModelCard,
        backend: Backend,
        artifacts: dict[str, Artifact],
        *,
        score_threshold: float | None = None,
        nms_threshold: float | None = None,
        **load_options: Any,
    ) -> None:
        self.card = card
        self.backend = backend
        self.params = dict(card.params)
        self.score_threshold = float(
            score_threshold if score_threshold is not None else self.params.get("score_threshold", 0.6)
        )
        self.nms_threshold = float(
            nms_threshold if nms_threshold is not None else self.params.get("nms_threshold", 0.3)
        )
        main = artifacts.get("main") or next(iter(artifacts.values()))
        #: Input layout of the loaded artifact (it may differ from the card's, e.g. NHWC TFLite).
        self.layout = main.layout or card.input.layout
        self.sessions: dict[str, Session] = {
            role: backend.load(art, **load_options) for role, art in artifacts.items()
        }

    @property
    def session(self) -> Session:
        """The main session (first network)."""
        return self.sessions.get("main") or next(iter(self.sessions.values()))

    def preprocess(self, image: np.ndarray) -> tuple[np.ndarray, dict[str, Any]]:
        """Image → input tensor (batch of one) and what decode needs to map back."""
        raise NotImplementedError

    def decode(self, outputs: dict[str, np.ndarray], meta: dict[str, Any]) -> list[Detection]:
        """Model outputs → detections in image coordinates."""
        raise NotImplementedError

    def run_main(self, tensor: np.ndarray) -> dict[str, np.ndarray]:
        """Run the main session and name its outputs."""
        s = self.session
        outs = s.run(tensor)
        return {spec.name: o for spec, o in zip(s.outputs, outs)}

    def detect(self, image: np.ndarray) -> list[Detection]:
        """Detect faces in an RGB uint8 image; highest score first."""
        tensor, meta = self.preprocess(image)
        return self.finalize(image, self.decode(self.run_main(tensor), meta))

    def detect_many(self, images: Sequence[np.ndarray]) -> list[list[Detection]]:
        """:meth:`detect` for many RGB uint8 images (families that batch across images override it;
        the result must equal one :meth:`detect` per image)."""
        return [self.detect(im) for im in images]

    @staticmethod
    def finalize(image: np.ndarray, dets: list[Detection]) -> list[Detection]:
        """Clip boxes to the image, drop degenerate ones, sort by score (every family ends here)."""
        h, w = image.shape[:2]
        for d in dets:
            d.box = np.clip(np.asarray(d.box, np.float32), 0, [w, h, w, h]).astype(np.float32)
        dets = [d for d in dets if d.width > 1 and d.height > 1]
        dets.sort(key=lambda d: -d.score)
        return dets

    def resize_preprocess(self, image: np.ndarray) -> tuple[np.ndarray, dict[str, Any]]:
        """Plain resize to the card's input size (for models trained on stretched inputs)."""
        from ..image import resize, to_tensor

        spec = self.card.input
        x = resize(image, spec.size)
        t = to_tensor(x[None], layout=self.layout, color=spec.color, mean=spec.mean, std=spec.std)
        return t, {"w": image.shape[1], "h": image.shape[0]}

    def close(self) -> None:
        for s in self.sessions.values():
            s.close()
