"""Benchmark stages: what ``facesdk bench`` runs, one composable step each, named in the config.

A config's ``stages:`` list names the steps in order (default: ``accuracy`` plus ``latency`` /
``parity`` / ``peers`` when their sections are enabled, as before). Every stage is a function
``stage(ctx)`` that reads its options from the config (its own section, e.g. ``detectors: {…}``)
and writes into ``ctx.report``; stages share the dataset, the protocol's pairs or split and the
recognisers through :class:`BenchContext`, which builds each of them once, on first use.

Stages come from the ``facesdk_bench_stages`` hook (:func:`stages`), so a plugin adds one the way
this package adds its own (``facesdk_bench.plugin``):

* ``precision``: one embedder on every backend × precision, the same aligned faces (:mod:`.precision`);
* ``accuracy``: per backend × precision, verification (``pairs``/``devtest``/``devtrain``) or 1:N
  identification (``identify``) on the dataset → ``report["rows"]``;
* ``latency``: per-stage latency and throughput (:mod:`.latency`);
* ``parity``: the same aligned faces through every backend (:mod:`.parity`);
* ``peers``: other implementations on the same data (:mod:`.peers`);
* ``detectors``: detector latency and agreement with YuNet on the shared photos (:mod:`.bench_detectors`);
* ``dlib-embedder``: the converted dlib ResNet's speed and parity on dlib's own crops
  (:mod:`.bench_dlib_embedder`);
* ``max7800x-speed``: detect + embed throughput on the MAX78000 emulator (:mod:`.bench_max7800x`);
* ``lfw-max78000``: LFW 10-fold accuracy of the MAX78000 pipeline (:mod:`.lfw_max78000`);
* ``landmark-sources``: which 5 points feed dlib's crop best on LFW (:mod:`.lfw_landmark_sources`);
* ``gallery``: gallery search and enrolment speed vs faiss (:mod:`.bench_gallery`);
* ``throughput``: the dataset through the streaming pipeline beside engine-only peers (:mod:`.throughput`);
* ``max78000-photo-mode``: TinierSSD recall against YuNet, firmware framing vs photo mode
  (:mod:`.photo_mode_max78000`);
* ``max7800x-vs-baseline``: two emulator versions interleaved on the same inputs
  (:mod:`.bench_max7800x_vs_baseline`);
* ``max7800x-kat``: the known-answer test of msdk C projects on the emulator (:mod:`.max7800x_kat`);
* ``decode-memory``: peak memory per pixel of ``load_image`` (:mod:`.decode_memory`);
* ``collect-purity``: collecting mode on a sequence of LFW photos (:mod:`.collect_purity`);
* ``milvus-agreement``: Milvus Lite vs the embedded gallery on LFW descriptors (:mod:`.milvus_agreement`);
* ``calibrate``: operating points as ``facesdk calibrate`` computes them, no card written (:mod:`.calibrate`);
* ``embed-aligned``: crops of one template embedded by the other embedder (:mod:`.embed_aligned_check`);
* ``small-galleries``: strangers' FAR against 1–100-person galleries, with and without the cohort
  (:mod:`.small_galleries`).
"""

from __future__ import annotations

import datetime as _dt
import logging
import os
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from facesdk import zoo
from facesdk.errors import ConfigError, FaceSDKError

from .cache import default_cache_root
from .datasets import Dataset, IdentificationSplit, PairList, identification_split, load_dataset
from .latency import machine_info, measure_latency, peak_rss_mb
from .quality import Degradation

__all__ = ["BenchContext", "Stage", "stages", "stage_names", "DATASET_STAGES", "SIDE_STAGES"]

log = logging.getLogger(__name__)

#: ``stage(ctx)``: runs one step, writing into ``ctx.report``.
Stage = Callable[["BenchContext"], None]
#: Stages that need the config's dataset (``root``) and protocol.
DATASET_STAGES = ("precision", "accuracy", "latency", "parity", "peers")
#: Built-in stages that bring their own data (options in the config section of the same name).
SIDE_STAGES = (
    "detectors", "dlib-embedder", "max7800x-speed", "lfw-max78000", "landmark-sources", "gallery",
    "throughput", "max78000-photo-mode", "max7800x-vs-baseline", "max7800x-kat", "decode-memory",
    "collect-purity", "milvus-agreement", "calibrate", "embed-aligned", "small-galleries", "int8-analysis",
)


