"""Emulator speed now vs a baseline commit, in one run: faces/s of TinierSSD + FaceID on the same inputs.

The baseline's emulator (``emulator.py``, ``network.py``, ``checkpoint.py`` of the flat package at
``--baseline`` commit, default ``bbf210e`` = main before issue 14) is extracted with ``git show`` into
a temporary package and run interleaved with the current one (one thread each, same inputs, image by
image, alternating which goes first); outputs are compared for equality. Reports faces/s of both and
the ratio. Networks: TinierSSD (ai85) + the 512-d ai85 FaceID checkpoint (both versions can load it),
and the current faceid_112 (imported C project) for the current code only.

Run::

    FACESDK_AI8X_DIR=../shared/ai8x python -m facesdk_bench.bench_max7800x_vs_baseline --images 30 \
        [--baseline COMMIT] [--batch 16]

``--batch N`` also times TinierSSD on batches of N frames (the shape photo mode runs), both versions
interleaved.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def _git_show(repo: Path, commit: str, path: str) -> str | None:
    r = subprocess.run(["git", "-C", str(repo), "show", f"{commit}:{path}"], capture_output=True, text=True)
    return r.stdout if r.returncode == 0 else None


def _baseline_package(commit: str, repo: Path, dest: Path) -> object:
    """The emulator at ``commit`` as a temporary package: the flat layout (``backends/max7800x/*.py``) or
    the split one (``backends/max7800x/accel/*.py`` + ``chips.py``)."""
    pkg = dest / "max7800x_baseline"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    split = _git_show(repo, commit, "backends/max7800x/accel/emulator.py") is not None
    base = "backends/max7800x/accel" if split else "backends/max7800x"
    for f in ("emulator.py", "network.py", "checkpoint.py"):
        src = _git_show(repo, commit, f"{base}/{f}")
        if src is None:
            raise SystemExit(f"{base}/{f} not found at {commit}")
        (pkg / f).write_text(src.replace("from ..chips import", "from .chips import"))
    if split:
        (pkg / "chips.py").write_text(_git_show(repo, commit, "backends/max7800x/chips.py") or "")
    sys.path.insert(0, str(dest))
    return importlib.import_module("max7800x_baseline.emulator")


def _batch_ratio(old: object, cur: object, det_args: tuple, xs: list, batch: int) -> dict:
    """TinierSSD on batches of ``batch`` frames (photo mode's shape), baseline vs current, interleaved."""
    mo, mc = old.load_model(*det_args, threads=1), cur.load_model(*det_args, threads=1)
    xb = np.stack([xs[i % len(xs)] for i in range(batch)])
    mo.run(xb[:2]), mc.run(xb[:2])
    t = {"baseline": 0.0, "current": 0.0}
    equal = True
    for i in range(6):
        outs = {}
        for name in (["baseline", "current"] if i % 2 == 0 else ["current", "baseline"]):
            t0 = time.perf_counter()
            outs[name] = (mo if name == "baseline" else mc).run(xb)
            t[name] += time.perf_counter() - t0
        equal &= all(np.array_equal(a, b) for a, b in zip(outs["baseline"], outs["current"]))
    return {
        "batch": batch,
        "windows_per_s": {k: round(6 * batch / v, 2) for k, v in t.items()},
        "ratio_current_vs_baseline": round(t["baseline"] / t["current"], 3),
        "outputs_identical": bool(equal),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--shared",
        default=os.environ.get("FACESDK_SHARED", str(Path(__file__).resolve().parents[2] / "shared")),
    )
    ap.add_argument("--images", type=int, default=30)
    ap.add_argument("--baseline", default="bbf210e")
    ap.add_argument("--batch", type=int, default=0, help="also TinierSSD on batches of this many frames")
    args = ap.parse_args(argv)
    shared = Path(args.shared)
    ai8x = shared / "ai8x"
    repo = Path(__file__).resolve().parents[1]
    from facesdk.detect.tinierssd import firmware_faceid_crop, firmware_frame
    from facesdk.image import load_image
    from facesdk_backends.max7800x.accel import emulator as cur
    from facesdk_backends.max7800x.accel.cproject import import_c_project

    with tempfile.TemporaryDirectory() as tmp:
        old = _baseline_package(args.baseline, repo, Path(tmp))
        det_args = (
            ai8x / "trained" / "ai85-facedet-tinierssd-qat8-q.pth.tar",
            ai8x / "networks" / "ai85-facedet-tinierssd.yaml",
        )
        fid_args = (ai8x / "trained" / "ai85-faceid-qat8-q.pth.tar", ai8x / "networks" / "faceid.yaml")
        models = {
            "baseline": (old.load_model(*det_args, threads=1), old.load_model(*fid_args, threads=1)),
            "current": (cur.load_model(*det_args, threads=1), cur.load_model(*fid_args, threads=1)),
        }
        f112 = cur.Model(import_c_project(ai8x / "msdk" / "faceid_112").network, threads=1)
        files = sorted((shared / "data" / "lfw" / "images").glob("*/*_0001.jpg"))[: args.images]
        frames = [firmware_frame(load_image(f)) for f in files]
        xs = [fr.astype(np.int16).transpose(2, 0, 1) - 128 for fr in frames]
        crops = [firmware_faceid_crop(fr, np.array([40, 50, 128, 170])) for fr in frames]
        cs = [c.astype(np.int16).transpose(2, 0, 1) - 128 for c in crops]
        c112 = [
            firmware_faceid_crop(fr, np.array([40, 50, 128, 170]), (112, 112))
            .astype(np.int16)
            .transpose(2, 0, 1)
            - 128
            for fr in frames
        ]
        for det, fid in models.values():  # warm-up: weight caches, BLAS start-up
            det.run(xs[0])
            fid.run(cs[0])
        f112.run(c112[0])
        t = {"baseline": 0.0, "current": 0.0, "current_faceid_112": 0.0}
        equal = True
        for i, (x, c) in enumerate(zip(xs, cs)):
            order = ["baseline", "current"] if i % 2 == 0 else ["current", "baseline"]
            outs = {}
            for name in order:
                det, fid = models[name]
                t0 = time.perf_counter()
                heads = det.run(x)
                emb = fid.run(c)
                t[name] += time.perf_counter() - t0
                outs[name] = (heads, emb)
            equal &= all(
                np.array_equal(a, b)
                for a, b in zip(
                    outs["baseline"][0] + outs["baseline"][1], outs["current"][0] + outs["current"][1]
                )
            )
            t0 = time.perf_counter()
            models["current"][0].run(x)
            f112.run(c112[i])
            t["current_faceid_112"] += time.perf_counter() - t0
        n = len(xs)
        res = {
            "images": n,
            "baseline_commit": args.baseline,
            "faces_per_s": {k: round(n / v, 2) for k, v in t.items()},
            "ratio_current_vs_baseline": round(t["baseline"] / t["current"], 3),
            "outputs_identical": bool(equal),
            "note": "detect (TinierSSD) + embed per face, emulator, 1 BLAS thread, same inputs, interleaved",
        }
        if args.batch:
            res["tinierssd_batches"] = _batch_ratio(old, cur, det_args, xs, args.batch)
    print(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
