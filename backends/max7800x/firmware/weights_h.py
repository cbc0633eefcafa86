"""``weights_3.h`` (``#define KERNELS_3``) and its ``.bin`` variant: the dot-product layer's kernel
memory as msdk's ``db_gen`` writes it (layout: see the package docstring).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from facesdk.errors import GalleryError

from .cfiles import HEX, atomic_write, c_words, define_body, read_file
from .database import DotProductDB
from .profiles import PROFILES, DotProductProfile, get_profile

__all__ = ["write_weights_h", "read_weights_h", "write_weights_bin", "read_weights_bin"]


def _slot_bytes(weights_u8_col: np.ndarray, capacity: int, nbytes: int) -> np.ndarray:
    """Bytes of one processor: slots reversed within groups of 9, zero padded to ``nbytes``."""
    i = np.arange(nbytes)
    src = 9 * (i // 9) + 8 - i % 9
    out = np.zeros(nbytes, np.uint8)
    ok = src < capacity
    out[ok] = weights_u8_col[src[ok]]
    return out


def _unslot_bytes(data: np.ndarray, capacity: int) -> np.ndarray:
    i = np.arange(len(data))
    src = 9 * (i // 9) + 8 - i % 9
    out = np.zeros(capacity, np.uint8)
    ok = src < capacity
    out[src[ok]] = data[ok]
    return out


def _processor_words(db: DotProductDB) -> np.ndarray:
    """``[D, words]`` uint32 data words (big-endian byte packing) of every processor."""
    prof = db.profile
    nbytes = prof.words_per_processor * 4
    full = db.full_weights.view(np.uint8)
    cols = np.stack([_slot_bytes(full[:, d], prof.capacity, nbytes) for d in range(prof.embedding_size)])
    be = np.array([1 << 24, 1 << 16, 1 << 8, 1], np.uint32)  # 4 bytes -> one big-endian word
    return cols.reshape(prof.embedding_size, -1, 4).astype(np.uint32) @ be


def write_weights_h(db: DotProductDB, path: str | os.PathLike) -> Path:
    """Write ``weights_3.h`` (``#define KERNELS_3 {...}``) for ``db``'s profile."""
    prof = db.profile
    words = _processor_words(db)
    tokens: list[str] = []
    for d in range(prof.embedding_size):
        tokens.append(f"0x{prof.baseaddr[d]:08x}")
        tokens.append(f"0x{prof.words_per_processor:08x}")
        tokens.extend(f"0x{w:08x}" for w in words[d].tolist())
    tokens.append("0x00000000")
    text = "#define KERNELS_3 { \\\n  " + c_words(tokens) + " \\\n}\n"
    return atomic_write(path, text.encode("ascii"))


def write_weights_bin(db: DotProductDB, path: str | os.PathLike) -> Path:
    """Write the ``weights_3.bin`` variant (data words only, little-endian, processor by processor)."""
    return atomic_write(path, _processor_words(db).astype("<u4").tobytes())


def _detect_profile(addr: int) -> DotProductProfile:
    for prof in PROFILES.values():
        if addr in prof.baseaddr:
            return prof
    raise GalleryError(f"kernel address 0x{addr:08x} belongs to no known MAX7800x dot-product layout")


def read_weights_h(
    path: str | os.PathLike, *, capacity: int | None = None, profile: str | DotProductProfile | None = None
) -> tuple[np.ndarray, DotProductProfile]:
    """Parse ``weights_3.h`` → (int8 ``[capacity, 64]`` slot rows, profile).

    The profile is recognised from the kernel addresses unless given; ``capacity`` defaults to the
    profile's when it fits the word count, else to the largest slot count the words can hold.
    """
    text = read_file(path, text=True)
    words = [int(h, 16) for h in HEX.findall(define_body(text, "KERNELS_3", path))]
    blocks: list[tuple[int, list[int]]] = []
    i = 0
    while i < len(words) and words[i] != 0:
        if i + 1 >= len(words):
            raise GalleryError(f"{path}: truncated KERNELS_3 (address without length)")
        addr, n = words[i], words[i + 1]
        if i + 2 + n > len(words):
            raise GalleryError(
                f"{path}: KERNELS_3 block at 0x{addr:08x} announces {n} words, file is shorter"
            )
        blocks.append((addr, words[i + 2 : i + 2 + n]))
        i += 2 + n
    if not blocks:
        raise GalleryError(f"{path}: KERNELS_3 holds no kernel blocks")
    prof = get_profile(profile) if profile is not None else _detect_profile(blocks[0][0])
    lens = {len(b) for _, b in blocks}
    if len(lens) != 1:
        raise GalleryError(f"{path}: processors have different word counts {sorted(lens)}")
    nwords = lens.pop()
    cap = capacity or (prof.capacity if prof.words_per_processor == nwords else (nwords * 4 // 9) * 9)
    prof = prof.with_capacity(cap) if cap != prof.capacity else prof
    if prof.words_per_processor != nwords:
        raise GalleryError(f"{path}: {nwords} words per processor do not hold {cap} slots")
    out = np.zeros((cap, prof.embedding_size), np.uint8)
    seen = set()
    for addr, data in blocks:
        try:
            d = prof.baseaddr.index(addr)
        except ValueError:
            raise GalleryError(f"{path}: address 0x{addr:08x} is not a {prof.name} processor") from None
        if d >= prof.embedding_size or d in seen:
            raise GalleryError(f"{path}: processor {d} (0x{addr:08x}) repeated or out of range")
        seen.add(d)
        raw = np.array(data, np.uint32)
        b = np.stack([(raw >> s) & 0xFF for s in (24, 16, 8, 0)], 1).astype(np.uint8).ravel()
        out[:, d] = _unslot_bytes(b, cap)
    if len(seen) != prof.embedding_size:
        raise GalleryError(f"{path}: {len(seen)} processors found, {prof.embedding_size} expected")
    return out.view(np.int8), prof


def read_weights_bin(
    path: str | os.PathLike, profile: str | DotProductProfile = "max78000", capacity: int | None = None
) -> np.ndarray:
    """Parse the ``.bin`` variant → int8 ``[capacity, 64]``."""
    prof = get_profile(profile, capacity)
    data = np.frombuffer(read_file(path), "<u4")
    if data.size != prof.embedding_size * prof.words_per_processor:
        raise GalleryError(
            f"{path}: {data.size * 4} bytes, expected "
            f"{prof.embedding_size * prof.words_per_processor * 4} for {prof.capacity} slots"
        )
    out = np.zeros((prof.capacity, prof.embedding_size), np.uint8)
    for d, raw in enumerate(data.reshape(prof.embedding_size, -1)):
        b = np.stack([(raw >> s) & 0xFF for s in (24, 16, 8, 0)], 1).astype(np.uint8).ravel()
        out[:, d] = _unslot_bytes(b, prof.capacity)
    return out.view(np.int8)