def shared_root() -> Path:
    """The shared data folder: ``$FACESDK_SHARED`` or ``../shared`` next to the repository."""
    default = Path(__file__).resolve().parents[1].parent / "shared"
    return Path(os.environ.get("FACESDK_SHARED", default)).resolve()


@dataclass
class BenchContext:
    """What stages share: the config, the report being written, and lazily built inputs."""

    cfg: dict[str, Any]
    argv: list[str] | None = None
    report: dict[str, Any] = field(default_factory=dict)
    #: Recognisers of the accuracy rows, by ``backend/precision`` (closed by :meth:`finish`).
    recs: dict[str, Any] = field(default_factory=dict)
    #: Recognisers built for latency/parity only.
    extra: dict[str, Any] = field(default_factory=dict)
    _dataset: Dataset | None = None
    _pairs: PairList | None = None
    _split: IdentificationSplit | None = None
    _keys: list[str] | None = None
    #: The running entry of the ``stages:`` list (``name`` or ``name@label``).
    current: str = ""
    t_start: float = field(default_factory=time.perf_counter)

    def __post_init__(self) -> None:
        cfg = self.cfg
        self.report = {
            "facesdk_bench": 1,
            "name": cfg.get("name"),
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "command": " ".join(["facesdk", *(self.argv if self.argv is not None else sys.argv[1:])]),
            "machine": machine_info(),
            "config": {k: v for k, v in cfg.items() if k not in ("progress",)},
            "stages": list(stage_names(cfg)),
            "rows": [], "skipped": [], "latency": [], "parity": None, "peers": [], "curves": {}, "cmc": {},
            "results": {},
        }

    # ------------------------------------------------------------------ shared inputs
    @property
    def progress(self) -> bool:
        return bool(self.cfg.get("progress", True))

    @property
    def threads(self) -> int | None:
        t = self.cfg.get("threads")
        if isinstance(t, (list, tuple)):
            t = t[0] if t else None
        return int(t) if t else None

    @property
    def limit(self) -> int | None:
        return int(self.cfg["limit"]) if self.cfg.get("limit") else None

    @property
    def fars(self) -> list[float]:
        return [float(f) for f in self.cfg["fars"]]

    @property
    def tiers(self) -> list[str]:
        return list(self.cfg["tiers"] or ["high-high"])

    @property
    def degradation(self) -> Degradation:
        return Degradation.from_dict(self.cfg.get("degradation"))

    @property
    def cache_root(self) -> Path:
        return Path(self.cfg["cache"]) if self.cfg.get("cache") else default_cache_root()

    def dataset(self) -> Dataset:
        """The config's dataset with its protocol's pairs or split (built once)."""
        if self._dataset is None:
            cfg = self.cfg
            if not cfg.get("root"):
                raise ConfigError("no dataset root: give --root DIR or 'root:' in the config")
            ds = load_dataset(cfg["dataset"], cfg["root"])
            protocol = cfg["protocol"]
            if protocol == "identify":
                ic = dict(cfg.get("identify") or {})
                self._split = identification_split(
                    ds.identities(), gallery_per_id=int(ic.get("gallery_per_id", 1)),
                    enrolled_every=int(ic.get("enrolled_every", 2)),
                    max_probes_per_id=ic.get("max_probes_per_id", 5),
                    include_singletons=bool(ic.get("include_singletons", False)), limit=self.limit,
                )
                self._keys = self._split.images()
            else:
                self._pairs = ds.pairs(protocol).subset(self.limit)
                self._keys = self._pairs.images()
            self._dataset = ds
            self.report["dataset"] = {
                **ds.describe(), "protocol": protocol, "images": len(self._keys),
                **({"pairs": len(self._pairs), "limit": self.limit} if self._pairs is not None else {}),
                **({"split": self._split.describe()} if self._split is not None else {}),
            }
        return self._dataset

    @property
    def pairs(self) -> PairList | None:
        self.dataset()
        return self._pairs

    @property
    def split(self) -> IdentificationSplit | None:
        self.dataset()
        return self._split

    @property
    def image_keys(self) -> list[str]:
        self.dataset()
        assert self._keys is not None
        return self._keys

    def recognizer(self, backend: str, precision: str, threads: int | None = None) -> Any:
        """A FaceRecognizer for the config's models on ``backend``/``precision`` (strict)."""
        from .runner import _make_recognizer

        return _make_recognizer(self.cfg, backend, precision, threads)

    def skip(self, backend: str, precision: str, reason: str, **extra: Any) -> None:
        log.warning("skipping %s/%s: %s", backend, precision, reason)
        self.report["skipped"].append({"backend": backend, "precision": precision, "reason": reason, **extra})

    def options(self, name: str | None = None) -> dict[str, Any]:
        """The config section of a stage (default: the running stage's entry; ``{}`` when absent)."""
        v = self.cfg.get(name or self.current)
        return dict(v) if isinstance(v, Mapping) else {}

    # ------------------------------------------------------------------ end
    def finish(self) -> dict[str, Any]:
        """Close recognisers, add the summary fields, return the report."""
        for rec in [*self.recs.values(), *self.extra.values()]:
            rec.close()
        report = self.report
        ok = report["rows"]
        if ok:
            first = ok[0]
            for key in ("mean_accuracy", "std_accuracy", "eer"):
                if key in first:
                    report[key] = first[key]
            if "rank_k" in first:
                report["rank1"] = first["rank_k"].get("1")
        report["peak_rss_mb"] = peak_rss_mb()
        report["seconds"] = round(time.perf_counter() - self.t_start, 1)
        return report


