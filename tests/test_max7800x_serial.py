"""MAX7800x serial link: framing, the pyserial driver against the pty device simulator (real tty,
no mocks), link faults, the emulator-backed RUN_IMAGE path, the msdk UART reader, and the CLI."""

from __future__ import annotations

import argparse
import io
import json
import os
import struct
import zlib
from contextlib import redirect_stdout

import numpy as np
import pytest

pytest.importorskip("serial")

from facesdk_backends.max7800x import firmware as dbexport  # noqa: E402
from facesdk_backends.max7800x.board.driver import DeviceRejectedError, Max7800xDevice, open_device  # noqa: E402
from facesdk_backends.max7800x.board.protocol import (  # noqa: E402
    HEADER_SIZE,
    MAX_PAYLOAD,
    SYNC,
    EnrolRequest,
    ErrorCode,
    FrameParser,
    MsgType,
    PixelFormat,
    RunResult,
    decode_image,
    encode_frame,
    encode_image,
)
from facesdk_backends.max7800x.board.simulator import DeviceSimulator, EmulatorCompute, Faults, crop_face  # noqa: E402
from facesdk_backends.max7800x.board.uart import (  # noqa: E402
    ConsoleLine,
    MsdkStreamParser,
    MsdkUartReader,
    UartImage,
    decode_pixels,
    encode_str_frame,
)

from facesdk.errors import (  # noqa: E402
    ConfigError,
    DeviceLinkError,
    FrameError,
    IncompatibleGalleryError,
    LinkTimeoutError,
)

FAST = dict(timeout=0.12, retries=8)


def _emb(rng: np.random.Generator, n: int, d: int = 64) -> list[np.ndarray]:
    return [rng.integers(-90, 90, d).astype(np.int8) for _ in range(n)]


# ============================================================================ framing
def test_frame_roundtrip_through_garbage_and_byte_by_byte():
    frames = [encode_frame(MsgType.INFO, 7), encode_frame(MsgType.ENROL, 65535, bytes(range(256)) * 3)]
    stream = os.urandom(300).replace(SYNC, b"..") + frames[0] + b"\x00\xfa" + frames[1]
    p = FrameParser()
    got = []
    for b in stream:
        got += p.feed(bytes([b]))
    assert [(f.type, f.seq) for f in got] == [(MsgType.INFO, 7), (MsgType.ENROL, 65535)]
    assert got[1].payload == bytes(range(256)) * 3
    assert p.buffered == 0 and p.stats.bytes_skipped >= 300


def test_every_single_bit_flip_is_rejected_and_the_next_frame_survives():
    good = encode_frame(MsgType.ENROL_R, 3, b"payload!")
    nxt = encode_frame(MsgType.INFO_R, 4, b"next")
    for bit in range(len(good) * 8):
        bad = bytearray(good)
        bad[bit // 8] ^= 1 << (bit % 8)
        p = FrameParser()
        out = p.feed(bytes(bad) + nxt)
        assert [f.seq for f in out] == [4], f"bit {bit}"


def test_dropped_byte_and_duplicate_and_cut_frames():
    a, b = encode_frame(MsgType.INFO_R, 1, b"a" * 40), encode_frame(MsgType.INFO_R, 2, b"b" * 40)
    p = FrameParser()
    assert [f.seq for f in p.feed(a[:20] + a[21:] + b)] == [2]
    assert p.stats.bad_crc + p.stats.bad_header >= 1
    assert [f.seq for f in FrameParser().feed(a + a + b)] == [1, 1, 2]
    # a big frame cut off mid-way: the next sync word ends it (a stuffed body holds none), so the
    # small frame behind it comes out at once; a lone cut-off frame is dropped when the line is idle
    big = encode_frame(MsgType.READ_DB_R, 9, b"x" * 5000)
    p = FrameParser()
    assert [f.seq for f in p.feed(big[:300] + b)] == [2]
    assert p.feed(big[:300]) == [] and p.buffered == 300
    assert p.flush_partial() == [] and p.buffered == 0


def test_corrupt_length_does_not_stall_and_buffer_is_bounded():
    f = bytearray(encode_frame(MsgType.INFO_R, 1, b"hi"))
    f[10:14] = struct.pack("<I", 50_000_000)  # absurd length (header CRC now wrong too)
    p = FrameParser()
    assert p.feed(bytes(f) + encode_frame(MsgType.INFO_R, 2))[0].seq == 2
    # a frame with a *valid* header CRC but oversize length is refused as well
    head = struct.pack("<BBHII", 2, 0x81, 5, 0, MAX_PAYLOAD + 1)
    forged = SYNC + head + struct.pack("<H", zlib.crc32(head) & 0xFFFF)
    assert p.feed(forged + encode_frame(MsgType.INFO_R, 6))[0].seq == 6 and p.stats.oversize == 1
    p.feed(os.urandom(1 << 20))
    assert p.buffered <= 2 * (HEADER_SIZE + MAX_PAYLOAD + 4)
    with pytest.raises(FrameError):
        encode_frame(MsgType.RUN_IMAGE, 1, b"\0" * (MAX_PAYLOAD + 1))


def test_payload_codecs_and_validation():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (5, 7, 3), dtype=np.uint8)
    assert np.array_equal(decode_image(encode_image(img)), img)
    q = decode_image(encode_image(img, PixelFormat.RGB565))
    assert np.abs(q.astype(int) - img).max() <= 7
    with pytest.raises(FrameError):
        EnrolRequest(1, "a-name-that-is-too-long", embedding=np.zeros(4, np.int8)).encode()
    with pytest.raises(FrameError):
        EnrolRequest(1, "x", embedding=np.zeros(4, np.float32)).encode()
    with pytest.raises(FrameError):
        RunResult.decode(b"\x01\x00")  # truncated
    with pytest.raises(FrameError):
        encode_image(np.zeros((4, 4), np.uint8))


