"""Host driver for a MAX7800x board running the facesdk firmware protocol (``PROTOCOL.md``).

:class:`Max7800xDevice` talks over any pyserial port (``/dev/ttyACM0``, ``COM5``, a
``socket://`` or ``loop://`` URL, or the simulator's ``/dev/pts/N``). Every request carries a
sequence number; the driver waits for the response with that number, ignores stale and duplicate
frames, and on a timeout or a corrupted answer sends the *same* frame again (up to ``retries``
times). The device answers a repeated frame from its replay cache, and deduplicates enrolments by
a 32-bit request id, so a retried enrolment is never stored twice.

When nothing valid comes back the error says why: a silent port, or bytes that are not facesdk
frames (another device, wrong baud rate, or a stock msdk demo firmware).
"""

from __future__ import annotations

import logging
import secrets
import time
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from facesdk.errors import ConfigError, DeviceLinkError, FrameError, LinkTimeoutError

from .. import firmware as fwdb
from .protocol import (
    HEADER_SIZE,
    MAX_PAYLOAD,
    TRAILER_SIZE,
    DeviceInfo,
    EnrolRequest,
    EnrolResult,
    ErrorCode,
    ErrorReply,
    Frame,
    FrameParser,
    LoadDbRequest,
    MsgType,
    PixelFormat,
    ReadDbPage,
    ReadDbRequest,
    RunResult,
    decode_tensors,
    encode_frame,
    encode_image,
    encode_tensors,
    response_type,
)

__all__ = [
    "Max7800xDevice",
    "DeviceRejectedError",
    "LinkStats",
    "open_device",
    "open_session",
    "SerialSession",
]

log = logging.getLogger(__name__)


class DeviceRejectedError(DeviceLinkError):
    """The device answered a request with an ``ERROR`` frame."""

    def __init__(self, message: str, code: int, request_type: int) -> None:
        super().__init__(message)
        self.code = code
        self.request_type = request_type


@dataclass
class LinkStats:
    """Counters of the link since the port was opened."""

    requests: int = 0
    retries: int = 0
    timeouts: int = 0
    stale_frames: int = 0
    bytes_out: int = 0


