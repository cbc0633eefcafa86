"""Detection recall of the MAX78000 TinierSSD in firmware framing vs photo mode, against YuNet.

For every image, YuNet (``yunet-2023mar``, onnxruntime, score >= 0.6) gives the reference faces; a
reference face counts as found when a TinierSSD box overlaps it with IoU >= 0.3 (TinierSSD boxes are
looser than YuNet's). Firmware framing: the whole image stretched to 168x224 (the demo's camera view,
all boxes after NMS). Photo mode: 3:4 windows at several scales, each through TinierSSD at its own
scale (:class:`facesdk.detect.tinierssd.TinierSSDDetector`, ``photo_mode``). Extra boxes (no YuNet
face) are counted too. Also the identification of the knn_examples test photos with a gallery of
the train photos (ai85-faceid-112 embeddings; photo-mode boxes vs YuNet boxes).

Run::

    FACESDK_AI8X_DIR=../shared/ai8x python -m facesdk_bench.photo_mode_max78000 [--lfw 100]
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    u = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / u if u > 0 else 0.0


def _match(ref: list, got: list, thr: float = 0.3) -> tuple[int, int]:
    used: set[int] = set()
    found = 0
    for r in ref:
        best, bi = 0.0, -1
        for i, g in enumerate(got):
            if i not in used:
                v = _iou(r.box, g.box)
                if v > best:
                    best, bi = v, i
        if best >= thr:
            found += 1
            used.add(bi)
    return found, len(got) - len(used)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--shared",
        default=os.environ.get("FACESDK_SHARED", str(Path(__file__).resolve().parents[2] / "shared")),
    )
    ap.add_argument(
        "--lfw", type=int, default=0, help="also this many LFW images (first of pairs.txt, sorted)"
    )
    ap.add_argument(
        "--min-score", type=float, default=None, help="photo-mode score threshold (default: card's)"
    )
    args = ap.parse_args(argv)
    shared = Path(args.shared)
    os.environ.setdefault("FACESDK_AI8X_DIR", str(shared / "ai8x"))
    os.environ.setdefault("FACESDK_MODEL_MIRROR", str(shared / "models"))  # YuNet from ../shared/models
    import facesdk
    from facesdk import zoo
    from facesdk.backend import Artifact
    from facesdk.detect import detector_class
    from facesdk.image import load_image
    from facesdk.plugins import get_backend

    card = zoo.get_card("yunet-2023mar")
    yunet = detector_class(card.family)(
        card, get_backend("onnxruntime"), {"main": Artifact(zoo.fetch(card, "onnx"), "onnx", card)}, threads=1
    )
    rec = facesdk.FaceRecognizer(backend="max78000", embedder="ai85-faceid-112")
    det = rec.detector
    if args.min_score is not None:
        det.photo_min_score = args.min_score
    photos = sorted(
        p for p in (shared / "data" / "photos").rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png")
    )
    sets = {"photos": photos}
    if args.lfw:
        lines = (shared / "data" / "lfw" / "pairs.txt").read_text().splitlines()[1:]
        names = sorted(
            {f"{p[0]}/{p[0]}_{int(p[1]):04d}.jpg" for p in (ln.split() for ln in lines) if len(p) == 3}
        )
        sets["lfw"] = [shared / "data" / "lfw" / "images" / n for n in names[: args.lfw]]
    res: dict = {
        "pipeline": "ai85-facedet-tinierssd on max78000 (emulator) vs yunet-2023mar (onnxruntime)",
        "photo_mode": None,
    }
    for name, files in sets.items():
        tot = {"yunet_faces": 0, "firmware_found": 0, "firmware_extra": 0, "photo_found": 0, "photo_extra": 0}
        for f in tqdm(files, desc=name):
            img = load_image(f)
            ref = [d for d in yunet.detect(img) if d.score >= 0.6]
            det.photo_mode = False
            fw = det.detect(img)
            det.photo_mode = True
            ph = det.detect(img)
            res["photo_mode"] = det.describe_mode()
            a, b = _match(ref, fw)
            c, e = _match(ref, ph)
            tot["yunet_faces"] += len(ref)
            tot["firmware_found"] += a
            tot["firmware_extra"] += b
            tot["photo_found"] += c
            tot["photo_extra"] += e
        n = max(1, tot["yunet_faces"])
        tot["images"] = len(files)
        tot["firmware_recall"] = round(tot["firmware_found"] / n, 4)
        tot["photo_recall"] = round(tot["photo_found"] / n, 4)
        res[name] = tot
    print(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