def test_frame_hidden_in_an_image_is_never_decoded_after_a_line_error():
    """Regression (issue 11): an image whose pixels spell a valid LOAD_DB frame, sent in a RUN_IMAGE
    frame; v1 executed the hidden frame once one line error broke the outer frame."""
    hidden = encode_frame(MsgType.LOAD_DB, 77, b"\x00" * 6, session=5)
    px = np.frombuffer((b"\x10" * 40 + hidden + b"\x20" * 40).ljust(3 * 8 * 12, b"\x30"), np.uint8)
    outer = encode_frame(MsgType.RUN_IMAGE, 1, encode_image(px.reshape(12, 8, 3)), session=5)
    assert SYNC not in outer[2:]  # stuffing: no sync word inside a body
    nxt = encode_frame(MsgType.INFO, 2, session=5)
    for pos in range(len(outer)):  # every byte corrupted (three ways), dropped, or duplicated
        variants = [outer[:pos] + bytes([outer[pos] ^ x]) + outer[pos + 1 :] for x in (0x01, 0x80, 0xFF)]
        variants += [outer[:pos] + outer[pos + 1 :], outer[: pos + 1] + outer[pos:]]
        for v in variants:
            got = FrameParser().feed(v + nxt)
            assert all(f.type != MsgType.LOAD_DB for f in got), pos
            assert got[-1].seq == 2, pos  # the frame behind it survives
    assert [f.type for f in FrameParser().feed(outer)] == [MsgType.RUN_IMAGE]


def test_stuffing_roundtrip_of_every_byte_value_and_byte_by_byte():
    payload = bytes(range(256)) * 4 + b"\xfa\xce\xfb\x01\xfb\x02\xfb"
    wire = encode_frame(MsgType.RUN_TENSOR, 9, payload, session=0xFACEFBFA)
    assert b"\xfa" not in wire[2:]
    p = FrameParser()
    got = [f for b in wire for f in p.feed(bytes([b]))]
    assert [(f.payload, f.session) for f in got] == [(payload, 0xFACEFBFA)] and p.buffered == 0


def test_decode_tensors_refuses_overflowing_and_oversized_shapes():
    """Regression (issue 11): ``np.prod`` of huge dims overflowed int64 and passed the size check."""
    from facesdk_backends.max7800x.board.protocol import decode_tensors, encode_tensors

    t = np.arange(24, dtype=np.int8).reshape(2, 3, 4)
    assert np.array_equal(decode_tensors(encode_tensors([t]))[0], t)
    for dims in ([2**32 - 1] * 8, [2**16, 2**16, 2**16, 2**16], [0xFFFFFFFF, 0], [7, 7]):
        raw = bytes([1, 0, len(dims)]) + struct.pack(f"<{len(dims)}I", *dims) + b"\x01" * 16
        try:
            out = decode_tensors(raw)
        except FrameError:
            continue
        assert out[0].shape == tuple(dims) and out[0].size == 0  # an empty tensor is a right answer


