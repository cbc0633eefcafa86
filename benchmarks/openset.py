"""Open-set identification protocol (``facesdk bench --protocol openset``), BLUFR-style.

On LFW (Liao et al., "A benchmark study of large-scale unconstrained face
recognition", IJCB 2014, the BLUFR open-set protocol, here on all of LFW):
each trial (seeded) draws, for every person with at least ``gallery_per_id + 1``
images, ``gallery_per_id`` random images as the gallery and keeps the person's
other images as mated (genuine) probes; every person with exactly one image is a
non-mated (impostor) probe and never in the gallery. People with 2..k images are
unused when ``gallery_per_id = k > 1``. The same split works on any folder of
``person/`` sub-folders.

Per trial (definitions in :mod:`facesdk.calibration`): DIR (rank-1 detection and
identification rate) at FAR = 10 %, 1 %, 0.1 %, each at the trial's own
threshold for that FAR (an oracle operating point, as in BLUFR), and FAR / FRR /
DIR at the threshold the SDK ships (the identification operating point of the
embedder card, calibrated on data this protocol does not test on). Reported:
mean ± std over the trials, and a DIR-vs-FAR curve (log FAR axis).

Variants measured in one run: template policy (``mean``/``max``/``both``, only
different when ``gallery_per_id > 1``) and cohort score normalisation (AS-norm and
the cohort margin of :mod:`facesdk.calibration`, against a fixed cohort of
identities removed from the test set).

LFW identity subsets: ``all`` (the whole of LFW), ``devtest`` (people of
``peopleDevTest.txt`` only — disjoint from the DevTrain identities used for
calibration) and ``devtrain``.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from facesdk.calibration import (
    CohortMargin,
    CohortNormalizer,
    identity_scores,
    open_set_rates,
    open_set_top1,
    threshold_at_far,
)
from facesdk.errors import ConfigError

__all__ = [
    "OpenSetSplit",
    "openset_split",
    "lfw_people",
    "cohort_people",
    "evaluate_trial",
    "aggregate_trials",
    "run_openset",
    "FAR_GRID",
]

log = logging.getLogger(__name__)

#: FARs at which the DIR-vs-FAR curve is sampled.
FAR_GRID = tuple(float(x) for x in np.logspace(-4, -0.05, 40))


@dataclass
class OpenSetSplit:
    """One trial: gallery images per identity, mated probes (with identity), non-mated probes."""

    gallery: dict[str, list[str]]
    mated: list[tuple[str, str]]
    non_mated: list[tuple[str, str]]

    def describe(self) -> dict[str, int]:
        return {"gallery_identities": len(self.gallery),
                "gallery_images": sum(len(v) for v in self.gallery.values()),
                "mated_probes": len(self.mated), "non_mated_probes": len(self.non_mated)}

    def images(self) -> list[str]:
        return list(dict.fromkeys([k for v in self.gallery.values() for k in v]
                                  + [k for k, _ in self.mated] + [k for k, _ in self.non_mated]))


def openset_split(identities: Mapping[str, Sequence[str]], seed: int, *, gallery_per_id: int = 1,
                  exclude: set[str] | frozenset[str] = frozenset()) -> OpenSetSplit:
    """A BLUFR-style open-set trial (module docstring); ``exclude`` removes identities (e.g. the cohort)."""
    if gallery_per_id < 1:
        raise ConfigError("gallery_per_id must be >= 1")
    rng = np.random.default_rng(seed)
    gallery: dict[str, list[str]] = {}
    mated: list[tuple[str, str]] = []
    non_mated: list[tuple[str, str]] = []
    for person in sorted(identities):
        if person in exclude:
            continue
        imgs = sorted(identities[person])
        if len(imgs) == 1:
            non_mated.append((imgs[0], person))
        elif len(imgs) > gallery_per_id:
            pick = set(rng.choice(len(imgs), gallery_per_id, replace=False).tolist())
            gallery[person] = [imgs[i] for i in sorted(pick)]
            mated.extend((imgs[i], person) for i in range(len(imgs)) if i not in pick)
    if not gallery:
        raise ConfigError(f"no identity has more than {gallery_per_id} image(s): nothing to enroll")
    if not non_mated:
        raise ConfigError("no identity has exactly one image: no non-mated (impostor) probes")
    return OpenSetSplit(gallery, mated, non_mated)


def lfw_people(root: str | Path, subset: str) -> set[str] | None:
    """Identities of an LFW people file (``devtest``/``devtrain``), or None for ``all``."""
    if subset == "all":
        return None
    fname = {"devtest": "peopleDevTest.txt", "devtrain": "peopleDevTrain.txt"}.get(subset)
    if fname is None:
        raise ConfigError(f"unknown identity subset {subset!r} (all, devtest, devtrain)")
    path = Path(root) / fname
    if not path.is_file():
        raise ConfigError(f"{path} not found: the {subset} subset needs LFW's people files")
    out = set()
    for ln in path.read_text().splitlines()[1:]:
        f = ln.split()
        if len(f) == 2:
            out.add(f[0])
    return out


def cohort_people(identities: Mapping[str, Sequence[str]], root: str | Path, size: int = 300,
                  seed: int = 1234) -> list[str]:
    """The impostor cohort for AS-norm: ``size`` LFW DevTrain people with one image (seeded).

    These identities are removed from every test split that uses the cohort, so the
    cohort is outside what is tested.
    """
    train = lfw_people(root, "devtrain") or set()
    singles = sorted(p for p in identities if p in train and len(identities[p]) == 1)
    if len(singles) < size:
        raise ConfigError(f"only {len(singles)} DevTrain singletons for a cohort of {size}")
    rng = np.random.default_rng(seed)
    return sorted(singles[i] for i in rng.choice(len(singles), size, replace=False))


def _dir_at_far(top1: np.ndarray, mated: np.ndarray, correct: np.ndarray, far: float) -> dict[str, float]:
    nm = top1[~mated]
    t = threshold_at_far(nm, far, decimals=None)
    r = open_set_rates(top1, mated, correct, t)
    return {"dir": r["dir"], "far": r["far"], "threshold": t, "reliable": float(far * nm.size >= 1.0)}


def evaluate_trial(emb: Mapping[str, np.ndarray], split: OpenSetSplit, *, policy: str = "mean",
                   normalizer: CohortNormalizer | CohortMargin | None = None,
                   fars: Sequence[float] = (0.1, 0.01, 0.001),
                   thresholds: Mapping[str, float] | None = None) -> dict[str, Any]:
    """Metrics of one trial: DIR at each FAR, rates at given (shipped) thresholds, the DIR-vs-FAR curve."""
    names = sorted(split.gallery)
    gal_keys = [k for n in names for k in split.gallery[n]]
    gal_lab = np.array([i for i, n in enumerate(names) for _ in split.gallery[n]])
    probes = split.mated + split.non_mated
    P = np.stack([emb[k] for k, _ in probes])
    G = np.stack([emb[k] for k in gal_keys])
    sim = identity_scores(P, G, gal_lab, len(names), policy)
    if normalizer is not None:
        # gallery-side statistics come from each identity's (mean policy) template
        sim = normalizer.apply(sim, P, identity_templates(G, gal_lab, len(names)))
    top1, mated, correct = open_set_top1(sim, [p for _, p in probes], names)
    out: dict[str, Any] = {"split": split.describe(),
                           "rank1": float(correct[mated].mean()) if mated.any() else float("nan"),
                           "dir_at_far": {f"{f:g}": _dir_at_far(top1, mated, correct, f) for f in fars}}
    out["at_threshold"] = {k: {"threshold": float(t), **open_set_rates(top1, mated, correct, float(t))}
                           for k, t in (thresholds or {}).items()}
    curve = []
    for f in FAR_GRID:
        if f * (~mated).sum() < 1:
            continue
        curve.append((f, _dir_at_far(top1, mated, correct, f)["dir"]))
    out["curve"] = curve
    return out


def identity_templates(embeddings: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    """Renormalised mean of the normalised embeddings of each identity (``mean`` policy templates)."""
    e = embeddings / np.maximum(np.linalg.norm(embeddings, axis=1, keepdims=True), 1e-12)
    sums = np.zeros((k, e.shape[1]), np.float32)
    np.add.at(sums, labels, e)
    return sums / np.maximum(np.linalg.norm(sums, axis=1, keepdims=True), 1e-12)


def _ms(v: Sequence[float]) -> dict[str, float]:
    a = np.asarray([x for x in v if x is not None and not math.isnan(x)], np.float64)
    if not a.size:
        return {"mean": float("nan"), "std": float("nan")}
    return {"mean": float(a.mean()), "std": float(a.std())}


def aggregate_trials(trials: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Mean ± std over trials of every metric of :func:`evaluate_trial`."""
    if not trials:
        raise ConfigError("no trials")
    out: dict[str, Any] = {"trials": len(trials), "split": trials[0]["split"],
                           "rank1": _ms([t["rank1"] for t in trials]), "dir_at_far": {}, "at_threshold": {}}
    for f in trials[0]["dir_at_far"]:
        out["dir_at_far"][f] = {m: _ms([t["dir_at_far"][f][m] for t in trials])
                                for m in ("dir", "far", "threshold")}
        out["dir_at_far"][f]["reliable"] = all(t["dir_at_far"][f]["reliable"] for t in trials)
    for k in trials[0]["at_threshold"]:
        out["at_threshold"][k] = {"threshold": trials[0]["at_threshold"][k]["threshold"],
                                  **{m: _ms([t["at_threshold"][k][m] for t in trials])
                                     for m in ("far", "frr", "dir", "wrong_accept")}}
    grid = [f for f, _ in trials[0]["curve"]]
    out["curve"] = {"far": grid, "dir": [float(np.mean([dict(t["curve"]).get(f, np.nan) for t in trials]))
                                         for f in grid]}
    return out


