"""The fast paths of the streaming pipeline give the same answers as the plain ones (issue 12).

MTCNN over a group of images equals MTCNN image by image; the all-pairs NMS equals the row-by-row
loop; YuNet's one-pass decode and in-place input tensor equal the per-stride decode and
``to_tensor``; detection groups in the stream keep input order and per-item errors, also when the
group call itself fails; ONNX Runtime sessions do not spin unless asked.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import facesdk
from facesdk.detect import Detection
from facesdk.detect.mtcnn import nms_min
from facesdk.errors import ConfigError, ImageDecodeError, ImageError
from facesdk.image import to_tensor
from facesdk.stream import StreamStats

nms_mod = importlib.import_module("facesdk.detect.nms")  # the module (the package exports the function)


@pytest.fixture(scope="module")
def lfw(shared: Path) -> list[Path]:
    root = shared / "data/lfw/images"
    people = ["Aaron_Eckhart", "Abdullah_Gul", "Colin_Powell", "George_W_Bush", "Serena_Williams"]
    return [min((root / p).glob("*.jpg")) for p in people]


@pytest.fixture(scope="module")
def mtcnn() -> facesdk.FaceRecognizer:
    return facesdk.FaceRecognizer(
        detector="mtcnn", embedder="mobilefacenet-sirius", backend="onnxruntime", batch_size=4
    )


def _same(a: list[Detection], b: list[Detection]) -> bool:
    return len(a) == len(b) and all(
        np.array_equal(x.box, y.box) and x.score == y.score and np.array_equal(x.landmarks, y.landmarks)
        for x, y in zip(a, b)
    )


def test_mtcnn_group_equals_one_by_one(mtcnn: facesdk.FaceRecognizer, lfw: list[Path], shared: Path) -> None:
    imgs = [mtcnn.load(p) for p in lfw]
    two = mtcnn.load(shared / "data/photos/two_people.jpg")
    imgs += [two, imgs[0][30:210, 40:220].copy(), np.full((90, 70, 3), 127, np.uint8), two]
    det = mtcnn.detector
    calls: dict[str, int] = {}
    runs = {r: s.run for r, s in det.sessions.items()}

    def counting(role: str) -> Any:
        def run(batch: np.ndarray) -> list[np.ndarray]:
            calls[role] = calls.get(role, 0) + 1
            return runs[role](batch)

        return run

    for role, s in det.sessions.items():
        s.run = counting(role)  # type: ignore[method-assign]
    try:
        group = det.detect_many(imgs)
        group_calls = dict(calls)
    finally:
        for s in det.sessions.values():
            del s.run
    one = [det.detect(im) for im in imgs]
    assert all(_same(a, b) for a, b in zip(group, one))
    assert sum(map(len, group)) >= 7 and group[7] == [] and len(group[5]) == 2
    # R-Net and O-Net once for the whole group; P-Net once per scale per distinct image size
    assert group_calls["rnet"] == 1 and group_calls["onet"] == 1

    def work_size(h: int, w: int) -> tuple[int, int]:  # after the max_input_side downscale
        f = det.max_input_side / max(h, w)
        return (h, w) if f >= 1 else (max(1, round(h * f)), max(1, round(w * f)))

    sizes = {work_size(*im.shape[:2]) for im in imgs}
    assert group_calls["pnet"] == sum(len(det.scales(h, w)) for h, w in sizes)
    assert det.detect_many([]) == []
    with pytest.raises(ConfigError):
        det.detect_many([imgs[0], imgs[0][..., 0]])


def _row_nms(boxes: np.ndarray, scores: np.ndarray, thr: float, top_k: int | None = None) -> list[int]:
    order = np.argsort(-scores, kind="stable")
    keep: list[int] = []
    while order.size:
        i = int(order[0])
        keep.append(i)
        if top_k is not None and len(keep) >= top_k:
            break
        ov = nms_mod.iou(boxes[i], boxes[order[1:]])
        order = order[1:][ov <= thr]
    return keep


def test_matrix_nms_equals_the_row_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(7)
    for n in (0, 1, 5, 60, 400):
        xy = rng.uniform(0, 200, (n, 2))
        wh = rng.uniform(-2, 60, (n, 2))  # a few degenerate boxes too
        boxes = np.concatenate([xy, xy + wh], 1).astype(np.float32)
        scores = rng.choice(np.linspace(0, 1, 17), n).astype(np.float32)  # many ties
        for thr in (0.3, 0.5, 0.7):
            ref = _row_nms(boxes, scores, thr)
            assert nms_mod.nms(boxes, scores, thr).tolist() == ref
            assert nms_mod.nms(boxes, scores, thr, top_k=3).tolist() == ref[:3]
            monkeypatch.setattr(nms_mod, "MATRIX_MAX", 0)  # the row-by-row branch
            assert nms_mod.nms(boxes, scores, thr).tolist() == ref
            monkeypatch.setattr("facesdk.detect.mtcnn.MATRIX_MAX", 0)
            row_min = nms_min(boxes, scores, thr).tolist()
            monkeypatch.undo()
            assert nms_min(boxes, scores, thr).tolist() == row_min


def _per_stride_decode(det: Any, outputs: dict[str, np.ndarray], meta: dict[str, Any]) -> list[Detection]:
    """YuNet's decode written the plain way (one stride at a time), as before the one-pass decode."""
    w, h = meta["size"]
    boxes_all, scores_all, kps_all = [], [], []
    for s in (8, 16, 32):
        cls, obj = outputs[f"cls_{s}"].reshape(-1), outputs[f"obj_{s}"].reshape(-1)
        bbox, kps = outputs[f"bbox_{s}"].reshape(-1, 4), outputs[f"kps_{s}"].reshape(-1, 10)
        score = np.sqrt(np.clip(cls, 0, 1) * np.clip(obj, 0, 1))
        idx = np.nonzero(score >= det.score_threshold)[0]
        r, c = np.divmod(idx, w // s)
        b = bbox[idx]
        cx, cy = (c + b[:, 0]) * s, (r + b[:, 1]) * s
        bw, bh = np.exp(b[:, 2]) * s, np.exp(b[:, 3]) * s
        boxes_all.append(np.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], axis=1))
        k = kps[idx].reshape(-1, 5, 2)
        kps_all.append(np.stack([(k[:, :, 0] + c[:, None]) * s, (k[:, :, 1] + r[:, None]) * s], axis=2))
        scores_all.append(score[idx])
    boxes = np.concatenate(boxes_all).astype(np.float32)
    scores = np.concatenate(scores_all).astype(np.float32)
    kps = np.concatenate(kps_all).astype(np.float32)
    keep = nms_mod.nms(boxes, scores, det.nms_threshold, top_k=750)
    inv = 1.0 / meta["scale"]
    return [Detection(box=boxes[i] * inv, score=float(scores[i]), landmarks=kps[i] * inv) for i in keep]


