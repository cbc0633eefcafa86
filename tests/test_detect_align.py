"""Detection decoders (YuNet vs OpenCV's own implementation, UltraFace), NMS, alignment."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import facesdk
from facesdk import zoo
from facesdk.align import ARCFACE_112, align_face, estimate_similarity, warp_affine, warp_face
from facesdk.detect import detector_class, iou, nms
from facesdk.image import load_image, resize
from facesdk.plugins import get_backend

PHOTOS = [
    "data/photos/obama-240p.jpg",
    "data/photos/two_people.jpg",
    "data/photos/knn_examples/test/obama_and_biden.jpg",
    "data/photos/knn_examples/test/kit_with_rose.jpg",
]


def _detector(card_id: str, **kw: object) -> facesdk.detect.FaceDetector:
    from facesdk.backend import Artifact

    card = zoo.get_card(card_id)
    be = get_backend("onnxruntime")
    art = Artifact(zoo.fetch(card, "onnx"), "onnx", card)
    return detector_class(card.family)(card, be, {"main": art}, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize("rel", PHOTOS)
def test_yunet_matches_opencv(shared: Path, rel: str) -> None:
    cv2 = pytest.importorskip("cv2")
    img = resize(load_image(shared / rel), (640, 640))  # same pixels for both implementations
    det = _detector("yunet-2023mar", score_threshold=0.6, nms_threshold=0.3)
    ours = det.detect(img)
    ref = cv2.FaceDetectorYN.create(str(zoo.fetch("yunet-2023mar", "onnx")), "", (640, 640), 0.6, 0.3, 5000)
    _, faces = ref.detect(np.ascontiguousarray(img[:, :, ::-1]))
    faces = np.zeros((0, 15)) if faces is None else faces
    assert len(ours) == len(faces) >= 1
    theirs = sorted(faces, key=lambda f: -f[14])
    for d, f in zip(ours, theirs):
        ref_box = np.array([f[0], f[1], f[0] + f[2], f[1] + f[3]])
        assert np.abs(d.box - ref_box).max() <= 2.0
        assert np.abs(d.landmarks.reshape(-1) - f[4:14]).max() <= 2.0  # type: ignore[union-attr]
        assert d.score == pytest.approx(f[14], abs=1e-3)


def test_yunet_letterbox_maps_back_to_image(shared: Path) -> None:
    img = load_image(shared / "data/photos/obama-1080p.jpg")
    dets = _detector("yunet-2023mar").detect(img)
    assert len(dets) == 1
    d = dets[0]
    # Obama's face in the 1080p frame is in the centre region and is large.
    assert 500 < (d.box[0] + d.box[2]) / 2 < 1400 and d.width > 200
    le, re = d.landmarks[0], d.landmarks[1]  # type: ignore[index]
    assert le[0] < re[0]  # image-left eye first
    assert d.box[1] < le[1] < d.landmarks[3][1] < d.box[3]  # type: ignore[index]


def test_ultraface_detects_and_agrees_with_yunet(shared: Path) -> None:
    img = load_image(shared / "data/photos/two_people.jpg")
    uf = _detector("ultraface-rfb-320").detect(img)
    yn = _detector("yunet-2023mar").detect(img)
    assert len(uf) == len(yn) == 2
    assert all(d.landmarks is None for d in uf)
    for y in yn:
        assert max(iou(y.box, np.stack([u.box for u in uf]))) > 0.4


def test_no_face_in_blank_image() -> None:
    assert _detector("yunet-2023mar").detect(np.full((480, 640, 3), 127, np.uint8)) == []


def test_nms_greedy() -> None:
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30], [0, 0, 10, 10]], np.float32)
    scores = np.array([0.9, 0.8, 0.7, 0.95], np.float32)
    assert nms(boxes, scores, 0.5).tolist() == [3, 2]
    assert nms(boxes, scores, 0.99).tolist() == [3, 1, 2]  # 0 duplicates 3 (IoU 1)
    assert nms(boxes, scores, 0.5, top_k=1).tolist() == [3]
    assert nms(np.zeros((0, 4)), np.zeros(0), 0.5).tolist() == []


def test_umeyama_recovers_similarity() -> None:
    rng = np.random.default_rng(1)
    ang, s, t = 0.3, 1.7, np.array([12.0, -5.0])
    r = np.array([[np.cos(ang), -np.sin(ang)], [np.sin(ang), np.cos(ang)]])
    src = rng.uniform(0, 100, (5, 2))
    dst = src @ (s * r).T + t
    m = estimate_similarity(src, dst)
    assert np.allclose(m[:, :2], s * r, atol=1e-9) and np.allclose(m[:, 2], t, atol=1e-9)
    with pytest.raises(facesdk.errors.ConfigError):
        estimate_similarity(np.ones((5, 2)), dst)


def test_warp_places_landmarks_on_template() -> None:
    # Draw dots at known landmark positions, warp, and find them on the template.
    img = np.zeros((300, 400, 3), np.uint8)
    lm = ARCFACE_112 * 1.8 + np.array([120.0, 60.0])
    for x, y in lm:
        img[int(round(y)) - 1 : int(round(y)) + 2, int(round(x)) - 1 : int(round(x)) + 2] = 255
    crop = warp_face(img, lm.astype(np.float32), "arcface112")
    assert crop.shape == (112, 112, 3)
    for x, y in ARCFACE_112:
        yy, xx = int(round(y)), int(round(x))
        assert crop[yy - 1 : yy + 2, xx - 1 : xx + 2].max() > 100
    # identity transform keeps pixels
    noise = np.random.default_rng(0).integers(0, 255, (50, 60, 3), dtype=np.uint8)
    same = warp_affine(noise, np.array([[1.0, 0, 0], [0, 1.0, 0]]), (60, 50))
    assert np.array_equal(same, noise)


def test_box_only_alignment_gives_a_crop(shared: Path) -> None:
    img = load_image(shared / "data/photos/obama-240p.jpg")
    d = _detector("ultraface-rfb-320").detect(img)[0]
    crop = align_face(img, d.box, None, "arcface112")
    assert crop.shape == (112, 112, 3) and crop.std() > 10