# ============================================================================ driver + simulator
def test_restarted_host_never_gets_an_answer_cached_for_another_session():
    """Regression (issue 11): a restarted host reusing a sequence number got the stale cached answer."""
    e = _emb(np.random.default_rng(11), 1)[0]
    with DeviceSimulator(embedding_size=64) as sim:
        with Max7800xDevice(sim.port, **FAST) as dev:
            seq0 = dev._seq
            assert dev.info().count == 0  # cached by the device under (session, seq, INFO, b"")
            dev.enrol("dora", e)
        with Max7800xDevice(sim.port, **FAST) as dev2:
            dev2._seq = seq0  # the restarted host happens to reuse the same sequence number
            dev2.session = (dev.session + 1) & 0xFFFFFFFF
            assert dev2.info().count == 1
        assert sim.requests_executed["INFO"] == 2


# ============================================================================ driver + simulator
def test_info_enrol_and_read_back_through_a_real_pty():
    rng = np.random.default_rng(1)
    embs = _emb(rng, 7)
    with DeviceSimulator(embedding_size=64, threshold=70) as sim, Max7800xDevice(sim.port, **FAST) as dev:
        assert sim.port.startswith("/dev/")
        info = dev.info()
        assert (info.embedding_size, info.capacity, info.count, info.threshold) == (64, 1024, 0, 70)
        for i, e in enumerate(embs):
            r = dev.enrol(f"person{i}", e)
            assert (r.slot, r.count, r.replayed) == (i, i + 1, False)
        names, rows = dev.read_database(page=3)  # 3 pages
        assert names == [f"person{i}" for i in range(7)]
        assert np.array_equal(rows, dbexport.quantize_db_embeddings(np.stack(embs).astype(np.float32)))
        assert dev.info().count == 7
        assert dev.stats.retries == 0


def test_load_database_replaces_and_identity_rule_is_the_firmwares():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(5, 64))
    rows = dbexport.quantize_db_embeddings(x)
    with DeviceSimulator(embedding_size=64) as sim, Max7800xDevice(sim.port, **FAST) as dev:
        dev.enrol("old", _emb(rng, 1)[0])
        assert dev.load_database(list("abcde"), rows, threshold=64) == 5
        names, back = dev.read_database()
        assert names == list("abcde") and np.array_equal(back, rows)
        assert dev.info().threshold == 64
        # the device's match equals the offline emulation of the firmware rule
        db = dbexport.DotProductDB(list("abcde"), rows, dbexport.get_profile("max78000"), threshold=64)
        probe = np.round(x[3] * 40).astype(np.int8)
        assert sim.state.match(probe)[:2] == (db.identify(probe)[0].slot, db.identify(probe)[0].score)


@pytest.mark.parametrize("action", ["flip", "drop", "cut", "lose", "dup"])
def test_corrupted_answer_is_retried_and_not_executed_twice(action):
    e = _emb(np.random.default_rng(3), 1)[0]
    faults = Faults(tx_script=[action])
    with DeviceSimulator(embedding_size=64, faults=faults) as sim, Max7800xDevice(sim.port, **FAST) as dev:
        r = dev.enrol("alice", e)
        assert r.slot == 0 and r.count == 1
        assert sim.requests_executed["ENROL"] == 1  # the retry was answered from the replay cache
        assert dev.stats.retries == (0 if action == "dup" else 1)
        assert dev.info().count == 1  # a duplicated answer is ignored as stale, not mistaken for INFO
        assert dev.read_database()[0] == ["alice"]


@pytest.mark.parametrize("action", ["flip", "drop", "cut"])
def test_corrupted_request_is_rejected_by_the_device_and_resent(action):
    faults = Faults(rx_script=[action])
    with DeviceSimulator(embedding_size=64, faults=faults) as sim, Max7800xDevice(sim.port, **FAST) as dev:
        dev.enrol("bob", _emb(np.random.default_rng(4), 1)[0])
        assert sim.requests_executed["ENROL"] == 1
        assert dev.stats.retries == 1
        assert sim._parser.stats.rejects + sim._parser.stats.bytes_skipped > 0 or action == "cut"