def test_yunet_native_fast_paths_are_exact(lfw: list[Path], shared: Path) -> None:
    rec = facesdk.FaceRecognizer(
        detector="yunet-2023mar-dynamic", embedder="mobilefacenet-sirius", backend="onnxruntime",
        backend_options={"threads": 2},
    )
    det = rec.detector
    # small inputs run on a single-threaded session of the same file: same outputs
    assert det.single_thread_pixels == 102400 and set(det.sessions) == {"main", "small"}
    picked = []
    for name in ("main", "small"):
        run = det.sessions[name].run
        det.sessions[name].run = lambda x, run=run, name=name: picked.append(name) or run(x)  # type: ignore
    t_small, _ = det.preprocess(rec.load(lfw[0]))  # 256 x 256
    t_big, _ = det.preprocess(rec.load(shared / "data/photos/obama-240p.jpg"))  # 448 x 256
    det.run_main(t_small)
    det.run_main(t_big)
    assert picked == ["small", "main"]
    for name in ("main", "small"):
        del det.sessions[name].run
    for t in (t_small, t_big):
        for x, y in zip(det.sessions["main"].run(t), det.sessions["small"].run(t)):
            np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-5)
    spec = det.card.input
    files = [*lfw, shared / "data/photos/two_people.jpg", shared / "data/photos/obama-240p.jpg"]
    found = 0
    for p in files:
        img = rec.load(p)
        h, w = img.shape[:2]
        t, meta = det.preprocess(img)
        ref = np.zeros_like(t)
        ref[:, :, :h, :w] = to_tensor(
            img[None], layout="NCHW", color=spec.color, mean=spec.mean, std=spec.std
        )
        assert np.array_equal(t, ref)
        out = det.run_main(t)
        a = det.finalize(img, det.decode(out, meta))
        b = det.finalize(img, _per_stride_decode(det, out, meta))
        assert _same(a, b)
        found += len(a)
    assert found >= len(files)


