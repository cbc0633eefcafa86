"""Throughput of the converted dlib face-recognition ResNet on ONNX Runtime CPU.

Measures ms per crop with one intra-op thread (so ms per crop = ms·core per crop) at
batch 1 and batch 32 on real dlib crops (``../shared/reference/lfw_dlib_chips200.npz``)
and reports the ratio to dlib's own speed (≈ 65 ms·core per crop measured for dlib
20.0.1 on this machine class, from the issue).

Stage ``dlib-embedder`` of ``facesdk bench`` (:mod:`facesdk_bench.stages`)::

    facesdk bench --config benchmarks/configs/dlib-embedder.yaml
"""

from __future__ import annotations

import logging
import os
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np

from facesdk import zoo
from facesdk.image import to_tensor

log = logging.getLogger(__name__)

DLIB_MS_CORE_PER_CROP = 65.0


def bench(shared: Path, repeats: int = 5, batches: tuple[int, ...] = (1, 32)) -> dict[str, Any]:
    """Median ms per crop (1 thread) for each batch size, plus parity against dlib."""
    import onnxruntime as ort
    from tqdm.auto import tqdm

    os.environ.setdefault("FACESDK_MODEL_MIRROR", str(shared / "models"))
    path = zoo.fetch("dlib-resnet-v1", "onnx")
    card = zoo.get_card("dlib-resnet-v1")
    z = np.load(shared / "reference" / "lfw_dlib_chips200.npz")
    s = card.input
    x = to_tensor(z["chips"], layout=s.layout, color=s.color, mean=s.mean, std=s.std, dtype=s.dtype)
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    y = np.concatenate([sess.run(None, {"input": x[i : i + 32]})[0] for i in range(0, len(x), 32)])
    res: dict[str, Any] = {"max_abs_diff_vs_dlib": float(np.abs(y - z["descriptors"]).max()), "crops": len(x),
                           "onnxruntime": ort.__version__, "cpu": platform.processor() or platform.machine()}
    for b in batches:
        n_crops = 64 if b == 1 else 128
        sess.run(None, {"input": x[:b]})  # warm-up
        per_crop = []
        for _ in tqdm(range(repeats), desc=f"batch {b}", leave=False):
            t0 = time.perf_counter()
            for i in range(0, n_crops, b):
                j = i % (len(x) - b + 1)
                sess.run(None, {"input": x[j : j + b]})
            per_crop.append((time.perf_counter() - t0) * 1000 / n_crops)
        ms = float(np.median(per_crop))
        res[f"ms_core_per_crop_b{b}"] = ms
        res[f"speedup_vs_dlib_b{b}"] = DLIB_MS_CORE_PER_CROP / ms
    return res


def to_markdown(res: dict[str, Any]) -> str:
    """The RESULTS.md table: ms·core per crop and speed-up vs dlib per batch size, and the parity line."""
    lines = ["| batch | ms·core per crop | speed vs dlib (≈ 65 ms·core per crop) |", "|---|---|---|"]
    for k, v in res.items():
        if k.startswith("ms_core_per_crop_b"):
            b = k.rsplit("_b", 1)[1]
            lines.append(f"| {b} | {v:.1f} | {res[f'speedup_vs_dlib_b{b}']:.1f}× faster |")
    lines += ["", f"Parity: max abs difference to dlib's descriptors {res['max_abs_diff_vs_dlib']:.1e} "
              f"({res.get('crops', 200)} crops); onnxruntime {res.get('onnxruntime')}."]
    return "\n".join(lines)
