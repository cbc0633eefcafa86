"""Speed of the MAX78000 face pipeline on the bit-exact emulator: faces/s of detect + embed.

Run::

    FACESDK_AI8X_DIR=../shared/ai8x python -m facesdk_bench.bench_max7800x --images 50

Each image (LFW, one face each) is detected with TinierSSD and its best face embedded with
ai85faceidnet, both emulated on the host CPU (BLAS limited to one thread). Reports the
median and the throughput over all images (image decode excluded).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shared", default=os.environ.get("FACESDK_SHARED", str(Path(__file__).resolve().parents[2] / "shared")))
    ap.add_argument("--images", type=int, default=50)
    ap.add_argument("--backend", default="max78000")
    args = ap.parse_args(argv)
    shared = Path(args.shared)
    os.environ.setdefault("FACESDK_AI8X_DIR", str(shared / "ai8x"))
    import facesdk
    from facesdk.image import load_image

    files = sorted((shared / "data" / "lfw" / "images").glob("*/*_0001.jpg"))[: args.images]
    imgs = [load_image(f) for f in files]
    rec = facesdk.FaceRecognizer(detector="ai85-facedet-tinierssd", embedder="ai85-faceid", backend=args.backend)
    rec.faces(imgs[0])  # warm-up
    det_t, emb_t, n_faces = [], [], 0
    t_all = time.perf_counter()
    for im in tqdm(imgs, desc="detect+embed"):
        t0 = time.perf_counter()
        dets = rec.detect(im)
        t1 = time.perf_counter()
        if dets:
            rec.embed_crops(rec.align(im, dets[:1]))
            n_faces += 1
        t2 = time.perf_counter()
        det_t.append(t1 - t0)
        emb_t.append(t2 - t1)
    total = time.perf_counter() - t_all
    res = {
        "backend": args.backend,
        "images": len(imgs),
        "faces_embedded": n_faces,
        "detect_ms_median": round(1000 * float(np.median(det_t)), 1),
        "embed_ms_median": round(1000 * float(np.median([e for e in emb_t if e > 0])), 1),
        "faces_per_s": round(n_faces / total, 2),
        "images_per_s": round(len(imgs) / total, 2),
    }
    print(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
