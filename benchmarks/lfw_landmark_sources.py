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

Stage ``landmark-sources`` of ``facesdk bench`` (:mod:`facesdk_bench.stages`)::

    facesdk bench --config benchmarks/configs/landmark-sources.yaml
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

log = logging.getLogger(__name__)

MEDIAN_LFW_BOX = np.array([67, 80, 175, 187], np.float32)


def crops_for(variant: str, keys: list[str], root: Path, shared: Path) -> tuple[np.ndarray, int]:
    """dlib crops of every image for one landmark-source variant, and the no-detection count."""
    import facesdk
    from facesdk.dlib_crop import dlib150_aligner, dlib_face_crop

    crops = np.zeros((len(keys), 150, 150, 3), np.uint8)
    misses = 0
    if variant == "dlibref":
        ref = np.load(shared / "reference/lfw_dlib_landmarks5.npz")
        where = {str(p): i for i, p in enumerate(ref["paths"])}
        for i, k in enumerate(tqdm(keys, desc=variant, mininterval=10)):
            img = facesdk.load_image(root / "images" / k)
            crops[i] = dlib_face_crop(img, ref["landmarks"][where[k]].astype(np.float64))
        return crops, 0
    det_id, _, mode = variant.partition(":")
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
        crops[i] = dlib150_aligner(img, d.box, d.landmarks if mode != "box" else None)
    return crops, misses


def run(shared: Path, variants: list[str]) -> list[dict[str, Any]]:
    """Accuracy (plain and flip TTA) of dlib's crop for each landmark-source variant."""
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
        for name, E in (("plain", e), ("flip", l2_normalize(e + ef))):
            r = kfold_verification((E[ia] * E[ib]).sum(1), pairs.same, pairs.folds)
            row[name] = {"mean": round(r.mean * 100, 3), "std": round(r.std * 100, 3)}
        log.info("%s", row)
        results.append(row)
    rec.close()
    return results


def to_markdown(results: list[dict[str, Any]]) -> str:
    """The RESULTS.md table."""
    lines = ["| 5-point source for the crop | no detection | plain | flip TTA |", "|---|---|---|---|"]
    for r in results:
        lines.append(
            f"| {r['variant']} | {r['no_detection']} | {r['plain']['mean']:.2f} % ± {r['plain']['std']:.2f} "
            f"| {r['flip']['mean']:.2f} % ± {r['flip']['std']:.2f} |"
        )
    return "\n".join(lines)
