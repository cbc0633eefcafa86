"""Thresholds that know their task: operating points, calibration, template policies, cohort normalisation.

A similarity threshold only means something together with the task and the
operating point it was chosen for. 1:1 verification compares one pair; 1:N
open-set identification takes the *best* of N gallery scores, so its
false-accept rate at a fixed threshold grows with the gallery (for independent
impostor scores with per-comparison false-match rate p, the open-set
false-alarm rate is ``1 - (1 - p)**N``; Grother & Phillips, "Models of large
population recognition performance", CVPR 2004). This module therefore keeps
one :class:`OperatingPoint` per (task, model, backend, precision, tta, template
policy, score normalisation), with the FAR it targets, the gallery size it was
calibrated at and the data it came from.

Definitions (accept when ``score >= threshold``):

* verification FAR / FRR: impostor pairs accepted / impostor pairs, genuine
  pairs rejected / genuine pairs; best-accuracy threshold chosen by k-fold
  cross-validation as in the LFW protocol (Huang et al., "Labeled Faces in the
  Wild", UMass TR 07-49, 2007: pick the threshold on k-1 folds).
* open-set identification (ISO/IEC 19795-1; Phillips, Grother & Micheals,
  "Evaluation methods in face recognition", Handbook of Face Recognition 2005):
  FAR (false-alarm rate) = non-mated probes whose top-1 score is >= t / non-mated
  probes; DIR (detection and identification rate) = mated probes whose top-1
  identity is right and whose score is >= t / mated probes; FRR = 1 - DIR.
* threshold at FAR f over n impostor scores: the smallest threshold that accepts
  at most ``floor(f * n)`` of them (no interpolation).

Template policies for identities enrolled from several photos:
``mean`` (cosine to the renormalised mean of the L2-normalised embeddings,
"weight imprinting": Qi, Brown & Lowe, CVPR 2018), ``max`` (best cosine over
the identity's photos) and ``both`` (average of the two scores).

Cohort margin (``cohort-margin``): the probe's top-1 score minus ``lambda`` times a
reference score, the higher of the probe's second-best gallery score and its best
score against a fixed impostor cohort, ``s' = s1 - lambda * max(s2, c1)``. It is the
ratio test of nearest-neighbour matching (Lowe, "Distinctive image features from
scale-invariant keypoints", IJCV 2004: accept a match only when it is clearly better
than the next candidate) made safe for small galleries by the cohort: without it a
1-identity gallery has no second score and every stranger would pass. It shifts all of
a probe's scores by the same amount, so the ranking (rank-1) is unchanged; only the
accept/reject decision changes.

Cohort score normalisation (adaptive symmetric normalisation, AS-norm:
Cumani et al., "Comparison of speaker recognition approaches for real
applications", Interspeech 2011; Matějka et al., "Analysis of score
normalization in multilingual speaker recognition", Interspeech 2017): with a
fixed impostor cohort C, ``s' = ((s - mu_p)/sd_p + (s - mu_g)/sd_g) / 2`` where
``mu_p, sd_p`` are the mean and standard deviation of the probe's top-K cosine
scores against C, and ``mu_g, sd_g`` those of the gallery template.
"""

from __future__ import annotations

import datetime as _dt
import logging
import math
from dataclasses import asdict, dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

from .errors import ConfigError

__all__ = [
    "TASKS",
    "TEMPLATE_POLICIES",
    "NORMALIZATIONS",
    "COSINE_RANGE",
    "OperatingPoint",
    "check_threshold",
    "threshold_at_far",
    "wilson_upper",
    "best_accuracy_threshold",
    "kfold_best_accuracy",
    "calibrate_verification",
    "open_set_top1",
    "open_set_rates",
    "calibrate_identification",
    "identity_scores",
    "CohortNormalizer",
    "CohortMargin",
    "MARGIN_LAMBDA",
    "select_operating_point",
]