def test_random_link_faults_lose_or_duplicate_no_enrolment():
    rng = np.random.default_rng(5)
    embs = _emb(rng, 24)
    faults = Faults(seed=11, drop=0.07, flip=0.07, duplicate=0.07, cut=0.07, noise=0.1)
    with DeviceSimulator(embedding_size=64, faults=faults) as sim, Max7800xDevice(sim.port, **FAST) as dev:
        slots = [dev.enrol(f"id{i}", e).slot for i, e in enumerate(embs)]
        names, rows = dev.read_database(page=5)
    assert slots == list(range(24))
    assert names == [f"id{i}" for i in range(24)]
    assert np.array_equal(rows, dbexport.quantize_db_embeddings(np.stack(embs).astype(np.float32)))
    assert sim.requests_executed["ENROL"] == 24
    hit = {k for k, v in faults.counts.items() if v and not k.endswith("_ok")}
    assert {"tx_drop", "tx_flip", "tx_dup", "tx_cut", "rx_drop", "rx_flip"} <= hit, faults.counts
    assert dev.stats.retries > 0


def test_application_retry_with_same_request_id_is_deduplicated():
    e = _emb(np.random.default_rng(6), 1)[0]
    faults = Faults(tx_script=["lose"])  # the device enrols, but its answer never arrives
    with (
        DeviceSimulator(embedding_size=64, faults=faults) as sim,
        Max7800xDevice(sim.port, timeout=0.1, retries=0) as dev,
    ):
        with pytest.raises(LinkTimeoutError):
            dev.enrol("carol", e, request_id=1234)
        r = dev.enrol("carol", e, request_id=1234)  # new seq, same id
        assert r.replayed and r.slot == 0 and r.count == 1
        assert dev.read_database()[0] == ["carol"]


def test_silent_port_gives_a_clear_timeout():
    with (
        DeviceSimulator(faults=Faults(silent=True)) as sim,
        Max7800xDevice(sim.port, timeout=0.1, retries=1) as dev,
    ):
        with pytest.raises(LinkTimeoutError, match="silent"):
            dev.info()
        assert dev.stats.retries == 1


def test_wrong_device_gives_a_clear_timeout():
    with DeviceSimulator(faults=Faults(foreign=True)) as sim:
        with pytest.raises(LinkTimeoutError, match="not facesdk frames.*CNN_3|not facesdk frames"):
            open_device(sim.port, timeout=0.1, retries=1)


def test_disconnect_mid_frame_raises_link_error():
    faults = Faults(tx_script=["cut"], hangup_after=1)
    with DeviceSimulator(embedding_size=64, faults=faults) as sim, Max7800xDevice(sim.port, **FAST) as dev:
        with pytest.raises(DeviceLinkError, match="disconnected"):
            dev.info()


def test_device_errors_and_bad_ports():
    with DeviceSimulator(embedding_size=64, capacity=2) as sim, Max7800xDevice(sim.port, **FAST) as dev:
        with pytest.raises(DeviceRejectedError) as ei:
            dev.enrol("x", np.ones(32, np.int8))
        assert ei.value.code == ErrorCode.BAD_DIMENSION
        with pytest.raises(DeviceRejectedError, match="accelerator"):
            dev.run_image(np.zeros((8, 8, 3), np.uint8))
        dev.enrol("a", np.ones(64, np.int8))
        dev.enrol("b", -np.ones(64, np.int8))
        with pytest.raises(DeviceRejectedError) as ei:
            dev.enrol("c", np.ones(64, np.int8))
        assert ei.value.code == ErrorCode.DB_FULL
        with pytest.raises(ConfigError):
            dev.run_image(np.zeros((400, 300, 3), np.uint8))  # larger than one frame
    with pytest.raises(DeviceLinkError, match="cannot open"):
        Max7800xDevice("/dev/does-not-exist-facesdk")
    with pytest.raises(ConfigError):
        Max7800xDevice("loop://", timeout=0)


# ============================================================================ RUN_IMAGE with the emulator
@pytest.fixture(scope="module")
def faceid_compute(shared):
    ai8x = shared / "ai8x"
    return EmulatorCompute.faceid(
        ai8x / "trained" / "ai85-faceid-qat8-q.pth.tar", ai8x / "networks" / "faceid.yaml"
    )


def _as_image(x: np.ndarray) -> np.ndarray:
    return (np.asarray(x) + 128).astype(np.uint8).transpose(1, 2, 0)


