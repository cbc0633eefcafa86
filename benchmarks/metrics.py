"""Verification and identification metrics (pure numpy, no I/O).

Conventions: a *score* is a similarity (higher = more alike); a pair is declared
"same" when ``score >= threshold``. ``labels`` are 1 for genuine (same person)
pairs and 0 for impostor pairs.

* ROC: ``far`` (false accept rate, impostors accepted / impostors) against
  ``tar`` (true accept rate, genuines accepted / genuines) at every distinct
  score used as a threshold.
* DET: ``far`` against ``frr = 1 - tar``.
* TAR@FAR=f: the best TAR over thresholds whose FAR is <= f (no interpolation).
* EER: where FAR = FRR, linearly interpolated between the two ROC points that
  bracket the crossing.
* Verification k-fold (the LFW protocol): for each fold, the accuracy-maximising
  threshold is chosen on the other k-1 folds and applied to the held-out fold.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from facesdk.errors import ConfigError

__all__ = [
    "RocCurve",
    "roc_curve",
    "det_curve",
    "tar_at_far",
    "eer",
    "accuracy_at",
    "best_threshold",
    "stratified_folds",
    "KFoldResult",
    "kfold_verification",
    "verification_summary",
    "rank_of_truth",
    "cmc_curve",
    "open_set_identification",
]

DEFAULT_FARS = (1e-1, 1e-2, 1e-3)


def _check(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    s = np.asarray(scores, dtype=np.float64).ravel()
    y = np.asarray(labels).ravel()
    if s.shape != y.shape:
        raise ConfigError(f"scores and labels differ in length ({s.size} vs {y.size})")
    if s.size == 0:
        raise ConfigError("no scores")
    if not np.all(np.isfinite(s)):
        raise ConfigError("scores contain NaN or infinity")
    if not np.all((y == 0) | (y == 1)):
        raise ConfigError("labels must be 0 (different) or 1 (same)")
    return s, y.astype(bool)


@dataclass
class RocCurve:
    """ROC points, thresholds descending; the first point is (0, 0) at +inf."""

    thresholds: np.ndarray
    far: np.ndarray
    tar: np.ndarray

    @property
    def frr(self) -> np.ndarray:
        return 1.0 - self.tar

    def auc(self) -> float:
        """Area under the ROC (trapezoidal)."""
        return float(np.sum(np.diff(self.far) * (self.tar[1:] + self.tar[:-1]) / 2))


def roc_curve(scores: np.ndarray, labels: np.ndarray) -> RocCurve:
    """ROC at every distinct score (accept when ``score >= threshold``).

    Needs at least one genuine and one impostor pair.
    """
    s, y = _check(scores, labels)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        raise ConfigError("a ROC needs both genuine and impostor pairs")
    order = np.argsort(-s, kind="mergesort")
    s_sorted, y_sorted = s[order], y[order]
    tp = np.cumsum(y_sorted)
    fp = np.cumsum(~y_sorted)
    # keep the last index of each run of equal scores (ties are accepted together)
    last = np.r_[np.nonzero(np.diff(s_sorted))[0], s_sorted.size - 1]
    thr = np.r_[np.inf, s_sorted[last]]
    tar = np.r_[0.0, tp[last] / n_pos]
    far = np.r_[0.0, fp[last] / n_neg]
    return RocCurve(thr, far, tar)


def det_curve(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """DET points ``(far, frr, thresholds)``."""
    r = roc_curve(scores, labels)
    return r.far, r.frr, r.thresholds


def tar_at_far(
    scores: np.ndarray, labels: np.ndarray, far: float, roc: RocCurve | None = None
) -> tuple[float, float]:
    """Best TAR with FAR <= ``far``; returns ``(tar, threshold)``.

    When even the strictest threshold admits more impostors than allowed
    (impossible only with tied top scores) TAR is 0 at threshold +inf.
    """
    if not 0.0 <= far <= 1.0:
        raise ConfigError(f"FAR must be in [0, 1], got {far}")
    r = roc or roc_curve(scores, labels)
    ok = np.nonzero(r.far <= far + 1e-12)[0]
    i = ok[np.argmax(r.tar[ok])]
    return float(r.tar[i]), float(r.thresholds[i])


def eer(scores: np.ndarray, labels: np.ndarray, roc: RocCurve | None = None) -> tuple[float, float]:
    """Equal error rate and the threshold where it occurs: ``(eer, threshold)``.

    FAR rises and FRR falls as the threshold drops; the crossing is linearly
    interpolated between the last ROC point with FRR > FAR and the next one.
    """
    r = roc or roc_curve(scores, labels)
    frr = r.frr
    diff = frr - r.far  # starts at 1 (FRR=1, FAR=0), ends at -1 (FRR=0, FAR=1)
    i = int(np.nonzero(diff <= 0)[0][0])  # first point where FAR >= FRR
    if diff[i] == 0 or i == 0:
        thr = r.thresholds[i]
        return float(r.far[i]), float(thr if np.isfinite(thr) else r.thresholds[1])
    # interpolate between i-1 (diff>0) and i (diff<0)
    w = diff[i - 1] / (diff[i - 1] - diff[i])
    e = r.far[i - 1] + w * (r.far[i] - r.far[i - 1])
    t0 = r.thresholds[i - 1] if np.isfinite(r.thresholds[i - 1]) else r.thresholds[i]
    thr = t0 + w * (r.thresholds[i] - t0)
    return float(e), float(thr)


def accuracy_at(scores: np.ndarray, labels: np.ndarray, threshold: float) -> float:
    """Fraction of pairs decided correctly at ``threshold``."""
    s, y = _check(scores, labels)
    return float(np.mean((s >= threshold) == y))


def _candidate_accuracies(s: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every distinct decision (threshold between neighbouring distinct scores) and its accuracy."""
    u = np.unique(s)
    # thresholds: below everything, midpoints, above everything
    cand = np.r_[u[0] - 1.0, (u[:-1] + u[1:]) / 2, u[-1] + 1.0]
    order = np.argsort(s, kind="mergesort")
    s_sorted, y_sorted = s[order], y[order]
    # number of samples strictly below each candidate
    below = np.searchsorted(s_sorted, cand, side="left")
    neg_below = np.r_[0, np.cumsum(~y_sorted)][below]
    pos_below = np.r_[0, np.cumsum(y_sorted)][below]
    n_pos = int(y.sum())
    correct = neg_below + (n_pos - pos_below)
    return cand, correct / s.size


