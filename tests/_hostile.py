"""Builders of hostile inputs shared by the regression tests and the seeded hostile-input suite.

Pickles are written opcode by opcode (the pickle protocol 2 opcodes of CPython's ``pickletools``),
so no torch and no fake ``torch`` module are needed to produce a PyTorch-style checkpoint.
"""

from __future__ import annotations

import struct
import zipfile
from pathlib import Path
from typing import Any


class G:
    """A pickle GLOBAL reference (module, name)."""

    def __init__(self, module: str, name: str) -> None:
        self.module, self.name = module, name


class Call:
    """``func(*args)`` through REDUCE."""

    def __init__(self, func: Any, *args: Any) -> None:
        self.func, self.args = func, args


class Build:
    """``obj`` then BUILD with ``state``."""

    def __init__(self, obj: Any, state: Any) -> None:
        self.obj, self.state = obj, state


class Storage:
    """A persistent id ``('storage', torch.<kind>, key, 'cpu', numel)``."""

    def __init__(self, key: str, numel: int, kind: str = "FloatStorage") -> None:
        self.key, self.numel, self.kind = key, numel, kind


def tensor(key: str, numel: int, size: tuple, stride: tuple, offset: int = 0) -> Call:
    return Call(
        G("torch._utils", "_rebuild_tensor_v2"),
        Storage(key, numel),
        offset,
        tuple(size),
        tuple(stride),
        False,
        None,
    )


def dumps(obj: Any) -> bytes:
    out = bytearray(b"\x80\x02")

    def emit(o: Any) -> None:
        if isinstance(o, G):
            out.extend(b"c" + o.module.encode() + b"\n" + o.name.encode() + b"\n")
        elif isinstance(o, Call):
            emit(o.func)
            emit(tuple(o.args))
            out.extend(b"R")
        elif isinstance(o, Build):
            emit(o.obj)
            emit(o.state)
            out.extend(b"b")
        elif isinstance(o, Storage):
            emit(("storage", G("torch", o.kind), o.key, "cpu", o.numel))
            out.extend(b"Q")
        elif o is None:
            out.extend(b"N")
        elif o is True or o is False:
            out.extend(b"\x88" if o else b"\x89")
        elif isinstance(o, int):
            if -(2**31) <= o < 2**31:
                out.extend(b"J" + struct.pack("<i", o))
            else:
                raw = o.to_bytes((o.bit_length() + 8) // 8, "little", signed=True)
                out.extend(b"\x8a" + bytes([len(raw)]) + raw)
        elif isinstance(o, float):
            out.extend(b"G" + struct.pack(">d", o))
        elif isinstance(o, str):
            raw = o.encode("utf-8", "surrogatepass")
            out.extend(b"X" + struct.pack("<I", len(raw)) + raw)
        elif isinstance(o, bytes):
            out.extend(b"C" + bytes([len(o)]) + o if len(o) < 256 else b"B" + struct.pack("<I", len(o)) + o)
        elif isinstance(o, tuple):
            out.extend(b"(")
            for x in o:
                emit(x)
            out.extend(b"t")
        elif isinstance(o, list):
            out.extend(b"(")
            for x in o:
                emit(x)
            out.extend(b"l")
        elif isinstance(o, dict):
            out.extend(b"}")
            if o:
                out.extend(b"(")
                for k, v in o.items():
                    emit(k)
                    emit(v)
                out.extend(b"u")
        else:  # pragma: no cover - builder misuse
            raise TypeError(type(o))

    emit(obj)
    out.extend(b".")
    return bytes(out)


def checkpoint(
    path: Path, root: Any, storages: dict[str, bytes] | None = None, *, compression: int = zipfile.ZIP_STORED
) -> Path:
    """A PyTorch-layout zip (``archive/data.pkl`` + ``archive/data/<key>``)."""
    with zipfile.ZipFile(path, "w", compression=compression) as z:
        z.writestr("archive/data.pkl", dumps(root))
        for k, v in (storages or {}).items():
            z.writestr(f"archive/data/{k}", v)
        z.writestr("archive/version", b"3\n")
    return path


def patch_zip_header(data: bytes, name: bytes, *, flag_or: int = 0, method: int | None = None) -> bytes:
    """Set flag bits / the compression method of ``name`` in both its local and central headers."""
    b = bytearray(data)
    for sig, flag_off, meth_off, name_len_off, name_off in (
        (b"PK\x03\x04", 6, 8, 26, 30),
        (b"PK\x01\x02", 8, 10, 28, 46),
    ):
        i = b.find(sig)
        while i >= 0:
            n = struct.unpack_from("<H", b, i + name_len_off)[0]
            if bytes(b[i + name_off : i + name_off + n]) == name:
                struct.pack_into(
                    "<H", b, i + flag_off, struct.unpack_from("<H", b, i + flag_off)[0] | flag_or
                )
                if method is not None:
                    struct.pack_into("<H", b, i + meth_off, method)
            i = b.find(sig, i + 4)
    return bytes(b)
