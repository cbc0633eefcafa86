"""Benchmark runner: a config (YAML/TOML file + command-line overrides) → runs → one result dict.

Config keys (all optional; see ``benchmarks/configs/*.yaml``)::

    name, stages [list: precision, accuracy, latency, parity, peers, detectors, dlib-embedder, … or a
    plugin's (facesdk_bench_stages hook); default: accuracy + the enabled sections],
    dataset (lfw|folder|plugin), root, protocol (pairs|devtest|devtrain|identify),
    detector, embedder, backends [list], precision [list], device, threads, batch_size,
    limit, folds, fars, tiers, degradation {face_width, jpeg_quality, blur_sigma, brightness, seed},
    identify {gallery_per_id, enrolled_every, max_probes_per_id, include_singletons, top_k},
    latency {enabled, images, batch_sizes, threads, warmup, repeats, gallery_size},
    parity {enabled, images, backends (extra, parity/latency only)}, peers {opencv, dlib,
    dlib_descriptors}, cache, out,
    precision_study {enabled, only, embedders, configs, detector, latency {batch_sizes, images, repeats}},
    and one section per stage that brings its own data (``detectors: {…}``, ``name@label: {…}``)

Relative paths in a config file are resolved against the current directory
first, then against the config file's directory. ``${VAR}`` is expanded.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from facesdk.errors import ConfigError
from facesdk.pipeline import DEFAULT_DETECTOR, DEFAULT_EMBEDDER

from .datasets import PairList
from .metrics import DEFAULT_FARS, verification_summary
from .quality import TIERS

__all__ = ["DEFAULTS", "load_config", "merge_overrides", "run_benchmark"]

log = logging.getLogger(__name__)

DEFAULTS: dict[str, Any] = {
    "name": "bench",
    "stages": None,
    "dataset": "lfw",
    "root": None,
    "protocol": "pairs",
    # FaceRecognizer()'s defaults (the SDK's default pipeline), so a bench without a config measures
    # what `facesdk` runs; configs and --detector/--embedder choose others
    "detector": DEFAULT_DETECTOR,
    "detector_backend": None,
    "embedder": DEFAULT_EMBEDDER,
    "backends": ["onnxruntime"],
    "precision": ["fp32"],
    "device": "cpu",
    "threads": 2,
    "batch_size": 32,
    "limit": None,
    "folds": 10,
    "fars": list(DEFAULT_FARS),
    "tiers": ["high-high"],
    "degradation": {},
    "identify": {},
    "openset": {},
    "latency": {"enabled": False},
    "parity": {"enabled": False},
    "peers": {},
    "precision_study": {},
    "cache": None,
    "out": None,
    "progress": True,
}

_LIST_KEYS = ("backends", "precision", "tiers", "fars")


def _as_list(v: Any) -> list[Any]:
    if v is None:
        return []
    if isinstance(v, str):
        return [s.strip() for s in v.split(",") if s.strip()]
    if isinstance(v, (list, tuple)):
        return list(v)
    return [v]


def load_config(path: str | os.PathLike | None) -> dict[str, Any]:
    """Read a YAML or TOML benchmark config, merged over :data:`DEFAULTS`."""
    cfg = {k: (dict(v) if isinstance(v, dict) else v) for k, v in DEFAULTS.items()}
    if path is None:
        return cfg
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"benchmark config {p} not found")
    text = p.read_text()
    if "FACESDK_SHARED" not in os.environ:  # the default location of the shared data: ../shared
        text = text.replace("${FACESDK_SHARED}", str(Path(__file__).resolve().parents[1].parent / "shared"))
    text = os.path.expandvars(text)
    try:
        if p.suffix.lower() == ".toml":
            import tomllib

            data = tomllib.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text) or {}
    except Exception as exc:
        raise ConfigError(f"cannot parse {p}: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: a benchmark config must be a mapping")
    unknown = set(data) - set(DEFAULTS) - _stage_sections(data.get("stages"))
    if unknown:
        raise ConfigError(f"{p}: unknown config keys: {', '.join(sorted(unknown))}")
    for k, v in data.items():
        if isinstance(DEFAULTS.get(k), dict) and isinstance(v, dict):
            cfg[k] = {**DEFAULTS[k], **v}
        else:
            cfg[k] = v
    for key in ("root", "cache", "out"):
        if cfg.get(key):
            cfg[key] = str(_resolve_path(cfg[key], p.parent))
    if isinstance(cfg["peers"], dict) and cfg["peers"].get("dlib_descriptors"):
        cfg["peers"]["dlib_descriptors"] = str(_resolve_path(cfg["peers"]["dlib_descriptors"], p.parent))
    cfg["config_file"] = str(p)
    return cfg


def _stage_sections(named: Any) -> set[str]:
    """Config sections that belong to stages: every registered stage name and the entries listed."""
    from .stages import stages

    entries = [named] if isinstance(named, str) else list(named or [])
    return set(stages()) | {str(e) for e in entries}


def _resolve_path(v: str, base: Path) -> Path:
    q = Path(v).expanduser()
    if q.is_absolute() or q.exists():
        return q.resolve() if q.exists() else q
    alt = base / q
    return alt.resolve() if alt.exists() else q


def merge_overrides(cfg: dict[str, Any], **over: Any) -> dict[str, Any]:
    """Apply command-line overrides (``None`` = keep the config's value)."""
    out = dict(cfg)
    for k, v in over.items():
        if v is None:
            continue
        out[k] = _as_list(v) if k in (*_LIST_KEYS, "stages") else v
    for k in _LIST_KEYS:
        out[k] = _as_list(out[k])
    if out["protocol"] not in ("pairs", "devtest", "devtrain", "identify", "openset"):
        raise ConfigError(
            f"unknown protocol {out['protocol']!r} (pairs, devtest, devtrain, identify, openset)"
        )
    if out["limit"] is not None and int(out["limit"]) < 2:
        raise ConfigError("--limit must be >= 2")
    for t in out["tiers"]:
        if t not in TIERS:
            raise ConfigError(f"unknown quality tier {t!r} (known: {', '.join(TIERS)})")
    from .stages import DATASET_STAGES, stage_names, stages

    names = stage_names(out)
    known = stages()
    for entry in names:
        if entry.split("@", 1)[0] not in known:
            raise ConfigError(f"unknown benchmark stage {entry!r} (known: {', '.join(sorted(known))})")
    uses_data = any(e.split("@", 1)[0] in DATASET_STAGES for e in names)
    if uses_data and not out["backends"]:
        raise ConfigError("no backends to benchmark")
    if uses_data and not out.get("root"):
        raise ConfigError("no dataset root: give --root DIR or 'root:' in the config")
    return out


def _has_precision(card: Any, backend_name: str, precision: str) -> tuple[bool, str]:
    from facesdk.plugins import get_backend

    b = get_backend(backend_name)
    fmts = [a for a in card.artifacts if a.format in b.formats]
    if not fmts:
        return False, f"{card.id} has no artifact in a format {b.name} runs ({', '.join(b.formats)})"
    if precision in ("fp32",) or any(a.precision == precision for a in fmts):
        return True, ""
    # a backend may quantise/convert at load time; let it decide when it says so
    if getattr(b, "converts_precision", False):
        return True, ""
    return False, f"{card.id} has no {precision} artifact for {b.name}"


def _make_recognizer(cfg: dict[str, Any], backend: str, precision: str, threads: int | None) -> Any:
    from facesdk.pipeline import FaceRecognizer

    opts = {"threads": int(threads)} if threads else {}
    kw = dict(
        detector=cfg["detector"],
        embedder=cfg["embedder"],
        backend=backend,
        device=cfg["device"],
        precision=precision,
        strict=True,
        batch_size=int(cfg["batch_size"]),
        backend_options=opts,
    )
    det_be = cfg.get("detector_backend")
    if det_be:
        kw["detector_backend"] = det_be
        kw["precision"] = precision
    try:
        rec = FaceRecognizer(**kw)
    except ConfigError as exc:
        if det_be or "detector" not in kw or backend == "onnxruntime":
            raise
        # the backend cannot run the detector (e.g. no TFLite YuNet): detect on the reference backend,
        # embed on this one — the embedder is what is being compared
        log.info("%s cannot run the detector (%s); detecting with onnxruntime", backend, exc)
        from facesdk.errors import FaceSDKError as _E

        try:
            rec = FaceRecognizer(**{**kw, "detector_backend": "onnxruntime"})
        except _E:
            raise exc from None
    ok, why = _has_precision(rec.embedder_card, backend, precision)
    if not ok:
        rec.close()
        raise ConfigError(why)
    return rec


def _dlib_reference(path: str, pairs: PairList, fars: list[float], k: int) -> dict[str, Any] | None:
    """Verification from precomputed dlib descriptors (peer), Euclidean distance as -score."""
    p = Path(path)
    if not p.is_file():
        log.info("dlib reference descriptors %s not found", p)
        return None
    with np.load(p, allow_pickle=False) as z:
        idx = {str(k): i for i, k in enumerate(z["paths"])}
        desc = z["descriptors"].astype(np.float64)
    if not all(a in idx and b in idx for a, b in zip(pairs.a, pairs.b)):
        log.info("dlib reference descriptors do not cover these pairs")
        return None
    ia = np.array([idx[a] for a in pairs.a])
    ib = np.array([idx[b] for b in pairs.b])
    dist = np.linalg.norm(desc[ia] - desc[ib], axis=1)
    summ = verification_summary(-dist, pairs.same.astype(int), pairs.folds, k=k, fars=fars)
    summ["fold_thresholds"] = [-t for t in summ["fold_thresholds"]]  # as distances
    return {
        "peer": "dlib 20.0.1 ResNet (peer implementation; precomputed descriptors)",
        "source": str(p),
        "score": "negative Euclidean distance",
        **summ,
    }


def run_benchmark(cfg: dict[str, Any], argv: list[str] | None = None) -> dict[str, Any]:
    """Run the config's stages in order (:mod:`facesdk_bench.stages`); return the report dict."""
    from .stages import BenchContext, stage_names, stages

    if cfg["protocol"] == "openset":  # its own protocol module: facesdk_bench.openset
        from .openset import run_openset_benchmark

        return run_openset_benchmark(cfg, argv)

    known = stages()
    ctx = BenchContext(cfg, argv)
    try:
        for entry in stage_names(cfg):
            ctx.current = entry
            log.info("stage %s", entry)
            known[entry.split("@", 1)[0]](ctx)
    finally:
        report = ctx.finish()
    return report
