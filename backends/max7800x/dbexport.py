"""Face database files of the MAX7800x FaceID demo firmware, and the firmware's matching rule.

The msdk FaceID demos (``Examples/MAX78000/CNN/faceid_evkit``, the MAX78002 FaceID demos)
identify a face with a third network, ``cnn_3``: one dot-product (1x1 linear) layer whose
weights *are* the database — one 64-byte int8 row per enrolled embedding ("slot") — and the
firmware picks the slot with the largest int8 output. This module reads and writes the files
that database lives in, reproduces the arithmetic, and converts to and from a core
:class:`facesdk.gallery.Gallery`.

Formats (facts read from msdk's ``db_gen/utils.py``, ``faceID.c``, ``record.c``, ``cnn_3.h``):

* **Quantisation (db_gen)**: an L2-normalised float embedding ``x`` becomes
  ``round(clip(x * 128 * 2, -128, 127))`` (``CNN_3_OUTPUT_SHIFT`` = 2), stored as int8. Rows of
  the shipped ``ai8{5,7}-dot_emb_112`` checkpoints indeed have norm ~256.
* **Probe (firmware)**: the embedding network's int8 output ``v`` is normalised on the CPU to
  ``n = 128 * v / ||v||`` in float, then cast to a byte (``n + 256`` when negative, truncated), so
  the probe is at scale 128.
* **Dot-product layer**: ``acc = sum(w * n)``; ``out = clip(floor(0.5 + acc / 2**(7 - s)), -128, 127)``
  with ``s = output_shift`` (−1 in the checkpoints, 8-bit weights), i.e. ``out ≈ 128 * cos``.
* **Decision**: ``max = 0, idx = 0``; for every slot in order, ``if out > max: max, idx = out, slot``;
  the face is ``names[idx]`` if ``max > Threshold`` else ``Unknown`` (``Threshold`` is 70 on the
  MAX78000 demo, 64 on the MAX78002 demo).
* ``weights_3.h``: ``#define KERNELS_3 { ... }`` — for each of the 64 processors (one per embedding
  dimension): its kernel-memory base address, a word count, then the slot bytes packed 4 per
  big-endian word, in groups of 9 stored in reverse order (``i -> 9*(i//9) + 8 - i%9``), zero padded;
  a final ``0x00000000``. The ``.bin`` variant holds only the data words, little-endian.
* ``embeddings.h``: ``#define DEFAULT_EMBS_NUM <n>`` and ``#define DEFAULT_NAMES { "name", ... }``,
  one name per slot, at most 6 characters (``char names[][7]``).
* **MAX78002 record-mode flash** (6 pages of 16 KiB at the end of the 2.5 MiB flash): the status page
  at ``0x10268000`` holds ``u32 persons, u32 embeddings``; the database at ``0x1026C000`` holds
  ``u32 0xFEEDBEEF``, then per person ``u32 name[0..3] (big-endian chars)``,
  ``u32 name[4]<<24 | name[5]<<16 | id<<4 | count`` and ``count`` 64-byte embeddings. Recorded slots
  follow the ``DEFAULT_EMBS_NUM`` slots of ``embeddings.h`` in the dot-product layer.
"""

from __future__ import annotations

import logging
import math
import os
import re
import struct
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from facesdk.errors import ConfigError, GalleryError, IncompatibleGalleryError

__all__ = [
    "DotProductProfile",
    "PROFILES",
    "get_profile",
    "DotProductDB",
    "MatchResult",
    "quantize_db_embeddings",
    "quantize_probe",
    "dot_product_scores",
    "firmware_decision",
    "write_weights_h",
    "read_weights_h",
    "write_weights_bin",
    "read_weights_bin",
    "write_embeddings_h",
    "read_embeddings_h",
    "write_flash_db",
    "read_flash_db",
    "export_firmware_db",
    "import_firmware_db",
    "load_dot_checkpoint",
    "FirmwareGalleryScorer",
    "float_threshold_to_score",
    "score_threshold_to_float",
    "FLASH_BASE",
    "FLASH_PAGE",
    "FLASH_SIZE",
    "STATUS_ADDRESS",
    "DB_ADDRESS",
    "MAGIC",
]

log = logging.getLogger(__name__)

UNKNOWN = "Unknown"
NAME_LEN = 6  # char names[...][7] in the firmware, NUL included
DB_SCALE = 256  # 128 * CNN_3_OUTPUT_SHIFT (2)
PROBE_SCALE = 128

