"""Safe reader for ai8x ``.pth.tar`` checkpoints (PyTorch zip files), without torch.

A PyTorch checkpoint is a zip archive holding a pickle (``<prefix>/data.pkl``)
whose tensors point at raw storages (``<prefix>/data/<key>``). Unpickling it
with :mod:`pickle` would execute whatever callables the file names, so this
module uses a *restricted* unpickler:

* only a handful of globals are resolved, each to a function of this module
  (``torch._utils._rebuild_tensor_v2`` → :func:`_rebuild_tensor_v2`, the storage
  type names → dtype markers, ``collections.OrderedDict``); a reference to
  ``torch.optim.*`` optimiser classes (stored as plain values in ai8x
  checkpoints) becomes an inert :class:`OpaqueGlobal` that cannot be called;
* everything else (``posix.system``, ``builtins.eval``, ``subprocess.Popen`` …)
  raises :class:`~facesdk.errors.ModelFormatError` before anything runs;
* storages are read as little-endian numpy arrays with bounds checks, so a
  truncated or inconsistent archive is refused with a clear message;
* every object :meth:`find_class` hands out is a *fresh*, immutable wrapper, so a ``BUILD``
  opcode cannot mutate this module's functions or markers (which would break every later load);
* declared sizes are capped before anything is allocated: a member's uncompressed size against its
  compressed size (deflate expands at most ~1032:1, RFC 1951 / zlib technical details), the sum of
  all members read against the archive's size (:data:`MAX_EXPANSION`) and :data:`MAX_TOTAL_BYTES`,
  a tensor's element count against its storage's; encrypted or non stored/deflated members are
  refused; every failure of :mod:`zipfile`/:mod:`zlib`/the file system is a
  :class:`~facesdk.errors.ModelFormatError` (or :class:`~facesdk.errors.ModelNotFoundError`).

Result: nested dicts/lists of ints, floats, strings and ``numpy.ndarray``.
"""

from __future__ import annotations

import io
import logging
import math
import pickle
import struct
import zipfile
import zlib
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np

from facesdk.errors import ModelFormatError, ModelNotFoundError

__all__ = ["load_checkpoint", "load_state_dict", "OpaqueGlobal", "MAX_PICKLE_BYTES", "MAX_TOTAL_BYTES",
           "MAX_EXPANSION"]

log = logging.getLogger(__name__)

#: Refuse pickles larger than this (a checkpoint's pickle holds only the structure).
MAX_PICKLE_BYTES = 16 << 20
#: At most this many bytes are decompressed from one checkpoint (ai8x checkpoints are a few MB).
MAX_TOTAL_BYTES = 512 << 20
#: ... and at most this many times the archive's size (torch.save stores members uncompressed).
MAX_EXPANSION = 16
#: Deflate's largest possible expansion ratio (RFC 1951 stored blocks aside: ~1032:1).
_DEFLATE_MAX_RATIO = 1032
#: Errors the zipfile / zlib / struct machinery raises on a hostile archive.
_ZIP_ERRORS = (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, ValueError, RuntimeError,
               zlib.error, struct.error, OverflowError, KeyError, IndexError, TypeError, MemoryError)

_STORAGE_DTYPES: dict[str, np.dtype] = {
    "FloatStorage": np.dtype("<f4"),
    "DoubleStorage": np.dtype("<f8"),
    "HalfStorage": np.dtype("<f2"),
    "LongStorage": np.dtype("<i8"),
    "IntStorage": np.dtype("<i4"),
    "ShortStorage": np.dtype("<i2"),
    "CharStorage": np.dtype("i1"),
    "ByteStorage": np.dtype("u1"),
    "BoolStorage": np.dtype("?"),
}


class _Frozen:
    """Base of the objects handed to the unpickler: no ``__dict__``, no attribute assignment."""

    __slots__ = ()

    def __setattr__(self, name: str, value: Any) -> None:
        raise ModelFormatError("checkpoint pickle tries to modify an allowed global (BUILD on it)")

    __delattr__ = __setattr__  # type: ignore[assignment]


class _StorageType(_Frozen):
    """Marker for ``torch.<X>Storage`` in a persistent id: carries the numpy dtype."""

    __slots__ = ("name", "dtype")

    def __init__(self, name: str) -> None:
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "dtype", _STORAGE_DTYPES[name])

    def __repr__(self) -> str:
        return f"<storage type {self.name}>"


class _Callable(_Frozen):
    """A fresh, immutable wrapper of one allowed function (one per reference in the pickle)."""

    __slots__ = ("_fn",)

    def __init__(self, fn: Any) -> None:
        object.__setattr__(self, "_fn", fn)

    def __call__(self, *args: Any) -> Any:
        return self._fn(*args)


