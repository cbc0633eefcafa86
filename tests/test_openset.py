"""Open-set identification: metrics against hand-computed cases, the BLUFR-style split, calibration search."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from facesdk.calibration import (
    CohortNormalizer,
    OperatingPoint,
    best_accuracy_threshold,
    check_threshold,
    identity_scores,
    open_set_rates,
    open_set_top1,
    select_operating_point,
    threshold_at_far,
)
from facesdk.errors import ConfigError
from facesdk_bench.openset import aggregate_trials, evaluate_trial, openset_split


def test_open_set_rates_hand_computed() -> None:
    # 3 gallery identities; probes: 3 mated (a, b, c) and 2 non-mated (x, y)
    sim = np.array([
        [0.90, 0.10, 0.20],  # a: right, 0.90
        [0.70, 0.60, 0.10],  # b: wrong (top-1 is a), 0.70
        [0.10, 0.20, 0.50],  # c: right, 0.50
        [0.80, 0.10, 0.10],  # x: non-mated, 0.80
        [0.30, 0.40, 0.20],  # y: non-mated, 0.40
    ])
    top1, mated, correct = open_set_top1(sim, ["a", "b", "c", "x", "y"], ["a", "b", "c"])
    assert top1.tolist() == [0.9, 0.7, 0.5, 0.8, 0.4]
    assert mated.tolist() == [True, True, True, False, False]
    assert correct.tolist() == [True, False, True, False, False]
    r = open_set_rates(top1, mated, correct, 0.45)
    # accepted: a (right), b (wrong), c (right), x (false alarm); y rejected
    assert r["far"] == pytest.approx(1 / 2) and r["dir"] == pytest.approx(2 / 3)
    assert r["frr"] == pytest.approx(1 / 3) and r["wrong_accept"] == pytest.approx(1 / 3)
    r = open_set_rates(top1, mated, correct, 0.85)
    assert r["far"] == 0.0 and r["dir"] == pytest.approx(1 / 3) and r["wrong_accept"] == 0.0
    # FAR 50 % allows one of two non-mated: threshold just above 0.40 -> DIR 2/3 (a and c)
    t = threshold_at_far(top1[~mated], 0.5, decimals=None)
    assert 0.4 < t <= 0.41
    assert open_set_rates(top1, mated, correct, t)["dir"] == pytest.approx(2 / 3)
    # a FAR below 1/2 allows none: threshold just above 0.80 -> only a
    t = threshold_at_far(top1[~mated], 0.1, decimals=None)
    assert 0.8 < t <= 0.81 and open_set_rates(top1, mated, correct, t)["dir"] == pytest.approx(1 / 3)


def _brute_threshold_at_far(imp: np.ndarray, far: float) -> float:
    allowed = int(np.floor(far * imp.size + 1e-9))
    cands = np.round(np.arange(-1.0, 1.0001, 1e-4), 4)
    ok = [t for t in cands if (imp >= t).sum() <= allowed]
    return float(min(ok))


def test_threshold_at_far_matches_brute_force() -> None:
    rng = np.random.default_rng(3)
    for n in (7, 100, 1000):
        imp = np.round(rng.normal(0.2, 0.15, n).clip(-0.99, 0.99), 5)
        for far in (0.3, 0.1, 0.01, 0.001):
            got = threshold_at_far(imp, far)  # 4 decimals, rounded up
            assert got == pytest.approx(_brute_threshold_at_far(imp, far), abs=1e-9), (n, far)
            assert (imp >= got).sum() <= int(np.floor(far * n + 1e-9))


def test_best_accuracy_threshold_matches_brute_force() -> None:
    rng = np.random.default_rng(5)
    s = np.r_[rng.normal(0.7, 0.1, 60), rng.normal(0.3, 0.1, 60)]
    y = np.r_[np.ones(60, bool), np.zeros(60, bool)]
    t, acc = best_accuracy_threshold(s, y)
    grid = np.linspace(s.min() - 0.01, s.max() + 0.01, 20001)
    best = max(((s >= g) == y).mean() for g in grid)
    assert acc == pytest.approx(best) and ((s >= t) == y).mean() == pytest.approx(acc)


def test_identity_scores_policies() -> None:
    e = np.array([[1, 0], [0, 1], [1, 1]], np.float32)  # identity 0: two photos; identity 1: one
    lab = np.array([0, 0, 1])
    p = np.array([[1, 0]], np.float32)
    mean = identity_scores(p, e, lab, 2, "mean")
    mx = identity_scores(p, e, lab, 2, "max")
    both = identity_scores(p, e, lab, 2, "both")
    assert mean[0, 0] == pytest.approx(np.sqrt(0.5)) and mx[0, 0] == pytest.approx(1.0)
    assert mean[0, 1] == pytest.approx(np.sqrt(0.5)) == mx[0, 1]
    assert both[0, 0] == pytest.approx((1 + np.sqrt(0.5)) / 2)
    with pytest.raises(ConfigError):
        identity_scores(p, e, lab, 2, "median")


def test_cohort_normalizer_is_as_norm() -> None:
    rng = np.random.default_rng(0)
    coh = rng.normal(size=(50, 8)).astype(np.float32)
    cn = CohortNormalizer(coh, top_k=10)
    p, g = rng.normal(size=(3, 8)), rng.normal(size=(4, 8))
    ps, gs = cn.stats(p), cn.stats(g)
    s = identity_scores(p, g, np.arange(4), 4, "mean")
    out = cn.normalize(s, ps, gs)
    c = coh / np.linalg.norm(coh, axis=1, keepdims=True)
    top_p = np.sort((p / np.linalg.norm(p, axis=1, keepdims=True)) @ c.T, axis=1)[:, -10:]
    want00 = 0.5 * ((s[0, 0] - top_p[0].mean()) / top_p[0].std() + (s[0, 0] - gs[0][0]) / gs[1][0])
    assert out[0, 0] == pytest.approx(want00, rel=1e-4)


def test_openset_split_is_blufr_style() -> None:
    ids = {"a": ["a1", "a2", "a3"], "b": ["b1", "b2"], "c": ["c1"], "d": ["d1"],
           "e": ["e1", "e2", "e3", "e4"]}
    s0 = openset_split(ids, 0)
    assert set(s0.gallery) == {"a", "b", "e"} and all(len(v) == 1 for v in s0.gallery.values())
    assert sorted(p for _, p in s0.non_mated) == ["c", "d"]
    assert len(s0.mated) == 2 + 1 + 3
    for k, p in s0.mated:  # a probe is never its own gallery image
        assert k not in s0.gallery[p]
    # seeded: same seed same split, other seeds differ somewhere
    assert openset_split(ids, 0).gallery == s0.gallery
    assert any(openset_split(ids, s).gallery != s0.gallery for s in range(1, 6))
    s3 = openset_split(ids, 0, gallery_per_id=3)
    assert set(s3.gallery) == {"e"} and len(s3.gallery["e"]) == 3 and len(s3.mated) == 1
    assert "a" not in {p for _, p in s3.non_mated}  # people with 2..k photos are unused
    sx = openset_split(ids, 0, exclude={"c"})
    assert [p for _, p in sx.non_mated] == ["d"]
    with pytest.raises(ConfigError):
        openset_split({"a": ["a1", "a2"]}, 0)  # no impostors


def test_evaluate_trial_and_aggregate() -> None:
    # embeddings on the unit circle: gallery a at 0 deg, b at 90; probes around them, strangers between
    def v(deg: float) -> np.ndarray:
        r = np.deg2rad(deg)
        return np.array([np.cos(r), np.sin(r)], np.float32)

    emb = {"a1": v(0), "a2": v(10), "b1": v(90), "b2": v(100), "x1": v(45), "y1": v(200)}
    ids = {"a": ["a1", "a2"], "b": ["b1", "b2"], "x": ["x1"], "y": ["y1"]}
    split = openset_split(ids, 0)
    r = evaluate_trial(emb, split, fars=(0.5,), thresholds={"shipped": float(np.cos(np.deg2rad(20)))})
    # genuine probes score cos(10 deg) and are right; strangers: x cos(35..45 deg), y far away
    assert r["rank1"] == 1.0
    assert r["at_threshold"]["shipped"]["far"] == 0.0 and r["at_threshold"]["shipped"]["dir"] == 1.0
    assert r["dir_at_far"]["0.5"]["dir"] == 1.0
    agg = aggregate_trials([r, r])
    assert agg["trials"] == 2 and agg["rank1"]["mean"] == 1.0 and agg["rank1"]["std"] == 0.0


def test_check_threshold_and_operating_point_selection() -> None:
    assert check_threshold(0.5) == 0.5 and check_threshold(1.0) == 1.0
    for bad in (-1.0, -2, 1.5, float("nan"), "x", None):
        with pytest.raises(ConfigError):
            check_threshold(bad)
    assert check_threshold(4.2, normalization="as-norm") == 4.2
    pts = [
        OperatingPoint("identification", 0.94, far=0.01, backend="onnxruntime", precision="fp32", tta="flip"),
        OperatingPoint("identification", 0.96, far=0.001, backend="onnxruntime", precision="fp32",
                       tta="flip"),
        OperatingPoint("identification", 0.93, far=0.01, backend="*", precision="*", tta="none"),
        OperatingPoint("verification", 0.90, target="best-accuracy", backend="onnxruntime", precision="fp32",
                       tta="flip"),
    ]
    sel = select_operating_point(pts, "identification", backend="onnxruntime", precision="fp32", tta="flip")
    assert sel is pts[0]
    # another backend at the same precision falls back to the measured one (and says so)
    sel = select_operating_point(pts, "identification", backend="openvino", precision="fp32", tta="flip")
    assert sel is pts[0] and "onnxruntime/fp32" in sel.describe()
    sel = select_operating_point(pts, "identification", backend="openvino", precision="int8", tta="none")
    assert sel is pts[2]
    assert select_operating_point(pts, "identification", backend="onnxruntime", precision="fp32", tta="flip",
                                  template="max") is None
    assert "FAR 1 % open-set identification" in pts[0].describe()
    with pytest.raises(ConfigError):
        OperatingPoint("identify", 0.5)
    rt = OperatingPoint.from_dict(pts[1].to_dict())
    assert rt == pts[1]


def test_lfw_people_files(shared: Path) -> None:
    from facesdk_bench.openset import cohort_people, lfw_people

    root = shared / "data/lfw"
    train, test = lfw_people(root, "devtrain"), lfw_people(root, "devtest")
    assert train is not None and test is not None
    assert len(train) == 4038 and len(test) == 1711 and not train & test
    ids = {p: ["x"] for p in sorted(train)[:2000]}
    coh = cohort_people(ids, root, 50)
    assert len(coh) == 50 and set(coh) <= train and coh == cohort_people(ids, root, 50)


def test_threshold_at_far_with_confidence_bound() -> None:
    from facesdk.calibration import wilson_upper

    rng = np.random.default_rng(11)
    imp = np.round(rng.normal(0.3, 0.1, 3000), 5)
    t = threshold_at_far(imp, 0.01, confidence=0.95, n_eff=1000)
    k = int((imp >= t).sum())
    # brute force: the most accepts whose Wilson bound (on 1000 independent impostors) stays <= 1 %
    best = max(j for j in range(0, 31) if wilson_upper(j / imp.size, 1000, 0.95) <= 0.01)
    assert k <= best and t >= threshold_at_far(imp, 0.01)
    z2 = 1.6449 ** 2
    assert wilson_upper(0.0, 100, 0.95) == pytest.approx(z2 / 100 / (1 + z2 / 100), rel=1e-3)
