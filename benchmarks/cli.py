"""``facesdk bench``: run a benchmark config and write/print its report."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from typing import Any

__all__ = ["register", "cmd_bench"]

log = logging.getLogger(__name__)


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``bench`` command to a ``facesdk`` sub-parser set."""
    p = subparsers.add_parser(
        "bench",
        help="benchmark accuracy, latency and parity across backends",
        description="Run a benchmark (LFW verification, 1:N identification, latency, parity) and write "
        "report.md, report.json and plots.",
    )
    p.add_argument("--config", help="benchmark config (YAML/TOML), e.g. benchmarks/configs/lfw.yaml")
    p.add_argument("--stages", help="comma-separated stages instead of the config's (e.g. accuracy,latency)")
    p.add_argument("--dataset", help="lfw, folder, or a plugin's dataset")
    p.add_argument("--root", help="dataset directory")
    p.add_argument(
        "--protocol",
        choices=["pairs", "devtest", "devtrain", "identify", "throughput", "openset"],
        help="openset: open-set identification (benchmarks/openset.py); throughput: all of LFW "
        "through the streaming pipeline beside engine-only peers (benchmarks/throughput.py)",
    )
    p.add_argument(
        "--peer-limit", type=int, help="throughput: run the detection peer on about N images in all"
    )
    p.add_argument("--chunk", type=int, help="throughput: images per chunk (pipelines and peers alternate)")
    # also accepted before the command (global options); SUPPRESS keeps a global value when not given here
    p.add_argument(
        "--detector",
        default=argparse.SUPPRESS,
        help="detector model card id (default: the config's, else FaceRecognizer()'s default)",
    )
    p.add_argument(
        "--embedder",
        default=argparse.SUPPRESS,
        help="embedder model card id (default: the config's, else FaceRecognizer()'s default)",
    )
    p.add_argument("--backends", help="comma-separated backends, e.g. ort,openvino")
    p.add_argument("--precision", dest="bench_precision", help="comma-separated precisions, e.g. fp32,int8")
    p.add_argument("--tiers", help="comma-separated quality tiers: high-high,low-high,low-low")
    p.add_argument("--threads", type=int, help="engine threads for the accuracy run")
    p.add_argument("--batch-size", type=int, help="crops per embedder call")
    p.add_argument("--limit", type=int, help="at most N pairs (or N people for identify): quick runs")
    g = p.add_argument_group("open-set protocol (--protocol openset)")
    g.add_argument("--trials", type=int, help="seeded trials (default 10)")
    g.add_argument("--seed", type=int, help="seed of the first trial (default 0)")
    g.add_argument("--gallery-per-id", type=int, help="gallery images per identity (default 1, BLUFR)")
    g.add_argument(
        "--policies", help="template policies: mean,max,both (differ only with --gallery-per-id > 1)"
    )
    g.add_argument("--cohort", type=int, help="AS-norm cohort size from LFW DevTrain (0: no normalisation)")
    g.add_argument("--subset", choices=["all", "devtest", "devtrain"], help="LFW identities to test on")
    g.add_argument("--fars", help="comma-separated FARs for DIR@FAR (default 0.1,0.01,0.001)")
    p.add_argument("--cache", help="embedding cache directory (default $FACESDK_BENCH_CACHE or ~/.cache)")
    p.add_argument("--out", help="write report.md, report.json and plots here")
    p.add_argument("--no-latency", action="store_true", help="skip latency measurements")
    p.add_argument("--no-parity", action="store_true", help="skip the parity comparison")
    p.add_argument("--no-progress", action="store_true", help="no progress bars on stderr")
    p.add_argument(
        "--json", action="store_true", default=argparse.SUPPRESS, help="print the report's JSON to stdout"
    )
    p.add_argument("-v", "--verbose", action="count", default=argparse.SUPPRESS)
    p.set_defaults(func=cmd_bench)
    return p


