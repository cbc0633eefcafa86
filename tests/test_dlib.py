"""dlib models without dlib: .dat reader, ResNet → ONNX converter, face crops, shape predictor.

Reference data (../shared/reference, made with the real dlib 20.0.1):
* lfw_dlib_chips200.npz — 200 crops dlib fed to its network and dlib's descriptors;
* lfw_dlib_landmarks5.npz — dlib's 5 landmarks for every LFW image;
* lfw_nodetect.txt — 67 images whose landmarks dlib computed in the fixed box (67, 80, 175, 187).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from facesdk import zoo
from facesdk.dlib.crop import dlib_box_from_core5, dlib_crop_details, dlib_face_crop, pyramid_down2
from facesdk.dlib.fmt import DlibReader
from facesdk.errors import ConfigError, ModelFormatError
from facesdk.image import load_image
from facesdk.dlib.shape_predictor import ShapePredictor

ort = pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")

from facesdk_zoo.dlib_resnet import parse_resnet  # noqa: E402

NODETECT_BOX = (67, 80, 175, 187)
MEAN = np.array([122.78199768066406, 117.0009994506836, 104.2979965209961], np.float32)


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def ref(shared: Path) -> dict[str, np.ndarray]:
    r = shared / "reference"
    crops = np.load(r / "lfw_dlib_chips200.npz")
    lm = np.load(r / "lfw_dlib_landmarks5.npz")
    return {
        "crop_paths": np.asarray(crops["paths"]).astype(str),
        "crops": crops["chips"],
        "descriptors": crops["descriptors"],
        "lm_paths": np.asarray(lm["paths"]).astype(str),
        "landmarks": lm["landmarks"],
    }


@pytest.fixture(scope="module")
def lm_index(ref: dict[str, np.ndarray]) -> dict[str, int]:
    return {p: i for i, p in enumerate(ref["lm_paths"])}


@pytest.fixture(scope="module")
def dat_path() -> Path:
    return zoo.fetch("dlib-resnet-v1", "dlib")


@pytest.fixture(scope="module")
def onnx_path() -> Path:
    return zoo.fetch("dlib-resnet-v1", "onnx")  # converted once into the test cache


@pytest.fixture(scope="module")
def session(onnx_path: Path):
    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    return ort.InferenceSession(str(onnx_path), so, providers=["CPUExecutionProvider"])


@pytest.fixture(scope="module")
def sp() -> ShapePredictor:
    return ShapePredictor.load(zoo.fetch("dlib-shape-predictor-5", "dlib"))


def _tensor(crops: np.ndarray) -> np.ndarray:
    """What the core feeds for the card's input spec: (x - mean) / 256, NCHW."""
    card = zoo.get_card("dlib-resnet-v1")
    from facesdk.image import to_tensor

    s = card.input
    return to_tensor(crops, layout=s.layout, color=s.color, mean=s.mean, std=s.std, dtype=s.dtype)


def _embed(session, crops: np.ndarray) -> np.ndarray:
    return session.run(None, {"input": _tensor(crops)})[0]


def _cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(-1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1)


# --------------------------------------------------------------------------- network


def test_network_parity_on_200_dlib_crops(session, ref) -> None:
    got = _embed(session, ref["crops"])
    assert got.shape == (200, 128) and got.dtype == np.float32
    assert np.abs(got - ref["descriptors"]).max() <= 1e-5


def test_card_input_spec_matches_file(dat_path: Path) -> None:
    net = parse_resnet(dat_path)
    card = zoo.get_card("dlib-resnet-v1")
    assert np.allclose(card.input.mean, net.input_mean, rtol=0, atol=0)
    assert card.input.std == (256.0, 256.0, 256.0) and card.input.color == "RGB"
    assert net.input_size == (150, 150) and card.input.size == (150, 150)
    convs = [layer for layer in net.layers if layer.kind == "con"]
    assert len(convs) == 29 and sum(1 for layer in net.layers if layer.kind == "add_prev") == 14
    assert sum(v.size for layer in net.layers for v in layer.weights.values()) == 5_614_592