# MAX78002 flash (msdk max78002.h) and record.c layout
FLASH_BASE = 0x10000000
FLASH_PAGE = 0x4000
FLASH_SIZE = 0x00280000
DB_ADDRESS = FLASH_BASE + FLASH_SIZE - 5 * FLASH_PAGE
STATUS_ADDRESS = FLASH_BASE + FLASH_SIZE - 6 * FLASH_PAGE
DB_PAGES = 5
MAGIC = 0xFEEDBEEF
MAX_PERSON_ID = 0xFFF
MAX_RECORD_COUNT = 0xF


def _baseaddr_max78000() -> tuple[int, ...]:
    return tuple(0x50180000 + q * 0x400000 + k * 0x4000 for q in range(4) for k in range(16))


def _baseaddr_max78002() -> tuple[int, ...]:
    return tuple(0x51400000 + q * 0x1000000 + k * 0x20000 + 0x1F40 for q in range(4) for k in range(16))


@dataclass(frozen=True)
class DotProductProfile:
    """Constants of one firmware's dot-product layer.

    Attributes:
        name: ``max78000`` or ``max78002``.
        capacity: slots in the layer (``CNN_3_NUM_OUTPUTS``).
        embedding_size: input width (one processor per dimension).
        output_shift: the layer's ``output_shift``.
        threshold: the firmware's ``Threshold`` (an int8 score).
        baseaddr: kernel-memory address of each processor's slot weights (``baseaddr.h``).
    """

    name: str
    capacity: int
    threshold: int
    baseaddr: tuple[int, ...]
    embedding_size: int = 64
    output_shift: int = -1

    def with_capacity(self, capacity: int) -> "DotProductProfile":
        """The same profile with another slot count (e.g. 512 for the ai85 checkpoint)."""
        if not 1 <= capacity <= 4096:
            raise ConfigError(f"capacity {capacity} out of range 1..4096")
        return DotProductProfile(self.name, capacity, self.threshold, self.baseaddr,
                                 self.embedding_size, self.output_shift)

    @property
    def words_per_processor(self) -> int:
        """32-bit words of slot data per processor (9-byte kernels, padded to a word)."""
        return math.ceil(math.ceil(self.capacity / 9) * 9 / 4)


PROFILES: dict[str, DotProductProfile] = {
    "max78000": DotProductProfile("max78000", 1024, 70, _baseaddr_max78000()),
    "max78002": DotProductProfile("max78002", 1024, 64, _baseaddr_max78002()),
}


def get_profile(name: str | DotProductProfile, capacity: int | None = None) -> DotProductProfile:
    """Profile by name (``max78000``/``max78002``), optionally with another capacity."""
    if isinstance(name, DotProductProfile):
        prof = name
    else:
        key = str(name).lower().replace("ai85", "max78000").replace("ai87", "max78002")
        if key not in PROFILES:
            raise ConfigError(f"unknown MAX7800x profile {name!r}; choose one of {sorted(PROFILES)}")
        prof = PROFILES[key]
    return prof.with_capacity(capacity) if capacity and capacity != prof.capacity else prof


# ============================================================================ arithmetic
def quantize_db_embeddings(embeddings: np.ndarray) -> np.ndarray:
    """Float embeddings ``[N, D]`` → int8 database rows as db_gen makes them (scale 256).

    Each row is L2-normalised, multiplied by 256, clipped to [-128, 127] and rounded
    half-to-even (``np.around``).
    """
    e = np.asarray(embeddings, np.float64)
    if e.ndim == 1:
        e = e[None]
    if e.ndim != 2 or not np.isfinite(e).all():
        raise ConfigError(f"embeddings must be a finite [N, D] array, got shape {e.shape}")
    n = np.linalg.norm(e, axis=1, keepdims=True)
    if (n == 0).any():
        raise ConfigError("cannot quantise an all-zero embedding")
    v = np.clip(e / n * DB_SCALE, -128, 127)
    return np.around(v).astype(np.int8)