def stages() -> Mapping[str, Stage]:
    """Every benchmark stage (``facesdk_bench_stages`` hook): name → ``stage(ctx)``."""
    from facesdk.plugins import get_plugin_manager

    out: dict[str, Stage] = {}
    for part in reversed(get_plugin_manager().hook.facesdk_bench_stages()):
        out.update(part or {})
    return out


def stage_names(cfg: Mapping[str, Any]) -> list[str]:
    """The stages a config runs: its ``stages:`` list, else accuracy + the enabled sections.

    An entry ``name@label`` runs stage ``name`` with the options of section ``name@label`` (the
    same stage twice with other options, e.g. ``lfw-max78000@firmware``).
    """
    named = cfg.get("stages")
    if named:
        return [str(s) for s in ([named] if isinstance(named, str) else named)]
    study = cfg.get("precision_study") or {}
    out = ["precision"] if study.get("enabled") else []
    if not study.get("only"):
        out.append("accuracy")
    if (cfg.get("latency") or {}).get("enabled"):
        out.append("latency")
    if (cfg.get("parity") or {}).get("enabled"):
        out.append("parity")
    if cfg.get("peers"):
        out.append("peers")
    return out


# ====================================================================== dataset stages

def _session_info(rec: Any) -> dict[str, Any]:
    e, d = rec.embedder_session, rec.detector.session
    return {
        "backend": e.backend, "device": e.device, "precision": e.precision,
        "providers": getattr(e, "providers", None),
        "detector_backend": d.backend, "detector_device": d.device, "detector_precision": d.precision,
    }


def _thin_curve(far: np.ndarray, tar: np.ndarray, n: int = 400) -> dict[str, list[float]]:
    """At most ~2n ROC points for the report: evenly spaced plus log-spaced in FAR (keeps the low-FAR end)."""
    m = len(far)
    if m <= 2 * n:
        return {"far": far.tolist(), "tar": tar.tolist()}
    low = np.clip(np.searchsorted(far, np.logspace(-5, 0, n), side="right") - 1, 0, m - 1)
    idx = np.unique(np.r_[np.linspace(0, m - 1, n).astype(int), low, m - 1])
    return {"far": far[idx].tolist(), "tar": tar[idx].tolist()}


