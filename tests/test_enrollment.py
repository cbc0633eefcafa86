"""Partial enrollment with a per-photo report, and which threshold identify/verify use (precedence)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFilter

import facesdk
from facesdk.cli import main
from facesdk.enrollment import EnrollmentResult, QualityPolicy, yaw_ratio
from facesdk.errors import ConfigError, GalleryError, NoFaceError
from facesdk.gallery import UNKNOWN, Gallery


@pytest.fixture(scope="module")
def rec() -> facesdk.FaceRecognizer:
    return facesdk.FaceRecognizer(detector="yunet-2023mar", embedder="mobilefacenet-sirius",
                                  backend="onnxruntime")


@pytest.fixture(scope="module")
def knn(shared: Path) -> Path:
    return shared / "data/photos/knn_examples"


def test_partial_enrollment_reports_each_photo(rec: facesdk.FaceRecognizer, knn: Path) -> None:
    g = rec.new_gallery()
    blank = np.full((200, 200, 3), 90, np.uint8)
    photos = [knn / "train/biden/biden.jpg", blank, b"not an image", knn / "train/biden/biden2.jpg"]
    res = rec.enroll("biden", photos, gallery=g)
    assert isinstance(res, EnrollmentResult) and res.added == 2 and int(res) == 2
    assert [p.enrolled for p in res.photos] == [True, False, False, True]
    assert "no face" in (res.photos[1].reason or "")
    assert res.photos[2].reason and [p.index for p in res.skipped] == [1, 2]
    assert g.counts() == {"biden": 2}
    d = res.to_dict()
    assert d["added"] == 2 and d["skipped"] == 2 and d["photos"][0]["quality"]["face_px"] > 100


def test_strict_and_all_unusable_enrol_nothing(rec: facesdk.FaceRecognizer, knn: Path) -> None:
    g = rec.new_gallery()
    blank = np.full((200, 200, 3), 90, np.uint8)
    with pytest.raises(NoFaceError, match="strict"):
        rec.enroll("biden", [knn / "train/biden/biden.jpg", blank], gallery=g, strict=True)
    assert len(g) == 0
    with pytest.raises(NoFaceError, match="none of the 2"):
        rec.enroll("nobody", [blank, blank], gallery=g)
    assert len(g) == 0
    with pytest.raises(ConfigError):
        rec.enroll("nobody", [], gallery=g)


def test_quality_checks_refuse_small_and_blurred(rec: facesdk.FaceRecognizer, knn: Path) -> None:
    g = rec.new_gallery()
    im = Image.open(knn / "train/obama/obama.jpg").convert("RGB")
    small = np.asarray(im.resize((im.width // 8, im.height // 8)))
    kit = Image.open(knn / "train/kit_harington/john1.jpeg").convert("RGB")
    blurred = np.asarray(kit.filter(ImageFilter.GaussianBlur(4)))
    res = rec.enroll("x", [small, blurred, knn / "train/obama/obama.jpg"], gallery=g)
    assert res.added == 1
    assert "too small" in (res.photos[0].reason or "") and "blurred" in (res.photos[1].reason or "")
    # the checks can be switched off
    res = rec.enroll("y", [small, blurred], gallery=g, quality=QualityPolicy.off())
    assert res.added == 2


def test_yaw_ratio() -> None:
    frontal = np.array([[30, 40], [70, 40], [50, 60], [35, 80], [65, 80]], float)
    turned = frontal.copy()
    turned[2, 0] = 80  # nose tip beyond the right eye
    assert yaw_ratio(frontal) == pytest.approx(0.0) and yaw_ratio(turned) == pytest.approx(0.75)


def _edit_meta(path: Path, **changes: object) -> None:
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    meta = json.loads(str(arrays["meta"]))
    target = meta.get("provenance", meta)  # gallery format 2 keeps these in its provenance record
    target.update(changes)
    for k, v in changes.items():
        if v is None:
            target.pop(k)
    arrays["meta"] = np.array(json.dumps(meta))
    with open(path, "wb") as f:
        np.savez(f, **arrays)


@pytest.fixture(scope="module")
def gallery_file(rec: facesdk.FaceRecognizer, knn: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    g = rec.new_gallery()
    for person in ("obama", "biden"):
        rec.enroll(person, sorted((knn / "train" / person).iterdir()), gallery=g)
    return g.save(tmp_path_factory.mktemp("g") / "g.npz")


def test_explicit_threshold_beats_saved_gallery(rec: facesdk.FaceRecognizer, knn: Path, gallery_file: Path,
                                                tmp_path: Path) -> None:
    p = tmp_path / "g.npz"
    p.write_bytes(gallery_file.read_bytes())
    _edit_meta(p, threshold=0.05, threshold_source="user")  # a permissive threshold stored by a user
    img = knn / "test/obama1.jpg"
    strict = facesdk.FaceRecognizer(detector="yunet-2023mar", embedder="mobilefacenet-sirius",
                                     backend="onnxruntime", threshold=0.99)
    strict.use_gallery(p)
    faces = strict.identify(img)
    assert faces and all(f.match.name == UNKNOWN for f in faces)  # type: ignore[union-attr]
    m = faces[0].match
    assert m is not None and m.threshold == 0.99 and "given by the user" in (m.operating_point or "")
    # the call argument beats both the constructor and the gallery
    faces = strict.identify(img, threshold=0.3)
    assert faces[0].match.name == "obama" and faces[0].match.threshold == 0.3  # type: ignore[union-attr]
    # without an explicit threshold, the user's stored one is used ...
    rec.use_gallery(p)
    assert rec.identification_threshold_for(rec.gallery)[0] == 0.05
    # ... but a legacy gallery's stored (verification) threshold is not: the calibrated 1:N one is
    _edit_meta(p, threshold=0.05, threshold_source=None)
    rec.use_gallery(p)
    thr, point = rec.identification_threshold_for(rec.gallery)
    assert thr == rec.identification_threshold and point == rec.identification_point.describe()
    # CLI: --threshold wins over the gallery too
    _edit_meta(p, threshold=0.05, threshold_source="user")
    common = ["--detector", "yunet-2023mar", "--embedder", "mobilefacenet-sirius", "--backend", "onnxruntime",
              "--json"]
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert main(["identify", "-g", str(p), str(img), "--threshold", "0.99", *common]) == 0
    out = json.loads(buf.getvalue())
    assert out[0]["faces"][0]["name"] == UNKNOWN and out[0]["faces"][0]["threshold"] == 0.99


def test_out_of_range_stored_threshold_refused(knn: Path, gallery_file: Path, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    for bad in (-1.0, 1.5, "nan"):
        p = tmp_path / f"bad{bad}.npz"
        p.write_bytes(gallery_file.read_bytes())
        _edit_meta(p, threshold=bad)
        with pytest.raises(GalleryError, match="threshold"):
            Gallery.load(p)
        rc = main(["identify", "-g", str(p), str(knn / "test/obama1.jpg"), "--detector", "yunet-2023mar",
                   "--embedder", "mobilefacenet-sirius", "--backend", "onnxruntime"])
        assert rc != 0 and "threshold" in capsys.readouterr().err
    with pytest.raises(ConfigError):
        facesdk.FaceRecognizer(detector="yunet-2023mar", embedder="mobilefacenet-sirius",
                               backend="onnxruntime", threshold=-1.0)


def test_verify_and_identify_use_their_own_operating_points(rec: facesdk.FaceRecognizer, knn: Path) -> None:
    v = rec.verify(knn / "test/obama1.jpg", knn / "train/obama/obama.jpg")
    assert v.threshold == rec.verification_point.threshold and v.to_dict()["operating_point"]
    d = rec.describe()
    assert set(d["operating_points"]) == {"verification", "identification"}
    assert d["operating_points"]["identification"]["task"] == "identification"


def test_template_policy_scores(knn: Path) -> None:
    """'max' scores an identity by its best enrolled photo, 'both' averages that with the mean template."""
    from facesdk.calibration import identity_scores

    recs = {p: facesdk.FaceRecognizer(detector="yunet-2023mar", embedder="mobilefacenet-sirius",
                                      backend="onnxruntime", template_policy=p)
            for p in ("mean", "max", "both")}
    r = recs["max"]
    photos = sorted((knn / "train/biden").iterdir())
    e_b = np.stack([r.embed_face(p).embedding for p in photos])  # type: ignore[misc]
    e_o = r.embed_face(knn / "train/obama/obama.jpg").embedding
    g = r.new_gallery()
    r.enroll("biden", photos, gallery=g)
    r.enroll("obama", [knn / "train/obama/obama.jpg"], gallery=g)
    probe = r.faces(knn / "test/obama_and_biden.jpg")
    emb = np.stack([f.embedding for f in probe])  # type: ignore[misc]
    gal = np.vstack([e_b, e_o[None]])  # type: ignore[index]
    want = {p: identity_scores(emb, gal, [0, 0, 1], 2, p) for p in recs}
    for p, rec in recs.items():
        faces = rec.identify(knn / "test/obama_and_biden.jpg", gallery=g, threshold=0.3)
        for i, f in enumerate(faces):
            top = dict(f.match.top_k)  # type: ignore[union-attr]
            assert top["biden"] == pytest.approx(float(want[p][i, 0]), abs=1e-4), p
            assert top["obama"] == pytest.approx(float(want[p][i, 1]), abs=1e-4), p
