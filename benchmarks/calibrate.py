"""``facesdk calibrate``: thresholds from labelled data, for verification and open-set identification.

The labelled data is a folder of ``person/`` sub-folders or LFW (optionally one
identity subset, e.g. ``devtrain`` so that the LFW ``devtest`` protocol never sees
a calibration identity). Images are embedded through the benchmark embedding cache
(:class:`~facesdk_bench.protocols.ImageEmbedder`).

* Verification: the k-fold cross-validated best-accuracy threshold (on LFW's
  ``pairsDevTrain.txt`` when calibrating on LFW DevTrain, else on generated
  balanced pairs), and the thresholds at each FAR from generated impostor pairs
  (all cross-identity pairs are candidates; a seeded sample is drawn).
* Open-set identification: per seeded trial, a gallery of ``gallery_size``
  identities (one photo each: every person with >= 2 photos, topped up with
  single-photo people as distractors while at least half of those remain),
  mated probes = the enrolled people's other photos, non-mated probes = the
  people not enrolled; top-1 scores of all trials are pooled and the threshold
  at each FAR is taken on the non-mated ones (:func:`facesdk.calibration.threshold_at_far`).
  Larger galleries raise the false-alarm rate at a fixed threshold (see
  :mod:`facesdk.calibration`), so the point states the gallery size.

Each point is stamped with the configuration it belongs to (model, detector,
backend, precision, tta, template policy, score normalisation) and can be
written into the embedder's card (``[[operating_points]]``).
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from facesdk.calibration import (
    MARGIN_LAMBDA,
    NORMALIZATIONS,
    CohortMargin,
    CohortNormalizer,
    OperatingPoint,
    calibrate_identification,
    calibrate_verification,
    identity_scores,
    open_set_top1,
)
from facesdk.errors import ConfigError
from facesdk.fileio import atomic_writer

from .openset import identity_templates

__all__ = ["calibration_split", "make_pairs", "calibrate_embeddings", "write_card_points", "write_cohort",
           "register", "cmd_calibrate", "run_calibration", "calibration_args", "CalibrationRun"]

log = logging.getLogger(__name__)

MARKER = "# ---- operating points: written by `facesdk calibrate` (facesdk_bench.calibrate); keep last ----"


def calibration_split(
    identities: Mapping[str, Sequence[str]], gallery_size: int, seed: int,
) -> tuple[dict[str, str], list[tuple[str, str]], list[tuple[str, str]]]:
    """One calibration trial: ``(gallery {person: key}, mated [(key, person)], non-mated [(key, person)])``.
    """
    rng = np.random.default_rng(seed)
    people = sorted(identities)
    multi = [p for p in people if len(identities[p]) >= 2]
    single = [p for p in people if len(identities[p]) == 1]
    multi = [multi[i] for i in rng.permutation(len(multi))]
    single = [single[i] for i in rng.permutation(len(single))]
    if not single:  # no single-photo people: hold out half of the others as impostors
        half = len(multi) // 2
        enrolled, impostors = multi[:half][:gallery_size], multi[half:]
    else:
        enrolled = multi[:gallery_size]
        extra = max(0, min(gallery_size - len(enrolled), len(single) // 2))
        enrolled = enrolled + single[:extra]
        impostors = single[extra:] + multi[gallery_size:]
    if not enrolled or not impostors:
        raise ConfigError("calibration needs people to enroll and people left out (add identities)")
    gallery: dict[str, str] = {}
    mated: list[tuple[str, str]] = []
    for p in enrolled:
        imgs = sorted(identities[p])
        j = int(rng.integers(len(imgs)))
        gallery[p] = imgs[j]
        mated.extend((k, p) for i, k in enumerate(imgs) if i != j)
    non_mated = [(k, p) for p in impostors for k in sorted(identities[p])]
    return gallery, mated, non_mated


def make_pairs(identities: Mapping[str, Sequence[str]], seed: int, *, per_person: int = 20,
               impostors: int = 20000) -> tuple[list[str], list[str], np.ndarray]:
    """Genuine pairs (at most ``per_person`` per identity) and ``impostors`` random cross-identity pairs."""
    rng = np.random.default_rng(seed)
    a: list[str] = []
    b: list[str] = []
    people = sorted(identities)
    for p in people:
        imgs = sorted(identities[p])
        pairs = [(i, j) for i in range(len(imgs)) for j in range(i + 1, len(imgs))]
        for t in rng.permutation(len(pairs))[:per_person]:
            i, j = pairs[t]
            a.append(imgs[i])
            b.append(imgs[j])
    n_gen = len(a)
    if n_gen == 0 or len(people) < 2:
        raise ConfigError("verification calibration needs people with >= 2 photos and >= 2 people")
    owner = [p for p in people for _ in identities[p]]
    keys = [k for p in people for k in sorted(identities[p])]
    m = 0
    while m < impostors:
        i, j = rng.integers(len(keys), size=2)
        if owner[i] != owner[j]:
            a.append(keys[i])
            b.append(keys[j])
            m += 1
    return a, b, np.r_[np.ones(n_gen, bool), np.zeros(impostors, bool)]


def _cos(ea: np.ndarray, eb: np.ndarray) -> np.ndarray:
    ea = ea / np.linalg.norm(ea, axis=1, keepdims=True)
    eb = eb / np.linalg.norm(eb, axis=1, keepdims=True)
    return np.einsum("ij,ij->i", ea, eb).astype(np.float64)


def calibrate_embeddings(
    emb: Mapping[str, np.ndarray], identities: Mapping[str, Sequence[str]], *,
    fars: Sequence[float] = (0.01, 0.001), gallery_size: int = 1000, trials: int = 10, seed: int = 0,
    normalizations: Sequence[str] = ("none",), cohort_emb: np.ndarray | None = None,
    exclude: Sequence[str] = (), margin_lambda: float = MARGIN_LAMBDA, confidence: float | None = None,
    verification_pairs: tuple[list[str], list[str], np.ndarray] | None = None, k: int = 10,
    data: str = "", config: Mapping[str, Any] | None = None,
) -> list[OperatingPoint]:
    """Operating points for verification and open-set identification from embedded labelled images.

    Args:
        emb: ``{image key: embedding}`` covering ``identities``.
        identities: ``{person: [keys]}`` to calibrate on (people in ``exclude`` are left out).
        verification_pairs: ``(a, b, same)`` for the k-fold best-accuracy threshold (default: generated).
        cohort_emb: ``[C, D]`` cohort embeddings (for ``as-norm`` and ``cohort-margin``).
        exclude: people left out of the calibration (the cohort's, when it comes from the same data).
        config: backend, precision, tta, detector … stamped on every point.
    """
    for n in normalizations:
        if n not in NORMALIZATIONS:
            raise ConfigError(f"normalization must be one of {NORMALIZATIONS}, not {n!r}")
    cfg = dict(config or {})
    excl = set(exclude)
    ids = {p: list(v) for p, v in identities.items() if p not in excl and v}
    n_img = sum(len(v) for v in ids.values())
    points: list[OperatingPoint] = []
    # verification
    a, b, same = make_pairs(ids, seed)
    s = _cos(np.stack([emb[x] for x in a]), np.stack([emb[x] for x in b]))
    vp = calibrate_verification(s, same, fars=fars, k=k, seed=seed, data=data, template="mean",
                                normalization="none",
                                method=f"{len(a):,} generated pairs ({int(same.sum()):,} genuine), "
                                f"{n_img:,} images of {len(ids):,} people", **cfg)
    if verification_pairs is not None:
        pa, pb, ps = verification_pairs
        s2 = _cos(np.stack([emb[x] for x in pa]), np.stack([emb[x] for x in pb]))
        best = calibrate_verification(s2, ps, fars=(), k=k, seed=seed, data=data, template="mean",
                                      normalization="none", method=f"{k}-fold cross-validation on "
                                      f"{len(pa):,} labelled pairs", **cfg)[0]
        vp[0] = best
    points += vp
    # open-set identification
    for norm in normalizations:
        nz: CohortNormalizer | CohortMargin | None = None
        if norm != "none":
            if cohort_emb is None or len(cohort_emb) == 0:
                raise ConfigError(f"{norm} calibration needs a cohort")
            nz = (CohortNormalizer(cohort_emb) if norm == "as-norm"
                  else CohortMargin(cohort_emb, margin_lambda))
        top1s, mateds, corrects = [], [], []
        g_size = 0
        n_nm = 0
        for t in range(trials):
            gallery, mated, non_mated = calibration_split(ids, gallery_size, seed + t)
            names = sorted(gallery)
            g_size = len(names)
            G = np.stack([emb[gallery[n]] for n in names])
            probes = mated + non_mated
            P = np.stack([emb[x] for x, _ in probes])
            lab = np.arange(len(names))
            sim = identity_scores(P, G, lab, len(names), "mean")
            if nz is not None:
                sim = nz.apply(sim, P, identity_templates(G, lab, len(names)))
            t1, m, c = open_set_top1(sim, [p for _, p in probes], names)
            n_nm = len(non_mated)
            top1s.append(t1)
            mateds.append(m)
            corrects.append(c)
        method = (f"held-out identities; {trials} seeded trials pooled, gallery of {g_size:,} identities "
                  "x 1 photo"
                  + (f", {norm} against a cohort of {len(cohort_emb)} other people"  # type: ignore[arg-type]
                     if nz is not None else "")
                  + (f" (lambda {margin_lambda:g})" if norm == "cohort-margin" else ""))
        pts = calibrate_identification(
            np.concatenate(top1s), np.concatenate(mateds), np.concatenate(corrects), fars=fars,
            gallery_size=g_size, data=data, method=method, template="mean", normalization=norm,
            confidence=confidence, n_eff=n_nm, **cfg,
        )
        points += pts
    return points


# ---------------------------------------------------------------------- cards

def write_cohort(path: str | Path, embeddings: np.ndarray, meta: Mapping[str, Any]) -> Path:
    """Save a cohort (``emb`` float32 [C, D] and a JSON ``meta``) atomically, no pickles."""
    p = Path(path)
    e = np.asarray(embeddings, np.float32)
    e = e / np.linalg.norm(e, axis=1, keepdims=True)
    with atomic_writer(p) as f:
        np.savez(f, emb=e.astype(np.float16), meta=np.array(json.dumps(dict(meta))))
    p.chmod(0o644)  # package data: readable by everyone
    return p


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, (float, np.floating)):
        return repr(round(float(v), 6))
    if isinstance(v, Mapping):
        return "{ " + ", ".join(f"{_key(k)} = {_toml_value(x)}" for k, x in v.items()) + " }"
    return json.dumps(str(v), ensure_ascii=False)  # a JSON string is a valid TOML basic string


def _key(k: str) -> str:
    return k if re.fullmatch(r"[A-Za-z0-9_-]+", k) else json.dumps(k)


def _same_slot(a: OperatingPoint, b: OperatingPoint) -> bool:
    # a new calibration of a configuration replaces all of its earlier points (no stale leftovers)
    fields = ("task", "backend", "precision", "tta", "template", "normalization", "detector")
    return all(getattr(a, f) == getattr(b, f) for f in fields)


def _strip_tables(text: str, headers: Sequence[str]) -> str:
    """Remove TOML tables with these headers (and the comment lines just above them) from a card's text;
    their content is rewritten (from the parsed card) in the calibrate section."""
    lines = text.split("\n")
    out: list[str] = []
    skip = False
    for ln in lines:
        st = ln.strip()
        if st.startswith("["):
            skip = st in headers
            if skip:
                while out and out[-1].strip().startswith("#"):
                    out.pop()
        if not skip:
            out.append(ln)
    return "\n".join(out).rstrip("\n")


def write_card_points(card_path: str | Path, points: Sequence[OperatingPoint], *,
                      score_normalization: Mapping[str, Any] | None = None) -> Path:
    """Add operating points to a card TOML file, atomically, replacing the earlier points of each
    configuration (task, backend, precision, tta, template policy, normalisation, detector).

    ``score_normalization`` (``{"method", "cohort", "lambda"}``) makes that 1:N decision score the
    card's default (a ``[score_normalization]`` table; the cohort file path is relative to the card).
    """
    from facesdk.zoo import ModelCard

    p = Path(card_path)
    card = ModelCard.from_toml(p)
    if card.task != "embed":
        raise ConfigError(f"{p} is a {card.task} card; operating points belong on embedder cards")
    keep = [o for o in card.operating_points if not any(_same_slot(o, n) for n in points)]
    text = p.read_text(encoding="utf-8")
    head = text.split(MARKER)[0].rstrip("\n")
    head = _strip_tables(head, ("[[operating_points]]", "[score_normalization]"))
    lines = [head, "", MARKER]
    sn = dict(score_normalization) if score_normalization else None
    if sn is None and card.params.get("score_normalization", "none") != "none" and card.params.get("cohort"):
        sn = {"method": card.params["score_normalization"], "cohort": card.params["cohort"],
              "lambda": card.params.get("margin_lambda", MARGIN_LAMBDA)}
    if sn:
        lines += ["", "# the default 1:N decision score and its impostor cohort (see facesdk.calibration)",
                  "[score_normalization]"] + [f"{k} = {_toml_value(v)}" for k, v in sn.items()]
    for o in [*keep, *points]:
        d = o.to_dict()
        d.pop("description", None)
        lines.append("")
        lines.append(f"# {o.describe()}")
        lines.append("[[operating_points]]")
        for k, v in d.items():
            if v is None or (isinstance(v, Mapping) and not v):
                continue
            lines.append(f"{k} = {_toml_value(v)}")
    new = "\n".join(lines) + "\n"
    with atomic_writer(p) as f:
        f.write(new.encode("utf-8"))
    ModelCard.from_toml(p)  # it must still parse
    return p


# ---------------------------------------------------------------------- command

def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``facesdk calibrate``."""
    p = subparsers.add_parser(
        "calibrate", help="compute verification and open-set identification thresholds from labelled data",
        description="Embed a labelled dataset (LFW or a folder of person/ sub-folders) and compute "
                    "thresholds for verification (k-fold best accuracy, FARs) and open-set identification "
                    "(FARs at a gallery size); print them, write JSON, and optionally store them on the "
                    "embedder's card.",
    )
    p.add_argument("--dataset", default="folder", help="lfw or folder (default folder)")
    p.add_argument("--root", required=True, help="dataset directory")
    p.add_argument("--subset", default="all",
                   help="LFW identities to use: devtrain (recommended: never in the devtest protocol) or all")
    p.add_argument("--fars", default="0.01,0.001", help="comma-separated target FARs (default 0.01,0.001)")
    p.add_argument("--gallery-size", type=int, default=1000, help="identities in the calibration gallery")
    p.add_argument("--trials", type=int, default=10, help="seeded gallery draws pooled (default 10)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--folds", type=int, default=10, help="k of the best-accuracy cross-validation")
    p.add_argument("--normalizations", default="none",
                   help="comma-separated: none, as-norm, cohort-margin (the last two need the LFW cohort)")
    p.add_argument("--cohort", type=int, default=300, help="cohort size (LFW DevTrain single-photo people)")
    p.add_argument("--cohort-root", metavar="DIR",
                   help="cohort: the first photo of each person/ sub-folder of DIR (default for LFW: "
                        "DevTrain people with one photo, left out of the calibration)")
    p.add_argument("--confidence", type=float,
                   help="identification thresholds keep the Wilson upper bound of the FAR (on the distinct "
                        "impostors of one trial) at or below the target, e.g. 0.95")
    p.add_argument("--margin-lambda", type=float, default=MARGIN_LAMBDA,
                   help=f"lambda of cohort-margin (default {MARGIN_LAMBDA})")
    p.add_argument("--ship-normalization", choices=["cohort-margin"],
                   help="with --write-card: save the cohort next to the card and make this the card's "
                        "default 1:N decision score")
    p.add_argument("--limit", type=int, help="use only the first N people (sorted) of the subset: quick runs")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--cache", help="embedding cache directory (default $FACESDK_BENCH_CACHE)")
    p.add_argument("--out", help="write the operating points as JSON here")
    p.add_argument("--write-card", metavar="CARD.toml", help="store the points on this embedder card file")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_calibrate)
    return p


