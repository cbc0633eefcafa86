"""Framing of the facesdk MAX7800x serial protocol, version 2 (see ``PROTOCOL.md``).

A frame is ``SYNC`` followed by a *stuffed* body::

    SYNC(2) | stuff( VER(1) TYPE(1) SEQ(2, LE) SESSION(4, LE) LEN(4, LE) HCRC(2, LE) PAYLOAD(LEN) CRC(4, LE) )

``HCRC`` is the low 16 bits of the CRC-32 of VER..LEN, so a corrupted length is rejected at once
instead of making the reader wait for a huge payload. ``CRC`` is the CRC-32 (zlib polynomial) of
VER..PAYLOAD. ``SESSION`` is a random number the host draws when it opens the port; a response
copies the request's session and sequence number, so a restarted host never takes an answer cached
for an earlier session (version 1 had only the 16-bit sequence number).

Byte stuffing (as SLIP, RFC 1055, escapes its END byte; our own escape values): inside the body
``0xFA`` (the first sync byte) is sent as ``0xFB 0x01`` and ``0xFB`` (the escape) as ``0xFB 0x02``.
A body therefore holds no ``0xFA`` at all and the sync word never occurs inside it, so a frame
*hidden inside a payload* (an image whose pixels spell a valid frame) is never taken for a frame,
even when the frame around it was damaged; losing or duplicating bytes cannot create a sync word
either. Only a corruption that turns one exact byte into exactly ``0xFA`` could expose one.

:class:`FrameParser` is a push parser with a bounded buffer: it searches for the sync word, unstuffs,
validates header and CRC, and on any failure resumes at the next sync word (a valid frame behind
garbage or behind a truncated frame is still found). This module is pure Python (no serial port);
the driver and the device simulator both use it.
"""

from __future__ import annotations

import enum
import logging
import math
import struct
import zlib
from dataclasses import dataclass, field

import numpy as np

from facesdk.errors import FrameError

__all__ = [
    "SYNC",
    "VERSION",
    "HEADER_SIZE",
    "TRAILER_SIZE",
    "MAX_PAYLOAD",
    "MsgType",
    "ErrorCode",
    "Frame",
    "encode_frame",
    "stuff",
    "unstuff",
    "FrameParser",
    "ParserStats",
    "response_type",
    "NAME_SIZE",
    "PixelFormat",
    "DeviceInfo",
    "EnrolRequest",
    "EnrolResult",
    "DetectionRecord",
    "RunResult",
    "LoadDbRequest",
    "ReadDbRequest",
    "ReadDbPage",
    "ErrorReply",
    "encode_image",
    "decode_image",
    "encode_name",
    "decode_name",
    "encode_tensors",
    "decode_tensors",
]

log = logging.getLogger(__name__)

SYNC = b"\xfa\xce"
VERSION = 2
_HDR = struct.Struct("<BBHIIH")  # version, type, seq, session, length, header crc (after SYNC, unstuffed)
HEADER_SIZE = 2 + _HDR.size  # 16, unstuffed
_STUFF = ((b"\xfb", b"\xfb\x02"), (b"\xfa", b"\xfb\x01"))  # escape first on the way out
TRAILER_SIZE = 4
#: Largest payload accepted (an RGB888 320x240 image is 230,400 bytes).
MAX_PAYLOAD = 256 * 1024
RESPONSE_BIT = 0x80


class MsgType(enum.IntEnum):
    """Frame types. A response has the request's type with bit 7 set; errors are ``ERROR``."""

    INFO = 0x01
    LOAD_DB = 0x02
    ENROL = 0x03
    RUN_IMAGE = 0x04
    READ_DB = 0x05
    RUN_TENSOR = 0x06
    INFO_R = 0x81
    LOAD_DB_R = 0x82
    ENROL_R = 0x83
    RUN_IMAGE_R = 0x84
    READ_DB_R = 0x85
    RUN_TENSOR_R = 0x86
    ERROR = 0xFF


class ErrorCode(enum.IntEnum):
    """Codes carried by an ``ERROR`` frame."""

    BAD_REQUEST = 1
    UNKNOWN_TYPE = 2
    DB_FULL = 3
    BAD_DIMENSION = 4
    NO_FACE = 5
    BAD_IMAGE = 6
    INTERNAL = 7


def response_type(request: int) -> int:
    """Type of the response that answers ``request``."""
    return int(request) | RESPONSE_BIT


