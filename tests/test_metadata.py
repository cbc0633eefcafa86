"""Artifact metadata read back and checked against the card (#8 item 3); each numeric step once (item 4)."""

from __future__ import annotations

import dataclasses
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest

from facesdk import zoo
from facesdk.backend import Artifact
from facesdk.errors import ModelFormatError
from facesdk.metadata import check_metadata, read_onnx_metadata, read_tflite_metadata
from facesdk.plugins import get_backend

REPO = Path(__file__).resolve().parents[1]


def test_onnx_metadata_props_read_back_as_onnx_writes_them(tmp_path: Path) -> None:
    onnx = pytest.importorskip("onnx")
    path = zoo.fetch("dlib-resnet-v1", "onnx")
    got = read_onnx_metadata(path)
    want = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
    assert got == want and got["facesdk.model_id"] == "dlib-resnet-v1"
    assert check_metadata(got, zoo.get_card("dlib-resnet-v1"), "onnx", "fp32") == []
    assert read_onnx_metadata(zoo.fetch("yunet-2023mar", "onnx")) == {}  # a file without metadata
    cut = tmp_path / "cut.onnx"
    cut.write_bytes(path.read_bytes()[:4096])
    with pytest.raises(ModelFormatError, match="truncated"):
        read_onnx_metadata(cut)
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x0f" * 64)  # wire type 7 does not exist
    with pytest.raises(ModelFormatError):
        read_onnx_metadata(bad)


