"""Detector latency and agreement with YuNet on the shared photos (ONNX Runtime CPU).

Per detector card: median milliseconds per image over ``--repeat`` runs (after
one warm-up), the ratio to YuNet, and agreement with YuNet's faces: recall (a
YuNet face matched by a detection with IoU > 0.5), extra detections (no YuNet
face within IoU 0.5) and mean landmark error over matched faces in units of
YuNet's interocular distance.

Stage ``detectors`` of ``facesdk bench`` (:mod:`facesdk_bench.stages`)::

    facesdk bench --config benchmarks/configs/detectors.yaml
"""

from __future__ import annotations

import logging
import os
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

log = logging.getLogger(__name__)

DETECTORS = ["yunet-2023mar", "blazeface-short", "blazeface-full", "mtcnn"]


def _shared() -> Path:
    repo = Path(__file__).resolve().parents[1]
    return Path(os.environ.get("FACESDK_SHARED", repo.parent / "shared")).resolve()


def _photos(root: Path) -> list[Path]:
    photos = root / "data" / "photos"
    files = [p for p in sorted(photos.rglob("*")) if p.suffix.lower() in (".jpg", ".jpeg", ".png")]
    return [p for p in files if p.name != "32bit.png"]


def run(detectors: list[str], threads: int, repeat: int) -> dict[str, Any]:
    """Time each detector on every photo and compare its faces with YuNet's."""
    import facesdk
    from facesdk.detect import iou
    from facesdk.image import load_image

    root = _shared()
    os.environ.setdefault("FACESDK_MODEL_MIRROR", str(root / "models"))
    images = {p.relative_to(root / "data" / "photos").as_posix(): load_image(p) for p in _photos(root)}
    results: dict[str, Any] = {"threads": threads, "repeat": repeat, "images": list(images), "detectors": {}}
    ref: dict[str, list[Any]] = {}
    for cid in detectors:
        rec = facesdk.FaceRecognizer(
            detector=cid,
            embedder="mobilefacenet-sirius",
            backend="onnxruntime",
            device="cpu",
            backend_options={"threads": threads},
        )
        det = rec.detector
        per_image_ms, found = [], {}
        for name, img in tqdm(images.items(), desc=cid, leave=False):
            det.detect(img)  # warm-up
            times = []
            for _ in range(repeat):
                t0 = time.perf_counter()
                out = det.detect(img)
                times.append((time.perf_counter() - t0) * 1000)
            per_image_ms.append(statistics.median(times))
            found[name] = out
        if cid == detectors[0]:
            ref = found
        matched = total = extra = 0
        lm_err: list[float] = []
        for name, out in found.items():
            r = ref[name]
            total += len(r)
            rb = np.stack([x.box for x in r]) if r else np.zeros((0, 4), np.float32)
            used: set[int] = set()
            for d in out:
                ov = iou(d.box, rb) if len(rb) else np.zeros(0)
                j = int(np.argmax(ov)) if ov.size else -1
                if j < 0 or ov[j] <= 0.5 or j in used:
                    extra += 1
                    continue
                used.add(j)
                matched += 1
                y = r[j]
                if d.landmarks is not None and y.landmarks is not None:
                    eye = float(np.linalg.norm(y.landmarks[1] - y.landmarks[0]))
                    lm_err.append(float(np.linalg.norm(d.landmarks - y.landmarks, axis=1).mean() / eye))
        results["detectors"][cid] = {
            "ms_per_image": round(float(np.mean(per_image_ms)), 2),
            "ms_by_image": {n: round(t, 2) for n, t in zip(images, per_image_ms)},
            "faces": sum(len(v) for v in found.values()),
            "recall_vs_ref": round(matched / max(total, 1), 3),
            "extra_vs_ref": extra,
            "landmark_err_iod": round(float(np.mean(lm_err)), 3) if lm_err else None,
        }
        rec.close()
    base = results["detectors"][detectors[0]]["ms_per_image"]
    for v in results["detectors"].values():
        v["ratio_to_ref"] = round(v["ms_per_image"] / base, 2)
    return results


def to_markdown(res: dict[str, Any]) -> str:
    """A results table."""
    lines = [
        f"{len(res['images'])} photos, ONNX Runtime CPU, threads={res['threads']}, median of "
        f"{res['repeat']} runs per image",
        "",
        "| detector | ms/image (mean) | × YuNet | faces | recall vs YuNet | extra | landmark err (IOD) |",
        "|---|---|---|---|---|---|---|",
    ]
    for cid, v in res["detectors"].items():
        lm = "" if v["landmark_err_iod"] is None else f"{v['landmark_err_iod']:.3f}"
        lines.append(
            f"| {cid} | {v['ms_per_image']:.1f} | {v['ratio_to_ref']:.2f} | {v['faces']} | "
            f"{v['recall_vs_ref']:.2f} | "
            f"{v['extra_vs_ref']} | {lm} |"
        )
    return "\n".join(lines)
