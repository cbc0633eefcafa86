"""The firmware's matching rule: db_gen's row quantisation, the CPU's probe normalisation, the
dot-product layer's arithmetic and the firmware's decision (facts: msdk ``db_gen/utils.py``,
``faceID.c``; see the package docstring).
"""

from __future__ import annotations

import numpy as np

from facesdk.errors import ConfigError, IncompatibleGalleryError

from .profiles import DB_SCALE

DB_OUTPUT_SHIFT = DB_SCALE // 128  # db_gen's output_shift = 2 (CNN_3_OUTPUT_SHIFT)

__all__ = ['quantize_db_embeddings', 'quantize_probe', 'dot_product_scores', 'firmware_decision']


def quantize_db_embeddings(embeddings: np.ndarray) -> np.ndarray:
    """Embeddings ``[N, D]`` → int8 database rows exactly as db_gen makes them (scale 256).

    db_gen (msdk ``facial_recognition/db_gen/utils.py``, ``append_db_file_from_path``) takes the
    network's output after ``F.normalize`` (``ai85net_faceid_112.py``: float32 ``x / ||x||``), then in
    float32: ``* 128 * output_shift`` (2), ``np.clip(-128, 127)``, ``+= 256`` where negative (a float32
    addition, which rounds), ``np.around`` (half to even) and ``astype(np.uint8)`` (256 wraps to 0);
    the byte is the int8 weight. Rounding *after* adding 256 differs from rounding the signed value
    where the float32 sum lands on (or rounds to) a half, so the order is kept here.

    Rows may be the network's raw integer output (normalised here as ``F.normalize`` does: float32
    division by the float32 square root of the exact sum of squares) or float rows. A float row of
    unit norm (within 1e-5: this library's embeddings, ``facesdk.gallery.l2_normalize``, are the same
    float32 ``x / ||x||``) is used as it is; another float row (a mean template) is first divided by
    its float32 norm.
    """
    e = np.asarray(embeddings)
    if e.ndim == 1:
        e = e[None]
    if e.ndim != 2 or e.dtype.kind not in "iuf" or (e.dtype.kind == "f" and not np.isfinite(e).all()):
        raise ConfigError(f"embeddings must be a finite numeric [N, D] array, got {e.dtype} {e.shape}")
    if e.dtype.kind in "iu":
        ss = (e.astype(np.int64) ** 2).sum(1)
        if (np.abs(e) >= (1 << 24)).any():
            raise ConfigError("integer embeddings must lie within +-2**24")
        v = e.astype(np.float32)
        n = np.sqrt(ss.astype(np.float64)).astype(np.float32)  # correctly rounded float32 sqrt
        unit = np.zeros(len(e), bool)
    else:
        v = e.astype(np.float32)
        n = np.sqrt((v.astype(np.float64) ** 2).sum(1)).astype(np.float32)
        unit = np.abs(n.astype(np.float64) - 1.0) <= 1e-5
    if (n == 0).any():
        raise ConfigError("cannot quantise an all-zero embedding")
    x = np.where(unit[:, None], v, v / np.where(unit, np.float32(1), n)[:, None]).astype(np.float32)
    q = np.clip(x * np.float32(128) * np.float32(DB_OUTPUT_SHIFT), np.float32(-128), np.float32(127))
    q = np.where(q < 0, q + np.float32(256), q).astype(np.float32)
    r = np.around(q).astype(np.int64)  # float32 half to even; 256 (from -0.5 < q < 0) wraps to 0
    return (r & 0xFF).astype(np.uint8).view(np.int8)


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
