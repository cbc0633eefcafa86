"""MAX78000/MAX78002 backend: safe checkpoint import, bit-exact emulation, fit check, TinierSSD, FaceID."""

from __future__ import annotations

import io
import json
import pickle
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from facesdk_backends.max7800x import check_fit, load_checkpoint, load_model
from facesdk_backends.max7800x.accel.emulator import requantize

from facesdk.errors import ConfigError, DeviceMismatchError, ModelFormatError

NETS = {
    "facedet": ("ai85-facedet-tinierssd-qat8-q.pth.tar", "ai85-facedet-tinierssd.yaml"),
    "faceid": ("ai85-faceid-qat8-q.pth.tar", "faceid.yaml"),
}
INPUTS = ("sample", "rand0")


@pytest.fixture(scope="module")
def ai8x(shared: Path) -> Path:
    return shared / "ai8x"


@pytest.fixture(scope="module")
def models(ai8x: Path) -> dict:
    return {k: load_model(ai8x / "trained" / c, ai8x / "networks" / y) for k, (c, y) in NETS.items()}


@pytest.fixture(scope="module")
def accs(ai8x: Path):
    with np.load(ai8x / "reference" / "accumulators.npz") as z:
        return {k: z[k] for k in z.files}


def _ref_layer(ref: Path, net: str, inp: str, i: int) -> np.ndarray:
    files = [f for f in ref.glob(f"{net}_{inp}_L{i:02d}_*.npy") if not f.name.endswith("_sum.npy")]
    assert len(files) == 1, files
    return np.load(files[0])


@pytest.mark.parametrize("net", sorted(NETS))
@pytest.mark.parametrize("inp", INPUTS)
def test_end_to_end_every_layer_bit_exact(models, ai8x, net, inp):
    ref = ai8x / "reference"
    m = models[net]
    x = np.load(ref / f"{net}_{inp}_input.npy")
    outs = m.run_all(x)
    assert len(outs) == len(m.layers)
    for i, o in enumerate(outs):
        r = _ref_layer(ref, net, inp, i)
        assert o.shape == r.shape and o.dtype == np.int8
        assert int((o != r).sum()) == 0, f"{net}/{inp} layer {i}: {(o != r).sum()} values differ"
    # run() returns the output layers only
    final = m.run(x)
    assert [f.shape for f in final] == [outs[i].shape for i in m.output_layers]


@pytest.mark.parametrize("net", sorted(NETS))
@pytest.mark.parametrize("inp", INPUTS)
def test_per_layer_from_saved_inputs_and_accumulators(models, ai8x, accs, net, inp):
    ref = ai8x / "reference"
    m = models[net]
    x = np.load(ref / f"{net}_{inp}_input.npy")[None]
    checked = 0
    for l in m.layers:
        srcs = [x if s == -1 else _ref_layer(ref, net, inp, s)[None] for s in l.in_sequences]
        res = m.run_layer(l.index, srcs)
        r = _ref_layer(ref, net, inp, l.index)
        assert np.array_equal(res.output[0], r), f"layer {l.index}"
        key = [k for k in accs if k.startswith(f"{net}_{inp}_L{l.index:02d}_")]
        if key:
            assert np.array_equal(res.acc[0], accs[key[0]]), f"accumulator of layer {l.index}"
            checked += 1
        sum_file = ref / f"{net}_{inp}_L{l.index:02d}_avgpool_sum.npy"
        if sum_file.exists():
            assert np.array_equal(res.acc[0].reshape(-1), np.load(sum_file))
            checked += 1
    assert checked == (7 if net == "facedet" else 5)


def test_batch_and_model_outputs(models, ai8x):
    ref = ai8x / "reference"
    m = models["facedet"]
    xs = np.stack([np.load(ref / f"facedet_{i}_input.npy") for i in INPUTS])
    outs = m.run(xs)
    assert [o.shape[0] for o in outs] == [2, 2, 2, 2]
    from facesdk.detect.tinierssd import heads_to_priors

    for b, inp in enumerate(INPUTS):
        locs, scores = heads_to_priors([outs[0][b], outs[1][b]], [outs[2][b], outs[3][b]])
        assert np.array_equal(locs, np.load(ref / f"facedet_{inp}_model_locs.npy"))
        assert np.array_equal(scores, np.load(ref / f"facedet_{inp}_model_class_scores.npy"))
    emb = models["faceid"].run(np.load(ref / "faceid_sample_input.npy"))[0].reshape(-1)
    assert np.array_equal(emb, np.load(ref / "faceid_sample_embedding512.npy"))