log = logging.getLogger(__name__)

TASKS = ("verification", "identification")
TEMPLATE_POLICIES = ("mean", "max", "both")
NORMALIZATIONS = ("none", "as-norm", "cohort-margin")
#: weight of the reference score in the cohort-margin normalisation
MARGIN_LAMBDA = 0.5
#: Range of cosine similarity. A threshold at or below the lower end accepts everything.
COSINE_RANGE = (-1.0, 1.0)


# ---------------------------------------------------------------------- operating points

@dataclass(frozen=True)
class OperatingPoint:
    """A threshold and the operating point it was calibrated for.

    Attributes:
        task: ``"verification"`` (1:1) or ``"identification"`` (open-set 1:N).
        threshold: accept when score >= threshold.
        target: what was asked for: ``"far"`` (a false-accept rate), ``"best-accuracy"``
            (k-fold verification accuracy), or ``"user"`` (given explicitly).
        far: the target FAR (for ``target == "far"``).
        gallery_size: identities in the gallery it was calibrated with (identification).
        backend, precision, tta, template, normalization: the configuration it belongs to.
        detector: the detector of the calibrated pipeline.
        data: the labelled data it was calibrated on.
        method: how data not reported on was kept apart (e.g. ``"held-out identities"``,
            ``"10-fold cross-validation"``).
        measured: rates measured at the threshold on the calibration data (far, frr, dir, accuracy…).
        date: when it was calibrated (UTC date).
    """

    task: str
    threshold: float
    target: str = "far"
    far: float | None = None
    gallery_size: int | None = None
    backend: str = "*"
    precision: str = "*"
    tta: str = "*"
    template: str = "mean"
    normalization: str = "none"
    #: the FAR is an upper confidence bound at this level (None: a point estimate)
    confidence: float | None = None
    detector: str | None = None
    data: str = ""
    method: str = ""
    measured: Mapping[str, float] = field(default_factory=dict)
    date: str = ""

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ConfigError(f"operating point task must be one of {TASKS}, not {self.task!r}")
        if self.template not in TEMPLATE_POLICIES:
            raise ConfigError(f"template policy must be one of {TEMPLATE_POLICIES}, not {self.template!r}")
        if self.normalization not in NORMALIZATIONS:
            raise ConfigError(f"normalization must be one of {NORMALIZATIONS}, not {self.normalization!r}")
        if not isinstance(self.threshold, (int, float)) or not math.isfinite(self.threshold):
            raise ConfigError(f"operating point threshold must be a finite number, not {self.threshold!r}")
        if self.far is not None and not 0.0 < float(self.far) < 1.0:
            raise ConfigError(f"operating point FAR must be in (0, 1), not {self.far!r}")

    def describe(self) -> str:
        """One line, e.g. ``"FAR 1 % open-set identification, gallery <= 1,680, calibrated on …"``."""
        what = "open-set identification" if self.task == "identification" else "verification"
        if self.target == "far" and self.far is not None and self.confidence:
            head = f"FAR <= {_pct(self.far)} ({self.confidence * 100:g} % upper bound) {what}"
        elif self.target == "far" and self.far is not None:
            head = f"FAR {_pct(self.far)} {what}"
        elif self.target == "best-accuracy":
            head = f"best-accuracy {what}"
        elif self.target == "user":
            return f"{what} threshold {self.threshold:g} given by the user (no calibrated operating point)"
        else:
            head = f"{self.target} {what}"
        parts = [head]
        if self.task == "identification" and self.gallery_size:
            parts.append(f"gallery <= {self.gallery_size:,}")
        cfg = [f"{k} {v}" for k, v in (("template", self.template), ("norm", self.normalization)) if v]
        if self.backend != "*":
            cfg.insert(0, f"{self.backend}/{self.precision}")
        if self.tta != "*":
            cfg.append(f"tta {self.tta}")
        parts.append(", ".join(cfg))
        if self.data:
            parts.append(f"calibrated on {self.data}" + (f" ({self.method})" if self.method else ""))
        return "; ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["measured"] = dict(self.measured)
        d["description"] = self.describe()
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "OperatingPoint":
        known = {f for f in cls.__dataclass_fields__}  # type: ignore[attr-defined]
        kw = {k: v for k, v in d.items() if k in known}
        try:
            kw["threshold"] = float(kw["threshold"])
        except (KeyError, TypeError, ValueError):
            raise ConfigError(f"operating point without a numeric threshold: {dict(d)!r}") from None
        if kw.get("far") is not None:
            kw["far"] = float(kw["far"])
        if kw.get("confidence") is not None:
            kw["confidence"] = float(kw["confidence"])
        if kw.get("gallery_size") is not None:
            kw["gallery_size"] = int(kw["gallery_size"])
        kw["measured"] = {str(k): float(v) for k, v in dict(kw.get("measured") or {}).items()}
        return cls(**kw)

    @classmethod
    def user(cls, task: str, threshold: float, **kw: Any) -> "OperatingPoint":
        """An explicit threshold given by the caller."""
        return cls(task=task, threshold=float(threshold), target="user", **kw)


