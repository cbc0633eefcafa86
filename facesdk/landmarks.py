"""Landmark stage: turn a detection into the point set an embedder's alignment expects.

Some embedders need other landmarks than a detector gives: dlib's ResNet is fed
crops aligned on dlib's 5 points (eye corners and the base of the nose), while
detectors such as YuNet, MTCNN or BlazeFace give eye centres, nose tip and mouth
corners. A *landmarker* (model card task ``landmarks``) closes the gap:

* ``bridge``: a linear map, in a similarity-normalised frame, from the detector's
  5 points to the target points; its coefficients are data in the card
  (``params.weights`` [10 × 11]) fitted on LFW DevTrain identities only
  (``model_zoo/landmark_bridge.py``).
* ``dlib-sp5``: dlib's 5-point shape predictor (regression trees) in numpy,
  run in a box derived from the detection (:class:`ShapePredictorLandmarker`).

Landmarkers run on the host (they are tiny); they are not backend models. Families are
found through the ``facesdk_landmarkers`` hook (:func:`facesdk.plugins.landmarker_families`),
so a plugin adds one the way the core adds these two (:mod:`facesdk.builtin`).
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod

import numpy as np

from .align import ARCFACE_112, estimate_similarity
from .errors import ConfigError
from .zoo import ModelCard

__all__ = ["Landmarker", "BridgeLandmarker", "ShapePredictorLandmarker", "load_landmarker", "canonical_frame"]

log = logging.getLogger(__name__)

def load_landmarker(card: ModelCard) -> "Landmarker":
    """Instantiate the landmarker a card describes."""
    if card.task != "landmarks":
        raise ConfigError(f"{card.id!r} is a {card.task} model, not a landmark model")
    from .plugins import landmarker_families

    known = landmarker_families()
    if card.family not in known:
        raise ConfigError(f"no landmark model family {card.family!r} (known: {', '.join(sorted(known))})")
    return known[card.family](card)


class Landmarker(ABC):
    """Produces an embedder's landmark set from an image and one detection."""

    #: Name of the point set produced (e.g. "dlib5").
    output: str = ""

    @abstractmethod
    def __call__(self, image: np.ndarray, box: np.ndarray, landmarks: np.ndarray | None) -> np.ndarray:
        """Return the points ``(K, 2)`` in image pixels."""


def canonical_frame(points5: np.ndarray) -> np.ndarray:
    """2×3 similarity mapping a face's 5 points (core order) onto the ArcFace 112 template."""
    return estimate_similarity(points5, ARCFACE_112)


def _apply(m: np.ndarray, pts: np.ndarray) -> np.ndarray:
    return pts @ m[:, :2].T + m[:, 2]


def _invert(m: np.ndarray) -> np.ndarray:
    a = np.vstack([m, [0, 0, 1]])
    return np.linalg.inv(a)[:2]


def bridge_features(points5: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Normalised 5-point coordinates (+1 for the bias) and the frame that maps them back."""
    m = canonical_frame(points5)
    x = _apply(m, np.asarray(points5, np.float64)).reshape(-1)
    return np.append(x, 1.0), _invert(m)


class BridgeLandmarker(Landmarker):
    """Linear landmark bridge in the canonical frame (coefficients from the card)."""

    def __init__(self, card: ModelCard) -> None:
        try:
            self.weights = np.asarray(card.params["weights"], np.float64)
        except KeyError:
            raise ConfigError(f"bridge card {card.id!r} has no params.weights") from None
        if self.weights.ndim != 2 or self.weights.shape[1] != 11 or self.weights.shape[0] % 2:
            raise ConfigError(f"bridge card {card.id!r}: weights must be [2K, 11], got {self.weights.shape}")
        self.output = str(card.params.get("output", "dlib5"))

    def __call__(self, image: np.ndarray, box: np.ndarray, landmarks: np.ndarray | None) -> np.ndarray:
        if landmarks is None:
            raise ConfigError("the landmark bridge needs a detector that gives 5 landmarks")
        feats, back = bridge_features(landmarks)
        pts = (self.weights @ feats).reshape(-1, 2)
        return _apply(back, pts).astype(np.float32)


class ShapePredictorLandmarker(Landmarker):
    """dlib's 5-point shape predictor (``dlib-sp5`` cards) in a dlib-style box placed from the
    detector's eye centres (:func:`facesdk.dlib.crop.dlib_box_from_core5`), or in the detector's
    box when it gives no landmarks: dlib's part order (``"dlib5"``)."""

    output = "dlib5"

    def __init__(self, card: ModelCard) -> None:
        from . import zoo
        from .dlib.shape_predictor import ShapePredictor, load_default

        if card.id == "dlib-shape-predictor-5":
            self.predictor = load_default()  # shared, loaded once
        else:
            self.predictor = ShapePredictor.load(zoo.fetch(card, card.formats[0]))

    def __call__(self, image: np.ndarray, box: np.ndarray, landmarks: np.ndarray | None) -> np.ndarray:
        from .dlib.crop import dlib_predictor_rect

        return self.predictor.predict(image, dlib_predictor_rect(self.predictor, box, landmarks))
