"""TinierSSD face detector (Analog Devices ai8x FaceDetection) decoding, and the ai8x FaceID crop.

The network (MAX78000/MAX78002, input 3×224(H)×168(W) integers −128..127) ends in four
8-bit heads: box offsets and class scores on two feature maps (28×21 and 7×5, two priors
per cell). As in ai8x-training (``train.py`` divides 8-bit outputs by 128;
``ai85net-tinierssd-face.py`` / ``utils/object_detection_utils.py``):

* scores: ``softmax(int8 / 128)`` over (background, face);
* boxes: SSD centre-variance encoding, ``cx = g_cx/10·w_p + cx_p``, ``w = exp(g_w/5)·w_p``
  with ``g = int8 / 128``;
* priors: for each map cell (row i, column j) ``cx=(j+.5)/W``, ``cy=(i+.5)/H``, for each
  aspect ratio ``r``: ``(s·√r, s/√r)`` with scale ``s`` (0.35715 and 0.7143), clamped to 0..1;
* NMS with the ``nms`` thresholds of ai8x-training's ``obj_detection_params_facedet.yaml``.

Prior index = (i·W + j)·n_boxes + box; head channel = box·4 + coordinate (locations) or
box·n_classes + class (scores).

Also registers the aligner ``ai8x-faceid``: the crop the FaceID firmware feeds the FaceID
network — the detected box (widened to the network's 3:4 aspect, so the face is not
stretched), resized to 120×160, RGB; the card's ``dtype = "int8"`` then gives pixel − 128.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from PIL import Image

from ..align import register_aligner
from ..errors import ConfigError, ModelFormatError
from ..image import resize, to_tensor
from .base import Detection, FaceDetector, register_family
from .nms import nms

__all__ = [
    "TinierSSDDetector",
    "tinierssd_priors",
    "decode_tinierssd",
    "heads_to_priors",
    "load_detection_params",
    "ai8x_faceid_crop",
    "DEFAULT_FMAPS",
]

log = logging.getLogger(__name__)

#: (rows, cols, scale, aspect ratios) per feature map, from ai85net-tinierssd-face.py.
DEFAULT_FMAPS: tuple[tuple[int, int, float, tuple[float, ...]], ...] = (
    (28, 21, 0.35715, (0.9, 0.75)),
    (7, 5, 0.7143, (0.9, 0.75)),
)
CENTER_VARIANCE = 10.0  # g_c = (c - c_p) / (w_p / 10)
SIZE_VARIANCE = 5.0  # g_w = log(w / w_p) * 5
OUTPUT_SCALE = 128.0  # 8-bit head outputs / 128 = the trained float scale


def tinierssd_priors(fmaps: Sequence[Sequence[Any]] = DEFAULT_FMAPS) -> np.ndarray:
    """Prior boxes ``[P,4]`` (cx, cy, w, h), normalised 0..1, in the network's prior order."""
    out = []
    for rows, cols, scale, ratios in fmaps:
        rows, cols = int(rows), int(cols)
        i, j = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")
        cx = (j + 0.5) / cols
        cy = (i + 0.5) / rows
        per = []
        for r in ratios:
            r = float(r)
            w = np.full_like(cx, float(scale) * np.sqrt(r))
            h = np.full_like(cx, float(scale) / np.sqrt(r))
            per.append(np.stack([cx, cy, w, h], axis=-1))
        out.append(np.stack(per, axis=2).reshape(-1, 4))  # (i, j, box) order
    return np.clip(np.concatenate(out).astype(np.float32), 0.0, 1.0)