def stage_accuracy(ctx: BenchContext) -> None:
    """Verification or identification per backend × precision → ``report["rows"]``."""
    from .protocols import ImageEmbedder, run_identification, run_verification

    cfg = ctx.cfg
    ds = ctx.dataset()
    for backend in cfg["backends"]:
        for precision in cfg["precision"]:
            label = f"{backend}/{precision}"
            try:
                rec = ctx.recognizer(backend, precision, ctx.threads)
            except FaceSDKError as exc:
                ctx.skip(backend, precision, str(exc))
                continue
            row: dict[str, Any] = {
                "model": rec.model_id, "detector": rec.detector_card.id, **_session_info(rec),
                "requested_backend": backend, "requested_precision": precision,
                "threads": ctx.threads, "batch_size": int(cfg["batch_size"]),
                "dataset": ds.name, "protocol": cfg["protocol"],
            }
            emb = ImageEmbedder(rec, ds, ctx.cache_root, degradation=ctx.degradation,
                                batch_size=int(cfg["batch_size"]), progress=ctx.progress)
            try:
                if ctx.pairs is not None:
                    res = run_verification(emb, ctx.pairs, tiers=ctx.tiers, k=int(cfg["folds"]),
                                           fars=ctx.fars)
                    ctx.report["curves"][label] = {t: _thin_curve(c["far"], c["tar"])
                                                   for t, c in res.pop("curves").items()}
                    res.pop("scores")
                else:
                    assert ctx.split is not None
                    ic = dict(cfg.get("identify") or {})
                    res = run_identification(emb, ctx.split, tiers=ctx.tiers, fars=ctx.fars,
                                             top_k=tuple(ic.get("top_k", (1, 5, 10))))
                    ctx.report["cmc"][label] = res.pop("cmc")
            except FaceSDKError as exc:
                log.warning("%s failed: %s", label, exc)
                ctx.skip(backend, precision, str(exc))
                rec.close()
                continue
            row.update(res)
            row["status"] = "ok"
            ctx.report["rows"].append(row)
            ctx.recs[label] = rec


def stage_precision(ctx: BenchContext) -> None:
    """One embedder on every backend × precision on the same aligned faces (``precision_study:`` section;
    :mod:`.precision`) → ``report["precision_study"]``."""
    from .precision import run_precision_study

    if ctx.pairs is None:
        raise ConfigError("the precision stage needs a pairs protocol (pairs, devtest, devtrain)")
    ctx.report["precision_study"] = run_precision_study(ctx.cfg, ctx.dataset(), ctx.pairs, ctx.cache_root,
                                                        ctx.progress)


def _extra_recognizers(ctx: BenchContext) -> None:
    """Backends compared only for latency and parity (``parity.backends``): cheaper than full runs."""
    from .runner import _as_list as as_list

    for backend in as_list((ctx.cfg.get("parity") or {}).get("backends")):
        for precision in ctx.cfg["precision"]:
            label = f"{backend}/{precision}"
            if label in ctx.recs or label in ctx.extra:
                continue
            try:
                ctx.extra[label] = ctx.recognizer(backend, precision, ctx.threads)
            except FaceSDKError as exc:
                ctx.report["skipped"].append({"backend": backend, "precision": precision,
                                              "reason": f"parity/latency: {exc}"})


def stage_latency(ctx: BenchContext) -> None:
    """Per-stage latency of every recogniser (``latency:`` section) → ``report["latency"]``."""
    from .runner import _as_list as as_list

    cfg, lat = ctx.cfg, ctx.options("latency")
    _extra_recognizers(ctx)
    if not ctx.recs and not ctx.extra:  # latency-only config: build the recognisers here
        for backend in cfg["backends"]:
            for precision in cfg["precision"]:
                try:
                    ctx.extra[f"{backend}/{precision}"] = ctx.recognizer(backend, precision, ctx.threads)
                except FaceSDKError as exc:
                    ctx.skip(backend, precision, f"latency: {exc}")
    images = [ctx.dataset().path(k) for k in ctx.image_keys[: int(lat.get("images", 16))]]
    for label, rec in [*ctx.recs.items(), *ctx.extra.items()]:
        backend, precision = label.split("/")
        for t in as_list(lat.get("threads", [ctx.threads])) or [ctx.threads]:
            t = int(t) if t else None
            r = rec if t == ctx.threads else None
            try:
                r = r or ctx.recognizer(backend, precision, t)
                m = measure_latency(
                    r, images, batch_sizes=[int(b) for b in lat.get("batch_sizes", [1, 8, 32])],
                    warmup=int(lat.get("warmup", 3)), repeats=int(lat.get("repeats", 20)),
                    gallery_size=int(lat.get("gallery_size", 1000)), threads=t, progress=ctx.progress,
                )
            except FaceSDKError as exc:
                ctx.report["skipped"].append({"backend": backend, "precision": precision, "threads": t,
                                              "reason": f"latency: {exc}"})
                continue
            m["model"] = rec.model_id
            m["detector"] = rec.detector_card.id
            ctx.report["latency"].append(m)
            if r is not rec:
                r.close()
    for row in ctx.report["rows"]:
        mine = [m for m in ctx.report["latency"] if m["backend"] == row["backend"]
                and m["precision"] == row["precision"]]
        if mine:
            e2e = mine[0]["stages"]["end_to_end"]
            row["e2e_p50_ms"] = e2e["p50_ms"]
            row["e2e_images_per_s"] = e2e["images_per_s"]


