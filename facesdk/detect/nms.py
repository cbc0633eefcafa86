"""Greedy non-maximum suppression (Neubeck & Van Gool, "Efficient Non-Maximum Suppression", 2006;
the greedy form used by every detector here: keep the best box, drop the boxes overlapping it by more
than a threshold, repeat).

For up to :data:`MATRIX_MAX` boxes the overlaps of all pairs are computed in one numpy pass and
the greedy walk only reads rows of that matrix (a few µs per kept box); above it, the overlaps of
each kept box with the remaining ones are computed row by row. Both give the same boxes as the
plain row-by-row loop: every overlap is computed with the same float32 formula.
"""

from __future__ import annotations

import numpy as np

__all__ = ["nms", "iou", "overlaps", "greedy", "MATRIX_MAX"]

#: Largest box count for the all-pairs overlap matrix (``MATRIX_MAX²`` float32 values).
MATRIX_MAX = 2048


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


def overlaps(boxes: np.ndarray, mode: str = "union") -> np.ndarray:
    """All-pairs overlap ``[N, N]`` of ``(N, 4)`` boxes (computed in their own float dtype): IoU
    (``"union"``) or intersection over the smaller area (``"min"``)."""
    b = np.asarray(boxes).reshape(-1, 4)
    x1, y1, x2, y2 = b[:, 0], b[:, 1], b[:, 2], b[:, 3]
    iw = np.minimum(x2[:, None], x2[None]) - np.maximum(x1[:, None], x1[None])
    ih = np.minimum(y2[:, None], y2[None]) - np.maximum(y1[:, None], y1[None])
    inter = np.maximum(iw, 0) * np.maximum(ih, 0)
    if mode == "min":
        area = np.maximum(x2 - x1, 0) * np.maximum(y2 - y1, 0)
        return inter / np.maximum(np.minimum(area[:, None], area[None]), 1e-12)
    a = np.maximum((x2 - x1) * (y2 - y1), 0)  # the kept box's own area (row), as iou()
    b_ = np.maximum(x2 - x1, 0) * np.maximum(y2 - y1, 0)  # the others' clipped areas (column)
    union = a[:, None] + b_[None] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def greedy(order: np.ndarray, ov: np.ndarray, threshold: float, top_k: int | None = None) -> np.ndarray:
    """The greedy walk over an all-pairs overlap matrix (``order``: box indices, best first)."""
    alive = np.ones(len(ov), bool)
    keep: list[int] = []
    for i in order.tolist():
        if not alive[i]:
            continue
        keep.append(i)
        if top_k is not None and len(keep) >= top_k:
            break
        alive &= ov[i] <= threshold
    return np.asarray(keep, dtype=np.int64)


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float, top_k: int | None = None) -> np.ndarray:
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
    if len(order) <= MATRIX_MAX:
        return greedy(order, overlaps(boxes), iou_threshold, top_k)
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
