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

Also the aligner ``ai8x-faceid`` (registered by :mod:`facesdk.builtin`): a host
approximation of the FaceID crop — the detected box widened to the network's 3:4 aspect (so
the face is not stretched), resized bilinearly to 120×160, RGB888; the card's ``dtype =
"int8"`` then gives pixel − 128.

**Firmware-exact path** (``firmware_exact``; read from msdk's MAX78000 ``facial_recognition``
demo of the 160×120 ``ai85-faceid`` era: ``facedetection.c``, ``post_process.c``, ``faceID.c``):

* the camera frame *is* the detector input: 168 (x) × 224 (y) pixels, RGB565; each channel is
  fed as its 5/6/5 bits shifted to the top of a byte (``r & 0xF8``, ``g & 0xFC``, ``b & 0xF8``)
  minus 128, channel 0 = R (:func:`rgb565_quantize`, :func:`firmware_frame`; a host image of
  another size is first resized to 168×224 — that is the only step the firmware does not define);
* decoding follows ``src/post_process.c`` at one of two revisions (:data:`POST_PROCESS_REVISIONS`:
  ``f631747``, ``exp``/``sqrt`` results kept as double — the default — or the current ``0241c69``,
  which casts each to float; the two give another box or score for a few head sets);
* decoding keeps a single box (``MAX_PRIORS = 1``): the prior with the highest face score,
  the first one on ties; the score is ``(uint16)(65536·e^(f/128) / Σ)`` where the float sum has
  a third, never-written class score 0 (``NUM_CLASSES = 3``), computed only when
  ``f ≥ background``, and must be ≥ 32768; the box is clamped to 0..1 and truncated to integer
  frame pixels ``(uint8)(168·x)``, ``(uint8)(224·y)`` (:func:`decode_tinierssd_firmware`);
* the FaceID input (160 rows × 120 columns) samples the box without keeping its aspect:
  ``row = y1 + min(round(i/160·h), h−1)``, ``col = x1 + min(round(j/120·w), w−1)`` in float32
  with C ``round`` (half away from zero), nearest neighbour, from the same RGB565 frame
  (:func:`firmware_faceid_crop`; aligner ``ai8x-faceid-firmware``).
* faceid_112 (the current demo; msdk ``facial_recognition/include/faceID.h``: ``WIDTH_ID`` =
  ``HEIGHT_ID`` = 112, ``USE_BOX_ONLY``; ``src/faceID.c`` ``run_cnn_2``): the same loop to 112×112
  (aligner ``ai8x-faceid-112-firmware``; host variant ``ai8x-faceid-112``: box widened to a square,
  bilinear 112×112).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from PIL import Image

from ..errors import ConfigError, ModelFormatError
from ..image import resize, to_tensor
from .base import Detection, FaceDetector
from .boxes import decode_ssd_boxes
from .nms import nms

