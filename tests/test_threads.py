"""One FaceRecognizer shared by several threads, on every CPU backend (sessions are thread-safe)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

import facesdk

CASES = {
    "onnxruntime": {"detector": "yunet-2023mar", "embedder": "mobilefacenet-sirius"},
    "openvino": {"detector": "yunet-2023mar", "embedder": "mobilefacenet-sirius"},
    "tflite": {"detector": "blazeface-short", "embedder": "mobilefacenet-sirius"},
}


@pytest.mark.parametrize("backend", sorted(CASES))
def test_one_recognizer_shared_by_threads(backend: str, shared: Path) -> None:
    rec = facesdk.FaceRecognizer(backend=backend, **CASES[backend])
    assert rec.describe()["embedder"]["backend"] == backend
    assert rec.describe()["detector"]["backend"] == backend
    knn = shared / "data/photos/knn_examples"
    images = [
        knn / "test/obama1.jpg",
        knn / "test/alex_lacamoire1.jpg",
        knn / "train/biden/biden.jpg",
        knn / "train/obama/obama2.jpg",
    ]
    ref = [rec.faces(p) for p in images]
    assert all(len(r) >= 1 for r in ref)
    jobs = images * 6
    with ThreadPoolExecutor(6) as ex:
        got = list(ex.map(rec.faces, jobs))
    for r, g in zip(ref * 6, got):
        assert len(r) == len(g)
        for a, b in zip(r, g):
            assert np.allclose(a.box, b.box, atol=1e-3) and np.allclose(a.embedding, b.embedding, atol=1e-5)
    # the streaming pipeline's own worker threads share the sessions the same way
    streamed = list(rec.faces_many(jobs, workers=4, batch_size=3))
    for r, s in zip(ref * 6, streamed):
        assert s.ok and len(s.faces) == len(r)
        for a, b in zip(r, s.faces):
            assert np.allclose(a.embedding, b.embedding, atol=1e-4)