def test_run_image_is_bit_exact_and_identifies(shared, faceid_compute):
    ref = shared / "ai8x" / "reference"
    imgs = {k: _as_image(np.load(ref / f"faceid_{k}_input.npy")) for k in ("sample", "rand0")}
    want = {k: np.load(ref / f"faceid_{k}_embedding512.npy").reshape(-1) for k in imgs}
    with DeviceSimulator(faceid_compute) as sim, Max7800xDevice(sim.port, timeout=0.5, retries=2) as dev:
        assert dev.info().embedding_size == 512
        r = dev.run_image(imgs["sample"])
        assert np.array_equal(r.embedding, want["sample"])  # accelerator output, bit exact over the link
        assert (r.slot, r.name) == (-1, "Unknown") and len(r.detections) == 1
        assert dev.enrol("sample", r.embedding).slot == 0
        assert dev.enrol_image("rand0", imgs["rand0"]).slot == 1
        names, rows = dev.read_database()
        assert np.array_equal(rows[1], dbexport.quantize_db_embeddings(want["rand0"].astype(np.float32))[0])
        for k in imgs:
            r = dev.run_image(imgs[k])
            assert r.name == k and r.score > 70
            assert np.array_equal(r.embedding, want[k])
        # a face not in the database is Unknown under the firmware rule
        other = _as_image(np.load(shared / "ai8x" / "samples" / "sample_faceid.npy"))
        r = dev.run_image(other)
        _slot, mx, known = dbexport.firmware_decision(
            dbexport.dot_product_scores(dbexport.quantize_probe(r.embedding)[None], rows), 70
        )
        assert r.known == bool(known[0]) and r.score == int(mx[0])


def test_run_image_with_a_detector_crops_the_largest_face(faceid_compute, shared):
    chip = _as_image(np.load(shared / "ai8x" / "reference" / "faceid_sample_input.npy"))
    canvas = np.zeros((240, 200, 3), np.uint8)
    canvas[40:200, 60:180] = chip  # 160x120 face at x 60..180, y 40..200

    class Compute:
        embedding_size = faceid_compute.embedding_size
        input_size = faceid_compute.input_size
        embed = staticmethod(faceid_compute.embed)

        @staticmethod
        def detect(image):
            return [((0, 0, 10, 10), 0.9), ((60, 40, 180, 200), 0.8)]

    box = (60, 40, 180, 200)
    expected = faceid_compute.embed(crop_face(canvas, box, faceid_compute.input_size))
    with DeviceSimulator(Compute()) as sim, Max7800xDevice(sim.port, timeout=0.5) as dev:
        r = dev.run_image(canvas)
    assert [d.box for d in r.detections] == [(0, 0, 10, 10), (60, 40, 180, 200)]
    assert np.array_equal(r.embedding, expected)


def _camera_frame(path, size=(180, 240)) -> np.ndarray:
    """A photo as a 3:4 camera frame: centre crop to 3:4, resized (what a board's camera sees)."""
    from PIL import Image

    from facesdk.image import load_image

    img = load_image(path)
    h, w = img.shape[:2]
    cw = min(w, round(h * 3 / 4))
    ch = min(h, round(w * 4 / 3))
    x0, y0 = (w - cw) // 2, (h - ch) // 2
    return np.asarray(Image.fromarray(img[y0 : y0 + ch, x0 : x0 + cw]).resize(size, Image.BILINEAR))


@pytest.fixture(scope="module")
def face_pipeline(shared):
    from facesdk_backends.max7800x.board.simulator import FacePipelineCompute

    return FacePipelineCompute.from_dir(shared / "ai8x", "max78000", generation="faceid")


