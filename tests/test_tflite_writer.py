"""Our ONNX → TFLite writer (no TensorFlow): fp32 equals ONNX Runtime, full-int8 runs in LiteRT with int8
input/output and agrees with fp32 on real faces; malformed files raise typed errors (never crash);
edgetpu_compiler models are recognised and refused without the delegate."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import facesdk
from facesdk import zoo
from facesdk.backend import Artifact
from facesdk.errors import DeviceMismatchError, ModelFormatError
from facesdk.image import to_tensor
from facesdk.plugins import get_backend
from facesdk.tflite_check import validate_tflite

DLIB = "dlib-resnet-v1"
CALIB = 48  # LFW calibration faces for the test's int8 file (the card's recipe uses 500)


@pytest.fixture(scope="module")
def dlib_onnx() -> Path:
    return zoo.fetch(DLIB, "onnx")


@pytest.fixture(scope="module")
def knn_tensor(shared: Path) -> np.ndarray:
    """Float NCHW input tensors of the aligned faces in the knn_examples photos (never calibration data)."""
    rec = facesdk.FaceRecognizer(embedder=DLIB, backend="onnxruntime")
    crops = []
    for p in sorted((shared / "data/photos/knn_examples").rglob("*.jp*g")):
        img = rec.load(p)
        dets = rec.detect(img)
        if dets:
            crops.append(rec.align(img, dets))
    sp = rec.embedder_card.input
    return to_tensor(np.concatenate(crops), layout="NCHW", color=sp.color, mean=sp.mean, std=sp.std)


def _ort(path: Path, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    s = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return s.run(None, {s.get_inputs()[0].name: x})[0]


def _cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return (a * b).sum(1)


@pytest.fixture(scope="module")
def tflite_files(tmp_path_factory: pytest.TempPathFactory, dlib_onnx: Path) -> dict[str, Path]:
    from facesdk_zoo.calibration import calibration_crops
    from facesdk_zoo.tflite_writer import convert_onnx

    d = tmp_path_factory.mktemp("tfl")
    sp = zoo.get_card(DLIB).input
    calib = to_tensor(calibration_crops(DLIB, CALIB), layout="NCHW", color=sp.color, mean=sp.mean, std=sp.std)
    return {
        "fp32": convert_onnx(dlib_onnx, d / "dlib.tflite"),
        "int8": convert_onnx(
            dlib_onnx,
            d / "dlib.int8.tflite",
            int8=True,
            calibration=calib,
            metadata={"facesdk.model_id": DLIB},
        ),
    }


def test_fp32_tflite_equals_onnxruntime(
    tflite_files: dict[str, Path], dlib_onnx: Path, knn_tensor: np.ndarray
) -> None:
    info = validate_tflite(tflite_files["fp32"])
    assert "CONV_2D" in info.builtin_ops and info.metadata["facesdk"]["facesdk.precision"] == "fp32"
    s = get_backend("tflite").load(Artifact(tflite_files["fp32"], "tflite"), precision="fp32")
    y = s.run_batched(np.ascontiguousarray(knn_tensor.transpose(0, 2, 3, 1)))[0]
    ref = _ort(dlib_onnx, knn_tensor)
    assert _cos(ref, y).min() > 0.99999 and np.abs(ref - y).max() < 1e-3


def test_full_int8_tflite_runs_int8_and_matches(
    tflite_files: dict[str, Path], dlib_onnx: Path, knn_tensor: np.ndarray
) -> None:
    s = get_backend("tflite").load(Artifact(tflite_files["int8"], "tflite"), precision="int8")
    assert s.precision == "int8"
    assert s.inputs[0].dtype == "int8" and s.outputs[0].dtype == "int8"  # full-integer: int8 in and out
    assert validate_tflite(tflite_files["int8"]).metadata["facesdk"]["facesdk.precision"] == "int8"
    y = s.run_batched(np.ascontiguousarray(knn_tensor.transpose(0, 2, 3, 1)))[0]
    c = _cos(_ort(dlib_onnx, knn_tensor), y)
    assert len(c) >= 8 and c.mean() >= 0.99 and c.min() >= 0.98, (c.mean(), c.min())
    with pytest.raises(DeviceMismatchError):  # strict: an int8 file is not fp32
        get_backend("tflite").load(Artifact(tflite_files["int8"], "tflite"), precision="fp32")


def test_unsupported_operator_is_a_conversion_error(tmp_path: Path) -> None:
    import onnx
    from facesdk_zoo.tflite_writer import convert_onnx
    from onnx import TensorProto, helper

    from facesdk.errors import ConversionError

    g = helper.make_graph(
        [helper.make_node("Softmax", ["x"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
    )
    p = tmp_path / "s.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)]), str(p))
    with pytest.raises(ConversionError, match="Softmax"):
        convert_onnx(p, tmp_path / "s.tflite")


def test_malformed_tflite_is_a_typed_error_never_a_crash(
    tflite_files: dict[str, Path], tmp_path: Path
) -> None:
    good = tflite_files["int8"].read_bytes()
    rng = np.random.default_rng(0)
    cases = {
        "empty": b"",
        "truncated": good[: len(good) // 3],
        "header_only": good[:64],
        "no_identifier": b"\0" * 4 + b"XXXX" + good[8:],
    }
    for i in range(12):  # random byte flips in the table region (offsets, indices, vtables)
        b = bytearray(good)
        for pos in rng.integers(0, min(len(b), 4096), 8):
            b[int(pos)] = int(rng.integers(0, 256))
        cases[f"flip{i}"] = bytes(b)
    b = bytearray(good)
    b[0:4] = (len(good) + 1000).to_bytes(4, "little")  # root offset past the end
    cases["root_past_end"] = bytes(b)
    for name, data in cases.items():
        (tmp_path / f"{name}.tflite").write_bytes(data)
    # In a child process: if a corrupt file reached LiteRT and crashed it, the test sees the signal.
    code = textwrap.dedent(f"""
        import pathlib
        from facesdk.backend import Artifact
        from facesdk.errors import FaceSDKError
        from facesdk.plugins import get_backend
        be = get_backend("tflite")
        for p in sorted(pathlib.Path({str(tmp_path)!r}).glob("*.tflite")):
            try:
                s = be.load(Artifact(p, "tflite"), strict=False)
                print(p.stem, "loaded")
            except FaceSDKError as e:
                print(p.stem, type(e).__name__)
    """)
    r = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, (r.returncode, r.stderr[-2000:])
    out = dict(line.split(" ", 1) for line in r.stdout.strip().splitlines())
    assert len(out) == len(cases)
    for k in ("empty", "truncated", "header_only", "no_identifier", "root_past_end"):
        assert out[k] == "ModelFormatError", (k, out[k])
    assert all(v in ("ModelFormatError", "loaded", "BackendError") for v in out.values()), out


def test_edgetpu_compiled_model_is_recognised_and_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from facesdk_zoo.tflite_writer import Op, Tensor, TFLGraph, write_tflite

    g = TFLGraph()
    a = g.add(Tensor("input", (1, 8), dtype="int8", quant=(np.array([0.1]), np.array([0]), 0)))
    b = g.add(Tensor("output", (1, 8), dtype="int8", quant=(np.array([0.1]), np.array([0]), 0)))
    g.ops.append(Op("CUSTOM:edgetpu-custom-op", [a], [b], {"custom_options": b"\0" * 8}))
    g.inputs, g.outputs = [a], [b]
    p = tmp_path / "m_edgetpu.tflite"
    p.write_bytes(write_tflite(g))
    assert validate_tflite(p).edgetpu_compiled
    monkeypatch.setenv("FACESDK_EDGETPU_LIB", str(tmp_path / "no-libedgetpu.so.1"))
    be = get_backend("tflite")
    with pytest.raises(DeviceMismatchError, match="edgetpu_compiler"):
        be.load(Artifact(p, "tflite"), device="cpu", precision="int8")
    with pytest.raises(DeviceMismatchError, match="libedgetpu|Edge TPU"):
        be.load(Artifact(p, "tflite"), device="edgetpu", precision="int8", strict=False)
    # device="edgetpu" for an ordinary model: strict refuses with the reason, lenient falls back to the CPU
    plain = zoo.fetch("mobilefacenet-sirius", "tflite")
    with pytest.raises(DeviceMismatchError, match="Edge TPU runtime"):
        be.load(Artifact(plain, "tflite"), device="edgetpu")
    assert be.load(Artifact(plain, "tflite"), device="edgetpu", strict=False).device == "cpu"
    with pytest.raises(ModelFormatError):
        validate_tflite(b"\x10\0\0\0TFL3" + b"\xff" * 40)
