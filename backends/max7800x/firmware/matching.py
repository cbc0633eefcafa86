"""The firmware's matching rule: db_gen's row quantisation, the CPU's probe normalisation, the
dot-product layer's arithmetic and the firmware's decision (facts: msdk ``db_gen/utils.py``,
``faceID.c``; see the package docstring).
"""

from __future__ import annotations

import numpy as np

from facesdk.errors import ConfigError, IncompatibleGalleryError

from .profiles import DB_SCALE

__all__ = ['quantize_db_embeddings', 'quantize_probe', 'dot_product_scores', 'firmware_decision']


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
