"""MAX7800x FaceID firmware database: db_gen-compatible weights_3.h / embeddings.h, the MAX78002
record-mode flash layout, import back into a gallery, and the firmware's dot-product + threshold
rule against the core Gallery (on the real 42-embedding database of the ai8x dot-product checkpoints)."""

from __future__ import annotations

import argparse
import io
import json
import re
import struct
from contextlib import redirect_stdout
from pathlib import Path

import numpy as np
import pytest
from facesdk_backends.max7800x import firmware as dbx

from facesdk.errors import ConfigError, GalleryError, IncompatibleGalleryError
from facesdk.gallery import Gallery, l2_normalize


@pytest.fixture(scope="module")
def ckpt_db(shared) -> dbx.DotProductDB:
    return dbx.load_dot_checkpoint(shared / "ai8x" / "trained" / "ai85-dot_emb_112_checkpoint-q.pth.tar")


@pytest.fixture(scope="module")
def real_embeddings(ckpt_db) -> np.ndarray:
    """The 42 face embeddings stored in the shipped dot-product checkpoint, as floats."""
    return ckpt_db.weights.astype(np.float32) / 256


@pytest.fixture(scope="module")
def gallery(real_embeddings) -> Gallery:
    """Distinct people: greedily pick embeddings with cosine < 0.3 to every one already picked."""
    x = real_embeddings / np.linalg.norm(real_embeddings, axis=1, keepdims=True)
    chosen: list[int] = []
    for i in range(len(x)):
        if all(x[i] @ x[j] < 0.3 for j in chosen):
            chosen.append(i)
    assert len(chosen) >= 6
    g = Gallery("ai85-faceid_112", 64, threshold=(70 + 0.5) / 128)
    for k, i in enumerate(chosen):
        g.add(f"pers{k}", real_embeddings[i])
    return g


# ============================================================================ checkpoints
@pytest.mark.parametrize("chip,cap", [("ai85", 512), ("ai87", 1024)])
def test_dot_product_checkpoints(shared, chip, cap):
    db = dbx.load_dot_checkpoint(shared / "ai8x" / "trained" / f"{chip}-dot_emb_112_checkpoint-q.pth.tar")
    assert (db.profile.capacity, db.profile.output_shift, len(db)) == (cap, -1, 42)
    # db_gen rows: L2 norm 256 (normalised embedding x 128 x CNN_3_OUTPUT_SHIFT)
    assert np.allclose(np.linalg.norm(db.weights.astype(float), axis=1), 256, atol=2)
    res = db.identify(db.weights, quantized=False)
    assert [r.slot for r in res] == list(range(42)) and min(r.score for r in res) >= 125


# ============================================================================ arithmetic
def _db_gen_rows(raw: np.ndarray) -> np.ndarray:
    """db_gen's steps, written out as msdk ``db_gen/utils.py`` runs them on the torch model's output:
    the ai8x-simulated linear layer gives ``raw / 128`` (float32), ``F.normalize`` divides by its float32
    norm, then ``* 128 * output_shift`` (2), ``np.clip``, ``[< 0] += 256``, ``np.around``, ``uint8``."""
    x = raw.astype(np.float32) / np.float32(128)
    norm = np.sqrt((x.astype(np.float64) ** 2).sum(1, keepdims=True)).astype(np.float32)
    emb = (x / norm).astype(np.float32)
    emb = emb * 128 * 2
    emb = np.clip(emb, -128, 127)
    emb[emb < 0] += 256
    return np.around(emb).astype(np.uint8).view(np.int8)


def test_db_quantisation_is_db_gen():
    # float32 throughout and rounding after adding 256: rows where rounding the signed float64 value
    # (this project's former rule) gives another byte are kept in the test data on purpose
    rng = np.random.default_rng(14)
    raw = np.clip(np.round(rng.normal(size=(60000, 64)) * 25), -128, 127).astype(np.int8)
    want = _db_gen_rows(raw)
    f64 = raw / np.linalg.norm(raw.astype(np.float64), axis=1, keepdims=True)
    former = np.around(np.clip(f64 * 256, -128, 127)).astype(np.int8)
    tricky = np.nonzero((former != want).any(1))[0]
    assert len(tricky) >= 8  # the data can tell the two rules apart
    rows = np.concatenate([raw[tricky], raw[: 1024 - len(tricky)]])
    assert np.array_equal(dbx.quantize_db_embeddings(raw), want)  # the network's raw int8 output
    unit = l2_normalize(raw.astype(np.float32))  # what FaceRecognizer.embed gives for the same faces
    assert np.array_equal(dbx.quantize_db_embeddings(unit), want)
    x = np.zeros((2, 64))
    x[0, 5] = 1.0  # one component 1.0 -> 256 -> clipped to 127
    x[1, 7] = -3.0  # -256 -> clipped to -128
    assert dbx.quantize_db_embeddings(x)[0, 5] == 127 and dbx.quantize_db_embeddings(x)[1, 7] == -128
    assert rows.shape == (1024, 64)
    with pytest.raises(ConfigError):
        dbx.quantize_db_embeddings(np.zeros((1, 64)))
    with pytest.raises(ConfigError):
        dbx.quantize_db_embeddings(np.full((1, 64), np.nan))


