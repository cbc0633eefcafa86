"""A MAX7800x facesdk-firmware simulator on a pseudo-terminal, with fault injection.

:class:`DeviceSimulator` opens ``os.openpty()``, puts the slave side in raw mode, and serves the
protocol of ``PROTOCOL.md`` from a thread on the master side. A host opens
:attr:`DeviceSimulator.port` (``/dev/pts/N``) with pyserial exactly as it would open
``/dev/ttyACM0``, so tests drive the real driver through a real tty.

The simulated device keeps a dot-product database (int8 rows, names, threshold) and computes
with a *compute* object — normally the bit-exact accelerator emulator — for ``RUN_IMAGE`` and
image enrolment. It reproduces the firmware's matching rule (:mod:`..firmware`). It deduplicates
enrolments by request id and answers a repeated request (same session, seq and bytes) from a cache without
executing it again, so retries are safe.

:class:`Faults` injects link faults: dropped bytes, flipped bits, duplicated frames, a transmitter
that stops mid-frame ("cut"), noise, a silent device, a device speaking another protocol (the msdk
demo's console output), and a hang-up.
"""

from __future__ import annotations

import collections
import hashlib
import logging
import os
import random
import select
import threading
import time
import tty
from dataclasses import dataclass, field
from typing import Any, Protocol, Sequence, runtime_checkable

import numpy as np

from facesdk.errors import ConfigError, FaceSDKError

from .. import firmware as fwdb
from .protocol import (
    DetectionRecord,
    DeviceInfo,
    EnrolRequest,
    EnrolResult,
    ErrorCode,
    ErrorReply,
    Frame,
    FrameParser,
    LoadDbRequest,
    MsgType,
    ReadDbPage,
    ReadDbRequest,
    RunResult,
    decode_image,
    decode_tensors,
    encode_frame,
    encode_tensors,
    response_type,
)

__all__ = [
    "Compute",
    "EmulatorCompute",
    "FacePipelineCompute",
    "Faults",
    "DeviceSimulator",
    "DeviceState",
    "crop_face",
    "PROTOCOL_VERSION",
]

log = logging.getLogger(__name__)

PROTOCOL_VERSION = 2
_REPLAY_CACHE = 32
_ENROL_IDS = 4096


@runtime_checkable
class Compute(Protocol):
    """What the simulated device computes with.

    ``embed(chip)`` returns the embedding network's int8 output for an ``HxWx3`` uint8 RGB chip of
    size :attr:`input_size` ``(h, w)``. ``detect(image)`` (optional) returns detections with
    ``.box`` (x1, y1, x2, y2 pixels) and ``.score``, or ``(box, score)`` pairs. ``crop(image, box)``
    (optional) makes the chip for a detection; without it the simulator uses :func:`crop_face`.
    """

    embedding_size: int
    input_size: tuple[int, int]

    def embed(self, chip: np.ndarray) -> np.ndarray: ...


class EmulatorCompute:
    """:class:`Compute` backed by the bit-exact accelerator emulator (:mod:`.emulator`).

    The chip is fed as the demo firmware feeds the FIFO: channel ``c`` = ``rgb[..., c] - 128``
    (RGB order, CHW). ``detector`` (optional) is any callable ``image -> detections``.

    Args:
        model: an emulator ``Model`` whose input is ``(3, h, w)`` and whose first output is the
            embedding.
    """

    def __init__(self, model: Any, detector: Any = None) -> None:
        self.model = model
        c, h, w = tuple(model.input_shape)
        if c != 3:
            raise ConfigError(f"the embedding network must take 3 channels, not {c}")
        self.input_size = (int(h), int(w))
        out = model.output_shapes()[model.output_layers[0]]
        self.embedding_size = int(np.prod(out))
        if detector is not None:
            self.detect = detector

    @classmethod
    def faceid(
        cls,
        checkpoint: str | os.PathLike,
        yaml: str | os.PathLike,
        chip: str = "max78000",
        detector: Any = None,
    ) -> "EmulatorCompute":
        """Load an ai8x FaceID checkpoint + network YAML into the emulator."""
        from ..accel.emulator import load_model

        return cls(load_model(checkpoint, yaml, chip), detector)

    def run_tensor(self, x: np.ndarray) -> list[np.ndarray]:
        """Run the network on one ``[C, H, W]`` input (for ``RUN_TENSOR``)."""
        return self.model.run(x)

    def embed(self, chip: np.ndarray) -> np.ndarray:
        """int8 embedding of an ``h x w x 3`` uint8 RGB chip."""
        if chip.shape != (*self.input_size, 3) or chip.dtype != np.uint8:
            raise ConfigError(f"chip must be {self.input_size + (3,)} uint8, got {chip.dtype} {chip.shape}")
        x = chip.astype(np.int16).transpose(2, 0, 1) - 128
        return np.asarray(self.model.run(x)[0]).reshape(-1).astype(np.int8)