def test_onnx_metadata_and_shape(onnx_path: Path, dat_path: Path) -> None:
    m = onnx.load(str(onnx_path))
    props = {p.key: p.value for p in m.metadata_props}
    assert props["facesdk.model_id"] == "dlib-resnet-v1"
    assert props["facesdk.source_sha256"] == zoo.sha256_file(dat_path)
    assert props["facesdk.converter_version"]
    assert m.opset_import[0].version >= 13
    assert [d.dim_param or d.dim_value for d in m.graph.input[0].type.tensor_type.shape.dim] == [
        "N",
        3,
        150,
        150,
    ]
    assert zoo.sha256_file(onnx_path) == zoo.get_card("dlib-resnet-v1").artifact("onnx").sha256


def test_conversion_happens_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, dat_path: Path) -> None:
    from facesdk_zoo.dlib_resnet import recipe

    calls: list[Path] = []

    def spy(card, art, inputs, out):  # type: ignore[no-untyped-def]
        calls.append(out)
        recipe(card, art, inputs, out)

    monkeypatch.setenv("FACESDK_CACHE", str(tmp_path))
    monkeypatch.setitem(zoo._recipes, "dlib_resnet_to_onnx", spy)
    p1 = zoo.fetch("dlib-resnet-v1", "onnx")
    mtime = p1.stat().st_mtime_ns
    p2 = zoo.fetch("dlib-resnet-v1", "onnx")
    assert p1 == p2 and p1.is_relative_to(tmp_path)
    assert len(calls) == 1 and p2.stat().st_mtime_ns == mtime


# --------------------------------------------------------------------------- format errors


@pytest.mark.parametrize("cut", [0, 1, 5, 300, 340, 20_000, 5_000_000, -1])
def test_truncated_resnet_names_offset(tmp_path: Path, dat_path: Path, cut: int) -> None:
    data = dat_path.read_bytes()
    bad = tmp_path / "trunc.dat"
    bad.write_bytes(data[:cut] if cut >= 0 else data[:cut])
    with pytest.raises(ModelFormatError, match=r"offset \d+|byte offset"):
        parse_resnet(bad)


def test_corrupt_resnet_structure_and_lengths(tmp_path: Path, dat_path: Path) -> None:
    data = bytearray(dat_path.read_bytes())
    # a layer version in the header run: 2 -> 1 (tag where a layer belongs)
    hdr = bytearray(data)
    i = 33  # third layer of the run that starts at byte 29
    assert hdr[i : i + 2] == b"\x01\x02"
    hdr[i + 1] = 1
    (tmp_path / "a.dat").write_bytes(hdr)
    with pytest.raises(ModelFormatError, match="offset 33"):
        parse_resnet(tmp_path / "a.dat")
    # a huge tensor dimension: refused before any allocation
    huge = bytearray(data)
    pos = data.index(b"con_4") + 5  # con_ params tensor: version 2, then n
    assert huge[pos : pos + 2] == b"\x01\x02"
    huge[pos + 2 : pos + 5] = b"\x08\xff\xff"  # n becomes a 2**63-ish 8-byte integer
    (tmp_path / "b.dat").write_bytes(huge)
    with pytest.raises(ModelFormatError, match="offset"):
        parse_resnet(tmp_path / "b.dat")
    # the wrong model type
    with pytest.raises(ModelFormatError, match="offset"):
        parse_resnet(zoo.fetch("dlib-shape-predictor-5", "dlib"))


