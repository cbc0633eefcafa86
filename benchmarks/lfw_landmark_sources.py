"""Which 5-point source gives the dlib embedder the best LFW accuracy? (issue: default pipeline)

For each variant, every LFW pairs.txt image is detected (face nearest the centre; the median LFW box
when nothing is found), aligned to dlib's 150×150 crop, embedded by the converted dlib ResNet on
ONNX Runtime, and scored with the 10-fold protocol (threshold from the other nine folds), with and
without flip test-time augmentation.

Variants:
  dlibref          dlib's own landmarks (reference/lfw_dlib_landmarks5.npz: dlib's HOG detector + shape
                     predictor)
  <detector>:sp    the detector's 5 points place a dlib-style box; dlib's shape predictor runs in it
                     (facesdk default)
  <detector>:box   the shape predictor runs in the detector's box
  <detector>:spN   as ``:sp``, then the shape predictor runs N-1 more times, each in the box placed from
                     the eye centres (mid-points of the eye corners) of its previous output

Options besides ``variants``: ``shifts`` (px; also report flip + four crops shifted by ±shifts px
horizontally and vertically, edges replicated, all embeddings summed and L2-normalised) and
``mean_center`` (also report the plain score after subtracting the mean descriptor of all images).

Stage ``landmark-sources`` of ``facesdk bench`` (:mod:`facesdk_bench.stages`)::

    facesdk bench --config benchmarks/configs/landmark-sources.yaml
    facesdk bench --config benchmarks/configs/landmark-sources-blazeface.yaml
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from facesdk.errors import ConfigError

log = logging.getLogger(__name__)

MEDIAN_LFW_BOX = np.array([67, 80, 175, 187], np.float32)


def parse_variant(variant: str) -> tuple[str, str, int]:
    """``dlibref`` → (dlibref, ref, 1); ``DET:sp``/``DET:spN``/``DET:box`` → (DET, sp|box, N)."""
    if variant == "dlibref":
        return "dlibref", "ref", 1
    det, sep, mode = variant.partition(":")
    rounds = 1
    if mode.startswith("sp") and mode[2:].isdigit():
        rounds, mode = int(mode[2:]), "sp"
    if not det or not sep or mode not in ("sp", "box") or rounds < 1:
        raise ConfigError(f"landmark-sources: bad variant {variant!r} (dlibref, DETECTOR:sp, DETECTOR:spN, "
                          "DETECTOR:box)")
    return det, mode, rounds


def iterated_sp_crop(img: np.ndarray, box: np.ndarray, landmarks: np.ndarray, rounds: int) -> np.ndarray:
    """dlib's crop after ``rounds`` shape-predictor passes, each later one in the box placed from the
    previous output's eye centres (:func:`facesdk.dlib.crop.dlib_box_from_core5`)."""
    from facesdk.dlib.crop import (
        CORE5_TO_DLIB5_EYES,
        dlib_box_from_core5,
        dlib_face_crop,
        dlib_predictor_rect,
    )
    from facesdk.dlib.shape_predictor import load_default

    sp = load_default()
    shape = sp.predict(img, dlib_predictor_rect(sp, box, landmarks))
    for _ in range(rounds - 1):
        core = np.array(landmarks, np.float64).copy()
        for k in (0, 1):
            core[k] = np.asarray(shape, np.float64)[list(CORE5_TO_DLIB5_EYES[k])].mean(0)
        shape = sp.predict(img, dlib_box_from_core5(core, sp.initial_shape))
    return dlib_face_crop(img, shape, 150, 0.25)


def shifted(crops: np.ndarray, dx: int, dy: int) -> np.ndarray:
    """Crops moved by (dx, dy) px, the edge rows/columns replicated."""
    n, h, w, _ = crops.shape
    ys = np.clip(np.arange(h) - dy, 0, h - 1)
    xs = np.clip(np.arange(w) - dx, 0, w - 1)
    return np.ascontiguousarray(crops[:, ys][:, :, xs])