def test_weights_3_h_of_1024_identities_is_byte_identical_to_db_gen(tmp_path):
    """A 1,024-identity ``weights_3.h`` (MAX78002 layer) from faceid-style embeddings: every one of the
    65,536 stored values equals db_gen's, including rows where float64 rounding would differ."""
    rng = np.random.default_rng(14)
    raw = np.clip(np.round(rng.normal(size=(60000, 64)) * 25), -128, 127).astype(np.int8)
    want = _db_gen_rows(raw)
    f64 = raw / np.linalg.norm(raw.astype(np.float64), axis=1, keepdims=True)
    tricky = np.nonzero((np.around(np.clip(f64 * 256, -128, 127)).astype(np.int8) != want).any(1))[0]
    sel = np.concatenate([tricky, np.setdiff1d(np.arange(1024), tricky)[: 1024 - len(tricky)]])
    names = [f"p{i:04d}" for i in range(1024)]
    rows = dbx.quantize_db_embeddings(l2_normalize(raw[sel].astype(np.float32)))
    db = dbx.DotProductDB(names, rows, dbx.get_profile("max78002"))
    path = dbx.write_weights_h(db, tmp_path / "weights_3.h")
    full, prof = dbx.read_weights_h(path)
    assert prof.name == "max78002" and full.shape == (1024, 64)
    assert int((full != want[sel]).sum()) == 0
    # the .bin variant holds the same bytes
    assert np.array_equal(dbx.read_weights_bin(dbx.write_weights_bin(db, tmp_path / "w.bin"), "max78002"),
                          want[sel])


def _firmware_normalise(v: np.ndarray) -> np.ndarray:
    """faceID.c, element by element: float sum, b = 1/sqrt(sum), n = 128*v*b, +256 if < 0, (uint8_t)."""
    s = np.float32(0)
    for e in v.astype(np.int64):
        s = np.float32(s + np.float32(e * e))
    b = np.float32(1.0 / np.sqrt(np.float64(s)))
    out = []
    for e in v.astype(np.int64):
        n = np.float32(np.float32(128 * e) * b)
        if n < 0:
            n = np.float32(n + np.float32(256))
        out.append(int(n) & 0xFF)
    return np.array(out, np.uint8).view(np.int8)


def test_probe_normalisation_is_the_firmwares():
    rng = np.random.default_rng(1)
    vs = [rng.integers(-128, 128, 64).astype(np.int8) for _ in range(20)]
    one = np.zeros(64, np.int8)
    one[3] = 50  # n = 128 exactly -> byte 0x80 -> -128 (the firmware's wrap-around)
    vs.append(one)
    for v in vs:
        assert np.array_equal(dbx.quantize_probe(v), _firmware_normalise(v))
    assert dbx.quantize_probe(one)[3] == -128
    assert np.array_equal(dbx.quantize_probe(np.stack(vs)), np.stack([_firmware_normalise(v) for v in vs]))


def test_dot_layer_matches_the_accelerator_requantisation():
    from facesdk_backends.max7800x.accel.emulator import requantize

    rng = np.random.default_rng(2)
    p = rng.integers(-128, 128, (30, 64)).astype(np.int8)
    w = rng.integers(-128, 128, (40, 64)).astype(np.int8)
    for shift in (-1, 0, 2):
        acc = p.astype(np.int64) @ w.T.astype(np.int64)
        assert np.array_equal(dbx.dot_product_scores(p, w, shift), requantize(acc, shift))


