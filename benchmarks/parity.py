"""Parity: the same aligned faces through every backend, compared with the reference backend.

The reference recogniser detects and aligns once; its crops are then embedded
by every other embedder (other backends, precisions, or a peer runtime). Per
embedder: mean/min cosine to the reference embeddings, max absolute element
difference, and — for pairs whose two images are both in the set — how many
same/different decisions flip at the reference threshold.
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Sequence

import numpy as np

from facesdk.align import align_face
from facesdk.errors import ConfigError
from facesdk.gallery import l2_normalize
from facesdk.image import load_image

from .datasets import Dataset, PairList
from .protocols import fallback_face, select_center

__all__ = ["reference_crops", "compare_embeddings", "run_parity"]

log = logging.getLogger(__name__)

EmbedFn = Callable[[np.ndarray], np.ndarray]


def reference_crops(rec: Any, dataset: Dataset, keys: Sequence[str]) -> tuple[np.ndarray, int]:
    """Aligned crops ``[N,h,w,3]`` from the reference recogniser, and how many used the fallback box."""
    crops, fallbacks = [], 0
    for k in keys:
        img = load_image(dataset.path(k))
        dets = rec.detector.detect(img)
        if dets:
            d = select_center(dets, img.shape)
            box, lm = d.box, d.landmarks
        else:
            box, lm = fallback_face(img.shape, rec.template)
            fallbacks += 1
        crops.append(align_face(img, box, lm, rec.template))
    return np.stack(crops), fallbacks


def compare_embeddings(ref: np.ndarray, other: np.ndarray) -> dict[str, float]:
    """Cosine statistics and max abs difference of two ``[N, D]`` embedding sets (both L2-normalised
    first).
    """
    if ref.shape != other.shape:
        raise ConfigError(f"embedding shapes differ: {ref.shape} vs {other.shape}")
    a, b = l2_normalize(ref), l2_normalize(other)
    cos = np.einsum("ij,ij->i", a, b)
    return {
        "mean_cosine": float(cos.mean()),
        "min_cosine": float(cos.min()),
        "max_abs_diff": float(np.abs(a - b).max()),
    }


def run_parity(
    ref_name: str,
    ref_embed: EmbedFn,
    others: dict[str, EmbedFn],
    crops: np.ndarray,
    keys: Sequence[str],
    pairs: PairList | None = None,
    threshold: float | None = None,
) -> dict[str, Any]:
    """Compare each embedder in ``others`` with the reference on the same crops."""
    ref = ref_embed(crops)
    pos = {k: i for i, k in enumerate(keys)}
    pair_idx: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
    if pairs is not None:
        sel = [(pos[a], pos[b], s) for a, b, s in zip(pairs.a, pairs.b, pairs.same) if a in pos and b in pos]
        if sel:
            ia, ib, lab = (np.array(x) for x in zip(*sel))
            pair_idx = (ia, ib, lab.astype(bool))
    rows = []
    for name, fn in others.items():
        row: dict[str, Any] = {"embedder": name, "reference": ref_name, "faces": int(len(crops))}
        try:
            emb = fn(crops)
        except Exception as exc:  # one failing backend must not end the report
            log.warning("parity: %s failed: %s", name, exc)
            row["error"] = f"{type(exc).__name__}: {exc}"
            rows.append(row)
            continue
        row.update(compare_embeddings(ref, emb))
        if pair_idx is not None and threshold is not None:
            ia, ib, lab = pair_idx
            s_ref = np.einsum("ij,ij->i", l2_normalize(ref[ia]), l2_normalize(ref[ib]))
            s_oth = np.einsum("ij,ij->i", l2_normalize(emb[ia]), l2_normalize(emb[ib]))
            flips = (s_ref >= threshold) != (s_oth >= threshold)
            row.update(
                {
                    "pairs": int(len(ia)),
                    "threshold": float(threshold),
                    "decision_flips": int(flips.sum()),
                    "max_pair_score_diff": float(np.abs(s_ref - s_oth).max()),
                    "accuracy_reference": float(((s_ref >= threshold) == lab).mean()),
                    "accuracy": float(((s_oth >= threshold) == lab).mean()),
                }
            )
        rows.append(row)
    return {"reference": ref_name, "rows": rows}
