"""Importer of ai8x-synthesis C projects: msdk's faceid_112 known-answer test, word for word."""

from __future__ import annotations

import json
import re
import shutil

import numpy as np
import pytest

from conftest import shared_root
from facesdk.errors import ModelFormatError, ModelNotFoundError

SHARED = shared_root()  # ../shared or $FACESDK_SHARED; missing data is an error, not a skip
F112 = SHARED / "ai8x" / "msdk" / "faceid_112"


@pytest.fixture(scope="module")
def proj():
    from facesdk_backends.max7800x.accel.cproject import import_c_project

    return import_c_project(F112)


def test_faceid_112_known_answer_test_matches_every_word(proj):
    from facesdk_backends.max7800x.accel.cproject import known_answer_test

    net = proj.network
    assert len(net.layers) == 18 and net.input_shape == (3, 112, 112)
    # the layer summary of cnn.c (facts: its comments), recovered from the registers
    assert [layer.weight_bits for layer in net.layers if layer.weights is not None] == [
        8,
        8,
        4,
        4,
        4,
        2,
        4,
        2,
        4,
        4,
        4,
        2,
        4,
        4,
        2,
        8,
    ]
    assert net.layers[9].eltwise == "add" and net.layers[9].in_sequences == [7, 8]
    assert net.layers[8].in_sequences == [5]
    assert net.layers[16].pool == "avg" and net.layers[16].pool_size == (7, 7)
    assert net.layers[17].weights.shape == (64, 128)
    kat = known_answer_test(proj)
    assert (kat.words, kat.differing) == (16, 0)
    # sample input = ../samples/sample_vggface2_faceid.npy (msdk/README.md)
    ref = np.load(SHARED / "ai8x" / "samples" / "sample_vggface2_faceid.npy")
    assert np.array_equal(proj.sample_input, ref.reshape(proj.sample_input.shape))


def test_saved_network_is_the_same_bytes_wherever_the_project_lies(proj, tmp_path):
    """The card pins the imported network's sha256, so the file must not depend on the machine's paths."""
    from facesdk_backends.max7800x.accel.cproject import import_c_project
    from facesdk_backends.max7800x.accel.network import save_network
    from facesdk.zoo import get_card, sha256_file

    moved = tmp_path / "elsewhere" / "faceid_112"
    shutil.copytree(F112, moved)
    a = save_network(proj.network, tmp_path / "a.npz")
    b = save_network(import_c_project(moved).network, tmp_path / "b.npz")
    assert sha256_file(a) == sha256_file(b)
    assert str(F112.resolve()) not in a.read_bytes().decode("latin-1")
    card = get_card("ai85-faceid-112")
    assert sha256_file(a) == card.artifacts[0].sha256


def test_known_answer_test_can_fail(tmp_path):
    """One changed kernel byte in weights.h (or one bias) makes output words differ."""
    from facesdk_backends.max7800x.accel.cproject import import_c_project, known_answer_test

    for f in ("cnn.c", "sampledata.h", "sampleoutput.h"):
        shutil.copy(F112 / f, tmp_path / f)
    text = (F112 / "weights.h").read_text()
    i = text.index("0x50180000, 0x000000df, ") + len("0x50180000, 0x000000df, ")
    word = int(text[i : i + 10], 16)
    (tmp_path / "weights.h").write_text(text[:i] + f"0x{word ^ 0x7F000000:08x}" + text[i + 10 :])
    kat = known_answer_test(import_c_project(tmp_path))
    assert kat.differing > 0 and not kat.passed


