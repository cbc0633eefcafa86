"""Open-set false accepts of strangers against small galleries: gallery-only margin vs cohort-margin.

Stage ``small-galleries`` of ``facesdk bench`` (:mod:`facesdk_bench.stages`)::

    facesdk bench --config benchmarks/configs/small-galleries.yaml

Why the cohort: a margin score ``s1 - lambda * s2`` (best minus second-best gallery score) has no second
score in a 1-person gallery, so a stranger's margin is its raw cosine — far above a threshold calibrated
for margins. Cohort-margin (:class:`facesdk.calibration.CohortMargin`) uses ``max(s2, best cohort score)``
instead, which keeps the reference at the level of a large gallery.

Per seeded trial and gallery size N: N people with >= 2 LFW photos are drawn and enrolled with one photo
each; the probes are the strangers (people with exactly one photo, none of them in the cohort). FAR = the
share of strangers whose top-1 normalised score reaches the card's calibrated cohort-margin
identification threshold (``[[operating_points]]`` for the recogniser's backend, precision, TTA,
template ``mean``). Both scores use that one threshold and the card's lambda. Options: ``sizes``, ``trials``,
``seed``, ``cohort`` (size), ``strangers`` (only the first N, sorted: quick runs). The dataset, models and
cohort (``cohort`` LFW DevTrain people with one photo, :func:`.openset.cohort_people`) come from the
config; embeddings through the bench cache (:class:`.protocols.ImageEmbedder`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from facesdk.errors import ConfigError

__all__ = ["run", "to_markdown", "far_at"]


def far_at(sim: np.ndarray, probes: np.ndarray, threshold: float, lam: float, cohort: Any | None) -> float:
    """Share of probe rows whose top-1 (gallery-only margin, or cohort-margin when ``cohort`` is given)
    reaches ``threshold``. ``sim``: ``[P, N]`` cosine scores of strangers against the gallery."""
    if cohort is not None:
        s = cohort.apply(sim, probes)
        top = s.max(1)
    else:
        s1 = sim.max(1)
        s2 = np.partition(sim, sim.shape[1] - 2, axis=1)[:, -2] if sim.shape[1] >= 2 else 0.0
        top = s1 - lam * s2
    return float(np.mean(top >= threshold))


def run(
    cfg: dict[str, Any],
    sizes: list[int] | None = None,
    trials: int = 10,
    seed: int = 0,
    cohort: int = 300,
    strangers: int | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """FAR of both scores per gallery size (mean ± std over the trials)."""
    from facesdk.calibration import CohortMargin, select_operating_point

    from .cache import default_cache_root
    from .datasets import load_dataset
    from .openset import cohort_people
    from .protocols import ImageEmbedder
    from .runner import _make_recognizer

    sizes = [int(n) for n in (sizes or [1, 10, 100])]
    if cfg.get("dataset") != "lfw" or not cfg.get("root"):
        raise ConfigError("small-galleries needs dataset: lfw and its root (the cohort is LFW DevTrain)")
    ds = load_dataset("lfw", cfg["root"])
    ids = ds.identities()
    coh_people = cohort_people(ids, cfg["root"], int(cohort))
    excl = set(coh_people)
    enrollable = sorted(p for p, v in ids.items() if len(v) >= 2 and p not in excl)
    outsiders = sorted(p for p, v in ids.items() if len(v) == 1 and p not in excl)[:strangers]
    if max(sizes) > len(enrollable):
        raise ConfigError(f"gallery size {max(sizes)} > {len(enrollable)} people with >= 2 photos")
    rng = np.random.default_rng(int(seed))
    draws = [
        [sorted(rng.choice(len(enrollable), n, replace=False).tolist()) for n in sizes]
        for _ in range(int(trials))
    ]
    rec = _make_recognizer(cfg, cfg["backends"][0], cfg["precision"][0], None)
    try:
        sess = rec.embedder_session
        pt = select_operating_point(
            rec.embedder_card.operating_points,
            "identification",
            backend=sess.backend,
            precision=sess.precision,
            tta=rec.tta,
            template="mean",
            normalization="cohort-margin",
        )
        if pt is None:
            raise ConfigError(f"{rec.model_id} has no calibrated cohort-margin identification point")
        lam = float(rec.embedder_card.params.get("margin_lambda", 0.5))
        gallery_keys = {enrollable[i]: sorted(ids[enrollable[i]])[0] for d in draws for t in d for i in t}
        keys = sorted(
            set(gallery_keys.values())
            | {ids[p][0] for p in outsiders}
            | {sorted(ids[p])[0] for p in coh_people}
        )
        emb = {
            k: r.emb
            for k, r in ImageEmbedder(
                rec, ds, Path(cfg["cache"]) if cfg.get("cache") else default_cache_root(), progress=progress
            )
            .embed(keys)
            .items()
        }
        desc = {
            "backend": sess.backend,
            "precision": sess.precision,
            "tta": rec.tta,
            "model": rec.model_id,
            "detector": rec.detector_card.id,
        }
    finally:
        rec.close()
    cm = CohortMargin(np.stack([emb[sorted(ids[p])[0]] for p in coh_people]), lam)
    P = np.stack([emb[ids[p][0]] for p in outsiders]).astype(np.float32)
    P /= np.linalg.norm(P, axis=1, keepdims=True)
    rows = []
    for j, n in enumerate(sizes):
        margin, cmargin = [], []
        for d in draws:
            G = np.stack([emb[gallery_keys[enrollable[i]]] for i in d[j]]).astype(np.float32)
            G /= np.linalg.norm(G, axis=1, keepdims=True)
            sim = P @ G.T
            margin.append(far_at(sim, P, pt.threshold, lam, None))
            cmargin.append(far_at(sim, P, pt.threshold, lam, cm))
        rows.append(
            {
                "gallery_size": n,
                "strangers": len(outsiders),
                "far_gallery_margin": {"mean": float(np.mean(margin)), "std": float(np.std(margin))},
                "far_cohort_margin": {"mean": float(np.mean(cmargin)), "std": float(np.std(cmargin))},
            }
        )
    return {
        **desc,
        "threshold": pt.threshold,
        "operating_point": pt.describe(),
        "lambda": lam,
        "cohort": len(coh_people),
        "trials": int(trials),
        "rows": rows,
    }


def to_markdown(res: dict[str, Any]) -> str:
    """One table row per gallery size."""
    lines = [
        f"{res['model']} ({res['backend']}/{res['precision']}, tta {res['tta']}), threshold "
        f"{res['threshold']:.4f} ({res['operating_point']}), lambda {res['lambda']}, {res['trials']} trials.",
        "",
        "| gallery size | strangers | FAR, gallery-only margin | FAR, cohort-margin |",
        "|---|---|---|---|",
    ]
    for r in res["rows"]:
        a, b = r["far_gallery_margin"], r["far_cohort_margin"]
        lines.append(
            f"| {r['gallery_size']} | {r['strangers']} | {100 * a['mean']:.2f} ± {100 * a['std']:.2f} % "
            f"| {100 * b['mean']:.2f} ± {100 * b['std']:.2f} % |"
        )
    return "\n".join(lines)
