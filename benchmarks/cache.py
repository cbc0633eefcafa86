"""On-disk embedding cache, resumable after interruption.

One directory per namespace ``(model id, backend, precision, detector, variant)``
under the cache root; inside, numbered ``chunk-NNNNNN.npz`` files, each written
atomically (:mod:`facesdk.fileio`), holding for a batch of images:

* ``keys``: the sha256 of each source image file (hex, str);
* ``emb``: float32 ``[n, D]`` L2-normalised embeddings;
* ``box``, ``landmarks``, ``score``: the face used (float32);
* ``fallback``: bool, True when no face was detected and the fixed-box fallback
  was used; ``faces``: number of detections in the image.

A run that is killed loses at most the chunk in progress. Processes sharing a cache
never overwrite each other's chunks (a chunk is published with ``os.link``, which
fails when the name is taken). Arrays are loaded
with ``allow_pickle=False``.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np

from facesdk.fileio import publish_new, temp_beside


__all__ = ["FaceRecord", "EmbeddingCache", "file_sha256", "default_cache_root"]

log = logging.getLogger(__name__)


def default_cache_root() -> Path:
    """``$FACESDK_BENCH_CACHE``, else ``~/.cache/facesdk/bench``."""
    env = os.environ.get("FACESDK_BENCH_CACHE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "facesdk" / "bench"


def file_sha256(path: str | Path) -> str:
    """sha256 of a file's bytes (hex)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@dataclass
class FaceRecord:
    """The embedding of one image and the face it came from."""

    emb: np.ndarray
    box: np.ndarray
    landmarks: np.ndarray
    score: float
    fallback: bool
    faces: int


def _safe(part: str) -> str:
    return re.sub(r"[^A-Za-z0-9._+-]+", "_", part) or "_"


class EmbeddingCache:
    """Embeddings keyed by image sha256 within one (model, backend, precision, detector, variant)."""

    def __init__(self, root: str | Path, model: str, backend: str, precision: str, detector: str = "",
                 variant: str = "orig", chunk_size: int = 256) -> None:
        parts = [model, backend, precision] + ([detector] if detector else []) + [variant]
        self.namespace = "__".join(_safe(p) for p in parts)
        self.dir = Path(root) / self.namespace
        self.dir.mkdir(parents=True, exist_ok=True)
        self.chunk_size = int(chunk_size)
        self._data: dict[str, FaceRecord] = {}
        self._pending: dict[str, FaceRecord] = {}
        self._load()

    def _chunks(self) -> list[Path]:
        return sorted(self.dir.glob("chunk-*.npz"))

    def _load(self) -> None:
        for p in self._chunks():
            try:
                with np.load(p, allow_pickle=False) as z:
                    # each z[name] decompresses the whole array: read every array once per chunk
                    keys, emb, box, lm = z["keys"], z["emb"], z["box"], z["landmarks"]
                    score, fb, faces = z["score"], z["fallback"], z["faces"]
                for i, k in enumerate(keys):
                    self._data[str(k)] = FaceRecord(
                        emb[i], box[i], lm[i], float(score[i]), bool(fb[i]), int(faces[i]),
                    )
            except Exception as exc:  # a torn or foreign file: ignore it, its images are recomputed
                log.warning("ignoring unreadable cache chunk %s: %s", p, exc)
        if self._data:
            log.info("embedding cache %s: %d images", self.namespace, len(self._data))

    def __len__(self) -> int:
        return len(self._data) + len(self._pending)

    def __contains__(self, key: object) -> bool:
        return key in self._data or key in self._pending

    def get(self, key: str) -> FaceRecord | None:
        return self._data.get(key) or self._pending.get(key)

    def missing(self, keys: Iterable[str]) -> list[str]:
        """Keys not cached yet (order kept, duplicates removed)."""
        return [k for k in dict.fromkeys(keys) if k not in self]

    def put(self, key: str, rec: FaceRecord) -> None:
        """Add one record; a full chunk is flushed to disk."""
        self._pending[key] = rec
        if len(self._pending) >= self.chunk_size:
            self.flush()

    def flush(self) -> None:
        """Write pending records as a new chunk, atomically."""
        if not self._pending:
            return
        existing = [int(p.stem.split("-")[1]) for p in self._chunks() if p.stem.split("-")[1].isdigit()]
        n = (max(existing) + 1) if existing else 0
        recs = list(self._pending.items())
        arrays = {
            "keys": np.array([k for k, _ in recs], dtype="U64"),
            "emb": np.stack([r.emb for _, r in recs]).astype(np.float32),
            "box": np.stack([r.box for _, r in recs]).astype(np.float32),
            "landmarks": np.stack([r.landmarks for _, r in recs]).astype(np.float32),
            "score": np.array([r.score for _, r in recs], np.float32),
            "fallback": np.array([r.fallback for _, r in recs], bool),
            "faces": np.array([r.faces for _, r in recs], np.int32),
        }
        # several processes may share a cache: never overwrite another one's chunk (publish_new fails
        # if the name exists; then take the next number)
        with temp_beside(self.dir / "chunk.npz") as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, **arrays)
            for _ in range(10000):
                if publish_new(tmp, self.dir / f"chunk-{n:06d}.npz"):
                    break
                n += 1
        self._data.update(self._pending)
        self._pending.clear()

    def matrix(self, keys: list[str]) -> np.ndarray:
        """Embeddings ``[len(keys), D]`` in the order of ``keys`` (all must be cached)."""
        return np.stack([self.get(k).emb for k in keys])  # type: ignore[union-attr]