def _iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def test_run_image_detects_embeds_and_identifies_on_the_emulated_pipeline(shared, face_pipeline):
    """RUN_IMAGE through the real pty: TinierSSD + firmware crop + FaceID, all on the emulator."""
    from facesdk import zoo
    from facesdk.backend import Artifact
    from facesdk.detect import detector_class
    from facesdk.detect.tinierssd import firmware_box, firmware_faceid_crop, firmware_frame
    from facesdk.plugins import get_backend

    photos = shared / "data" / "photos"
    probe = _camera_frame(photos / "obama-240p.jpg", (168, 224))  # the firmware's frame size
    people = {
        "obama": photos / "knn_examples" / "train" / "obama" / "obama.jpg",
        "biden": photos / "knn_examples" / "train" / "biden" / "biden2.jpg",
        "alex": photos / "knn_examples" / "train" / "alex_lacamoire" / "img1.jpg",
        "rose": photos / "knn_examples" / "train" / "rose_leslie" / "img1.jpg",
    }
    # host-side expectation, step by step as the firmware does it
    (det,) = face_pipeline.detect(probe)
    b8 = firmware_box(det.box, (probe.shape[1], probe.shape[0]))
    chip = firmware_faceid_crop(firmware_frame(probe), b8)
    assert chip.shape == (160, 120, 3) and not (chip & np.array([7, 3, 7], np.uint8)).any()  # RGB565 depth
    want = face_pipeline.embed(chip)
    with DeviceSimulator(face_pipeline) as sim, Max7800xDevice(sim.port, timeout=1.0, retries=2) as dev:
        for name, path in people.items():
            dev.enrol_image(name, _camera_frame(path))
        assert dev.read_database()[0] == list(people)
        r = dev.run_image(probe)
        # the same frame sent as RGB565 (what the camera delivers) gives the same answer
        r565 = dev.run_image(probe, pixel_format=PixelFormat.RGB565)
    assert len(r.detections) == 1
    assert np.allclose(r.detections[0].box, det.box, atol=1e-4)
    assert np.array_equal(r.embedding, want)  # the emulated FaceID output, bit-exact over the link
    assert r.name == "obama" and r.score > 70
    assert (r565.name, r565.score) == (r.name, r.score) and np.array_equal(r565.embedding, r.embedding)
    # the emulated TinierSSD box is the face YuNet finds
    card = zoo.get_card("yunet-2023mar")
    yunet = detector_class(card.family)(
        card, get_backend("onnxruntime"), {"main": Artifact(zoo.fetch(card, "onnx"), "onnx", card)}, threads=1
    )
    (yd,) = yunet.detect(probe)
    assert _iou(r.detections[0].box, yd.box) > 0.5


def test_simulator_runs_the_current_msdk_generation_end_to_end(shared):
    """faceid_112 generation: TinierSSD + faceid_112 (from msdk's C project) + the 64-d database."""
    from facesdk_backends.max7800x.board.simulator import FacePipelineCompute

    from facesdk.detect.tinierssd import firmware_box, firmware_faceid_crop, firmware_frame
    from facesdk.gallery import Gallery

    comp = FacePipelineCompute.from_dir(shared / "ai8x", "max78000")
    assert comp.generation == "faceid_112" and comp.input_size == (112, 112) and comp.embedding_size == 64
    photos = shared / "data" / "photos"
    probe = _camera_frame(photos / "obama-240p.jpg", (168, 224))
    people = {
        "obama": photos / "knn_examples" / "train" / "obama" / "obama.jpg",
        "biden": photos / "knn_examples" / "train" / "biden" / "biden2.jpg",
        "rose": photos / "knn_examples" / "train" / "rose_leslie" / "img1.jpg",
    }
    (det,) = comp.detect(probe)
    crop = firmware_faceid_crop(firmware_frame(probe), firmware_box(det.box, (168, 224)), (112, 112))
    want = comp.embed(crop)
    with DeviceSimulator(comp) as sim, Max7800xDevice(sim.port, timeout=2.0, retries=2) as dev:
        assert dev.info().embedding_size == 64
        for name, path in people.items():
            dev.enrol_image(name, _camera_frame(path))
        names, rows = dev.read_database()
        r = dev.run_image(probe)
    assert names == list(people) and rows.shape == (3, 64)
    assert np.array_equal(r.embedding, want) and r.embedding.shape == (64,)
    assert r.name == "obama" and r.score > 70
    # the device's rows are what the firmware database export writes for the same model's gallery
    g = Gallery("ai85-faceid-112", 64)
    for n, row in zip(names, rows):
        g.add(n, row.astype(np.float32))
    db = dbexport.DotProductDB.from_gallery(g)
    assert np.array_equal(db.weights, rows)
    with pytest.raises(IncompatibleGalleryError, match="ai85-faceid-112"):
        dbexport.DotProductDB.from_gallery(Gallery("ai85-faceid", 64))