def best_threshold(scores: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """The accuracy-maximising threshold: ``(threshold, accuracy)``.

    Candidates are the midpoints between neighbouring distinct scores (plus one
    below and one above all scores). When several candidates reach the best
    accuracy, the median one (lower median) is returned, which is deterministic
    and keeps away from the edges of the optimal range.
    """
    s, y = _check(scores, labels)
    cand, acc = _candidate_accuracies(s, y)
    best = np.nonzero(acc >= acc.max() - 1e-12)[0]
    i = best[(len(best) - 1) // 2]
    return float(cand[i]), float(acc[i])


def stratified_folds(labels: np.ndarray, k: int) -> np.ndarray:
    """Fold ids 0..k-1: each label's pairs split into k contiguous, nearly equal blocks.

    Used when a pair list has no folds of its own (e.g. LFW ``pairsDevTest.txt``).
    """
    y = np.asarray(labels).astype(bool).ravel()
    if k < 2:
        raise ConfigError("k-fold needs k >= 2")
    folds = np.empty(y.size, dtype=np.int64)
    for val in (True, False):
        idx = np.nonzero(y == val)[0]
        if 0 < idx.size < k:
            raise ConfigError(f"{idx.size} {'genuine' if val else 'impostor'} pairs cannot fill {k} folds")
        folds[idx] = (np.arange(idx.size) * k) // max(idx.size, 1)
    return folds


@dataclass
class KFoldResult:
    """Outcome of the k-fold verification protocol."""

    accuracies: np.ndarray
    thresholds: np.ndarray
    train_accuracies: np.ndarray

    @property
    def mean(self) -> float:
        return float(np.mean(self.accuracies))

    @property
    def std(self) -> float:
        """Population standard deviation over folds (as the LFW reference code reports)."""
        return float(np.std(self.accuracies))

    def to_dict(self) -> dict[str, Any]:
        return {
            "mean_accuracy": self.mean,
            "std_accuracy": self.std,
            "fold_accuracies": [float(a) for a in self.accuracies],
            "fold_thresholds": [float(t) for t in self.thresholds],
            "fold_train_accuracies": [float(a) for a in self.train_accuracies],
        }


def kfold_verification(scores: np.ndarray, labels: np.ndarray, folds: np.ndarray) -> KFoldResult:
    """The LFW protocol: per fold, threshold from the other folds, accuracy on this one."""
    s, y = _check(scores, labels)
    f = np.asarray(folds).ravel()
    if f.shape != s.shape:
        raise ConfigError("folds and scores differ in length")
    ids = np.unique(f)
    if ids.size < 2:
        raise ConfigError("k-fold needs at least two folds")
    accs, thrs, tr = [], [], []
    for k in ids:
        test = f == k
        t, a_train = best_threshold(s[~test], y[~test])
        thrs.append(t)
        tr.append(a_train)
        accs.append(float(np.mean((s[test] >= t) == y[test])))
    return KFoldResult(np.array(accs), np.array(thrs), np.array(tr))


def verification_summary(
    scores: np.ndarray,
    labels: np.ndarray,
    folds: np.ndarray | None = None,
    k: int = 10,
    fars: Sequence[float] = DEFAULT_FARS,
) -> dict[str, Any]:
    """Everything the verification report needs, as a JSON-friendly dict (ROC kept separately)."""
    s, y = _check(scores, labels)
    if folds is None:
        folds = stratified_folds(y, k)
    kf = kfold_verification(s, y, folds)
    roc = roc_curve(s, y)
    e, e_thr = eer(s, y, roc)
    best_t, best_a = best_threshold(s, y)
    out: dict[str, Any] = {
        "pairs": int(s.size),
        "genuine": int(y.sum()),
        "impostor": int((~y).sum()),
        **kf.to_dict(),
        "eer": e,
        "eer_threshold": e_thr,
        "auc": roc.auc(),
        "best_threshold_all_pairs": best_t,
        "best_accuracy_all_pairs": best_a,
        "tar_at_far": {},
    }
    for far in fars:
        tar, thr = tar_at_far(s, y, far, roc)
        reliable = far * (~y).sum() >= 1.0
        out["tar_at_far"][f"{far:g}"] = {"tar": tar, "threshold": thr, "reliable": bool(reliable)}
    return out


# ---------------------------------------------------------------------- identification


def rank_of_truth(sim: np.ndarray, probe_ids: np.ndarray, gallery_ids: np.ndarray) -> np.ndarray:
    """1-based rank of each probe's true identity among gallery columns (0 = not enrolled).

    Ties are broken pessimistically: the truth ranks after every other column
    with the same score.
    """
    sim = np.asarray(sim, dtype=np.float64)
    p = np.asarray(probe_ids)
    g = np.asarray(gallery_ids)
    if sim.shape != (p.size, g.size):
        raise ConfigError(f"similarity matrix is {sim.shape}, expected ({p.size}, {g.size})")
    match = p[:, None] == g[None, :]
    enrolled = match.any(axis=1)
    true_score = np.where(enrolled, np.where(match, sim, -np.inf).max(axis=1), np.inf)
    higher_or_equal_other = ((sim >= true_score[:, None]) & ~match).sum(axis=1)
    return np.where(enrolled, higher_or_equal_other + 1, 0)


def cmc_curve(ranks: np.ndarray, max_rank: int | None = None) -> np.ndarray:
    """Closed-set CMC: fraction of enrolled probes with rank <= r, for r = 1..max_rank."""
    r = np.asarray(ranks)
    r = r[r > 0]
    if r.size == 0:
        raise ConfigError("no enrolled (mated) probes for a CMC curve")
    m = int(max_rank or r.max())
    return np.array([(r <= k).mean() for k in range(1, m + 1)], dtype=np.float64)


def open_set_identification(
    sim: np.ndarray,
    probe_ids: np.ndarray,
    gallery_ids: np.ndarray,
    *,
    fars: Sequence[float] = DEFAULT_FARS,
    top_k: Sequence[int] = (1, 5, 10),
    recall_targets: Sequence[float] = (0.9, 0.95, 0.99, 0.999, 0.9999),
    precision_targets: Sequence[float] = (0.99, 0.999, 0.9999),
) -> dict[str, Any]:
    """Open-set 1:N metrics.

    * ``rank_k``: closed-set rank-k accuracy over mated probes.
    * ``dir_at_far``: detection-and-identification rate (top-1 correct and
      score >= t) at the threshold t where the false-alarm rate of non-mated
      probes (top-1 score >= t) is <= FAR.
    * Operating points on the decision "accept the top-1 identity when its
      score >= t": ``precision = correct accepts / all accepts`` (non-mated and
      wrong-identity accepts are errors), ``recall = correct accepts / mated
      probes``. ``precision_at_recall[r]`` is the best precision with recall >= r
      (None if unreachable, e.g. rank-1 misses cap recall), and
      ``recall_at_precision[p]`` the best recall with precision >= p.
    """
    sim = np.asarray(sim, dtype=np.float64)
    p = np.asarray(probe_ids)
    g = np.asarray(gallery_ids)
    ranks = rank_of_truth(sim, p, g)
    mated = ranks > 0
    n_m, n_nm = int(mated.sum()), int((~mated).sum())
    top1_idx = np.argmax(sim, axis=1)
    top1 = sim[np.arange(len(p)), top1_idx]
    correct1 = mated & (g[top1_idx] == p) & (ranks == 1)
    out: dict[str, Any] = {
        "probes": int(p.size),
        "mated_probes": n_m,
        "non_mated_probes": n_nm,
        "gallery_identities": int(np.unique(g).size),
    }
    if n_m:
        out["rank_k"] = {str(k): float((ranks[mated] <= k).mean()) for k in top_k}
    out["dir_at_far"] = {}
    if n_m and n_nm:
        nm = np.sort(top1[~mated])[::-1]
        for far in fars:
            allowed = int(np.floor(far * n_nm + 1e-9))
            # threshold just above the (allowed+1)-th highest non-mated score
            # (ties with it are excluded too, so the false-alarm count stays <= allowed)
            thr = float(np.nextafter(nm[allowed], np.inf)) if allowed < n_nm else float(-np.inf)
            dir_ = float((correct1 & (top1 >= thr)).sum() / n_m)
            fa = float((top1[~mated] >= thr).mean())
            out["dir_at_far"][f"{far:g}"] = {
                "dir": dir_,
                "threshold": thr,
                "far": fa,
                "reliable": bool(far * n_nm >= 1.0),
            }
    # precision / recall over all thresholds (distinct top-1 scores)
    order = np.argsort(-top1, kind="mergesort")
    t_sorted = top1[order]
    ok_sorted = correct1[order]
    last = np.r_[np.nonzero(np.diff(t_sorted))[0], t_sorted.size - 1]
    accepts = last + 1
    correct = np.cumsum(ok_sorted)[last]
    precision = correct / accepts
    recall = correct / max(n_m, 1)
    thresholds = t_sorted[last]
    out["precision_at_recall"] = {}
    for r in recall_targets:
        ok = np.nonzero(recall >= r - 1e-12)[0]
        if n_m and ok.size:
            i = ok[np.argmax(precision[ok])]
            out["precision_at_recall"][f"{r:g}"] = {
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "threshold": float(thresholds[i]),
            }
        else:
            out["precision_at_recall"][f"{r:g}"] = None
    out["recall_at_precision"] = {}
    for pr in precision_targets:
        ok = np.nonzero(precision >= pr - 1e-12)[0]
        if n_m and ok.size:
            i = ok[np.argmax(recall[ok])]
            out["recall_at_precision"][f"{pr:g}"] = {
                "recall": float(recall[i]),
                "precision": float(precision[i]),
                "threshold": float(thresholds[i]),
            }
        else:
            out["recall_at_precision"][f"{pr:g}"] = {"recall": 0.0, "precision": None, "threshold": None}
    out["max_recall"] = float(correct1.sum() / max(n_m, 1))
    return out