class Max7800xDevice:
    """A facesdk-protocol MAX7800x board on a serial port.

    Args:
        port: device path / pyserial URL, or an already open ``serial.Serial``.
        baudrate: line speed (ignored by pseudo-terminals and USB CDC).
        timeout: seconds to wait for each answer (the wire time of big frames is added).
        retries: extra attempts after a timeout or a corrupted answer.

    Raises:
        DeviceLinkError: the port cannot be opened.
    """

    def __init__(self, port: Any, *, baudrate: int = 921600, timeout: float = 1.0, retries: int = 3) -> None:
        try:
            import serial  # pyserial (optional dependency: facesdk[max7800x])
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise DeviceLinkError("pyserial is not installed: pip install 'facesdk[max7800x]'") from exc
        self._serial_mod = serial
        if timeout <= 0 or retries < 0:
            raise ConfigError("timeout must be positive and retries >= 0")
        self.timeout = float(timeout)
        self.retries = int(retries)
        self.baudrate = int(baudrate)
        if isinstance(port, (str, bytes)) or hasattr(port, "__fspath__"):
            self.port_name = str(port)
            try:
                self._ser = serial.serial_for_url(
                    self.port_name, baudrate=self.baudrate, timeout=0.05, write_timeout=max(2.0, self.timeout)
                )
            except (serial.SerialException, OSError, ValueError) as exc:
                raise DeviceLinkError(f"cannot open serial port {self.port_name}: {exc}") from None
        else:
            self._ser = port
            self.port_name = getattr(port, "port", None) or repr(port)
        self._parser = FrameParser()
        self._seq = secrets.randbelow(0x10000)
        #: Random per opened port: the device keys its replay cache by (session, seq, ...) and answers
        #: carry it, so a restarted host never receives an answer cached for an earlier session.
        self.session = secrets.randbits(32)
        self.stats = LinkStats()
        self._info: DeviceInfo | None = None

    # ------------------------------------------------------------------ lifecycle
    def close(self) -> None:
        """Close the port."""
        try:
            self._ser.close()
        except Exception:  # noqa: BLE001 - closing a dead port must not raise
            pass

    def __enter__(self) -> "Max7800xDevice":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ transport
    def _next_seq(self) -> int:
        self._seq = (self._seq + 1) & 0xFFFF
        return self._seq

    def _wire_time(self, nbytes: int) -> float:
        return nbytes * 10.0 / max(self.baudrate, 1)

    def _write(self, data: bytes) -> None:
        try:
            self._ser.write(data)
            self._ser.flush()
        except (self._serial_mod.SerialException, OSError) as exc:
            raise DeviceLinkError(f"{self.port_name}: write failed (device disconnected?): {exc}") from None
        self.stats.bytes_out += len(data)

    def _read_some(self, deadline: float) -> bytes:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return b""
        try:
            self._ser.timeout = min(remaining, 0.05)
            n = self._ser.in_waiting
            return self._ser.read(max(1, n))
        except (self._serial_mod.SerialException, OSError) as exc:
            raise DeviceLinkError(f"{self.port_name}: read failed (device disconnected?): {exc}") from None

    def _pick(self, frames: list[Frame], seq: int, want: int) -> Frame | None:
        for f in frames:
            if f.seq != seq or f.session != self.session:
                self.stats.stale_frames += 1
                log.debug("ignoring stale frame type 0x%02x seq %d (waiting for %d)", f.type, f.seq, seq)
                continue
            if f.type == MsgType.ERROR:
                try:
                    err = ErrorReply.decode(f.payload)
                except FrameError as exc:
                    raise DeviceLinkError(f"{self.port_name}: malformed ERROR frame: {exc}") from None
                try:
                    code = ErrorCode(err.code).name
                except ValueError:
                    code = str(err.code)
                try:
                    req = MsgType(err.request_type).name
                except ValueError:
                    req = f"0x{err.request_type:02x}"
                raise DeviceRejectedError(
                    f"device refused {req}: {code}: {err.message}", err.code, err.request_type
                )
            if f.type == want:
                return f
            log.debug("ignoring frame type 0x%02x with seq %d", f.type, seq)
        return None

    def request(
        self,
        typ: MsgType,
        payload: bytes = b"",
        *,
        timeout: float | None = None,
        retries: int | None = None,
        expect_bytes: int = 64,
    ) -> Frame:
        """Send one request and return its response frame (retrying on silence or corruption).

        Raises:
            LinkTimeoutError: no valid answer after all attempts (the message says what came back).
            DeviceRejectedError: the device answered with an ERROR frame.
            DeviceLinkError: the port failed (disconnected).
        """
        if len(payload) > MAX_PAYLOAD:
            raise ConfigError(f"request of {len(payload)} bytes exceeds the {MAX_PAYLOAD}-byte frame limit")
        seq = self._next_seq()
        frame = encode_frame(int(typ), seq, payload, self.session)
        want = response_type(int(typ))
        tmo = (self.timeout if timeout is None else float(timeout)) + self._wire_time(
            len(frame) + 2 * expect_bytes + HEADER_SIZE + TRAILER_SIZE
        )
        attempts = 1 + (self.retries if retries is None else int(retries))
        st0 = (self._parser.stats.bytes_in, self._parser.stats.frames, self._parser.stats.rejects)
        sample = bytearray()
        self.stats.requests += 1
        for attempt in range(attempts):
            if attempt:
                self.stats.retries += 1
                log.info(
                    "%s: no valid answer to %s (seq %d), retry %d/%d",
                    self.port_name,
                    typ.name,
                    seq,
                    attempt,
                    attempts - 1,
                )
            self._write(frame)
            deadline = time.monotonic() + tmo
            while time.monotonic() < deadline:
                data = self._read_some(deadline)
                if not data:
                    continue
                if len(sample) < 64:
                    sample += data[: 64 - len(sample)]
                hit = self._pick(self._parser.feed(data), seq, want)
                if hit is not None:
                    return hit
            self.stats.timeouts += 1
            hit = self._pick(self._parser.flush_partial(), seq, want)  # line idle: drop a cut-off frame
            if hit is not None:
                return hit
        ps = self._parser.stats
        got, frames, rejects = ps.bytes_in - st0[0], ps.frames - st0[1], ps.rejects - st0[2]
        what = f"{typ.name} to {self.port_name}: no valid answer in {attempts} attempt(s) of {tmo:.2f} s"
        if got == 0:
            raise LinkTimeoutError(
                f"{what}; the port is silent (no facesdk firmware running, board not powered, or wrong port)"
            )
        if frames == 0:
            raise LinkTimeoutError(
                f"{what}; received {got} bytes that are not facesdk frames ({rejects} rejected) — wrong "
                "device, "
                f"wrong baud rate, or a stock msdk demo firmware (first bytes: {bytes(sample[:32])!r})"
            )
        raise LinkTimeoutError(
            f"{what}; {frames} frame(s) arrived but none answered this request "
            f"({rejects} corrupted) — the link is too noisy"
        )

    # ------------------------------------------------------------------ commands
    def info(self) -> DeviceInfo:
        """Device identity, embedding size, database capacity/count, threshold."""
        self._info = DeviceInfo.decode(self.request(MsgType.INFO).payload)
        return self._info

    def _device_info(self) -> DeviceInfo:
        return self._info or self.info()

    def load_database(self, names: Sequence[str], rows: np.ndarray, threshold: int | None = None) -> int:
        """Replace the device database with int8 rows (scale 256, one per slot); returns the count."""
        r = np.asarray(rows)
        thr = self._device_info().threshold if threshold is None else int(threshold)
        if not -128 <= thr <= 127:
            raise ConfigError(f"threshold {thr} is not an int8 score")
        payload = LoadDbRequest(
            list(names),
            r.reshape(len(names), -1)
            if len(names)
            else np.zeros((0, r.shape[-1] if r.ndim == 2 else 0), np.int8),
            thr,
        ).encode()
        resp = self.request(MsgType.LOAD_DB, payload)
        n = int.from_bytes(resp.payload[:2], "little")
        if n != len(names):
            raise DeviceLinkError(f"device stored {n} slots, {len(names)} were sent")
        self._info = None
        return n

    def load_gallery(self, gallery: Any, threshold: int | None = None) -> int:
        """Load a core Gallery: one slot per identity, its template quantised as db_gen does."""
        rows = (
            fwdb.quantize_db_embeddings(gallery.templates)
            if len(gallery)
            else np.zeros((0, gallery.embedding_size), np.int8)
        )
        return self.load_database(gallery.names, rows, threshold)

    def enrol(self, name: str, embedding: np.ndarray, *, request_id: int | None = None) -> EnrolResult:
        """Add one embedding under ``name``. An int8 vector is sent as is (the device normalises it);
        a float vector is first quantised as db_gen does. Retries never enrol twice: the device
        deduplicates by ``request_id`` (random unless given — pass your own to make a
        higher-level retry idempotent too)."""
        e = np.asarray(embedding)
        if e.dtype != np.int8:
            e = fwdb.quantize_db_embeddings(e.reshape(1, -1))[0]
        rid = secrets.randbits(32) if request_id is None else int(request_id) & 0xFFFFFFFF
        payload = EnrolRequest(rid, name, embedding=e.reshape(-1)).encode()
        res = EnrolResult.decode(self.request(MsgType.ENROL, payload).payload)
        if res.request_id != rid:
            raise DeviceLinkError(f"enrol answer carries request id {res.request_id}, sent {rid}")
        self._info = None
        return res

    def enrol_image(
        self, name: str, image: np.ndarray, *, request_id: int | None = None, timeout: float = 60.0
    ) -> EnrolResult:
        """Let the device detect, embed and enrol the largest face of an RGB image."""
        rid = secrets.randbits(32) if request_id is None else int(request_id) & 0xFFFFFFFF
        payload = EnrolRequest(rid, name, image=np.asarray(image)).encode()
        res = EnrolResult.decode(self.request(MsgType.ENROL, payload, timeout=timeout).payload)
        self._info = None
        return res

    def run_image(
        self, image: np.ndarray, *, pixel_format: PixelFormat = PixelFormat.RGB888, timeout: float = 60.0
    ) -> RunResult:
        """Run the device pipeline on an ``HxWx3`` uint8 RGB image: detections, embedding, identity."""
        payload = encode_image(np.asarray(image), pixel_format)
        return RunResult.decode(self.request(MsgType.RUN_IMAGE, payload, timeout=timeout).payload)

    def run_tensor(self, x: np.ndarray, *, timeout: float = 60.0) -> list[np.ndarray]:
        """Run the board's loaded network on one ``[C, H, W]`` int8 input; its outputs."""
        a = np.asarray(x)
        if a.size and (a.min() < -128 or a.max() > 127):
            raise ConfigError("accelerator input values must lie in -128..127")
        payload = encode_tensors([a.astype(np.int8)])
        return decode_tensors(self.request(MsgType.RUN_TENSOR, payload, timeout=timeout).payload)

    def read_database(self, page: int = 128) -> tuple[list[str], np.ndarray]:
        """All slots of the device database: names and int8 rows (read in pages)."""
        names: list[str] = []
        rows: list[np.ndarray] = []
        offset, total, dim = 0, None, None
        while total is None or offset < total:
            resp = ReadDbPage.decode(
                self.request(
                    MsgType.READ_DB, ReadDbRequest(offset, page).encode(), expect_bytes=page * 96
                ).payload
            )
            if total is not None and resp.total != total:
                raise DeviceLinkError("device database changed while it was being read")
            total = resp.total
            if resp.offset != offset:
                raise DeviceLinkError(f"asked for slots from {offset}, got a page from {resp.offset}")
            if not resp.names and offset < total:
                raise DeviceLinkError(f"device returned an empty page at {offset} of {total}")
            names += resp.names
            rows.append(resp.embeddings)
            dim = resp.embeddings.shape[1]
            offset += len(resp.names)
        d = dim if dim is not None else self._device_info().embedding_size
        return names, (np.concatenate(rows) if rows else np.zeros((0, d), np.int8))

    def read_gallery(self, model_id: str, **kw: Any) -> Any:
        """The device database as a core Gallery (rows ÷ 256; slots of one name are averaged)."""
        from facesdk.gallery import Gallery

        names, rows = self.read_database()
        g = Gallery(model_id, rows.shape[1], **kw)
        by: dict[str, list[int]] = {}
        for i, n in enumerate(names):
            by.setdefault(n, []).append(i)
        for n, idx in by.items():
            g.add(n, rows[idx].astype(np.float32) / fwdb.DB_SCALE)
        return g


