"""Reader of the stock msdk demo firmware's UART output: ``*STR*`` image frames and console lines.

The msdk camera/CNN examples send camera frames to the PC with ``utils_send_img_to_pc`` /
``utils_stream_img_to_pc_init`` (read by their ``pc_utility/grab_image.py``)::

    "*STR*"  u16 width (big-endian)  u16 height  u8 n  n bytes pixel format ("RGB565", ...)
    u32 length (big-endian)  length bytes of pixels

and print results on the same console, e.g. the FaceID demos' ``PR_INFO``/``PR_DEBUG`` lines
``I[faceid    : 318] FaceID result: subject name: Alice`` or
``D[faceid    : 312] CNN_3 max value: 87``. :class:`MsdkStreamParser` separates the two from one
byte stream (bounded buffers; a corrupt header is treated as text), :func:`decode_pixels`
turns a frame into RGB the way the msdk ``imgConverter.py`` does, and :class:`MsdkUartReader`
reads them from a serial port so users of the stock demos can capture frames and results.
"""

from __future__ import annotations

import collections
import logging
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from facesdk.errors import ConfigError, DeviceLinkError, FrameError

__all__ = [
    "UartImage",
    "ConsoleLine",
    "FaceIdResult",
    "MsdkStreamParser",
    "MsdkUartReader",
    "decode_pixels",
    "encode_str_frame",
    "parse_result",
]

log = logging.getLogger(__name__)

START = b"*STR*"
MAX_IMAGE_BYTES = 8 << 20
MAX_LINE = 4096
_FORMATS = {"RGB565": 2, "RGB555": 2, "RGB888": 4, "YUV422": 2, "GRAYSCALE": 1, "BAYER": 1}


@dataclass
class UartImage:
    """One ``*STR*`` frame."""

    width: int
    height: int
    pixel_format: str
    data: bytes

    def to_rgb(self) -> np.ndarray:
        """``HxWx3`` uint8 RGB (see :func:`decode_pixels`)."""
        return decode_pixels(self.data, self.width, self.height, self.pixel_format)


@dataclass
class ConsoleLine:
    """One console text line; ``level``/``module``/``line_no`` are set for ``X[module:line]`` lines."""

    text: str
    level: str | None = None
    module: str | None = None
    line_no: int | None = None
    result: "FaceIdResult | None" = None


@dataclass
class FaceIdResult:
    """A FaceID result printed by a demo: ``name`` (``Unknown`` if not recognised), and whatever of
    ``subject_id``/``score`` the line carried."""

    kind: str
    name: str | None = None
    subject_id: int | None = None
    score: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)


_PREFIX = re.compile(r"^([DIWE])\[\s*([^:\]]*?)\s*:\s*(\d+)\]\s?(.*)$")
_RESULTS = [
    (re.compile(r"FaceID result:\s*subject name:\s*(\S.*?)\s*$"), "name"),
    (re.compile(r"FaceID result:\s*subject id:\s*(-?\d+)"), "id"),
    (re.compile(r"FaceID result:\s*Unknown subject"), "unknown"),
    (re.compile(r"CNN_3 max value:\s*(-?\d+)"), "max_value"),
    (re.compile(r"CNN_3 max value index:\s*(-?\d+)"), "max_index"),
    (re.compile(r"^\s*1\.\s*:\s*(\d+),\s*distance:\s*(\d+)"), "closest"),
]


def parse_result(text: str) -> FaceIdResult | None:
    """Recognise a FaceID result in one console line (without its ``X[module:line]`` prefix)."""
    for rx, kind in _RESULTS:
        m = rx.search(text)
        if not m:
            continue
        if kind == "name":
            return FaceIdResult("name", name=m.group(1))
        if kind == "id":
            return FaceIdResult("id", subject_id=int(m.group(1)))
        if kind == "unknown":
            return FaceIdResult("unknown", name="Unknown")
        if kind == "max_value":
            return FaceIdResult("score", score=int(m.group(1)))
        if kind == "max_index":
            return FaceIdResult("index", subject_id=int(m.group(1)))
        return FaceIdResult("closest", subject_id=int(m.group(1)), extra={"distance": int(m.group(2))})
    return None


def _console_line(raw: bytes) -> ConsoleLine:
    text = raw.decode("utf-8", "replace").rstrip("\r")
    m = _PREFIX.match(text)
    if m:
        body = m.group(4).rstrip()
        return ConsoleLine(body, m.group(1), m.group(2), int(m.group(3)), parse_result(body))
    return ConsoleLine(text, result=parse_result(text))