def test_firmware_decision_rule():
    s = np.array([[5, 90, 90, 10], [-3, -1, 0, -9], [71, 70, 0, 0], [70, 0, 0, 0]], np.int8)
    slot, mx, known = dbx.firmware_decision(s, 70)
    assert slot.tolist() == [1, 0, 0, 0]  # first maximum wins; nothing positive -> slot 0, max 0
    assert mx.tolist() == [90, 0, 71, 70]
    assert known.tolist() == [True, False, True, False]  # strictly greater than the threshold


# ============================================================================ gallery equivalence
def test_emulated_dot_product_matches_the_core_gallery(gallery, real_embeddings, tmp_path):
    files = dbx.export_firmware_db(gallery, tmp_path, "max78000")
    db = dbx.import_firmware_db(files["weights_h"], files["embeddings_h"])  # through the files
    assert db.names == gallery.names and db.threshold == 70

    rng = np.random.default_rng(3)
    strangers = rng.normal(size=(20, 64)).astype(np.float32)
    probes = np.concatenate([real_embeddings, strangers])
    sims = gallery.similarities(probes)
    scores = db.scores(probes)[:, : len(db)].astype(float)
    # the int8 score is 128 x cosine up to quantisation
    assert np.abs(scores - 128 * sims).max() <= 2.5

    ref = gallery.identify(probes)
    emu = db.identify(probes)
    srt = np.sort(sims, axis=1)
    clear = (srt[:, -1] - srt[:, -2] > 3 / 128) & (np.abs(srt[:, -1] - gallery.threshold) > 3 / 128)
    assert clear.sum() >= 50
    for i in np.flatnonzero(clear):
        assert emu[i].name == ref[i].name, (i, ref[i], emu[i])
    known = [r.known for r in ref]
    assert 10 <= sum(known) < len(known)  # both outcomes are exercised
    # best slot (ignoring the threshold) agrees wherever the top two are apart
    best = [gallery.names[j] for j in sims.argmax(1)]
    slot, _, _ = dbx.firmware_decision(db.scores(probes), -128)
    sep = (srt[:, -1] - srt[:, -2] > 3 / 128) & (srt[:, -1] > 3 / 128)
    assert sep.sum() >= 50
    for i in np.flatnonzero(sep):
        assert db.names[slot[i]] == best[i]


def test_gallery_roundtrip(gallery, tmp_path):
    files = dbx.export_firmware_db(gallery, tmp_path, "max78002", flash=True, weights_bin=True)
    db = dbx.import_firmware_db(files["weights_h"], files["embeddings_h"])
    assert db.profile.name == "max78002" and db.threshold == 64
    g2 = db.to_gallery("ai85-faceid_112")
    assert g2.names == gallery.names
    cos = np.sum(g2.templates * gallery.templates, axis=1)
    assert cos.min() > 0.999
    assert np.array_equal(dbx.read_weights_bin(files["weights_bin"], "max78002")[: len(db)], db.weights)
    names, rows = dbx.read_flash_db(files["flash"])
    assert names == gallery.names and np.array_equal(rows, db.weights)


# ============================================================================ file formats
def test_weights_h_layout(tmp_path):
    w = np.zeros((10, 64), np.int8)
    w[0, 0], w[1, 0], w[8, 0], w[9, 0] = 4, -20, 7, 1
    w[0, 63] = -1
    db = dbx.DotProductDB([f"n{i}" for i in range(10)], w, dbx.get_profile("max78000"))
    path = dbx.write_weights_h(db, tmp_path / "weights_3.h")
    text = path.read_text()
    assert text.startswith("#define KERNELS_3 { \\\n  0x50180000, 0x00000101, ")
    assert text.endswith("0x00000000 \\\n}\n")
    toks = re.findall(r"0x[0-9a-f]{8}", text)
    assert len(toks) == 64 * (2 + 257) + 1
    p0 = [int(t, 16) for t in toks[2:259]]
    # slots reversed in groups of 9, 4 per big-endian word: slot 8 -> byte 0, slot 1 -> byte 7, slot 0 ->
    # byte 8
    assert p0[0] == 0x07000000 and p0[1] == 0x000000EC and p0[2] == 0x04000000
    assert p0[4] == 0x00010000  # slot 9 -> byte 17 (word 4, second byte)
    assert not any(p0[5:])
    last = toks[63 * 259 : 63 * 259 + 2]
    assert last == ["0x50dbc000", "0x00000101"]
    full, prof = dbx.read_weights_h(path)
    assert prof.name == "max78000" and np.array_equal(full[:10], w) and not full[10:].any()
    # one line per 8 words, as db_gen writes it
    assert all(len(line.split(",")) - 1 <= 8 for line in text.splitlines()[1:-1])


