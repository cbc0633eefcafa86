"""The MAX78002 record-mode flash database (msdk ``record.c``): status page + 5 database pages, as a raw
image or Intel HEX.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path
from typing import Sequence

import numpy as np

from facesdk.errors import ConfigError, GalleryError

from .cfiles import atomic_write, read_file
from .database import firmware_name
from .profiles import DB_PAGES, FLASH_PAGE, MAGIC, MAX_PERSON_ID, MAX_RECORD_COUNT, NAME_LEN, STATUS_ADDRESS

__all__ = ['write_flash_db', 'read_flash_db']


def _records(names: Sequence[str]) -> list[tuple[str, list[int]]]:
    """Group consecutive slots of one name into person records of at most 15 embeddings."""
    recs: list[tuple[str, list[int]]] = []
    for i, n in enumerate(names):
        if recs and recs[-1][0] == n and len(recs[-1][1]) < MAX_RECORD_COUNT:
            recs[-1][1].append(i)
        else:
            recs.append((n, [i]))
    return recs


def _flash_bytes(names: Sequence[str], weights: np.ndarray) -> bytes:
    recs = _records([firmware_name(n) for n in names])
    if len(recs) > MAX_PERSON_ID:
        raise ConfigError(f"{len(recs)} person records exceed the 12-bit id field")
    body = bytearray(struct.pack("<I", MAGIC))
    for pid, (name, idx) in enumerate(recs, start=1):
        nb = name.encode("ascii").ljust(NAME_LEN, b"\0")
        first = (nb[0] << 24) | (nb[1] << 16) | (nb[2] << 8) | nb[3]
        second = (nb[4] << 24) | (nb[5] << 16) | (pid << 4) | len(idx)
        body += struct.pack("<II", first, second)
        body += weights[idx].astype(np.int8).tobytes()
    if len(body) > DB_PAGES * FLASH_PAGE:
        raise ConfigError(f"{len(names)} embeddings need {len(body)} bytes; the record area holds "
                          f"{DB_PAGES * FLASH_PAGE}")
    image = bytearray(b"\xff" * ((DB_PAGES + 1) * FLASH_PAGE))
    image[0:8] = struct.pack("<II", len(recs), len(names))
    image[FLASH_PAGE : FLASH_PAGE + len(body)] = body
    return bytes(image)


def _ihex(data: bytes, base: int, row: int = 16) -> str:
    out = []
    upper = None
    for off in range(0, len(data), row):
        addr = base + off
        if addr >> 16 != upper:
            upper = addr >> 16
            rec = bytes([2, 0, 0, 4]) + upper.to_bytes(2, "big")
            out.append(":" + rec.hex().upper() + f"{(-sum(rec)) & 0xFF:02X}")
        chunk = data[off : off + row]
        rec = bytes([len(chunk)]) + (addr & 0xFFFF).to_bytes(2, "big") + b"\x00" + chunk
        out.append(":" + rec.hex().upper() + f"{(-sum(rec)) & 0xFF:02X}")
    out.append(":00000001FF")
    return "\n".join(out) + "\n"


def _read_ihex(text: str, path: object) -> dict[int, int]:
    mem: dict[int, int] = {}
    upper = 0
    for ln, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line:
            continue
        try:
            if not line.startswith(":"):
                raise ValueError("no ':'")
            rec = bytes.fromhex(line[1:])
        except ValueError as exc:
            raise GalleryError(f"{path}:{ln}: not an Intel HEX record ({exc})") from None
        if len(rec) < 5 or len(rec) != rec[0] + 5 or sum(rec) & 0xFF:
            raise GalleryError(f"{path}:{ln}: bad Intel HEX length or checksum")
        typ, addr, data = rec[3], int.from_bytes(rec[1:3], "big"), rec[4:-1]
        if typ == 0:
            for k, b in enumerate(data):
                mem[(upper << 16) + addr + k] = b
        elif typ == 4:
            upper = int.from_bytes(data, "big")
        elif typ == 1:
            break
    return mem


def write_flash_db(names: Sequence[str], weights: np.ndarray, path: str | os.PathLike) -> Path:
    """Write the MAX78002 record-mode database (status page + 5 database pages).

    ``.hex`` writes Intel HEX at the absolute flash addresses (``0x10268000``..); any other suffix
    writes the raw 96 KiB image that starts at ``STATUS_ADDRESS``. Consecutive slots with the same
    name become one person record (at most 15 embeddings each).
    """
    w = np.asarray(weights)
    if w.dtype != np.int8 or w.ndim != 2 or w.shape[1] != 64 or len(w) != len(names):
        raise ConfigError(f"flash records take int8 [n, 64] rows with n names, got {w.dtype} {w.shape}")
    image = _flash_bytes(names, w)
    if str(path).lower().endswith(".hex"):
        return atomic_write(path, _ihex(image, STATUS_ADDRESS).encode("ascii"))
    return atomic_write(path, image)


def read_flash_db(path: str | os.PathLike) -> tuple[list[str], np.ndarray]:
    """Read a record-mode database (raw image from ``STATUS_ADDRESS`` or Intel HEX) → names, int8 rows."""
    p = Path(path)
    size = (DB_PAGES + 1) * FLASH_PAGE
    if p.suffix.lower() == ".hex":
        mem = _read_ihex(read_file(p, text=True), p)
        image = bytearray(b"\xff" * size)
        for a, b in mem.items():
            if STATUS_ADDRESS <= a < STATUS_ADDRESS + size:
                image[a - STATUS_ADDRESS] = b
    else:
        image = bytearray(read_file(p))
        if len(image) != size:
            raise GalleryError(f"{p}: {len(image)} bytes; a flash database image is {size} bytes")
    persons, total = struct.unpack_from("<II", image, 0)
    (magic,) = struct.unpack_from("<I", image, FLASH_PAGE)
    if magic != MAGIC:
        raise GalleryError(f"{p}: no database magic 0x{MAGIC:08X} (found 0x{magic:08X})")
    if persons == 0xFFFFFFFF:
        persons, total = 0, 0
    names: list[str] = []
    rows: list[bytes] = []
    pos = FLASH_PAGE + 4
    end = FLASH_PAGE * (DB_PAGES + 1)
    for pid in range(1, persons + 1):
        if pos + 8 > end:
            raise GalleryError(f"{p}: person {pid} lies past the database pages")
        first, second = struct.unpack_from("<II", image, pos)
        raw = bytes([first >> 24, (first >> 16) & 255, (first >> 8) & 255, first & 255,
                     second >> 24, (second >> 16) & 255])
        name = raw.split(b"\0", 1)[0].decode("ascii", "replace")
        rid, count = (second >> 4) & 0xFFF, second & 0xF
        if rid != pid:
            raise GalleryError(f"{p}: record {pid} carries id {rid}")
        pos += 8
        if pos + 64 * count > end:
            raise GalleryError(f"{p}: embeddings of person {pid} lie past the database pages")
        for _ in range(count):
            names.append(name)
            rows.append(bytes(image[pos : pos + 64]))
            pos += 64
    if len(names) != total:
        raise GalleryError(f"{p}: status says {total} embeddings, records hold {len(names)}")
    w = np.frombuffer(b"".join(rows), np.int8).reshape(-1, 64).copy() if rows else np.zeros((0, 64), np.int8)
    return names, w