def test_face_pipeline_compute_host_mode_and_errors(shared, face_pipeline):
    from facesdk_backends.max7800x.board.simulator import FacePipelineCompute

    probe = _camera_frame(shared / "data" / "photos" / "obama-240p.jpg", (168, 224))
    host = FacePipelineCompute(
        face_pipeline.model, face_pipeline.facedet, firmware_exact=False, nms=face_pipeline.nms
    )
    dets = host.detect(probe)
    (fw,) = face_pipeline.detect(probe)
    assert len(dets) >= 1 and _iou(dets[0].box, fw.box) > 0.7 and dets[0].score > fw.score
    chip = host.crop(probe, dets[0].box)
    assert chip.shape == (160, 120, 3) and (chip & np.array([7, 3, 7], np.uint8)).any()  # RGB888, not RGB565
    assert host.embed(chip).shape == (512,)
    assert face_pipeline.detect(np.zeros((224, 168, 3), np.uint8)) == []  # a black frame: no face
    with pytest.raises(ConfigError):
        FacePipelineCompute.from_dir(shared / "ai8x", "max78001")


# ============================================================================ msdk UART output
def _demo_stream(frames: list[np.ndarray]) -> bytes:
    out = b"\r\nMAX78000 FaceID demo\r\nI[main      :  99] Init done\r\n"
    for i, f in enumerate(frames):
        out += encode_str_frame(f, "RGB565")
        out += b"D[faceid    : 312] CNN_3 max value: %d \r\n" % (80 + i)
        if i == 0:
            out += b"I[faceid    : 316] FaceID result: subject id: 3 \r\n"
            out += b"I[faceid    : 318] FaceID result: subject name: Alice \r\n"
        else:
            out += b"I[faceid    : 321] FaceID result: Unknown subject\r\n"
    return out


