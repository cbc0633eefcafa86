"""`facesdk calibrate` on a small labelled set of real LFW faces: thresholds equal a brute-force search,
the card stores them, and the recogniser uses them for the right task."""

from __future__ import annotations

import contextlib
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import facesdk
from facesdk.cli import main
from facesdk.zoo import ModelCard
from facesdk_bench.cache import EmbeddingCache, file_sha256
from facesdk_bench.calibrate import calibration_split, make_pairs

REPO = Path(__file__).resolve().parents[1]
FAR = 0.1


def _people(shared: Path) -> tuple[list[str], list[str]]:
    lfw = shared / "data/lfw"
    people = [ln.split() for ln in (lfw / "peopleDevTest.txt").read_text().splitlines()[1:]]
    return [p for p, n in people if int(n) >= 3], [p for p, n in people if int(n) == 1]


def _folder(shared: Path, root: Path, people: list[str], per: int) -> Path:
    for p in people:
        (root / p).mkdir()
        for f in sorted((shared / "data/lfw/images" / p).iterdir())[:per]:
            (root / p / f.name).symlink_to(f)
    return root


@pytest.fixture(scope="module")
def labelled(shared: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """10 DevTest people x 3 photos and 12 DevTest people with one photo (symlinks)."""
    multi, single = _people(shared)
    root = tmp_path_factory.mktemp("labelled")
    _folder(shared, root, multi[:10], 3)
    return _folder(shared, root, single[:12], 1)


@pytest.fixture(scope="module")
def cohort_dir(shared: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An impostor cohort: 8 other DevTest people with one photo."""
    return _folder(shared, tmp_path_factory.mktemp("cohort"), _people(shared)[1][12:20], 1)


@pytest.fixture(scope="module")
def calibrated(labelled: Path, cohort_dir: Path,
               tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict, Path]:
    tmp = tmp_path_factory.mktemp("cal")
    card = tmp / "mfn.toml"
    shutil.copy(REPO / "model_zoo/cards/mobilefacenet-sirius.toml", card)
    out = tmp / "cal.json"
    args = ["--detector", "yunet-2023mar", "--embedder", "mobilefacenet-sirius", "--backend", "onnxruntime",
            "calibrate", "--dataset", "folder", "--root", str(labelled), "--gallery-size", "10",
            "--trials", "3",
            "--fars", str(FAR), "--folds", "3", "--cache", str(tmp / "cache"), "--out", str(out),
            "--write-card", str(card), "--no-progress", "--normalizations", "none,cohort-margin",
            "--cohort-root", str(cohort_dir)]
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert main(args) == 0
    assert "identification" in buf.getvalue()
    return card, json.loads(out.read_text()), tmp / "cache"


def _embeddings(labelled: Path, cache_root: Path) -> tuple[dict[str, np.ndarray], dict[str, list[str]]]:
    cache = EmbeddingCache(cache_root, "mobilefacenet-sirius", "onnxruntime", "fp32", "yunet-2023mar")
    ids = {d.name: sorted(f"{d.name}/{f.name}" for f in d.iterdir()) for d in sorted(labelled.iterdir())}
    emb = {}
    for keys in ids.values():
        for k in keys:
            r = cache.get(file_sha256(labelled / k))
            assert r is not None
            emb[k] = r.emb / np.linalg.norm(r.emb)
    return emb, ids


def _brute(scores: list[float], far: float) -> float:
    """Smallest threshold on a 1e-4 grid accepting at most floor(far * n) of the scores."""
    allowed = int(np.floor(far * len(scores) + 1e-9))
    s = np.asarray(scores)
    for t in np.round(np.arange(-1.0, 1.0001, 1e-4), 4):
        if np.count_nonzero(s >= t) <= allowed:
            return float(t)
    raise AssertionError("no threshold")


def test_identification_threshold_is_brute_force(labelled: Path, calibrated: tuple[Path, dict, Path]) -> None:
    _, out, cache = calibrated
    emb, ids = _embeddings(labelled, cache)
    impostor_top1 = []
    for t in range(3):
        gallery, _, non_mated = calibration_split(ids, 10, t)
        for key, _person in non_mated:  # best score over the gallery, by hand
            impostor_top1.append(max(float(np.dot(emb[key], emb[g])) for g in gallery.values()))
    pts = [p for p in out["operating_points"]
           if p["task"] == "identification" and p["normalization"] == "none"]
    assert len(pts) == 1 and pts[0]["far"] == FAR and pts[0]["gallery_size"] == 10
    assert pts[0]["threshold"] == pytest.approx(_brute(impostor_top1, FAR), abs=1e-9)
    assert pts[0]["measured"]["far"] <= FAR


def test_verification_thresholds_are_brute_force(labelled: Path, calibrated: tuple[Path, dict, Path]) -> None:
    _, out, cache = calibrated
    emb, ids = _embeddings(labelled, cache)
    a, b, same = make_pairs(ids, 0)
    s = np.array([float(np.dot(emb[x], emb[y])) for x, y in zip(a, b)])
    far_pt = next(p for p in out["operating_points"] if p["task"] == "verification" and p["target"] == "far")
    assert far_pt["threshold"] == pytest.approx(_brute(list(s[~same]), FAR), abs=1e-9)
    best = next(p for p in out["operating_points"] if p["target"] == "best-accuracy")
    acc = ((s >= best["threshold"]) == same).mean()
    grid_best = max(((s >= t) == same).mean() for t in np.linspace(-1, 1, 4001))
    assert acc == pytest.approx(grid_best)


def test_card_stores_points_and_recogniser_uses_them(calibrated: tuple[Path, dict, Path],
                                                     shared: Path) -> None:
    card_path, out, _ = calibrated
    card = ModelCard.from_toml(card_path)
    assert {p.task for p in card.operating_points} == {"verification", "identification"}
    ident = next(p for p in out["operating_points"] if p["task"] == "identification"
                 and p["normalization"] == "none")
    verif = next(p for p in out["operating_points"] if p["target"] == "best-accuracy")
    rec = facesdk.FaceRecognizer(detector="yunet-2023mar", embedder=card_path, backend="onnxruntime")
    assert rec.identification_threshold == pytest.approx(ident["threshold"])
    assert rec.threshold == pytest.approx(verif["threshold"])
    d = rec.describe()["operating_points"]["identification"]["description"]
    assert "FAR 10 % open-set identification" in d and "gallery <= 10" in d
    knn = shared / "data/photos/knn_examples"
    g = rec.new_gallery()
    rec.enroll("obama", [knn / "train/obama/obama.jpg"], gallery=g)
    face = rec.identify(knn / "test/obama1.jpg", gallery=g)[0]
    assert face.match.threshold == pytest.approx(ident["threshold"])  # type: ignore[union-attr]
    assert face.match.operating_point == rec.identification_point.describe()  # type: ignore[union-attr]
    v = rec.verify(knn / "test/obama1.jpg", knn / "train/obama/obama.jpg")
    assert v.threshold == pytest.approx(verif["threshold"]) and "verification" in v.operating_point
    # recalibrating replaces the points of the same configuration instead of piling them up
    from facesdk.calibration import OperatingPoint
    from facesdk_bench.calibrate import write_card_points

    write_card_points(card_path, [OperatingPoint.from_dict({**ident, "threshold": 0.5})])
    again = ModelCard.from_toml(card_path)
    assert len(again.operating_points) == len(card.operating_points)
    assert [p.threshold for p in again.operating_points
            if p.task == "identification" and p.normalization == "none"] == [0.5]


def test_cohort_margin_threshold_and_decisions(labelled: Path, cohort_dir: Path, shared: Path,
                                               calibrated: tuple[Path, dict, Path], tmp_path: Path) -> None:
    card_path, out, cache_root = calibrated
    emb, ids = _embeddings(labelled, cache_root)
    ccache = EmbeddingCache(cache_root, "mobilefacenet-sirius", "onnxruntime", "fp32", "yunet-2023mar")
    coh = []
    for d in sorted(cohort_dir.iterdir()):
        r = ccache.get(file_sha256(min(d.iterdir())))
        assert r is not None
        coh.append(r.emb / np.linalg.norm(r.emb))
    C = np.stack(coh)
    margins = []
    for t in range(3):
        gallery, _, non_mated = calibration_split(ids, 10, t)
        for key, _person in non_mated:
            s = sorted((float(np.dot(emb[key], emb[g])) for g in gallery.values()), reverse=True)
            margins.append(s[0] - 0.5 * max(s[1], float((C @ emb[key]).max())))
    pt = next(p for p in out["operating_points"] if p["normalization"] == "cohort-margin")
    assert pt["threshold"] == pytest.approx(_brute(margins, FAR), abs=1e-9)
    # shipped with the card: the cohort file next to it and the default decision score
    card2 = tmp_path / "mfn.toml"
    shutil.copy(REPO / "model_zoo/cards/mobilefacenet-sirius.toml", card2)
    args = ["--detector", "yunet-2023mar", "--embedder", "mobilefacenet-sirius", "--backend", "onnxruntime",
            "calibrate", "--dataset", "folder", "--root", str(labelled), "--gallery-size", "10",
            "--trials", "3",
            "--fars", str(FAR), "--folds", "3", "--cache", str(cache_root), "--write-card", str(card2),
            "--no-progress", "--normalizations", "none,cohort-margin", "--cohort-root", str(cohort_dir),
            "--ship-normalization", "cohort-margin"]
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(args) == 0
    assert (tmp_path / "cohorts/mobilefacenet-sirius.npz").is_file()
    rec = facesdk.FaceRecognizer(detector="yunet-2023mar", embedder=card2, backend="onnxruntime")
    assert rec.score_normalization == "cohort-margin"
    assert rec.identification_threshold == pytest.approx(pt["threshold"])
    knn = shared / "data/photos/knn_examples"
    g = rec.new_gallery()
    for person in ("obama", "biden"):
        rec.enroll(person, sorted((knn / "train" / person).iterdir()), gallery=g)
    face = max(rec.identify(knn / "test/obama1.jpg", gallery=g), key=lambda f: f.area)
    m = face.match
    assert m is not None and m.score is not None
    s = sorted((float(face.embedding @ t) for t in g.templates), reverse=True)  # type: ignore[operator]
    cohort = rec._margin.cohort  # type: ignore[union-attr]
    want = s[0] - 0.5 * max(s[1], float((cohort @ face.embedding).max()))
    assert m.score == pytest.approx(want, abs=1e-5) and m.similarity == pytest.approx(s[0], abs=1e-5)
    assert (m.name == "obama") == (want >= pt["threshold"])
    # an explicit threshold is a plain cosine threshold
    m2 = rec.identify(knn / "test/obama1.jpg", gallery=g, threshold=0.3)[0].match
    assert m2 is not None and m2.score is None


def test_bench_openset_on_a_folder_dataset(labelled: Path, calibrated: tuple[Path, dict, Path],
                                           tmp_path: Path) -> None:
    """`facesdk bench --protocol openset --dataset folder` end to end (embeddings from the shared cache)."""
    _, _, cache_root = calibrated
    out = tmp_path / "os"
    args = ["--detector", "yunet-2023mar", "--embedder", "mobilefacenet-sirius", "bench",
            "--dataset", "folder",
            "--root", str(labelled), "--protocol", "openset", "--trials", "3", "--cache", str(cache_root),
            "--out", str(out), "--no-progress", "--backends", "onnxruntime", "--json"]
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert main(args) == 0
    rep = json.loads((out / "report.json").read_text())
    row = rep["rows"][0]
    assert row["trials"] == 3 and row["split"]["gallery_identities"] == 10
    assert row["split"]["non_mated_probes"] == 12 and row["split"]["mated_probes"] == 20
    v = row["variants"]["mean/none"]
    assert set(v["dir_at_far"]) == {"0.1", "0.01", "0.001"} and 0 <= v["rank1"]["mean"] <= 1
    assert any("verification threshold" in k for k in v["at_threshold"])
    assert (out / "dir_far.png").stat().st_size > 0 and "DIR@FAR" in (out / "report.md").read_text()