def _pct(f: float) -> str:
    v = f * 100
    return f"{v:g} %"


def check_threshold(value: Any, *, what: str = "threshold", normalization: str = "none",
                    score_range: tuple[float, float] = COSINE_RANGE,
                    error: type[Exception] = ConfigError) -> float:
    """Validate a threshold: finite and inside the score range (lower end excluded: it accepts everyone).

    Normalised (AS-norm) scores are unbounded z-scores; only finiteness is checked for them.
    """
    try:
        t = float(value)
    except (TypeError, ValueError):
        raise error(f"{what} {value!r} is not a number") from None
    if not math.isfinite(t):
        raise error(f"{what} {value!r} is not finite")
    if normalization == "none":
        lo, hi = score_range
        if not lo < t <= hi:
            raise error(
                f"{what} {t:g} is outside the model's score range ({lo:g}, {hi:g}]: "
                f"a threshold at or below {lo:g} accepts every face as a match"
            )
    return t


def select_operating_point(
    points: Sequence[OperatingPoint], task: str, *, backend: str, precision: str, tta: str,
    template: str = "mean", normalization: str = "none",
) -> OperatingPoint | None:
    """The best-matching calibrated point: exact configuration first, then wildcards.

    Task, template policy and normalisation must match; backend/precision/tta may
    fall back to the card's wildcard (``"*"``) or to another backend at the same
    precision (the point then still names the backend it was measured on). Among
    equally good matches: for verification the k-fold best-accuracy point, for
    identification the point whose FAR is closest to 1 %.
    """
    cands = [p for p in points
             if p.task == task and p.template == template and p.normalization == normalization]
    if not cands:
        return None

    def rank(p: OperatingPoint) -> tuple[int, int, int, float]:
        return (
            0 if p.tta == tta else (1 if p.tta == "*" else 9),
            0 if p.precision == precision else (1 if p.precision == "*" else 9),
            0 if p.backend == backend else (1 if p.backend == "*" else 2),
            # verification: the best-accuracy point; identification: the FAR closest to 1 %
            (0.0 if p.target == "best-accuracy" else 1.0 + abs(math.log10(p.far) + 2) if p.far else 9.0)
            if task == "verification" else (abs(math.log10(p.far) + 2) if p.far else 9.0),
        )

    best = min(cands, key=rank)
    r = rank(best)
    if r[0] == 9 or r[1] == 9:
        return None
    return best


# ---------------------------------------------------------------------- threshold search

def _scores(x: Any, what: str) -> np.ndarray:
    s = np.asarray(x, dtype=np.float64).ravel()
    if s.size == 0:
        raise ConfigError(f"no {what}")
    if not np.all(np.isfinite(s)):
        raise ConfigError(f"{what} contain NaN or infinity")
    return s