def stage_parity(ctx: BenchContext) -> None:
    """The reference recogniser's aligned faces through every other backend (``parity:`` section)."""
    from .parity import reference_crops, run_parity

    par, peers = ctx.options("parity"), ctx.options("peers")
    _extra_recognizers(ctx)
    if not ctx.recs:
        log.info("parity: no accuracy row ran, nothing to use as the reference")
        return
    ref_label, ref = next(iter(ctx.recs.items()))
    keys = ctx.image_keys[: int(par.get("images", 200))]
    crops, fb = reference_crops(ref, ctx.dataset(), keys)
    others = {lab: r.embed_crops for lab, r in [*ctx.recs.items(), *ctx.extra.items()] if lab != ref_label}
    if peers.get("opencv", True):
        from .peers import opencv_dnn_embedder

        try:
            fn = opencv_dnn_embedder(ref, zoo.fetch(ref.embedder_card, "onnx"))
            if fn is not None:
                others["peer:opencv-dnn (same ONNX)"] = fn
        except FaceSDKError as exc:
            log.info("OpenCV DNN peer skipped: %s", exc)
    ref_row = ctx.report["rows"][0]
    thr = float(np.mean(ref_row["fold_thresholds"])) if "fold_thresholds" in ref_row else ref.threshold
    ctx.report["parity"] = run_parity(ref_label, ref.embed_crops, others, crops, keys, ctx.pairs, thr)
    ctx.report["parity"]["fallback_faces"] = fb
    if not others:
        ctx.report["parity"]["note"] = "only one backend ran: nothing to compare"


def stage_peers(ctx: BenchContext) -> None:
    """Other implementations on the same data (``peers:`` section: opencv, dlib, dlib_descriptors)."""
    from .runner import _dlib_reference as dlib_reference

    peers, lat = ctx.options("peers"), ctx.options("latency")
    if ctx.recs and peers.get("opencv", False):
        from .peers import opencv_yunet_compare

        ref = next(iter(ctx.recs.values()))
        if ref.detector_card.family == "yunet":
            try:
                images = [ctx.dataset().path(k) for k in ctx.image_keys[: int(lat.get("images", 16))]]
                r = opencv_yunet_compare(ref, zoo.fetch(ref.detector_card, "onnx"), images,
                                         warmup=int(lat.get("warmup", 3)),
                                         repeats=int(lat.get("repeats", 20)))
                if r:
                    ctx.report["peers"].append(r)
            except FaceSDKError as exc:
                log.info("OpenCV YuNet peer skipped: %s", exc)
    if peers.get("dlib", False):
        from .peers import dlib_status

        ctx.report["peers"].append(dlib_status())
    if peers.get("dlib_descriptors") and ctx.pairs is not None:
        r = dlib_reference(peers["dlib_descriptors"], ctx.pairs, ctx.fars, int(ctx.cfg["folds"]))
        if r:
            ctx.report["peers"].append(r)


# ====================================================================== stages with their own data

def _result(ctx: BenchContext, result: Any, markdown: str | None = None) -> None:
    ctx.report["results"][ctx.current] = {"result": result, **({"markdown": markdown} if markdown else {})}