def run_openset(
    embed: Callable[[list[str]], Mapping[str, np.ndarray]], identities: Mapping[str, Sequence[str]], *,
    trials: int = 10, seed: int = 0, gallery_per_id: int = 1, policies: Sequence[str] = ("mean",),
    cohort: Sequence[str] | None = None, fars: Sequence[float] = (0.1, 0.01, 0.001),
    thresholds: Callable[[str, str], Mapping[str, float]] | None = None, progress: bool = False,
) -> dict[str, Any]:
    """Run the protocol for every (template policy, normalisation) variant.

    Args:
        embed: ``keys -> {key: embedding}`` (e.g. an :class:`ImageEmbedder` through the cache).
        identities: ``{person: [image keys]}`` (already restricted to the reported subset).
        cohort: identities forming the AS-norm cohort (one image each is used); they are
            excluded from every split. Without a cohort only un-normalised scores are reported.
        thresholds: ``(policy, normalization) -> {label: threshold}`` to evaluate (the shipped ones).

    Returns ``{"variants": {"<policy>/<norm>": aggregate}, "cohort": n, ...}``.
    """
    from tqdm.auto import tqdm

    excl = frozenset(cohort or ())
    splits = [openset_split(identities, seed + t, gallery_per_id=gallery_per_id, exclude=excl)
              for t in range(trials)]
    keys = list(dict.fromkeys(k for s in splits for k in s.images()))
    coh_keys = [sorted(identities[p])[0] for p in (cohort or ())]
    emb = dict(embed(keys + coh_keys))
    norms: dict[str, CohortNormalizer | CohortMargin | None] = {"none": None}
    if coh_keys:
        coh = np.stack([emb[k] for k in coh_keys])
        norms["as-norm"] = CohortNormalizer(coh)
        norms["cohort-margin"] = CohortMargin(coh)
    variants: dict[str, Any] = {}
    for policy in policies:
        if gallery_per_id == 1 and policy != policies[0]:
            continue  # identical with one image per identity
        for nname, nz in norms.items():
            thr = dict(thresholds(policy, nname)) if thresholds else {}
            res = [evaluate_trial(emb, s, policy=policy, normalizer=nz, fars=fars, thresholds=thr)
                   for s in tqdm(splits, desc=f"open-set {policy}/{nname}", disable=not progress,
                                 leave=False)]
            variants[f"{policy}/{nname}"] = aggregate_trials(res)
    return {"protocol": "openset", "trials": trials, "seed": seed, "gallery_per_id": gallery_per_id,
            "cohort": len(coh_keys), "split": splits[0].describe(), "variants": variants}