def wilson_upper(p: float, n: float, confidence: float = 0.95) -> float:
    """Upper end of the Wilson score interval of a proportion ``p`` observed on ``n`` trials
    (Wilson, "Probable inference…", JASA 1927), one-sided at ``confidence``."""
    from statistics import NormalDist

    z = NormalDist().inv_cdf(confidence)
    d = 1 + z * z / n
    return float((p + z * z / (2 * n) + z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))) / d)


def threshold_at_far(impostor_scores: Any, far: float, *, decimals: int | None = 4,
                     confidence: float | None = None, n_eff: float | None = None) -> float:
    """Smallest threshold accepting at most ``floor(far * n)`` of ``n`` impostor scores.

    With ``decimals``, the threshold is rounded *up* to that many decimals (a value
    that prints and stores exactly and still accepts no more impostors).
    With ``confidence``, the accepted fraction must instead keep the one-sided Wilson upper
    bound (:func:`wilson_upper`, on ``n_eff`` independent impostors, default ``n``) at or below
    ``far``: "FAR <= far with that confidence" rather than a point estimate.
    """
    if not 0.0 < far < 1.0:
        raise ConfigError(f"FAR must be in (0, 1), not {far!r}")
    s = np.sort(_scores(impostor_scores, "impostor scores"))[::-1]
    allowed = int(math.floor(far * s.size + 1e-9))
    if confidence is not None:
        n = float(n_eff or s.size)
        while allowed > 0 and wilson_upper(allowed / s.size, n, confidence) > far:
            allowed -= 1
    if allowed >= s.size:
        t = float(s[-1])
    else:
        t = float(np.nextafter(s[allowed], np.inf))  # just above the (allowed+1)-th highest
    if decimals is not None:
        q = 10.0 ** decimals
        t = math.ceil(t * q - 1e-9) / q
        if allowed < s.size and t <= s[allowed]:
            t = math.ceil(s[allowed] * q + 1e-6) / q
    return float(t)


def best_accuracy_threshold(scores: Any, labels: Any) -> tuple[float, float]:
    """Threshold maximising accuracy (genuine accepted + impostor rejected), and that accuracy.

    Candidates are the midpoints between consecutive distinct scores plus one below
    the lowest and one above the highest; ties go to the lowest threshold.
    """
    s = _scores(scores, "scores")
    y = np.asarray(labels).ravel().astype(bool)
    if y.shape != s.shape:
        raise ConfigError("scores and labels differ in length")
    u = np.unique(s)
    cands = np.r_[u[0] - 1e-6, (u[1:] + u[:-1]) / 2, u[-1] + 1e-6]
    order = np.argsort(s, kind="mergesort")
    ss, yy = s[order], y[order]
    idx = np.searchsorted(ss, cands, side="left")  # scores below the candidate: rejected
    gen_below = np.r_[0, np.cumsum(yy)][idx]
    imp_below = np.r_[0, np.cumsum(~yy)][idx]
    correct = imp_below + (y.sum() - gen_below)
    i = int(np.argmax(correct))
    return float(cands[i]), float(correct[i] / s.size)