class MsdkStreamParser:
    """Push parser splitting a demo's UART byte stream into :class:`UartImage` and :class:`ConsoleLine`.

    Args:
        max_image_bytes: larger announced images are refused (header treated as text).
    """

    def __init__(self, max_image_bytes: int = MAX_IMAGE_BYTES) -> None:
        self.max_image_bytes = max_image_bytes
        self._buf = bytearray()
        self._line = bytearray()
        self.dropped = 0  # bytes of over-long lines that were discarded

    def _text(self, data: bytes, out: list) -> None:
        parts = data.split(b"\n")
        for i, part in enumerate(parts):
            if i < len(parts) - 1:
                self._line += part
                if self._line.strip(b"\r"):
                    out.append(_console_line(bytes(self._line)))
                self._line.clear()
            else:
                self._line += part
                if len(self._line) > MAX_LINE:
                    self.dropped += len(self._line)
                    self._line.clear()

    def _header(self) -> tuple[int, int, str, int, int] | None | bool:
        """Parse the header after ``*STR*``: (w, h, fmt, length, header size), None if incomplete,
        False if it is not a valid header."""
        b = self._buf
        n0 = len(START)
        if len(b) < n0 + 5:
            return None
        w, h, flen = (
            int.from_bytes(b[n0 : n0 + 2], "big"),
            int.from_bytes(b[n0 + 2 : n0 + 4], "big"),
            b[n0 + 4],
        )
        if not 0 < flen <= 16:
            return False
        fmt_raw = bytes(b[n0 + 5 : n0 + 5 + flen])
        if not all(65 <= c <= 90 or 48 <= c <= 57 or c == 95 for c in fmt_raw):  # A-Z 0-9 _
            return False
        if len(b) < n0 + 5 + flen + 4:
            return None
        length = int.from_bytes(b[n0 + 5 + flen : n0 + 9 + flen], "big")
        if w == 0 or h == 0 or length == 0 or length > self.max_image_bytes:
            return False
        return w, h, fmt_raw.decode("ascii"), length, n0 + 9 + flen

    def feed(self, data: bytes) -> list[UartImage | ConsoleLine]:
        """Add bytes; return the complete images and lines found, in order."""
        out: list[UartImage | ConsoleLine] = []
        self._buf += data
        while self._buf:
            i = self._buf.find(START)
            if i < 0:
                keep = next((k for k in range(len(START) - 1, 0, -1) if self._buf.endswith(START[:k])), 0)
                self._text(bytes(self._buf[: len(self._buf) - keep]), out)
                del self._buf[: len(self._buf) - keep]
                return out
            if i:
                self._text(bytes(self._buf[:i]), out)
                del self._buf[:i]
            hdr = self._header()
            if hdr is None:
                return out
            if hdr is False:
                self._text(bytes(self._buf[:1]), out)
                del self._buf[:1]
                continue
            w, h, fmt, length, hs = hdr
            if len(self._buf) < hs + length:
                return out
            out.append(UartImage(w, h, fmt, bytes(self._buf[hs : hs + length])))
            del self._buf[: hs + length]
        return out


def encode_str_frame(rgb: np.ndarray, pixel_format: str = "RGB565") -> bytes:
    """An ``*STR*`` frame as the demos send it (for simulators and tests)."""
    img = np.asarray(rgb, np.uint8)
    h, w = img.shape[:2]
    fmt = pixel_format.upper()
    if fmt == "RGB565":
        r, g, b = (img[..., i].astype(np.uint16) for i in range(3))
        data = (((r >> 3) << 11) | ((g >> 2) << 5) | (b >> 3)).astype(">u2").tobytes()
    elif fmt == "RGB888":
        data = np.concatenate([img, np.zeros((h, w, 1), np.uint8)], -1).tobytes()
    elif fmt in ("GRAYSCALE", "BAYER"):
        data = img.mean(-1).astype(np.uint8).tobytes() if img.ndim == 3 else img.tobytes()
    else:
        raise ConfigError(f"cannot encode pixel format {pixel_format!r}")
    name = fmt.encode("ascii")
    return (
        START
        + w.to_bytes(2, "big")
        + h.to_bytes(2, "big")
        + bytes([len(name)])
        + name
        + len(data).to_bytes(4, "big")
        + data
    )