def test_stream_detection_groups_keep_order_and_errors(
    mtcnn: facesdk.FaceRecognizer, lfw: list[Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(lfw[0].read_bytes()[:300])
    inputs: list[object] = [
        lfw[0],
        corrupt,
        lfw[1],
        tmp_path / "missing.jpg",
        lfw[2],
        lfw[3],
        b"junk",
        lfw[4],
    ]
    st = StreamStats()
    res = list(mtcnn.faces_many(inputs, workers=2, detect_batch=3, window=7, stats=st))
    assert [r.index for r in res] == list(range(len(inputs)))
    assert isinstance(res[1].error, ImageDecodeError) and isinstance(res[6].error, ImageDecodeError)
    assert isinstance(res[3].error, ImageError) and "missing.jpg" in str(res[3].error)
    good = [0, 2, 4, 5, 7]
    for i in good:
        one = mtcnn.faces(inputs[i])
        assert res[i].ok and len(res[i].faces) == len(one) >= 1
        for a, b in zip(one, res[i].faces):
            assert np.array_equal(a.box, b.box) and np.allclose(a.embedding, b.embedding, atol=1e-5)
    assert st.images == len(inputs) and st.errors == 3
    # the group call failing (here: always) is retried image by image, so errors stay per item
    det = mtcnn.detector
    many = det.detect_many  # (MTCNN's detect is detect_many of one image)
    bad = mtcnn.load(lfw[1])  # inputs[2]

    def group_fails(images: list[np.ndarray]) -> list[list[Detection]]:
        raise ConfigError("the whole group")

    def one_fails(image: np.ndarray) -> list[Detection]:
        if np.array_equal(image, bad):
            raise ConfigError("this image only")
        return many([image])[0]

    monkeypatch.setattr(det, "detect_many", group_fails)
    monkeypatch.setattr(det, "detect", one_fails)
    again = list(mtcnn.faces_many(inputs, workers=2, detect_batch=4, embed=False))
    assert [r.index for r in again] == list(range(len(inputs)))
    assert isinstance(again[2].error, ConfigError) and "this image only" in str(again[2].error)
    assert all(again[i].ok and len(again[i].faces) == len(res[i].faces) for i in (0, 4, 5, 7))
    with pytest.raises(ConfigError):
        mtcnn.faces_many(inputs, detect_batch=0)


def test_onnxruntime_sessions_do_not_spin_unless_asked(shared: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from facesdk.backend import Artifact
    from facesdk.plugins import get_backend

    be = get_backend("onnxruntime")
    art = Artifact.from_path(shared / "models/yunet/yunet_s_dynamic.onnx")
    key = "session.intra_op.allow_spinning"

    def entry(**kw: Any) -> str:
        s = be.load(art, threads=2, **kw)
        return s._sess.get_session_options().get_session_config_entry(key)  # type: ignore[attr-defined]

    monkeypatch.delenv("FACESDK_ORT_SPINNING", raising=False)
    assert entry() == "0"
    assert entry(spinning=True) == "1"
    monkeypatch.setenv("FACESDK_ORT_SPINNING", "1")
    assert entry() == "1" and entry(spinning=False) == "0"
    assert entry(session_config={key: "0"}) == "0"


def test_an_interrupt_inside_a_group_keeps_the_inputs_before_it(
    mtcnn: facesdk.FaceRecognizer, lfw: list[Path]
) -> None:
    from facesdk.stream import StreamItem

    def boom() -> np.ndarray:
        raise KeyboardInterrupt  # as if Ctrl-C arrived while the 6th input was being read

    items = [StreamItem(str(p), p) for p in lfw] + [StreamItem("boom", boom), StreamItem("after", lfw[0])]
    # lfw has 5 images: "boom" is the 6th input, and all 7 inputs fit in one group of 8
    got: list[int] = []
    with pytest.raises(KeyboardInterrupt):
        for r in mtcnn.faces_many(items, workers=2, detect_batch=8, batch_size=2):
            got.append(r.index)
    # the inputs before the interrupt were finished (two full batches of 2 handed out; the 5th
    # still waited for its batch), nothing after it was
    assert got == [0, 1, 2, 3]


def test_fast_dlib_chip_matches_the_exact_one(
    lfw: list[Path], shared: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The cv2.warpAffine dlib chip equals the exact numpy one up to one level on a few pixels, also for
    faces cut by the image border (black outside, dlib's rule) and through dlib's pyramid (big faces)."""
    pytest.importorskip("cv2")
    from facesdk.dlib.crop import resolve_chip_method, dlib_crop_details, dlib_face_crop
    from facesdk.image import load_image
    from facesdk.dlib.shape_predictor import load_default

    sp = load_default()
    rec = facesdk.FaceRecognizer(detector="mtcnn", embedder="dlib-resnet-v1", backend="onnxruntime")
    imgs = [load_image(p) for p in lfw] + [load_image(shared / "data/photos/obama-1080p.jpg")]
    imgs.append(imgs[0][40:, 60:].copy())  # the face cut by the image's top-left corner
    exact, fast, cases = [], [], 0
    for img in imgs:
        for d in rec.detector.detect(img):
            s = sp.predict(img, (d.box[0], d.box[1], d.box[2] - 1, d.box[3] - 1))
            for shift in (0.0, 0.37):  # sub-pixel positions
                e = dlib_face_crop(img, s + shift, method="exact")
                f = dlib_face_crop(img, s + shift, method="fast")
                exact.append(e)
                fast.append(f)
                cases += dlib_crop_details(s).rect[0] < 0 or (e == 0).all(-1).any()
    ex, fa = np.stack(exact), np.stack(fast)
    diff = np.abs(ex.astype(int) - fa.astype(int))
    assert len(ex) >= 14 and cases >= 1  # some chips reach outside the image
    assert diff.max() <= 1 and (diff > 0).mean() < 1e-3
    assert np.array_equal(ex == 0, fa == 0) or ((ex == 0) != (fa == 0)).mean() < 1e-4
    cos = np.einsum("ij,ij->i", rec.embed_crops(ex), rec.embed_crops(fa))
    assert cos.min() > 0.99999
    monkeypatch.setenv("FACESDK_DLIB_CHIP", "exact")
    assert resolve_chip_method(None) == "exact"
    monkeypatch.setenv("FACESDK_DLIB_CHIP", "bogus")
    with pytest.raises(ConfigError):
        resolve_chip_method(None)


def test_describe_says_which_dlib_chip_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    """The recogniser reports its alignment template and, for dlib's crop, the implementation that
    really samples it (the environment switch is honoured)."""
    import facesdk

    rec = facesdk.FaceRecognizer()
    al = rec.describe()["alignment"]
    assert al["template"].startswith("dlib") and al["dlib_chip"] in ("fast", "exact")
    monkeypatch.setenv("FACESDK_DLIB_CHIP", "exact")
    assert rec.describe()["alignment"]["dlib_chip"] == "exact"
