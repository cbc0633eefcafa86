"""LFW 10-fold verification accuracy of the MAX78000 FaceID pipeline (emulated, bit-exact).

Pipeline: TinierSSD (ai85) on the 250×250 LFW image → the detection nearest the centre →
ai8x FaceID crop (box widened to 3:4, 120×160) → ai85faceidnet on the emulator → host L2
normalisation → cosine similarity. Images without a detection fall back to the central
LFW box (70..180 × 60..190) and are counted. Standard protocol: per fold, the threshold
that maximises accuracy on the other nine folds.

Run::

    FACESDK_AI8X_DIR=../shared/ai8x python -m facesdk_bench.lfw_max78000 [--limit-folds N] [--firmware-exact]
        [--embedder ai85-faceid-112]

``--firmware-exact`` runs the msdk demo firmware's steps instead (``facesdk.detect.tinierssd``):
RGB565 168×224 frame, one box decoded as ``post_process.c``, integer box, nearest-neighbour
stretch of the box to 120×160 (aligner ``ai8x-faceid-firmware``).
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shared", default=os.environ.get("FACESDK_SHARED", str(Path(__file__).resolve().parents[2] / "shared")))
    ap.add_argument("--limit-folds", type=int, default=10)
    ap.add_argument("--backend", default="max78000")
    ap.add_argument("--firmware-exact", action="store_true", help="the demo firmware's decode and crop")
    ap.add_argument("--embedder", default="ai85-faceid",
                    help="ai85-faceid (512-d, 120x160) or ai85-faceid-112 (64-d, msdk C project)")
    args = ap.parse_args(argv)
    shared = Path(args.shared)
    os.environ.setdefault("FACESDK_AI8X_DIR", str(shared / "ai8x"))
    import facesdk
    from facesdk.image import load_image

    lfw = shared / "data" / "lfw"
    pairs = read_pairs(lfw / "pairs.txt")[: 600 * args.limit_folds]
    rec = facesdk.FaceRecognizer(detector="ai85-facedet-tinierssd", embedder=args.embedder,
                                 backend=args.backend)
    template = rec.template
    if args.firmware_exact:
        rec.detector.firmware_exact = True
        template = "ai8x-faceid-112-firmware" if args.embedder.endswith("112") else "ai8x-faceid-firmware"
    elif args.embedder.endswith("112"):
        template = "ai8x-faceid-112"
    emb: dict[str, np.ndarray] = {}
    fallback = 0
    for f in tqdm(sorted({p for a, b, _ in pairs for p in (a, b)}), desc="embed LFW"):
        img = load_image(lfw / "images" / f)
        dets = rec.detect(img)
        if dets:
            cy, cx = img.shape[0] / 2, img.shape[1] / 2
            d = min(dets, key=lambda d: ((d.box[0] + d.box[2]) / 2 - cx) ** 2 + ((d.box[1] + d.box[3]) / 2 - cy) ** 2)
            box = d.box
        else:
            fallback += 1
            box = np.array([70, 60, 180, 190], np.float32)
        from facesdk.align import align_face

        crop = align_face(img, box, None, template)
        emb[f] = rec.embed_crops(crop[None])[0]
    sims = np.array([float(emb[a] @ emb[b]) for a, b, _ in pairs])
    same = np.array([s for _, _, s in pairs])
    mean, std, th = ten_fold(sims, same, args.limit_folds)
    res = {"pipeline": f"ai85-facedet-tinierssd + {args.embedder} on " + args.backend + " (emulator)"
           + (", firmware-exact decode/crop" if args.firmware_exact else ""),
           "pairs": len(pairs), "accuracy": round(mean, 4), "std": round(std, 4), "mean_threshold": round(th, 4),
           "images": len(emb), "no_detection_fallback": fallback, "template": template,
           "embedding_size": int(next(iter(emb.values())).shape[0])}
    print(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
