"""UltraFace (Ultra-Light-Fast-Generic-Face-Detector) decoder.

The ONNX release has the prior decoding inside the graph: ``scores`` [1,N,2]
(background, face) after softmax and ``boxes`` [1,N,4] as normalised x1,y1,x2,y2.
The raw-head TFLite variant needs the SSD priors; :func:`ultraface_priors` builds them.
The image is resized (not letterboxed) to the model input. No landmarks.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .base import Detection, FaceDetector
from .boxes import decode_ssd_boxes
from .nms import nms

__all__ = ["UltraFaceDetector", "ultraface_priors"]

_MIN_BOXES = [[10, 16, 24], [32, 48], [64, 96], [128, 192, 256]]
_STRIDES = [8, 16, 32, 64]


def ultraface_priors(width: int, height: int) -> np.ndarray:
    """SSD priors (cx, cy, w, h, normalised) of UltraFace for an input size."""
    out = []
    for stride, sizes in zip(_STRIDES, _MIN_BOXES):
        fw, fh = int(np.ceil(width / stride)), int(np.ceil(height / stride))
        for j in range(fh):
            for i in range(fw):
                cx, cy = (i + 0.5) / (width / stride), (j + 0.5) / (height / stride)
                for m in sizes:
                    out.append((cx, cy, m / width, m / height))
    return np.clip(np.asarray(out, dtype=np.float32), 0.0, 1.0)


class UltraFaceDetector(FaceDetector):
    """UltraFace RFB-320 / slim: boxes only."""

    family = "ultraface"

    def preprocess(self, image: np.ndarray) -> tuple[np.ndarray, dict[str, Any]]:
        return self.resize_preprocess(image)

    def decode(self, outputs: dict[str, np.ndarray], meta: dict[str, Any]) -> list[Detection]:
        # Outputs are told apart by their last dimension (2 = class scores, 4 = boxes), so
        # converted artifacts with other tensor names decode the same way.
        by_dim = {int(v.shape[-1]): v for v in outputs.values()}
        scores = outputs.get("scores", by_dim.get(2)).reshape(-1, 2)
        boxes = outputs.get("boxes", by_dim.get(4)).reshape(-1, 4)
        if self.params.get("raw_heads"):
            pw, ph = self.card.input.size
            pri = ultraface_priors(pw, ph)
            # Some exports keep the softmax in the graph; apply it only to logits.
            if not (np.all(scores >= 0) and np.allclose(scores.sum(axis=1), 1.0, atol=1e-3)):
                e = np.exp(scores - scores.max(axis=1, keepdims=True))
                scores = e / e.sum(axis=1, keepdims=True)
            boxes = decode_ssd_boxes(boxes, pri, center_variance=0.1, size_variance=0.2)
        s = scores[:, 1]
        idx = np.nonzero(s >= self.score_threshold)[0]
        if idx.size == 0:
            return []
        b = boxes[idx] * np.array([meta["w"], meta["h"], meta["w"], meta["h"]], np.float32)
        keep = nms(b, s[idx], self.nms_threshold, top_k=200)
        return [Detection(box=b[i].astype(np.float32), score=float(s[idx][i])) for i in keep]