def test_cli_import_c_check_and_run(tmp_path, capsys):
    from facesdk.cli import main

    out = tmp_path / "f112.npz"
    assert main(["max7800x", "import-c", str(F112), "--check", "--out", str(out), "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["known_answer_test"]["differing"] == 0 and d["known_answer_test"]["words"] == 16
    x = tmp_path / "x.npy"
    from facesdk_backends.max7800x.accel.cproject import import_c_project

    np.save(x, import_c_project(F112).sample_input.astype(np.int8))
    assert (
        main(["max7800x", "run", str(out), "--input", str(x), "--out", str(tmp_path / "o.npz"), "--json"])
        == 0
    )
    capsys.readouterr()
    got = np.load(tmp_path / "o.npz")["L17"].reshape(-1)
    want = [int(v, 16) for v in re.findall(r"0x[0-9a-f]{8}", (F112 / "sampleoutput.h").read_text())]
    words = [want[i + 3] for i in range(0, 64, 4)]  # (address, mask, count, word) records
    bytes_ = np.array([(w >> (8 * k)) & 0xFF for w in words for k in range(4)], np.int64)
    assert np.array_equal(got.astype(np.int64) & 0xFF, bytes_)
    # the saved file is deterministic (card sha256) and carries no pickle
    from facesdk_backends.max7800x.accel.network import save_network

    assert (
        save_network(import_c_project(F112).network, tmp_path / "again.npz").read_bytes() == out.read_bytes()
    )


def test_import_c_bad_input_is_typed(tmp_path, capsys):
    from facesdk_backends.max7800x.accel.cproject import import_c_project
    from facesdk_backends.max7800x.accel.network import load_network

    from facesdk.cli import main

    with pytest.raises(ModelNotFoundError):
        import_c_project(tmp_path / "none")
    (tmp_path / "cnn.c").write_text("int main(void) { return 0; }\n")
    (tmp_path / "weights.h").write_text("#define KERNELS { 0 }\n")
    with pytest.raises(ModelFormatError, match="cnn_configure"):
        import_c_project(tmp_path)
    shutil.copy(F112 / "cnn.c", tmp_path / "cnn.c")
    with pytest.raises(ModelFormatError, match="kernels not found"):
        import_c_project(tmp_path)
    assert main(["max7800x", "import-c", str(tmp_path), "--check"]) == 5
    assert "kernels not found" in capsys.readouterr().err
    (tmp_path / "bad.npz").write_bytes(b"PK\x03\x04garbage")
    with pytest.raises(ModelFormatError):
        load_network(tmp_path / "bad.npz")


def test_faceid_112_card_through_face_recognizer(tmp_path, monkeypatch):
    """The card: recipe imports the C project (KAT must pass), the backend runs the .npz network."""
    import facesdk
    from facesdk import zoo
    from facesdk.image import load_image

    monkeypatch.setenv("FACESDK_AI8X_DIR", str(SHARED / "ai8x"))
    monkeypatch.setenv("FACESDK_CACHE", str(tmp_path / "cache"))
    card = zoo.get_card("ai85-faceid-112")
    assert card.embedding_size == 64 and card.template == "ai8x-faceid-112-firmware"
    rec = facesdk.FaceRecognizer(backend="max78000", embedder="ai85-faceid-112")
    d = rec.describe()["embedder"]
    got = (d["model"], d["backend"], d["device"], d["precision"])
    assert got == ("ai85-faceid-112", "max78000", "emulator", "ai8x")
    assert d["arch"] == "faceid_112" and d["fits"]
    photos = SHARED / "data" / "photos" / "knn_examples" / "train"

    def frame(path):  # the camera's 3:4 framing, which TinierSSD (firmware framing) expects
        img = load_image(path)
        h, w = img.shape[:2]
        cw, ch = min(w, round(h * 3 / 4)), min(h, round(w * 4 / 3))
        y0, x0 = (h - ch) // 2, (w - cw) // 2
        return np.ascontiguousarray(img[y0 : y0 + ch, x0 : x0 + cw])

    rec.enroll("obama", frame(photos / "obama" / "obama.jpg"))
    rec.enroll("biden", frame(photos / "biden" / "biden2.jpg"))
    (m,) = rec.identify(frame(SHARED / "data" / "photos" / "obama-240p.jpg"))
    assert m.match.name == "obama"


def test_photo_mode_finds_faces_the_firmware_framing_misses(tmp_path, monkeypatch):
    """Photo mode: 3:4 windows at TinierSSD's scale; firmware framing: the photo stretched to 168x224."""
    import facesdk
    from facesdk.image import load_image, resize

    monkeypatch.setenv("FACESDK_AI8X_DIR", str(SHARED / "ai8x"))
    monkeypatch.setenv("FACESDK_CACHE", str(tmp_path / "cache"))
    rec = facesdk.FaceRecognizer(backend="max78000", embedder="ai85-faceid-112")
    det = rec.detector
    img = resize(load_image(SHARED / "data" / "photos" / "two_people.jpg"), (400, 235))
    assert "firmware framing" in rec.describe()["detector"]["mode"]
    fw = det.detect(img)
    det.photo_mode, det.photo_min_window = True, 0.5
    assert "photo mode" in rec.describe()["detector"]["mode"]
    wins = det.windows(400, 235)
    assert all(0 <= x and 0 <= y and x + w <= 401 and y + h <= 236 for x, y, w, h in wins)
    ph = det.detect(img)
    # the two faces (YuNet: centres near x = 110 and x = 305 at this size)
    centres = sorted((d.box[0] + d.box[2]) / 2 for d in ph)
    assert any(80 < c < 140 for c in centres) and any(270 < c < 340 for c in centres)
    assert len(ph) > len(fw)


@pytest.mark.parametrize(
    ("find", "replace", "match"),
    [
        ("--device MAX78000", "--device MAX78002", "only MAX78000"),
        ("0x50100014) = 0x00010071", "0x50100014) = 0x00010070", "rows register"),  # layer 1 rows
        ("0x50100794) = 0x00026000", "0x50100794) = 0x00426000", "1-bit weights"),  # layer 1 post-proc.
        ("0x50100a14) = 0x0000f800", "0x50100a14) = 0x0000f801", "input passes"),  # layer 1 control 2
        ("0x50100718) = 0xffffffff", "0x50100718) = 0xffff0f0f", "gaps"),  # layer 2 processor enables
    ],
)
def test_register_contradictions_are_typed(tmp_path, find, replace, match):
    """One register of msdk's real cnn.c changed so that it contradicts the layer summary (or names
    another device): the importer refuses it with ModelFormatError naming the cause."""
    from facesdk_backends.max7800x.accel.cproject import import_c_project

    text = (F112 / "cnn.c").read_text()
    assert text.count(find) == 1, find
    (tmp_path / "cnn.c").write_text(text.replace(find, replace))
    shutil.copy(F112 / "weights.h", tmp_path / "weights.h")
    with pytest.raises(ModelFormatError, match=match):
        import_c_project(tmp_path)