def _crc(data: bytes | bytearray | memoryview) -> int:
    return zlib.crc32(data) & 0xFFFFFFFF


@dataclass(frozen=True)
class Frame:
    """One decoded frame (``session``: the host's random session id, copied by the response)."""

    type: int
    seq: int
    payload: bytes = b""
    session: int = 0

    def encode(self) -> bytes:
        """The frame's bytes on the wire."""
        return encode_frame(self.type, self.seq, self.payload, self.session)


def stuff(body: bytes) -> bytes:
    """Escape a frame body: ``0xFB`` → ``0xFB 0x02``, ``0xFA`` → ``0xFB 0x01`` (no ``0xFA`` remains)."""
    for raw, esc in _STUFF:
        body = body.replace(raw, esc)
    return body


def unstuff(wire: bytes) -> bytes:
    """Inverse of :func:`stuff` (an invalid escape is left as it is; the CRC then rejects the frame)."""
    for raw, esc in reversed(_STUFF):
        wire = wire.replace(esc, raw)
    return wire


def _wire_size(body: bytes, n: int) -> int:
    """Bytes on the wire of the first ``n`` bytes of an unstuffed body."""
    return n + body.count(b"\xfa", 0, n) + body.count(b"\xfb", 0, n)


def encode_frame(type_: int, seq: int, payload: bytes = b"", session: int = 0) -> bytes:
    """Serialise one frame (sync word + stuffed body).

    Raises:
        FrameError: payload larger than :data:`MAX_PAYLOAD`, or type/seq/session out of range.
    """
    if len(payload) > MAX_PAYLOAD:
        raise FrameError(f"payload of {len(payload)} bytes exceeds the {MAX_PAYLOAD}-byte limit")
    if not 0 <= type_ <= 0xFF or not 0 <= seq <= 0xFFFF or not 0 <= session <= 0xFFFFFFFF:
        raise FrameError(f"frame type {type_}, seq {seq} or session {session} out of range")
    head = struct.pack("<BBHII", VERSION, type_, seq, session, len(payload))
    hcrc = _crc(head) & 0xFFFF
    body = head + struct.pack("<H", hcrc) + bytes(payload)
    return SYNC + stuff(body + struct.pack("<I", _crc(body)))


@dataclass
class ParserStats:
    """Counters of what a parser has seen (for diagnostics and error messages)."""

    bytes_in: int = 0
    frames: int = 0
    bytes_skipped: int = 0
    bad_header: int = 0
    bad_crc: int = 0
    oversize: int = 0

    @property
    def rejects(self) -> int:
        return self.bad_header + self.bad_crc + self.oversize


