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
  truncated or inconsistent archive is refused with a clear message.

Result: nested dicts/lists of ints, floats, strings and ``numpy.ndarray``.
"""

from __future__ import annotations

import io
import logging
import pickle
import zipfile
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np

from facesdk.errors import ModelFormatError, ModelNotFoundError

__all__ = ["load_checkpoint", "load_state_dict", "OpaqueGlobal", "MAX_PICKLE_BYTES"]

log = logging.getLogger(__name__)

#: Refuse pickles larger than this (a checkpoint's pickle holds only the structure).
MAX_PICKLE_BYTES = 64 << 20

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


class _StorageType:
    """Marker for ``torch.<X>Storage`` in a persistent id: carries the numpy dtype."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.dtype = _STORAGE_DTYPES[name]

    def __repr__(self) -> str:
        return f"<storage type {self.name}>"


class OpaqueGlobal:
    """An allowed, inert reference to a class stored as a value (e.g. the optimiser type).

    It is not callable: a pickle that tries to *call* it is refused.
    """

    def __init__(self, qualname: str) -> None:
        self.qualname = qualname

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
    if len(size) != len(stride) or any(s < 0 for s in size) or any(s < 0 for s in stride) or off < 0:
        raise ModelFormatError("checkpoint tensor has a malformed size/stride")
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


_ALLOWED: dict[tuple[str, str], Any] = {
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("collections", "OrderedDict"): _ordered_dict,
}
_ALLOWED.update({("torch", name): _StorageType(name) for name in _STORAGE_DTYPES})
#: Modules whose classes may appear as plain stored values (never called).
_OPAQUE_MODULE_PREFIXES = ("torch.optim.",)


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, data: bytes, zf: zipfile.ZipFile, prefix: str) -> None:
        super().__init__(io.BytesIO(data))
        self._zf = zf
        self._prefix = prefix
        self._storages: dict[str, np.ndarray] = {}

    def find_class(self, module: str, name: str) -> Any:  # noqa: D401 - pickle API
        key = (module, name)
        if key in _ALLOWED:
            return _ALLOWED[key]
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
        try:
            raw = self._zf.read(name)
        except KeyError:
            raise ModelFormatError(f"checkpoint is missing storage {name}") from None
        except (zipfile.BadZipFile, EOFError, OSError, ValueError) as exc:  # CRC error, truncation
            raise ModelFormatError(f"checkpoint storage {name} is corrupt: {exc}") from None
        need = int(numel) * stype.dtype.itemsize
        if len(raw) < need:
            raise ModelFormatError(f"checkpoint storage {name} holds {len(raw)} bytes, needs {need}")
        arr = np.frombuffer(raw, dtype=stype.dtype, count=int(numel))
        self._storages[key] = arr
        return arr


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a PyTorch zip checkpoint safely: tensors become numpy arrays.

    Raises:
        ModelNotFoundError: the file does not exist.
        ModelFormatError: not a zip checkpoint, truncated/corrupt, or its pickle references
            anything but tensors, storages and ordered dicts.
    """
    p = Path(path)
    if not p.is_file():
        raise ModelNotFoundError(f"checkpoint not found: {p}")
    try:
        zf = zipfile.ZipFile(p)
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise ModelFormatError(
            f"{p.name} is not a PyTorch zip checkpoint (truncated or legacy format): {exc}"
        ) from None
    with zf:
        pkls = [n for n in zf.namelist() if n.endswith("data.pkl") and n.count("/") == 1]
        if len(pkls) != 1:
            raise ModelFormatError(f"{p.name}: expected one <name>/data.pkl in the archive, found {len(pkls)}")
        info = zf.getinfo(pkls[0])
        if info.file_size > MAX_PICKLE_BYTES:
            raise ModelFormatError(f"{p.name}: pickle of {info.file_size} bytes is implausibly large")
        try:
            data = zf.read(pkls[0])
        except (zipfile.BadZipFile, EOFError, OSError, ValueError) as exc:
            raise ModelFormatError(f"{p.name}: corrupt archive: {exc}") from None
        prefix = pkls[0][: -len("data.pkl")]
        try:
            obj = _RestrictedUnpickler(data, zf, prefix).load()
        except ModelFormatError:
            raise
        except (pickle.UnpicklingError, EOFError, TypeError, ValueError, AttributeError, IndexError,
                KeyError, RecursionError, MemoryError) as exc:
            raise ModelFormatError(f"{p.name}: malformed checkpoint pickle: {type(exc).__name__}: {exc}") from None
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
