"""The streaming pipeline: input order, per-item errors, bounded memory, TTA folded into one batch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import facesdk
from facesdk.errors import ConfigError, GalleryError, ImageDecodeError, ImageError
from facesdk.stream import StreamItem, StreamStats


@pytest.fixture(scope="module")
def rec() -> facesdk.FaceRecognizer:
    return facesdk.FaceRecognizer(
        detector="yunet-2023mar", embedder="mobilefacenet-sirius", backend="onnxruntime", batch_size=4
    )


@pytest.fixture(scope="module")
def lfw(shared: Path) -> list[Path]:
    root = shared / "data/lfw/images"
    people = [
        "Aaron_Eckhart",
        "Abdullah_Gul",
        "Colin_Powell",
        "George_W_Bush",
        "Serena_Williams",
        "Tony_Blair",
    ]
    return [min((root / p).glob("*.jpg")) for p in people]


def test_results_in_input_order_with_per_item_errors(
    rec: facesdk.FaceRecognizer, lfw: list[Path], tmp_path: Path
) -> None:
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(lfw[0].read_bytes()[:300])
    blank = np.full((120, 160, 3), 128, np.uint8)  # decodes fine, no face
    inputs: list[object] = [lfw[0], tmp_path / "missing.jpg", lfw[1], b"not an image", blank, corrupt]
    inputs += lfw[2:]
    st = StreamStats()
    res = list(rec.faces_many(inputs, workers=2, window=3, stats=st))
    assert [r.index for r in res] == list(range(len(inputs)))
    assert isinstance(res[1].error, ImageError) and "missing.jpg" in str(res[1].error)
    assert isinstance(res[3].error, ImageDecodeError)
    assert isinstance(res[5].error, ImageDecodeError)
    assert res[4].ok and res[4].faces == [] and res[4].shape == (120, 160, 3)
    good = [i for i, x in enumerate(inputs) if isinstance(x, Path) and x in lfw]
    for i in good:
        assert res[i].ok and res[i].source == str(inputs[i])
        one = rec.faces(inputs[i])  # the one-item path, in the calling thread
        assert len(one) == len(res[i].faces) >= 1
        for a, b in zip(one, res[i].faces):
            assert np.allclose(a.box, b.box) and np.allclose(a.embedding, b.embedding, atol=1e-5)
    assert st.images == len(inputs) and st.errors == 3 and st.batches >= 2
    # the one-item path raises the item's typed error
    with pytest.raises(ImageError):
        rec.faces(tmp_path / "missing.jpg")


def test_bounded_window_over_a_10000_item_generator(rec: facesdk.FaceRecognizer) -> None:
    pulled = 0
    tiny = np.zeros((24, 24, 3), np.uint8)

    def gen():  # type: ignore[no-untyped-def]
        nonlocal pulled
        for i in range(10_000):
            pulled += 1
            yield StreamItem(f"frame{i}", tiny)

    window = 6
    stream = rec.faces_many(gen(), workers=2, window=window, embed=False)
    seen = 0
    for r in stream:
        assert r.index == seen
        seen += 1
        # never more than `window` inputs taken from the generator beyond what was handed out
        assert pulled - seen <= window, (pulled, seen)
        if seen == 300:
            break
    stream.close()  # type: ignore[attr-defined]
    assert pulled <= 300 + window


def test_flip_tta_is_folded_into_one_engine_call(lfw: list[Path]) -> None:
    rec = facesdk.FaceRecognizer(
        detector="yunet-2023mar", embedder="mobilefacenet-sirius", backend="onnxruntime", tta="flip"
    )
    plain = facesdk.FaceRecognizer(
        detector="yunet-2023mar", embedder="mobilefacenet-sirius", backend="onnxruntime", tta="none"
    )
    img = rec.load(lfw[3])
    crops = rec.align(img, rec.detect(img))
    calls: list[int] = []
    run = rec.embedder_session.run_batched

    def counting(batch: np.ndarray) -> list[np.ndarray]:
        calls.append(len(batch))
        return run(batch)

    rec.embedder_session.run_batched = counting  # type: ignore[method-assign]
    try:
        e = rec.embed_crops(crops)
    finally:
        del rec.embedder_session.run_batched
    assert calls == [2 * len(crops)]
    raw = plain.embedder_session.run_batched
    ref = [
        np.asarray(raw(plain_tensor(plain, c[None]))[0]).reshape(-1)
        + np.asarray(raw(plain_tensor(plain, c[None, :, ::-1]))[0]).reshape(-1)
        for c in crops
    ]
    ref_n = np.stack(ref) / np.linalg.norm(np.stack(ref), axis=1, keepdims=True)
    assert np.allclose(e, ref_n, atol=1e-5)


def plain_tensor(rec: facesdk.FaceRecognizer, crops: np.ndarray) -> np.ndarray:
    from facesdk.image import to_tensor

    s = rec.embedder_card.input
    return to_tensor(
        np.ascontiguousarray(crops), layout=rec.embed_layout, color=s.color, mean=s.mean, std=s.std
    )


def test_identify_many_equals_identify_and_folder_input(rec: facesdk.FaceRecognizer, shared: Path) -> None:
    knn = shared / "data/photos/knn_examples"
    g = rec.new_gallery()
    with pytest.raises(GalleryError):
        list(rec.identify_many([knn / "test/obama1.jpg"], gallery=g))
    for person in sorted(p for p in (knn / "train").iterdir() if p.is_dir()):
        rec.enroll(person.name, sorted(person.iterdir()), gallery=g)
    res = list(rec.identify_many(knn / "test", gallery=g, workers=2))  # a folder: every image, sorted
    files = sorted((knn / "test").iterdir())
    assert [r.source for r in res] == [str(f) for f in files]
    for r, f in zip(res, files):
        one = rec.identify(f, gallery=g)
        assert [x.match.name for x in r.faces] == [x.match.name for x in one]
        assert np.allclose(
            [x.match.similarity for x in r.faces], [x.match.similarity for x in one], atol=1e-5
        )
    names = {x.match.name for r in res if r.source.endswith("obama_and_biden.jpg") for x in r.faces}
    assert {"obama", "biden"} <= names


def test_select_and_bad_options(rec: facesdk.FaceRecognizer, lfw: list[Path], shared: Path) -> None:
    two = shared / "data/photos/two_people.jpg"
    allf = next(iter(rec.faces_many([two])))
    big = next(iter(rec.faces_many([two], select="largest")))
    assert len(allf.faces) == 2 and len(big.faces) == 1 and big.detections == 2
    assert np.isclose(big.faces[0].area, max(f.area for f in allf.faces))
    with pytest.raises(ConfigError):
        rec.faces_many(lfw, select="smallest")
    with pytest.raises(ConfigError):
        rec.faces_many(lfw, window=0)


def test_batched_dlib_alignment_equals_per_face(lfw: list[Path], shared: Path) -> None:
    from facesdk.dlib.shape_predictor import load_default

    rec = facesdk.FaceRecognizer(detector="yunet-2023mar-dynamic", backend="onnxruntime")  # dlib embedder
    assert rec.template == "dlib150" and rec.landmarker is None
    imgs, dets = [], []
    for p in [*lfw[:4], shared / "data/photos/two_people.jpg"]:
        img = rec.load(p)
        for d in rec.detect(img):
            imgs.append(img)
            dets.append(d)
    assert len(dets) >= 6
    single = np.concatenate([rec.align(im, [d]) for im, d in zip(imgs, dets)])
    assert np.array_equal(rec.align_many(imgs, dets), single)
    sp = load_default()
    boxes = np.array([[d.box[0], d.box[1], d.box[2] - 1, d.box[3] - 1] for d in dets])
    assert np.array_equal(
        sp.predict_many(imgs, boxes), np.stack([sp.predict(i, b) for i, b in zip(imgs, boxes)])
    )