def heads_to_priors(locs: Sequence[np.ndarray], scores: Sequence[np.ndarray], n_classes: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Raw CHW heads (one location and one score head per map) → ``[P,4]`` and ``[P,n_classes]``."""
    if len(locs) != len(scores) or not locs:
        raise ConfigError("TinierSSD needs one location head and one score head per feature map")
    lo = [np.asarray(l).reshape(np.shape(l)[-3:]).transpose(1, 2, 0).reshape(-1, 4) for l in locs]
    sc = [np.asarray(s).reshape(np.shape(s)[-3:]).transpose(1, 2, 0).reshape(-1, n_classes) for s in scores]
    return np.concatenate(lo), np.concatenate(sc)


def decode_tinierssd(
    locs: np.ndarray,
    scores: np.ndarray,
    priors: np.ndarray,
    *,
    min_score: float = 0.5,
    max_overlap: float = 0.3,
    top_k: int = 20,
    scale: float = OUTPUT_SCALE,
) -> tuple[np.ndarray, np.ndarray]:
    """Decode ``[P,4]`` int8 offsets and ``[P,C]`` int8 class scores.

    Returns normalised x1,y1,x2,y2 boxes ``[K,4]`` and face scores ``[K]`` after NMS,
    best first (class 1 = face; background is class 0).
    """
    locs = np.asarray(locs, np.float32).reshape(-1, 4) / scale
    sc = np.asarray(scores, np.float32) / scale
    if locs.shape[0] != priors.shape[0] or sc.shape[0] != priors.shape[0]:
        raise ConfigError(f"{locs.shape[0]} box predictions and {sc.shape[0]} scores for {priors.shape[0]} priors")
    e = np.exp(sc - sc.max(axis=1, keepdims=True))
    prob = e / e.sum(axis=1, keepdims=True)
    face = prob[:, 1]
    idx = np.nonzero(face > min_score)[0]
    if idx.size == 0:
        return np.zeros((0, 4), np.float32), np.zeros((0,), np.float32)
    p = priors[idx]
    g = locs[idx]
    cxcy = g[:, :2] * p[:, 2:] / CENTER_VARIANCE + p[:, :2]
    wh = np.exp(g[:, 2:] / SIZE_VARIANCE) * p[:, 2:]
    boxes = np.concatenate([cxcy - wh / 2, cxcy + wh / 2], axis=1)
    keep = nms(boxes, face[idx], max_overlap, top_k=top_k)
    return boxes[keep].astype(np.float32), face[idx][keep].astype(np.float32)


def load_detection_params(path: str | Path) -> dict[str, float]:
    """``nms`` settings (min_score, max_overlap, top_k) of an ai8x obj_detection_params YAML."""
    import yaml

    try:
        doc = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ModelFormatError(f"cannot read detection params {path}: {exc}") from None
    nm = (doc or {}).get("nms") or {}
    try:
        return {
            "min_score": float(nm.get("min_score", 0.5)),
            "max_overlap": float(nm.get("max_overlap", 0.3)),
            "top_k": int(nm.get("top_k", 20)),
        }
    except (TypeError, ValueError):
        raise ModelFormatError(f"{path}: malformed nms section") from None


@register_family("tinierssd")
class TinierSSDDetector(FaceDetector):
    """TinierSSD on an ai8x backend (``max78000``/``max78002``): boxes only, no landmarks.

    Card params: ``fmaps`` (list of [rows, cols, scale, [ratios…]]), ``n_classes`` (2),
    ``score_threshold``, ``nms_threshold``, ``top_k``; the session's outputs are the four
    heads in YAML order: location heads first, then score heads.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        fm = self.params.get("fmaps")
        self.fmaps = [tuple(f) for f in fm] if fm else list(DEFAULT_FMAPS)
        self.priors = tinierssd_priors(self.fmaps)
        self.n_classes = int(self.params.get("n_classes", 2))
        self.top_k = int(self.params.get("top_k", 20))

    def preprocess(self, image: np.ndarray) -> tuple[np.ndarray, dict[str, Any]]:
        spec = self.card.input
        x = resize(image, spec.size)
        t = to_tensor(x[None], layout="NCHW", color=spec.color, dtype=spec.dtype or "int8")
        return t, {"w": image.shape[1], "h": image.shape[0]}

    def decode(self, outputs: dict[str, np.ndarray], meta: dict[str, Any]) -> list[Detection]:
        heads = [np.asarray(v)[0] if np.ndim(v) == 4 else np.asarray(v) for v in outputs.values()]
        n = len(self.fmaps)
        if len(heads) != 2 * n:
            raise ConfigError(f"TinierSSD expects {2 * n} heads, the session returned {len(heads)}")
        locs, scores = heads_to_priors(heads[:n], heads[n:], self.n_classes)
        boxes, sc = decode_tinierssd(
            locs, scores, self.priors, min_score=self.score_threshold, max_overlap=self.nms_threshold, top_k=self.top_k
        )
        scale = np.array([meta["w"], meta["h"], meta["w"], meta["h"]], np.float32)
        return [Detection(box=b * scale, score=float(s)) for b, s in zip(boxes, sc)]


def ai8x_faceid_crop(
    image: np.ndarray, box: np.ndarray, landmarks: np.ndarray | None = None, size: tuple[int, int] = (120, 160)
) -> np.ndarray:
    """Crop a face for the ai85 FaceID network: the box widened to ``size``'s aspect, resized.

    ``size`` is (width, height). Outside the image is black, as on the camera frame edge.
    """
    x1, y1, x2, y2 = [float(v) for v in box]
    w, h = max(x2 - x1, 1.0), max(y2 - y1, 1.0)
    aspect = size[0] / size[1]
    if w / h < aspect:
        w = h * aspect
    else:
        h = w / aspect
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    crop = Image.fromarray(image).crop((round(cx - w / 2), round(cy - h / 2), round(cx + w / 2), round(cy + h / 2)))
    return np.asarray(crop.resize(size, Image.BILINEAR))


register_aligner("ai8x-faceid", lambda image, box, landmarks: ai8x_faceid_crop(image, box, landmarks))