def test_embeddings_h_text_and_errors(tmp_path):
    p = dbx.write_embeddings_h(["Alice", "Bob", "Charlie"], tmp_path / "embeddings.h")
    assert (
        p.read_text()
        == '#define DEFAULT_EMBS_NUM 3 \n\n#define DEFAULT_NAMES { \\\n "Alice", "Bob", "Charli" \\\n}\n'
    )
    assert dbx.read_embeddings_h(p) == ["Alice", "Bob", "Charli"]
    bad = tmp_path / "bad.h"
    bad.write_text('#define DEFAULT_EMBS_NUM 4 \n#define DEFAULT_NAMES { "a", "b" }\n')
    with pytest.raises(GalleryError, match="4"):
        dbx.read_embeddings_h(bad)
    with pytest.raises(ConfigError):
        dbx.write_embeddings_h(["Zoë"], tmp_path / "x.h")


def test_corrupt_weights_h_is_refused(tmp_path, gallery):
    path = dbx.export_firmware_db(gallery, tmp_path, "max78000")["weights_h"]
    text = path.read_text()
    cut = tmp_path / "cut.h"
    cut.write_text(text[: len(text) // 2] + "}\n")
    with pytest.raises(GalleryError):
        dbx.read_weights_h(cut)
    moved = tmp_path / "moved.h"
    moved.write_text(text.replace("0x50180000", "0x12345678", 1))
    with pytest.raises(GalleryError, match="0x12345678"):
        dbx.read_weights_h(moved)
    (tmp_path / "none.h").write_text("int x;\n")
    with pytest.raises(GalleryError):
        dbx.read_weights_h(tmp_path / "none.h")


def test_flash_record_layout(tmp_path):
    rng = np.random.default_rng(4)
    names = ["Alice"] * 2 + ["Bob"] * 17 + ["Alice"]
    rows = rng.integers(-128, 128, (20, 64)).astype(np.int8)
    raw = dbx.write_flash_db(names, rows, tmp_path / "db.bin").read_bytes()
    assert len(raw) == 6 * 0x4000
    assert struct.unpack_from("<II", raw, 0) == (4, 20)  # persons (Bob split 15 + 2), embeddings
    assert struct.unpack_from("<I", raw, 0x4000)[0] == 0xFEEDBEEF
    first, second = struct.unpack_from("<II", raw, 0x4004)
    assert first == (ord("A") << 24) | (ord("l") << 16) | (ord("i") << 8) | ord("c")
    assert second == (ord("e") << 24) | (1 << 4) | 2
    assert raw[0x400C : 0x400C + 64] == rows[0].tobytes() and raw[0x404C:0x408C] == rows[1].tobytes()
    _, bob = struct.unpack_from("<II", raw, 0x408C)
    assert bob == (2 << 4) | 15
    assert set(raw[8:0x4000]) == {0xFF}  # erased flash elsewhere
    hexfile = dbx.write_flash_db(names, rows, tmp_path / "db.hex")
    lines = hexfile.read_text().splitlines()
    assert lines[0] == ":020000041026C4" and lines[-1] == ":00000001FF"
    assert lines[1].startswith(":10800000")  # 0x10268000: status page
    for ln in lines:
        assert sum(bytes.fromhex(ln[1:])) & 0xFF == 0
    for f in (tmp_path / "db.bin", hexfile):
        n2, r2 = dbx.read_flash_db(f)
        assert n2 == names and np.array_equal(r2, rows)
    bad = bytearray(raw)
    bad[0x4000] ^= 1
    (tmp_path / "bad.bin").write_bytes(bytes(bad))
    with pytest.raises(GalleryError, match="magic"):
        dbx.read_flash_db(tmp_path / "bad.bin")
    with pytest.raises(ConfigError):
        dbx.write_flash_db(["x"] * 1300, np.ones((1300, 64), np.int8), tmp_path / "big.bin")


def test_default_plus_recorded_slots(gallery, tmp_path):
    files = dbx.export_firmware_db(gallery, tmp_path, "max78002")
    rec = np.ones((2, 64), np.int8)
    dbx.write_flash_db(["New", "New"], rec, tmp_path / "rec.hex")
    db = dbx.import_firmware_db(files["weights_h"], files["embeddings_h"], flash=tmp_path / "rec.hex")
    assert db.names == gallery.names + ["New", "New"]
    assert db.to_gallery().names == gallery.names + ["New"]


def test_export_refusals(tmp_path):
    g = Gallery("mobilefacenet", 128)
    g.add("a", np.ones(128))
    with pytest.raises(IncompatibleGalleryError, match="64-d"):
        dbx.export_firmware_db(g, tmp_path, "max78000")
    g = Gallery("ai85-faceid_112", 64)
    g.add("Robert1", np.ones(64))
    g.add("Robert2", -np.ones(64))
    with pytest.raises(ConfigError, match="Robert"):
        dbx.DotProductDB.from_gallery(g)
    with pytest.raises(ConfigError):
        dbx.get_profile("max99999")
    with pytest.raises(ConfigError, match="nothing"):
        dbx.import_firmware_db()


# ============================================================================ CLI
def _cli(argv: list[str]) -> tuple[int, str]:
    from facesdk_backends.max7800x.cli import add_commands as register

    parser = argparse.ArgumentParser()
    parser.add_argument("--json", action="store_true")
    register(parser.add_subparsers(dest="cmd", required=True))
    args = parser.parse_args(argv)
    buf = io.StringIO()
    with redirect_stdout(buf):
        rc = args.func(args)
    return rc, buf.getvalue()


def test_cli_export_and_import(gallery, tmp_path):
    gpath = gallery.save(tmp_path / "g.npz")
    rc, out = _cli(
        ["--json", "export-db", str(gpath), str(tmp_path / "fw"), "--profile", "max78002", "--flash"]
    )
    d = json.loads(out)
    assert rc == 0 and d["identities"] == len(gallery) and d["threshold"] == 64
    assert Path(d["files"]["flash"]).exists()
    rc, out = _cli(
        [
            "import-db",
            str(tmp_path / "back.npz"),
            "--weights",
            d["files"]["weights_h"],
            "--embeddings",
            d["files"]["embeddings_h"],
        ]
    )
    assert rc == 0 and "identities" in out
    g2 = Gallery.load(tmp_path / "back.npz")
    assert g2.names == gallery.names
    rc, out = _cli(["--json", "import-db", str(tmp_path / "flash.npz"), "--flash", d["files"]["flash"]])
    assert json.loads(out)["names"] == gallery.names
    with pytest.raises(ConfigError):
        _cli(["import-db", str(tmp_path / "x.npz"), "--weights", d["files"]["weights_h"]])


# ======================================================================= core Gallery scored the firmware way
def _emulated_dot_layer(probes_q: np.ndarray, rows: np.ndarray, shift: int = -1) -> np.ndarray:
    """The dot-product layer as the accelerator emulator computes a 1x1 convolution layer."""
    from facesdk_backends.max7800x.accel.emulator import conv2d_acc, requantize

    acc = conv2d_acc(
        probes_q.astype(np.int64)[:, :, None, None], rows.astype(np.int64)[:, :, None, None], None, pad=(0, 0)
    )
    return requantize(acc[:, :, 0, 0], shift).astype(np.int8)


def test_firmware_gallery_scorer_integer_path_is_exact(gallery, real_embeddings, tmp_path):
    rng = np.random.default_rng(4)
    probes = np.concatenate(
        [
            real_embeddings,
            rng.normal(size=(30, 64)).astype(np.float32),
            rng.integers(-128, 128, (30, 64)).astype(np.int8).astype(np.float32),
        ]
    )
    sc = dbx.FirmwareGalleryScorer(gallery)
    assert sc.threshold == 70 and sc.float_threshold == gallery.threshold
    s = sc.scores(probes)
    # the same rows exported to weights_3.h/embeddings.h, read back, and run through the emulated layer
    files = dbx.export_firmware_db(gallery, tmp_path, "max78000")
    db = dbx.import_firmware_db(files["weights_h"], files["embeddings_h"])
    assert np.array_equal(db.weights, sc.rows)
    assert np.array_equal(s, db.scores(probes)[:, : len(db)])
    assert np.array_equal(s, _emulated_dot_layer(dbx.quantize_probe(probes), sc.rows))
    # decisions: identical names and scores to the firmware database emulation, probe by probe
    got, want = sc.identify(probes), db.identify(probes)
    assert [m.name for m in got] == [r.name for r in want]
    assert [round(m.similarity * 128) for m in got] == [r.score for r in want]
    assert {m.name for m in got} - {dbx.UNKNOWN} and any(not m.known for m in got)
    # any embedding size (the ai85 FaceID network is 512-d); an empty gallery knows nobody
    g512 = Gallery("ai85-faceid", 512, threshold=0.6)
    g512.add("a", rng.normal(size=512))
    assert dbx.FirmwareGalleryScorer(g512).threshold == 76  # floor(128 * 0.6)
    assert [m.name for m in dbx.FirmwareGalleryScorer(Gallery("x", 64)).identify(probes[:3])] == [
        "Unknown"
    ] * 3
    with pytest.raises(IncompatibleGalleryError):
        sc.scores(np.zeros((1, 512)))


def test_firmware_gallery_scorer_agrees_with_float_outside_the_margin(gallery, real_embeddings):
    rng = np.random.default_rng(5)
    e = real_embeddings
    probes = np.concatenate(
        [
            e,
            rng.normal(size=(40, 64)).astype(np.float32),
            e + 0.05 * rng.normal(size=e.shape).astype(np.float32),
            e + 0.12 * rng.normal(size=e.shape).astype(np.float32),
        ]
    )
    sc = dbx.FirmwareGalleryScorer(gallery)
    bound = sc.error_bound()
    assert 4 < bound.max() < 10  # (|r|_1 + 128|eps|_2)/256 + 0.5 for 64-d rows
    # the bound holds for every probe and slot
    dev = np.abs(sc.scores(probes).astype(float) - 128 * gallery.similarities(probes))
    assert (dev <= bound[None, :]).all() and dev.max() > 0.5
    ok = sc.guaranteed_agreement(probes)
    assert ok.mean() > 0.6
    ref, emu = gallery.identify(probes), sc.identify(probes)
    for i in np.flatnonzero(ok):
        assert emu[i].name == ref[i].name, (i, ref[i].name, emu[i].name)
    # where they differ, it is inside the stated margin (near the threshold or a near tie)
    differ = [i for i in range(len(probes)) if emu[i].name != ref[i].name]
    assert all(not ok[i] for i in differ)
    # a probe pushed right onto the threshold is (correctly) not guaranteed
    t = gallery.templates[0]
    other = rng.normal(size=64)
    other -= (other @ t) * t
    other /= np.linalg.norm(other)
    c = gallery.threshold
    onthr = c * t + np.sqrt(1 - c * c) * other
    assert not sc.guaranteed_agreement(onthr[None])[0]
    with pytest.raises(ConfigError):
        dbx.float_threshold_to_score(float("nan"))


def test_facesdk_command_line_db_commands(gallery, tmp_path, capsys):
    from facesdk.cli import main

    def one_line(rc: int, want: int, *words: str) -> None:
        err = capsys.readouterr().err.strip()
        assert rc == want and len(err.splitlines()) == 1 and err.startswith("facesdk: error:"), err
        assert all(w in err for w in words), err

    gpath = gallery.save(tmp_path / "g.npz")
    assert (
        main(["max7800x", "export-db", str(gpath), str(tmp_path / "fw"), "--json", "--profile", "MAX78000"])
        == 0
    )
    d = json.loads(capsys.readouterr().out)
    assert d["names"] == gallery.names and d["threshold"] == 70
    assert (
        main(
            [
                "--json",
                "max7800x",
                "import-db",
                str(tmp_path / "b.npz"),
                "--weights",
                d["files"]["weights_h"],
                "--embeddings",
                d["files"]["embeddings_h"],
            ]
        )
        == 0
    )
    assert json.loads(capsys.readouterr().out)["names"] == gallery.names
    one_line(main(["max7800x", "export-db", str(tmp_path / "none.npz"), str(tmp_path / "o")]), 7, "none.npz")
    one_line(
        main(["max7800x", "export-db", str(gpath), str(tmp_path / "o"), "--profile", "max7800"]), 2, "max7800"
    )
    one_line(
        main(
            [
                "max7800x",
                "import-db",
                str(tmp_path / "x.npz"),
                "--weights",
                str(tmp_path / "no.h"),
                "--embeddings",
                d["files"]["embeddings_h"],
            ]
        ),
        7,
        "no.h",
    )
    one_line(
        main(["max7800x", "import-db", str(tmp_path / "x.npz"), "--flash", str(tmp_path / "no.hex")]),
        7,
        "no.hex",
    )
    g512 = Gallery("ai85-faceid", 512)
    g512.add("a", np.ones(512, np.float32))
    one_line(
        main(["max7800x", "export-db", str(g512.save(tmp_path / "g512.npz")), str(tmp_path / "o")]), 7, "64"
    )
