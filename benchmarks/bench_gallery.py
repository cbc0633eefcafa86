"""Gallery search and enrolment speed: facesdk's exact index vs faiss ``IndexFlatIP`` in the same run.

For each (identities N, dimension D) of the config: N random unit vectors (the speed of exact search
does not depend on the data), probes = noisy copies of stored rows; top-K search with batches of
1 and 100 probes. Timed, interleaved repeat by repeat so load from other jobs hits all alike:

- ``facesdk fp32`` / ``fp16`` / ``int8``: :class:`facesdk.gallery.index.ExactIndex` (``fp16``/``int8``:
  compressed scan + exact fp32 re-ranking);
- ``faiss default``: ``IndexFlatIP`` with faiss's ``distance_compute_blas_threshold`` (20: batches
  under 20 probes use its SIMD loop, not BLAS), and ``faiss blas``: the threshold lowered to 1;
- the table's ratio is facesdk time / the faster of the two faiss times (< 1: facesdk faster).

Also the top-1 agreement with faiss (exact search must agree except for exact ties) and enrolment
throughput: ``Gallery.add`` of N identities one call each (names, validation, image ids included)
and raw ``ExactIndex.append`` one row each.

Usage (stage ``gallery`` of ``facesdk bench``, or this module's own command line)::

    nice -n 10 facesdk bench --config benchmarks/configs/gallery.yaml --out bench-results/gallery
    nice -n 10 python -m facesdk_bench.bench_gallery --config benchmarks/configs/gallery.yaml \\
        --json benchmarks/results/gallery.json
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from facesdk.gallery import Gallery
from facesdk.gallery.index import ExactIndex

log = logging.getLogger(__name__)


def _unit_rows(n: int, d: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = np.empty((n, d), np.float32)
    for s in range(0, n, 65536):  # in blocks: no float64 temporaries of N×D
        b = rng.standard_normal((min(65536, n - s), d), dtype=np.float32)
        x[s : s + len(b)] = b / np.linalg.norm(b, axis=1, keepdims=True)
    return x


def _best_of(fn: Callable[[], Any], repeat: int) -> tuple[float, Any]:
    out = None
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def bench_search(
    n: int, d: int, queries: list[int], k: int, repeat: int, storages: list[str]
) -> list[dict[str, Any]]:
    import faiss

    x = _unit_rows(n, d, seed=n + d)
    rng = np.random.default_rng(7)
    qmax = max(queries)
    probe_rows = rng.integers(0, n, qmax)
    q = x[probe_rows] + 0.05 * rng.standard_normal((qmax, d), dtype=np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    fidx = faiss.IndexFlatIP(d)
    fidx.add(x)
    ours: dict[str, ExactIndex] = {}
    for st in storages:
        ix = ExactIndex(d, storage=st, capacity=n)
        ix.append(x)
        ours[st] = ix
    del x
    gc.collect()
    rows = []
    default_thr = faiss.cvar.distance_compute_blas_threshold
    for nq in queries:
        qq = np.ascontiguousarray(q[:nq])
        times: dict[str, float] = {}
        tops: dict[str, np.ndarray] = {}
        for _ in range(repeat):  # interleave the methods repeat by repeat
            for thr, label in ((default_thr, "faiss default"), (1, "faiss blas")):
                faiss.cvar.distance_compute_blas_threshold = thr
                t, (_, ids) = _best_of(lambda qq=qq: fidx.search(qq, k), 1)
                times[label] = min(times.get(label, float("inf")), t)
                tops[label] = ids[:, 0]
            faiss.cvar.distance_compute_blas_threshold = default_thr
            for st, ix in ours.items():
                t, r = _best_of(lambda ix=ix, qq=qq: ix.search(qq, k), 1)
                times[f"facesdk {st}"] = min(times.get(f"facesdk {st}", float("inf")), t)
                tops[f"facesdk {st}"] = r.rows[:, 0]
        fbest = min(times["faiss default"], times["faiss blas"])
        row: dict[str, Any] = {
            "n": n,
            "d": d,
            "queries": nq,
            "k": k,
            **{f"ms {m}": round(1000 * t, 3) for m, t in times.items()},
        }
        for st in storages:
            row[f"ratio {st}"] = round(times[f"facesdk {st}"] / fbest, 3)
            row[f"top1 agree {st}"] = float(np.mean(tops[f"facesdk {st}"] == tops["faiss blas"]))
        row["probe found itself (fp32)"] = float(np.mean(tops["facesdk fp32"] == probe_rows[:nq]))
        log.info("%s", row)
        rows.append(row)
    del ours
    gc.collect()
    return rows


def bench_add(n: int, d: int) -> dict[str, Any]:
    x = _unit_rows(n, d, seed=1)
    names = [f"person{i:07d}" for i in range(n)]
    g = Gallery("bench", d)
    t = time.perf_counter()
    for i in range(n):
        g.add(names[i], x[i])
    t_gallery = time.perf_counter() - t
    ok = g.search(x[n // 2], 1)[0][0][0] == names[n // 2]
    del g
    gc.collect()
    ix = ExactIndex(d)
    t = time.perf_counter()
    for i in range(n):
        ix.append(x[i])
    t_index = time.perf_counter() - t
    return {
        "n": n,
        "d": d,
        "gallery.add per s": round(n / t_gallery),
        "gallery.add total s": round(t_gallery, 1),
        "ExactIndex.append per s": round(n / t_index),
        "ExactIndex.append total s": round(t_index, 1),
        "search after adds correct": bool(ok),
    }


def markdown(res: dict[str, Any]) -> str:
    """The RESULTS.md tables of one run."""
    lines = [
        (
            "| N | D | queries | faiss default ms | faiss blas ms | facesdk fp32 ms | fp32 ratio | fp16 "
            "ratio "
            "| int8 ratio | top-1 = faiss |"
        ),
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in res["search"]:
        agree = min(r.get(f"top1 agree {s}", 1.0) for s in ("fp32", "fp16", "int8"))
        lines.append(
            f"| {r['n']:,} | {r['d']} | {r['queries']} | {r['ms faiss default']:.1f} | "
            f"{r['ms faiss blas']:.1f} "
            f"| {r['ms facesdk fp32']:.1f} | {r.get('ratio fp32', float('nan')):.2f} "
            f"| {r.get('ratio fp16', float('nan')):.2f} | {r.get('ratio int8', float('nan')):.2f} | "
            f"{agree:.0%} |"
        )
    if res.get("add"):
        lines += [
            "",
            "| N | D | Gallery.add (1 call each) | ExactIndex.append (1 row each) |",
            "|---|---|---|---|",
        ]
        for a in res["add"]:
            lines.append(
                f"| {a['n']:,} | {a['d']} | {a['gallery.add per s']:,}/s ({a['gallery.add total s']} s) "
                f"| {a['ExactIndex.append per s']:,}/s ({a['ExactIndex.append total s']} s) |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", type=Path, default=Path(__file__).parent / "configs" / "gallery.yaml")
    ap.add_argument("--json", type=Path, help="write the results here")
    ap.add_argument("--quick", action="store_true", help="only the smallest size (smoke test)")
    ap.add_argument("--table", type=Path, help="print the markdown tables of a saved --json result and exit")
    args = ap.parse_args(argv)
    if args.table:
        sys.stdout.write(markdown(json.loads(args.table.read_text())) + "\n")
        return 0
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    cfg = yaml.safe_load(args.config.read_text())
    cfg = cfg.get("gallery", cfg)  # a `facesdk bench` config (stages: [gallery]) or the bare section
    try:
        out = run(cfg, quick=args.quick)
    except ImportError:
        sys.stderr.write("bench_gallery needs faiss-cpu (pip install 'facesdk[bench]')\n")
        return 2
    text = json.dumps(out, indent=2)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")
    sys.stdout.write(text + "\n")
    return 0


def run(cfg: dict[str, Any], quick: bool = False) -> dict[str, Any]:
    """Search and enrolment timings for every (N, D) of ``cfg`` (stage ``gallery`` of ``facesdk bench``)."""
    import faiss

    threads = int(cfg.get("threads", os.cpu_count() or 1))
    faiss.omp_set_num_threads(threads)
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(threads)
    except ImportError:  # pragma: no cover
        pass
    sizes = cfg["sizes"][:1] if quick else cfg["sizes"]
    out: dict[str, Any] = {
        "machine": f"{platform.machine()} {os.cpu_count()} cores, {platform.platform()}",
        "numpy": np.__version__,
        "faiss": faiss.__version__,
        "threads": threads,
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "search": [],
        "add": [],
    }
    for n in sizes:
        for d in cfg["dims"]:
            if [n, d] in cfg.get("skip", []):
                log.info("skipping %d x %d (config)", n, d)
                continue
            out["search"].extend(bench_search(n, d, cfg["queries"], cfg["k"], cfg["repeat"], cfg["storages"]))
    if not quick:
        for spec in cfg.get("add", []):
            out["add"].append(bench_add(int(spec["n"]), int(spec["d"])))
            log.info("%s", out["add"][-1])
    return out


if __name__ == "__main__":
    sys.exit(main())
