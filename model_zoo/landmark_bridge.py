"""Fit a landmark bridge card: detector 5 points → dlib's 5 points, on LFW DevTrain identities only.

Usage::

    python -m facesdk_zoo.landmark_bridge --detector mtcnn --out model_zoo/cards/bridge-mtcnn-dlib5.toml

Inputs: LFW images (``$FACESDK_SHARED/data/lfw``) and the dlib reference
landmarks (``reference/lfw_dlib_landmarks5.npz``, made by dlib's own shape
predictor). Only people listed in ``peopleDevTrain.txt`` are used, so the
bridge never sees DevTest identities; the LFW 10-fold numbers use it as a fixed,
pre-trained component (as dlib's own predictor is). The fit is ridge
least squares in the ArcFace-normalised frame (see ``facesdk.landmarks``).
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from facesdk.landmarks import bridge_features

log = logging.getLogger(__name__)


def fit_bridge(src: np.ndarray, dst: np.ndarray, ridge: float = 1e-3) -> np.ndarray:
    """Weights ``[2K, 11]`` mapping normalised 5-point features to target points (canonical frame)."""
    feats, targets = [], []
    for s, d in zip(src, dst):
        f, back = bridge_features(s)
        fwd = np.linalg.inv(np.vstack([back, [0, 0, 1]]))[:2]
        feats.append(f)
        targets.append((d @ fwd[:, :2].T + fwd[:, 2]).reshape(-1))
    x, y = np.asarray(feats), np.asarray(targets)
    reg = ridge * np.eye(x.shape[1])
    reg[-1, -1] = 0.0
    w = np.linalg.solve(x.T @ x + reg, x.T @ y)
    return w.T


def apply_bridge(weights: np.ndarray, src: np.ndarray) -> np.ndarray:
    """Apply a fitted bridge to one face's 5 points."""
    f, back = bridge_features(src)
    pts = (weights @ f).reshape(-1, 2)
    return pts @ back[:, :2].T + back[:, 2]


def _people(path: Path) -> set[str]:
    lines = path.read_text().split("\n")[1:]
    return {ln.split("\t")[0] for ln in lines if ln.strip()}


def collect(
    detector: str, shared: Path, people: set[str], limit: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Detector points and dlib points for LFW images of ``people`` (face nearest the centre)."""
    import facesdk

    ref = np.load(shared / "reference/lfw_dlib_landmarks5.npz")
    rec = facesdk.FaceRecognizer(detector=detector, backend="auto", embedder="mobilefacenet-sirius")
    src, dst = [], []
    idx = [i for i, p in enumerate(ref["paths"]) if str(p).split("/")[0] in people][:limit]
    for i in tqdm(idx, desc=f"{detector} on DevTrain"):
        img = facesdk.load_image(shared / "data/lfw/images" / str(ref["paths"][i]))
        dets = [d for d in rec.detect(img) if d.landmarks is not None]
        if not dets:
            continue
        c = np.array([img.shape[1] / 2, img.shape[0] / 2])
        d = min(dets, key=lambda d: float(np.sum(((d.box[:2] + d.box[2:]) / 2 - c) ** 2)))
        src.append(d.landmarks)
        dst.append(ref["landmarks"][i].astype(np.float64))
    return np.asarray(src, np.float64), np.asarray(dst, np.float64)


def card_toml(card_id: str, detector: str, weights: np.ndarray, n: int, rmse: float) -> str:
    description = (
        f"Linear bridge from {detector} 5-point landmarks to dlib's 5 points (eye corners, nose base); "
        f"fitted on {n} LFW DevTrain faces, RMSE {rmse:.2f} px on held-out DevTest faces"
    )
    rows = ",\n".join("  [" + ", ".join(f"{v:.8g}" for v in r) + "]" for r in weights)
    return f'''id = "{card_id}"
task = "landmarks"
family = "bridge"
description = "{description}"
license = "CC0-1.0"
homepage = "model_zoo/landmark_bridge.py"

[input]
size = [0, 0]

[params]
output = "dlib5"
detector = "{detector}"
weights = [
{rows}
]
'''


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--detector", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--id")
    ap.add_argument("--limit", type=int)
    ap.add_argument("--shared", default=os.environ.get("FACESDK_SHARED", "../shared"))
    a = ap.parse_args(argv)
    shared = Path(a.shared)
    os.environ.setdefault("FACESDK_MODEL_MIRROR", str(shared / "models"))
    src, dst = collect(a.detector, shared, _people(shared / "data/lfw/peopleDevTrain.txt"), a.limit)
    w = fit_bridge(src, dst)
    tsrc, tdst = collect(a.detector, shared, _people(shared / "data/lfw/peopleDevTest.txt"), 500)
    pred = np.stack([apply_bridge(w, s) for s in tsrc])
    rmse = float(np.sqrt(((pred - tdst) ** 2).sum(-1).mean()))
    log.warning("bridge %s: %d training faces, DevTest RMSE %.3f px", a.detector, len(src), rmse)
    Path(a.out).write_text(card_toml(a.id or f"bridge-{a.detector}-dlib5", a.detector, w, len(src), rmse))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