@dataclass
class FrameParser:
    """Incremental frame decoder with resynchronisation and a bounded buffer.

    Feed it bytes with :meth:`feed`; it returns the complete valid frames found.
    Garbage, frames with a bad header CRC, an oversize length, a bad payload CRC, or cut off by
    the next sync word are skipped up to the next sync word (a stuffed body contains none, so no
    frame start is missed and no frame hidden inside a payload is ever decoded).

    Args:
        max_payload: frames announcing a longer payload are rejected.
    """

    max_payload: int = MAX_PAYLOAD
    stats: ParserStats = field(default_factory=ParserStats)
    _buf: bytearray = field(default_factory=bytearray, repr=False)

    @property
    def buffered(self) -> int:
        """Bytes held waiting for the rest of a frame (never more than one maximal stuffed frame)."""
        return len(self._buf)

    def reset(self) -> None:
        """Forget buffered bytes (e.g. after the port was reopened)."""
        self.stats.bytes_skipped += len(self._buf)
        self._buf.clear()

    def _skip(self, n: int) -> None:
        del self._buf[:n]
        self.stats.bytes_skipped += n

    def flush_partial(self) -> list[Frame]:
        """The line went idle: give up on a frame whose rest never came.

        Drops the first byte of the pending partial frame and rescans the bytes after it, so
        complete frames that arrived behind a cut-off one are still returned.
        """
        if not self._buf:
            return []
        self._skip(2 if self._buf.startswith(SYNC) else 1)
        return self.feed(b"")

    def feed(self, data: bytes | bytearray | memoryview) -> list[Frame]:
        """Add received bytes; return the frames completed by them, in order."""
        self.stats.bytes_in += len(data)
        self._buf += data
        out: list[Frame] = []
        buf = self._buf
        hdr_len = HEADER_SIZE - 2
        while True:
            i = buf.find(SYNC)
            if i < 0:
                # keep a trailing first sync byte: it may start a frame
                keep = 1 if buf[-1:] == SYNC[:1] else 0
                self._skip(len(buf) - keep)
                return out
            if i:
                self._skip(i)
            # A stuffed body never contains SYNC: the frame ends before the next one (if any).
            j = buf.find(SYNC, 2)
            complete = j >= 0  # no more bytes can belong to this frame
            end = j if complete else len(buf)
            if not complete and end - 2 < hdr_len:
                return out
            head = bytes(buf[2 : min(end, 2 + 2 * hdr_len)])
            if not (complete or end > 2 + 2 * hdr_len):
                head = head.rstrip(b"\xfa")  # a trailing 0xFA can only start the next sync word
                if head.endswith(b"\xfb"):
                    head = head[:-1]  # the second byte of its escape may still be on the way
            head = unstuff(head)
            if len(head) < hdr_len:
                if complete:  # cut off by the next frame
                    self.stats.bad_header += 1
                    self._skip(2)
                    continue
                return out
            ver, typ, seq, session, length, hcrc = _HDR.unpack_from(head, 0)
            if ver != VERSION or (_crc(head[: hdr_len - 2]) & 0xFFFF) != hcrc:
                self.stats.bad_header += 1
                self._skip(2)
                continue
            if length > self.max_payload:
                self.stats.oversize += 1
                self._skip(2)
                continue
            total = hdr_len + length + TRAILER_SIZE  # unstuffed body size
            if not complete and end - 2 < total:
                return out  # not even the unstuffed size has arrived yet
            region = bytes(buf[2 : min(end, 2 + 2 * total)])
            if not complete and len(region) == end - 2:
                region = region.rstrip(b"\xfa")
                if region.endswith(b"\xfb"):
                    region = region[:-1]
            body = unstuff(region)
            if len(body) < total:
                if complete:
                    self.stats.bad_crc += 1  # truncated: the next frame began inside it
                    self._skip(2)
                    continue
                return out
            (crc,) = struct.unpack_from("<I", body, hdr_len + length)
            if crc != _crc(body[: hdr_len + length]):
                self.stats.bad_crc += 1
                log.debug("frame type 0x%02x seq %d rejected: bad CRC", typ, seq)
                self._skip(2)
                continue
            out.append(Frame(typ, seq, body[hdr_len : hdr_len + length], session))
            self.stats.frames += 1
            del buf[: 2 + _wire_size(body, total)]


# ============================================================================ messages
# Payload layouts (all little-endian). See PROTOCOL.md for the tables.

NAME_SIZE = 16  #: names are UTF-8, NUL-padded to 16 bytes (at most 15 bytes of text)
MAGIC = b"FSDK"
_INFO = struct.Struct("<4sHHHHbb")
_IMG = struct.Struct("<HHB")
_ENROL = struct.Struct("<IB16s")
_ENROL_R = struct.Struct("<IHHB")
_DET = struct.Struct("<5f")
_IDENT = struct.Struct("<hb16s")
_READ = struct.Struct("<HH")
_READ_R = struct.Struct("<HHHH")
_LOAD = struct.Struct("<HHbb")
_ERR = struct.Struct("<BB")


class PixelFormat(enum.IntEnum):
    """Pixel formats of an image block."""

    RGB888 = 0  #: 3 bytes per pixel, R G B
    RGB565 = 1  #: 2 bytes per pixel, big-endian 5-6-5 (as the MAX7800x camera delivers)


def encode_name(name: str) -> bytes:
    """Name → 16 NUL-padded bytes. Raises FrameError if it is empty or longer than 15 UTF-8 bytes."""
    raw = name.encode("utf-8")
    if not raw or len(raw) >= NAME_SIZE or b"\0" in raw:
        raise FrameError(f"name {name!r} must be 1..{NAME_SIZE - 1} UTF-8 bytes without NUL")
    return raw.ljust(NAME_SIZE, b"\0")


def decode_name(raw: bytes) -> str:
    """16 NUL-padded bytes → name (invalid UTF-8 is replaced, never raised)."""
    return raw.split(b"\0", 1)[0].decode("utf-8", "replace")


