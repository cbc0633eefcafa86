"""The same tensors through every backend: ONNX Runtime, OpenVINO, TFLite/LiteRT; strict mode; bad files."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

import facesdk
from facesdk import zoo
from facesdk.backend import Artifact
from facesdk.errors import DeviceMismatchError, ModelFormatError
from facesdk.plugins import get_backend, list_backends


MFN = {"detector": "yunet-2023mar", "embedder": "mobilefacenet-sirius"}


@pytest.fixture(scope="module")
def crops(shared: Path) -> np.ndarray:
    rec = facesdk.FaceRecognizer(backend="onnxruntime", **MFN)
    img = rec.load(shared / "data/photos/knn_examples/test/obama_and_biden.jpg")
    return rec.align(img, rec.detect(img))


def test_all_builtin_backends_available() -> None:
    rows = {r["name"]: r for r in list_backends()}
    for name in ("onnxruntime", "openvino", "tflite"):
        assert rows[name]["available"], rows[name]["reason"]
        assert "cpu" in rows[name]["devices"]


@pytest.mark.parametrize("backend", ["openvino", "tflite"])
def test_embedder_parity_with_onnxruntime(backend: str, crops: np.ndarray) -> None:
    ref = facesdk.FaceRecognizer(backend="onnxruntime", **MFN)
    other = facesdk.FaceRecognizer(embedder_backend=backend, detector_backend="onnxruntime", **MFN)
    d = other.describe()["embedder"]
    assert d["backend"] == backend and d["device"] == "cpu" and d["precision"] == "fp32"
    a, b = ref.embed_crops(crops), other.embed_crops(crops)
    assert len(crops) == 3  # odd count: the fixed-batch-2 TFLite model must pad and split
    cos = (a * b).sum(1)
    assert cos.min() > 0.9999 and np.abs(a - b).max() < 1e-3


def test_default_pipeline_on_openvino_matches_onnxruntime(shared: Path) -> None:
    # MTCNN + dlib ResNet (converted by facesdk) on both engines: same faces, same descriptors.
    img = shared / "data/photos/knn_examples/test/kit_with_rose.jpg"
    a = facesdk.FaceRecognizer(backend="onnxruntime").faces(img)
    b = facesdk.FaceRecognizer(backend="openvino").faces(img)
    assert len(a) == len(b) == 2
    for x, y in zip(a, b):
        assert np.abs(x.box - y.box).max() < 1.0
        assert float(x.embedding @ y.embedding) > 0.9999  # type: ignore[operator]


def test_yunet_on_openvino_matches_onnxruntime(shared: Path) -> None:
    img = shared / "data/photos/two_people.jpg"
    a = facesdk.FaceRecognizer(backend="onnxruntime", **MFN).detect(img)
    b = facesdk.FaceRecognizer(backend="openvino", **MFN).detect(img)
    assert len(a) == len(b) == 2
    for x, y in zip(a, b):
        assert np.abs(x.box - y.box).max() < 0.5 and np.abs(x.landmarks - y.landmarks).max() < 0.5  # type: ignore[operator]


def test_ultraface_raw_tflite_host_priors_match_onnx_graph(shared: Path) -> None:
    img = shared / "data/photos/knn_examples/test/obama_and_biden.jpg"
    raw = facesdk.FaceRecognizer(
        detector="ultraface-rfb-320-raw", detector_backend="tflite", embedder_backend="onnxruntime"
    ).detect(img)
    onnx = facesdk.FaceRecognizer(detector="ultraface-rfb-320", backend="onnxruntime").detect(img)
    assert len(raw) == len(onnx) >= 2
    for x, y in zip(raw, onnx):
        assert np.abs(x.box - y.box).max() <= 1.0 and abs(x.score - y.score) < 1e-3


def test_openvino_ir_detector(shared: Path) -> None:
    rec = facesdk.FaceRecognizer(detector="omz-face-detection-retail-0005", backend="openvino")
    dets = rec.detect(shared / "data/photos/two_people.jpg")
    ref = facesdk.FaceRecognizer(backend="onnxruntime", **MFN).detect(shared / "data/photos/two_people.jpg")
    assert len(dets) == 2
    for r in ref:
        assert max(facesdk.detect.iou(r.box, np.stack([d.box for d in dets]))) > 0.5


def test_ir_companion_bin_is_verified(shared: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    mirror = tmp_path / "mirror/intel_omz"
    mirror.mkdir(parents=True)
    for f in ("face-detection-retail-0005.xml", "face-detection-retail-0005.bin"):
        (mirror / f).write_bytes((shared / "models/intel_omz" / f).read_bytes())
    monkeypatch.setenv("FACESDK_MODEL_MIRROR", str(tmp_path / "mirror"))
    assert zoo.fetch("omz-face-detection-retail-0005").exists()
    b = bytearray((mirror / "face-detection-retail-0005.bin").read_bytes())
    b[12345] ^= 1
    (mirror / "face-detection-retail-0005.bin").write_bytes(bytes(b))
    with pytest.raises(facesdk.errors.ChecksumError):
        zoo.fetch("omz-face-detection-retail-0005")
    (mirror / "face-detection-retail-0005.bin").unlink()
    with pytest.raises(facesdk.errors.ModelNotFoundError, match="missing"):
        zoo.fetch("omz-face-detection-retail-0005")


def test_strict_devices() -> None:
    ov = get_backend("openvino")
    onnx = Artifact(zoo.fetch("yunet-2023mar", "onnx"), "onnx")
    with pytest.raises(DeviceMismatchError):
        ov.load(onnx, device="gpu")
    assert ov.load(onnx, device="gpu", strict=False).device == "cpu"
    with pytest.raises(DeviceMismatchError):
        ov.load(onnx, precision="int8")
    tfl = get_backend("litert")
    art = Artifact(zoo.fetch("mobilefacenet-sirius", "tflite"), "tflite")
    with pytest.raises(DeviceMismatchError, match="Edge TPU"):
        tfl.load(art, device="edgetpu")
    s = tfl.load(art, device="edgetpu", strict=False)
    assert s.device == "cpu" and s.precision == "fp32" and s.max_batch == 2
    with pytest.raises(DeviceMismatchError):
        tfl.load(art, precision="int8")  # a float model is not int8


@pytest.mark.parametrize(
    "backend, fmt, suffix",
    [
        ("openvino", "onnx", ".onnx"),
        ("openvino", "openvino-ir", ".xml"),
        ("tflite", "tflite", ".tflite"),
        ("onnxruntime", "onnx", ".onnx"),
    ],
)
def test_corrupt_model_files(backend: str, fmt: str, suffix: str, tmp_path: Path) -> None:
    bad = tmp_path / f"bad{suffix}"
    bad.write_bytes(os.urandom(4096))
    with pytest.raises(ModelFormatError):
        get_backend(backend).load(Artifact(bad, fmt))