def test_requantize_rounding_and_input_checks(models):
    acc = np.array([-193, -192, -64, -63, 63, 64, 191, 192, 10**6, -(10**6)])
    # shift s=-1 → divide by 2**8 with round-half-up, then clip
    assert requantize(acc, -1).tolist() == [-1, -1, 0, 0, 0, 0, 1, 1, 127, -128]
    assert requantize(np.array([3]), 9).tolist() == [12]  # left shift when s > 7
    m = models["faceid"]
    with pytest.raises(ConfigError):
        m.run(np.zeros((3, 10, 10), np.int64))  # wrong shape
    with pytest.raises(ConfigError):
        m.run(np.full((3, 160, 120), 200))  # out of int8 range
    with pytest.raises(ConfigError):
        m.run(np.full((3, 160, 120), 0.5))  # not integers


# --------------------------------------------------------------------- hostile / broken files


def _torch_like_zip(path: Path, pkl: bytes, extra: dict[str, bytes] | None = None) -> Path:
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/data.pkl", pkl)
        for k, v in (extra or {}).items():
            z.writestr(f"archive/data/{k}", v)
        z.writestr("archive/version", b"3\n")
    return path


def test_hostile_pickle_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    # protocol-2 pickle: GLOBAL posix.system, then REDUCE with a shell command
    evil = (
        b"\x80\x02cposix\nsystem\nq\x00X"
        + len(f"touch {marker}").to_bytes(4, "little")
        + f"touch {marker}".encode()
        + b"\x85R."
    )
    p = _torch_like_zip(tmp_path / "evil.pth.tar", evil)
    with pytest.raises(ModelFormatError, match="posix.system"):
        load_checkpoint(p)
    assert not marker.exists()
    # builtins.eval through STACK_GLOBAL (protocol 4) is refused too
    evil2 = pickle.dumps(eval, protocol=4)
    with pytest.raises(ModelFormatError, match="builtins"):
        load_checkpoint(_torch_like_zip(tmp_path / "evil2.pth.tar", evil2))


def test_truncated_and_non_zip_refused(ai8x, tmp_path):
    data = (ai8x / "trained" / "ai85-faceid-qat8-q.pth.tar").read_bytes()
    t = tmp_path / "trunc.pth.tar"
    t.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelFormatError):
        load_checkpoint(t)
    n = tmp_path / "notzip.pth.tar"
    n.write_bytes(b"\x80\x02}q\x00.")
    with pytest.raises(ModelFormatError, match="zip"):
        load_checkpoint(n)
    # a tensor reaching past its storage
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        pkl = z.read("archive/data.pkl")
    names = zipfile.ZipFile(io.BytesIO(data)).namelist()
    storages = {n.split("/")[-1]: b"\x00" * 4 for n in names if "/data/" in n}
    short = _torch_like_zip(tmp_path / "short.pth.tar", pkl, storages)
    with pytest.raises(ModelFormatError, match="bytes|storage|reaches"):
        load_checkpoint(short)


def test_checkpoint_zip_failures_are_typed(ai8x, tmp_path):
    """Regression (issue 11): encrypted flag, unknown compression, bad deflate and non-UTF-8 names
    escaped as RuntimeError / NotImplementedError / zlib.error / UnicodeDecodeError."""
    import _hostile as H
    from facesdk.errors import ModelNotFoundError

    root = {"state_dict": {"w": H.tensor("0", 4, (2, 2), (2, 1))}}
    good = H.checkpoint(tmp_path / "good.pth.tar", root, {"0": b"\0" * 16}).read_bytes()
    cases = {
        "encrypted": H.patch_zip_header(good, b"archive/data.pkl", flag_or=0x1),
        "lzma-method": H.patch_zip_header(good, b"archive/data/0", method=14),
        "unknown-method": H.patch_zip_header(good, b"archive/data.pkl", method=99),
        "utf8-flag-bad-name": H.patch_zip_header(
            good.replace(b"archive/version", b"archive/\xff\xfersion"),
            b"archive/\xff\xfersion",
            flag_or=0x800,
        ),
    }
    deflated = H.checkpoint(
        tmp_path / "d.pth.tar", root, {"0": b"\1" * 4096}, compression=zipfile.ZIP_DEFLATED
    ).read_bytes()
    i = deflated.find(b"archive/data/0") + len(b"archive/data/0")
    cases["bad-deflate"] = deflated[:i] + bytes(b ^ 0x5A for b in deflated[i : i + 12]) + deflated[i + 12 :]
    for name, data in cases.items():
        f = tmp_path / f"{name}.pth.tar"
        f.write_bytes(data)
        with pytest.raises(ModelFormatError):
            load_checkpoint(f)
    assert load_checkpoint(tmp_path / "good.pth.tar")["state_dict"]["w"].shape == (2, 2)
    with pytest.raises(ModelNotFoundError):
        load_checkpoint(tmp_path / ("x" * 300 + ".pth.tar"))  # name too long: OSError before