@dataclass
class CalibrationRun:
    """What :func:`run_calibration` measured: the JSON report and what writing the card needs."""

    out: dict[str, Any]
    points: list[OperatingPoint]
    model_id: str
    config: dict[str, Any]
    cohort_emb: np.ndarray | None = None
    cohort_source: str = ""
    cohort_people: list[str] | None = None


def calibration_args(options: Mapping[str, Any], **defaults: Any) -> argparse.Namespace:
    """``facesdk calibrate``'s arguments from a mapping (a bench config section): ``{gallery_size: 1680}``
    is ``--gallery-size 1680``, lists are comma-joined, ``True`` is the bare flag; ``defaults`` (e.g.
    detector, embedder, backend) apply where the mapping has no value. Card writing is not offered."""
    parser = argparse.ArgumentParser(prog="facesdk", add_help=False)
    register(parser.add_subparsers())
    opts = {**{k: v for k, v in defaults.items() if v is not None}, **dict(options)}
    if opts.keys() & {"write_card", "ship_normalization"}:
        raise ConfigError("a benchmark stage does not write cards: run `facesdk calibrate --write-card`")
    global_opts = {
        k: opts.pop(k) for k in ("detector", "embedder", "backend", "device", "precision") if k in opts
    }
    argv = ["calibrate"]
    for k, v in opts.items():
        flag = "--" + str(k).replace("_", "-")
        if v is True:
            argv.append(flag)
        elif v not in (None, False):
            argv += [flag, ",".join(map(str, v)) if isinstance(v, (list, tuple)) else str(v)]
    try:
        args = parser.parse_args(argv)
    except SystemExit:
        raise ConfigError(f"calibration options not understood: {' '.join(argv[1:])}") from None
    for k, v in global_opts.items():
        setattr(args, k, v)
    return args


