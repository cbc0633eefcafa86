"""Emulator speed of two versions in one run: TinierSSD + FaceID on the same inputs, interleaved.

Stage ``max7800x-vs-baseline`` of ``facesdk bench`` (:mod:`facesdk_bench.stages`)::

    FACESDK_AI8X_DIR=../shared/ai8x facesdk bench --config benchmarks/configs/max7800x-vs-baseline.yaml
    FACESDK_AI8X_DIR=../shared/ai8x facesdk bench --config benchmarks/configs/max7800x-emulator-b745ef1.yaml

Options (config section ``max7800x-vs-baseline``):

* ``baseline`` — the commit whose emulator is the baseline (default ``bbf210e``, main before issue 14);
* ``candidate`` — a commit to compare instead of the working tree's emulator (default: the working tree);
* ``inputs`` — ``lfw`` (the first ``images`` LFW ``*_0001.jpg`` frames, firmware framing, a fixed
  FaceID crop of each) or ``reference`` (the reference inputs of ``ai8x/reference``, each ``runs`` times);
* ``images`` (lfw, default 30), ``runs`` (reference, default 15), ``faceid_112`` (lfw and no
  candidate: also time the working tree's faceid_112 network; default true), ``batch`` (also time
  TinierSSD on batches of that many frames, the shape photo mode runs; default off).

Each version's emulator package (every ``.py`` of ``backends/max7800x/`` at that commit, read with
``git show``) is written to a temporary package and imported beside the current one; both run with one
BLAS thread on the same inputs, step by step, alternating which goes first. Outputs are compared for
equality. Reports per network the median and minimum ms, faces/s of detect + embed and the speed ratio.
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from facesdk.errors import ConfigError

__all__ = ["run", "to_markdown", "emulator_at"]

_PKG = "backends/max7800x/"
#: the fixed FaceID box (x0, y0, x1, y1) on the 168x224 frame: the same crop for every version
_BOX = np.array([40, 50, 128, 170])


def _git(repo: Path, *args: str) -> str:
    try:
        out = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ConfigError(f"git is needed to read an emulator from history: {exc}") from None
    if out.returncode != 0:
        raise ConfigError(f"git {' '.join(args)}: {out.stderr.strip() or 'failed'}")
    return out.stdout


def emulator_at(commit: str, repo: Path, dest: Path) -> Any:
    """Import the emulator module of ``commit`` (flat ``emulator.py`` or ``accel/emulator.py``)."""
    sha = _git(repo, "rev-parse", "--verify", "--quiet", f"{commit}^{{commit}}").strip()
    files = [
        f for f in _git(repo, "ls-tree", "-r", "--name-only", sha, _PKG).splitlines() if f.endswith(".py")
    ]
    if not files:
        raise ConfigError(f"{commit}: no {_PKG} in that commit")
    name = f"max7800x_at_{sha[:12]}"
    root = dest / name
    for f in files:
        rel = Path(f[len(_PKG) :])
        if ".." in rel.parts:  # paths from git: contained in the temporary package
            continue
        out = root / rel
        out.parent.mkdir(parents=True, exist_ok=True)
        # the package's own __init__ may import the facesdk backend of its day: not needed here
        out.write_text("" if rel == Path("__init__.py") else _git(repo, "show", f"{sha}:{f}"))
    if str(dest) not in sys.path:
        sys.path.insert(0, str(dest))
    mod = "accel.emulator" if (root / "accel" / "emulator.py").is_file() else "emulator"
    return importlib.import_module(f"{name}.{mod}")


def _inputs(shared: Path, inputs: str, images: int, runs: int) -> tuple[list[Any], list[Any], list[Any]]:
    """(detector inputs, FaceID inputs, faceid_112 inputs) as int16 CHW arrays in -128..127."""
    if inputs == "reference":
        ref = shared / "ai8x" / "reference"
        xs = [np.load(ref / f"facedet_{k}_input.npy", allow_pickle=False) for k in ("rand0", "sample")]
        cs = [np.load(ref / f"faceid_{k}_input.npy", allow_pickle=False) for k in ("rand0", "sample")]
        n = 2 * int(runs)
        return [xs[i % 2] for i in range(n)], [cs[i % 2] for i in range(n)], []
    if inputs != "lfw":
        raise ConfigError(f"max7800x-vs-baseline: inputs must be lfw or reference, not {inputs!r}")
    from facesdk.detect.tinierssd import firmware_faceid_crop, firmware_frame
    from facesdk.image import load_image

    files = sorted((shared / "data" / "lfw" / "images").glob("*/*_0001.jpg"))[: int(images)]
    frames = [firmware_frame(load_image(f)) for f in files]

    def chw(a: np.ndarray) -> np.ndarray:
        return a.astype(np.int16).transpose(2, 0, 1) - 128

    return (
        [chw(fr) for fr in frames],
        [chw(firmware_faceid_crop(fr, _BOX)) for fr in frames],
        [chw(firmware_faceid_crop(fr, _BOX, (112, 112))) for fr in frames],
    )


def _stats(t: list[float]) -> dict[str, float]:
    return {"median_ms": round(1000 * float(np.median(t)), 2), "min_ms": round(1000 * float(np.min(t)), 2)}


def run(
    shared: Path,
    baseline: str = "bbf210e",
    candidate: str | None = None,
    inputs: str = "lfw",
    images: int = 30,
    runs: int = 15,
    faceid_112: bool = True,
    batch: int | None = None,
    repo: Path | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Time both versions interleaved on the same inputs; see the module docstring."""
    os.environ.setdefault("FACESDK_AI8X_DIR", str(shared / "ai8x"))
    ai8x = shared / "ai8x"
    repo = repo or Path(__file__).resolve().parents[1]
    det_args = (
        ai8x / "trained" / "ai85-facedet-tinierssd-qat8-q.pth.tar",
        ai8x / "networks" / "ai85-facedet-tinierssd.yaml",
    )
    fid_args = (ai8x / "trained" / "ai85-faceid-qat8-q.pth.tar", ai8x / "networks" / "faceid.yaml")
    xs, cs, c112 = _inputs(shared, inputs, images, runs)
    with tempfile.TemporaryDirectory() as tmp:
        old = emulator_at(baseline, repo, Path(tmp))
        if candidate:
            new = emulator_at(candidate, repo, Path(tmp))
        else:
            from facesdk_backends.max7800x.accel import emulator as new
        names = {"baseline": baseline, "candidate": candidate or "working tree"}
        models = {
            "baseline": (old.load_model(*det_args, threads=1), old.load_model(*fid_args, threads=1)),
            "candidate": (new.load_model(*det_args, threads=1), new.load_model(*fid_args, threads=1)),
        }
        f112 = None
        if faceid_112 and not candidate and c112:
            from facesdk_backends.max7800x.accel.cproject import import_c_project

            f112 = new.Model(import_c_project(ai8x / "msdk" / "faceid_112").network, threads=1)
        for det, fid in models.values():  # warm-up: weight caches, BLAS start-up
            det.run(xs[0])
            fid.run(cs[0])
        if f112 is not None:
            f112.run(c112[0])
        t: dict[str, dict[str, list[float]]] = {k: {"detect": [], "embed": []} for k in models}
        t112: list[float] = []
        equal = True
        for i in tqdm(range(len(xs)), desc="emulators", disable=not progress):
            order = ["baseline", "candidate"] if i % 2 == 0 else ["candidate", "baseline"]
            outs = {}
            for name in order:
                det, fid = models[name]
                t0 = time.perf_counter()
                heads = det.run(xs[i])
                t1 = time.perf_counter()
                emb = fid.run(cs[i])
                t2 = time.perf_counter()
                t[name]["detect"].append(t1 - t0)
                t[name]["embed"].append(t2 - t1)
                outs[name] = [*heads, *emb]
            equal &= all(np.array_equal(a, b) for a, b in zip(outs["baseline"], outs["candidate"]))
            if f112 is not None:
                t0 = time.perf_counter()
                models["candidate"][0].run(xs[i])
                f112.run(c112[i])
                t112.append(time.perf_counter() - t0)
        batched = _batch_ratio(models, xs, int(batch)) if batch else None
        if tmp in sys.path:  # the temporary packages are gone after this block
            sys.path.remove(tmp)
    n = len(xs)
    total = {k: sum(v["detect"]) + sum(v["embed"]) for k, v in t.items()}
    res: dict[str, Any] = {
        "inputs": inputs,
        "steps": n,
        "versions": names,
        "networks": {
            k: {"tinierssd": _stats(v["detect"]), "faceid": _stats(v["embed"])} for k, v in t.items()
        },
        "faces_per_s": {k: round(n / v, 2) for k, v in total.items()},
        "ratio_candidate_vs_baseline": round(total["baseline"] / total["candidate"], 3),
        "outputs_identical": bool(equal),
        "note": "detect (TinierSSD) + embed (512-d FaceID) per step, emulator only, 1 BLAS thread, "
        "same inputs, interleaved",
    }
    if t112:
        res["faces_per_s"]["candidate_faceid_112"] = round(n / sum(t112), 2)
    if batched:
        res["batch"] = batched
    return res