def stage_detectors(ctx: BenchContext) -> None:
    """Detector latency and agreement with the first one (``detectors:`` {detectors, threads, repeat})."""
    from .bench_detectors import DETECTORS, run, to_markdown

    o = ctx.options()
    res = run(list(o.get("detectors", DETECTORS)), int(o.get("threads", 1)), int(o.get("repeat", 5)))
    _result(ctx, res, to_markdown(res))


def stage_dlib_embedder(ctx: BenchContext) -> None:
    """Speed of the converted dlib ResNet on dlib's own crops (``dlib-embedder:`` {repeats, batches})."""
    from .bench_dlib_embedder import bench, to_markdown

    o = ctx.options()
    res = bench(shared_root(), int(o.get("repeats", 5)), tuple(int(b) for b in o.get("batches", (1, 32))))
    _result(ctx, res, to_markdown(res))


def stage_max7800x_speed(ctx: BenchContext) -> None:
    """Detect + embed throughput on the MAX7800x emulator (``max7800x-speed:`` {images, backend})."""
    from .bench_max7800x import run, to_markdown

    o = ctx.options()
    res = run(shared_root(), int(o.get("images", 50)), str(o.get("backend", "max78000")))
    _result(ctx, res, to_markdown(res))


def stage_lfw_max78000(ctx: BenchContext) -> None:
    """LFW k-fold accuracy of the MAX78000 pipeline (``lfw-max78000:`` {limit_folds, backend, firmware_exact,
    embedder})."""
    from .lfw_max78000 import run, to_markdown

    o = ctx.options()
    res = run(shared_root(), int(o.get("limit_folds", 10)), str(o.get("backend", "max78000")),
              bool(o.get("firmware_exact", False)), str(o.get("embedder", "ai85-faceid")))
    _result(ctx, res, to_markdown(res))


def stage_gallery(ctx: BenchContext) -> None:
    """Gallery search/enrolment speed vs faiss (``gallery:`` {sizes, dims, queries, k, repeat, threads,
    storages, skip, add, quick}; :mod:`.bench_gallery`)."""
    from .bench_gallery import markdown, run

    o = ctx.options()
    res = run(o, quick=bool(o.get("quick", False)))
    _result(ctx, res, markdown(res))


def stage_throughput(ctx: BenchContext) -> None:
    """The dataset through the streaming pipeline beside engine-only peers (``throughput:`` {detectors,
    batch_size, peer_limit, chunk, precision, chip_ab}; root/limit/threads/embedder from the config, precision
    also from the config's ``precision`` (one); :mod:`.throughput`)."""
    from .throughput import DEFAULT_CHUNK, DEFAULT_DETECTORS, render_markdown, run_throughput

    o = ctx.options()
    root = ctx.cfg.get("root") or str(shared_root() / "data" / "lfw")
    prec = o.get("precision") or (list(ctx.cfg.get("precision") or ["fp32"]))
    prec = [prec] if isinstance(prec, str) else list(prec)
    if len(prec) != 1:
        raise ConfigError(f"the throughput stage runs one embedder precision, not {prec}")
    rep = run_throughput(
        root, detectors=list(o.get("detectors", DEFAULT_DETECTORS)),
        embedder=o.get("embedder") or ctx.cfg.get("embedder"),
        threads=ctx.threads, batch_size=int(o.get("batch_size", 16)), limit=ctx.limit,
        chunk=int(o.get("chunk", DEFAULT_CHUNK)), precision=str(prec[0]), chip_ab=int(o.get("chip_ab", 500)),
        peer_limit=o.get("peer_limit"), progress=ctx.progress, argv=ctx.argv,
    )
    _result(ctx, rep, render_markdown(rep))


def stage_landmark_sources(ctx: BenchContext) -> None:
    """LFW accuracy of dlib's crop per landmark source (``landmark-sources:`` {variants, shifts,
    mean_center})."""
    from .lfw_landmark_sources import run, to_markdown

    o = ctx.options()
    res = run(shared_root(), [str(v) for v in o.get("variants", ["dlibref", "mtcnn:sp"])],
              shifts=int(o.get("shifts", 0)), mean_center=bool(o.get("mean_center", False)))
    _result(ctx, res, to_markdown(res))