class _Reader:
    """Cursor over a payload that raises FrameError on truncation."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise FrameError(f"payload truncated: wanted {n} bytes at offset {self.pos} of {len(self.data)}")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def unpack(self, st: struct.Struct) -> tuple:
        return st.unpack(self.take(st.size))

    def string(self) -> str:
        (n,) = self.take(1)
        return self.take(n).decode("utf-8", "replace")

    def end(self) -> None:
        if self.pos != len(self.data):
            raise FrameError(f"{len(self.data) - self.pos} unexpected trailing payload bytes")


def _short_string(s: str) -> bytes:
    raw = s.encode("utf-8")[:255]
    return bytes([len(raw)]) + raw


@dataclass(frozen=True)
class DeviceInfo:
    """What an ``INFO`` request reports."""

    protocol_version: int
    embedding_size: int
    capacity: int
    count: int
    threshold: int
    output_shift: int
    device: str
    firmware: str

    def encode(self) -> bytes:
        return (
            _INFO.pack(
                MAGIC,
                self.protocol_version,
                self.embedding_size,
                self.capacity,
                self.count,
                self.threshold,
                self.output_shift,
            )
            + _short_string(self.device)
            + _short_string(self.firmware)
        )

    @classmethod
    def decode(cls, payload: bytes) -> "DeviceInfo":
        r = _Reader(payload)
        magic, ver, dim, cap, count, thr, shift = r.unpack(_INFO)
        if magic != MAGIC:
            raise FrameError(f"INFO magic {magic!r} is not {MAGIC!r}")
        dev, fw = r.string(), r.string()
        r.end()
        return cls(ver, dim, cap, count, thr, shift, dev, fw)

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def encode_image(image: np.ndarray, fmt: PixelFormat = PixelFormat.RGB888) -> bytes:
    """An ``HxWx3`` uint8 RGB image → image block (RGB565 is quantised)."""
    img = np.asarray(image)
    if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
        raise FrameError(f"image must be HxWx3 uint8, got {img.dtype} {img.shape}")
    h, w = img.shape[:2]
    if not (0 < w <= 0xFFFF and 0 < h <= 0xFFFF):
        raise FrameError(f"image size {w}x{h} out of range")
    if fmt == PixelFormat.RGB565:
        r, g, b = (img[..., i].astype(np.uint16) for i in range(3))
        px = ((r >> 3) << 11) | ((g >> 2) << 5) | (b >> 3)
        data = px.astype(">u2").tobytes()
    else:
        data = np.ascontiguousarray(img).tobytes()
    return _IMG.pack(w, h, int(fmt)) + data


def decode_image(r: "_Reader | bytes") -> np.ndarray:
    """Image block → ``HxWx3`` uint8 RGB (RGB565 expanded with bit replication)."""
    rd = r if isinstance(r, _Reader) else _Reader(r)
    w, h, fmt = rd.unpack(_IMG)
    if w == 0 or h == 0:
        raise FrameError("empty image")
    if fmt == PixelFormat.RGB888:
        return np.frombuffer(rd.take(w * h * 3), np.uint8).reshape(h, w, 3).copy()
    if fmt == PixelFormat.RGB565:
        px = np.frombuffer(rd.take(w * h * 2), ">u2").reshape(h, w).astype(np.uint16)
        r5, g6, b5 = (px >> 11) & 31, (px >> 5) & 63, px & 31
        rgb = np.stack([(r5 << 3) | (r5 >> 2), (g6 << 2) | (g6 >> 4), (b5 << 3) | (b5 >> 2)], -1)
        return rgb.astype(np.uint8)
    raise FrameError(f"unknown pixel format {fmt}")


def encode_embedding(emb: np.ndarray) -> bytes:
    """int8 vector → ``u16 dim`` + bytes."""
    e = np.asarray(emb)
    if e.ndim != 1 or e.dtype != np.int8:
        raise FrameError(f"embedding must be a 1-D int8 vector, got {e.dtype} {e.shape}")
    return struct.pack("<H", e.size) + e.tobytes()


def decode_embedding(r: _Reader) -> np.ndarray:
    (dim,) = struct.unpack("<H", r.take(2))
    return np.frombuffer(r.take(dim), np.int8).copy()


@dataclass(frozen=True)
class EnrolRequest:
    """``ENROL``: add one embedding (``mode`` 0) or the embedding of an image (``mode`` 1)."""

    request_id: int
    name: str
    embedding: np.ndarray | None = None
    image: np.ndarray | None = None

    def encode(self) -> bytes:
        if (self.embedding is None) == (self.image is None):
            raise FrameError("an enrol request carries exactly one of embedding or image")
        mode = 0 if self.embedding is not None else 1
        body = encode_embedding(self.embedding) if mode == 0 else encode_image(self.image)
        return _ENROL.pack(self.request_id & 0xFFFFFFFF, mode, encode_name(self.name)) + body

    @classmethod
    def decode(cls, payload: bytes) -> "EnrolRequest":
        r = _Reader(payload)
        rid, mode, raw = r.unpack(_ENROL)
        name = decode_name(raw)
        if mode == 0:
            out = cls(rid, name, embedding=decode_embedding(r))
        elif mode == 1:
            out = cls(rid, name, image=decode_image(r))
        else:
            raise FrameError(f"unknown enrol mode {mode}")
        r.end()
        return out


@dataclass(frozen=True)
class EnrolResult:
    """``ENROL_R``: where the embedding went; ``replayed`` is true when the device had already
    enrolled this request id (a retry) and did not add it again."""

    request_id: int
    slot: int
    count: int
    replayed: bool

    def encode(self) -> bytes:
        return _ENROL_R.pack(self.request_id, self.slot, self.count, int(self.replayed))

    @classmethod
    def decode(cls, payload: bytes) -> "EnrolResult":
        r = _Reader(payload)
        rid, slot, count, rep = r.unpack(_ENROL_R)
        r.end()
        return cls(rid, slot, count, bool(rep))


@dataclass(frozen=True)
class DetectionRecord:
    """One face box on the wire (pixels of the sent image) and its score."""

    box: tuple[float, float, float, float]
    score: float


@dataclass(frozen=True)
class RunResult:
    """``RUN_IMAGE_R``: detections, the embedding of the chosen face, and the identity.

    ``slot`` is the database slot of the best match or -1 for ``Unknown``; ``score`` is the
    firmware's int8 dot-product score of that slot (0 when the database is empty).
    """

    detections: list[DetectionRecord]
    embedding: np.ndarray
    slot: int
    score: int
    name: str

    @property
    def known(self) -> bool:
        return self.slot >= 0

    def encode(self) -> bytes:
        parts = [bytes([len(self.detections)])]
        parts += [_DET.pack(*d.box, d.score) for d in self.detections]
        parts.append(encode_embedding(self.embedding))
        nm = self.name.encode("utf-8")[: NAME_SIZE - 1].ljust(NAME_SIZE, b"\0")
        parts.append(_IDENT.pack(self.slot, self.score, nm))
        return b"".join(parts)

    @classmethod
    def decode(cls, payload: bytes) -> "RunResult":
        r = _Reader(payload)
        (n,) = r.take(1)
        dets = []
        for _ in range(n):
            x1, y1, x2, y2, s = r.unpack(_DET)
            dets.append(DetectionRecord((x1, y1, x2, y2), s))
        emb = decode_embedding(r)
        slot, score, nm = r.unpack(_IDENT)
        r.end()
        return cls(dets, emb, slot, score, decode_name(nm))

    def to_dict(self) -> dict:
        return {
            "detections": [
                {"box": [round(v, 2) for v in d.box], "score": round(d.score, 4)} for d in self.detections
            ],
            "embedding": self.embedding.tolist(),
            "slot": self.slot,
            "score": self.score,
            "name": self.name,
        }


def encode_db(names: list[str], embeddings: np.ndarray, header: bytes) -> bytes:
    """``header`` + names (16 bytes each) + embeddings (int8, row-major)."""
    e = np.asarray(embeddings)
    if e.dtype != np.int8 or e.ndim != 2 or e.shape[0] != len(names):
        raise FrameError(f"database must be int8 [N,D] with N names, got {e.dtype} {e.shape}, {len(names)}")
    return header + b"".join(encode_name(n) for n in names) + e.tobytes()


def decode_db(r: _Reader, count: int, dim: int) -> tuple[list[str], np.ndarray]:
    names = [decode_name(r.take(NAME_SIZE)) for _ in range(count)]
    emb = np.frombuffer(r.take(count * dim), np.int8).reshape(count, dim).copy()
    return names, emb


@dataclass(frozen=True)
class LoadDbRequest:
    """``LOAD_DB``: replace the device database (names per slot, int8 embeddings, threshold)."""

    names: list[str]
    embeddings: np.ndarray
    threshold: int

    def encode(self) -> bytes:
        dim = int(self.embeddings.shape[1]) if self.embeddings.ndim == 2 else 0
        return encode_db(self.names, self.embeddings, _LOAD.pack(len(self.names), dim, self.threshold, 0))

    @classmethod
    def decode(cls, payload: bytes) -> "LoadDbRequest":
        r = _Reader(payload)
        n, dim, thr, _flags = r.unpack(_LOAD)
        names, emb = decode_db(r, n, dim)
        r.end()
        return cls(names, emb, thr)


@dataclass(frozen=True)
class ReadDbRequest:
    """``READ_DB``: a page of the database, ``count`` slots from ``offset``."""

    offset: int
    count: int

    def encode(self) -> bytes:
        return _READ.pack(self.offset, self.count)

    @classmethod
    def decode(cls, payload: bytes) -> "ReadDbRequest":
        r = _Reader(payload)
        off, cnt = r.unpack(_READ)
        r.end()
        return cls(off, cnt)


@dataclass(frozen=True)
class ReadDbPage:
    """``READ_DB_R``: ``total`` slots on the device; this page's names and embeddings."""

    total: int
    offset: int
    names: list[str]
    embeddings: np.ndarray

    def encode(self) -> bytes:
        dim = int(self.embeddings.shape[1])
        return encode_db(
            self.names, self.embeddings, _READ_R.pack(self.total, self.offset, len(self.names), dim)
        )

    @classmethod
    def decode(cls, payload: bytes) -> "ReadDbPage":
        r = _Reader(payload)
        total, off, cnt, dim = r.unpack(_READ_R)
        names, emb = decode_db(r, cnt, dim)
        r.end()
        return cls(total, off, names, emb)