def cmd_bench(args: argparse.Namespace) -> int:
    """Handler of ``facesdk bench``."""
    if args.protocol == "throughput":
        return _cmd_throughput(args)
    from .report import to_jsonable, write_report
    from .runner import load_config, merge_overrides, run_benchmark

    cfg = load_config(args.config)
    dev = getattr(args, "device", None)
    cfg = merge_overrides(
        cfg,
        dataset=args.dataset,
        root=args.root,
        protocol=args.protocol,
        backends=args.backends,
        precision=args.bench_precision,
        tiers=args.tiers,
        threads=args.threads,
        batch_size=args.batch_size,
        limit=args.limit,
        cache=args.cache,
        out=args.out,
        stages=getattr(args, "stages", None),
        detector=getattr(args, "detector", None),
        embedder=getattr(args, "embedder", None),
        device=dev if dev and dev != "auto" else None,
    )
    oc = {k: getattr(args, k, None) for k in ("trials", "seed", "gallery_per_id", "cohort", "subset")}
    if getattr(args, "policies", None):
        oc["policies"] = [x.strip() for x in args.policies.split(",") if x.strip()]
    cfg["openset"] = {**(cfg.get("openset") or {}), **{k: v for k, v in oc.items() if v is not None}}
    if getattr(args, "fars", None):
        cfg["fars"] = [float(x) for x in args.fars.split(",") if x.strip()]
    if args.no_latency:
        cfg["latency"] = {**cfg["latency"], "enabled": False}
    if args.no_parity:
        cfg["parity"] = {**cfg["parity"], "enabled": False}
    as_json = bool(getattr(args, "json", False))
    cfg["progress"] = not getattr(args, "no_progress", False)
    report = run_benchmark(cfg, argv=sys.argv[1:])
    if report.get("protocol") == "openset":
        from .openset import render_openset_markdown, write_openset_report

        if cfg.get("out"):
            write_openset_report(report, cfg["out"])
        if as_json:
            sys.stdout.write(json.dumps(to_jsonable(report), indent=2) + "\n")
        else:
            sys.stdout.write(render_openset_markdown(report, report.get("plots") or ()))
        return 0 if report["rows"] else 6
    if cfg.get("out"):
        paths = write_report(report, cfg["out"])
        log.info("wrote %s", ", ".join(str(p) for p in paths.values()))
    if as_json:
        slim = {k: v for k, v in report.items() if k not in ("curves",)}
        sys.stdout.write(json.dumps(to_jsonable(slim), indent=2) + "\n")
    else:
        from .report import render_markdown

        sys.stdout.write(render_markdown(report, report.get("plots")) + "\n")
    if "accuracy" in report.get("stages", ["accuracy"]) and not report["rows"]:
        sys.stderr.write("facesdk bench: no backend ran (see 'Not run')\n")
        return 6
    return 0


def _cmd_throughput(args: argparse.Namespace) -> int:
    """``facesdk bench --protocol throughput``: see :mod:`facesdk_bench.throughput`."""
    from pathlib import Path

    from .throughput import DEFAULT_DETECTORS, render_markdown, run_throughput

    from .throughput import DEFAULT_CHUNK

    det = getattr(args, "detector", None)
    prec = (getattr(args, "bench_precision", None) or "fp32").split(",")
    if len(prec) != 1:
        from facesdk.errors import ConfigError

        raise ConfigError("--protocol throughput runs one embedder precision at a time")
    rep = run_throughput(
        args.root or str(Path(__file__).resolve().parents[1].parent / "shared/data/lfw"),
        detectors=det.split(",") if det else DEFAULT_DETECTORS,
        embedder=getattr(args, "embedder", None),
        threads=args.threads,
        batch_size=args.batch_size or 16,
        limit=args.limit,
        chunk=getattr(args, "chunk", None) or DEFAULT_CHUNK,
        precision=prec[0],
        peer_limit=args.peer_limit,
        progress=not args.no_progress,
        argv=sys.argv[1:],
    )
    if args.out:
        from facesdk.fileio import atomic_write_bytes

        out = Path(args.out)
        atomic_write_bytes(out / "throughput.json", json.dumps(rep, indent=2, default=float).encode())
        atomic_write_bytes(out / "throughput.md", (render_markdown(rep) + "\n").encode())
    if getattr(args, "json", False):
        sys.stdout.write(json.dumps(rep, indent=2, default=float) + "\n")
    else:
        sys.stdout.write(render_markdown(rep) + "\n")
    return 0
