"""TensorRT backend: import-safe everywhere; engine header checks; GPU run only where a GPU and
TensorRT exist.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from facesdk import zoo
from facesdk.backend import Artifact
from facesdk.errors import ModelFormatError
from facesdk.plugins import get_backend, list_backends


def test_listed_with_a_reason_when_unavailable() -> None:
    row = {r["name"]: r for r in list_backends()}["tensorrt"]
    assert row["formats"] == ["trt-engine"]
    if not row["available"]:
        assert row["reason"]
    code = "import facesdk_backends.tensorrt, sys; print('tensorrt' in sys.modules)"
    assert (
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "False"
    )


def test_engine_header_roundtrip_and_refusals(tmp_path: Path) -> None:
    from facesdk_backends.tensorrt.backend import read_engine_file, write_engine_file

    p = tmp_path / "m.engine"
    write_engine_file(p, {"precision": "fp16", "tensorrt": "10.0"}, b"\x00engine")
    assert read_engine_file(p) == ({"precision": "fp16", "tensorrt": "10.0"}, b"\x00engine")
    (tmp_path / "raw.engine").write_bytes(b"not ours at all")
    with pytest.raises(ModelFormatError, match="header"):
        get_backend("tensorrt").load(Artifact(tmp_path / "raw.engine", "trt-engine"))
    p.write_bytes(p.read_bytes()[:14])
    with pytest.raises(ModelFormatError, match="truncated"):
        get_backend("trt").load(Artifact(p, "trt-engine"))
    with pytest.raises(ModelFormatError):
        get_backend("trt").load(Artifact(p, "onnx"))


@pytest.mark.gpu
def test_build_and_run_on_gpu(tmp_path: Path) -> None:
    be = get_backend("tensorrt")
    if not be.available().available:
        pytest.skip(f"TensorRT unavailable: {be.available().reason}")
    import onnxruntime as ort

    src = Artifact(zoo.fetch("mobilefacenet-sirius", "onnx"), "onnx", zoo.get_card("mobilefacenet-sirius"))
    eng = be.compile(src, precision="fp32", out_dir=tmp_path, max_batch=8)
    s = be.load(eng, device="cuda:0")
    x = np.random.default_rng(0).normal(size=(5, 3, 112, 112)).astype(np.float32)
    ref = ort.InferenceSession(str(src.path)).run(None, {"input": x})[0]
    got = s.run(x)[0]
    cos = (ref * got).sum(1) / np.linalg.norm(ref, axis=1) / np.linalg.norm(got, axis=1)
    assert s.device == "cuda:0" and s.precision == "fp32" and cos.min() > 0.999
