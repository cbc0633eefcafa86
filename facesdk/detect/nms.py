"""Greedy non-maximum suppression."""

from __future__ import annotations

import numpy as np

__all__ = ["nms", "iou"]


def iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU of one ``(4,)`` x1,y1,x2,y2 box with ``(N,4)`` boxes."""
    x1 = np.maximum(box[0], boxes[:, 0])
    y1 = np.maximum(box[1], boxes[:, 1])
    x2 = np.minimum(box[2], boxes[:, 2])
    y2 = np.minimum(box[3], boxes[:, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    a = max(float((box[2] - box[0]) * (box[3] - box[1])), 0.0)
    b = np.clip(boxes[:, 2] - boxes[:, 0], 0, None) * np.clip(boxes[:, 3] - boxes[:, 1], 0, None)
    union = a + b - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def nms(
    boxes: np.ndarray, scores: np.ndarray, iou_threshold: float, top_k: int | None = None
) -> np.ndarray:
    """Indices of boxes kept by greedy NMS, highest score first.

    Args:
        boxes: ``(N, 4)`` x1, y1, x2, y2.
        scores: ``(N,)``.
        iou_threshold: a box overlapping a kept box by more than this is dropped.
        top_k: keep at most this many.
    """
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    scores = np.asarray(scores, dtype=np.float32).reshape(-1)
    order = np.argsort(-scores, kind="stable")
    keep: list[int] = []
    while order.size:
        i = int(order[0])
        keep.append(i)
        if top_k is not None and len(keep) >= top_k:
            break
        rest = order[1:]
        if rest.size == 0:
            break
        ov = iou(boxes[i], boxes[rest])
        order = rest[ov <= iou_threshold]
    return np.asarray(keep, dtype=np.int64)