def cmd_calibrate(args: argparse.Namespace) -> int:
    """Handler of ``facesdk calibrate``."""
    run = run_calibration(args)
    out, points, cfg = run.out, run.points, run.config
    if args.out:
        with atomic_writer(Path(args.out)) as f:
            f.write((json.dumps(out, indent=2) + "\n").encode())
    if args.write_card:
        shipped = None
        if args.ship_normalization:
            assert run.cohort_emb is not None
            rel = f"cohorts/{run.model_id}.npz"
            write_cohort(Path(args.write_card).parent / rel, run.cohort_emb, {
                "model": run.model_id, **cfg, "people": run.cohort_people, "source": run.cohort_source})
            shipped = {"method": args.ship_normalization, "cohort": rel, "lambda": args.margin_lambda}
        write_card_points(args.write_card, points, score_normalization=shipped)
    if getattr(args, "json", False):
        sys.stdout.write(json.dumps(out, indent=2) + "\n")
    else:
        for p in points:
            m = ", ".join(f"{k} {v:.4f}" for k, v in p.measured.items()
                          if k in ("far", "frr", "dir", "cv_accuracy"))
            sys.stdout.write(f"{p.task:<15} {p.threshold:.4f}  {p.describe()}  [{m}]\n")
    return 0


def run_calibration(args: argparse.Namespace) -> CalibrationRun:
    """Embed the labelled data and compute the operating points (``facesdk calibrate`` without its output
    steps; also stage ``calibrate`` of ``facesdk bench``)."""
    from facesdk.pipeline import FaceRecognizer

    from .cache import default_cache_root
    from .datasets import load_dataset
    from .openset import cohort_people, lfw_people
    from .protocols import ImageEmbedder

    try:
        fars = [float(f) for f in str(args.fars).split(",") if f.strip()]
    except ValueError:
        raise ConfigError(f"--fars must be comma-separated numbers, not {args.fars!r}") from None
    norms = [n.strip() for n in str(args.normalizations).split(",") if n.strip()]
    if args.gallery_size < 1 or args.trials < 1:
        raise ConfigError("--gallery-size and --trials must be >= 1")
    ds = load_dataset(args.dataset, args.root)
    all_ids = ds.identities()
    ids = dict(all_ids)
    subset_people = lfw_people(args.root, args.subset) if args.dataset == "lfw" else None
    if args.dataset != "lfw" and args.subset != "all":
        raise ConfigError("--subset applies to --dataset lfw only")
    if subset_people is not None:
        ids = {p: v for p, v in ids.items() if p in subset_people}
    if args.limit:
        if args.limit < 4:
            raise ConfigError("--limit must be >= 4 people")
        ids = {p: ids[p] for p in sorted(ids)[: args.limit]}
    cohort: list[str] = []
    need_cohort = bool(set(norms) - {"none"}) or bool(args.ship_normalization)
    if need_cohort and not args.cohort_root:
        if args.dataset != "lfw":
            raise ConfigError("score normalisation needs a cohort: --cohort-root DIR (or --dataset lfw)")
        cohort = cohort_people(all_ids, args.root, args.cohort)
    if args.ship_normalization and (args.ship_normalization not in norms or not args.write_card):
        raise ConfigError("--ship-normalization needs --write-card and the same --normalizations entry")
    rec = FaceRecognizer(
        detector=getattr(args, "detector", None), embedder=getattr(args, "embedder", None),
        backend=getattr(args, "backend", "auto"), device=getattr(args, "device", "auto"),
        precision=getattr(args, "precision", "fp32"), backend_options={"threads": args.threads},
    )
    emb_ = ImageEmbedder(rec, ds, Path(args.cache) if args.cache else default_cache_root(),
                         progress=not args.no_progress)
    keys = [k for v in ids.values() for k in v] + [min(all_ids[p]) for p in cohort]
    recs = emb_.embed(keys)
    emb = {k: r.emb for k, r in recs.items()}
    cohort_emb = None
    if cohort:
        cohort_emb = np.stack([emb[min(all_ids[p])] for p in cohort])
        cohort_src = ("LFW DevTrain people with exactly one photo (peopleDevTrain.txt), seeded draw of "
                      f"{len(cohort)}; left out of calibration and of every test that uses the cohort")
    elif need_cohort:
        cds = load_dataset("folder", args.cohort_root)
        cids = cds.identities()
        clash = set(cids) & set(ids)
        if clash:
            raise ConfigError(f"cohort people also in the calibration data: {', '.join(sorted(clash)[:5])}")
        cemb = ImageEmbedder(rec, cds, Path(args.cache) if args.cache else default_cache_root(),
                             progress=not args.no_progress)
        crecs = cemb.embed([min(v) for v in cids.values()])
        cohort_emb = np.stack([r.emb for r in crecs.values()])
        cohort = sorted(cids)
        cohort_src = f"first photo of each of the {len(cids)} people of {args.cohort_root}"
    pairs = None
    if args.dataset == "lfw" and args.subset == "devtrain" and not args.limit:
        pl = ds.pairs("devtrain")
        recs2 = emb_.embed(pl.images())
        emb.update({k: r.emb for k, r in recs2.items()})
        pairs = (pl.a, pl.b, pl.same)
    used = [p for p in ids if p not in set(cohort)]
    n_img = sum(len(ids[p]) for p in used)
    what = f"LFW {args.subset} identities" if args.dataset == "lfw" else f"folder {args.root}"
    if args.limit:
        what += f" (first {args.limit} people by name)"
    data = f"{what} ({len(used):,} people, {n_img:,} images)"
    sess = rec.embedder_session
    cfg = {"backend": sess.backend, "precision": sess.precision, "tta": rec.tta,
           "detector": rec.detector_card.id}
    points = calibrate_embeddings(
        emb, ids, fars=fars, gallery_size=args.gallery_size, trials=args.trials, seed=args.seed,
        normalizations=norms, cohort_emb=cohort_emb, exclude=cohort, verification_pairs=pairs, k=args.folds,
        data=data, config=cfg, margin_lambda=args.margin_lambda, confidence=args.confidence,
    )
    fb = emb_.stats["high"].to_dict()["no_detection_fallback"] if "high" in emb_.stats else 0
    out = {"model": rec.model_id, "detector": rec.detector_card.id, **cfg, "dataset": args.dataset,
           "root": str(args.root), "subset": args.subset, "no_detection_fallback": fb,
           "operating_points": [p.to_dict() for p in points]}
    model_id = rec.model_id
    rec.close()
    return CalibrationRun(out, list(points), model_id, cfg, cohort_emb,
                          cohort_src if cohort_emb is not None else "", list(cohort))



