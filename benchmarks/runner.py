"""Benchmark runner: a config (YAML/TOML file + command-line overrides) → runs → one result dict.

Config keys (all optional; see ``benchmarks/configs/*.yaml``)::

    name, dataset (lfw|folder|plugin), root, protocol (pairs|devtest|devtrain|identify),
    detector, embedder, backends [list], precision [list], device, threads, batch_size,
    limit, folds, fars, tiers, degradation {face_width, jpeg_quality, blur_sigma, brightness, seed},
    identify {gallery_per_id, enrolled_every, max_probes_per_id, include_singletons, top_k},
    latency {enabled, images, batch_sizes, threads, warmup, repeats, gallery_size},
    parity {enabled, images, backends (extra, parity/latency only)}, peers {opencv, dlib, dlib_descriptors}, cache, out,
    precision_study {enabled, only, embedders, configs, detector, latency {batch_sizes, images, repeats}}

Relative paths in a config file are resolved against the current directory
first, then against the config file's directory. ``${VAR}`` is expanded.
"""

from __future__ import annotations

import datetime as _dt
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from facesdk import zoo
from facesdk.errors import ConfigError, FaceSDKError

from .cache import default_cache_root
from .datasets import Dataset, PairList, identification_split, load_dataset
from .latency import machine_info, measure_latency, peak_rss_mb
from .metrics import DEFAULT_FARS, verification_summary
from .parity import reference_crops, run_parity
from .protocols import ImageEmbedder, run_identification, run_verification
from .quality import TIERS, Degradation

__all__ = ["DEFAULTS", "load_config", "merge_overrides", "run_benchmark"]

log = logging.getLogger(__name__)