class OpaqueGlobal(_Frozen):
    """An allowed, inert reference to a class stored as a value (e.g. the optimiser type).

    It is not callable: a pickle that tries to *call* it is refused.
    """

    __slots__ = ("qualname",)

    def __init__(self, qualname: str) -> None:
        object.__setattr__(self, "qualname", qualname)

    def __repr__(self) -> str:
        return f"<opaque {self.qualname}>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, OpaqueGlobal) and other.qualname == self.qualname

    def __hash__(self) -> int:
        return hash(self.qualname)


def _rebuild_tensor_v2(
    storage: np.ndarray,
    storage_offset: int,
    size: tuple[int, ...],
    stride: tuple[int, ...],
    requires_grad: Any = False,
    backward_hooks: Any = None,
    metadata: Any = None,
) -> np.ndarray:
    """Build a numpy array view of a storage (checked), then copy it."""
    if not isinstance(storage, np.ndarray):
        raise ModelFormatError("checkpoint tensor does not refer to a storage")
    try:
        size = tuple(int(s) for s in size)
        stride = tuple(int(s) for s in stride)
        off = int(storage_offset)
    except (TypeError, ValueError):
        raise ModelFormatError("checkpoint tensor has a malformed size/stride") from None
    if (len(size) != len(stride) or len(size) > 32 or any(not 0 <= s < 2**31 for s in size)
            or any(not 0 <= s < 2**40 for s in stride) or off < 0):
        raise ModelFormatError("checkpoint tensor has a malformed size/stride")
    if math.prod(size) > storage.size:  # exact integer: a broadcast view would allocate beyond the file
        raise ModelFormatError(
            f"checkpoint tensor of shape {size} has more elements than its storage ({storage.size})")
    if any(s == 0 for s in size):
        return np.zeros(size, dtype=storage.dtype)
    last = off + sum((n - 1) * st for n, st in zip(size, stride))
    if last >= storage.size:
        raise ModelFormatError(
            f"checkpoint tensor of shape {size} reaches element {last} of a storage of {storage.size}"
        )
    item = storage.dtype.itemsize
    view = np.lib.stride_tricks.as_strided(
        storage[off:], shape=size, strides=tuple(st * item for st in stride), writeable=False
    )
    return np.array(view, copy=True)


def _rebuild_parameter(data: Any, requires_grad: Any = False, backward_hooks: Any = None) -> Any:
    return data


def _ordered_dict(*args: Any) -> OrderedDict:
    if args:
        raise ModelFormatError("unexpected OrderedDict construction arguments in checkpoint")
    return OrderedDict()


#: Allowed globals → factories of the fresh object find_class returns for each reference.
_ALLOWED: dict[tuple[str, str], Any] = {
    ("torch._utils", "_rebuild_tensor_v2"): lambda: _Callable(_rebuild_tensor_v2),
    ("torch._utils", "_rebuild_parameter"): lambda: _Callable(_rebuild_parameter),
    ("collections", "OrderedDict"): lambda: _Callable(_ordered_dict),
}
_ALLOWED.update({("torch", name): (lambda n=name: _StorageType(n)) for name in _STORAGE_DTYPES})
#: Modules whose classes may appear as plain stored values (never called).
_OPAQUE_MODULE_PREFIXES = ("torch.optim.",)


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, data: bytes, zf: zipfile.ZipFile, prefix: str, budget: "_Budget") -> None:
        super().__init__(io.BytesIO(data))
        self._zf = zf
        self._prefix = prefix
        self._budget = budget
        self._storages: dict[str, np.ndarray] = {}

    def find_class(self, module: str, name: str) -> Any:  # noqa: D401 - pickle API
        key = (module, name)
        if key in _ALLOWED:
            return _ALLOWED[key]()
        if module.startswith(_OPAQUE_MODULE_PREFIXES) and name.isidentifier():
            return OpaqueGlobal(f"{module}.{name}")
        raise ModelFormatError(
            f"checkpoint refused: its pickle references {module}.{name}, which a weights file never needs "
            "(possible code execution)"
        )

    def persistent_load(self, pid: Any) -> np.ndarray:
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"):
            raise ModelFormatError(f"checkpoint has an unsupported persistent id {pid!r:.80}")
        stype, key, _location, numel = pid[1], pid[2], pid[3], pid[4]
        if not isinstance(stype, _StorageType) or not isinstance(key, str) or not key.isalnum():
            raise ModelFormatError("checkpoint has a malformed storage reference")
        if key in self._storages:
            return self._storages[key]
        name = f"{self._prefix}data/{key}"
        if not isinstance(numel, int) or numel < 0:
            raise ModelFormatError(f"checkpoint storage {name} has a malformed element count")
        need = numel * stype.dtype.itemsize
        try:
            info = self._zf.getinfo(name)
        except KeyError:
            raise ModelFormatError(f"checkpoint is missing storage {name}") from None
        if info.file_size < need:
            raise ModelFormatError(f"checkpoint storage {name} holds {info.file_size} bytes, needs {need}")
        raw = self._budget.read(self._zf, info)
        if len(raw) < need:
            raise ModelFormatError(f"checkpoint storage {name} holds {len(raw)} bytes, needs {need}")
        arr = np.frombuffer(raw, dtype=stype.dtype, count=numel)
        self._storages[key] = arr
        return arr