def test_artifact_that_contradicts_its_card_is_refused(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """An ONNX file made for one card, loaded under another card's name: strict refuses, lenient warns."""
    src = zoo.fetch("dlib-resnet-v1", "onnx")
    path = tmp_path / src.name
    shutil.copyfile(src, path)
    other = dataclasses.replace(zoo.get_card("dlib-resnet-v1"), id="someone-elses-resnet")
    be = get_backend("onnxruntime")
    with pytest.raises(ModelFormatError, match="'dlib-resnet-v1'.*'someone-elses-resnet'"):
        be.load(Artifact(path, "onnx", other))
    with caplog.at_level(logging.WARNING):
        s = be.load(Artifact(path, "onnx", other), strict=False)
    assert "does not match card" in caplog.text and s.outputs[0].shape[-1] == 128
    be.load(Artifact(path, "onnx", zoo.get_card("dlib-resnet-v1"))).close()  # its own card: fine


def test_tflite_metadata_buffer_read_back(tmp_path: Path) -> None:
    path = zoo.fetch("ultraface-rfb-320-raw", "tflite")
    meta = read_tflite_metadata(path)
    assert list(meta) == ["min_runtime_version"] and meta["min_runtime_version"].startswith("<buffer ")
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(b"\xff\xff\xff\x7fTFL3" + bytes(64))  # root table offset far past the end
    with pytest.raises(ModelFormatError, match="outside the file"):
        read_tflite_metadata(bad)
    with pytest.raises(ModelFormatError, match="not a TFLite"):
        read_tflite_metadata(zoo.fetch("yunet-2023mar", "onnx"))


def _ir_with_rt_info(onnx_path: Path, xml: Path, entries: dict[str, str]) -> Path:
    """An OpenVINO IR of ``onnx_path``, written by OpenVINO, ``rt_info`` set as the zoo recipe does."""
    ov = pytest.importorskip("openvino")
    model = ov.Core().read_model(str(onnx_path))
    for k, v in entries.items():
        model.set_rt_info(v, ["facesdk", k])
    ov.save_model(model, str(xml), compress_to_fp16=False)
    return xml


def test_openvino_ir_rt_info_read_back_and_checked(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """IR ``rt_info`` is read back like ONNX metadata_props: an IR made for another card is refused (strict)
    or loaded with a warning; the IR the card describes loads."""
    from facesdk.metadata import read_metadata, read_openvino_metadata

    card = zoo.get_card("mobilefacenet-sirius")
    onnx_path = zoo.fetch(card, "onnx")
    spec = card.artifact("openvino-ir")
    onnx_sha = card.artifact("onnx").sha256
    good = _ir_with_rt_info(onnx_path, tmp_path / "good" / spec.file,
                            {"model_id": card.id, "precision": spec.precision, "source_sha256": onnx_sha})
    meta = read_openvino_metadata(good)
    assert meta == {"facesdk.model_id": card.id, "facesdk.precision": spec.precision,
                    "facesdk.source_sha256": onnx_sha}
    assert read_metadata(good, "openvino-ir") == meta and check_metadata(meta, card, "openvino-ir",
                                                                          spec.precision) == []
    # a real IR without facesdk entries (Intel's Open Model Zoo): nothing to check
    assert read_openvino_metadata(zoo.fetch("omz-face-detection-retail-0005", "openvino-ir")) == {}
    be = get_backend("openvino")
    be.load(Artifact(good, "openvino-ir", card)).close()  # what its card describes: loads (strict)
    other = _ir_with_rt_info(onnx_path, tmp_path / "other" / spec.file,
                             {"model_id": "someone-elses-model", "precision": spec.precision})
    with pytest.raises(ModelFormatError, match="'someone-elses-model'.*'mobilefacenet-sirius'"):
        be.load(Artifact(other, "openvino-ir", card))
    with caplog.at_level(logging.WARNING):
        s = be.load(Artifact(other, "openvino-ir", card), strict=False)
    assert "does not match card" in caplog.text and s.outputs[0].shape[-1] == 192
    s.close()
    wrong_src = _ir_with_rt_info(onnx_path, tmp_path / "src" / spec.file,
                                 {"model_id": card.id, "source_sha256": "0" * 64})
    with pytest.raises(ModelFormatError, match="built from"):
        be.check_artifact(Artifact(wrong_src, "openvino-ir", card))
    # hostile or broken XML: typed errors, no entity expansion
    bomb = tmp_path / "bomb.xml"
    bomb.write_text('<?xml version="1.0"?><!DOCTYPE net [<!ENTITY a "aaaaaaaaaa">'
                    '<!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">]><net><rt_info><facesdk>'
                    '<model_id value="&b;"/></facesdk></rt_info></net>')
    with pytest.raises(ModelFormatError, match="DOCTYPE"):
        read_openvino_metadata(bomb)
    cut = tmp_path / "cut.xml"
    cut.write_bytes(good.read_bytes()[:2000])
    with pytest.raises(ModelFormatError, match="well-formed"):
        read_openvino_metadata(cut)
    with pytest.raises(ModelFormatError, match="not an OpenVINO IR"):
        read_openvino_metadata(_write(tmp_path / "svg.xml", "<svg><rt_info/></svg>"))


def _write(p: Path, text: str) -> Path:
    p.write_text(text)
    return p


def test_tensorrt_engine_header_checked_against_the_card(tmp_path: Path) -> None:
    """The engine header (no TensorRT needed to read it) names the ONNX it was built from."""
    from facesdk_backends.tensorrt.backend import TensorRTBackend, write_engine_file

    card = zoo.get_card("yunet-2023mar")
    onnx_sha = card.artifact("onnx").sha256
    assert onnx_sha
    good, bad = tmp_path / "good.engine", tmp_path / "bad.engine"
    write_engine_file(good, {"model_id": card.id, "precision": "fp16", "source_sha256": onnx_sha}, b"blob")
    write_engine_file(bad, {"model_id": card.id, "precision": "fp16", "source_sha256": "0" * 64}, b"blob")
    be = TensorRTBackend()
    meta = be.read_metadata(Artifact(good, "trt-engine", card))
    assert meta["facesdk.model_id"] == card.id and check_metadata(meta, card, "trt-engine") == []
    problems = check_metadata(be.read_metadata(Artifact(bad, "trt-engine", card)), card, "trt-engine")
    assert len(problems) == 1 and "built from" in problems[0]
    with pytest.raises(ModelFormatError, match="built from"):
        be.check_artifact(Artifact(bad, "trt-engine", card))
    assert check_metadata({"facesdk.precision": "int8"}, card, "onnx", "fp32")  # precision contradicts


# ------------------------------------------------------------------ item 4: each numeric step once

def test_ssd_decode_is_one_function_for_ultraface_and_tinierssd() -> None:
    from facesdk.detect.boxes import decode_ssd_boxes
    from facesdk.detect.tinierssd import decode_tinierssd, tinierssd_priors

    rng = np.random.default_rng(0)
    pri = tinierssd_priors()
    g = rng.normal(size=(len(pri), 4)).astype(np.float32)
    got = decode_ssd_boxes(g, pri, 0.1, 0.2)
    cxcy = g[:, :2] * 0.1 * pri[:, 2:] + pri[:, :2]
    wh = np.exp(g[:, 2:] * 0.2) * pri[:, 2:]
    assert np.array_equal(got, np.concatenate([cxcy - wh / 2, cxcy + wh / 2], axis=1))
    # TinierSSD's int8 heads (÷128) decode through the same function
    locs = rng.integers(-128, 128, size=(len(pri), 4))
    scores = np.zeros((len(pri), 2), np.int64)
    scores[7, 1] = 127  # one confident prior
    boxes, sc = decode_tinierssd(locs, scores, pri, min_score=0.5)
    want = decode_ssd_boxes(locs[7:8] / 128.0, pri[7:8], 0.1, 0.2)[0]
    assert len(boxes) == 1 and np.allclose(boxes[0], want)


def test_similarity_transform_is_one_function() -> None:
    import facesdk.dlib.crop
    import facesdk.dlib.shape_predictor
    from facesdk.align import ARCFACE_112, estimate_similarity, similarity_transform

    assert facesdk.dlib.shape_predictor.similarity_transform is similarity_transform
    assert facesdk.dlib.crop.similarity_transform is similarity_transform
    src = ARCFACE_112.astype(np.float64)
    m, t = similarity_transform(src, src * 2 + 3)
    assert np.allclose(m, 2 * np.eye(2)) and np.allclose(t, 3)
    assert np.allclose(estimate_similarity(src, src * 2 + 3), np.concatenate([m, t[:, None]], axis=1))


def test_atomic_writes_live_in_fileio_only(tmp_path: Path) -> None:
    """One atomic-write implementation: no other module creates temp files to rename."""
    from facesdk.errors import ChecksumError
    from facesdk.fileio import atomic_path, atomic_writer

    offenders = []
    for folder in ("facesdk", "backends", "benchmarks", "model_zoo", "plugins"):
        for f in (REPO / folder).rglob("*.py"):
            text = f.read_text(encoding="utf-8")
            if ("mkstemp(" in text or "os.replace(" in text) and f.name != "fileio.py":
                offenders.append(str(f.relative_to(REPO)))
    assert offenders == []
    target = tmp_path / "x.bin"
    target.write_bytes(b"old")

    def refuse(p: Path) -> None:
        assert p.read_bytes() == b"new"
        raise ChecksumError("no")

    with pytest.raises(ChecksumError), atomic_path(target, verify=refuse) as tmp:
        tmp.write_bytes(b"new")
    with pytest.raises(RuntimeError), atomic_writer(target) as f:
        f.write(b"half")
        raise RuntimeError("crash")
    assert target.read_bytes() == b"old" and sorted(p.name for p in tmp_path.iterdir()) == ["x.bin"]
    with atomic_writer(target) as f:
        f.write(b"new")
    assert target.read_bytes() == b"new"


def test_identify_normalises_once(shared: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """FaceRecognizer embeddings are unit vectors; the gallery does not L2-normalise them again."""
    import facesdk
    import facesdk.gallery as gallery_mod

    rec = facesdk.FaceRecognizer(detector="yunet-2023mar", embedder="mobilefacenet-sirius",
                                 backend="onnxruntime")
    photo = shared / "data" / "photos" / "obama-240p.jpg"
    rec.enroll("obama", photo)
    want = rec.identify(photo)[0].match  # templates are normalised (and cached) here
    assert want is not None and want.name == "obama"

    def boom(*a: object, **k: object) -> None:
        raise AssertionError("second L2 normalisation")

    monkeypatch.setattr(gallery_mod, "l2_normalize", boom)
    got = rec.identify(photo)[0].match
    assert got is not None and got.name == "obama" and abs(got.similarity - want.similarity) < 1e-6
    g = rec.gallery
    e = np.asarray(rec.faces(photo)[0].embedding)
    assert np.allclose(g.similarities(2 * e, normalized=True), 2 * g.similarities(e, normalized=True))