def quantize_probe(embedding: np.ndarray) -> np.ndarray:
    """The firmware's on-CPU normalisation of a probe embedding (``[D]`` or ``[N, D]``).

    ``n = 128 * v * (1 / sqrt(sum(v*v)))`` in float32, ``+256`` when negative, truncated to a byte,
    read as int8. ``v`` is normally the embedding network's int8 output; a float vector is
    treated the same way. An all-zero vector gives all zeros (the firmware would divide by 0).
    """
    v = np.asarray(embedding)
    single = v.ndim == 1
    v = np.atleast_2d(v)
    if v.ndim != 2:
        raise ConfigError(f"probe must be [D] or [N, D], got {v.shape}")
    if np.issubdtype(v.dtype, np.integer):
        num = (128 * v.astype(np.int64)).astype(np.float32)  # 128 * pr_value is exact int math
        ssum = (v.astype(np.int64) ** 2).sum(1, keepdims=True).astype(np.float64)
    else:
        vf = v.astype(np.float32)
        num = np.float32(128) * vf
        ssum = (vf.astype(np.float64) ** 2).sum(1, keepdims=True)
    with np.errstate(divide="ignore"):
        b = np.where(ssum > 0, 1.0 / np.sqrt(ssum), 0.0).astype(np.float32)
    n = num * b
    n = np.where(n < 0, n + np.float32(256), n)
    q = (np.trunc(n).astype(np.int64) & 0xFF).astype(np.uint8).view(np.int8)
    return q[0] if single else q


def dot_product_scores(probes_q: np.ndarray, weights: np.ndarray, output_shift: int = -1) -> np.ndarray:
    """The dot-product layer: int8 probes ``[N, D]`` x int8 rows ``[K, D]`` → int8 scores ``[N, K]``.

    ``out = clip(floor(0.5 + acc / 2**(7 - output_shift)), -128, 127)`` with exact integer ``acc``
    (8-bit weights, no bias, no activation).
    """
    p = np.atleast_2d(np.asarray(probes_q)).astype(np.int64)
    w = np.asarray(weights).astype(np.int64)
    if p.shape[1] != w.shape[1]:
        raise IncompatibleGalleryError(f"probe width {p.shape[1]} != database width {w.shape[1]}")
    acc = p @ w.T
    k = 7 - int(output_shift)
    if k > 0:
        out = (acc + (1 << (k - 1))) >> k
    else:
        out = acc << (-k)
    return np.clip(out, -128, 127).astype(np.int8)


