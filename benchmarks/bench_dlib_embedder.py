"""Throughput of the converted dlib face-recognition ResNet on ONNX Runtime CPU.

Measures ms per crop with one intra-op thread (so ms per crop = ms·core per crop) at
batch 1 and batch 32 on real dlib crops (``../shared/reference/lfw_dlib_chips200.npz``)
and reports the ratio to dlib's own speed (≈ 65 ms·core per crop measured for dlib
20.0.1 on this machine class, from the issue).

Usage::

    .venv/bin/python -m facesdk_bench.bench_dlib_embedder [--shared ../shared] [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import time
from pathlib import Path

import numpy as np

from facesdk import zoo
from facesdk.image import to_tensor

log = logging.getLogger(__name__)

DLIB_MS_CORE_PER_CROP = 65.0


def bench(shared: Path, repeats: int = 5, batches: tuple[int, ...] = (1, 32)) -> dict[str, float]:
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
    res: dict[str, float] = {"max_abs_diff_vs_dlib": float(np.abs(y - z["descriptors"]).max())}
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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shared", type=Path, default=Path(os.environ.get("FACESDK_SHARED", Path(__file__).resolve().parents[1].parent / "shared")))
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args(argv)
    import onnxruntime as ort

    res = bench(args.shared, args.repeats)
    res_info = {"cpu": platform.processor() or platform.machine(), "onnxruntime": ort.__version__, **res}
    print(json.dumps(res_info, indent=2))  # noqa: T201 - CLI output
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