def _call(ctx: BenchContext, fn: Callable[..., Any], *args: Any, **fixed: Any) -> Any:
    """``fn(*args, **fixed, **<the running stage's options>)``; an option ``fn`` does not take is a
    ConfigError (the config's section names keyword arguments)."""
    import inspect

    opts = ctx.options()
    params = inspect.signature(fn).parameters
    unknown = sorted(set(opts) - set(params) - set(fixed))
    if unknown:
        known = ", ".join(p for p in params if p not in fixed and p not in ("shared", "progress"))
        raise ConfigError(f"stage {ctx.current}: unknown option(s) {', '.join(unknown)} (known: {known})")
    return fn(*args, **fixed, **opts)


def stage_max78000_photo_mode(ctx: BenchContext) -> None:
    """TinierSSD recall against YuNet, firmware framing vs photo mode (``max78000-photo-mode:`` the keyword
    arguments of :func:`.photo_mode_max78000.run`, e.g. {photos, lfw, min_score})."""
    from .photo_mode_max78000 import run, to_markdown

    res = _call(ctx, run, shared_root(), progress=ctx.progress)
    _result(ctx, res, to_markdown(res))


def stage_max7800x_vs_baseline(ctx: BenchContext) -> None:
    """Two emulator versions interleaved (``max7800x-vs-baseline:`` the keyword arguments of
    :func:`.bench_max7800x_vs_baseline.run`: {baseline, candidate, inputs, images, runs, faceid_112})."""
    from .bench_max7800x_vs_baseline import run, to_markdown

    res = _call(ctx, run, shared_root(), progress=ctx.progress)
    _result(ctx, res, to_markdown(res))


def stage_max7800x_kat(ctx: BenchContext) -> None:
    """Known-answer test of msdk C projects (``max7800x-kat:`` {projects}; :mod:`.max7800x_kat`)."""
    from .max7800x_kat import run, to_markdown

    o = ctx.options()
    res = run(shared_root(), [str(p) for p in o.get("projects", ["faceid_112"])])
    _result(ctx, res, to_markdown(res))


def stage_decode_memory(ctx: BenchContext) -> None:
    """Peak memory per pixel of ``load_image`` (``decode-memory:`` {cases, width, height, baseline};
    :mod:`.decode_memory`)."""
    from .decode_memory import run, to_markdown

    o = ctx.options()
    res = run(o.get("cases"), int(o.get("width", 4000)), int(o.get("height", 4000)),
              str(o["baseline"]) if o.get("baseline") else None)
    _result(ctx, res, to_markdown(res))


def stage_collect_purity(ctx: BenchContext) -> None:
    """Collecting mode on a sequence of LFW photos (``collect-purity:`` {people, per_person, distractors,
    seed, min_faces, detector, embedder, backend}; :mod:`.collect_purity`)."""
    from .collect_purity import PEOPLE, run, to_markdown

    o = ctx.options()
    res = run(shared_root(), people=[str(p) for p in o.get("people", PEOPLE)],
              per_person=int(o.get("per_person", 9)), distractors=int(o.get("distractors", 20)),
              seed=int(o.get("seed", 0)), min_faces=int(o.get("min_faces", 5)),
              detector=str(o.get("detector", "yunet-2023mar")),
              embedder=str(o.get("embedder", "mobilefacenet-sirius")),
              backend=str(o.get("backend", "onnxruntime")), progress=ctx.progress)
    _result(ctx, res, to_markdown(res))


def stage_milvus_agreement(ctx: BenchContext) -> None:
    """Milvus Lite vs the embedded gallery (``milvus-agreement:`` {probes, extra, pool, compare,
    image_probes, index}; :mod:`.milvus_agreement`)."""
    from .milvus_agreement import run, to_markdown

    o = ctx.options()
    res = run(shared_root(), probes=int(o.get("probes", 1100)), extra=int(o.get("extra", 50)),
              compare=int(o.get("compare", 20)), image_probes=int(o.get("image_probes", 200)),
              index=str(o.get("index", "FLAT")), pool=int(o.get("pool", 1200)))
    _result(ctx, res, to_markdown(res))