class _Budget:
    """Reads zip members after checking their declared sizes against the archive's size."""

    def __init__(self, name: str, archive_size: int) -> None:
        self.name = name
        self.left = min(MAX_TOTAL_BYTES, MAX_EXPANSION * archive_size + (1 << 20))

    def read(self, zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> bytes:
        if info.flag_bits & 0x1:
            raise ModelFormatError(f"{self.name}: member {info.filename!r} is encrypted")
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise ModelFormatError(
                f"{self.name}: member {info.filename!r} uses compression method {info.compress_type} "
                "(PyTorch writes stored members)")
        if info.compress_type == zipfile.ZIP_STORED and info.file_size != info.compress_size:
            raise ModelFormatError(f"{self.name}: stored member {info.filename!r} has inconsistent sizes")
        if info.file_size > _DEFLATE_MAX_RATIO * info.compress_size + 64:
            raise ModelFormatError(
                f"{self.name}: member {info.filename!r} declares {info.file_size} bytes from "
                f"{info.compress_size} compressed (more than deflate can expand: a zip bomb)")
        if info.file_size > self.left:
            raise ModelFormatError(
                f"{self.name}: members decompress to more than {MAX_EXPANSION}x the archive size "
                f"(cap {MAX_TOTAL_BYTES} bytes): refused as a possible zip bomb")
        self.left -= info.file_size
        try:
            with zf.open(info) as fh:  # zipfile stops at the declared size and checks the CRC
                data = fh.read(info.file_size + 1)
        except ModelFormatError:
            raise
        except _ZIP_ERRORS as exc:
            raise ModelFormatError(
                f"{self.name}: member {info.filename!r} is corrupt: {type(exc).__name__}: {exc}") from None
        if len(data) != info.file_size:
            raise ModelFormatError(f"{self.name}: member {info.filename!r} has the wrong length")
        return data


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a PyTorch zip checkpoint safely: tensors become numpy arrays.

    Raises:
        ModelNotFoundError: the file does not exist or cannot be opened (permission, name too long).
        ModelFormatError: not a zip checkpoint, truncated/corrupt, a zip bomb, encrypted, or its
            pickle references anything but tensors, storages and ordered dicts.
    """
    p = Path(path)
    try:
        if not p.is_file():
            raise ModelNotFoundError(f"checkpoint not found: {p}")
        size = p.stat().st_size
        fh = open(p, "rb")  # noqa: SIM115 - closed by the ZipFile / below
    except OSError as exc:
        raise ModelNotFoundError(f"cannot open checkpoint {p}: {exc.strerror or exc}") from None
    try:
        zf = zipfile.ZipFile(fh)
    except _ZIP_ERRORS as exc:
        fh.close()
        raise ModelFormatError(
            f"{p.name} is not a PyTorch zip checkpoint (truncated or legacy format): "
            f"{type(exc).__name__}: {exc}") from None
    budget = _Budget(p.name, size)
    with fh, zf:
        pkls = [n for n in zf.namelist() if n.endswith("data.pkl") and n.count("/") == 1]
        if len(pkls) != 1:
            raise ModelFormatError(
                f"{p.name}: expected one <name>/data.pkl in the archive, found {len(pkls)}")
        info = zf.getinfo(pkls[0])
        if info.file_size > MAX_PICKLE_BYTES:
            raise ModelFormatError(f"{p.name}: pickle of {info.file_size} bytes is implausibly large")
        data = budget.read(zf, info)
        prefix = pkls[0][: -len("data.pkl")]
        try:
            obj = _RestrictedUnpickler(data, zf, prefix, budget).load()
        except ModelFormatError:
            raise
        except (pickle.UnpicklingError, EOFError, TypeError, ValueError, AttributeError, IndexError,
                KeyError, RecursionError, MemoryError, OverflowError, struct.error, zlib.error,
                RuntimeError, OSError, zipfile.BadZipFile) as exc:
            raise ModelFormatError(
                f"{p.name}: malformed checkpoint pickle: {type(exc).__name__}: {exc}") from None
    if not isinstance(obj, dict):
        raise ModelFormatError(f"{p.name}: checkpoint root is a {type(obj).__name__}, not a dict")
    return obj


def load_state_dict(path: str | Path) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """The ``state_dict`` (name → array) and the other top-level entries (arch, epoch, extras)."""
    ck = load_checkpoint(path)
    sd = ck.get("state_dict", ck)
    if not isinstance(sd, dict) or not all(isinstance(v, np.ndarray) for v in sd.values()):
        raise ModelFormatError(f"{Path(path).name}: no state_dict of tensors in the checkpoint")
    meta = {k: v for k, v in ck.items() if k != "state_dict"}
    return dict(sd), meta
