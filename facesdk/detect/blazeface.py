"""BlazeFace decoder (MediaPipe face detection, short-range 128×128 and full-range 192×192).

The model outputs, per SSD anchor, 16 regression values and one raw score:

* regressors ``[1, N, 16]``: box centre offset (dx, dy), box size (w, h) and six
  keypoints (x, y), all in input pixels relative to the anchor centre
  (MediaPipe's ``reverse_output_order``: x before y);
* classificators ``[1, N, 1]``: logits; score = sigmoid(clip(logit, ±100)).

Anchors follow MediaPipe's ``SsdAnchorsCalculator`` with ``fixed_anchor_size``
(every anchor is 1×1 in normalised units, so only centres matter): consecutive
layers with the same stride share one feature map and stack their anchors per
cell (one per aspect ratio, plus one when ``interpolated_scale_aspect_ratio``
> 0). Short range, strides (8, 16, 16, 16): 16·16·2 + 8·8·6 = 896 anchors; full
range, stride 4 with no interpolated anchor: 48·48 = 2304.

Overlapping detections are merged with MediaPipe's *weighted* NMS (box and
keypoints averaged over the cluster, weighted by score; the cluster keeps its
best score); card ``params.nms = "plain"`` selects greedy NMS instead.

Keypoints: BlazeFace gives the two eyes, the nose tip, the mouth centre and the
two ear tragions. The core's five points need mouth corners, which BlazeFace
does not predict; they are **estimated** as the mouth centre ± ``mouth_half_width``
× the interocular vector (0.414 by default: the ArcFace 112×112 template's half
mouth width over its eye distance). This is exact for a face posed like the
template and drifts with expression and yaw; the six raw keypoints are kept in
``Detection.extra["keypoints6"]``.

Input: RGB, (x − 127.5)/127.5, NHWC as the TFLite graph takes it; the image is
letterboxed (bottom/right zero padding) into the model size.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from ..image import letterbox, to_tensor
from .base import Detection, FaceDetector
from .nms import iou, nms

__all__ = ["BlazeFaceDetector", "ssd_anchors", "weighted_nms", "five_points"]


def ssd_anchors(
    size: tuple[int, int],
    strides: Sequence[int],
    *,
    offset: float = 0.5,
    aspect_ratios: Sequence[float] = (1.0,),
    interpolated_scale_aspect_ratio: float = 1.0,
) -> np.ndarray:
    """Anchor centres ``[N, 2]`` (x, y) normalised to [0, 1], in MediaPipe's order.

    Args:
        size: model input (width, height).
        strides: one stride per SSD layer (consecutive equal strides share a feature map).
        offset: anchor offset inside a cell (0.5 = cell centre).
        aspect_ratios: anchors per layer before the interpolated one.
        interpolated_scale_aspect_ratio: > 0 adds one more anchor per layer.
    """
    w, h = size
    per_layer = len(aspect_ratios) + (1 if interpolated_scale_aspect_ratio > 0 else 0)
    out: list[np.ndarray] = []
    i = 0
    while i < len(strides):
        j = i
        while j < len(strides) and strides[j] == strides[i]:
            j += 1
        n_per_cell = per_layer * (j - i)
        fw, fh = int(np.ceil(w / strides[i])), int(np.ceil(h / strides[i]))
        ys, xs = np.meshgrid((np.arange(fh) + offset) / fh, (np.arange(fw) + offset) / fw, indexing="ij")
        centres = np.stack([xs.ravel(), ys.ravel()], axis=1)
        out.append(np.repeat(centres, n_per_cell, axis=0))
        i = j
    return np.concatenate(out).astype(np.float32)


def weighted_nms(
    boxes: np.ndarray, scores: np.ndarray, points: np.ndarray, iou_threshold: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """MediaPipe's weighted NMS: merge each cluster into its score-weighted mean.

    Args:
        boxes: ``[N, 4]`` x1, y1, x2, y2; scores ``[N]``; points ``[N, K, 2]``.
        iou_threshold: candidates overlapping the cluster's best box by more than this join it.

    Returns:
        merged boxes, scores (each cluster's best) and points, best first.
    """
    order = np.argsort(-scores, kind="stable")
    ob, os_, op = [], [], []
    while order.size:
        top = order[0]
        ov = iou(boxes[top], boxes[order])
        members = order[ov > iou_threshold]
        members = members if members.size else order[:1]
        wts = scores[members][:, None]
        total = float(wts.sum())
        ob.append((boxes[members] * wts).sum(0) / total)
        op.append((points[members] * wts[:, :, None]).sum(0) / total)
        os_.append(scores[top])
        order = order[ov <= iou_threshold]
        order = order[order != top]
    if not ob:
        k = points.shape[1] if points.ndim == 3 else 0
        return np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros((0, k, 2), np.float32)
    return (np.asarray(ob, np.float32), np.asarray(os_, np.float32), np.asarray(op, np.float32))


def five_points(kps6: np.ndarray, mouth_half_width: float = 0.414) -> np.ndarray:
    """BlazeFace's six keypoints ``[..., 6, 2]`` → the core's five points ``[..., 5, 2]``.

    Eyes sorted by x, nose tip, then the two mouth corners estimated from the
    mouth centre along the eye line (see the module docstring).
    """
    e0, e1 = kps6[..., 0, :], kps6[..., 1, :]
    swap = (e0[..., 0] > e1[..., 0])[..., None]
    left = np.where(swap, e1, e0)
    right = np.where(swap, e0, e1)
    eye_vec = right - left  # image-left eye → image-right eye
    mouth = kps6[..., 3, :]
    half = mouth_half_width * eye_vec
    return np.stack([left, right, kps6[..., 2, :], mouth - half, mouth + half], axis=-2).astype(np.float32)


def _layout_of(session: Any, default: str) -> str:
    """NHWC or NCHW from the session's input shape (a 3 or 1 channel dim), else ``default``."""
    try:
        shape = session.inputs[0].shape
    except (AttributeError, IndexError):
        return default
    if len(shape) == 4:
        if shape[-1] in (1, 3) and shape[1] not in (1, 3):
            return "NHWC"
        if shape[1] in (1, 3) and shape[-1] not in (1, 3):
            return "NCHW"
    return default


class BlazeFaceDetector(FaceDetector):
    """MediaPipe BlazeFace (short- or full-range): SSD anchors, 6 keypoints, weighted NMS."""

    family = "blazeface"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        p = self.params
        self.size: tuple[int, int] = self.card.input.size
        self.anchors = ssd_anchors(
            self.size,
            [int(s) for s in p.get("anchor_strides", (8, 16, 16, 16))],
            offset=float(p.get("anchor_offset", 0.5)),
            aspect_ratios=[float(a) for a in p.get("aspect_ratios", (1.0,))],
            interpolated_scale_aspect_ratio=float(p.get("interpolated_scale_aspect_ratio", 1.0)),
        )
        self.num_keypoints = int(p.get("num_keypoints", 6))
        self.clip = float(p.get("score_clipping_thresh", 100.0))
        self.weighted = str(p.get("nms", "weighted")) == "weighted"
        self.mouth_half_width = float(p.get("mouth_half_width", 0.414))
        self.input_layout = _layout_of(self.session, getattr(self, "layout", None) or self.card.input.layout)

    def preprocess(self, image: np.ndarray) -> tuple[np.ndarray, dict[str, Any]]:
        boxed, scale = letterbox(image, self.size)
        spec = self.card.input
        t = to_tensor(boxed[None], layout=self.input_layout, color=spec.color, mean=spec.mean, std=spec.std)
        return t, {"scale": scale}

    def split_outputs(self, outputs: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """(regressors ``[N, 4+2K]``, logits ``[N]``), told apart by their last dimension."""
        reg = logit = None
        n = len(self.anchors)
        for o in outputs.values():
            a = np.asarray(o, np.float32)
            if a.size == n:
                logit = a.reshape(n)
            elif a.size == n * (4 + 2 * self.num_keypoints):
                reg = a.reshape(n, -1)
        if reg is None or logit is None:
            from ..errors import ModelFormatError

            shapes = {k: tuple(np.shape(v)) for k, v in outputs.items()}
            raise ModelFormatError(
                f"{self.card.id}: BlazeFace outputs for {n} anchors expected, got {shapes}"
            )
        return reg, logit

    def decode_raw(self, reg: np.ndarray, logit: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """All anchors above the score threshold → (boxes ``[M,4]``, scores, keypoints ``[M,K,2]``) in
        model pixels.
        """
        z = np.clip(logit.astype(np.float64), -self.clip, self.clip)
        score = 1.0 / (1.0 + np.exp(-z))
        idx = np.nonzero(score >= self.score_threshold)[0]
        w, h = self.size
        r = reg[idx]
        anc = self.anchors[idx] * np.array([w, h], np.float32)  # anchor centres in model pixels
        c = anc + r[:, 0:2]
        half = r[:, 2:4] / 2
        boxes = np.concatenate([c - half, c + half], axis=1)
        kps = r[:, 4 : 4 + 2 * self.num_keypoints].reshape(-1, self.num_keypoints, 2) + anc[:, None, :]
        return boxes.astype(np.float32), score[idx].astype(np.float32), kps.astype(np.float32)

    def decode(self, outputs: dict[str, np.ndarray], meta: dict[str, Any]) -> list[Detection]:
        reg, logit = self.split_outputs(outputs)
        boxes, scores, kps = self.decode_raw(reg, logit)
        if self.weighted:
            boxes, scores, kps = weighted_nms(boxes, scores, kps, self.nms_threshold)
        else:
            keep = nms(boxes, scores, self.nms_threshold)
            boxes, scores, kps = boxes[keep], scores[keep], kps[keep]
        inv = 1.0 / meta["scale"]
        boxes = boxes * inv
        kps = kps * inv
        five = five_points(kps, self.mouth_half_width) if self.num_keypoints >= 4 else None
        return [
            Detection(
                box=boxes[i],
                score=float(scores[i]),
                landmarks=None if five is None else five[i],
                extra={"keypoints6": kps[i]},
            )
            for i in range(len(scores))
        ]