def firmware_decision(scores: np.ndarray, threshold: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The firmware's choice per row of ``scores`` ``[N, K]`` (or ``[K]``).

    Returns ``(slot, max_score, known)``: ``slot`` is the first slot with the largest score above 0
    (0 when no score is positive, as the firmware's loop starts at ``max = 0, idx = 0``),
    ``known = max_score > threshold``.
    """
    s = np.atleast_2d(np.asarray(scores)).astype(np.int16)
    if s.shape[1] == 0:
        z = np.zeros(len(s), np.int64)
        return z, z.copy(), np.zeros(len(s), bool)
    best = s.argmax(1)  # first occurrence of the maximum, like the strict ">" scan
    mx = s[np.arange(len(s)), best]
    pos = mx > 0
    slot = np.where(pos, best, 0)
    mx = np.where(pos, mx, 0)
    return slot.astype(np.int64), mx.astype(np.int64), mx > int(threshold)


# ============================================================================ database
@dataclass
class MatchResult:
    """One identification by the emulated firmware."""

    name: str
    slot: int
    score: int

    @property
    def known(self) -> bool:
        return self.name != UNKNOWN


@dataclass
class DotProductDB:
    """The populated slots of a dot-product layer: a name and an int8 row per slot.

    Attributes:
        names: slot names, in slot order (several slots may share a name).
        weights: int8 ``[n, D]`` rows at scale 256 (db_gen quantisation).
        profile: the firmware's constants (capacity, shift, threshold, addresses).
        threshold: int8 score a match must exceed (defaults to the profile's).
    """

    names: list[str]
    weights: np.ndarray
    profile: DotProductProfile = field(default_factory=lambda: PROFILES["max78000"])
    threshold: int | None = None

    def __post_init__(self) -> None:
        self.weights = np.asarray(self.weights)
        if self.weights.dtype != np.int8 or self.weights.ndim != 2:
            raise ConfigError(f"weights must be int8 [n, D], got {self.weights.dtype} {self.weights.shape}")
        if len(self.names) != len(self.weights):
            raise ConfigError(f"{len(self.names)} names for {len(self.weights)} slots")
        if len(self.weights) > self.profile.capacity:
            raise ConfigError(f"{len(self.weights)} slots exceed the layer's capacity of {self.profile.capacity}")
        if len(self.weights) and self.weights.shape[1] != self.profile.embedding_size:
            raise IncompatibleGalleryError(
                f"the {self.profile.name} dot-product layer takes {self.profile.embedding_size}-d embeddings, "
                f"got {self.weights.shape[1]}-d"
            )
        if self.threshold is None:
            self.threshold = self.profile.threshold

    def __len__(self) -> int:
        return len(self.names)

    @property
    def full_weights(self) -> np.ndarray:
        """``[capacity, D]`` rows as loaded into the layer (unused slots are zero)."""
        out = np.zeros((self.profile.capacity, self.profile.embedding_size), np.int8)
        out[: len(self.weights)] = self.weights
        return out

    def scores(self, probes: np.ndarray, *, quantized: bool = False) -> np.ndarray:
        """int8 scores ``[N, capacity]`` of probes (raw embeddings, normalised as the firmware does,
        unless ``quantized`` says they already are)."""
        q = np.atleast_2d(probes) if quantized else np.atleast_2d(quantize_probe(probes))
        return dot_product_scores(q, self.full_weights, self.profile.output_shift)

    def identify(self, probes: np.ndarray, *, quantized: bool = False,
                 threshold: int | None = None) -> list[MatchResult]:
        """Emulate the firmware on each probe: name of the best slot, or ``Unknown``."""
        thr = self.threshold if threshold is None else int(threshold)
        slot, mx, known = firmware_decision(self.scores(probes, quantized=quantized), thr)
        out = []
        for s, m, k in zip(slot.tolist(), mx.tolist(), known.tolist()):
            name = self.names[s] if k and s < len(self.names) else UNKNOWN
            out.append(MatchResult(name, int(s) if name != UNKNOWN else -1, int(m)))
        return out

    # ------------------------------------------------------------------ gallery interop
    @classmethod
    def from_gallery(cls, gallery, profile: str | DotProductProfile = "max78000", *,
                     capacity: int | None = None, threshold: int | None = None,
                     truncate_names: bool = True) -> "DotProductDB":
        """One slot per identity: its normalised template, quantised as db_gen does.

        Names are cut to the firmware's 6 characters; two identities whose cut names collide
        raise :class:`ConfigError` (the firmware could not tell them apart).
        """
        prof = get_profile(profile, capacity)
        if gallery.embedding_size != prof.embedding_size:
            raise IncompatibleGalleryError(
                f"the {prof.name} FaceID dot-product layer takes {prof.embedding_size}-d embeddings "
                f"(faceid_112); the gallery holds {gallery.embedding_size}-d embeddings of {gallery.model_id!r}"
            )
        if len(gallery) > prof.capacity:
            raise ConfigError(f"{len(gallery)} identities exceed the layer's {prof.capacity} slots")
        names = [_firmware_name(n, truncate_names) for n in gallery.names]
        seen: dict[str, str] = {}
        for full, short in zip(gallery.names, names):
            if short in seen:
                raise ConfigError(
                    f"identities {seen[short]!r} and {full!r} both become {short!r} in the firmware's "
                    f"{NAME_LEN}-character names; rename one"
                )
            seen[short] = full
        w = quantize_db_embeddings(gallery.templates) if len(gallery) else np.zeros((0, prof.embedding_size), np.int8)
        return cls(names, w, prof, threshold)

    def to_gallery(self, model_id: str = "ai85-faceid_112", **kw):
        """A core Gallery: each slot dequantised (÷256) and enrolled under its name (slots of one
        name are averaged, as ``Gallery.add`` does)."""
        from facesdk.gallery import Gallery

        g = Gallery(model_id, self.profile.embedding_size, **kw)
        by_name: dict[str, list[int]] = {}
        for i, n in enumerate(self.names):
            by_name.setdefault(n, []).append(i)
        for n, idx in by_name.items():
            rows = self.weights[idx].astype(np.float32) / DB_SCALE
            if not np.any(rows):
                raise GalleryError(f"slot(s) {idx} of {n!r} are all zero")
            g.add(n, rows)
        return g


def _firmware_name(name: str, truncate: bool = True) -> str:
    if not name or not all(32 <= ord(c) < 127 for c in name) or '"' in name or "\\" in name:
        raise ConfigError(f"name {name!r}: the firmware stores printable ASCII names without quotes or backslashes")
    if len(name) > NAME_LEN:
        if not truncate:
            raise ConfigError(f"name {name!r} is longer than the firmware's {NAME_LEN} characters")
        return name[:NAME_LEN]
    return name


# ============================================================================ weights_3.h
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


def _read(path: str | os.PathLike, text: bool = False) -> str | bytes:
    """File contents, or a one-line GalleryError naming the file."""
    try:
        p = Path(path)
        return p.read_text(encoding="ascii", errors="replace") if text else p.read_bytes()
    except OSError as exc:
        raise GalleryError(f"cannot read firmware database file {path}: {exc.strerror or exc}") from None


def _atomic_write(path: str | os.PathLike, data: bytes) -> Path:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=p.name + ".", suffix=".tmp", dir=p.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, p)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return p


def _c_words(tokens: Sequence[str], per_line: int = 8) -> str:
    lines = [", ".join(tokens[i : i + per_line]) for i in range(0, len(tokens), per_line)]
    return ", \\\n  ".join(lines)


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
    text = "#define KERNELS_3 { \\\n  " + _c_words(tokens) + " \\\n}\n"
    return _atomic_write(path, text.encode("ascii"))


def write_weights_bin(db: DotProductDB, path: str | os.PathLike) -> Path:
    """Write the ``weights_3.bin`` variant (data words only, little-endian, processor by processor)."""
    return _atomic_write(path, _processor_words(db).astype("<u4").tobytes())


_HEX = re.compile(r"0[xX]([0-9a-fA-F]+)")


def _define_body(text: str, macro: str, path: object) -> str:
    m = re.search(r"#define\s+" + macro + r"\s*\{(.*?)\}", text, re.S)
    if not m:
        raise GalleryError(f"{path}: no '#define {macro} {{...}}' found")
    return m.group(1)


def _detect_profile(addr: int) -> DotProductProfile:
    for prof in PROFILES.values():
        if addr in prof.baseaddr:
            return prof
    raise GalleryError(f"kernel address 0x{addr:08x} belongs to no known MAX7800x dot-product layout")


def read_weights_h(path: str | os.PathLike, *, capacity: int | None = None,
                   profile: str | DotProductProfile | None = None) -> tuple[np.ndarray, DotProductProfile]:
    """Parse ``weights_3.h`` → (int8 ``[capacity, 64]`` slot rows, profile).

    The profile is recognised from the kernel addresses unless given; ``capacity`` defaults to the
    profile's when it fits the word count, else to the largest slot count the words can hold.
    """
    text = _read(path, text=True)
    words = [int(h, 16) for h in _HEX.findall(_define_body(text, "KERNELS_3", path))]
    blocks: list[tuple[int, list[int]]] = []
    i = 0
    while i < len(words) and words[i] != 0:
        if i + 1 >= len(words):
            raise GalleryError(f"{path}: truncated KERNELS_3 (address without length)")
        addr, n = words[i], words[i + 1]
        if i + 2 + n > len(words):
            raise GalleryError(f"{path}: KERNELS_3 block at 0x{addr:08x} announces {n} words, file is shorter")
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


def read_weights_bin(path: str | os.PathLike, profile: str | DotProductProfile = "max78000",
                     capacity: int | None = None) -> np.ndarray:
    """Parse the ``.bin`` variant → int8 ``[capacity, 64]``."""
    prof = get_profile(profile, capacity)
    data = np.frombuffer(_read(path), "<u4")
    if data.size != prof.embedding_size * prof.words_per_processor:
        raise GalleryError(f"{path}: {data.size * 4} bytes, expected "
                           f"{prof.embedding_size * prof.words_per_processor * 4} for {prof.capacity} slots")
    out = np.zeros((prof.capacity, prof.embedding_size), np.uint8)
    for d, raw in enumerate(data.reshape(prof.embedding_size, -1)):
        b = np.stack([(raw >> s) & 0xFF for s in (24, 16, 8, 0)], 1).astype(np.uint8).ravel()
        out[:, d] = _unslot_bytes(b, prof.capacity)
    return out.view(np.int8)


# ============================================================================ embeddings.h
def write_embeddings_h(names: Sequence[str], path: str | os.PathLike) -> Path:
    """Write ``embeddings.h``: ``DEFAULT_EMBS_NUM`` and ``DEFAULT_NAMES`` (one name per slot)."""
    toks = [f'"{_firmware_name(n)}"' for n in names]
    lines = [", ".join(toks[i : i + 15]) for i in range(0, len(toks), 15)]
    if len(toks) % 15 == 0:
        lines.append("")  # db_gen always closes with the (here empty) last line: byte-identical output
    text = (f"#define DEFAULT_EMBS_NUM {len(names)} \n\n#define DEFAULT_NAMES {{ \\\n "
            + ", \\\n ".join(lines) + " \\\n}\n")
    return _atomic_write(path, text.encode("ascii"))


def read_embeddings_h(path: str | os.PathLike) -> list[str]:
    """Parse ``embeddings.h`` → slot names (checks ``DEFAULT_EMBS_NUM``)."""
    text = _read(path, text=True)
    m = re.search(r"#define\s+DEFAULT_EMBS_NUM\s+(\d+)", text)
    if not m:
        raise GalleryError(f"{path}: no '#define DEFAULT_EMBS_NUM <n>' found")
    names = re.findall(r'"((?:[^"\\]|\\.)*)"', _define_body(text, "DEFAULT_NAMES", path))
    if len(names) != int(m.group(1)):
        raise GalleryError(f"{path}: DEFAULT_EMBS_NUM is {m.group(1)} but {len(names)} names are listed")
    return names


# ============================================================================ flash records
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
    recs = _records([_firmware_name(n) for n in names])
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
        return _atomic_write(path, _ihex(image, STATUS_ADDRESS).encode("ascii"))
    return _atomic_write(path, image)


def read_flash_db(path: str | os.PathLike) -> tuple[list[str], np.ndarray]:
    """Read a record-mode database (raw image from ``STATUS_ADDRESS`` or Intel HEX) → names, int8 rows."""
    p = Path(path)
    size = (DB_PAGES + 1) * FLASH_PAGE
    if p.suffix.lower() == ".hex":
        mem = _read_ihex(_read(p, text=True), p)
        image = bytearray(b"\xff" * size)
        for a, b in mem.items():
            if STATUS_ADDRESS <= a < STATUS_ADDRESS + size:
                image[a - STATUS_ADDRESS] = b
    else:
        image = bytearray(_read(p))
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


# ============================================================================ high level
def export_firmware_db(gallery, out_dir: str | os.PathLike, profile: str = "max78000", *,
                       capacity: int | None = None, threshold: int | None = None,
                       flash: bool = False, weights_bin: bool = False) -> dict[str, Path]:
    """Export a gallery as ``weights_3.h`` + ``embeddings.h`` (and optionally ``weights_3.bin`` and
    the MAX78002 record-mode flash image ``facedb_flash.hex``) into ``out_dir``."""
    db = DotProductDB.from_gallery(gallery, profile, capacity=capacity, threshold=threshold)
    out = Path(out_dir)
    files = {
        "weights_h": write_weights_h(db, out / "weights_3.h"),
        "embeddings_h": write_embeddings_h(db.names, out / "embeddings.h"),
    }
    if weights_bin:
        files["weights_bin"] = write_weights_bin(db, out / "weights_3.bin")
    if flash:
        files["flash"] = write_flash_db(db.names, db.weights, out / "facedb_flash.hex")
    log.info("exported %d identities for %s to %s", len(db), db.profile.name, out)
    return files


def import_firmware_db(weights_h: str | os.PathLike | None = None,
                       embeddings_h: str | os.PathLike | None = None, *,
                       flash: str | os.PathLike | None = None, capacity: int | None = None,
                       profile: str | None = None) -> DotProductDB:
    """Read firmware database files back into a :class:`DotProductDB`.

    Either ``weights_3.h`` + ``embeddings.h`` (the default slots), a record-mode ``flash`` image, or
    both (recorded slots follow the default ones, as the firmware loads them).
    """
    names: list[str] = []
    rows = np.zeros((0, 64), np.int8)
    prof = get_profile(profile or "max78000", capacity)
    if weights_h is not None or embeddings_h is not None:
        if weights_h is None or embeddings_h is None:
            raise ConfigError("weights_3.h and embeddings.h are read together")
        full, prof = read_weights_h(weights_h, capacity=capacity, profile=profile)
        names = read_embeddings_h(embeddings_h)
        if len(names) > len(full):
            raise GalleryError(f"{embeddings_h} names {len(names)} slots; {weights_h} holds {len(full)}")
        rows = full[: len(names)]
    if flash is not None:
        fn, fw = read_flash_db(flash)
        if profile is None and weights_h is None:
            prof = get_profile("max78002", capacity)
        names, rows = names + fn, np.concatenate([rows, fw])
    if weights_h is None and flash is None:
        raise ConfigError("nothing to import: give weights_3.h + embeddings.h and/or a flash image")
    return DotProductDB(names, rows, prof)


def load_dot_checkpoint(path: str | os.PathLike, names: Iterable[str] | None = None) -> DotProductDB:
    """The populated (non-zero) rows of an ``ai8{5,7}-dot_emb_112`` checkpoint as a database.

    Uses the backend's restricted checkpoint reader (no code execution). Slot names default to
    ``s000``, ``s001``, …
    """
    from .checkpoint import load_state_dict  # the backend's restricted (no-code) unpickler

    sd, _meta = load_state_dict(path)
    if "dot.op.weight" not in sd:
        raise GalleryError(f"{path}: not a dot-product checkpoint (no dot.op.weight)")
    w = np.asarray(sd["dot.op.weight"], np.float32)
    w = w.reshape(w.shape[0], -1)
    if not np.array_equal(w, np.round(w)) or w.min() < -128 or w.max() > 127:
        raise GalleryError(f"{path}: dot.op.weight is not 8-bit integer valued")
    shift = int(np.asarray(sd.get("dot.output_shift", -1)).ravel()[0])
    used = np.flatnonzero(np.any(w != 0, axis=1))
    if len(used) and used[-1] != len(used) - 1:
        log.warning("%s: populated slots are not contiguous", path)
    prof = get_profile("max78002" if w.shape[0] > 512 else "max78000", w.shape[0])
    prof = DotProductProfile(prof.name, prof.capacity, prof.threshold, prof.baseaddr, w.shape[1], shift)
    nm = list(names) if names is not None else [f"s{i:03d}" for i in used]
    if len(nm) != len(used):
        raise ConfigError(f"{len(nm)} names for {len(used)} populated slots")
    return DotProductDB(nm, w[used].astype(np.int8), prof)


# ============================================================================ core Gallery, firmware way
def float_threshold_to_score(threshold: float) -> int:
    """The int8 firmware threshold ``t`` for a cosine threshold: ``t = floor(128·threshold)``.

    The firmware's ``score > t`` (⇔ ``score ≥ t + 1``, with ``score ≈ 128·cos``) then corresponds to
    ``cos ≥ (t + 0.5)/128`` (:func:`score_threshold_to_float`), within half a score unit of ``threshold``.
    """
    if not math.isfinite(threshold):
        raise ConfigError(f"threshold must be finite, got {threshold}")
    return int(np.clip(math.floor(128 * float(threshold)), -128, 127))


def score_threshold_to_float(threshold: int) -> float:
    """Cosine threshold equivalent to the firmware's ``score > threshold``: ``(threshold + 0.5) / 128``."""
    return (int(threshold) + 0.5) / 128


class FirmwareGalleryScorer:
    """Scores a core :class:`facesdk.gallery.Gallery` the way the FaceID firmware does.

    Each identity's template (the gallery's normalised mean) becomes one dot-product slot,
    quantised as db_gen does (:func:`quantize_db_embeddings`); a probe is normalised as the
    firmware's CPU does (:func:`quantize_probe`); the score is the dot-product layer's int8 output
    (:func:`dot_product_scores`) and the decision the firmware's rule (:func:`firmware_decision`:
    first slot with the largest score, known if ``score > threshold``). The integer path is exact:
    the scores equal those of the exported ``weights_3.h`` run through the emulated layer.

    Precise relation to the float gallery (which decides ``cos_best >= gallery threshold``): with
    ``q = 128·probe/‖probe‖`` truncated (|error| < 1 per component) and the slot row
    ``r = 256·template + ε`` (``ε`` the rounding/clipping error, known), the accumulator
    ``Σ r·q`` differs from ``256·128·cos`` by at most ``‖r‖₁ + 128·‖ε‖₂``, so the int8 score differs
    from ``128·cos`` by at most :meth:`error_bound` ``= (‖r‖₁ + 128·‖ε‖₂)/256 + 0.5`` score units
    per slot (≈ 8 units = 0.06 in cosine for 64-d rows; ≈ 23 for 512-d). Hence the float
    gallery's decision (``cos_best >= gallery.threshold``, best identity by cosine) and the
    firmware's are *guaranteed* equal whenever ``128·cos_best`` is farther than that bound from
    ``t + 0.5`` (and on the same side of ``128·gallery.threshold``, which is within 0.5 of it when
    ``t`` is derived from the gallery) and, for a known face, the best two cosines are more than
    twice the bound apart (:meth:`guaranteed_agreement`). Inside that margin they may differ:
    that is quantisation, not a bug.

    Args:
        gallery: a core Gallery (any embedding size).
        threshold: int8 firmware threshold; default: from the gallery's cosine threshold
            (:func:`float_threshold_to_score`).
        output_shift: the dot-product layer's ``output_shift`` (−1 in the msdk demos: score ≈ 128·cos).
    """

    def __init__(self, gallery, threshold: int | None = None, *, output_shift: int = -1) -> None:
        self.gallery = gallery
        self.names: list[str] = gallery.names
        self.output_shift = int(output_shift)
        self.threshold = float_threshold_to_score(gallery.threshold) if threshold is None else int(threshold)
        if not -128 <= self.threshold <= 127:
            raise ConfigError(f"firmware threshold {self.threshold} outside -128..127")
        d = gallery.embedding_size
        if len(self.names):
            t = np.asarray(gallery.templates, np.float64)
            self.rows = quantize_db_embeddings(t)
            tn = t / np.linalg.norm(t, axis=1, keepdims=True)
            eps = self.rows.astype(np.float64) - DB_SCALE * tn
            err_acc = np.abs(self.rows.astype(np.float64)).sum(1) + PROBE_SCALE * np.linalg.norm(eps, axis=1)
            self._bound = err_acc / 2.0 ** (7 - self.output_shift) + 0.5
        else:
            self.rows = np.zeros((0, d), np.int8)
            self._bound = np.zeros(0)

    def __len__(self) -> int:
        return len(self.names)

    @property
    def float_threshold(self) -> float:
        """The cosine threshold the integer rule corresponds to, ``(threshold + 0.5) / 128``."""
        return score_threshold_to_float(self.threshold)

    def to_db(self, profile: str | DotProductProfile = "max78000") -> DotProductDB:
        """The same slots as a :class:`DotProductDB` (for export); 64-d galleries only."""
        prof = get_profile(profile, max(len(self), 1) if len(self) > get_profile(profile).capacity else None)
        return DotProductDB(list(self.names), self.rows, prof, self.threshold)

    def scores(self, probes: np.ndarray) -> np.ndarray:
        """int8 firmware scores ``[N, K]`` of raw probe embeddings (int8 network outputs or floats)."""
        p = np.atleast_2d(np.asarray(probes))
        if p.shape[1] != self.gallery.embedding_size:
            raise IncompatibleGalleryError(
                f"probes are {p.shape[1]}-d, the gallery {self.gallery.embedding_size}-d")
        return dot_product_scores(quantize_probe(p), self.rows, self.output_shift)

    def error_bound(self) -> np.ndarray:
        """Per slot: the largest possible ``|score − 128·cos|`` (score units), see the class doc."""
        return self._bound.copy()

    def identify(self, probes: np.ndarray):
        """Firmware decisions as core :class:`facesdk.gallery.Match` objects; ``similarity`` is
        ``score / 128`` and ``top_k`` the five best slots by score."""
        from facesdk.gallery import Match

        s = self.scores(probes)
        if not len(self):
            return [Match(UNKNOWN, -1.0, []) for _ in range(len(s))]
        slot, mx, known = firmware_decision(s, self.threshold)
        order = np.argsort(-s.astype(np.int16), axis=1, kind="stable")[:, :5]
        out = []
        for i in range(len(s)):
            top = [(self.names[j], float(s[i, j]) / PROBE_SCALE) for j in order[i]]
            name = self.names[int(slot[i])] if known[i] else UNKNOWN
            out.append(Match(name, float(mx[i]) / PROBE_SCALE, top))
        return out

    def guaranteed_agreement(self, probes: np.ndarray) -> np.ndarray:
        """Boolean ``[N]``: probes for which the float gallery (threshold ``float_threshold``) and
        the firmware rule provably decide the same, by the bound of :meth:`error_bound`."""
        if self.output_shift != -1:
            raise ConfigError("the agreement guarantee is stated for the firmware's output_shift -1")
        if not len(self):
            return np.ones(len(np.atleast_2d(probes)), bool)
        # score ≈ 128·cos
        c = 128.0 * np.asarray(self.gallery.similarities(np.atleast_2d(probes)), np.float64)
        b = float(self._bound.max())
        srt = np.sort(c, axis=1)
        best = srt[:, -1]
        second = srt[:, -2] if c.shape[1] > 1 else np.full(len(c), -np.inf)
        g = 128.0 * self.gallery.threshold  # the float gallery: known iff 128·cos_best >= g
        known = best >= max(self.threshold + 0.5 + b, g)
        unknown = best < min(self.threshold + 0.5 - b, g)
        return unknown | (known & (best - second > 2 * b))
