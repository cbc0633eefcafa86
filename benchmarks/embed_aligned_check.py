"""Cross-template ``embed_aligned``: crops made for one embedder's template, embedded by the other's.

Stage ``embed-aligned`` of ``facesdk bench`` (:mod:`facesdk_bench.stages`)::

    facesdk bench --config benchmarks/configs/embed-aligned.yaml

For the first ``images`` LFW photos ``*_0001.jpg`` (sorted): the ArcFace 112×112 crop of the YuNet +
MobileFaceNet pipeline goes into the default dlib embedder (``embed_aligned(template="arcface112")``), and
the 150×150 dlib crop of the default pipeline goes into MobileFaceNet (``template="dlib150"``); each is
compared (cosine) with that embedder's own full pipeline on the same photo (its largest face).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

__all__ = ["run", "to_markdown"]


def _stats(v: list[float]) -> dict[str, float]:
    a = np.asarray(v, np.float64)
    return {
        "n": int(a.size),
        "min": round(float(a.min()), 4),
        "median": round(float(np.median(a)), 4),
        "max": round(float(a.max()), 4),
    }


def run(shared: Path, images: int = 12, progress: bool = True) -> dict[str, Any]:
    """Cosine of cross-template embeddings to the embedder's own pipeline, both directions."""
    os.environ.setdefault("FACESDK_MODEL_MIRROR", str(shared / "models"))
    import facesdk

    files = sorted((shared / "data" / "lfw" / "images").glob("*/*_0001.jpg"))[: int(images)]
    mfn = facesdk.FaceRecognizer(
        detector="yunet-2023mar", embedder="mobilefacenet-sirius", backend="onnxruntime"
    )
    dl = facesdk.FaceRecognizer(backend="onnxruntime")
    a2d: list[float] = []
    d2a: list[float] = []
    try:
        for f in tqdm(files, desc="embed-aligned", disable=not progress):
            img = mfn.load(f)
            dm = mfn.detect(img)
            dd = dl.detect(img)
            if not dm or not dd:
                continue
            m_face = max(dm, key=lambda d: d.width * d.height)
            d_face = max(dd, key=lambda d: d.width * d.height)
            arc = mfn.align(img, [m_face])
            dchip = dl.align(img, [d_face])
            a2d.append(float(dl.embed_aligned(arc, template="arcface112")[0] @ dl.embed_crops(dchip)[0]))
            d2a.append(float(mfn.embed_aligned(dchip, template="dlib150")[0] @ mfn.embed_crops(arc)[0]))
    finally:
        mfn.close()
        dl.close()
    return {
        "images": len(files),
        "faces": len(a2d),
        "arcface112_into_dlib": _stats(a2d),
        "dlib150_into_mobilefacenet": _stats(d2a),
        "pipelines": {
            "arcface112": "yunet-2023mar + mobilefacenet-sirius",
            "dlib150": "FaceRecognizer() default",
        },
    }


def to_markdown(res: dict[str, Any]) -> str:
    """One row per direction: min / median / max cosine to the embedder's own pipeline."""
    lines = ["| crops | into | faces | cosine min | median | max |", "|---|---|---|---|---|---|"]
    for key, (src, dst) in (
        ("arcface112_into_dlib", ("ArcFace 112 (YuNet)", "dlib ResNet")),
        ("dlib150_into_mobilefacenet", ("dlib 150 (default)", "MobileFaceNet")),
    ):
        s = res[key]
        lines.append(f"| {src} | {dst} | {s['n']} | {s['min']} | {s['median']} | {s['max']} |")
    return "\n".join(lines)