def decode_pixels(data: bytes, width: int, height: int, pixel_format: str) -> np.ndarray:
    """Pixels of a ``*STR*`` frame → ``HxWx3`` uint8 RGB, as msdk's ``imgConverter.py`` converts them.

    RGB565: big-endian 16-bit pixels, channels scaled ``v * 255 // max``; RGB888: 4 bytes per pixel
    (R, G, B, unused); YUV422: ``Y U Y V`` with the converter's coefficients; GRAYSCALE / BAYER: one
    byte per pixel. Raises FrameError when the data is too short for the size.
    """
    fmt = pixel_format.upper()
    if fmt not in _FORMATS:
        raise FrameError(f"unknown pixel format {pixel_format!r}; known: {sorted(_FORMATS)}")
    n = width * height
    need = n * _FORMATS[fmt]
    if len(data) < need:
        raise FrameError(f"{fmt} {width}x{height} needs {need} bytes, frame has {len(data)}")
    buf = np.frombuffer(data, np.uint8, count=need)
    if fmt in ("RGB565", "RGB555"):
        px = buf.view(">u2").astype(np.uint32)
        if fmt == "RGB565":
            r, g, b = (px >> 11) & 31, (px >> 5) & 63, px & 31
            rgb = np.stack([r * 255 // 31, g * 255 // 63, b * 255 // 31], -1)
        else:
            r, g, b = (px >> 10) & 31, (px >> 5) & 31, px & 31
            rgb = np.stack([r * 255 // 31, g * 255 // 31, b * 255 // 31], -1)
    elif fmt == "RGB888":
        rgb = buf.reshape(n, 4)[:, :3]
    elif fmt == "YUV422":
        q = buf.reshape(-1, 4).astype(np.float64)
        y = np.stack([q[:, 0], q[:, 2]], 1).reshape(-1)
        u = np.repeat(q[:, 1], 2) - 128
        v = np.repeat(q[:, 3], 2) - 128
        rgb = np.stack([y + 1.4075 * v, y - 0.3455 * u - 0.7169 * v, y + 1.7790 * u], -1)
        rgb = np.clip(np.trunc(rgb), 0, 255)
    else:
        rgb = np.repeat(buf[:, None], 3, 1)
    return np.asarray(rgb, np.uint8).reshape(height, width, 3)


class MsdkUartReader:
    """Read ``*STR*`` frames and console lines from a stock msdk demo on a serial port.

    Args:
        port: device path / pyserial URL, or an open ``serial.Serial``.
        baudrate: the demo's console speed (115200 for the FaceID demos; the camera streaming
            examples use up to 921600).
    """

    def __init__(self, port: Any, baudrate: int = 115200) -> None:
        try:
            import serial
        except ImportError as exc:  # pragma: no cover
            raise DeviceLinkError("pyserial is not installed: pip install 'facesdk[max7800x]'") from exc
        self._serial_mod = serial
        if isinstance(port, (str, bytes)) or hasattr(port, "__fspath__"):
            try:
                self._ser = serial.serial_for_url(str(port), baudrate=baudrate, timeout=0.05)
            except (serial.SerialException, OSError, ValueError) as exc:
                raise DeviceLinkError(f"cannot open serial port {port}: {exc}") from None
            self.port_name = str(port)
        else:
            self._ser = port
            self.port_name = getattr(port, "port", None) or repr(port)
        self.parser = MsdkStreamParser()
        self._pending: collections.deque[UartImage | ConsoleLine] = collections.deque()

    def close(self) -> None:
        self._ser.close()

    def __enter__(self) -> "MsdkUartReader":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def events(
        self, timeout: float | None = None, idle: float | None = None
    ) -> Iterator[UartImage | ConsoleLine]:
        """Yield images and lines as they arrive; stop after ``timeout`` s in total or ``idle`` s
        without any byte (both optional)."""
        start = last = time.monotonic()
        while True:
            now = time.monotonic()
            if timeout is not None and now - start >= timeout:
                return
            if idle is not None and now - last >= idle:
                return
            try:
                data = self._ser.read(max(1, self._ser.in_waiting))
            except (self._serial_mod.SerialException, OSError) as exc:
                raise DeviceLinkError(
                    f"{self.port_name}: read failed (device disconnected?): {exc}"
                ) from None
            if data:
                last = time.monotonic()
                self._pending.extend(self.parser.feed(data))
            while self._pending:  # kept across calls: events parsed but not yet consumed survive a break
                yield self._pending.popleft()

    def capture(
        self, out_dir: str | Path, count: int = 1, timeout: float = 30.0, settle: float = 0.3
    ) -> list[dict[str, Any]]:
        """Save the next ``count`` frames as PNG, each with the FaceID results printed after it
        (until the next frame, or ``settle`` s of silence after the last one).

        Returns one record per frame: ``{"image", "width", "height", "pixel_format", "results"}``.

        Raises:
            LinkTimeoutError: fewer than ``count`` frames arrived within ``timeout``.
        """
        from PIL import Image

        from facesdk.errors import LinkTimeoutError

        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        records: list[dict[str, Any]] = []

        def take(ev: UartImage | ConsoleLine) -> bool:
            if isinstance(ev, ConsoleLine):
                if ev.result is not None and records:
                    records[-1]["results"].append(
                        {k: v for k, v in ev.result.__dict__.items() if v not in (None, {})}
                    )
                return False
            if len(records) >= count:
                return True
            path = out / f"frame_{len(records):04d}.png"
            Image.fromarray(ev.to_rgb()).save(path)
            records.append(
                {
                    "image": str(path),
                    "width": ev.width,
                    "height": ev.height,
                    "pixel_format": ev.pixel_format,
                    "results": [],
                }
            )
            return False

        for ev in self.events(timeout=timeout):
            take(ev)
            if len(records) >= count:
                break
        if len(records) < count:
            raise LinkTimeoutError(
                f"{self.port_name}: {len(records)} of {count} frames arrived in {timeout} s"
            )
        for ev in self.events(timeout=timeout, idle=settle):
            if take(ev):
                break
        return records