class FacePipelineCompute(EmulatorCompute):
    """The whole MAX7800x FaceID pipeline on the emulator: TinierSSD detection, the FaceID crop,
    the FaceID network — what a board running the demo firmware computes.

    With ``firmware_exact`` (default) it follows the msdk demo firmware step by step
    (:mod:`facesdk.detect.tinierssd`: 168×224 RGB565 frame, one box decoded as ``post_process.c``
    does, integer box, nearest-neighbour stretch to the FaceID input: 112×112 for faceid_112, 120×160
    for the original network); otherwise the host decoding (all boxes after NMS) and the host crop
    (``ai8x-faceid`` aligner).

    Args:
        faceid: emulator ``Model`` of the FaceID network (input ``(3, 112, 112)`` or ``(3, 160, 120)``).
        facedet: emulator ``Model`` of TinierSSD (input ``(3, 224, 168)``; 2 location heads, then 2
            score heads).
        nms: ``min_score``, ``max_overlap``, ``top_k`` for the host decoding.
    """

    def __init__(
        self, faceid: Any, facedet: Any, *, firmware_exact: bool = True, nms: dict[str, float] | None = None
    ) -> None:
        super().__init__(faceid)
        from facesdk.detect import tinierssd

        self._ssd = tinierssd
        self.facedet = facedet
        c, h, w = tuple(facedet.input_shape)
        if c != 3:
            raise ConfigError(f"the detector must take 3 channels, not {c}")
        self.frame_size = (int(w), int(h))
        self.priors = tinierssd.tinierssd_priors()
        self.firmware_exact = bool(firmware_exact)
        self.nms = dict(nms or {"min_score": 0.5, "max_overlap": 0.3, "top_k": 20})

    #: msdk demo generations :meth:`from_dir` can load: FaceID network source and embedding size.
    GENERATIONS = {
        "faceid_112": "msdk/faceid_112 (synthesized C project, 112x112 -> 64-d; current msdk demo)",
        "faceid": "trained/ai85-faceid-qat8-q.pth.tar (120x160 -> 512-d; the original demo)",
    }

    @classmethod
    def from_dir(
        cls,
        ai8x_dir: str | os.PathLike,
        chip: str = "max78000",
        *,
        firmware_exact: bool = True,
        threads: int | None = 1,
        generation: str = "faceid_112",
    ) -> "FacePipelineCompute":
        """Load one msdk demo generation from an ai8x folder laid out as ``../shared/ai8x``.

        ``generation="faceid_112"`` (default, the current demo): TinierSSD + faceid_112 imported from
        ``msdk/faceid_112`` (its known-answer test must pass) — 64-d embeddings, consistent with the
        64-d dot-product database the simulator keeps. ``"faceid"``: TinierSSD + the original 512-d
        ai85 FaceID checkpoint (the database then holds 512-d rows, which no firmware uses).
        TinierSSD is the ai85/ai87 checkpoint by ``chip``.
        """
        from pathlib import Path

        from facesdk.detect.tinierssd import load_detection_params

        from ..accel.emulator import Model, load_model
        from ..chips import chip_key, chip_prefix

        if generation not in cls.GENERATIONS:
            raise ConfigError(f"unknown generation {generation!r}; use one of {sorted(cls.GENERATIONS)}")
        d = Path(ai8x_dir)
        pre = chip_prefix(chip)
        det = load_model(
            d / "trained" / f"{pre}-facedet-tinierssd-qat8-q.pth.tar",
            d / "networks" / f"{pre}-facedet-tinierssd.yaml",
            chip,
            threads=threads,
        )
        if generation == "faceid_112":
            from ..accel.cproject import import_c_project, known_answer_test

            proj = import_c_project(d / "msdk" / "faceid_112")
            fid = Model(proj.network, chip=chip_key(chip), threads=threads)
            kat = known_answer_test(proj, fid)
            if not kat.passed:
                raise ConfigError(
                    f"faceid_112 known-answer test failed: {kat.differing}/{kat.words} words differ"
                )
        else:
            fid = load_model(
                d / "trained" / "ai85-faceid-qat8-q.pth.tar",
                d / "networks" / "faceid.yaml",
                chip,
                threads=threads,
            )
        params = d / "networks" / "obj_detection_params_facedet.yaml"
        nms = load_detection_params(params) if params.is_file() else None
        out = cls(fid, det, firmware_exact=firmware_exact, nms=nms)
        out.generation = generation
        return out

    def frame(self, image: np.ndarray) -> np.ndarray:
        """The detector's input image (168×224; RGB565 depth when firmware-exact)."""
        if self.firmware_exact:
            return self._ssd.firmware_frame(image, self.frame_size)
        from facesdk.image import resize

        return resize(image, self.frame_size)

    def detect(self, image: np.ndarray) -> list[Any]:
        """Faces in an ``HxWx3`` uint8 RGB image, boxes in its pixels (one box when firmware-exact)."""
        from facesdk.detect.base import Detection

        fr = self.frame(image)
        heads = self.facedet.run(fr.astype(np.int16).transpose(2, 0, 1) - 128)
        n = len(heads) // 2
        locs, scores = self._ssd.heads_to_priors(heads[:n], heads[n:])
        h, w = image.shape[:2]
        fw, fh = self.frame_size
        if self.firmware_exact:
            got = self._ssd.decode_tinierssd_firmware(locs, scores, frame=self.frame_size)
            if got is None:
                return []
            b8, score = got
            box = b8.astype(np.float32) * np.array([w / fw, h / fh, w / fw, h / fh], np.float32)
            return [Detection(box=box, score=score)]
        boxes, sc = self._ssd.decode_tinierssd(locs, scores, self.priors, **self.nms)
        scale = np.array([w, h, w, h], np.float32)
        return [Detection(box=b * scale, score=float(s)) for b, s in zip(boxes, sc)]

    def crop(self, image: np.ndarray, box: Sequence[float]) -> np.ndarray:
        """The FaceID chip (``input_size``) for a detection box in image pixels."""
        ih, iw = self.input_size
        if self.firmware_exact:
            h, w = image.shape[:2]
            b8 = self._ssd.firmware_box(np.asarray(box, np.float64), (w, h), self.frame_size)
            return self._ssd.firmware_faceid_crop(self.frame(image), b8, (iw, ih))
        return self._ssd.ai8x_faceid_crop(image, np.asarray(box, np.float32), None, (iw, ih))