# ---------------------------------------------------------------------- bench integration

def shipped_thresholds(rec: Any) -> Callable[[str, str], dict[str, float]]:
    """``(policy, norm) -> {label: threshold}``: the card's identification point for that variant (if
    calibrated) and, for reference, the verification threshold that 1:N search used before."""
    from facesdk.calibration import select_operating_point

    sess = rec.embedder_session

    def f(policy: str, norm: str) -> dict[str, float]:
        out: dict[str, float] = {}
        pt = select_operating_point(rec.embedder_card.operating_points, "identification",
                                    backend=sess.backend, precision=sess.precision, tta=rec.tta,
                                    template=policy, normalization=norm)
        if pt is not None:
            out[f"shipped identification ({pt.describe()})"] = pt.threshold
        if norm == "none":
            vp = rec.verification_point
            out[f"verification threshold ({vp.describe()})"] = vp.threshold
        return out

    return f


def run_openset_benchmark(cfg: dict[str, Any], argv: list[str] | None = None) -> dict[str, Any]:
    """``facesdk bench --protocol openset``: one report row per (backend, precision)."""
    import datetime as _dt
    import sys
    import time

    from facesdk.errors import FaceSDKError

    from .cache import default_cache_root
    from .datasets import load_dataset
    from .latency import machine_info
    from .protocols import ImageEmbedder
    from .runner import _make_recognizer
    from .stages import _session_info

    t0 = time.perf_counter()
    oc = dict(cfg.get("openset") or {})
    trials = int(oc.get("trials", 10))
    seed = int(oc.get("seed", 0))
    gpi = int(oc.get("gallery_per_id", 1))
    policies = [str(p) for p in oc.get("policies", ["mean"])]
    subset = str(oc.get("subset", "all"))
    n_cohort = int(oc.get("cohort", 300 if cfg["dataset"] == "lfw" else 0))
    fars = [float(f) for f in cfg["fars"]]
    ds = load_dataset(cfg["dataset"], cfg["root"])
    all_ids = ds.identities()
    ids = dict(all_ids)
    if cfg["dataset"] == "lfw":
        keep = lfw_people(cfg["root"], subset)
        if keep is not None:
            ids = {p: v for p, v in ids.items() if p in keep}
    elif subset != "all":
        raise ConfigError("openset subset applies to the lfw dataset only")
    if cfg.get("limit"):
        names = sorted(ids)[: int(cfg["limit"])]
        ids = {p: ids[p] for p in names}
    cohort: list[str] = []
    if n_cohort:
        if cfg["dataset"] != "lfw":
            raise ConfigError("the cohort comes from LFW DevTrain: openset cohort needs --dataset lfw")
        cohort = cohort_people(all_ids, cfg["root"], n_cohort)
        ids = {**ids, **{p: all_ids[p] for p in cohort}}
    report: dict[str, Any] = {
        "facesdk_bench": 1, "name": cfg.get("name"), "protocol": "openset",
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(["facesdk", *(argv if argv is not None else sys.argv[1:])]),
        "machine": machine_info(), "config": {k: v for k, v in cfg.items() if k != "progress"},
        "dataset": {**ds.describe(), "protocol": "openset", "subset": subset,
                    "people": len(ids) - len(cohort),
                    "images": sum(len(v) for p, v in ids.items() if p not in set(cohort))},
        "rows": [], "skipped": [],
    }
    cache_root = Path(cfg["cache"]) if cfg.get("cache") else default_cache_root()
    for backend in cfg["backends"]:
        for precision in cfg["precision"]:
            try:
                t = cfg.get("threads")
                t = (t[0] if t else None) if isinstance(t, (list, tuple)) else t
                rec = _make_recognizer(cfg, backend, precision, int(t) if t else None)
            except FaceSDKError as exc:
                report["skipped"].append({"backend": backend, "precision": precision, "reason": str(exc)})
                continue
            emb = ImageEmbedder(rec, ds, cache_root, batch_size=int(cfg["batch_size"]),
                                progress=bool(cfg.get("progress", True)))

            def embed(keys: list[str], emb: ImageEmbedder = emb) -> dict[str, np.ndarray]:
                return {k: r.emb for k, r in emb.embed(keys).items()}

            try:
                res = run_openset(embed, ids, trials=trials, seed=seed, gallery_per_id=gpi, policies=policies,
                                  cohort=cohort, fars=fars, thresholds=shipped_thresholds(rec),
                                  progress=bool(cfg.get("progress", True)))
            except FaceSDKError as exc:
                report["skipped"].append({"backend": backend, "precision": precision, "reason": str(exc)})
                rec.close()
                continue
            row = {"model": rec.model_id, "detector": rec.detector_card.id, "tta": rec.tta,
                   **_session_info(rec), "requested_backend": backend, "requested_precision": precision,
                   **res, "embedding": {v: st.to_dict() for v, st in emb.stats.items()}, "status": "ok"}
            report["rows"].append(row)
            rec.close()
    report["seconds"] = round(time.perf_counter() - t0, 1)
    return report


