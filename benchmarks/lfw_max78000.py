"""LFW 10-fold verification accuracy of the MAX78000 FaceID pipeline (emulated, bit-exact).

Pipeline: TinierSSD (ai85) on the 250×250 LFW image → the detection nearest the centre →
ai8x FaceID crop (box widened to 3:4, 120×160) → ai85faceidnet on the emulator → host L2
normalisation → cosine similarity. Images without a detection fall back to the central
LFW box (70..180 × 60..190) and are counted. Standard protocol: per fold, the threshold
that maximises accuracy on the other nine folds.

Stage ``lfw-max78000`` of ``facesdk bench`` (:mod:`facesdk_bench.stages`)::

    facesdk bench --config benchmarks/configs/lfw-max78000.yaml
    facesdk bench --config benchmarks/configs/lfw-max78000-firmware.yaml

(options ``limit_folds``, ``backend``, ``firmware_exact``, ``embedder``). ``firmware_exact: true`` runs the
msdk demo firmware's steps instead (``facesdk.detect.tinierssd``):
RGB565 168×224 frame, one box decoded as ``post_process.c``, integer box, nearest-neighbour
stretch of the box to 120×160 (aligner ``ai8x-faceid-firmware``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm


def read_pairs(path: Path) -> list[tuple[str, str, bool]]:
    lines = path.read_text().splitlines()
    out = []
    for ln in lines[1:]:
        p = ln.split()
        if len(p) == 3:
            out.append((f"{p[0]}/{p[0]}_{int(p[1]):04d}.jpg", f"{p[0]}/{p[0]}_{int(p[2]):04d}.jpg", True))
        elif len(p) == 4:
            out.append((f"{p[0]}/{p[0]}_{int(p[1]):04d}.jpg", f"{p[2]}/{p[2]}_{int(p[3]):04d}.jpg", False))
    return out


def ten_fold(sims: np.ndarray, same: np.ndarray, folds: int = 10) -> tuple[float, float, float]:
    n = len(sims) // folds
    ths = np.unique(np.round(sims, 4))
    accs, chosen = [], []
    for k in range(folds):
        test = np.zeros(len(sims), bool)
        test[k * n : (k + 1) * n] = True
        train = ~test
        acc_tr = [np.mean((sims[train] >= t) == same[train]) for t in ths]
        t = ths[int(np.argmax(acc_tr))]
        chosen.append(t)
        accs.append(np.mean((sims[test] >= t) == same[test]))
    return float(np.mean(accs)), float(np.std(accs)), float(np.mean(chosen))


def run(
    shared: Path,
    limit_folds: int = 10,
    backend: str = "max78000",
    firmware_exact: bool = False,
    embedder: str = "ai85-faceid",
) -> dict[str, Any]:
    """Embed every image of the first ``limit_folds`` folds of pairs.txt, then the k-fold accuracy.

    ``embedder``: ai85-faceid (512-d, 120x160) or ai85-faceid-112 (64-d, msdk C project).
    """
    os.environ.setdefault("FACESDK_AI8X_DIR", str(shared / "ai8x"))
    import facesdk
    from facesdk.align import align_face
    from facesdk.image import load_image

    lfw = shared / "data" / "lfw"
    pairs = read_pairs(lfw / "pairs.txt")[: 600 * limit_folds]
    rec = facesdk.FaceRecognizer(detector="ai85-facedet-tinierssd", embedder=embedder, backend=backend)
    template = rec.template
    if firmware_exact:
        rec.detector.firmware_exact = True
        template = "ai8x-faceid-112-firmware" if embedder.endswith("112") else "ai8x-faceid-firmware"
    elif embedder.endswith("112"):
        template = "ai8x-faceid-112"
    emb: dict[str, np.ndarray] = {}
    fallback = 0
    for f in tqdm(sorted({p for a, b, _ in pairs for p in (a, b)}), desc="embed LFW"):
        img = load_image(lfw / "images" / f)
        dets = rec.detect(img)
        if dets:
            cy, cx = img.shape[0] / 2, img.shape[1] / 2
            d = min(
                dets,
                key=lambda d: ((d.box[0] + d.box[2]) / 2 - cx) ** 2 + ((d.box[1] + d.box[3]) / 2 - cy) ** 2,
            )
            box = d.box
        else:
            fallback += 1
            box = np.array([70, 60, 180, 190], np.float32)
        crop = align_face(img, box, None, template)
        emb[f] = rec.embed_crops(crop[None])[0]
    rec.close()
    sims = np.array([float(emb[a] @ emb[b]) for a, b, _ in pairs])
    same = np.array([s for _, _, s in pairs])
    mean, std, th = ten_fold(sims, same, limit_folds)
    return {
        "pipeline": f"ai85-facedet-tinierssd + {embedder} on "
        + backend
        + " (emulator)"
        + (", firmware-exact decode/crop" if firmware_exact else ""),
        "pairs": len(pairs),
        "accuracy": round(mean, 4),
        "std": round(std, 4),
        "mean_threshold": round(th, 4),
        "images": len(emb),
        "no_detection_fallback": fallback,
        "template": template,
        "embedding_size": int(next(iter(emb.values())).shape[0]),
    }


def to_markdown(res: dict[str, Any]) -> str:
    """One line: accuracy ± std over the folds, threshold, fallbacks."""
    return (
        f"{res['pipeline']}: {res['pairs']} pairs, accuracy **{100 * res['accuracy']:.2f} %** ± "
        f"{100 * res['std']:.2f}, mean fold threshold {res['mean_threshold']}, {res['images']} images "
        f"({res['no_detection_fallback']} without a detection used the central box)"
    )