def crop_face(image: np.ndarray, box: Sequence[float], size: tuple[int, int]) -> np.ndarray:
    """Square the box around its centre (as the demo firmware does), crop it with zero padding
    outside the image, and resize to ``size`` (h, w) by nearest neighbour."""
    h_img, w_img = image.shape[:2]
    x1, y1, x2, y2 = (float(v) for v in box)
    side = max(x2 - x1, y2 - y1, 1.0)
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    x0, y0 = cx - side / 2, cy - side / 2
    oh, ow = size
    ys = np.floor(y0 + (np.arange(oh) + 0.5) * side / oh).astype(int)
    xs = np.floor(x0 + (np.arange(ow) + 0.5) * side / ow).astype(int)
    vy = (ys >= 0) & (ys < h_img)
    vx = (xs >= 0) & (xs < w_img)
    out = np.zeros((oh, ow, 3), np.uint8)
    out[np.ix_(vy, vx)] = image[np.ix_(ys[vy], xs[vx])]
    return out


@dataclass
class Faults:
    """Link faults injected by the simulator.

    Probabilities apply per frame sent (``tx``) or per chunk received (``rx``); the ``*_script``
    lists, when given, are consumed first, one action per frame/chunk: ``"ok"``, ``"drop"`` (lose
    1-3 bytes), ``"flip"`` (flip one bit), ``"dup"`` (send twice), ``"cut"`` (send part of the frame,
    then go quiet for :attr:`cut_pause` s: a disconnect mid-frame), ``"lose"`` (the whole frame).
    """

    seed: int = 0
    drop: float = 0.0
    flip: float = 0.0
    duplicate: float = 0.0
    cut: float = 0.0
    noise: float = 0.0
    rx: bool = True
    tx: bool = True
    tx_script: list[str] = field(default_factory=list)
    rx_script: list[str] = field(default_factory=list)
    cut_pause: float = 0.05
    silent: bool = False
    foreign: bool = False
    hangup_after: int | None = None

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)
        self._tx = collections.deque(self.tx_script)
        self._rx = collections.deque(self.rx_script)
        self.counts: collections.Counter[str] = collections.Counter()

    def _pick(self, script: collections.deque, dup_ok: bool) -> str:
        if script:
            return script.popleft()
        r = self._rng.random()
        for name, p in (
            ("drop", self.drop),
            ("flip", self.flip),
            ("cut", self.cut),
            ("dup", self.duplicate if dup_ok else 0.0),
        ):
            if r < p:
                return name
            r -= p
        return "ok"

    def _mangle(self, data: bytes, action: str) -> bytes:
        b = bytearray(data)
        if action == "drop" and b:
            for _ in range(self._rng.randint(1, min(3, len(b)))):
                del b[self._rng.randrange(len(b))]
        elif action == "flip" and b:
            i = self._rng.randrange(len(b))
            b[i] ^= 1 << self._rng.randrange(8)
        return bytes(b)

    def tx_frame(self, data: bytes) -> list[tuple[bytes, float]]:
        """Bytes to send for one outgoing frame, as (chunk, pause-after) pairs."""
        if not self.tx:
            return [(data, 0.0)]
        action = self._pick(self._tx, dup_ok=True)
        self.counts["tx_" + action] += 1
        out: list[tuple[bytes, float]] = []
        if self.noise and self._rng.random() < self.noise:
            out.append((bytes(self._rng.randrange(256) for _ in range(self._rng.randint(1, 16))), 0.0))
        if action == "dup":
            out += [(data, 0.0), (data, 0.0)]
        elif action == "cut":
            out.append((data[: self._rng.randint(1, max(1, len(data) - 1))], self.cut_pause))
        elif action == "lose":
            pass
        else:
            out.append((self._mangle(data, action), 0.0))
        return out

    def rx_chunk(self, data: bytes) -> bytes:
        """Bytes the device 'hears' of a received chunk."""
        if not self.rx:
            return data
        action = self._pick(self._rx, dup_ok=False)
        self.counts["rx_" + action] += 1
        if action in ("cut", "lose"):
            return data[: self._rng.randint(0, len(data) - 1)] if action == "cut" and data else b""
        return self._mangle(data, action)