DEFAULTS: dict[str, Any] = {
    "name": "bench",
    "dataset": "lfw",
    "root": None,
    "protocol": "pairs",
    "detector": "yunet-2023mar",
    "detector_backend": None,
    "embedder": "mobilefacenet-sirius",
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
    unknown = set(data) - set(DEFAULTS)
    if unknown:
        raise ConfigError(f"{p}: unknown config keys: {', '.join(sorted(unknown))}")
    for k, v in data.items():
        if isinstance(DEFAULTS[k], dict) and isinstance(v, dict):
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
        out[k] = _as_list(v) if k in _LIST_KEYS else v
    for k in _LIST_KEYS:
        out[k] = _as_list(out[k])
    if out["protocol"] not in ("pairs", "devtest", "devtrain", "identify"):
        raise ConfigError(f"unknown protocol {out['protocol']!r} (pairs, devtest, devtrain, identify)")
    if out["limit"] is not None and int(out["limit"]) < 2:
        raise ConfigError("--limit must be >= 2")
    for t in out["tiers"]:
        if t not in TIERS:
            raise ConfigError(f"unknown quality tier {t!r} (known: {', '.join(TIERS)})")
    if not out["backends"]:
        raise ConfigError("no backends to benchmark")
    if not out.get("root"):
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
    kw = dict(detector=cfg["detector"], embedder=cfg["embedder"], backend=backend, device=cfg["device"],
              precision=precision, strict=True, batch_size=int(cfg["batch_size"]), backend_options=opts)
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


def _threads(cfg: dict[str, Any]) -> int | None:
    t = cfg.get("threads")
    if isinstance(t, (list, tuple)):
        t = t[0] if t else None
    return int(t) if t else None


def _latency_images(ds: Dataset, cfg: dict[str, Any], keys: list[str]) -> list[Path]:
    n = int(cfg["latency"].get("images", 16))
    return [ds.path(k) for k in keys[:n]]


def _session_info(rec: Any) -> dict[str, Any]:
    e, d = rec.embedder_session, rec.detector.session
    return {
        "backend": e.backend, "device": e.device, "precision": e.precision,
        "providers": getattr(e, "providers", None),
        "detector_backend": d.backend, "detector_device": d.device, "detector_precision": d.precision,
    }


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
    return {"peer": "dlib 20.0.1 ResNet (peer implementation; precomputed descriptors)",
            "source": str(p), "score": "negative Euclidean distance", **summ}


def _thin_curve(far: np.ndarray, tar: np.ndarray, n: int = 400) -> dict[str, list[float]]:
    """At most ~2n ROC points for the report: evenly spaced plus log-spaced in FAR (keeps the low-FAR end)."""
    m = len(far)
    if m <= 2 * n:
        return {"far": far.tolist(), "tar": tar.tolist()}
    idx = np.unique(np.r_[np.linspace(0, m - 1, n).astype(int),
                          np.clip(np.searchsorted(far, np.logspace(-5, 0, n), side="right") - 1, 0, m - 1), m - 1])
    return {"far": far[idx].tolist(), "tar": tar[idx].tolist()}


def run_benchmark(cfg: dict[str, Any], argv: list[str] | None = None) -> dict[str, Any]:
    """Run everything the config asks for; return the report dict (see :mod:`facesdk_bench.report`)."""
    t_start = time.perf_counter()
    progress = bool(cfg.get("progress", True))
    ds = load_dataset(cfg["dataset"], cfg["root"])
    limit = int(cfg["limit"]) if cfg.get("limit") else None
    protocol = cfg["protocol"]
    fars = [float(f) for f in cfg["fars"]]
    tiers = cfg["tiers"] or ["high-high"]
    deg = Degradation.from_dict(cfg.get("degradation"))
    cache_root = Path(cfg["cache"]) if cfg.get("cache") else default_cache_root()
    pairs: PairList | None = None
    split = None
    if protocol == "identify":
        ic = dict(cfg.get("identify") or {})
        split = identification_split(
            ds.identities(), gallery_per_id=int(ic.get("gallery_per_id", 1)),
            enrolled_every=int(ic.get("enrolled_every", 2)), max_probes_per_id=ic.get("max_probes_per_id", 5),
            include_singletons=bool(ic.get("include_singletons", False)), limit=limit,
        )
        image_keys = split.images()
    else:
        pairs = ds.pairs(protocol).subset(limit)
        image_keys = pairs.images()

    report: dict[str, Any] = {
        "facesdk_bench": 1,
        "name": cfg.get("name"),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(["facesdk", *(argv if argv is not None else sys.argv[1:])]),
        "machine": machine_info(),
        "config": {k: v for k, v in cfg.items() if k not in ("progress",)},
        "dataset": {**ds.describe(), "protocol": protocol, "images": len(image_keys),
                    **({"pairs": len(pairs), "limit": limit} if pairs is not None else {}),
                    **({"split": split.describe()} if split is not None else {})},
        "rows": [], "skipped": [], "latency": [], "parity": None, "peers": [], "curves": {}, "cmc": {},
    }
    recs: dict[str, Any] = {}
    threads = _threads(cfg)
    study = dict(cfg.get("precision_study") or {})
    if study.get("enabled") and pairs is not None:
        from .precision import run_precision_study

        report["precision_study"] = run_precision_study(cfg, ds, pairs, cache_root, progress)
    for backend in ([] if study.get("only") else cfg["backends"]):
        for precision in cfg["precision"]:
            label = f"{backend}/{precision}"
            try:
                rec = _make_recognizer(cfg, backend, precision, threads)
            except FaceSDKError as exc:
                log.warning("skipping %s: %s", label, exc)
                report["skipped"].append({"backend": backend, "precision": precision, "reason": str(exc)})
                continue
            row: dict[str, Any] = {
                "model": rec.model_id, "detector": rec.detector_card.id, **_session_info(rec),
                "requested_backend": backend, "requested_precision": precision,
                "threads": threads, "batch_size": int(cfg["batch_size"]),
                "dataset": ds.name, "protocol": protocol,
            }
            emb = ImageEmbedder(rec, ds, cache_root, degradation=deg, batch_size=int(cfg["batch_size"]),
                                progress=progress)
            try:
                if pairs is not None:
                    res = run_verification(emb, pairs, tiers=tiers, k=int(cfg["folds"]), fars=fars)
                    report["curves"][label] = {t: _thin_curve(c["far"], c["tar"])
                                               for t, c in res.pop("curves").items()}
                    res.pop("scores")
                else:
                    assert split is not None
                    ic = dict(cfg.get("identify") or {})
                    res = run_identification(emb, split, tiers=tiers, fars=fars,
                                             top_k=tuple(ic.get("top_k", (1, 5, 10))))
                    report["cmc"][label] = res.pop("cmc")
            except FaceSDKError as exc:
                log.warning("%s failed: %s", label, exc)
                report["skipped"].append({"backend": backend, "precision": precision, "reason": str(exc)})
                rec.close()
                continue
            row.update(res)
            row["status"] = "ok"
            report["rows"].append(row)
            recs[label] = rec

    # backends compared only for latency and parity (no accuracy protocol): cheaper than full runs
    extra: dict[str, Any] = {}
    for backend in _as_list((cfg.get("parity") or {}).get("backends")):
        for precision in cfg["precision"]:
            label = f"{backend}/{precision}"
            if label in recs:
                continue
            try:
                extra[label] = _make_recognizer(cfg, backend, precision, threads)
            except FaceSDKError as exc:
                report["skipped"].append({"backend": backend, "precision": precision,
                                          "reason": f"parity/latency: {exc}"})
    lat = cfg.get("latency") or {}
    if lat.get("enabled") and (recs or extra):
        for label, rec in [*recs.items(), *extra.items()]:
            backend, precision = label.split("/")
            for t in _as_list(lat.get("threads", [threads])) or [threads]:
                t = int(t) if t else None
                r = rec if t == threads else None
                try:
                    r = r or _make_recognizer(cfg, backend, precision, t)
                    m = measure_latency(
                        r, _latency_images(ds, cfg, image_keys), batch_sizes=[int(b) for b in
                                                                            lat.get("batch_sizes", [1, 8, 32])],
                        warmup=int(lat.get("warmup", 3)), repeats=int(lat.get("repeats", 20)),
                        gallery_size=int(lat.get("gallery_size", 1000)), threads=t, progress=progress,
                    )
                except FaceSDKError as exc:
                    report["skipped"].append({"backend": backend, "precision": precision, "threads": t,
                                              "reason": f"latency: {exc}"})
                    continue
                m["model"] = rec.model_id
                m["detector"] = rec.detector_card.id
                report["latency"].append(m)
                if r is not rec:
                    r.close()
        for row in report["rows"]:
            mine = [m for m in report["latency"] if m["backend"] == row["backend"]
                    and m["precision"] == row["precision"]]
            if mine:
                e2e = mine[0]["stages"]["end_to_end"]
                row["e2e_p50_ms"] = e2e["p50_ms"]
                row["e2e_images_per_s"] = e2e["images_per_s"]

    par = cfg.get("parity") or {}
    peers = cfg.get("peers") or {}
    if par.get("enabled") and recs:
        ref_label, ref = next(iter(recs.items()))
        n = int(par.get("images", 200))
        keys = image_keys[:n]
        crops, fb = reference_crops(ref, ds, keys)
        others = {lab: r.embed_crops for lab, r in [*recs.items(), *extra.items()] if lab != ref_label}
        if peers.get("opencv", True):
            from .peers import opencv_dnn_embedder

            try:
                path = zoo.fetch(ref.embedder_card, "onnx")
                fn = opencv_dnn_embedder(ref, path)
                if fn is not None:
                    others["peer:opencv-dnn (same ONNX)"] = fn
            except FaceSDKError as exc:
                log.info("OpenCV DNN peer skipped: %s", exc)
        ref_row = report["rows"][0]
        thr = float(np.mean(ref_row["fold_thresholds"])) if "fold_thresholds" in ref_row else ref.threshold
        report["parity"] = run_parity(ref_label, ref.embed_crops, others, crops, keys, pairs, thr)
        report["parity"]["fallback_faces"] = fb
        if not others:
            report["parity"]["note"] = "only one backend ran: nothing to compare"

    if recs and peers.get("opencv", False):
        from .peers import opencv_yunet_compare

        ref = next(iter(recs.values()))
        if ref.detector_card.family == "yunet":
            try:
                path = zoo.fetch(ref.detector_card, "onnx")
                r = opencv_yunet_compare(ref, path, _latency_images(ds, {"latency": {"images": lat.get("images", 16)}},
                                                                     image_keys),
                                         warmup=int(lat.get("warmup", 3)), repeats=int(lat.get("repeats", 20)))
                if r:
                    report["peers"].append(r)
            except FaceSDKError as exc:
                log.info("OpenCV YuNet peer skipped: %s", exc)
    if peers.get("dlib", False):
        from .peers import dlib_status

        report["peers"].append(dlib_status())
    if peers.get("dlib_descriptors") and pairs is not None:
        r = _dlib_reference(peers["dlib_descriptors"], pairs, fars, int(cfg["folds"]))
        if r:
            report["peers"].append(r)

    for rec in [*recs.values(), *extra.values()]:
        rec.close()
    ok = report["rows"]
    if ok:
        first = ok[0]
        for key in ("mean_accuracy", "std_accuracy", "eer"):
            if key in first:
                report[key] = first[key]
        if "rank_k" in first:
            report["rank1"] = first["rank_k"].get("1")
    report["peak_rss_mb"] = peak_rss_mb()
    report["seconds"] = round(time.perf_counter() - t_start, 1)
    return report