def test_build_opcode_cannot_mutate_allowed_globals(ai8x, tmp_path):
    """Regression (issue 11): BUILD on an allowed global changed this module's objects, after which
    every later load in the process failed."""
    import _hostile as H

    real = ai8x / "trained" / "ai85-dot_emb_112_checkpoint-q.pth.tar"
    attacks = [
        H.Build(H.G("torch", "FloatStorage"), {"dtype": "garbage"}),
        H.Build(H.G("torch", "FloatStorage"), (None, {"dtype": "garbage"})),
        H.Build(H.G("torch._utils", "_rebuild_tensor_v2"), {"__call__": None}),
        H.Build(H.G("collections", "OrderedDict"), (None, {"_fn": None})),
        H.Build(H.G("torch.optim.sgd", "SGD"), (None, {"qualname": "x"})),
    ]
    for i, a in enumerate(attacks):
        with pytest.raises(ModelFormatError):
            load_checkpoint(H.checkpoint(tmp_path / f"b{i}.pth.tar", {"x": a}))
        assert load_checkpoint(real)["state_dict"]["dot.op.weight"].shape == (512, 64)


def test_declared_sizes_are_capped_against_the_file(tmp_path):
    """Regression (issue 11): a 483-byte checkpoint allocated 2 GiB (stride-0 view), a 1.6 MB zip
    bomb 3 GB, huge shapes raised MemoryError."""
    import _hostile as H

    cases = {
        "broadcast": ({"w": H.tensor("0", 1, (2**29,), (0,))}, {"0": b"\0" * 4}),
        "broadcast2d": ({"w": H.tensor("0", 1, (2**15, 2**15), (0, 0))}, {"0": b"\0" * 4}),
        "huge-shape": ({"w": H.tensor("0", 1, (2**62, 2**62), (1, 1))}, {"0": b"\0" * 4}),
        "huge-numel": ({"w": H.tensor("0", 2**40, (4,), (1,))}, {"0": b"\0" * 16}),
        "negative-numel": ({"w": H.tensor("0", -1, (1,), (1,))}, {"0": b"\0" * 16}),
        "zero-dim-huge": ({"w": H.tensor("0", 1, (0, 2**40), (1, 1))}, {"0": b"\0" * 4}),
    }
    for name, (root, st) in cases.items():
        f = H.checkpoint(tmp_path / f"{name}.pth.tar", root, st)
        with pytest.raises(ModelFormatError):
            load_checkpoint(f)
    # a zip bomb: 256 MiB of zeros deflate to ~256 KB
    bomb = tmp_path / "bomb.pth.tar"
    with zipfile.ZipFile(bomb, "w", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr("archive/data.pkl", H.dumps({"w": H.tensor("0", 64 << 20, (64 << 20,), (1,))}))
        with z.open("archive/data/0", "w") as fh:
            for _ in range(256):
                fh.write(bytes(1 << 20))
    assert bomb.stat().st_size < 1 << 20
    with pytest.raises(ModelFormatError, match="zip bomb"):
        load_checkpoint(bomb)


def test_random_bit_flips_of_real_checkpoints_are_typed(ai8x, tmp_path):
    """Regression (issue 11): 10 of 200 random bit flips of the real checkpoints crashed."""
    from facesdk.errors import FaceSDKError

    rng = np.random.default_rng(11)
    files = sorted((ai8x / "trained").glob("*.pth.tar"))
    f = tmp_path / "flip.pth.tar"
    blobs = [f_.read_bytes() for f_ in files]
    # half the flips land in zip headers (local + central) or the pickle, where the parsers live
    hot = [[i + d for i in range(len(b)) if b.startswith(b"PK", i) for d in range(64)] for b in blobs]
    for k in range(200):
        data = bytearray(blobs[k % len(blobs)])
        for _ in range(1 + k % 3):
            spots = hot[k % len(blobs)]
            pos = spots[int(rng.integers(len(spots)))] if k % 2 else int(rng.integers(len(data)))
            data[min(pos, len(data) - 1)] ^= 1 << int(rng.integers(8))
        f.write_bytes(bytes(data))
        try:
            load_checkpoint(f)
        except FaceSDKError:
            pass


def test_checkpoint_content_is_plain_data(ai8x):
    ck = load_checkpoint(ai8x / "trained" / "ai85-dot_emb_112_checkpoint-q.pth.tar")
    sd = ck["state_dict"]
    assert sd["dot.op.weight"].shape == (512, 64) and sd["dot.op.weight"].dtype == np.float32
    assert ck["arch"] == "AI85DotProd"


def test_yaml_checkpoint_mismatch(ai8x):
    with pytest.raises(ModelFormatError, match="ai85faceidnet|ai85tinierssdface"):
        load_model(
            ai8x / "trained" / "ai85-faceid-qat8-q.pth.tar", ai8x / "networks" / "ai85-facedet-tinierssd.yaml"
        )


# --------------------------------------------------------------------- fit


def test_fit_reports(models, ai8x):
    det = check_fit(models["facedet"], "max78000")
    assert det.fits and det.weight_bytes == 275_184 and det.bias_bytes == 536
    assert det.kernel_rows_used <= 768 and det.max_data_words <= 8192
    fid = check_fit(models["faceid"], "max78000")
    assert fid.fits and fid.weight_bytes == 176_048 and fid.bias_bytes == 0
    assert check_fit(models["faceid"], "max78002").fits
    d = det.to_dict()
    assert d["chip"] == "MAX78000" and d["weights"]["memory_bytes"] == 442_368 and len(d["per_layer"]) == 16
    assert "FITS" in det.format()
    ai87 = load_model(
        ai8x / "trained" / "ai87-facedet-tinierssd-qat8-q.pth.tar",
        ai8x / "networks" / "ai87-facedet-tinierssd.yaml",
        chip="max78002",
    )
    r87 = check_fit(ai87)
    assert r87.fits and r87.chip.name == "MAX78002" and r87.chip.weight_bytes == 2_396_160


def test_oversized_network_does_not_fit(ai8x, tmp_path):
    """A synthetic network: 8 layers of 3x3 conv 512→512 (18.9 MB of weights) on a 64x64 input."""
    from facesdk_backends.max7800x.accel.emulator import Model
    from facesdk_backends.max7800x.accel.network import Layer, Network

    rng = np.random.default_rng(0)
    layers = [
        Layer(
            index=0,
            op="conv2d",
            kernel_size=(3, 3),
            pad=(1, 1),
            in_sequences=[-1],
            weights=rng.integers(-128, 128, (512, 3, 3, 3)),
            activation="relu",
        )
    ]
    for i in range(1, 9):
        layers.append(
            Layer(
                index=i,
                op="conv2d",
                kernel_size=(3, 3),
                pad=(1, 1),
                in_sequences=[i - 1],
                weights=rng.integers(-8, 8, (512, 512, 3, 3)),
                activation="relu",
            )
        )
    m = Model(Network("synthetic", layers, (3, 64, 64)))
    rep = check_fit(m, "max78000")
    assert not rep.fits
    text = " ".join(rep.problems)
    assert "weights" in text and "kernel memory" in text and "data memory" in text
    assert rep.weight_bytes == 512 * 27 + 8 * 512 * 512 * 9
    r2 = check_fit(m, "max78002")  # 18.9 MB of weights exceed MAX78002 too
    assert not r2.fits and any(p.startswith("weights") for p in r2.problems)
    # depthwise is MAX78002-only
    dw = Layer(
        index=0,
        op="conv2d",
        kernel_size=(3, 3),
        pad=(1, 1),
        in_sequences=[-1],
        groups=3,
        weights=rng.integers(-128, 128, (3, 1, 3, 3)),
    )
    md = Model(Network("dw", [dw], (3, 16, 16)))
    assert any("depthwise" in p for p in check_fit(md, "max78000").problems)
    assert check_fit(md, "max78002").fits


def test_cli_fit(ai8x, tmp_path):
    ck, y = ai8x / "trained" / NETS["faceid"][0], ai8x / "networks" / NETS["faceid"][1]
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "facesdk",
            "--json",
            "max7800x",
            "fit",
            str(ck),
            "--yaml",
            str(y),
            "--chip",
            "max78000",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert d["fits"] and d["weights"]["bytes"] == 176_048
    x = tmp_path / "x.npy"
    np.save(x, np.load(ai8x / "reference" / "faceid_rand0_input.npy"))
    out = tmp_path / "o.npz"
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "facesdk",
            "max7800x",
            "run",
            str(ck),
            "--yaml",
            str(y),
            "--input",
            str(x),
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    with np.load(out) as z:
        assert np.array_equal(z["L08"], np.load(ai8x / "reference" / "faceid_rand0_L08_avgpool.npy"))
    r = subprocess.run(
        [sys.executable, "-m", "facesdk", "max7800x", "fit", str(ck)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode != 0 and "yaml" in r.stderr.lower()


# --------------------------------------------------------------------- detection / pipeline


def test_tinierssd_decode_on_reference(ai8x):
    from facesdk.detect.tinierssd import decode_tinierssd, load_detection_params, tinierssd_priors

    ref = ai8x / "reference"
    pri = tinierssd_priors()
    assert pri.shape == (1246, 4) and pri.min() >= 0 and pri.max() <= 1
    params = load_detection_params(ai8x / "networks" / "obj_detection_params_facedet.yaml")
    assert params == {"min_score": 0.75, "max_overlap": 0.3, "top_k": 20}
    locs, sc = (
        np.load(ref / "facedet_sample_model_locs.npy"),
        np.load(ref / "facedet_sample_model_class_scores.npy"),
    )
    boxes, scores = decode_tinierssd(locs, sc, pri, min_score=0.5)
    assert len(boxes) >= 1 and scores[0] > 0.5 and np.all(np.diff(scores) <= 0)
    b = boxes[0] * np.array([168, 224, 168, 224])
    assert 0 <= b[0] < b[2] <= 168 and 0 <= b[1] < b[3] <= 224 and (b[2] - b[0]) > 40
    none, _ = decode_tinierssd(
        np.load(ref / "facedet_rand0_model_locs.npy"),
        np.load(ref / "facedet_rand0_model_class_scores.npy"),
        pri,
        min_score=0.5,
    )
    assert len(none) == 0
    with pytest.raises(ConfigError):
        decode_tinierssd(locs[:10], sc, pri)


@pytest.fixture()
def ai8x_env(ai8x, monkeypatch):
    monkeypatch.setenv("FACESDK_AI8X_DIR", str(ai8x))


def test_face_recognizer_on_max78000(ai8x_env, shared):
    import facesdk

    rec = facesdk.FaceRecognizer(
        detector="ai85-facedet-tinierssd", embedder="ai85-faceid", backend="max78000"
    )
    d = rec.describe()
    assert d["embedder"]["precision"] == "ai8x" and d["detector"]["device"] == "emulator"
    lfw = shared / "data" / "lfw" / "images"
    a = rec.embed_face(lfw / "George_W_Bush" / "George_W_Bush_0001.jpg")
    b = rec.embed_face(lfw / "George_W_Bush" / "George_W_Bush_0002.jpg")
    c = rec.embed_face(lfw / "Aaron_Eckhart" / "Aaron_Eckhart_0001.jpg")
    assert a.embedding.shape == (512,) and abs(float(np.linalg.norm(a.embedding)) - 1) < 1e-5
    assert a.score > 0.5 and a.box[2] - a.box[0] > 50
    assert float(a.embedding @ b.embedding) > float(a.embedding @ c.embedding)
    rec.close()


def test_backend_strictness(ai8x_env, ai8x):
    from facesdk import zoo
    from facesdk.backend import Artifact
    from facesdk.plugins import get_backend

    be = get_backend("max78000")
    card = zoo.get_card("ai85-faceid")
    art = Artifact(path=zoo.fetch(card, "ai8x"), format="ai8x", card=card)
    with pytest.raises(DeviceMismatchError, match="port"):
        be.load(art, device="serial")
    with pytest.raises(DeviceMismatchError):
        be.load(art, precision="fp16")
    with pytest.raises(DeviceMismatchError):
        be.load(art, device="cuda")
    s = be.load(art, device="emulator")
    out = s.run(np.load(ai8x / "reference" / "faceid_sample_input.npy")[None])
    assert out[0].shape == (1, 512, 1, 1)
    assert s.describe()["chip"] == "MAX78000"


# --------------------------------------------------------------------- firmware-exact FaceID path
def _post_process_c(
    locs: np.ndarray, cls: np.ndarray, w: int = 168, h: int = 224, float_casts: bool = False
) -> tuple | None:
    """msdk facial_recognition post_process.c (MAX_PRIORS 1, NUM_CLASSES 3), literally, prior by prior.

    ``float_casts``: revision 0241c69 (``(float)exp(...)``, ``(float)sqrt(...)``); else f631747 (double)."""
    import math

    f32 = np.float32
    fx = (lambda v: float(f32(v))) if float_casts else (lambda v: v)  # (float) cast of a double result
    dims, scales, ars = ((28, 21), (7, 5)), (f32(0.35715), f32(0.7143)), (f32(0.9), f32(0.75))
    best_val, best_idx = None, None
    for i in range(len(cls)):
        c3 = [int(cls[i, 0]), int(cls[i, 1]), 0]  # the third class is never written
        if not c3[1] >= c3[0]:
            continue
        s = f32(0)
        for v in c3:
            s = f32(float(s) + fx(math.exp(v / 128.0)))
        p = int(65536.0 * fx(math.exp(c3[1] / 128.0)) / float(s))
        if p < 32768:
            continue
        if best_val is None or p > best_val:
            best_val, best_idx = p, i
    if best_idx is None:
        return None
    i = best_idx
    scale_idx = 0 if i < 2 * 28 * 21 else 1
    k = i - (0 if scale_idx == 0 else 2 * 28 * 21)
    ar, rel = k % 2, k // 2
    cy, cx = rel // dims[scale_idx][1], rel % dims[scale_idx][1]
    pr = [
        f32(f32(cx + 0.5) / f32(dims[scale_idx][1])),
        f32(f32(cy + 0.5) / f32(dims[scale_idx][0])),
        f32(float(scales[scale_idx]) * math.sqrt(float(ars[ar]))),
        f32(float(scales[scale_idx]) / math.sqrt(float(ars[ar]))),
    ]
    if float_casts:  # float * (float)sqrt(double): a float product
        pr[2] = scales[scale_idx] * f32(math.sqrt(float(ars[ar])))
        pr[3] = scales[scale_idx] / f32(math.sqrt(float(ars[ar])))
    pr = [min(max(v, f32(0)), f32(1)) for v in pr]
    g = [f32(int(locs[i, j]) / 128.0) for j in range(4)]
    cxcy = [
        f32(pr[0] + g[0] * pr[2] / f32(10)),
        f32(pr[1] + g[1] * pr[3] / f32(10)),
        f32(math.exp(float(g[2] / f32(5))) * float(pr[2])),
        f32(math.exp(float(g[3] / f32(5))) * float(pr[3])),
    ]
    if float_casts:
        cxcy[2] = f32(math.exp(float(g[2] / f32(5)))) * pr[2]
        cxcy[3] = f32(math.exp(float(g[3] / f32(5)))) * pr[3]
    xy = [
        cxcy[0] - cxcy[2] / f32(2),
        cxcy[1] - cxcy[3] / f32(2),
        cxcy[0] + cxcy[2] / f32(2),
        cxcy[1] + cxcy[3] / f32(2),
    ]
    xy = [min(max(v, f32(0)), f32(1)) for v in xy]
    return [
        int(f32(w) * xy[0]),
        int(f32(h) * xy[1]),
        int(f32(w) * xy[2]),
        int(f32(h) * xy[3]),
    ], best_val / 65536


def _faceid_c(frame: np.ndarray, box) -> np.ndarray:
    """msdk faceID.c USE_BOX_ONLY loop, pixel by pixel (frame as the detector sees it, RGB565 depth)."""
    f32 = np.float32
    x1, y1, x2, y2 = box
    bw, bh = x2 - x1, y2 - y1
    out = np.zeros((160, 120, 3), np.uint8)
    for i in range(160):
        yp = f32(f32(i) / f32(160)) * f32(bh)
        yl = min(int(np.floor(float(yp) + 0.5)), bh - 1)
        for j in range(120):
            xp = f32(f32(j) / f32(120)) * f32(bw)
            xl = min(int(np.floor(float(xp) + 0.5)), bw - 1)
            out[i, j] = frame[y1 + yl, x1 + xl]
    return out


@pytest.mark.parametrize("revision", ["f631747", "0241c69"])
def test_firmware_decode_is_post_process_c(ai8x, revision):
    from facesdk.detect.tinierssd import POST_PROCESS_REVISIONS, decode_tinierssd_firmware

    assert revision in POST_PROCESS_REVISIONS
    ref = ai8x / "reference"
    rng = np.random.default_rng(0)
    cases = [
        (np.load(ref / f"facedet_{k}_model_locs.npy"), np.load(ref / f"facedet_{k}_model_class_scores.npy"))
        for k in INPUTS
    ]
    for _ in range(40):  # random heads, many saturated ties (the first maximum must win)
        sc = rng.integers(-128, 128, (1246, 2))
        sc[rng.random(1246) < 0.05] = (-128, 127)
        cases.append((rng.integers(-128, 128, (1246, 4)), sc))
    for _ in range(300):  # one strong face prior, random box offsets: exercises the box arithmetic
        sc = np.tile([40, -40], (1246, 1))
        sc[rng.integers(1246)] = rng.integers(-20, 20), rng.integers(60, 128)
        cases.append((rng.integers(-128, 128, (1246, 4)), sc))
    seen_none = seen_box = differ = 0
    floats = revision == "0241c69"
    for locs, sc in cases:
        locs, sc = locs.reshape(-1, 4), sc.reshape(-1, 2)
        got = decode_tinierssd_firmware(locs, sc, revision=revision)
        want = _post_process_c(locs, sc, float_casts=floats)
        other = _post_process_c(locs, sc, float_casts=not floats)
        differ += (want is None) != (other is None) or (want is not None and want != other)
        if want is None:
            assert got is None
            seen_none += 1
        else:
            assert got is not None and got[0].tolist() == want[0] and got[1] == want[1]
            seen_box += 1
    assert seen_none >= 1 and seen_box >= 6
    assert differ >= 1  # the two revisions are told apart by these heads
    with pytest.raises(ConfigError):
        decode_tinierssd_firmware(np.zeros((10, 4)), np.zeros((10, 3)))
    with pytest.raises(ConfigError):
        decode_tinierssd_firmware(*cases[0], revision="head")


def test_firmware_faceid_crop_is_faceid_c(shared):
    from facesdk.detect.tinierssd import firmware_faceid_crop, rgb565_quantize

    rng = np.random.default_rng(1)
    frame = rgb565_quantize(rng.integers(0, 256, (224, 168, 3)).astype(np.uint8))
    assert set(np.unique(frame[..., 0] % 8)) == {0} and set(np.unique(frame[..., 1] % 4)) == {0}
    assert rgb565_quantize(np.array([[[255, 255, 255]]], np.uint8)).tolist() == [[[248, 252, 248]]]
    for box in [
        (66, 3, 136, 108),
        (0, 0, 168, 224),
        (10, 20, 11, 21),
        (17, 33, 97, 131),
        (100, 150, 167, 223),
    ]:
        assert np.array_equal(firmware_faceid_crop(frame, box), _faceid_c(frame, box)), box
    with pytest.raises(ConfigError):
        firmware_faceid_crop(frame, (10, 10, 10, 50))  # empty box
    with pytest.raises(ConfigError):
        firmware_faceid_crop(frame, (100, 100, 200, 150))  # beyond the frame


def test_detector_firmware_exact_mode(ai8x_env, shared):
    import facesdk
    from facesdk.align import align_face
    from facesdk.detect.tinierssd import firmware_box, firmware_faceid_crop, firmware_frame
    from facesdk.image import load_image

    rec = facesdk.FaceRecognizer(
        detector="ai85-facedet-tinierssd", embedder="ai85-faceid", backend="max78000"
    )
    img = load_image(shared / "data" / "lfw" / "images" / "Aaron_Eckhart" / "Aaron_Eckhart_0001.jpg")
    host = rec.detect(img)
    rec.detector.firmware_exact = True
    (fw,) = rec.detect(img)  # one box, on integer frame pixels
    b8 = firmware_box(fw.box, (250, 250))
    assert np.allclose(b8 * np.array([250 / 168, 250 / 224] * 2), fw.box, atol=1e-3)
    assert _iou(fw.box, host[0].box) > 0.8 and fw.score < host[0].score  # the 3-class softmax lowers it
    chip = align_face(img, fw.box, None, "ai8x-faceid-firmware")
    assert np.array_equal(chip, firmware_faceid_crop(firmware_frame(img), b8))
    assert not np.array_equal(chip, align_face(img, host[0].box, None, "ai8x-faceid"))
    rec.close()


def _iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


# ------------------------------------------------------------------- command line: --json and one-line errors
def _one_line_error(capsys, rc: int, want_rc: int, *words: str) -> None:
    err = capsys.readouterr().err.strip()
    assert rc == want_rc, err
    assert len(err.splitlines()) == 1 and err.startswith("facesdk: error:"), err
    assert "Traceback" not in err and "usage:" not in err
    for w in words:
        assert w in err, err


def test_cli_fit_and_run_json_and_bad_input(ai8x, ai8x_env, tmp_path, capsys):
    from facesdk.cli import main

    ck, y = ai8x / "trained" / NETS["faceid"][0], ai8x / "networks" / NETS["faceid"][1]
    for argv in (
        ["max7800x", "fit", str(ck), "--yaml", str(y), "--json"],
        ["--json", "max7800x", "fit", "ai85-faceid", "--chip", "MAX78002"],
    ):
        assert main(argv) == 0
        d = json.loads(capsys.readouterr().out)
        assert d["fits"] and d["chip"] in ("MAX78000", "MAX78002")
    x = tmp_path / "x.npy"
    np.save(x, np.load(ai8x / "reference" / "faceid_sample_input.npy"))
    assert main(["max7800x", "run", str(ck), "--yaml", str(y), "--input", str(x), "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["outputs"]["L08"]["shape"] == [512, 1, 1]
    # bad input → one line, the error's exit code
    _one_line_error(
        capsys,
        main(["max7800x", "fit", str(tmp_path / "missing.pth.tar"), "--yaml", str(y)]),
        5,
        "checkpoint not found",
    )
    _one_line_error(capsys, main(["max7800x", "fit", "no-such-card"]), 5, "no-such-card")
    _one_line_error(
        capsys,
        main(["max7800x", "fit", str(ck), "--yaml", str(y), "--chip", "max78001"]),
        2,
        "max78001",
        "max78000 or max78002",
    )
    marker = tmp_path / "pwned"
    evil = (
        b"\x80\x02cposix\nsystem\nq\x00X"
        + len(f"touch {marker}").to_bytes(4, "little")
        + f"touch {marker}".encode()
        + b"\x85R."
    )
    hostile = _torch_like_zip(tmp_path / "evil.pth.tar", evil)
    _one_line_error(
        capsys, main(["max7800x", "fit", str(hostile), "--yaml", str(y), "--json"]), 5, "posix.system"
    )
    assert not marker.exists()
    _one_line_error(
        capsys,
        main(["max7800x", "run", str(ck), "--yaml", str(y), "--input", str(tmp_path / "no.npy")]),
        2,
        "no.npy",
    )
    bad = tmp_path / "bad.npy"
    np.save(bad, np.full((3, 160, 120), 300))
    _one_line_error(
        capsys, main(["max7800x", "run", str(ck), "--yaml", str(y), "--input", str(bad)]), 2, "-128..127"
    )


@pytest.mark.parametrize(
    "c,o,k,pad,stride,wmax",
    [
        (129, 16, (3, 3), (1, 1), (1, 1), 127),  # 9·129·128·127 > 2**24: taps summed in two exact groups
        (5, 7, (3, 2), (2, 0), (1, 1), 127),  # non-square kernel, asymmetric padding
        (8, 4, (3, 3), (1, 1), (2, 2), 127),  # stride 2: im2col path
        (1100, 3, (3, 3), (1, 1), (1, 1), 127),  # one tap alone could pass 2**24: im2col with split K
        (16, 8, (1, 1), (0, 0), (1, 1), 127),  # 1x1
    ],
)
def test_conv_paths_are_exact_integer_convolutions(c, o, k, pad, stride, wmax):
    from facesdk_backends.max7800x.accel.emulator import conv2d_acc

    rng = np.random.default_rng(c + o)
    x = rng.integers(-128, 128, (2, c, 9, 7))
    x[0, :, 0, 0] = -128
    x[1] = -127  # worst case: odd products of one sign, partial sums far beyond 2**24
    w = rng.integers(-wmax, wmax + 1, (o, c, *k))
    w[0, :, 0, 0] = -128
    w[1] = -127
    b = rng.integers(-128, 128, o)
    got = conv2d_acc(x, w, b, pad=pad, stride=stride)
    xp = np.pad(x.astype(np.int64), ((0, 0), (0, 0), (pad[0], pad[0]), (pad[1], pad[1])))
    ho = (xp.shape[2] - k[0]) // stride[0] + 1
    wo = (xp.shape[3] - k[1]) // stride[1] + 1
    want = np.zeros((2, o, ho, wo), np.int64)
    for ky in range(k[0]):
        for kx in range(k[1]):
            sl = xp[
                :,
                :,
                ky : ky + (ho - 1) * stride[0] + 1 : stride[0],
                kx : kx + (wo - 1) * stride[1] + 1 : stride[1],
            ]
            want += np.einsum("nchw,oc->nohw", sl, w[:, :, ky, kx].astype(np.int64))
    want += (b * 128)[None, :, None, None]
    assert got.shape == want.shape and np.array_equal(got, want)