def open_device(port: str, **kw: Any) -> Max7800xDevice:
    """Open ``port`` and check that a facesdk firmware answers (``INFO``)."""
    dev = Max7800xDevice(port, **kw)
    try:
        dev.info()
    except BaseException:
        dev.close()
        raise
    return dev


class SerialSession:
    """A :class:`facesdk.backend.Session` whose network runs on a board over the serial link.

    Created by the backend's ``load(..., device="serial:<port>")`` through :func:`open_session`;
    input/output specs come from the emulator model, and every answer is checked against them.
    """

    precision = "ai8x"

    def __init__(self, dev: Max7800xDevice, model: Any, backend: str, fit: Any = None) -> None:
        from facesdk.backend import TensorSpec

        self.dev, self.model, self.backend, self.fit = dev, model, backend, fit
        self.device = f"serial:{dev.port_name}"
        self.max_batch = None
        c, *hw = model.input_shape
        self.inputs = [TensorSpec("input", (None, c, *hw), "int8")]
        _, shapes = model.shapes()
        self._shapes = [tuple(shapes[i]) for i in model.output_layers]
        self.outputs = [
            TensorSpec(f"L{i}", (None, *shapes[i]), "int8" if model.layers[i].output_width == 8 else "int64")
            for i in model.output_layers
        ]

    def run(self, batch: np.ndarray) -> list[np.ndarray]:
        from facesdk.errors import DeviceMismatchError

        b = np.asarray(batch)
        single = b.ndim == len(self.model.input_shape)
        if single:
            b = b[None]
        per: list[list[np.ndarray]] = []
        for x in b:
            outs = self.dev.run_tensor(x)
            got = [tuple(o.shape) for o in outs]
            if got != self._shapes:
                raise DeviceMismatchError(
                    f"the board answered outputs {got}, the model has {self._shapes}: it runs another network"
                )
            per.append(outs)
        res = [np.stack([p[i] for p in per]) for i in range(len(self._shapes))]
        return [r[0] for r in res] if single else res

    def close(self) -> None:
        self.dev.close()

    def describe(self) -> dict[str, Any]:
        return {
            "backend": self.backend,
            "device": self.device,
            "precision": self.precision,
            "inputs": [(t.name, list(t.shape), t.dtype) for t in self.inputs],
            "outputs": [(t.name, list(t.shape), t.dtype) for t in self.outputs],
        }

    def __enter__(self) -> "SerialSession":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_session(*, model: Any, port: str, backend: str, fit: Any = None, **options: Any) -> Any:
    """Hook used by the max7800x backend for ``device="serial:<port>"``: open the port, check that a
    facesdk firmware answers, and return a Session running ``model`` on the board."""
    from facesdk.backend import Session

    kw = {k: options.pop(k) for k in ("baudrate", "timeout", "retries") if k in options}
    dev = open_device(port, **kw)
    cls = type("Max7800xSerialSession", (SerialSession, Session), {})
    return cls(dev, model, backend, fit)
