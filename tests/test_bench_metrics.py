"""Benchmark metrics against hand-computed cases and a brute-force k-fold reference; datasets, cache,
quality.
"""

from __future__ import annotations

import numpy as np
import pytest

from facesdk.errors import ConfigError
from facesdk_bench import metrics as M
from facesdk_bench.cache import EmbeddingCache, FaceRecord
from facesdk_bench.datasets import (
    Dataset,
    DatasetError,
    FolderDataset,
    LFWDataset,
    identification_split,
    load_dataset,
)
from facesdk_bench.quality import Degradation, degrade, tier_sides

# genuine scores 0.9, 0.8, 0.4; impostor scores 0.7, 0.3, 0.2
S = np.array([0.9, 0.8, 0.4, 0.7, 0.3, 0.2])
Y = np.array([1, 1, 1, 0, 0, 0])


def test_roc_by_hand() -> None:
    r = M.roc_curve(S, Y)
    assert np.allclose(r.thresholds[1:], [0.9, 0.8, 0.7, 0.4, 0.3, 0.2]) and np.isinf(r.thresholds[0])
    assert np.allclose(r.tar, [0, 1 / 3, 2 / 3, 2 / 3, 1, 1, 1])
    assert np.allclose(r.far, [0, 0, 0, 1 / 3, 1 / 3, 2 / 3, 1])
    # AUC = P(genuine > impostor) = 8/9
    assert r.auc() == pytest.approx(8 / 9)
    far, frr, _ = M.det_curve(S, Y)
    assert np.allclose(frr, 1 - r.tar) and np.allclose(far, r.far)


def test_roc_ties_accepted_together() -> None:
    r = M.roc_curve([0.5, 0.5, 0.1], [1, 0, 0])
    assert np.allclose(r.tar, [0, 1, 1]) and np.allclose(r.far, [0, 0.5, 1])
    tar, thr = M.tar_at_far([0.5, 0.5, 0.1], [1, 0, 0], 0.1)
    assert tar == 0.0 and np.isinf(thr)  # the tie cannot be split


def test_tar_at_far_by_hand() -> None:
    assert M.tar_at_far(S, Y, 0.1) == pytest.approx((2 / 3, 0.8))
    assert M.tar_at_far(S, Y, 0.5) == pytest.approx((1.0, 0.4))
    assert M.tar_at_far(S, Y, 1.0)[0] == 1.0
    with pytest.raises(ConfigError):
        M.tar_at_far(S, Y, 1.5)


def test_eer_exact_and_interpolated() -> None:
    assert M.eer(S, Y) == pytest.approx((1 / 3, 0.7))
    # FRR-FAR changes sign between thresholds 0.6 (FRR 1/2, FAR 1/3) and 0.5 (FRR 0, FAR 1/3)
    e, t = M.eer([0.9, 0.5, 0.6, 0.4, 0.3], [1, 1, 0, 0, 0])
    assert e == pytest.approx(1 / 3)
    assert 0.5 < t < 0.6
    # perfectly separated
    assert M.eer([0.9, 0.8, 0.2, 0.1], [1, 1, 0, 0])[0] == 0.0
    # perfectly inverted
    assert M.eer([0.1, 0.2, 0.8, 0.9], [1, 1, 0, 0])[0] == pytest.approx(1.0)


def test_best_threshold_and_accuracy_by_hand() -> None:
    s = np.array([0.1, 0.4, 0.35, 0.8])
    y = np.array([0, 0, 1, 1])
    # candidates .225 and .6 both give 3/4; the lower median (.225) is chosen
    t, a = M.best_threshold(s, y)
    assert t == pytest.approx(0.225) and a == pytest.approx(0.75)
    assert M.accuracy_at(s, y, 0.6) == 0.75
    assert M.accuracy_at(s, y, 0.9) == 0.5