def test_reader_primitives_and_limits() -> None:
    r = DlibReader(bytes.fromhex("01020196811c030ad7a301003130"))
    assert [r.int_(), r.int_(), r.int_(), r.int_(), r.int_()] == [2, 150, -28, 10737418, 0]
    assert r.bool_() is True and r.bool_() is False and r.at_end()
    # float: mantissa 3, exponent -1 -> 1.5 ; +inf
    r = DlibReader(bytes.fromhex("01038101010002007d"))
    assert r.float_() == 1.5 and r.float_() == float("inf")
    # a string whose length is larger than the file
    r = DlibReader(bytes.fromhex("08ffffffffffffff7f") + b"abc")
    with pytest.raises(ModelFormatError, match="offset 0"):
        r.string()
    for raw in (b"", b"\x00", b"\x7f", b"\x03\x01"):
        with pytest.raises(ModelFormatError, match="offset"):
            DlibReader(raw).int_()
    with pytest.raises(ModelFormatError, match="offset 0"):
        DlibReader(b"2").bool_()


@pytest.mark.parametrize("mode", ["truncate", "flip", "junk", "empty"])
def test_corrupt_shape_predictor(tmp_path: Path, mode: str) -> None:
    data = zoo.fetch("dlib-shape-predictor-5", "dlib").read_bytes()
    bad = {
        "truncate": data[: len(data) // 3],
        "flip": data[:4_000_000] + b"\x7f" + data[4_000_001:],
        "junk": os.urandom(4096),
        "empty": b"",
    }[mode]
    p = tmp_path / "sp.dat"
    p.write_bytes(bad)
    with pytest.raises(ModelFormatError, match="offset"):
        ShapePredictor.load(p)


# --------------------------------------------------------------------------- geometry


def test_crop_geometry_parity(session, ref, lm_index, shared: Path) -> None:
    idx = np.arange(0, 200, 5)  # 40 of the 200
    crops = []
    for i in idx:
        p = ref["crop_paths"][i]
        img = load_image(shared / "data" / "lfw" / "images" / p)
        crops.append(dlib_face_crop(img, ref["landmarks"][lm_index[p]], size=150, padding=0.25))
    mine = np.stack(crops)
    mad = np.abs(mine.astype(np.int16) - ref["crops"][idx].astype(np.int16)).mean(axis=(1, 2, 3))
    assert mad.max() <= 1.0
    cos = _cos(_embed(session, mine), ref["descriptors"][idx])
    assert cos.min() >= 0.9999


def test_large_face_uses_pyramid(session, ref, lm_index, shared: Path) -> None:
    """A 4x upscaled image goes through dlib's pyramid_down<2> and still gives the same face."""
    i = 7
    p = ref["crop_paths"][i]
    img = load_image(shared / "data" / "lfw" / "images" / p)
    big = np.repeat(np.repeat(img, 4, axis=0), 4, axis=1)
    lm = ref["landmarks"][lm_index[p]].astype(np.float64) * 4 + 1.5
    d = dlib_crop_details(lm)
    assert (d.rect[2] - d.rect[0]) > 300  # big enough for at least one pyramid level
    crop = dlib_face_crop(big, lm)
    assert crop.shape == (150, 150, 3)
    assert np.abs(crop.astype(int) - ref["crops"][i].astype(int)).mean() < 6
    assert _cos(_embed(session, crop[None])[0], ref["descriptors"][i]) > 0.99


def test_pyramid_down2_matches_filter() -> None:
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (21, 17, 3), dtype=np.uint8)
    out = pyramid_down2(img)
    assert out.shape == (9, 7, 3)
    k = np.array([1, 4, 6, 4, 1])
    r, c = 3, 2  # output (r, c) is centred on input (2r+2, 2c+2)
    patch = img[2 * r : 2 * r + 5, 2 * c : 2 * c + 5].astype(int)
    expect = np.einsum("i,j,ijk->k", k, k, patch) // 256
    assert np.array_equal(out[r, c], expect)


def test_crop_bad_landmarks() -> None:
    img = np.zeros((50, 50, 3), np.uint8)
    with pytest.raises(ConfigError):
        dlib_face_crop(img, np.zeros((4, 2)))
    with pytest.raises(ConfigError):
        dlib_face_crop(img, np.full((5, 2), np.nan))