def kfold_best_accuracy(scores: Any, labels: Any, k: int = 10, seed: int = 0) -> dict[str, Any]:
    """k-fold cross-validated best-accuracy thresholds (the LFW protocol), stratified by label.

    Returns the per-fold thresholds and held-out accuracies, their mean/std, and
    the threshold chosen on all the data.
    """
    s = _scores(scores, "scores")
    y = np.asarray(labels).ravel().astype(bool)
    if k < 2 or min(y.sum(), (~y).sum()) < k:
        raise ConfigError(f"{k}-fold cross-validation needs at least {k} genuine and {k} impostor pairs")
    rng = np.random.default_rng(seed)
    folds = np.empty(s.size, np.int64)
    for cls in (True, False):
        idx = np.nonzero(y == cls)[0]
        folds[rng.permutation(idx)] = np.arange(idx.size) % k
    thr, acc = [], []
    for f in range(k):
        t, _ = best_accuracy_threshold(s[folds != f], y[folds != f])
        thr.append(t)
        acc.append(float(((s[folds == f] >= t) == y[folds == f]).mean()))
    t_all, a_all = best_accuracy_threshold(s, y)
    return {"fold_thresholds": thr, "fold_accuracies": acc, "mean_accuracy": float(np.mean(acc)),
            "std_accuracy": float(np.std(acc)), "threshold": t_all, "train_accuracy": a_all,
            "cv_threshold_mean": float(np.mean(thr))}


def calibrate_verification(
    scores: Any, labels: Any, *, fars: Sequence[float] = (0.01, 0.001), k: int = 10, seed: int = 0,
    data: str = "", method: str = "", **config: Any,
) -> list[OperatingPoint]:
    """Verification operating points: k-fold best accuracy, and the threshold at each FAR.

    ``config`` (backend, precision, tta, template, normalization, detector) is stamped on every point.
    """
    s = _scores(scores, "scores")
    y = np.asarray(labels).ravel().astype(bool)
    kf = kfold_best_accuracy(s, y, k=k, seed=seed)
    today = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d")
    t = float(round(kf["threshold"], 4))
    pts = [OperatingPoint(
        task="verification", threshold=t, target="best-accuracy", data=data,
        method=method or f"{k}-fold cross-validation", date=today,
        measured={"cv_accuracy": kf["mean_accuracy"], "cv_accuracy_std": kf["std_accuracy"],
                  "far": float((s[~y] >= t).mean()), "frr": float((s[y] < t).mean())}, **config,
    )]
    for f in fars:
        t = threshold_at_far(s[~y], f)
        pts.append(OperatingPoint(
            task="verification", threshold=t, target="far", far=float(f), data=data, method=method,
            date=today,
            measured={"far": float((s[~y] >= t).mean()), "frr": float((s[y] < t).mean()),
                      "impostor_pairs": float((~y).sum())}, **config,
        ))
    return pts


# ---------------------------------------------------------------------- open-set identification

def open_set_top1(sim: np.ndarray, probe_ids: Sequence[Any], gallery_ids: Sequence[Any]) -> tuple[
        np.ndarray, np.ndarray, np.ndarray]:
    """Top-1 score per probe, whether it is mated (its identity is enrolled), and whether top-1 is right."""
    sim = np.asarray(sim, dtype=np.float64)
    p = np.asarray(probe_ids)
    g = np.asarray(gallery_ids)
    if sim.ndim != 2 or sim.shape != (p.size, g.size):
        raise ConfigError(f"similarity matrix {sim.shape} does not match {p.size} probes x "
                          f"{g.size} identities")
    if g.size == 0:
        raise ConfigError("empty gallery")
    top = np.argmax(sim, axis=1)
    top1 = sim[np.arange(p.size), top]
    mated = np.isin(p, g)
    correct = mated & (g[top] == p)
    return top1, mated, correct


def open_set_rates(top1: np.ndarray, mated: np.ndarray, correct: np.ndarray,
                   threshold: float) -> dict[str, float]:
    """FAR (non-mated probes accepted), DIR (mated probes right and accepted), FRR = 1 - DIR."""
    top1 = np.asarray(top1, np.float64)
    mated = np.asarray(mated, bool)
    correct = np.asarray(correct, bool)
    acc = top1 >= threshold
    n_m, n_nm = int(mated.sum()), int((~mated).sum())
    dir_ = float((acc & correct).sum() / n_m) if n_m else float("nan")
    return {
        "far": float(acc[~mated].sum() / n_nm) if n_nm else float("nan"),
        "dir": dir_,
        "frr": 1.0 - dir_ if n_m else float("nan"),
        # mated probes accepted under the wrong name (a misidentification)
        "wrong_accept": float((acc & mated & ~correct).sum() / n_m) if n_m else float("nan"),
        "mated_probes": float(n_m), "non_mated_probes": float(n_nm),
    }


