"""The matching head exported from an enrolled gallery gives the core gallery's identities on the test
photos, beside or appended to the embedder, on ONNX Runtime, OpenVINO and LiteRT (fp32 and int8)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import facesdk
from facesdk import zoo
from facesdk.backend import Artifact
from facesdk.image import to_tensor
from facesdk.plugins import get_backend

DLIB = "dlib-resnet-v1"


@pytest.fixture(scope="module")
def enrolled(shared: Path) -> dict:
    """dlib recogniser (no TTA: the appended head sees the same tensor), knn_examples/train enrolled."""
    rec = facesdk.FaceRecognizer(embedder=DLIB, backend="onnxruntime", tta="none")
    train = shared / "data/photos/knn_examples/train"
    samples = []
    for person in sorted(p for p in train.iterdir() if p.is_dir()):
        photos = sorted(person.glob("*.jp*g"))
        rec.enroll(person.name, photos)
        samples += [rec.embed_face(p).embedding for p in photos]
    crops, core = [], []
    for p in sorted((shared / "data/photos/knn_examples/test").glob("*.jp*g")):
        img = rec.load(p)
        dets = rec.detect(img)
        crops.append(rec.align(img, dets))
        core += [f.match.name for f in rec.identify(p)]
    crops_a = np.concatenate(crops)
    emb = rec.embed_crops(crops_a)
    sp = rec.embedder_card.input
    x = to_tensor(crops_a, layout="NCHW", color=sp.color, mean=sp.mean, std=sp.std)
    return {"rec": rec, "core": core, "emb": emb, "x": x, "samples": np.stack(samples)}


def _names(scores: np.ndarray, path: Path) -> list[str]:
    from facesdk_zoo.head import decide, load_head_names

    names, thr = load_head_names(path)
    return [m.name for m in decide(scores, names, thr)]


def test_core_identities_are_meaningful(enrolled: dict) -> None:
    core = enrolled["core"]
    assert len(core) >= 6 and {"obama", "biden", "kit_harington", "rose_leslie", "alex_lacamoire"} <= set(
        core
    )


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_onnx_head_beside_and_appended(enrolled: dict, backend: str, tmp_path: Path) -> None:
    from facesdk_zoo.head import export_head

    g = enrolled["rec"].gallery
    beside = export_head(g, tmp_path / "head.onnx")
    s = get_backend(backend).load(Artifact(beside, "onnx"))
    scores = s.run(enrolled["emb"])[0]
    np.testing.assert_allclose(scores, g.similarities(enrolled["emb"]), atol=1e-4)
    assert _names(scores, beside) == enrolled["core"]
    appended = export_head(g, tmp_path / "dlib_head.onnx", embedder=zoo.fetch(DLIB, "onnx"))
    s2 = get_backend(backend).load(Artifact(appended, "onnx"))
    desc, scores2 = s2.run(enrolled["x"])
    assert desc.shape[1] == 128 and scores2.shape == (len(enrolled["core"]), len(g))
    assert _names(scores2, appended) == enrolled["core"]


@pytest.mark.parametrize("int8", [False, True])
def test_tflite_head_beside(enrolled: dict, int8: bool, tmp_path: Path) -> None:
    from facesdk_zoo.head import export_head

    g = enrolled["rec"].gallery
    # int8 calibration: the enrolment embeddings (gallery data), never the probes
    p = export_head(g, tmp_path / "head.tflite", int8=int8, calibration=enrolled["samples"] if int8 else None)
    s = get_backend("tflite").load(Artifact(p, "tflite"), precision="int8" if int8 else "fp32")
    if int8:
        assert s.inputs[0].dtype == "int8" and s.outputs[0].dtype == "int8"
    scores = s.run_batched(enrolled["emb"])[0]
    ref = g.similarities(enrolled["emb"])
    assert np.abs(scores - ref).max() < (0.03 if int8 else 1e-4)
    assert _names(scores, p) == enrolled["core"]


def test_tflite_head_appended_fp32(enrolled: dict, tmp_path: Path) -> None:
    from facesdk_zoo.head import export_head

    g = enrolled["rec"].gallery
    p = export_head(g, tmp_path / "dlib_head.tflite", embedder=zoo.fetch(DLIB, "onnx"))
    s = get_backend("tflite").load(Artifact(p, "tflite"))
    outs = s.run_batched(np.ascontiguousarray(enrolled["x"].transpose(0, 2, 3, 1)))
    scores = next(o for o in outs if o.shape[1] == len(g))
    assert _names(scores, p) == enrolled["core"]


def test_tflite_head_appended_full_int8(enrolled: dict, shared: Path, tmp_path: Path) -> None:
    """The head appended to the embedder in one full-integer .tflite (int8 in, int8 out: the Edge TPU form)
    gives the core gallery's identities; calibrated on the enrolment photos' crops, never the probes."""
    from facesdk_zoo.head import export_head

    rec, g = enrolled["rec"], enrolled["rec"].gallery
    crops = []
    for p in sorted((shared / "data/photos/knn_examples/train").rglob("*.jp*g")):
        img = rec.load(p)
        crops.append(rec.align(img, rec.detect(img)))
    sp = rec.embedder_card.input
    calib = to_tensor(np.concatenate(crops), layout="NCHW", color=sp.color, mean=sp.mean, std=sp.std)
    p = export_head(g, tmp_path / "dlib_head.int8.tflite", embedder=zoo.fetch(DLIB, "onnx"), int8=True,
                    calibration=calib)  # fmt: skip
    s = get_backend("tflite").load(Artifact(p, "tflite"), precision="int8")
    assert s.precision == "int8" and s.inputs[0].dtype == "int8"
    assert all(o.dtype == "int8" for o in s.outputs)
    outs = s.run_batched(np.ascontiguousarray(enrolled["x"].transpose(0, 2, 3, 1)))
    scores = next(o for o in outs if o.shape[1] == len(g))
    assert np.abs(scores - g.similarities(enrolled["emb"])).max() < 0.05
    assert _names(scores, p) == enrolled["core"]
