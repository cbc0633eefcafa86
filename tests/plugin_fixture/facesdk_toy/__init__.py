"""A tiny third-party facesdk plugin used by the tests.

It adds, from outside the core, one of each extension point: a backend (linear models stored
as .npz), a detector family (``toy-centre``: YuNet's network, only the face nearest the image
centre), a landmarker family (``toy-identity5``: the detector's own 5 points, as point set
``toy5``) and an aligner for that point set (``arcface112:toy5``). ``CALLS`` counts what ran.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from facesdk.align import warp_face
from facesdk.backend import Artifact, Availability, Backend, Session, TensorSpec
from facesdk.detect import Detection
from facesdk.detect.yunet import YuNetDetector
from facesdk.errors import ConfigError, DeviceMismatchError, ModelFormatError
from facesdk.landmarks import Landmarker
from facesdk.plugins import hookimpl

CALLS = {"detector": 0, "landmarker": 0, "aligner": 0}


class ToySession(Session):
    backend = "toy"

    def __init__(self, w: np.ndarray) -> None:
        self.w = w
        self.device = "cpu"
        self.precision = "fp32"
        self.inputs = [TensorSpec("x", (None, w.shape[0]))]
        self.outputs = [TensorSpec("y", (None, w.shape[1]))]

    def run(self, batch: np.ndarray) -> list[np.ndarray]:
        self.check_open()
        return [batch.reshape(len(batch), -1).astype(np.float32) @ self.w]


class ToyBackend(Backend):
    name = "toy"
    formats = ("npz-linear",)
    aliases = ("toy-linear",)

    def available(self) -> Availability:
        return Availability(True, devices=("cpu",), version="0.1")

    def load(self, artifact: Artifact, *, device: str = "auto", precision: str = "fp32",
             strict: bool = True, **options: Any) -> Session:
        path = self.check_artifact(artifact)
        if device not in ("auto", "cpu"):
            raise DeviceMismatchError(f"toy runs on cpu only, not {device}")
        try:
            with np.load(path, allow_pickle=False) as z:
                return ToySession(np.asarray(z["w"], np.float32))
        except (OSError, KeyError, ValueError) as exc:
            raise ModelFormatError(f"not a toy model: {exc}") from None


class CentreFaceDetector(YuNetDetector):
    """Detector family ``toy-centre``: YuNet's decoder, then only the face nearest the centre."""

    family = "toy-centre"

    def detect(self, image: np.ndarray) -> list[Detection]:
        CALLS["detector"] += 1
        dets = super().detect(image)
        if not dets:
            return []
        cx, cy = image.shape[1] / 2, image.shape[0] / 2

        def dist(d: Detection) -> float:
            return float(((d.box[0] + d.box[2]) / 2 - cx) ** 2 + ((d.box[1] + d.box[3]) / 2 - cy) ** 2)

        return [min(dets, key=dist)]


class IdentityLandmarker(Landmarker):
    """Landmarker family ``toy-identity5``: the detector's 5 points, unchanged, as point set ``toy5``."""

    output = "toy5"

    def __init__(self, card: Any) -> None:
        self.card = card

    def __call__(self, image: np.ndarray, box: np.ndarray, landmarks: np.ndarray | None) -> np.ndarray:
        CALLS["landmarker"] += 1
        if landmarks is None:
            raise ConfigError("toy-identity5 needs a detector with landmarks")
        return np.asarray(landmarks, np.float32)


def toy5_aligner(image: np.ndarray, box: np.ndarray, landmarks: np.ndarray | None) -> np.ndarray:
    """Aligner ``arcface112:toy5``: the ArcFace 112 warp of the ``toy5`` points."""
    CALLS["aligner"] += 1
    if landmarks is None:
        raise ConfigError("arcface112:toy5 needs landmarks")
    return warp_face(image, landmarks, "arcface112")


@hookimpl
def facesdk_backends() -> list[type]:
    return [ToyBackend]


@hookimpl
def facesdk_detector_families() -> list[type]:
    return [CentreFaceDetector]


@hookimpl
def facesdk_landmarkers() -> dict[str, Any]:
    return {"toy-identity5": IdentityLandmarker}


@hookimpl
def facesdk_aligners() -> dict[str, Any]:
    return {"arcface112:toy5": toy5_aligner}