def calibrate_identification(
    top1: np.ndarray, mated: np.ndarray, correct: np.ndarray, *, fars: Sequence[float] = (0.01, 0.001),
    gallery_size: int, data: str = "", method: str = "", confidence: float | None = None,
    n_eff: float | None = None, **config: Any,
) -> list[OperatingPoint]:
    """Open-set identification thresholds at each FAR from pooled top-1 scores (:func:`open_set_top1`).

    ``confidence``/``n_eff``: see :func:`threshold_at_far` (``n_eff``: distinct impostor probes).
    """
    top1 = _scores(top1, "top-1 scores")
    mated = np.asarray(mated, bool)
    if not (~mated).any():
        raise ConfigError("identification calibration needs non-mated probes (people not in the gallery)")
    today = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d")
    pts = []
    for f in fars:
        n = float(n_eff or (~mated).sum())
        if confidence is not None and wilson_upper(0.0, n, confidence) > f:
            log.warning("FAR %g cannot be bounded at %g confidence with %d impostors: point skipped",
                        f, confidence, int(n))
            continue
        t = threshold_at_far(top1[~mated], f, confidence=confidence, n_eff=n_eff)
        pts.append(OperatingPoint(
            task="identification", threshold=t, target="far", far=float(f), gallery_size=int(gallery_size),
            confidence=confidence,
            data=data, method=method, date=today, measured=open_set_rates(top1, mated, correct, t), **config,
        ))
    return pts


# ---------------------------------------------------------------------- template policy

def identity_scores(probes: np.ndarray, embeddings: np.ndarray, labels: Sequence[int] | np.ndarray,
                    n_identities: int, policy: str = "mean") -> np.ndarray:
    """Cosine score ``[N, K]`` of each probe to each identity under a template policy.

    Args:
        probes: ``[N, D]`` embeddings (normalised here).
        embeddings: ``[M, D]`` enrolled per-photo embeddings (normalised here).
        labels: ``[M]`` identity index (0..K-1) of each enrolled embedding.
        n_identities: K.
        policy: ``mean`` | ``max`` | ``both`` (module docstring).
    """
    if policy not in TEMPLATE_POLICIES:
        raise ConfigError(f"template policy must be one of {TEMPLATE_POLICIES}, not {policy!r}")
    p = _l2(np.asarray(probes, np.float32))
    e = _l2(np.asarray(embeddings, np.float32))
    lab = np.asarray(labels, np.int64)
    if lab.shape != (len(e),) or (lab.size and (lab.min() < 0 or lab.max() >= n_identities)):
        raise ConfigError("labels must give an identity index in [0, K) for every enrolled embedding")
    out = np.zeros((len(p), n_identities), np.float32)
    if policy in ("mean", "both"):
        sums = np.zeros((n_identities, e.shape[1]), np.float32)
        np.add.at(sums, lab, e)
        mean = p @ _l2(sums).T
    if policy in ("max", "both"):
        mx = np.full((len(p), n_identities), -np.inf, np.float32)
        s = p @ e.T
        order = np.argsort(lab, kind="stable")
        bounds = np.r_[0, np.cumsum(np.bincount(lab, minlength=n_identities))]
        s = s[:, order]
        for k in range(n_identities):
            if bounds[k + 1] > bounds[k]:
                mx[:, k] = s[:, bounds[k]:bounds[k + 1]].max(1)
    if policy == "mean":
        out = mean
    elif policy == "max":
        out = mx
    else:
        out = 0.5 * (mean + mx)
    return out


def _l2(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float32)
    if x.ndim == 1:
        x = x[None]
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


