"""End-to-end recognition on real photos, the gallery file format and its refusals."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

import facesdk
from facesdk.errors import (
    ConfigError,
    GalleryError,
    IncompatibleGalleryError,
    ModelFormatError,
    ModelNotFoundError,
    NoFaceError,
)
from facesdk.gallery import UNKNOWN, Gallery


@pytest.fixture(scope="module")
def rec() -> facesdk.FaceRecognizer:
    return facesdk.FaceRecognizer(
        detector="yunet-2023mar", embedder="mobilefacenet-sirius", backend="onnxruntime"
    )


@pytest.fixture(scope="module")
def knn(shared: Path) -> Path:
    return shared / "data/photos/knn_examples"


@pytest.fixture(scope="module")
def enrolled(rec: facesdk.FaceRecognizer, knn: Path) -> Gallery:
    g = rec.new_gallery()
    for person in sorted(p for p in (knn / "train").iterdir() if p.is_dir()):
        rec.enroll(person.name, sorted(person.iterdir()), gallery=g)
    return g


def test_session_reports_what_runs(rec: facesdk.FaceRecognizer) -> None:
    d = rec.describe()
    assert d["embedder"]["backend"] == "onnxruntime" and d["embedder"]["device"] == "cpu"
    assert d["embedder"]["precision"] == "fp32" and rec.embedding_size == 192


def test_identify_knn_examples(rec: facesdk.FaceRecognizer, enrolled: Gallery, knn: Path) -> None:
    expected = {
        "obama1.jpg": ["obama"],
        "alex_lacamoire1.jpg": ["alex_lacamoire"],
        "johnsnow_test1.jpg": ["kit_harington"],
        "kit_with_rose.jpg": ["kit_harington", "rose_leslie"],
    }
    for name, people in expected.items():
        faces = rec.identify(knn / "test" / name, gallery=enrolled)
        assert sorted(f.match.name for f in faces if f.match.known) == sorted(people), name  # type: ignore[union-attr]
    faces = rec.identify(knn / "test/obama_and_biden.jpg", gallery=enrolled)
    named = {f.match.name: f for f in faces if f.match.known}  # type: ignore[union-attr]
    assert set(named) == {"obama", "biden"}
    # Obama stands to the right of Biden in this photo.
    assert named["obama"].box[0] > named["biden"].box[0]
    for f in faces:
        assert np.isclose(np.linalg.norm(f.embedding), 1.0, atol=1e-5)  # type: ignore[arg-type]
        assert len(f.match.top_k) <= 3 or len(f.match.top_k) == 5  # type: ignore[union-attr]


def test_unknown_below_threshold(rec: facesdk.FaceRecognizer, enrolled: Gallery, knn: Path) -> None:
    g = rec.new_gallery()
    g.add("obama", enrolled.templates[enrolled.names.index("obama")])
    faces = rec.identify(knn / "test/kit_with_rose.jpg", gallery=g)
    assert faces and all(f.match.name == UNKNOWN for f in faces)  # type: ignore[union-attr]


def test_verify(rec: facesdk.FaceRecognizer, knn: Path) -> None:
    same = rec.verify(knn / "test/obama1.jpg", knn / "train/obama/obama.jpg")
    diff = rec.verify(knn / "test/obama1.jpg", knn / "train/biden/biden.jpg")
    assert same.same and not diff.same and same.similarity > diff.similarity + 0.3


def test_no_face_raises(rec: facesdk.FaceRecognizer) -> None:
    blank = np.full((200, 200, 3), 90, np.uint8)
    with pytest.raises(NoFaceError):
        rec.embed_face(blank)
    with pytest.raises(NoFaceError):
        rec.enroll("nobody", [blank])
    assert rec.faces(blank) == []


def test_weight_imprinting_is_mean_of_normalised(rec: facesdk.FaceRecognizer) -> None:
    g = rec.new_gallery()
    rng = np.random.default_rng(0)
    e = rng.normal(size=(3, 192)).astype(np.float32)
    g.add("a", e[:2])
    g.add("a", e[2:])
    n = e / np.linalg.norm(e, axis=1, keepdims=True)
    want = n.mean(0) / np.linalg.norm(n.mean(0))
    assert np.allclose(g.templates[0], want, atol=1e-6) and g.counts() == {"a": 3}


def test_gallery_roundtrip_and_provenance(
    rec: facesdk.FaceRecognizer, enrolled: Gallery, tmp_path: Path
) -> None:
    p = enrolled.save(tmp_path / "g.npz")
    # no temp files left behind (the empty ``.lock`` beside it is the inter-process save lock)
    assert sorted(f.name for f in tmp_path.iterdir()) == ["g.npz", "g.npz.lock"]
    g = Gallery.load(p)
    assert g.names == enrolled.names and np.allclose(g.templates, enrolled.templates)
    meta = g.metadata()
    assert meta["model_id"] == "mobilefacenet-sirius" and meta["embedding_size"] == 192
    assert g.model_sha256 == rec.model_sha256 and g.backend == "onnxruntime" and g.precision == "fp32"
    rec.use_gallery(p)
    assert rec.gallery.names == enrolled.names


def test_gallery_refuses_other_model(rec: facesdk.FaceRecognizer, tmp_path: Path) -> None:
    other = Gallery("dlib-resnet-v1", 128)
    other.add("x", np.ones(128, np.float32))
    with pytest.raises(IncompatibleGalleryError):
        rec.use_gallery(other.save(tmp_path / "o.npz"))
    same_id_other_file = Gallery("mobilefacenet-sirius", 192, model_sha256="0" * 64)
    with pytest.raises(IncompatibleGalleryError, match="sha256"):
        rec.use_gallery(same_id_other_file)
    g = rec.new_gallery()
    with pytest.raises(IncompatibleGalleryError):
        g.add("wrong-size", np.ones(128, np.float32))
    with pytest.raises(ConfigError):
        g.add(UNKNOWN, np.ones(192, np.float32))


def test_gallery_bad_files(tmp_path: Path) -> None:
    with pytest.raises(GalleryError, match="not found"):
        Gallery.load(tmp_path / "none.npz")
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"PK\x03\x04 garbage")
    with pytest.raises(GalleryError):
        Gallery.load(junk)
    g = Gallery("m", 4)
    g.add("a", np.ones(4, np.float32))
    p = g.save(tmp_path / "g.npz")
    data = p.read_bytes()
    trunc = tmp_path / "trunc.npz"
    trunc.write_bytes(data[: len(data) // 2])
    with pytest.raises(GalleryError):
        Gallery.load(trunc)
    np.savez(tmp_path / "evil.npz", names=np.array([object()], dtype=object), meta=np.array("{}"))
    with pytest.raises(GalleryError):
        Gallery.load(tmp_path / "evil.npz")


def test_missing_and_corrupt_model_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from facesdk.backend import Artifact
    from facesdk.plugins import get_backend

    be = get_backend("onnxruntime")
    with pytest.raises(ModelNotFoundError):
        Artifact.from_path(tmp_path / "nope.onnx")
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(os.urandom(2048))
    with pytest.raises(ModelFormatError):
        be.load(Artifact.from_path(bad))
    with pytest.raises(ModelFormatError):
        be.load(Artifact(bad, "tflite"))
    with pytest.raises(ModelNotFoundError):
        facesdk.FaceRecognizer(detector="no-such-model")
    with pytest.raises(ConfigError):
        facesdk.FaceRecognizer(detector="mobilefacenet-sirius")  # an embedder is not a detector


def test_batched_embedding_matches_single(rec: facesdk.FaceRecognizer, knn: Path) -> None:
    img = rec.load(knn / "test/obama_and_biden.jpg")
    crops = rec.align(img, rec.detect(img))
    batch = rec.embed_crops(crops)
    one = np.concatenate([rec.embed_crops(c[None]) for c in crops])
    assert np.allclose(batch, one, atol=1e-5)