def stage_calibrate(ctx: BenchContext) -> None:
    """Operating points as ``facesdk calibrate`` computes them, without writing a card (``calibrate:`` {the
    command's options by their long names, e.g. subset, gallery_size, fars, normalizations, margin_lambda,
    confidence}; dataset, root, detector, embedder, backend, precision, threads, cache default to the
    config's; :func:`.calibrate.run_calibration`)."""
    from .calibrate import calibration_args, run_calibration

    cfg, o = ctx.cfg, ctx.options()
    args = calibration_args(
        o, dataset=cfg.get("dataset"), root=cfg.get("root"), detector=cfg.get("detector"),
        embedder=cfg.get("embedder"), backend=(cfg.get("backends") or [None])[0],
        precision=(cfg.get("precision") or [None])[0], threads=ctx.threads, cache=cfg.get("cache"),
        no_progress=not ctx.progress,
    )
    run = run_calibration(args)
    lines = ["| task | threshold | operating point | measured |", "|---|---|---|---|"]
    for p in run.points:
        m = ", ".join(f"{k} {v:.4f}" for k, v in p.measured.items()
                      if k in ("far", "frr", "dir", "cv_accuracy"))
        lines.append(f"| {p.task} | {p.threshold:.4f} | {p.describe()} | {m} |")
    _result(ctx, run.out, "\n".join(lines))


def stage_embed_aligned(ctx: BenchContext) -> None:
    """Cross-template ``embed_aligned`` against each embedder's own pipeline (``embed-aligned:`` {images};
    :mod:`.embed_aligned_check`)."""
    from .embed_aligned_check import run, to_markdown

    res = run(shared_root(), int(ctx.options().get("images", 12)), progress=ctx.progress)
    _result(ctx, res, to_markdown(res))


def stage_small_galleries(ctx: BenchContext) -> None:
    """Strangers' FAR against small galleries, gallery-only margin vs cohort-margin (``small-galleries:``
    {sizes, trials, seed, cohort}; dataset/models from the config; :mod:`.small_galleries`)."""
    from .small_galleries import run, to_markdown

    res = _call(ctx, run, ctx.cfg, progress=ctx.progress)
    _result(ctx, res, to_markdown(res))


def stage_int8_analysis(ctx: BenchContext) -> None:
    """Why an int8 model loses accuracy or speed (``int8-analysis:`` {what: mobilefacenet | ort-ceiling |
    graph-variants, repeats};
    :mod:`.int8_analysis`, the same functions as its command line)."""
    import json

    from . import int8_analysis

    o = ctx.options()
    what = str(o.get("what", "mobilefacenet"))
    if what == "mobilefacenet":
        res = int8_analysis.mobilefacenet()
    elif what == "ort-ceiling":
        res = int8_analysis.ort_ceiling(int(o.get("repeats", 5)))
    elif what == "graph-variants":
        res = int8_analysis.graph_variants(int(o.get("repeats", 7)))
    else:
        raise ConfigError(
            f"int8-analysis: what must be mobilefacenet, ort-ceiling or graph-variants, not {what!r}"
        )
    _result(ctx, res, "```json\n" + json.dumps(res, indent=1, default=str) + "\n```")


#: The stages this package provides (returned by its ``facesdk_bench_stages`` hook).
BUILTIN_STAGES: dict[str, Stage] = {
    "precision": stage_precision,
    "accuracy": stage_accuracy,
    "latency": stage_latency,
    "parity": stage_parity,
    "peers": stage_peers,
    "detectors": stage_detectors,
    "dlib-embedder": stage_dlib_embedder,
    "max7800x-speed": stage_max7800x_speed,
    "lfw-max78000": stage_lfw_max78000,
    "landmark-sources": stage_landmark_sources,
    "gallery": stage_gallery,
    "throughput": stage_throughput,
    "max78000-photo-mode": stage_max78000_photo_mode,
    "max7800x-vs-baseline": stage_max7800x_vs_baseline,
    "max7800x-kat": stage_max7800x_kat,
    "decode-memory": stage_decode_memory,
    "collect-purity": stage_collect_purity,
    "milvus-agreement": stage_milvus_agreement,
    "calibrate": stage_calibrate,
    "embed-aligned": stage_embed_aligned,
    "small-galleries": stage_small_galleries,
    "int8-analysis": stage_int8_analysis,
}