# ---------------------------------------------------------------------- cohort normalisation

class CohortNormalizer:
    """Adaptive symmetric score normalisation (AS-norm) against a fixed impostor cohort.

    Args:
        cohort: ``[C, D]`` embeddings of people outside every gallery and test set.
        top_k: number of highest cohort scores used for the statistics (adaptive).
    """

    def __init__(self, cohort: np.ndarray, top_k: int = 100) -> None:
        c = np.asarray(cohort, np.float32)
        if c.ndim != 2 or len(c) < 2 or not np.all(np.isfinite(c)):
            raise ConfigError("a cohort must be a finite [C, D] array with C >= 2")
        self.cohort = _l2(c)
        self.top_k = int(min(max(top_k, 2), len(c)))

    def stats(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Mean and std of each vector's top-K cosine scores against the cohort."""
        x = _l2(x)
        if x.shape[1] != self.cohort.shape[1]:
            raise ConfigError(f"cohort is {self.cohort.shape[1]}-d, embeddings are {x.shape[1]}-d")
        s = x @ self.cohort.T
        k = self.top_k
        top = np.partition(s, s.shape[1] - k, axis=1)[:, -k:] if k < s.shape[1] else s
        return top.mean(1), np.maximum(top.std(1), 1e-4)

    def normalize(self, scores: np.ndarray, probe_stats: tuple[np.ndarray, np.ndarray],
                  gallery_stats: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
        """AS-norm of a ``[N, K]`` score matrix given probe ``[N]`` and gallery ``[K]`` statistics."""
        mp, sp = probe_stats
        mg, sg = gallery_stats
        s = np.asarray(scores, np.float32)
        return 0.5 * ((s - mp[:, None]) / sp[:, None] + (s - mg[None, :]) / sg[None, :])

    def apply(self, scores: np.ndarray, probes: np.ndarray, templates: np.ndarray) -> np.ndarray:
        """AS-norm of ``[N, K]`` scores of ``probes`` against identity ``templates``."""
        return self.normalize(scores, self.stats(probes), self.stats(templates))


class CohortMargin:
    """``s' = s - lambda * max(second-best gallery score, best cohort score)`` per probe (module docstring).

    Args:
        cohort: ``[C, D]`` embeddings of people outside every gallery and test set.
        lam: the weight ``lambda`` (default :data:`MARGIN_LAMBDA`).
    """

    def __init__(self, cohort: np.ndarray, lam: float = MARGIN_LAMBDA) -> None:
        c = np.asarray(cohort, np.float32)
        if c.ndim != 2 or len(c) < 1 or not np.all(np.isfinite(c)):
            raise ConfigError("a cohort must be a finite [C, D] array")
        if not 0.0 <= float(lam) <= 1.0:
            raise ConfigError(f"cohort-margin lambda must be in [0, 1], not {lam!r}")
        self.cohort = _l2(c)
        self.lam = float(lam)

    def reference(self, scores: np.ndarray, probes: np.ndarray) -> np.ndarray:
        """``max(second-best gallery score, best cohort score)`` per probe ``[N]``."""
        s = np.asarray(scores, np.float32)
        p = _l2(probes)
        if p.shape[1] != self.cohort.shape[1]:
            raise ConfigError(f"cohort is {self.cohort.shape[1]}-d, embeddings are {p.shape[1]}-d")
        c1 = (p @ self.cohort.T).max(1)
        if s.shape[1] >= 2:
            s2 = np.partition(s, s.shape[1] - 2, axis=1)[:, -2]
            return np.maximum(s2, c1)
        return c1

    def apply(self, scores: np.ndarray, probes: np.ndarray,
              templates: np.ndarray | None = None) -> np.ndarray:
        """The normalised ``[N, K]`` scores (every score of a probe shifted by the same amount)."""
        s = np.asarray(scores, np.float32)
        return s - self.lam * self.reference(s, probes)[:, None]
