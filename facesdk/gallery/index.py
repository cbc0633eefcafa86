"""Exact inner-product (cosine) search over a contiguous, pre-normalised matrix.

The rows live in one C-contiguous buffer that grows by capacity doubling, so ``n`` appends cost
amortised O(1) each (the dynamic-array argument, Cormen et al., *Introduction to Algorithms*,
3rd ed., §17.4). A batch of ``Q`` queries is scored with one matrix product (``[Q,D] @ [D,n]``,
BLAS sgemm/sgemv), block by block over the rows so the score block stays small; the best ``k`` of
each block are picked by partial selection (``numpy.argpartition``, introselect, O(n)) and the
blocks' winners are merged. Scores of L2-normalised vectors are cosine similarities.

Optional compressed copies for the scan: ``fp16`` (IEEE half) or ``int8`` (symmetric per-row
scale, ``q = round(127 * x / max|x|)``, as in scalar quantisation, Jégou et al., "Product
quantization for nearest neighbor search", TPAMI 2011, §II). A compressed scan only proposes a
short list (``k + rerank`` rows per query); the short list is re-scored exactly in fp32, so the
returned scores are exact fp32 cosines, and the top-1 equals the fp32 scan's whenever the true
best row is in the short list (its compressed score error is bounded by the quantisation step).
"""

from __future__ import annotations

import threading
from typing import NamedTuple

import numpy as np

from ..errors import ConfigError

__all__ = ["STORAGES", "ExactIndex", "TopK"]

STORAGES = ("fp32", "fp16", "int8")
#: Score-block budget (elements of the ``[Q, rows]`` block) per matrix product: 4 M floats = 16 MiB.
BLOCK_ELEMENTS = 4 << 20


class TopK(NamedTuple):
    """Row indices ``[Q, k]`` and their exact fp32 scores, best first (``-1`` / ``-inf`` pad)."""

    rows: np.ndarray
    scores: np.ndarray


