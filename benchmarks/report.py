"""Reports: ``report.json`` (machine-readable), ``report.md`` (tables generated from it) and PNG plots.

``report.json`` holds one row per (model, backend, precision) under ``rows``;
``mean_accuracy`` at the top level is the first row's (verification protocols).
Plots use matplotlib's Agg backend (no display needed).
"""

from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from facesdk.fileio import atomic_write_bytes

__all__ = ["to_jsonable", "write_json", "render_markdown", "make_plots", "write_report"]

log = logging.getLogger(__name__)


def to_jsonable(x: Any) -> Any:
    """Recursively turn numpy values/arrays and paths into JSON types (NaN/inf → None)."""
    if isinstance(x, dict):
        return {str(k): to_jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [to_jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return to_jsonable(x.tolist())
    if isinstance(x, (np.bool_, bool)):
        return bool(x)
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (np.floating, float)):
        v = float(x)
        return v if math.isfinite(v) else None
    if isinstance(x, Path):
        return str(x)
    return x


def write_json(report: dict[str, Any], path: Path) -> None:
    atomic_write_bytes(path, (json.dumps(to_jsonable(report), indent=2) + "\n").encode())


def _pct(v: Any, digits: int = 2) -> str:
    return "–" if v is None else f"{100 * float(v):.{digits}f} %"


def _f(v: Any, digits: int = 3) -> str:
    return "–" if v is None else f"{float(v):.{digits}f}"


def _table(head: list[str], rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return out + [""]


def _md_header(r: dict[str, Any]) -> list[str]:
    m = r.get("machine", {})
    ds = r.get("dataset", {})
    lines = [f"# facesdk benchmark: {r.get('name')}", ""]
    lines += [
        f"- date (UTC): {r.get('created')}",
        f"- command: `{r.get('command')}`",
        f"- machine: {m.get('cpu')}, {m.get('cores')} cores, {m.get('memory_gib')} GiB, {m.get('os')}, "
        f"Python {m.get('python')}",
        *(
            [
                f"- dataset: {ds.get('dataset')} at `{ds.get('root')}`, protocol `{ds.get('protocol')}`, "
                f"{ds.get('images')} images"
                + (f", {ds.get('pairs')} pairs" if ds.get("pairs") else "")
                + (f" (limit {ds.get('limit')})" if ds.get("limit") else "")
            ]
            if ds
            else []
        ),
        f"- stages: {', '.join(r.get('stages') or [])}",
        f"- wall time: {r.get('seconds')} s, peak RSS {_f(r.get('peak_rss_mb'), 0)} MiB",
        "",
    ]
    return lines


def _md_verification(verif: list[dict[str, Any]]) -> list[str]:
    """Accuracy, TAR@FAR, quality tiers and per-fold thresholds of the verification rows."""
    fars = list(verif[0]["tar_at_far"].keys())
    lines = ["## Verification (k-fold: threshold chosen on the other folds)", ""]
    head = [
        "model",
        "backend",
        "precision",
        "device",
        "accuracy ± std",
        *[f"TAR@FAR={f}" for f in fars],
        "EER",
        "AUC",
        "mean fold thr",
        "no-detection fallback",
    ]
    body = []
    for x in verif:
        fb = sum(v.get("no_detection_fallback", 0) for k, v in x.get("embedding", {}).items() if k == "high")
        body.append(
            [
                x["model"],
                x["backend"],
                x["precision"],
                x["device"],
                f"{_pct(x['mean_accuracy'])} ± {_pct(x['std_accuracy'])}",
                *[
                    _pct(x["tar_at_far"][f]["tar"]) + ("" if x["tar_at_far"][f]["reliable"] else " *")
                    for f in fars
                ],
                _pct(x["eer"]),
                _f(x["auc"], 4),
                _f(np.mean(x["fold_thresholds"])),
                str(fb),
            ]
        )
    lines += _table(head, body)
    if any(not v["reliable"] for x in verif for v in x["tar_at_far"].values()):
        lines += ["\\* fewer than 1/FAR impostor pairs: that operating point is not resolved.", ""]
    lines += ["### Quality tiers (probe side degraded deterministically)", ""]
    head = ["model", "backend", "precision", "tier", "accuracy ± std", f"TAR@FAR={fars[0]}", "EER"]
    body = [
        [
            x["model"],
            x["backend"],
            x["precision"],
            t,
            f"{_pct(s['mean_accuracy'])} ± {_pct(s['std_accuracy'])}",
            _pct(s["tar_at_far"][fars[0]]["tar"]),
            _pct(s["eer"]),
        ]
        for x in verif
        for t, s in x.get("tiers", {}).items()
    ]
    lines += _table(head, body)
    lines += ["### Best threshold per fold", ""]
    for x in verif:
        lines.append(f"- {x['backend']}/{x['precision']}: " + ", ".join(_f(t) for t in x["fold_thresholds"]))
    lines.append("")
    return lines


def _md_identification(ident: list[dict[str, Any]]) -> list[str]:
    """Rank-k, DIR@FAR and precision/recall points of the open-set rows, per quality tier."""
    x0 = ident[0]
    lines = ["## Identification (1:N, open set)", "", f"Split: {x0.get('split')}", ""]
    head = [
        "model",
        "backend",
        "precision",
        "tier",
        "rank-1",
        "rank-5",
        "rank-10",
        *[f"DIR@FAR={f}" for f in x0["dir_at_far"]],
        "prec@recall≥0.99",
        "recall@prec≥0.999",
    ]
    body = []
    for x in ident:
        for t, s in x.get("tiers", {}).items():
            rk = s.get("rank_k", {})
            par = (s.get("precision_at_recall") or {}).get("0.99")
            rap = (s.get("recall_at_precision") or {}).get("0.999") or {}
            body.append(
                [
                    x["model"],
                    x["backend"],
                    x["precision"],
                    t,
                    _pct(rk.get("1")),
                    _pct(rk.get("5")),
                    _pct(rk.get("10")),
                    *[_pct(v["dir"]) for v in s["dir_at_far"].values()],
                    _pct(par["precision"]) if par else "unreachable",
                    _pct(rap.get("recall")),
                ]
            )
    return lines + _table(head, body)


def _md_latency(lat: list[dict[str, Any]]) -> list[str]:
    """Per-stage p50/p95/p99 and images/s of each latency configuration."""
    lines = ["## Latency (ms; p50 / p95 / p99; images/s from the mean)", ""]
    head = ["backend", "precision", "device", "detector on", "threads", "stage", "p50", "p95", "p99"]
    head.append("images/s")
    body = []
    for x in lat:
        ds_ = x.get("detector_session") or {}
        for st, v in x["stages"].items():
            body.append(
                [
                    x["backend"],
                    x["precision"],
                    x["device"],
                    f"{ds_.get('backend')}/{ds_.get('device')}",
                    str(x.get("threads")),
                    st,
                    _f(v["p50_ms"], 2),
                    _f(v["p95_ms"], 2),
                    _f(v["p99_ms"], 2),
                    _f(v["images_per_s"], 1),
                ]
            )
    lines += _table(head, body)
    lines.append(
        f"Peak RSS (process high-water mark): {_f(lat[-1].get('peak_rss_mb'), 0)} MiB. "
        f"Warm-up {lat[0]['warmup']}, repeats {lat[0]['repeats']}."
    )
    lines.append("")
    return lines


def _md_parity(par: dict[str, Any]) -> list[str]:
    """Cosine / max-abs-difference / decision flips of each embedder against the reference."""
    lines = [f"## Parity (same aligned faces; reference {par['reference']})", ""]
    if par.get("rows"):
        head = ["embedder", "faces", "mean cos", "min cos", "max abs diff", "pairs", "decision flips"]
        body = [
            [
                p["embedder"],
                str(p.get("faces")),
                _f(p.get("mean_cosine"), 6),
                _f(p.get("min_cosine"), 6),
                f"{p['max_abs_diff']:.2e}" if p.get("max_abs_diff") is not None else p.get("error", "–"),
                str(p.get("pairs", "–")),
                str(p.get("decision_flips", "–")),
            ]
            for p in par["rows"]
        ]
        lines += _table(head, body)
    if par.get("note"):
        lines += [par["note"], ""]
    return lines


def _md_peer(p: dict[str, Any]) -> str:
    """One peer's line: a detector peer (boxes, landmarks, latency), a verification peer, or why not run."""
    if "peer_latency" in p:
        return (
            f"- **{p['peer']}** on `{p['model']}` ({p['images']} images): top-box IoU mean "
            f"{_f(p['top_box_mean_iou'])} (min {_f(p['top_box_min_iou'])}), landmarks "
            f"{_f(p['landmark_mean_abs_px'], 2)} px apart, same face count on "
            f"{p['same_face_count']}/{p['images']}; on facesdk's own letterboxed input IoU "
            f"{_f(p.get('same_input_top_box_mean_iou'), 4)}, landmarks "
            f"{_f(p.get('same_input_landmark_mean_abs_px'), 3)} px; detect p50 peer "
            f"{_f(p['peer_latency']['p50_ms'], 2)}"
            f" ms vs facesdk {_f(p['facesdk_latency']['p50_ms'], 2)} ms. {p.get('note', '')}"
        )
    if "mean_accuracy" in p:
        return (
            f"- **{p['peer']}**: accuracy {_pct(p['mean_accuracy'])} ± {_pct(p['std_accuracy'])}, "
            f"EER {_pct(p['eer'])}, TAR@FAR=0.001 "
            f"{_pct(p['tar_at_far'].get('0.001', {}).get('tar'))} on the same pairs"
        )
    why = "available" if p.get("available") else f"not run ({p.get('reason')})"
    return f"- **{p.get('peer')}**: " + why


def _md_notes(r: dict[str, Any], rows: list[dict[str, Any]]) -> list[str]:
    """Stage results, configurations not run, and the images embedded from the fallback box."""
    lines: list[str] = []
    for name, res in (r.get("results") or {}).items():
        lines += [f"## {name}", ""]
        if res.get("markdown"):
            lines += [res["markdown"], ""]
        else:
            lines += ["```", json.dumps(res.get("result"), indent=2), "```", ""]
    if r.get("skipped"):
        lines += ["## Not run", ""]
        lines += [f"- {s['backend']}/{s['precision']}: {s['reason']}" for s in r["skipped"]]
        lines.append("")
    for x in rows:
        e = (x.get("embedding") or {}).get("high")
        if e and e.get("no_detection_fallback"):
            lines.append(
                f"{x['backend']}/{x['precision']}: {e['no_detection_fallback']} image(s) had no detection "
                "and were embedded from the fixed central box (median LFW box, template landmarks), e.g. "
                + ", ".join(e["fallback_examples"][:5])
                + "."
            )
            lines.append("")
    return lines


def render_markdown(report: dict[str, Any], plots: list[str] | None = None) -> str:
    """The Markdown report, every table generated from ``report`` (one section function each)."""
    r = to_jsonable(report)
    lines = _md_header(r)
    rows = r.get("rows", [])
    verif = [x for x in rows if "mean_accuracy" in x]
    ident = [x for x in rows if "rank_k" in x or ("tiers" in x and x.get("protocol") == "identify")]
    if verif:
        lines += _md_verification(verif)
    if ident:
        lines += _md_identification(ident)
    if r.get("latency"):
        lines += _md_latency(r["latency"])
    if r.get("parity"):
        lines += _md_parity(r["parity"])
    if r.get("peers"):
        lines += ["## Peers (the peer's implementation, not facesdk's)", ""]
        lines += [_md_peer(p) for p in r["peers"]] + [""]
    if r.get("precision_study"):
        from .precision import render as _render_precision

        lines += _render_precision(r["precision_study"])
    lines += _md_notes(r, rows)
    if plots:
        lines += ["## Plots", ""] + [f"![{p}]({p})" for p in plots] + [""]
    return "\n".join(lines)


def make_plots(report: dict[str, Any], out: Path) -> list[str]:
    """ROC / DET per backend, latency bars, quality-tier bars, CMC; returns file names written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written: list[str] = []
    styles = {"high-high": "-", "low-high": "--", "low-low": ":"}

    def save(fig: Any, name: str) -> None:
        fig.tight_layout()
        fig.savefig(out / name, dpi=110)
        plt.close(fig)
        written.append(name)

    curves = report.get("curves") or {}
    if curves:
        for kind in ("roc", "det"):
            fig, ax = plt.subplots(figsize=(6, 4.5))
            for label, tiers in curves.items():
                for tier, c in tiers.items():
                    far = np.asarray(c["far"])
                    tar = np.asarray(c["tar"])
                    y = tar if kind == "roc" else 1 - tar
                    keep = far > 0
                    ax.plot(far[keep], y[keep], styles.get(tier, "-"), label=f"{label} {tier}")
            ax.set_xscale("log")
            ax.set_xlabel("FAR (false accept rate)")
            if kind == "roc":
                ax.set_ylabel("TAR (true accept rate)")
                ax.set_title("ROC")
            else:
                ax.set_yscale("log")
                ax.set_ylabel("FRR (false reject rate)")
                ax.set_title("DET")
            ax.grid(True, which="both", alpha=0.3)
            ax.legend(fontsize=7)
            save(fig, f"{kind}.png")
    rows = report.get("rows") or []
    tier_rows = [(f"{x['backend']}/{x['precision']}", x["tiers"]) for x in rows if x.get("tiers")]
    if tier_rows:
        metric = "mean_accuracy" if "mean_accuracy" in next(iter(tier_rows[0][1].values())) else "rank1"
        fig, ax = plt.subplots(figsize=(6, 4))
        tiers = list(tier_rows[0][1].keys())
        w = 0.8 / len(tier_rows)
        for i, (label, t) in enumerate(tier_rows):
            vals = [
                t[k]["mean_accuracy"] if metric == "mean_accuracy" else t[k].get("rank_k", {}).get("1", 0)
                for k in tiers
            ]
            ax.bar(np.arange(len(tiers)) + i * w, vals, w, label=label)
        ax.set_xticks(np.arange(len(tiers)) + w * (len(tier_rows) - 1) / 2)
        ax.set_xticklabels(tiers)
        ax.set_ylabel("k-fold accuracy" if metric == "mean_accuracy" else "rank-1")
        ax.set_ylim(0, 1)
        ax.set_title("Quality tiers")
        ax.legend(fontsize=7)
        save(fig, "tiers.png")
    lat = report.get("latency") or []
    if lat:
        stages = list(lat[0]["stages"].keys())
        fig, ax = plt.subplots(figsize=(7, 4))
        w = 0.8 / len(lat)
        for i, x in enumerate(lat):
            vals = [x["stages"][s].get("per_image_p50_ms", x["stages"][s]["p50_ms"]) for s in stages]
            ax.bar(
                np.arange(len(stages)) + i * w,
                vals,
                w,
                label=f"{x['backend']}/{x['precision']} {x['device']} t={x.get('threads')}",
            )
        ax.set_xticks(np.arange(len(stages)) + w * (len(lat) - 1) / 2)
        ax.set_xticklabels(stages, rotation=30, ha="right", fontsize=8)
        ax.set_ylabel("p50 ms per image")
        ax.set_title("Latency per stage")
        ax.legend(fontsize=7)
        save(fig, "latency.png")
    cmc = report.get("cmc") or {}
    if cmc:
        fig, ax = plt.subplots(figsize=(6, 4))
        for label, tiers in cmc.items():
            for tier, c in tiers.items():
                ax.plot(
                    np.arange(1, len(c) + 1), c, styles.get(tier, "-"), marker=".", label=f"{label} {tier}"
                )
        ax.set_xlabel("rank")
        ax.set_ylabel("identification rate")
        ax.set_title("CMC (closed set)")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
        save(fig, "cmc.png")
    return written


def write_report(report: dict[str, Any], out: str | os.PathLike) -> dict[str, Path]:
    """Write report.json, plots and report.md into ``out``; return their paths."""
    o = Path(out)
    o.mkdir(parents=True, exist_ok=True)
    try:
        plots = make_plots(report, o)
    except ImportError:
        log.warning("matplotlib is not installed: no plots (pip install 'facesdk[bench]')")
        plots = []
    report["plots"] = plots
    write_json(report, o / "report.json")
    atomic_write_bytes(o / "report.md", render_markdown(report, plots).encode())
    paths = {"json": o / "report.json", "md": o / "report.md"}
    paths.update({p: o / p for p in plots})
    return paths