def test_uart_reader_captures_frames_and_results_from_a_pty(tmp_path):
    rng = np.random.default_rng(7)
    frames = [(rng.integers(0, 32, (24, 32, 3)) * 8).astype(np.uint8) for _ in range(2)]  # RGB565-exact
    frames = [np.concatenate([f[..., :1], (f[..., 1:2] // 4) * 4, f[..., 2:]], -1) for f in frames]
    with DeviceSimulator(faults=Faults(silent=True)) as sim, MsdkUartReader(sim.port) as rd:
        sim.write_raw(_demo_stream(frames) + b"tail\r\n")
        recs = rd.capture(tmp_path, count=2, timeout=5, settle=0.2)
    from PIL import Image

    assert len(recs) == 2
    for rec, f in zip(recs, frames):
        got = np.asarray(Image.open(rec["image"]))
        ref = decode_pixels(encode_str_frame(f, "RGB565")[5 + 4 + 1 + 6 + 4 :], 32, 24, "RGB565")
        assert rec["pixel_format"] == "RGB565" and got.shape == (24, 32, 3) and np.array_equal(got, ref)
    assert {"kind": "name", "name": "Alice"} in recs[0]["results"]
    assert {"kind": "score", "score": 80} in recs[0]["results"]
    assert {"kind": "unknown", "name": "Unknown"} in recs[1]["results"]


def test_uart_parser_formats_and_garbage():
    p = MsdkStreamParser()
    px = np.array([[[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 255]]], np.uint8)
    ev = p.feed(b"*STR*zz junk line\r\n" + encode_str_frame(px, "RGB565") + encode_str_frame(px, "RGB888"))
    assert isinstance(ev[0], ConsoleLine) and "junk" in ev[0].text
    imgs = [e for e in ev if isinstance(e, UartImage)]
    assert [i.pixel_format for i in imgs] == ["RGB565", "RGB888"]
    assert np.array_equal(imgs[0].to_rgb(), px) and np.array_equal(imgs[1].to_rgb(), px)
    # YUV422 as msdk's converter: Y U Y V; grey when U = V = 128
    yuv = decode_pixels(bytes([100, 128, 200, 128]), 2, 1, "YUV422")
    assert yuv.tolist() == [[[100, 100, 100], [200, 200, 200]]]
    assert decode_pixels(bytes([7]), 1, 1, "GRAYSCALE").tolist() == [[[7, 7, 7]]]
    with pytest.raises(FrameError):
        decode_pixels(b"\0", 4, 4, "RGB565")
    with pytest.raises(FrameError):
        decode_pixels(b"\0" * 64, 4, 4, "CMYK")


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


def test_cli_serial_info(tmp_path):
    with DeviceSimulator(embedding_size=64) as sim:
        rc, out = _cli(["--json", "serial-info", sim.port, "--timeout", "0.2"])
    assert rc == 0
    d = json.loads(out)
    assert d["embedding_size"] == 64 and d["port"] == sim.port and d["device"].startswith("MAX78000")
    with DeviceSimulator(faults=Faults(silent=True)) as sim:
        with pytest.raises(LinkTimeoutError) as ei:
            _cli(["serial-info", sim.port, "--timeout", "0.05", "--retries", "0"])
        assert ei.value.exit_code == 8


def test_facesdk_command_line_serial_info(capsys):
    from facesdk.cli import main

    with DeviceSimulator(embedding_size=64) as sim:
        assert main(["max7800x", "serial-info", sim.port, "--json", "--timeout", "0.2"]) == 0
        assert json.loads(capsys.readouterr().out)["capacity"] == 1024
    with DeviceSimulator(faults=Faults(foreign=True)) as sim:
        assert main(["max7800x", "serial-info", sim.port, "--timeout", "0.05", "--retries", "0"]) == 8
        assert "not facesdk frames" in capsys.readouterr().err
    with DeviceSimulator(faults=Faults(silent=True)) as sim:
        assert (
            main(["max7800x", "serial-info", sim.port, "--json", "--timeout", "0.05", "--retries", "1"]) == 8
        )
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "silent" in err, err
    assert main(["max7800x", "serial-info", "/dev/does-not-exist-facesdk", "--json"]) == 8
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "/dev/does-not-exist-facesdk" in err and "Traceback" not in err


def test_backend_session_over_serial_runs_on_the_board(shared, faceid_compute):
    from facesdk.backend import Artifact
    from facesdk.plugins import get_backend

    ai8x = shared / "ai8x"
    x = np.load(ai8x / "reference" / "faceid_sample_input.npy")
    with DeviceSimulator(faceid_compute) as sim:
        sess = get_backend("max78000").load(
            Artifact(path=ai8x / "trained" / "ai85-faceid-qat8-q.pth.tar", format="ai8x"),
            device=f"serial:{sim.port}",
            yaml=ai8x / "networks" / "faceid.yaml",
            timeout=0.5,
        )
        with sess:
            assert sess.device == f"serial:{sim.port}"
            (out,) = sess.run(np.stack([x, x]))
        assert out.shape == (2, 512, 1, 1) and out.dtype == np.int8
        assert np.array_equal(
            out[1].reshape(-1), np.load(ai8x / "reference" / "faceid_sample_embedding512.npy")
        )
        assert sim.requests_executed["RUN_TENSOR"] == 2


def test_cli_simulate_serves_a_pty_that_serial_info_reaches(shared):
    """`facesdk max7800x simulate` as a process: its port answers `serial-info`; bad input is one line."""
    import json as _json
    import subprocess
    import sys
    import time

    env = dict(os.environ, FACESDK_AI8X_DIR=str(shared / "ai8x"))
    cmd = [sys.executable, "-m", "facesdk", "--json", "max7800x", "simulate", "--duration", "60"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        buf = ""
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and "}" not in buf:
            line = proc.stdout.readline()
            if not line:
                break
            buf += line
        info = _json.loads(buf)
        assert info["embedding_size"] == 64 and info["generation"] == "faceid_112"
        with Max7800xDevice(info["port"], timeout=2.0, retries=2) as dev:
            assert dev.info().embedding_size == 64
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    r = subprocess.run(
        [sys.executable, "-m", "facesdk", "max7800x", "simulate", "--chip", "max78001", "--duration", "0"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert r.returncode == 2 and "max78001" in r.stderr and "Traceback" not in r.stderr


def test_serial_device_port_keeps_its_case(shared, faceid_compute, tmp_path):
    """Regression (issue 11): device="serial:/dev/ttyACM0" was lower-cased and could not be opened."""
    from facesdk.backend import Artifact
    from facesdk.plugins import get_backend

    ai8x = shared / "ai8x"
    with DeviceSimulator(faceid_compute) as sim:
        link = tmp_path / "ttyACM_Board0"  # a port name with capitals (like /dev/ttyACM0)
        link.symlink_to(sim.port)
        sess = get_backend("max78000").load(
            Artifact(path=ai8x / "trained" / "ai85-faceid-qat8-q.pth.tar", format="ai8x"),
            device=f"SERIAL:{link}",
            yaml=ai8x / "networks" / "faceid.yaml",
            timeout=0.5,
        )
        with sess:
            assert str(link) in sess.device
