"""Speed of the MAX78000 face pipeline on the bit-exact emulator: faces/s of detect + embed.

Stage ``max7800x-speed`` of ``facesdk bench`` (:mod:`facesdk_bench.stages`)::

    facesdk bench --config benchmarks/configs/max7800x-speed.yaml

Each image (LFW, one face each) is detected with TinierSSD and its best face embedded with
ai85faceidnet, both emulated on the host CPU (BLAS limited to one thread). Reports the
median and the throughput over all images (image decode excluded).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm


def run(shared: Path, images: int = 50, backend: str = "max78000") -> dict[str, Any]:
    """Detect + embed every image (the best face), emulated; medians and throughput."""
    os.environ.setdefault("FACESDK_AI8X_DIR", str(shared / "ai8x"))
    import facesdk
    from facesdk.image import load_image

    files = sorted((shared / "data" / "lfw" / "images").glob("*/*_0001.jpg"))[:images]
    imgs = [load_image(f) for f in files]
    rec = facesdk.FaceRecognizer(detector="ai85-facedet-tinierssd", embedder="ai85-faceid", backend=backend)
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
    rec.close()
    return {
        "backend": backend,
        "images": len(imgs),
        "faces_embedded": n_faces,
        "detect_ms_median": round(1000 * float(np.median(det_t)), 1),
        "embed_ms_median": round(1000 * float(np.median([e for e in emb_t if e > 0])), 1),
        "faces_per_s": round(n_faces / total, 2),
        "images_per_s": round(len(imgs) / total, 2),
    }


def to_markdown(res: dict[str, Any]) -> str:
    """One line per figure."""
    return (f"{res['backend']} (emulator): {res['images']} images, {res['faces_embedded']} faces embedded; "
            f"detect median {res['detect_ms_median']} ms, embed median {res['embed_ms_median']} ms; "
            f"**{res['faces_per_s']} faces/s**, {res['images_per_s']} images/s")
