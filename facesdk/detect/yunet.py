"""YuNet decoder (OpenCV Zoo face_detection_yunet_2023mar).

Outputs per stride s in (8, 16, 32): ``cls_s`` [1,N,1], ``obj_s`` [1,N,1],
``bbox_s`` [1,N,4], ``kps_s`` [1,N,10] over a grid of (H/s)×(W/s) anchors
(row-major). score = sqrt(cls·obj); centre = (col + dx, row + dy)·s;
size = exp(dw, dh)·s; landmarks = (col + kx, row + ky)·s. Input: BGR float
0–255, NCHW; the image is letterboxed into the model's size. A card with a dynamic input
(``input.dynamic_size``) runs at the image's own size, zero-padded right/bottom to a multiple
of 32 (what OpenCV's ``FaceDetectorYN`` does), after an optional downscale to
``params.max_input_side``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..image import letterbox, resize, to_tensor
from .base import Detection, FaceDetector
from .nms import nms

__all__ = ["YuNetDetector"]


class YuNetDetector(FaceDetector):
    """YuNet: anchor-free, five landmarks."""

    family = "yunet"

    def input_size(self, image: np.ndarray) -> tuple[int, int]:
        if self.card.input.dynamic_size:
            h, w = image.shape[:2]
            return (int(np.ceil(w / 32) * 32), int(np.ceil(h / 32) * 32))
        return self.card.input.size

    def preprocess(self, image: np.ndarray) -> tuple[np.ndarray, dict[str, Any]]:
        spec = self.card.input
        if spec.dynamic_size:
            return self._native(image)
        size = self.input_size(image)
        boxed, scale = letterbox(image, size)
        t = to_tensor(boxed[None], layout=self.layout, color=spec.color, mean=spec.mean, std=spec.std)
        return t, {"scale": scale, "size": size}

    def _native(self, image: np.ndarray) -> tuple[np.ndarray, dict[str, Any]]:
        """Native-size input: optional downscale, then zero padding to a multiple of 32."""
        spec = self.card.input
        h, w = image.shape[:2]
        scale = 1.0
        cap = int(self.params.get("max_input_side", 0) or 0)
        if cap and max(h, w) > cap:
            scale = cap / max(h, w)
            image = resize(image, (max(1, round(w * scale)), max(1, round(h * scale))))
            h, w = image.shape[:2]
        size = (int(np.ceil(w / 32) * 32), int(np.ceil(h / 32) * 32))
        t = np.zeros(
            (1, 3, size[1], size[0]) if self.layout == "NCHW" else (1, size[1], size[0], 3), np.float32
        )
        x = to_tensor(image[None], layout=self.layout, color=spec.color, mean=spec.mean, std=spec.std)
        if self.layout == "NCHW":
            t[:, :, :h, :w] = x
        else:
            t[:, :h, :w, :] = x
        return t, {"scale": scale, "size": size}

    def decode(self, outputs: dict[str, np.ndarray], meta: dict[str, Any]) -> list[Detection]:
        w, h = meta["size"]
        boxes_all, scores_all, kps_all = [], [], []
        for s in self.params.get("strides", (8, 16, 32)):
            cls = outputs[f"cls_{s}"].reshape(-1)
            obj = outputs[f"obj_{s}"].reshape(-1)
            bbox = outputs[f"bbox_{s}"].reshape(-1, 4)
            kps = outputs[f"kps_{s}"].reshape(-1, 10)
            cols, rows = w // s, h // s
            score = np.sqrt(np.clip(cls, 0, 1) * np.clip(obj, 0, 1))
            idx = np.nonzero(score >= self.score_threshold)[0]
            if idx.size == 0:
                continue
            r, c = np.divmod(idx, cols)
            b = bbox[idx]
            cx = (c + b[:, 0]) * s
            cy = (r + b[:, 1]) * s
            bw = np.exp(b[:, 2]) * s
            bh = np.exp(b[:, 3]) * s
            boxes_all.append(np.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], axis=1))
            k = kps[idx].reshape(-1, 5, 2)
            kx = (k[:, :, 0] + c[:, None]) * s
            ky = (k[:, :, 1] + r[:, None]) * s
            kps_all.append(np.stack([kx, ky], axis=2))
            scores_all.append(score[idx])
            del rows
        if not boxes_all:
            return []
        boxes = np.concatenate(boxes_all).astype(np.float32)
        scores = np.concatenate(scores_all).astype(np.float32)
        kps = np.concatenate(kps_all).astype(np.float32)
        keep = nms(boxes, scores, self.nms_threshold, top_k=int(self.params.get("keep_top_k", 750)))
        inv = 1.0 / meta["scale"]
        return [Detection(box=boxes[i] * inv, score=float(scores[i]), landmarks=kps[i] * inv) for i in keep]