# --------------------------------------------------------------------------- shape predictor


def test_shape_predictor_exact_on_fixed_box_images(sp, ref, lm_index, shared: Path) -> None:
    names = [
        ln.strip()
        for ln in (shared / "reference" / "lfw_nodetect.txt").read_text().splitlines()
        if ln.strip() and not ln.startswith("#")
    ]
    assert len(names) == 67
    exact = 0
    for n in names:
        got = sp.predict(load_image(shared / "data" / "lfw" / "images" / n), NODETECT_BOX)
        exact += int(np.array_equal(got, ref["landmarks"][lm_index[n]]))
    assert exact == 67


def test_shape_predictor_grey_input_and_bad_box(sp, shared: Path) -> None:
    img = load_image(shared / "data" / "lfw" / "images" / "Andy_Roddick" / "Andy_Roddick_0005.jpg")
    grey = sp.intensity(img)
    assert np.array_equal(sp.predict(grey, NODETECT_BOX), sp.predict(img, NODETECT_BOX))
    with pytest.raises(ConfigError):
        sp.predict(img, (1, 2, 3))
    with pytest.raises(ConfigError):
        sp.predict(np.zeros((5, 5, 4), np.uint8), NODETECT_BOX)


def test_bridge_from_core_points(sp, ref, lm_index, shared: Path) -> None:
    """Core eye centres → dlib-style box → shape predictor lands on dlib's own landmarks."""
    errs = []
    for p in ref["crop_paths"][:30]:
        d = ref["landmarks"][lm_index[p]].astype(np.float64)
        core = np.array([d[2:4].mean(0), d[0:2].mean(0), d[4], d[4] + (-10, 15), d[4] + (10, 15)])
        box = dlib_box_from_core5(core, sp.initial_shape)
        got = sp.predict(load_image(shared / "data" / "lfw" / "images" / p), box)
        errs.append(np.abs(got - d).max())
    # eye distance sets the box scale, so strongly turned faces (Abdullah_Gul_0016) get a
    # smaller box than dlib's detector gives and drift; frontal faces land within 1-2 px
    assert np.median(errs) <= 1.0 and np.percentile(errs, 90) <= 2.0


def test_dlib150_aligner_registered_and_end_to_end(ref, shared: Path) -> None:
    """YuNet landmarks (core order) → dlib150 aligner → converted ResNet ≈ dlib's descriptors."""
    from facesdk import FaceRecognizer
    from facesdk.align import get_aligner

    assert get_aligner("dlib150") is not None
    fr = FaceRecognizer(
        detector="yunet-2023mar", embedder="dlib-resnet-v1", backend="onnxruntime", device="cpu"
    )
    cos = []
    for i in range(0, 40, 8):
        p = ref["crop_paths"][i]
        face = fr.embed_face(shared / "data" / "lfw" / "images" / p)
        assert face.embedding.shape == (128,)
        cos.append(float(_cos(face.embedding, ref["descriptors"][i])))
    assert min(cos) >= 0.99


def test_shape_predictor_landmarker_matches_the_dlib150_aligner(shared: Path) -> None:
    """The ``dlib-sp5`` landmarker family (a hook of the core) + aligner ``dlib150:dlib5`` give
    exactly the crops of the one-step ``dlib150`` aligner."""
    from facesdk import FaceRecognizer
    from facesdk.image import load_image

    img = load_image(shared / "data" / "photos" / "two_people.jpg")
    one = FaceRecognizer(detector="yunet-2023mar", embedder="dlib-resnet-v1", backend="onnxruntime")
    two = FaceRecognizer(
        detector="yunet-2023mar",
        embedder="dlib-resnet-v1",
        backend="onnxruntime",
        landmarker="dlib-shape-predictor-5",
    )
    assert two.describe()["landmarker"] == "dlib-shape-predictor-5"
    dets = one.detect(img)
    assert len(dets) == 2 and np.array_equal(one.align(img, dets), two.align(img, dets))
