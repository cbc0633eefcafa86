"""Decoder for SSD models with an in-graph DetectionOutput layer (Intel OMZ face detectors).

Output ``[1, 1, N, 7]`` rows: image id, label, confidence, x_min, y_min, x_max,
y_max (normalised). The image is resized (not letterboxed) to the input size.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .base import Detection, FaceDetector
from .nms import nms

__all__ = ["SSDDetectionOutputDetector"]


class SSDDetectionOutputDetector(FaceDetector):
    """Boxes from a DetectionOutput layer; no landmarks."""

    family = "ssd-detection-output"

    def preprocess(self, image: np.ndarray) -> tuple[np.ndarray, dict[str, Any]]:
        return self.resize_preprocess(image)

    def decode(self, outputs: dict[str, np.ndarray], meta: dict[str, Any]) -> list[Detection]:
        rows = next(iter(outputs.values())).reshape(-1, 7)
        rows = rows[(rows[:, 0] >= 0) & (rows[:, 2] >= self.score_threshold)]
        if len(rows) == 0:
            return []
        scale = np.array([meta["w"], meta["h"], meta["w"], meta["h"]], np.float32)
        boxes = rows[:, 3:7].astype(np.float32) * scale
        scores = rows[:, 2].astype(np.float32)
        keep = nms(boxes, scores, self.nms_threshold)
        return [Detection(box=boxes[i], score=float(scores[i])) for i in keep]