@dataclass
class DeviceState:
    """The simulated device's database."""

    embedding_size: int
    capacity: int
    threshold: int
    output_shift: int = -1
    names: list[str] = field(default_factory=list)
    rows: list[np.ndarray] = field(default_factory=list)

    @property
    def weights(self) -> np.ndarray:
        if not self.rows:
            return np.zeros((0, self.embedding_size), np.int8)
        return np.stack(self.rows)

    def match(self, emb: np.ndarray) -> tuple[int, int, str]:
        """Firmware rule: (slot or -1, int8 score, name)."""
        if not self.rows:
            return -1, 0, fwdb.UNKNOWN
        q = fwdb.quantize_probe(emb)
        scores = fwdb.dot_product_scores(q[None], self.weights, self.output_shift)
        slot, mx, known = fwdb.firmware_decision(scores, self.threshold)
        s, m = int(slot[0]), int(mx[0])
        return (s, m, self.names[s]) if known[0] else (-1, m, fwdb.UNKNOWN)


class DeviceSimulator:
    """A simulated facesdk MAX7800x firmware behind a pseudo-terminal.

    Args:
        compute: the accelerator (emulator) used for ``RUN_IMAGE`` and image enrolment; ``None``
            makes those requests fail with an ``ERROR`` frame.
        embedding_size: database row width (default: the compute's, else 64).
        capacity, threshold, output_shift: the dot-product layer (MAX78000 demo defaults).
        faults: link faults to inject.
        device, firmware: strings reported by ``INFO``.

    Use as a context manager, or call :meth:`start` / :meth:`stop`.
    """

    def __init__(
        self,
        compute: Any = None,
        *,
        embedding_size: int | None = None,
        capacity: int = 1024,
        threshold: int = 70,
        output_shift: int = -1,
        faults: Faults | None = None,
        device: str = "MAX78000 (simulated)",
        firmware: str = "facesdk-sim 1.0",
        read_page: int = 256,
    ) -> None:
        dim = embedding_size or getattr(compute, "embedding_size", None) or 64
        self.compute = compute
        self.state = DeviceState(int(dim), capacity, threshold, output_shift)
        self.faults = faults or Faults()
        self.device, self.firmware = device, firmware
        self.read_page = read_page
        self._enrolled: collections.OrderedDict[int, EnrolResult] = collections.OrderedDict()
        #: (session, seq, type, payload digest) → the response frames sent for it
        self._replay: collections.OrderedDict[tuple[int, int, int, bytes], list[bytes]] = (
            collections.OrderedDict()
        )
        self._parser = FrameParser()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._master, self._slave = os.openpty()
        tty.setraw(self._slave)
        os.set_blocking(self._master, False)
        self.port = os.ttyname(self._slave)
        self.frames_sent = 0
        self.requests_executed: collections.Counter[str] = collections.Counter()
        self._closed = False

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> "DeviceSimulator":
        """Start serving in a daemon thread; returns self."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._serve, name=f"max7800x-sim {self.port}", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        """Stop the thread and close the pseudo-terminal."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
        self._close_fds()

    def hangup(self) -> None:
        """Pull the cable: close the pseudo-terminal now."""
        self._stop.set()
        self._close_fds()

    def _close_fds(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            for fd in (self._master, self._slave):
                try:
                    os.close(fd)
                except OSError:
                    pass

    def __enter__(self) -> "DeviceSimulator":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ I/O
    def write_raw(self, data: bytes, pause: float = 0.0) -> None:
        """Write bytes to the host side as they are (non-blocking fd, waits for room)."""
        view = memoryview(data)
        while view and not self._stop.is_set():
            try:
                n = os.write(self._master, view)
                view = view[n:]
            except BlockingIOError:
                select.select([], [self._master], [], 0.05)
            except OSError:
                return
        if pause:
            time.sleep(pause)

    def _send(self, frame: bytes) -> None:
        for chunk, pause in self.faults.tx_frame(frame):
            self.write_raw(chunk, pause)
        self.frames_sent += 1
        if self.faults.hangup_after is not None and self.frames_sent >= self.faults.hangup_after:
            log.info("simulator %s: hanging up after %d frames", self.port, self.frames_sent)
            self.hangup()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                r, _, _ = select.select([self._master], [], [], 0.05)
            except (OSError, ValueError):
                return
            if not r:
                continue
            try:
                data = os.read(self._master, 1 << 16)
            except BlockingIOError:
                continue
            except OSError:
                return
            if not data:
                continue
            if self.faults.silent:
                continue
            if self.faults.foreign:
                self._speak_foreign()
                continue
            data = self.faults.rx_chunk(data)
            for frame in self._parser.feed(data):
                try:
                    self._handle(frame)
                except Exception:  # a simulator bug must not kill the link silently
                    log.exception("simulator failed on frame type 0x%02x", frame.type)
                    self._send(
                        encode_frame(
                            MsgType.ERROR,
                            frame.seq,
                            ErrorReply(frame.type, ErrorCode.INTERNAL, "internal error").encode(),
                            frame.session,
                        )
                    )

    def _speak_foreign(self) -> None:
        """Answer like the stock msdk FaceID demo: console lines, no frames."""
        self.write_raw(
            b"D[faceid    : 312] CNN_3 max value: 12 \r\n"
            b"I[faceid    : 318] FaceID result: Unknown subject\r\n"
        )

    # ------------------------------------------------------------------ requests
    def _handle(self, frame: Frame) -> None:
        key = (frame.session, frame.seq, frame.type, hashlib.blake2b(frame.payload, digest_size=16).digest())
        cached = self._replay.get(key)
        if cached is not None:  # a retry of a request already executed: same answer, no re-execution
            log.debug("replaying response to seq %d", frame.seq)
            for f in cached:
                self._send(f)
            return
        try:
            typ = MsgType(frame.type)
            self.requests_executed[typ.name] += 1
            payload = self._execute(typ, frame.payload)
            out = encode_frame(response_type(frame.type), frame.seq, payload, frame.session)
        except ValueError:
            out = encode_frame(
                MsgType.ERROR,
                frame.seq,
                ErrorReply(
                    frame.type, ErrorCode.UNKNOWN_TYPE, f"unknown request type 0x{frame.type:02x}"
                ).encode(),
                frame.session,
            )
        except _DeviceError as exc:
            out = encode_frame(
                MsgType.ERROR, frame.seq, ErrorReply(frame.type, exc.code, str(exc)).encode(), frame.session
            )
        except FaceSDKError as exc:  # FrameError etc. from decoding the payload
            out = encode_frame(
                MsgType.ERROR,
                frame.seq,
                ErrorReply(frame.type, ErrorCode.BAD_REQUEST, str(exc)).encode(),
                frame.session,
            )
        self._replay[key] = [out]
        while len(self._replay) > _REPLAY_CACHE:
            self._replay.popitem(last=False)
        self._send(out)

    def _execute(self, typ: MsgType, payload: bytes) -> bytes:
        st = self.state
        if typ == MsgType.INFO:
            return DeviceInfo(
                PROTOCOL_VERSION,
                st.embedding_size,
                st.capacity,
                len(st.names),
                st.threshold,
                st.output_shift,
                self.device,
                self.firmware,
            ).encode()
        if typ == MsgType.LOAD_DB:
            req = LoadDbRequest.decode(payload)
            if len(req.names) > st.capacity:
                raise _DeviceError(ErrorCode.DB_FULL, f"{len(req.names)} slots exceed capacity {st.capacity}")
            if len(req.names) and req.embeddings.shape[1] != st.embedding_size:
                raise _DeviceError(
                    ErrorCode.BAD_DIMENSION,
                    f"rows are {req.embeddings.shape[1]}-d, device takes {st.embedding_size}-d",
                )
            st.names = list(req.names)
            st.rows = [r.copy() for r in req.embeddings]
            st.threshold = int(req.threshold)
            self._enrolled.clear()
            return len(st.names).to_bytes(2, "little")
        if typ == MsgType.ENROL:
            req = EnrolRequest.decode(payload)
            done = self._enrolled.get(req.request_id)
            if done is not None:
                return EnrolResult(done.request_id, done.slot, len(st.names), True).encode()
            emb = req.embedding if req.embedding is not None else self._embed(req.image)[1]
            if emb is None:
                raise _DeviceError(ErrorCode.NO_FACE, "no face in the enrolment image")
            if emb.size != st.embedding_size:
                raise _DeviceError(
                    ErrorCode.BAD_DIMENSION, f"embedding is {emb.size}-d, device takes {st.embedding_size}-d"
                )
            if len(st.names) >= st.capacity:
                raise _DeviceError(ErrorCode.DB_FULL, f"database full ({st.capacity} slots)")
            if not np.any(emb):
                raise _DeviceError(ErrorCode.BAD_REQUEST, "all-zero embedding")
            row = fwdb.quantize_db_embeddings(emb.astype(np.float32))[0]  # as db_gen: scale 256
            st.names.append(req.name)
            st.rows.append(row)
            res = EnrolResult(req.request_id, len(st.names) - 1, len(st.names), False)
            self._enrolled[req.request_id] = res
            while len(self._enrolled) > _ENROL_IDS:
                self._enrolled.popitem(last=False)
            return res.encode()
        if typ == MsgType.RUN_IMAGE:
            img = decode_image(payload)
            dets, emb = self._embed(img)
            if emb is None:
                return RunResult(dets, np.zeros(0, np.int8), -1, 0, "").encode()
            slot, score, name = st.match(emb)
            return RunResult(dets, emb.astype(np.int8), slot, score, name).encode()
        if typ == MsgType.RUN_TENSOR:
            (x,) = decode_tensors(payload)
            run = getattr(self.compute, "run_tensor", None)
            if run is None:
                raise _DeviceError(ErrorCode.INTERNAL, "this simulated device has no accelerator (compute)")
            try:
                outs = run(x)
            except FaceSDKError as exc:
                raise _DeviceError(ErrorCode.BAD_REQUEST, str(exc)) from None
            return encode_tensors([np.asarray(o) for o in outs])
        if typ == MsgType.READ_DB:
            req = ReadDbRequest.decode(payload)
            n = min(req.count, self.read_page)
            w = st.weights
            names = st.names[req.offset : req.offset + n]
            return ReadDbPage(
                len(st.names),
                req.offset,
                names,
                w[req.offset : req.offset + len(names)].reshape(len(names), st.embedding_size),
            ).encode()
        raise _DeviceError(ErrorCode.UNKNOWN_TYPE, f"type {typ.name} is not a request")

    def _embed(self, image: np.ndarray) -> tuple[list[DetectionRecord], np.ndarray | None]:
        """Detect (if the compute can), crop the largest face, embed it."""
        if self.compute is None:
            raise _DeviceError(ErrorCode.INTERNAL, "this simulated device has no accelerator (compute)")
        dets: list[DetectionRecord] = []
        detect = getattr(self.compute, "detect", None)
        if callable(detect):
            for d in detect(image):
                box, score = (d.box, d.score) if hasattr(d, "box") else d
                dets.append(DetectionRecord(tuple(float(v) for v in box), float(score)))
            if not dets:
                return [], None
            best = max(dets, key=lambda d: (d.box[2] - d.box[0]) * (d.box[3] - d.box[1]))
            crop = getattr(self.compute, "crop", None)
            if callable(crop):
                chip = crop(image, best.box)
            else:
                chip = crop_face(image, best.box, tuple(self.compute.input_size))
        else:
            h, w = image.shape[:2]
            dets = [DetectionRecord((0.0, 0.0, float(w), float(h)), 1.0)]
            chip = (
                image
                if image.shape[:2] == tuple(self.compute.input_size)
                else crop_face(image, (0, 0, w, h), tuple(self.compute.input_size))
            )
        emb = np.asarray(self.compute.embed(chip)).reshape(-1)
        if emb.dtype != np.int8:
            raise _DeviceError(ErrorCode.INTERNAL, f"compute returned {emb.dtype}, not int8")
        return dets, emb


class _DeviceError(Exception):
    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code