def _pm(m: Mapping[str, float], pct: bool = True, digits: int = 2) -> str:
    if m is None or m.get("mean") is None or math.isnan(m["mean"]):
        return "–"
    k = 100.0 if pct else 1.0
    return f"{m['mean'] * k:.{digits}f} ± {m['std'] * k:.{digits}f}"


def render_openset_markdown(report: dict[str, Any], plots: Sequence[str] = ()) -> str:
    """The open-set report as Markdown tables."""
    d = report["dataset"]
    lines = [f"# Open-set identification: {d.get('dataset')} ({d.get('subset', 'all')})", "",
             f"Command: `{report.get('command', '')}`  ", f"Created: {report.get('created')}  ",
             f"Machine: {report.get('machine', {}).get('cpu', '')}", ""]
    for row in report["rows"]:
        lines += [f"## {row['model']} + {row['detector']} on {row['backend']}/{row['device']}/"
                  f"{row['precision']} (tta {row['tta']})", "",
                  f"{row['trials']} seeded trials (seed {row['seed']}), {row['gallery_per_id']} gallery "
                  "image(s) "
                  f"per identity; split of trial 0: {row['split']}; cohort (AS-norm, cohort-margin): "
                  f"{row['cohort']} people "
                  "(removed from the test).", ""]
        fars = list(next(iter(row["variants"].values()))["dir_at_far"])
        head = ["variant", "rank-1 %"] + [f"DIR@FAR {float(f) * 100:g} % (%)" for f in fars]
        lines.append("| " + " | ".join(head) + " |")
        lines.append("|" + "---|" * len(head))
        for name, v in row["variants"].items():
            cells = [name, _pm(v["rank1"])] + [_pm(v["dir_at_far"][f]["dir"]) for f in fars]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
        lines += ["At fixed thresholds (mean ± std over trials):", "",
                  "| variant | threshold | FAR % | FRR % (1 − DIR) | DIR % | wrong-name accepts % |",
                  "|---|---|---|---|---|---|"]
        for name, v in row["variants"].items():
            for label, r in v["at_threshold"].items():
                lines.append(f"| {name}: {label} | {r['threshold']:.4f} | {_pm(r['far'])} | "
                             f"{_pm(r['frr'])} | "
                             f"{_pm(r['dir'])} | {_pm(r['wrong_accept'])} |")
        fb = row.get("embedding", {}).get("high", {})
        lines += ["", f"Images: {fb.get('images')} (computed {fb.get('computed')}, "
                  f"cached {fb.get('cached')}); "
                  f"no detection (fixed-box fallback): {fb.get('no_detection_fallback')}.", ""]
    for s in report.get("skipped", []):
        lines.append(f"- not run: {s['backend']}/{s['precision']}: {s['reason']}")
    for p in plots:
        lines.append(f"![{p}]({p})")
    return "\n".join(lines) + "\n"


def write_openset_report(report: dict[str, Any], out: str | Path) -> dict[str, Path]:
    """report.json, report.md and dir_far.png (DIR against FAR, log axis) into ``out``."""
    from facesdk.fileio import atomic_write_bytes

    from .report import write_json

    o = Path(out)
    o.mkdir(parents=True, exist_ok=True)
    plots: list[str] = []
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6.5, 4.5))
        for row in report["rows"]:
            for name, v in row["variants"].items():
                c = v["curve"]
                ax.plot(c["far"], c["dir"], label=f"{row['model']}/{row['backend']} {name}")
        ax.set_xscale("log")
        ax.set_xlabel("FAR (non-mated probes accepted)")
        ax.set_ylabel("DIR (rank-1 detection & identification rate)")
        ax.set_title("Open-set identification: DIR vs FAR")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(o / "dir_far.png", dpi=110)
        plt.close(fig)
        plots.append("dir_far.png")
    except ImportError:
        log.warning("matplotlib is not installed: no DIR-vs-FAR plot")
    report["plots"] = plots
    write_json(report, o / "report.json")
    atomic_write_bytes(o / "report.md", render_openset_markdown(report, plots).encode())
    return {"json": o / "report.json", "md": o / "report.md", **{p: o / p for p in plots}}