def _batch_ratio(models: dict[str, Any], xs: list[Any], batch: int, repeats: int = 6) -> dict[str, Any]:
    """TinierSSD on batches of ``batch`` frames (the shape photo mode runs), both versions interleaved."""
    xb = np.stack([xs[i % len(xs)] for i in range(batch)])
    for det, _ in models.values():
        det.run(xb[:2])
    t = {k: 0.0 for k in models}
    equal = True
    for i in range(repeats):
        outs = {}
        for name in ["baseline", "candidate"] if i % 2 == 0 else ["candidate", "baseline"]:
            t0 = time.perf_counter()
            outs[name] = models[name][0].run(xb)
            t[name] += time.perf_counter() - t0
        equal &= all(np.array_equal(a, b) for a, b in zip(outs["baseline"], outs["candidate"]))
    return {
        "batch": batch,
        "windows_per_s": {k: round(repeats * batch / v, 2) for k, v in t.items()},
        "ratio_candidate_vs_baseline": round(t["baseline"] / t["candidate"], 3),
        "outputs_identical": bool(equal),
    }


def to_markdown(res: dict[str, Any]) -> str:
    """Per network median (min) ms of both versions, faces/s and the ratio."""
    v = res["versions"]
    lines = [
        f"Inputs: {res['inputs']}, {res['steps']} steps; "
        f"baseline {v['baseline']}, candidate {v['candidate']}.",
        "",
        "| network | baseline median (min) ms | candidate median (min) ms |",
        "|---|---|---|",
    ]
    for net in ("tinierssd", "faceid"):
        b, c = res["networks"]["baseline"][net], res["networks"]["candidate"][net]
        lines.append(f"| {net} | {b['median_ms']} ({b['min_ms']}) | {c['median_ms']} ({c['min_ms']}) |")
    fps = res["faces_per_s"]
    lines += [
        "",
        f"detect + embed: baseline {fps['baseline']} faces/s, candidate {fps['candidate']} faces/s "
        f"(ratio **{res['ratio_candidate_vs_baseline']}**), outputs identical: {res['outputs_identical']}",
    ]
    if "candidate_faceid_112" in fps:
        lines.append(f"TinierSSD + faceid_112 (working tree): {fps['candidate_faceid_112']} faces/s")
    if "batch" in res:
        b = res["batch"]
        lines.append(
            f"TinierSSD on batches of {b['batch']} frames: baseline {b['windows_per_s']['baseline']}, "
            f"candidate {b['windows_per_s']['candidate']} frames/s (ratio "
            f"{b['ratio_candidate_vs_baseline']}), outputs identical: {b['outputs_identical']}"
        )
    return "\n".join(lines)
