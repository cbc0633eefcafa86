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


@pytest.fixture(scope="module")
def labelled(shared: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """10 DevTest people x 3 photos and 12 DevTest people with one photo (symlinks)."""
    lfw = shared / "data/lfw"
    people = [ln.split() for ln in (lfw / "peopleDevTest.txt").read_text().splitlines()[1:]]
    multi = [p for p, n in people if int(n) >= 3][:10]
    single = [p for p, n in people if int(n) == 1][:12]
    root = tmp_path_factory.mktemp("labelled")
    for p in multi + single:
        (root / p).mkdir()
        for f in sorted((lfw / "images" / p).iterdir())[: 3 if p in multi else 1]:
            (root / p / f.name).symlink_to(f)
    return root


@pytest.fixture(scope="module")
def calibrated(labelled: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict, Path]:
    tmp = tmp_path_factory.mktemp("cal")
    card = tmp / "mfn.toml"
    shutil.copy(REPO / "model_zoo/cards/mobilefacenet-sirius.toml", card)
    out = tmp / "cal.json"
    args = ["--detector", "yunet-2023mar", "--embedder", "mobilefacenet-sirius", "--backend", "onnxruntime",
            "calibrate", "--dataset", "folder", "--root", str(labelled), "--gallery-size", "10", "--trials", "3",
            "--fars", str(FAR), "--folds", "3", "--cache", str(tmp / "cache"), "--out", str(out),
            "--write-card", str(card), "--no-progress"]
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
    pts = [p for p in out["operating_points"] if p["task"] == "identification"]
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


def test_card_stores_points_and_recogniser_uses_them(calibrated: tuple[Path, dict, Path], shared: Path) -> None:
    card_path, out, _ = calibrated
    card = ModelCard.from_toml(card_path)
    assert {p.task for p in card.operating_points} == {"verification", "identification"}
    ident = next(p for p in out["operating_points"] if p["task"] == "identification")
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
    assert [p.threshold for p in again.operating_points if p.task == "identification"] == [0.5]
