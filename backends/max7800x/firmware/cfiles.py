"""Reading and writing the firmware's C headers and binary files (shared by the format modules)."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Sequence

from facesdk.errors import GalleryError
from facesdk.fileio import atomic_write_bytes

__all__ = ["read_file", "atomic_write", "c_words", "define_body", "HEX"]


def read_file(path: str | os.PathLike, text: bool = False) -> str | bytes:
    """File contents, or a one-line GalleryError naming the file."""
    try:
        p = Path(path)
        return p.read_text(encoding="ascii", errors="replace") if text else p.read_bytes()
    except OSError as exc:
        raise GalleryError(f"cannot read firmware database file {path}: {exc.strerror or exc}") from None


def _umask() -> int:
    um = os.umask(0o022)  # read the process umask (os has no getter); restored at once
    os.umask(um)
    return um


def atomic_write(path: str | os.PathLike, data: bytes) -> Path:
    """Write a file atomically (:mod:`facesdk.fileio`) with the permissions a plain ``open()`` would give:
    ``0o666`` less the umask (the temporary file of ``mkstemp`` is ``0o600``)."""
    p = atomic_write_bytes(path, data)
    os.chmod(p, 0o666 & ~_umask())
    return p


def c_words(tokens: Sequence[str], per_line: int = 8) -> str:
    lines = [", ".join(tokens[i : i + per_line]) for i in range(0, len(tokens), per_line)]
    return ", \\\n  ".join(lines)


HEX = re.compile(r"0[xX]([0-9a-fA-F]+)")


def define_body(text: str, macro: str, path: object) -> str:
    m = re.search(r"#define\s+" + macro + r"\s*\{(.*?)\}", text, re.S)
    if not m:
        raise GalleryError(f"{path}: no '#define {macro} {{...}}' found")
    return m.group(1)