def _topk_rows(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Best ``k`` columns per row of a score block (unsorted), by partial selection."""
    n = scores.shape[1]
    if k >= n:
        idx = np.broadcast_to(np.arange(n), scores.shape).copy()
    else:
        idx = np.argpartition(scores, n - k, axis=1)[:, n - k:]
    return idx, np.take_along_axis(scores, idx, axis=1)


class ExactIndex:
    """A growable ``[n, D]`` float32 matrix of unit rows with exact top-K inner-product search.

    Args:
        dim: D.
        storage: ``fp32`` (exact scan), ``fp16`` or ``int8`` (compressed scan + exact re-ranking).
        rerank: extra short-list rows per query for compressed scans.

    Every method takes :attr:`lock` (re-entrant); a caller that mixes writes and searches from several
    threads holds it (or its own lock) around each call, as the gallery stores do.
    """

    def __init__(self, dim: int, *, storage: str = "fp32", rerank: int = 64, capacity: int = 0) -> None:
        if dim <= 0:
            raise ConfigError("dim must be positive")
        if storage not in STORAGES:
            raise ConfigError(f"storage must be one of {STORAGES}, got {storage!r}")
        self.dim = int(dim)
        self.storage = storage
        self.rerank = int(rerank)
        self.lock = threading.RLock()
        self._n = 0
        self._buf = np.zeros((max(int(capacity), 0), self.dim), np.float32)
        self._q: np.ndarray | None = None
        self._qscale: np.ndarray | None = None
        if storage == "fp16":
            self._q = np.zeros((len(self._buf), self.dim), np.float16)
        elif storage == "int8":
            self._q = np.zeros((len(self._buf), self.dim), np.int8)
            self._qscale = np.zeros((len(self._buf),), np.float32)

    # ------------------------------------------------------------------ content
    def __len__(self) -> int:
        return self._n

    @property
    def capacity(self) -> int:
        return len(self._buf)

    @property
    def matrix(self) -> np.ndarray:
        """The ``[n, D]`` fp32 rows (a read-only view)."""
        v = self._buf[: self._n]
        v.flags.writeable = False
        return v

    def nbytes(self) -> int:
        """Bytes held (fp32 rows plus the compressed copy), capacity included."""
        return int(self._buf.nbytes + (self._q.nbytes if self._q is not None else 0)
                   + (self._qscale.nbytes if self._qscale is not None else 0))

    def _grow(self, need: int) -> None:
        cap = max(self.capacity, 16)
        while cap < need:
            cap *= 2
        if cap == self.capacity:
            return
        buf = np.empty((cap, self.dim), np.float32)
        buf[: self._n] = self._buf[: self._n]
        self._buf = buf
        if self._q is not None:
            q = np.empty((cap, self.dim), self._q.dtype)
            q[: self._n] = self._q[: self._n]
            self._q = q
        if self._qscale is not None:
            s = np.empty((cap,), np.float32)
            s[: self._n] = self._qscale[: self._n]
            self._qscale = s

    def _encode(self, rows: np.ndarray, start: int) -> None:
        if self._q is None:
            return
        end = start + len(rows)
        if self.storage == "fp16":
            self._q[start:end] = rows.astype(np.float16)
        else:
            amax = np.maximum(np.abs(rows).max(axis=1), 1e-12).astype(np.float32)
            self._q[start:end] = np.rint(rows * (127.0 / amax)[:, None]).astype(np.int8)
            self._qscale[start:end] = amax / 127.0  # type: ignore[index]

    def append(self, rows: np.ndarray) -> None:
        """Append ``[m, D]`` rows (already L2-normalised float32); amortised O(1) per row."""
        rows = np.asarray(rows, np.float32).reshape(-1, self.dim)
        with self.lock:
            need = self._n + len(rows)
            if need > self.capacity:
                self._grow(need)
            self._buf[self._n: need] = rows
            self._encode(rows, self._n)
            self._n = need

    def replace(self, rows: np.ndarray | list[int], vecs: np.ndarray) -> None:
        """Overwrite rows in place with new (normalised) vectors."""
        rows = np.asarray(rows, np.int64).reshape(-1)
        vecs = np.asarray(vecs, np.float32).reshape(len(rows), self.dim)
        with self.lock:
            if len(rows) and (rows.min() < 0 or rows.max() >= self._n):
                raise IndexError("row out of range")
            self._buf[rows] = vecs
            if self._q is not None:
                tmp = self._buf[rows]
                for r, v in zip(rows, tmp):
                    self._encode(v[None], int(r))

    def delete(self, rows: np.ndarray | list[int]) -> None:
        """Remove rows, keeping the order of the others (O(n))."""
        with self.lock:
            keep = np.ones(self._n, bool)
            keep[np.asarray(rows, np.int64)] = False
            self._rebuild(keep)

    def _rebuild(self, keep: np.ndarray) -> None:
        new = self._buf[: self._n][keep]
        cap = max(16, len(new))
        buf = np.zeros((cap, self.dim), np.float32)
        buf[: len(new)] = new
        self._buf, self._n = buf, len(new)
        if self._q is not None:
            self._q = np.zeros((cap, self.dim), self._q.dtype)
            if self._qscale is not None:
                self._qscale = np.zeros((cap,), np.float32)
            self._encode(new, 0)

    def clear(self) -> None:
        with self.lock:
            self._rebuild(np.zeros(self._n, bool))

    # ------------------------------------------------------------------ search
    def snapshot(self) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
        """Consistent views ``(fp32 rows, compressed rows, int8 scales)`` of the current ``n`` rows."""
        with self.lock:
            n = self._n
            return (
                self._buf[:n],
                None if self._q is None else self._q[:n],
                None if self._qscale is None else self._qscale[:n],
            )

    def scores(self, queries: np.ndarray) -> np.ndarray:
        """Exact ``[Q, n]`` fp32 inner products of (normalised) queries with every row."""
        q = np.ascontiguousarray(queries, np.float32).reshape(-1, self.dim)
        with self.lock:
            return q @ self._buf[: self._n].T

    def search(self, queries: np.ndarray, k: int) -> TopK:
        """Best ``k`` rows per query by exact fp32 score, best first (ties: lower row first)."""
        q = np.ascontiguousarray(queries, np.float32).reshape(-1, self.dim)
        with self.lock:
            return self._search(q, k)

    def _search(self, q: np.ndarray, k: int) -> TopK:
        mat, comp, scale = self.snapshot()
        n, nq = len(mat), len(q)
        k = int(min(max(k, 0), n))
        if k == 0 or nq == 0:
            return TopK(np.zeros((nq, 0), np.int64), np.zeros((nq, 0), np.float32))
        short = k if comp is None else min(n, k + self.rerank)
        block = max(1024, BLOCK_ELEMENTS // max(nq, 1))
        best_v = np.full((nq, short), -np.inf, np.float32)
        best_i = np.full((nq, short), -1, np.int64)
        out = np.empty((nq, min(block, n)), np.float32)  # reused: no page faults per block
        for start in range(0, n, block):
            stop = min(n, start + block)
            if comp is None:
                s = np.matmul(q, mat[start:stop].T, out=out[:, : stop - start])
            elif scale is None:  # fp16: widen the block, one sgemm
                s = q @ comp[start:stop].astype(np.float32).T
            else:  # int8: widen, sgemm, per-row scale
                s = (q @ comp[start:stop].astype(np.float32).T) * scale[start:stop]
            best_v, best_i = _merge_block(s, start, best_v, best_i)
        idx, val = best_i, best_v
        if comp is not None:  # exact fp32 re-ranking of the short list
            val = np.einsum("qd,qkd->qk", q, mat[idx])
        # best first; ties by row index for determinism
        order = np.lexsort((idx, -val), axis=1)[:, :k]
        idx = np.take_along_axis(idx, order, axis=1)
        val = np.take_along_axis(val, order, axis=1)
        return TopK(idx.astype(np.int64), val.astype(np.float32))


def _merge_block(
    s: np.ndarray, start: int, best_v: np.ndarray, best_i: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Merge a score block ``[Q, B]`` into the running top-``k`` (``best_v``/``best_i``, ``[Q, k]``).

    Only scores at least the current k-th best can enter. Before any block, the k-th best of the
    block's first 4,096 columns is a valid lower bound of the final k-th best (it is the k-th best
    of a subset), so one vectorised comparison per row leaves a few candidates and partial
    selection runs on those alone instead of on the whole block.
    """
    nq, k = best_v.shape
    thr = best_v.min(axis=1)
    if not np.isfinite(thr).all() and s.shape[1] >= k:
        sub = s[:, : max(k, 4096)]
        thr = np.maximum(thr, np.partition(sub, sub.shape[1] - k, axis=1)[:, sub.shape[1] - k])
    for i in range(nq):  # per row: 2-D nonzero is far slower than a loop of 1-D ones
        c = np.flatnonzero(s[i] >= thr[i])
        if not len(c):
            continue
        v = np.concatenate([best_v[i], s[i, c]])
        ix = np.concatenate([best_i[i], c + start])
        sel = np.argpartition(v, len(v) - k)[len(v) - k:]
        best_v[i], best_i[i] = v[sel], ix[sel]
    return best_v, best_i