__all__ = [
    "TinierSSDDetector",
    "tinierssd_priors",
    "decode_tinierssd",
    "heads_to_priors",
    "load_detection_params",
    "ai8x_faceid_crop",
    "ai8x_faceid112_crop",
    "ai8x_faceid112_crop_firmware",
    "DEFAULT_FMAPS",
    "FIRMWARE_FRAME",
    "rgb565_quantize",
    "firmware_frame",
    "decode_tinierssd_firmware",
    "firmware_box",
    "firmware_faceid_crop",
    "ai8x_faceid_crop_firmware",
    "POST_PROCESS_REVISIONS",
    "DEFAULT_POST_PROCESS",
    "merge_window_boxes",
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
#: (width, height) of the demo firmware's camera frame = the detector input.
FIRMWARE_FRAME = (168, 224)
_FW_MIN_CLASS_SCORE = 32768  # post_process.h MIN_CLASS_SCORE (of 65536)
#: msdk ``Examples/MAX78000/CNN/facial_recognition/src/post_process.c`` revisions (blob commits as stored in
#: the msdk history) that :func:`decode_tinierssd_firmware` follows. Both keep one box (``MAX_PRIORS`` 1,
#: ``NUM_CLASSES`` 3); they differ only in float precision.
POST_PROCESS_REVISIONS: dict[str, str] = {
    "f631747": "exp()/sqrt() results used as double: sum += exp(c/128.), 65536.*exp(c/128.)/sum, "
    "scale*sqrt(ar), exp(g/5)*prior (one rounding to float per stored value)",
    "0241c69": "explicit (float) casts (the current revision): sum += (float)exp(c/128.), "
    "65536.*(float)exp(c/128.)/sum, scale*(float)sqrt(ar), (float)exp(g/5)*prior in float",
}
#: the revision the firmware-exact path follows unless told otherwise (the one its LFW figures were
#: measured with); choose another with ``post_process_revision`` in the detector card's params or
#: :attr:`TinierSSDDetector.post_process_revision`
DEFAULT_POST_PROCESS = "f631747"


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


def heads_to_priors(
    locs: Sequence[np.ndarray], scores: Sequence[np.ndarray], n_classes: int = 2
) -> tuple[np.ndarray, np.ndarray]:
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
        raise ConfigError(
            f"{locs.shape[0]} box predictions and {sc.shape[0]} scores for {priors.shape[0]} priors"
        )
    e = np.exp(sc - sc.max(axis=1, keepdims=True))
    prob = e / e.sum(axis=1, keepdims=True)
    face = prob[:, 1]
    idx = np.nonzero(face > min_score)[0]
    if idx.size == 0:
        return np.zeros((0, 4), np.float32), np.zeros((0,), np.float32)
    boxes = decode_ssd_boxes(locs[idx], priors[idx], 1.0 / CENTER_VARIANCE, 1.0 / SIZE_VARIANCE)
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


def _iou_one(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    ix = np.clip(np.minimum(box[2], boxes[:, 2]) - np.maximum(box[0], boxes[:, 0]), 0, None)
    iy = np.clip(np.minimum(box[3], boxes[:, 3]) - np.maximum(box[1], boxes[:, 1]), 0, None)
    inter = ix * iy
    union = (box[2] - box[0]) * (box[3] - box[1]) + (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return inter / np.maximum(union - inter, 1e-9)


def merge_window_boxes(
    boxes: np.ndarray,
    scores: np.ndarray,
    source: np.ndarray,
    *,
    nms_threshold: float = 0.3,
    min_votes: int = 1,
    top_k: int = 200,
) -> list[int]:
    """Merge photo-mode boxes from many windows (image pixels): indices of the faces kept, best first.

    1. NMS over all windows' boxes (IoU > ``nms_threshold`` suppresses the lower score);
    2. a box lying mostly (> 60 % of its area) inside a kept box more than twice its size is dropped —
       a small window sees part of a big face as a face; neighbouring faces overlap far less;
    3. votes: a kept box needs boxes from at least ``min_votes`` distinct windows (``source``), itself
       included, with IoU >= 0.5 — a face is found in several overlapping windows and scales.
    """
    keep = nms(boxes, scores, nms_threshold, top_k=top_k)
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    kept: list[int] = []
    for i in sorted(keep, key=lambda j: -area[j]):
        inside = False
        for j in kept:
            ix = max(0.0, min(boxes[i, 2], boxes[j, 2]) - max(boxes[i, 0], boxes[j, 0]))
            iy = max(0.0, min(boxes[i, 3], boxes[j, 3]) - max(boxes[i, 1], boxes[j, 1]))
            if area[j] > 2 * area[i] and ix * iy > 0.6 * area[i]:
                inside = True
                break
        if inside:
            continue
        if min_votes > 1:
            near = _iou_one(boxes[i], boxes) >= 0.5
            if len(np.unique(np.asarray(source)[near])) < min_votes:
                continue
        kept.append(i)
    return sorted(kept, key=lambda j: -scores[j])


class TinierSSDDetector(FaceDetector):
    """TinierSSD on an ai8x backend (``max78000``/``max78002``): boxes only, no landmarks.

    Card params: ``fmaps`` (list of [rows, cols, scale, [ratios…]]), ``n_classes`` (2),
    ``score_threshold``, ``nms_threshold``, ``top_k``; the session's outputs are the four
    heads in YAML order: location heads first, then score heads.
    """

    family = "tinierssd"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        fm = self.params.get("fmaps")
        self.fmaps = [tuple(f) for f in fm] if fm else list(DEFAULT_FMAPS)
        self.priors = tinierssd_priors(self.fmaps)
        self.n_classes = int(self.params.get("n_classes", 2))
        self.top_k = int(self.params.get("top_k", 20))
        #: decode and quantise like the msdk demo firmware (one box, RGB565 frame, integer box).
        self.firmware_exact = bool(self.params.get("firmware_exact", False))
        #: which msdk post_process.c revision the firmware-exact decode follows (POST_PROCESS_REVISIONS)
        self.post_process_revision = str(self.params.get("post_process_revision", DEFAULT_POST_PROCESS))
        _check_revision(self.post_process_revision)
        self.configure_photo_mode(self.params)

    def configure_photo_mode(self, params: dict[str, Any]) -> None:
        """Read the photo-mode settings from card params (``photo_*``); ConfigError when out of range."""
        #: photo mode: 3:4 windows of the photo at several scales, each fed to TinierSSD at its own
        #: 168x224 scale (no stretching), boxes merged on the host; off = the firmware's framing (whole
        #: image stretched to 168x224, as the board's camera sees it).
        self.photo_mode = bool(params.get("photo_mode", False))
        #: smallest window height in photo mode, as a fraction of the photo's shorter side (and >= 64 px);
        #: faces narrower than about a third of it are not looked for.
        self.photo_min_window = float(params.get("photo_min_window", 0.25))
        #: ratio between the heights of successive window scales (largest: the biggest 3:4 window that fits)
        self.photo_scale_step = float(params.get("photo_scale_step", 2**0.5))
        #: fraction of a window its neighbour overlaps (0.5: windows step by half their size)
        self.photo_overlap = float(params.get("photo_overlap", 0.5))
        #: score a photo-mode box must reach in its window (ai8x-training's obj_detection_params_facedet.yaml
        #: min_score). The defaults here (scale step, overlap, smallest window, score, votes) were chosen for
        #: most faces found minus extra boxes, against YuNet on a tuning set of LFW DevTrain images and the
        #: knn_examples/train photos, not on the photos reported as held out (benchmarks/RESULTS.md)
        self.photo_min_score = float(params.get("photo_min_score", 0.75))
        #: a merged box is kept when boxes from at least this many windows (itself included) overlap it
        #: with IoU >= 0.5 (a face is seen by several overlapping windows and scales, a false box rarely)
        self.photo_min_votes = int(params.get("photo_min_votes", 1))
        ok = 1.05 <= self.photo_scale_step <= 4 and 0 <= self.photo_overlap <= 0.9
        if not (ok and self.photo_min_window > 0 and self.photo_min_votes >= 1):
            raise ConfigError(
                "photo mode needs 1.05 <= photo_scale_step <= 4, 0 <= photo_overlap <= 0.9, "
                "photo_min_window > 0 and photo_min_votes >= 1"
            )

    def describe_mode(self) -> str:
        """Which framing runs and which network runs where (for ``describe()``)."""
        if self.photo_mode:
            return (
                f"photo mode: 3:4 windows at scales {self.photo_scale_step:.3g}x apart "
                f"({self.photo_overlap:g} overlap, smallest {self.photo_min_window:g} of the shorter side, "
                ">= 64 px) cut from the photo and resized to 168x224 on the host; TinierSSD runs on the "
                f"accelerator once per window; decode (score >= {self.photo_min_score:g}), per-window NMS "
                "and the merge across windows (NMS, contained-box suppression, >= "
                f"{self.photo_min_votes} window(s) per face) run on the host"
            )
        if self.firmware_exact:
            return (
                "firmware framing, firmware-exact: whole image as a 168x224 RGB565 frame, one box "
                f"(msdk post_process.c at {self.post_process_revision}); TinierSSD on the accelerator, the "
                "decode on the host as the firmware's CPU would"
            )
        return (
            "firmware framing: whole image stretched to 168x224 (the board camera's view); TinierSSD on the "
            "accelerator, decode and NMS on the host"
        )

    def windows(self, w: int, h: int) -> list[tuple[int, int, int, int]]:
        """Photo-mode windows ``(x0, y0, ww, wh)``: 3:4, inside the photo, at least one.

        Scales: the largest 3:4 window that fits, then each :attr:`photo_scale_step` times smaller down to
        :attr:`photo_min_window` of the shorter side (and 64 px). Positions: a grid stepping by
        ``1 - photo_overlap`` of the window from the top-left corner, plus one window flush with the
        right/bottom edge.
        """
        fw, fh = self.card.input.size
        aspect = fw / fh
        wh = min(h, w / aspect)
        smallest = max(64.0, self.photo_min_window * min(w, h))
        step = max(0.1, 1.0 - self.photo_overlap)

        def starts(length: int, size: int) -> list[int]:
            if length <= size:
                return [(length - size) // 2]  # centred (only the largest scale can be larger)
            n = int(np.floor((length - size) / (step * size) + 1e-9))
            pos = [int(round(k * step * size)) for k in range(n + 1)]
            if pos[-1] < length - size:
                pos.append(length - size)  # flush with the right/bottom edge
            return pos

        out: list[tuple[int, int, int, int]] = []
        while True:
            iw, ih = max(1, int(round(wh * aspect))), max(1, int(round(wh)))
            out += [(x, y, iw, ih) for y in starts(h, ih) for x in starts(w, iw)]
            wh /= self.photo_scale_step
            if wh < smallest - 1e-6:
                break
        return out

    def window_boxes(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Photo mode before the merge: every window's boxes after its own decode (score >=
        :attr:`photo_min_score`) and NMS, in image pixels — ``boxes [K,4]``, ``scores [K]`` and the index of
        the window each came from ``[K]``."""
        spec = self.card.input
        h, w = image.shape[:2]
        wins = self.windows(w, h)
        boxes, scores, source = [], [], []
        n = len(self.fmaps)
        for k in range(0, len(wins), 16):
            chunk = wins[k : k + 16]
            frames = np.stack(
                [resize(image[y : y + wh, x : x + ww], tuple(spec.size)) for x, y, ww, wh in chunk]
            )
            t = to_tensor(frames, layout="NCHW", color=spec.color, dtype=spec.dtype or "int8")
            out = self.run_main(t)
            for i, (x, y, ww, wh) in enumerate(chunk):
                heads = [np.asarray(v)[i] for v in out.values()]
                locs, sc = heads_to_priors(heads[:n], heads[n:], self.n_classes)
                bx, bs = decode_tinierssd(
                    locs,
                    sc,
                    self.priors,
                    min_score=self.photo_min_score,
                    max_overlap=self.nms_threshold,
                    top_k=self.top_k,
                )
                for b, s_ in zip(bx, bs):
                    boxes.append([x + b[0] * ww, y + b[1] * wh, x + b[2] * ww, y + b[3] * wh])
                    scores.append(float(s_))
                    source.append(k + i)
        return (
            np.asarray(boxes, np.float32).reshape(-1, 4),
            np.asarray(scores, np.float32),
            np.asarray(source, np.int64),
        )

    def detect(self, image: np.ndarray) -> list[Detection]:
        """Faces in an RGB image: the firmware framing, or photo mode (:attr:`photo_mode`)."""
        if not self.photo_mode:
            return super().detect(image)
        boxes, scores, source = self.window_boxes(image)
        if not len(boxes):
            return []
        keep = merge_window_boxes(
            boxes, scores, source, nms_threshold=self.nms_threshold, min_votes=self.photo_min_votes
        )
        return self.finalize(image, [Detection(box=boxes[i], score=float(scores[i])) for i in keep])

    def preprocess(self, image: np.ndarray) -> tuple[np.ndarray, dict[str, Any]]:
        spec = self.card.input
        x = firmware_frame(image, tuple(spec.size)) if self.firmware_exact else resize(image, spec.size)
        t = to_tensor(x[None], layout="NCHW", color=spec.color, dtype=spec.dtype or "int8")
        return t, {"w": image.shape[1], "h": image.shape[0]}

    def decode(self, outputs: dict[str, np.ndarray], meta: dict[str, Any]) -> list[Detection]:
        heads = [np.asarray(v)[0] if np.ndim(v) == 4 else np.asarray(v) for v in outputs.values()]
        n = len(self.fmaps)
        if len(heads) != 2 * n:
            raise ConfigError(f"TinierSSD expects {2 * n} heads, the session returned {len(heads)}")
        locs, scores = heads_to_priors(heads[:n], heads[n:], self.n_classes)
        if self.firmware_exact:
            fw, fh = self.card.input.size
            got = decode_tinierssd_firmware(locs, scores, self.fmaps, (fw, fh), self.post_process_revision)
            if got is None:
                return []
            b8, score = got
            sx, sy = meta["w"] / fw, meta["h"] / fh
            box = np.array([b8[0] * sx, b8[1] * sy, b8[2] * sx, b8[3] * sy], np.float32)
            return [Detection(box=box, score=score)]
        boxes, sc = decode_tinierssd(
            locs,
            scores,
            self.priors,
            min_score=self.score_threshold,
            max_overlap=self.nms_threshold,
            top_k=self.top_k,
        )
        scale = np.array([meta["w"], meta["h"], meta["w"], meta["h"]], np.float32)
        return [Detection(box=b * scale, score=float(s)) for b, s in zip(boxes, sc)]


def ai8x_faceid_crop(
    image: np.ndarray,
    box: np.ndarray,
    landmarks: np.ndarray | None = None,
    size: tuple[int, int] = (120, 160),
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
    crop = Image.fromarray(image).crop(
        (round(cx - w / 2), round(cy - h / 2), round(cx + w / 2), round(cy + h / 2))
    )
    return np.asarray(crop.resize(size, Image.BILINEAR))


def rgb565_quantize(image: np.ndarray) -> np.ndarray:
    """RGB888 → the values the firmware feeds from an RGB565 camera frame: ``r & 0xF8``,
    ``g & 0xFC``, ``b & 0xF8`` (the 5/6/5 bits at the top of each byte, low bits zero)."""
    img = np.asarray(image)
    if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
        raise ConfigError(f"expected an HxWx3 uint8 RGB image, got {img.dtype} {img.shape}")
    return img & np.array([0xF8, 0xFC, 0xF8], np.uint8)


def firmware_frame(image: np.ndarray, size: tuple[int, int] = FIRMWARE_FRAME) -> np.ndarray:
    """The demo firmware's camera frame for a host image: resized (bilinear) to ``size`` (w, h)
    when it is another size, then reduced to RGB565 depth (:func:`rgb565_quantize`)."""
    return rgb565_quantize(resize(np.asarray(image), size))


def _check_revision(revision: str) -> bool:
    """True for the revision with float casts (``0241c69``), False for the double one (``f631747``)."""
    if revision not in POST_PROCESS_REVISIONS:
        raise ConfigError(
            f"unknown post_process.c revision {revision!r}; known: {', '.join(POST_PROCESS_REVISIONS)}"
        )
    return revision == "0241c69"


def _firmware_prior(
    k: int, fmaps: Sequence[Sequence[Any]], revision: str = DEFAULT_POST_PROCESS
) -> np.ndarray:
    """Prior ``k`` (cx, cy, w, h) computed as ``get_cxcy`` does: float32 centre; sizes
    ``scale * sqrt(ar)`` in double stored as float (``f631747``), or
    ``scale * (float)sqrt(ar)`` in float (``0241c69``); clamped to 0..1."""
    floats = _check_revision(revision)
    for rows, cols, scale, ratios in fmaps:
        n = int(rows) * int(cols) * len(ratios)
        if k < n:
            rel, ar = divmod(k, len(ratios))
            cy, cx = divmod(rel, int(cols))
            sc, r = np.float32(scale), float(np.float32(ratios[ar]))
            if floats:
                sq = np.float32(np.sqrt(r))
                w, h = np.float32(sc * sq), np.float32(sc / sq)
            else:
                w, h = np.float32(float(sc) * np.sqrt(r)), np.float32(float(sc) / np.sqrt(r))
            p = np.array(
                [np.float32(cx + 0.5) / np.float32(cols), np.float32(cy + 0.5) / np.float32(rows), w, h],
                np.float32,
            )
            return np.clip(p, np.float32(0), np.float32(1))
        k -= n
    raise ConfigError(f"prior {k} beyond the feature maps")


def decode_tinierssd_firmware(
    locs: np.ndarray,
    scores: np.ndarray,
    fmaps: Sequence[Sequence[Any]] = DEFAULT_FMAPS,
    frame: tuple[int, int] = FIRMWARE_FRAME,
    revision: str = DEFAULT_POST_PROCESS,
) -> tuple[np.ndarray, float] | None:
    """Decode like the demo firmware's ``post_process.c`` at ``revision``: one box or ``None``.

    ``locs`` ``[P,4]`` and ``scores`` ``[P,2]`` int8 (background, face) in prior order. Returns the
    integer box ``[x1, y1, x2, y2]`` in ``frame`` pixels (``(uint8)(frame_w·x)`` after clamping to
    0..1) and the face score (``uint16 / 65536``). The revisions differ only in float precision
    (:data:`POST_PROCESS_REVISIONS`): ``f631747`` uses ``exp()``/``sqrt()`` results as double,
    ``0241c69`` casts each to float first (softmax sum, prior sizes, box sizes).
    """
    floats = _check_revision(revision)
    n_pri = sum(int(r) * int(c) * len(a) for r, c, _s, a in fmaps)
    cls = np.asarray(scores, np.int64)
    if cls.ndim != 2 or cls.shape[1] != 2 or cls.shape[0] != n_pri:
        raise ConfigError(f"firmware decoding takes [P,2] scores for {n_pri} priors, got {cls.shape}")
    bg, fc = cls[:, 0], cls[:, 1]
    e_bg, e_fc = np.exp(bg / 128.0), np.exp(fc / 128.0)
    if floats:  # sum += (float)exp(...); 65536. * (float)exp(...) / sum
        e_bg, e_fc = e_bg.astype(np.float32).astype(np.float64), e_fc.astype(np.float32).astype(np.float64)
    # float sum += exp(...) over the three classes (the third is an unwritten 0 → exp(0) = 1); each
    # addition is rounded to float (exact double sum of a float and a float-or-double, then rounded)
    ssum = (np.float64(0) + e_bg).astype(np.float32)
    ssum = (ssum.astype(np.float64) + e_fc).astype(np.float32)
    ssum = (ssum.astype(np.float64) + 1.0).astype(np.float32)
    q = np.floor(65536.0 * e_fc / ssum.astype(np.float64))
    q = np.where(fc >= bg, np.minimum(q, 65535), 0).astype(np.int64)
    q[q < _FW_MIN_CLASS_SCORE] = -1
    if q.max() < 0:
        return None
    k = int(np.argmax(q))  # first prior with the largest score, as the strict ">" insertion keeps it
    p = _firmware_prior(k, fmaps, revision)
    g = np.asarray(locs, np.float32).reshape(-1, 4)[k] / np.float32(128.0)
    cx = p[0] + g[0] * p[2] / np.float32(10)
    cy = p[1] + g[1] * p[3] / np.float32(10)
    ew = np.exp(np.float64(g[2] / np.float32(5)))
    eh = np.exp(np.float64(g[3] / np.float32(5)))
    if floats:  # (float)exp(...) * float
        w, h = np.float32(np.float32(ew) * p[2]), np.float32(np.float32(eh) * p[3])
    else:  # double exp × float, stored as float
        w, h = np.float32(ew * np.float64(p[2])), np.float32(eh * np.float64(p[3]))
    xy = np.clip(np.array([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], np.float32), 0.0, 1.0)
    fw, fh = frame
    box = np.trunc(xy * np.array([fw, fh, fw, fh], np.float32)).astype(np.int64)
    return box, float(q[k]) / 65536.0


def firmware_box(
    box: np.ndarray, image_size: tuple[int, int], frame: tuple[int, int] = FIRMWARE_FRAME
) -> np.ndarray:
    """A box in image pixels (``image_size`` = w, h) → the firmware's integer box in frame pixels.

    Inverse of scaling a firmware box to the image; ``1e-3`` absorbs that scaling's float error.
    """
    w, h = image_size
    fw, fh = frame
    b = np.asarray(box, np.float64) / np.array([w, h, w, h]) * np.array([fw, fh, fw, fh])
    return np.trunc(np.clip(b + 1e-3, 0, [fw, fh, fw, fh])).astype(np.int64)


def firmware_faceid_crop(
    frame: np.ndarray, box: np.ndarray, size: tuple[int, int] = (120, 160)
) -> np.ndarray:
    """The FaceID input as ``faceID.c`` samples it from the frame: ``size`` (w, h) pixels of the
    integer ``box`` (frame pixels), nearest neighbour, stretched to ``size`` (aspect not kept)."""
    x1, y1, x2, y2 = (int(v) for v in box)
    bw, bh = (x2 - x1) & 0xFF, (y2 - y1) & 0xFF  # uint8_t box_width / box_height
    if bw == 0 or bh == 0:
        raise ConfigError(f"empty face box {tuple(box)}")
    ow, oh = size
    yi = np.floor(np.arange(oh, dtype=np.float32) / np.float32(oh) * np.float32(bh) + 0.5).astype(np.int64)
    xj = np.floor(np.arange(ow, dtype=np.float32) / np.float32(ow) * np.float32(bw) + 0.5).astype(np.int64)
    rows = y1 + np.minimum(yi, bh - 1)
    cols = x1 + np.minimum(xj, bw - 1)
    fh, fw = frame.shape[:2]
    if rows.max() >= fh or cols.max() >= fw or min(x1, y1) < 0:
        raise ConfigError(f"face box {tuple(box)} outside the {fw}x{fh} frame")
    return np.ascontiguousarray(frame[rows[:, None], cols[None, :]])


def ai8x_faceid_crop_firmware(
    image: np.ndarray,
    box: np.ndarray,
    landmarks: np.ndarray | None = None,
    size: tuple[int, int] = (120, 160),
) -> np.ndarray:
    """Aligner ``ai8x-faceid-firmware``: :func:`firmware_frame` of the image, the box as the
    firmware's integer frame box, :func:`firmware_faceid_crop`."""
    h, w = image.shape[:2]
    return firmware_faceid_crop(firmware_frame(image), firmware_box(box, (w, h)), size)


def ai8x_faceid112_crop(
    image: np.ndarray, box: np.ndarray, landmarks: np.ndarray | None = None
) -> np.ndarray:
    """Aligner ``ai8x-faceid-112``: :func:`ai8x_faceid_crop` to 112×112 (box widened to a square)."""
    return ai8x_faceid_crop(image, box, landmarks, size=(112, 112))


def ai8x_faceid112_crop_firmware(
    image: np.ndarray, box: np.ndarray, landmarks: np.ndarray | None = None
) -> np.ndarray:
    """Aligner ``ai8x-faceid-112-firmware``: the faceid_112 demo's crop (faceID.c with
    ``WIDTH_ID`` = ``HEIGHT_ID`` = 112): :func:`ai8x_faceid_crop_firmware` to 112×112."""
    return ai8x_faceid_crop_firmware(image, box, landmarks, size=(112, 112))