def crops_for(variant: str, keys: list[str], root: Path, shared: Path) -> tuple[np.ndarray, int]:
    """dlib crops of every image for one landmark-source variant, and the no-detection count."""
    import facesdk
    from facesdk.dlib.crop import dlib150_aligner, dlib_face_crop

    crops = np.zeros((len(keys), 150, 150, 3), np.uint8)
    misses = 0
    if variant == "dlibref":
        ref = np.load(shared / "reference/lfw_dlib_landmarks5.npz")
        where = {str(p): i for i, p in enumerate(ref["paths"])}
        for i, k in enumerate(tqdm(keys, desc=variant, mininterval=10)):
            img = facesdk.load_image(root / "images" / k)
            crops[i] = dlib_face_crop(img, ref["landmarks"][where[k]].astype(np.float64))
        return crops, 0
    det_id, mode, rounds = parse_variant(variant)
    rec = facesdk.FaceRecognizer(
        detector=det_id, embedder="dlib-resnet-v1", backend="onnxruntime", backend_options={"threads": 1}
    )
    for i, k in enumerate(tqdm(keys, desc=variant, mininterval=10)):
        img = facesdk.load_image(root / "images" / k)
        dets = rec.detect(img)
        if not dets:
            misses += 1
            crops[i] = dlib150_aligner(img, MEDIAN_LFW_BOX, None)
            continue
        c = np.array([img.shape[1] / 2, img.shape[0] / 2])
        d = min(dets, key=lambda d: float(np.sum(((d.box[:2] + d.box[2:]) / 2 - c) ** 2)))
        if mode == "sp" and rounds > 1 and d.landmarks is not None:
            crops[i] = iterated_sp_crop(img, d.box, d.landmarks, rounds)
        else:
            crops[i] = dlib150_aligner(img, d.box, d.landmarks if mode != "box" else None)
    rec.close()
    return crops, misses


def run(
    shared: Path, variants: list[str], shifts: int = 0, mean_center: bool = False
) -> list[dict[str, Any]]:
    """Accuracy (plain and flip TTA; optionally shifted-crop TTA and mean-centred) of dlib's crop for each
    landmark-source variant."""
    for v in variants:
        parse_variant(v)
    import facesdk
    from facesdk.gallery import l2_normalize
    from facesdk_bench.datasets import LFWDataset
    from facesdk_bench.metrics import kfold_verification

    root = shared / "data/lfw"
    pairs = LFWDataset(root).pairs("pairs")
    keys = pairs.images()
    idx = {k: i for i, k in enumerate(keys)}
    ia = np.array([idx[k] for k in pairs.a])
    ib = np.array([idx[k] for k in pairs.b])
    results: list[dict[str, Any]] = []
    rec = facesdk.FaceRecognizer(
        embedder="dlib-resnet-v1", backend="onnxruntime", tta="none", backend_options={"threads": 2}
    )
    for v in variants:
        crops, misses = crops_for(v, keys, root, shared)
        e = rec.embed_crops(crops)
        ef = rec.embed_crops(np.ascontiguousarray(crops[:, :, ::-1]))
        row: dict[str, Any] = {"variant": v, "no_detection": misses}
        scored = [("plain", e), ("flip", l2_normalize(e + ef))]
        if shifts:
            acc = e + ef
            for dx, dy in ((shifts, 0), (-shifts, 0), (0, shifts), (0, -shifts)):
                acc = acc + rec.embed_crops(shifted(crops, dx, dy))
            scored.append(("flip_shift", l2_normalize(acc)))
        if mean_center:
            scored.append(("plain_mean_centred", l2_normalize(e - e.mean(0))))
        for name, E in scored:
            r = kfold_verification((E[ia] * E[ib]).sum(1), pairs.same, pairs.folds)
            row[name] = {"mean": round(r.mean * 100, 3), "std": round(r.std * 100, 3)}
        log.info("%s", row)
        results.append(row)
    rec.close()
    return results


def to_markdown(results: list[dict[str, Any]]) -> str:
    """The RESULTS.md table."""
    extra = [k for k in ("flip_shift", "plain_mean_centred") if results and k in results[0]]
    names = {"flip_shift": "flip + 4 shifts", "plain_mean_centred": "plain, mean-centred"}
    lines = ["| 5-point source for the crop | no detection | plain | flip TTA |"
             + "".join(f" {names[k]} |" for k in extra), "|---|---|---|---|" + "---|" * len(extra)]
    for r in results:
        cells = [f"{r[k]['mean']:.2f} % ± {r[k]['std']:.2f}" for k in ("plain", "flip", *extra)]
        lines.append(f"| {r['variant']} | {r['no_detection']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