@dataclass(frozen=True)
class ErrorReply:
    """``ERROR``: the device refused a request."""

    request_type: int
    code: int
    message: str

    def encode(self) -> bytes:
        return _ERR.pack(self.request_type & 0xFF, self.code) + _short_string(self.message)

    @classmethod
    def decode(cls, payload: bytes) -> "ErrorReply":
        r = _Reader(payload)
        typ, code = r.unpack(_ERR)
        msg = r.string()
        r.end()
        return cls(typ, code, msg)


_TENSOR_DTYPES = {0: np.dtype("i1"), 1: np.dtype("<i4"), 2: np.dtype("<i8")}


def encode_tensors(tensors: list[np.ndarray]) -> bytes:
    """``u8 count`` then per tensor ``u8 dtype (0 int8, 1 int32, 2 int64), u8 ndim, ndim x u32 dims,
    data``.
    """
    parts = [bytes([len(tensors)])]
    for t in tensors:
        a = np.asarray(t)
        code = next(
            (k for k, d in _TENSOR_DTYPES.items() if d == a.dtype.newbyteorder("<") or d == a.dtype), None
        )
        if code is None or a.ndim > 8:
            raise FrameError(f"cannot send a {a.dtype} tensor of {a.ndim} dims")
        parts.append(bytes([code, a.ndim]) + struct.pack(f"<{a.ndim}I", *a.shape))
        parts.append(np.ascontiguousarray(a, _TENSOR_DTYPES[code]).tobytes())
    return b"".join(parts)


def decode_tensors(payload: bytes) -> list[np.ndarray]:
    r = _Reader(payload)
    (n,) = r.take(1)
    out = []
    for _ in range(n):
        code, nd = r.take(2)
        if code not in _TENSOR_DTYPES or nd > 8:
            raise FrameError(f"bad tensor header (dtype {code}, {nd} dims)")
        shape = struct.unpack(f"<{nd}I", r.take(4 * nd))
        dt = _TENSOR_DTYPES[code]
        count = math.prod(shape)  # exact Python integer: np.prod would overflow int64
        # the dims must fit the payload, also beside a zero dim (a [0, 2**32] tensor is refused too)
        if count * dt.itemsize > len(payload) - r.pos or math.prod(max(d, 1) for d in shape) > len(payload):
            raise FrameError(f"tensor of shape {shape} does not fit in the {len(payload)}-byte payload")
        out.append(np.frombuffer(r.take(count * dt.itemsize), dt).reshape(shape).copy())
    r.end()
    return out
