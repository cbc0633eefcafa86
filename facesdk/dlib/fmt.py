"""A bounded reader for dlib's binary serialization format (numpy only, no dlib).

dlib (``dlib/serialize.h``) writes:

* integers of any width as a control byte ``C`` followed by ``C & 0x0F`` little-endian
  magnitude bytes; ``C & 0x80`` marks a negative value (bits ``0x70`` are always zero);
* ``bool`` as one ASCII byte ``'1'``/``'0'``;
* ``float``/``double`` as a (mantissa, exponent) pair of integers, value ``m * 2**e``
  (exponents 32000/32001/32002 encode +inf/-inf/NaN);
* strings as an unsigned length followed by the raw bytes;
* ``std::vector`` as an unsigned length followed by the elements;
* ``dlib::matrix`` as ``-rows, -cols`` (negated) then the elements row-major;
* DNN tensors (``dlib/cuda/tensor.h``) as ``int version(=2), n, k, nr, nc`` followed by
  raw little-endian float32 data in NCHW order.

Every read is bounds-checked against the remaining bytes, and every error is a
:class:`facesdk.errors.ModelFormatError` whose message names the byte offset, so
corrupt or truncated files fail fast instead of hanging or allocating huge arrays.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np

from ..errors import ModelFormatError

__all__ = ["DlibReader", "read_dat"]

#: Largest element count accepted for a single vector/matrix/tensor (sanity limit).
MAX_ELEMENTS = 1 << 28

#: One serialized integer: a control byte (sign bit + 1..8 byte count) and its bytes,
#: or else any single byte (a 1-byte token marks a bad or truncated integer).
_VARINT_RE = re.compile(
    b"|".join(b"[\\x%02x\\x%02x]" % (n, n | 0x80) + b".{%d}" % n for n in range(1, 9)) + b"|.", re.DOTALL
)


class DlibReader:
    """Sequential reader over the bytes of a dlib ``.dat`` file with offset tracking.

    Args:
        data: The file contents.
        name: A label used in error messages (usually the file name).
    """

    def __init__(self, data: bytes, name: str = "<bytes>") -> None:
        self.data = memoryview(bytes(data))
        self.pos = 0
        self.name = name

    # ------------------------------------------------------------------ basics
    @property
    def remaining(self) -> int:
        """Bytes left after the current offset."""
        return len(self.data) - self.pos

    def error(self, msg: str, offset: int | None = None) -> ModelFormatError:
        """A :class:`ModelFormatError` naming the file and byte offset."""
        off = self.pos if offset is None else offset
        return ModelFormatError(f"{self.name}: corrupt dlib file at byte offset {off}: {msg}")

    def _take(self, n: int, what: str) -> memoryview:
        if n < 0 or n > self.remaining:
            raise self.error(f"{what} needs {n} bytes but only {self.remaining} remain (truncated file?)")
        b = self.data[self.pos : self.pos + n]
        self.pos += n
        return b

    def at_end(self) -> bool:
        """True when every byte has been consumed."""
        return self.pos == len(self.data)

    # ------------------------------------------------------------------ primitives
    def int_(self, signed: bool = True, what: str = "integer") -> int:
        """A variable-length integer (``dlib::serialize`` of any integral type)."""
        start = self.pos
        ctrl = self._take(1, what)[0]
        n = ctrl & 0x0F
        if ctrl & 0x70 or n == 0 or n > 8:
            raise self.error(f"bad integer control byte 0x{ctrl:02x} for {what}", start)
        neg = bool(ctrl & 0x80)
        if neg and not signed:
            raise self.error(f"negative value for unsigned {what}", start)
        mag = int.from_bytes(self._take(n, what), "little")
        return -mag if neg else mag

    def uint(self, what: str = "unsigned integer") -> int:
        """An unsigned variable-length integer."""
        return self.int_(signed=False, what=what)

    def size(self, what: str, elem_bytes: int = 1) -> int:
        """A container length, refused when it cannot fit in the remaining bytes."""
        start = self.pos
        n = self.uint(what)
        if n > MAX_ELEMENTS or n * elem_bytes > self.remaining:
            raise self.error(f"{what} length {n} exceeds the {self.remaining} remaining bytes", start)
        return n

    def bool_(self, what: str = "bool") -> bool:
        """A bool written as ASCII '1' / '0'."""
        start = self.pos
        b = self._take(1, what)[0]
        if b not in (0x30, 0x31):
            raise self.error(f"bad bool byte 0x{b:02x} for {what}", start)
        return b == 0x31

    def float_(self, what: str = "float") -> float:
        """A float/double stored as a (mantissa, exponent) integer pair."""
        start = self.pos
        if self.remaining and self.data[self.pos] & 0x70:
            raise self.error(f"legacy ASCII float for {what} is not supported", start)
        mant = self.int_(what=what + " mantissa")
        exp = self.int_(what=what + " exponent")
        if exp == 32000:
            return math.inf
        if exp == 32001:
            return -math.inf
        if exp == 32002:
            return math.nan
        if abs(mant) >= 1 << 63 or abs(exp) > 2000:
            raise self.error(f"{what} out of range (mantissa {mant}, exponent {exp})", start)
        return math.ldexp(float(mant), exp)

    def string(self, what: str = "string", max_len: int = 1 << 16) -> str:
        """A length-prefixed string."""
        start = self.pos
        n = self.size(what)
        if n > max_len:
            raise self.error(f"{what} length {n} is implausible", start)
        raw = bytes(self._take(n, what))
        try:
            return raw.decode("ascii")
        except UnicodeDecodeError:
            raise self.error(f"{what} is not ASCII", start) from None

    def expect_string(self, allowed: tuple[str, ...], what: str) -> str:
        """A version string that must be one of ``allowed``."""
        start = self.pos
        s = self.string(what)
        if s not in allowed:
            raise self.error(f"expected {what} to be one of {allowed}, found {s!r}", start)
        return s

    def expect_int(self, value: int, what: str) -> None:
        """An integer that must equal ``value`` (e.g. a version number)."""
        start = self.pos
        v = self.int_(what=what)
        if v != value:
            raise self.error(f"expected {what} = {value}, found {v}", start)

    # ------------------------------------------------------------------ containers
    def float_matrix(self, what: str = "matrix") -> np.ndarray:
        """A ``dlib::matrix<float|double>`` → float64 array [rows, cols]."""
        start = self.pos
        nr = -self.int_(what=what + " rows")
        nc = -self.int_(what=what + " cols")
        if nr < 0 or nc < 0 or nr * nc > MAX_ELEMENTS or nr * nc * 2 > self.remaining:
            raise self.error(f"{what} has an implausible shape {nr}x{nc}", start)
        vals = [self.float_(what) for _ in range(nr * nc)]
        return np.asarray(vals, np.float64).reshape(nr, nc)

    def tensor(self, what: str = "tensor") -> np.ndarray:
        """A DNN ``resizable_tensor`` → float32 array [n, k, nr, nc]."""
        start = self.pos
        self.expect_int(2, what + " version")
        dims = [self.int_(what=what + " dim") for _ in range(4)]
        if any(d < 0 for d in dims):
            raise self.error(f"{what} has negative dimensions {dims}", start)
        count = int(np.prod(dims, dtype=np.int64)) if all(dims) else 0
        if count > MAX_ELEMENTS or count * 4 > self.remaining:
            raise self.error(
                f"{what} of shape {dims} needs {count * 4} bytes, only {self.remaining} remain", start
            )
        raw = self._take(count * 4, what)
        return np.frombuffer(raw, dtype="<f4").astype(np.float32).reshape(dims)

    def varint_run(self, what: str = "integer stream") -> tuple[np.ndarray, np.ndarray]:
        """Decode every remaining byte as a run of integers (fast path).

        Returns ``(values, offsets)``: int64 values and the byte offset of each.

        Files such as a ``shape_predictor`` hold nothing but integers (and floats as
        integer pairs) after their header, so the whole tail can be tokenised at once
        by a C-level regular expression instead of millions of Python calls. If the
        tail is not a clean run of integers the slow reader is replayed to report the
        exact offset of the first bad or truncated integer.
        """
        start = self.pos
        tail = bytes(self.data[start:])
        toks = _VARINT_RE.findall(tail)
        lens = np.fromiter(map(len, toks), np.int64, len(toks))
        b = np.frombuffer(tail, np.uint8)
        starts = np.zeros(len(lens), np.int64)
        np.cumsum(lens[:-1], out=starts[1:])
        bad = np.flatnonzero(lens == 1)
        if len(bad):  # re-read the first bad integer with the checked reader for a precise message
            self.pos = start + int(starts[bad[0]])
            self.int_(what=what)
            raise self.error(f"{what}: bad integer", self.pos)
        nbytes = lens - 1
        big = np.flatnonzero(nbytes == 8)
        over = big[(b[starts[big] + 8] & 0x80) > 0]
        if len(over):
            raise self.error(
                f"{what}: integer magnitude does not fit in 63 bits", start + int(starts[over[0]])
            )
        # read the (unaligned) 8 bytes after every control byte as one little-endian
        # uint64 through 8 shifted views of the padded buffer, then mask to the length
        padded = tail + bytes(16)
        m = (len(padded) - 8) // 8
        views = np.stack([np.frombuffer(padded, "<u8", count=m, offset=k) for k in range(8)])
        pos = starts + 1
        raw = views[pos % 8, pos // 8]
        masks = np.array([(1 << (8 * n)) - 1 for n in range(9)], np.uint64)
        mag = raw & masks[nbytes]
        vals = mag.astype(np.int64)
        neg = (b[starts] & 0x80) > 0
        vals[neg] = -vals[neg]
        self.pos = len(self.data)
        return vals, starts + start

    def alias_tensor(self, what: str = "alias_tensor") -> tuple[int, int, int, int]:
        """An ``alias_tensor`` (shape only)."""
        self.expect_int(1, what + " version")
        dims = tuple(self.int_(what=what + " dim") for _ in range(4))
        if any(d < 0 for d in dims):
            raise self.error(f"{what} has negative dimensions {dims}")
        return dims  # type: ignore[return-value]


def read_dat(path: str | Path, max_bytes: int = 512 << 20) -> DlibReader:
    """Open a ``.dat`` file as a :class:`DlibReader` (size-limited)."""
    p = Path(path)
    try:
        size = p.stat().st_size
        if size > max_bytes:
            raise ModelFormatError(f"{p.name}: {size} bytes is larger than the {max_bytes}-byte limit")
        data = p.read_bytes()
    except OSError as exc:
        raise ModelFormatError(f"cannot read dlib file {p}: {exc}") from None
    if not data:
        raise ModelFormatError(f"{p.name}: empty dlib file (byte offset 0)")
    return DlibReader(data, name=p.name)
