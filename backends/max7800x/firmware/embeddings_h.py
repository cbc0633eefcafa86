"""``embeddings.h``: ``DEFAULT_EMBS_NUM`` and ``DEFAULT_NAMES`` of the FaceID firmware (db_gen's output).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Sequence

from facesdk.errors import GalleryError

from .cfiles import atomic_write, define_body, read_file
from .database import firmware_name

__all__ = ['write_embeddings_h', 'read_embeddings_h']


def write_embeddings_h(names: Sequence[str], path: str | os.PathLike) -> Path:
    """Write ``embeddings.h``: ``DEFAULT_EMBS_NUM`` and ``DEFAULT_NAMES`` (one name per slot)."""
    toks = [f'"{firmware_name(n)}"' for n in names]
    lines = [", ".join(toks[i : i + 15]) for i in range(0, len(toks), 15)]
    if len(toks) % 15 == 0:
        lines.append("")  # db_gen always closes with the (here empty) last line: byte-identical output
    text = (f"#define DEFAULT_EMBS_NUM {len(names)} \n\n#define DEFAULT_NAMES {{ \\\n "
            + ", \\\n ".join(lines) + " \\\n}\n")
    return atomic_write(path, text.encode("ascii"))


def read_embeddings_h(path: str | os.PathLike) -> list[str]:
    """Parse ``embeddings.h`` → slot names (checks ``DEFAULT_EMBS_NUM``)."""
    text = read_file(path, text=True)
    m = re.search(r"#define\s+DEFAULT_EMBS_NUM\s+(\d+)", text)
    if not m:
        raise GalleryError(f"{path}: no '#define DEFAULT_EMBS_NUM <n>' found")
    names = re.findall(r'"((?:[^"\\]|\\.)*)"', define_body(text, "DEFAULT_NAMES", path))
    if len(names) != int(m.group(1)):
        raise GalleryError(f"{path}: DEFAULT_EMBS_NUM is {m.group(1)} but {len(names)} names are listed")
    return names