def _brute_kfold(s: np.ndarray, y: np.ndarray, folds: np.ndarray) -> tuple[list[float], list[float]]:
    """Reference: explicit loops over every candidate threshold, same tie rule."""
    accs, thrs = [], []
    for k in sorted(set(folds.tolist())):
        train = [(float(a), int(b)) for a, b, f in zip(s, y, folds) if f != k]
        u = sorted({a for a, _ in train})
        cands = [u[0] - 1.0] + [(u[i] + u[i + 1]) / 2 for i in range(len(u) - 1)] + [u[-1] + 1.0]
        scored = []
        for c in cands:
            correct = sum(1 for a, b in train if (a >= c) == bool(b))
            scored.append((correct, c))
        best = max(sc for sc, _ in scored)
        opt = [c for sc, c in scored if sc == best]
        t = opt[(len(opt) - 1) // 2]
        test = [(float(a), int(b)) for a, b, f in zip(s, y, folds) if f == k]
        accs.append(sum(1 for a, b in test if (a >= t) == bool(b)) / len(test))
        thrs.append(t)
    return accs, thrs


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_kfold_matches_brute_force(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = 300
    y = np.r_[np.ones(n // 2), np.zeros(n // 2)].astype(int)
    s = np.where(y == 1, rng.normal(0.6, 0.15, n), rng.normal(0.3, 0.15, n)).round(2)  # rounding makes ties
    folds = M.stratified_folds(y, 10)
    res = M.kfold_verification(s, y, folds)
    accs, thrs = _brute_kfold(s, y, folds)
    assert np.allclose(res.accuracies, accs)
    assert np.allclose(res.thresholds, thrs)
    assert res.mean == pytest.approx(np.mean(accs)) and res.std == pytest.approx(np.std(accs))


def test_stratified_folds_balanced_and_errors() -> None:
    y = np.r_[np.ones(25), np.zeros(35)]
    f = M.stratified_folds(y, 5)
    for k in range(5):
        assert (f[y == 1] == k).sum() == 5 and (f[y == 0] == k).sum() == 7
    with pytest.raises(ConfigError):
        M.stratified_folds(np.r_[np.ones(3), np.zeros(30)], 10)
    with pytest.raises(ConfigError):
        M.stratified_folds(y, 1)


@pytest.mark.parametrize(
    "scores,labels",
    [([0.1, 0.2], [1]), ([0.1, np.nan], [1, 0]), ([0.1, 0.2], [1, 2]), ([], [])],
)
def test_bad_inputs_raise(scores: list, labels: list) -> None:
    with pytest.raises(ConfigError):
        M.roc_curve(scores, labels)


def test_roc_needs_both_classes() -> None:
    with pytest.raises(ConfigError):
        M.roc_curve([0.1, 0.2], [1, 1])


def test_verification_summary_fields() -> None:
    rng = np.random.default_rng(5)
    y = np.r_[np.ones(200), np.zeros(200)].astype(int)
    s = np.where(y == 1, rng.normal(0.7, 0.1, 400), rng.normal(0.2, 0.1, 400))
    out = M.verification_summary(s, y, k=10)
    assert set(out["tar_at_far"]) == {"0.1", "0.01", "0.001"}
    assert out["tar_at_far"]["0.01"]["reliable"] and not out["tar_at_far"]["0.001"]["reliable"]
    assert len(out["fold_thresholds"]) == 10 and 0.9 < out["mean_accuracy"] <= 1.0


# ---------------------------------------------------------------------- identification


def test_open_set_identification_by_hand() -> None:
    g = np.array(["A", "B", "C"])
    probes = np.array(["A", "B", "X", "Y"])
    sim = np.array([[0.9, 0.2, 0.1], [0.8, 0.5, 0.1], [0.3, 0.6, 0.2], [0.1, 0.2, 0.4]])
    ranks = M.rank_of_truth(sim, probes, g)
    assert ranks.tolist() == [1, 2, 0, 0]
    assert M.cmc_curve(ranks).tolist() == [0.5, 1.0]
    out = M.open_set_identification(sim, probes, g, fars=(0.5, 0.1), top_k=(1, 2))
    assert out["rank_k"] == {"1": 0.5, "2": 1.0}
    assert out["mated_probes"] == 2 and out["non_mated_probes"] == 2
    # FAR 0.5 -> one false alarm allowed -> threshold just above 0.4; only probe A is a correct top-1
    assert out["dir_at_far"]["0.5"]["dir"] == 0.5 and out["dir_at_far"]["0.5"]["far"] == 0.5
    assert 0.4 < out["dir_at_far"]["0.5"]["threshold"] < 0.41
    assert out["dir_at_far"]["0.1"]["far"] == 0.0 and out["dir_at_far"]["0.1"]["threshold"] > 0.6
    # accepts by top-1 score: .9 correct, .8 wrong identity, .6 and .4 non-mated
    assert out["precision_at_recall"]["0.9"] is None  # rank-1 misses cap recall at 0.5
    assert out["recall_at_precision"]["0.99"] == {"recall": 0.5, "precision": 1.0, "threshold": 0.9}
    assert out["max_recall"] == 0.5


def test_rank_ties_are_pessimistic_and_shape_checked() -> None:
    assert M.rank_of_truth(np.array([[0.5, 0.5]]), np.array(["A"]), np.array(["A", "B"])).tolist() == [2]
    with pytest.raises(ConfigError):
        M.rank_of_truth(np.zeros((2, 2)), np.array(["A"]), np.array(["A", "B"]))
    with pytest.raises(ConfigError):
        M.cmc_curve(np.array([0, 0]))


# ---------------------------------------------------------------------- datasets


def test_lfw_pairs_files(shared) -> None:
    ds = load_dataset("lfw", shared / "data" / "lfw")
    assert isinstance(ds, LFWDataset)
    p = ds.pairs("pairs")
    assert len(p) == 6000 and p.folds is not None
    for k in range(10):
        assert p.same[p.folds == k].sum() == 300 and (~p.same[p.folds == k]).sum() == 300
    assert p.a[0] == "Abel_Pacheco/Abel_Pacheco_0001.jpg" and p.b[0] == "Abel_Pacheco/Abel_Pacheco_0004.jpg"
    assert all(ds.path(k).is_file() for k in p.images()[:20])
    d = ds.pairs("devtest")
    assert len(d) == 1000 and d.folds is None and d.same.sum() == 500
    sub = p.subset(200)
    assert len(sub) == 200 and sub.same.sum() == 100 and np.bincount(sub.folds).tolist() == [20] * 10
    assert d.subset(10).same.sum() == 5


def test_lfw_malformed_files(tmp_path) -> None:
    (tmp_path / "images").mkdir()
    ds = LFWDataset(tmp_path)
    with pytest.raises(DatasetError, match="not found"):
        ds.pairs("pairs")
    (tmp_path / "pairs.txt").write_text("1\t1\nA\t1\t2\nB\tx\tC\t1\n")
    with pytest.raises(DatasetError, match="not an integer"):
        ds.pairs("pairs")
    (tmp_path / "pairs.txt").write_text("1\t2\nA\t1\t2\n")
    with pytest.raises(DatasetError, match="promises"):
        ds.pairs("pairs")
    (tmp_path / "pairs.txt").write_text("1\t1\nA\t1\t2\nB\t1\tC\t1\n")
    with pytest.raises(DatasetError, match="missing"):
        ds.pairs("pairs")
    with pytest.raises(DatasetError):
        LFWDataset(tmp_path / "nope")
    with pytest.raises(DatasetError, match="unknown dataset"):
        load_dataset("nope", tmp_path)


def test_folder_dataset_and_split(tmp_path) -> None:
    for person, n in [("ann", 3), ("bob", 2), ("cid", 1), ("dan", 4)]:
        (tmp_path / person).mkdir()
        for i in range(n):
            (tmp_path / person / f"{i}.jpg").write_bytes(b"x")
    ds = FolderDataset(tmp_path)
    ids = ds.identities()
    assert ids["ann"] == ["ann/0.jpg", "ann/1.jpg", "ann/2.jpg"]
    sp = identification_split(ids, gallery_per_id=1, enrolled_every=2)
    assert sp.gallery == {"ann": ["ann/0.jpg"], "dan": ["dan/0.jpg"]}
    assert sp.describe() == {
        "enrolled": 2,
        "gallery_images": 2,
        "probes": 7,
        "mated_probes": 5,
        "non_mated_probes": 2,
    }
    assert "cid/0.jpg" not in sp.probes
    assert "cid/0.jpg" in identification_split(ids, include_singletons=True).probes
    with pytest.raises(DatasetError, match="no pairs"):
        ds.pairs()
    (tmp_path / "pairs.txt").write_text("ann/0.jpg ann/1.jpg 1\nann/0.jpg bob/0.jpg 0\n")
    assert FolderDataset(tmp_path, pairs_file=tmp_path / "pairs.txt").pairs().same.tolist() == [True, False]
    (tmp_path / "bad.txt").write_text("ann/0.jpg ann/1.jpg yes\n")
    with pytest.raises(DatasetError):
        FolderDataset(tmp_path, pairs_file=tmp_path / "bad.txt").pairs()
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DatasetError):
        FolderDataset(empty).identities()


def test_dataset_plugin_hook(tmp_path) -> None:
    from facesdk.plugins import hookimpl, register_plugin, unregister_plugin

    class Mine(Dataset):
        name = "mine"

    class Plugin:
        @hookimpl
        def facesdk_datasets(self):
            return {"mine": Mine, "broken": lambda root, **kw: object()}

    register_plugin(Plugin(), name="test-datasets")
    try:
        assert isinstance(load_dataset("mine", tmp_path), Mine)
        assert isinstance(load_dataset("lfw", tmp_path), LFWDataset)  # the built-in plugin's
        with pytest.raises(DatasetError, match="not a Dataset"):
            load_dataset("broken", tmp_path)
    finally:
        unregister_plugin("test-datasets")


# ---------------------------------------------------------------------- cache and quality


def _rec(v: float) -> FaceRecord:
    return FaceRecord(
        np.full(4, v, np.float32), np.zeros(4, np.float32), np.zeros((5, 2), np.float32), 0.9, False, 1
    )


def test_cache_chunks_resume_and_ignore_torn_files(tmp_path) -> None:
    c = EmbeddingCache(tmp_path, "m", "onnxruntime", "fp32", "det", chunk_size=2)
    for i in range(5):
        c.put(f"k{i}", _rec(i))
    assert len(list(c.dir.glob("chunk-*.npz"))) == 2  # two full chunks; one record pending
    c2 = EmbeddingCache(tmp_path, "m", "onnxruntime", "fp32", "det")  # an "interrupted" run's successor
    assert len(c2) == 4 and c2.missing(["k0", "k4", "k4"]) == ["k4"]
    c.flush()
    (c.dir / "chunk-000099.npz").write_bytes(b"torn")
    c3 = EmbeddingCache(tmp_path, "m", "onnxruntime", "fp32", "det")
    assert len(c3) == 5 and float(c3.get("k3").emb[0]) == 3.0
    assert np.allclose(c3.matrix(["k1", "k2"])[:, 0], [1, 2])
    other = EmbeddingCache(tmp_path, "m", "openvino", "fp32", "det")
    assert len(other) == 0 and other.dir != c.dir


def test_degradation_is_deterministic(shared) -> None:
    from facesdk.image import load_image

    img = load_image(shared / "data" / "lfw" / "images" / "Abel_Pacheco" / "Abel_Pacheco_0001.jpg")
    box = np.array([92, 60, 185, 188], np.float32)
    a = degrade(img, box, "key-1")
    b = degrade(img, box, "key-1")
    assert np.array_equal(a, b)
    p = Degradation().params_for("key-1")
    assert 32 <= p["face_width"] <= 48 and 20 <= p["jpeg_quality"] <= 30
    # face box width 93 px -> about face_width px after the downscale
    assert a.shape[1] == round(250 * p["face_width"] / 93)
    assert (
        not np.array_equal(degrade(img, box, "key-2")[:5, :5], a[:5, :5])
        or degrade(img, box, "key-2").shape != a.shape
    )
    assert Degradation.from_dict({"jpeg_quality": 25}).jpeg_quality == (25, 25)
    with pytest.raises(ConfigError):
        Degradation.from_dict({"sharpness": 2})
    with pytest.raises(ConfigError):
        Degradation.from_dict({"jpeg_quality": [0, 200]})
    assert tier_sides("low-high") == (True, False)
    with pytest.raises(ConfigError):
        tier_sides("medium")
