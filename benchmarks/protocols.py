"""Protocols: embed a dataset's images (cached), then verification (k-fold) or identification (1:N).

Face selection for benchmark images: detect, keep the face whose box centre is
nearest the image centre. An image without any detection is *not* dropped: it
is embedded from a fixed central box (the median LFW face box scaled to the
image, with the embedder template's landmarks placed in it) and counted as a
``fallback`` in the report.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from tqdm.auto import tqdm

from facesdk.align import landmarks_from_box
from facesdk.detect import Detection
from facesdk.gallery import l2_normalize
from facesdk.image import load_image
from facesdk.stream import StreamItem, StreamStats

from .cache import EmbeddingCache, FaceRecord, file_sha256
from .datasets import Dataset, IdentificationSplit, PairList
from .metrics import (
    DEFAULT_FARS,
    cmc_curve,
    open_set_identification,
    rank_of_truth,
    roc_curve,
    verification_summary,
)
from .quality import TIERS, Degradation, degrade, tier_sides

__all__ = [
    "FALLBACK_BOX",
    "fallback_face",
    "select_center",
    "ImageEmbedder",
    "EmbedStats",
    "run_verification",
    "run_identification",
]

log = logging.getLogger(__name__)

#: Median LFW (250×250 deep-funneled) face box as fractions of width/height:
#: (67, 80, 175, 187) px, the box dlib's reference run used for undetected images.
FALLBACK_BOX = (67 / 250, 80 / 250, 175 / 250, 187 / 250)


def fallback_face(shape: tuple[int, ...], template: str) -> tuple[np.ndarray, np.ndarray]:
    """Central box and template landmarks for an image with no detection."""
    h, w = shape[:2]
    box = np.array(
        [FALLBACK_BOX[0] * w, FALLBACK_BOX[1] * h, FALLBACK_BOX[2] * w, FALLBACK_BOX[3] * h], np.float32
    )
    return box, landmarks_from_box(box, template)


def _points_template(rec: Any) -> Any:
    """A template whose points are the core's 5 (eye centres, nose, mouth corners) for placing landmarks.

    Templates with a custom aligner (dlib's crop) have no such points; ArcFace's then stand in.
    """
    from facesdk.align import template_points
    from facesdk.errors import ConfigError

    try:
        template_points(rec.embedder_card.alignment or rec.template)
    except ConfigError:
        return "arcface112"
    return rec.embedder_card.alignment or rec.template


def select_center(dets: Sequence[Any], shape: tuple[int, ...]) -> Any:
    """The detection whose box centre is nearest the image centre."""
    cy, cx = shape[0] / 2, shape[1] / 2
    return min(
        dets, key=lambda d: ((d.box[0] + d.box[2]) / 2 - cx) ** 2 + ((d.box[1] + d.box[3]) / 2 - cy) ** 2
    )


@dataclass
class EmbedStats:
    """What happened while embedding: counts and summed stage times (seconds)."""

    images: int = 0
    computed: int = 0
    cached: int = 0
    fallback: int = 0
    multi_face: int = 0
    fallback_keys: list[str] = field(default_factory=list)
    seconds: dict[str, float] = field(
        default_factory=lambda: {"decode": 0.0, "detect": 0.0, "align": 0.0, "embed": 0.0}
    )

    def to_dict(self) -> dict[str, Any]:
        per = {k: (v / self.computed * 1000 if self.computed else None) for k, v in self.seconds.items()}
        total = sum(self.seconds.values())
        return {
            "images": self.images,
            "computed": self.computed,
            "cached": self.cached,
            "no_detection_fallback": self.fallback,
            "multi_face_images": self.multi_face,
            "fallback_examples": self.fallback_keys[:20],
            "bulk_ms_per_image": per,
            "bulk_images_per_s": (self.computed / total) if total > 0 and self.computed else None,
        }


class ImageEmbedder:
    """Embeds dataset images with one FaceRecognizer, through an on-disk cache.

    Args:
        rec: a ``facesdk.FaceRecognizer``.
        dataset: gives image paths for keys.
        cache_root: where the :class:`EmbeddingCache` namespaces live.
        degradation: settings for the low-quality variant.
        batch_size: crops per embedder call.
        progress: show tqdm bars.
    """

    def __init__(
        self,
        rec: Any,
        dataset: Dataset,
        cache_root: Path,
        *,
        degradation: Degradation | None = None,
        batch_size: int = 32,
        progress: bool = True,
    ) -> None:
        self.rec = rec
        self.dataset = dataset
        self.cache_root = Path(cache_root)
        self.deg = degradation or Degradation()
        self.batch_size = int(batch_size)
        self.progress = progress
        self._sha: dict[str, str] = {}
        sess = rec.embedder_session
        self._caches: dict[str, EmbeddingCache] = {}
        self._ns = (rec.model_id, sess.backend, sess.precision, rec.detector_card.id)
        self.stats: dict[str, EmbedStats] = {}

    def cache(self, variant: str) -> EmbeddingCache:
        if variant not in self._caches:
            tag = "orig" if variant == "high" else self.deg.tag()
            m, b, p, d = self._ns
            self._caches[variant] = EmbeddingCache(self.cache_root, m, b, p, d, tag)
        return self._caches[variant]

    def sha(self, key: str) -> str:
        if key not in self._sha:
            self._sha[key] = file_sha256(self.dataset.path(key))
        return self._sha[key]

    def _fallback(self, img: np.ndarray) -> Detection:
        """The fixed central face of an image without detections (see :func:`fallback_face`)."""
        box, lm = fallback_face(img.shape, _points_template(self.rec))
        return Detection(box=box, score=0.0, landmarks=lm)

    def embed(self, keys: Sequence[str], variant: str = "high") -> dict[str, FaceRecord]:
        """Records for ``keys`` (variant ``high`` = original, ``low`` = degraded), computing what is
        missing.
        """
        cache = self.cache(variant)
        high = self.cache("high") if variant == "low" else None
        st = self.stats.setdefault(variant, EmbedStats())
        keys = list(dict.fromkeys(keys))
        shas = {
            k: self.sha(k) for k in tqdm(keys, desc="hash images", disable=not self.progress, leave=False)
        }
        todo = [k for k in keys if shas[k] not in cache]
        st.images += len(keys)
        st.cached += len(keys) - len(todo)
        sst = StreamStats()

        def item(k: str) -> StreamItem:
            # paths are looked up lazily, in the stream's worker, when the image's turn comes
            if variant != "low":
                return StreamItem(k, lambda: self.dataset.path(k))
            hrec = high.get(shas[k]) if high is not None else None
            box = hrec.box if hrec is not None and not hrec.fallback else None
            return StreamItem(k, lambda: degrade(load_image(self.dataset.path(k)), box, shas[k], self.deg))

        # the streaming pipeline: decode/detect in threads, align + embed in full batches across images
        stream = self.rec.faces_many(
            (item(k) for k in todo),
            select="center",
            fallback=self._fallback,
            batch_size=self.batch_size,
            stats=sst,
        )
        try:
            for r in tqdm(
                stream,
                total=len(todo),
                desc=f"embed {variant} ({self.rec.embedder_session.backend})",
                disable=not self.progress or not todo,
                unit="img",
            ):
                if r.error is not None:
                    raise r.error
                f = r.faces[0]
                lm = (
                    f.landmarks
                    if f.landmarks is not None
                    else landmarks_from_box(f.box, _points_template(self.rec))
                )
                cache.put(
                    shas[r.source],
                    FaceRecord(
                        f.embedding,
                        np.asarray(f.box, np.float32),
                        np.asarray(lm, np.float32),
                        float(f.score),
                        r.fallback,
                        r.detections,
                    ),
                )
                st.computed += 1
                st.multi_face += r.detections > 1
        finally:
            stream.close()
            for stage in ("decode", "detect", "align", "embed"):
                st.seconds[stage] += sst.seconds.get(stage, 0.0)
            cache.flush()  # keep what was done, even when interrupted
        out = {}
        for k in keys:
            r = cache.get(shas[k])
            assert r is not None
            if r.fallback:
                if k not in st.fallback_keys:
                    st.fallback_keys.append(k)
            out[k] = r
        st.fallback = len(st.fallback_keys)
        return out


def _pair_scores(ea: np.ndarray, eb: np.ndarray) -> np.ndarray:
    return np.einsum("ij,ij->i", l2_normalize(ea), l2_normalize(eb)).astype(np.float64)


def run_verification(
    emb: ImageEmbedder,
    pairs: PairList,
    *,
    tiers: Sequence[str] = ("high-high",),
    k: int = 10,
    fars: Sequence[float] = DEFAULT_FARS,
) -> dict[str, Any]:
    """Verification per quality tier: k-fold accuracy, ROC, TAR@FAR, EER.

    Returns ``{"tiers": {tier: summary}, "curves": {tier: {"far", "tar"}}, "scores": {tier: array},
    "embedding": stats}``; the first tier's summary is also merged at the top level.
    """
    for t in tiers:
        tier_sides(t)
    low_keys: list[str] = []  # degrade only the sides a tier needs (first side for low-high)
    for t in tiers:
        la, lb = TIERS[t]
        low_keys += (pairs.a if la else []) + (pairs.b if lb else [])
    recs = {"high": emb.embed(pairs.images(), "high")}
    if low_keys:
        recs["low"] = emb.embed(low_keys, "low")
    labels = pairs.same.astype(int)
    out: dict[str, Any] = {"protocol": pairs.name, "tiers": {}, "curves": {}, "scores": {}}
    for t in tiers:
        la, lb = tier_sides(t)
        ea = np.stack([recs["low" if la else "high"][key].emb for key in pairs.a])
        eb = np.stack([recs["low" if lb else "high"][key].emb for key in pairs.b])
        s = _pair_scores(ea, eb)
        summ = verification_summary(s, labels, pairs.folds, k=k, fars=fars)
        roc = roc_curve(s, labels)
        out["tiers"][t] = summ
        out["curves"][t] = {"far": roc.far, "tar": roc.tar}
        out["scores"][t] = s
    out["embedding"] = {v: st.to_dict() for v, st in emb.stats.items()}
    first = out["tiers"][tiers[0]]
    out.update({k: v for k, v in first.items()})
    return out


def run_identification(
    emb: ImageEmbedder,
    split: IdentificationSplit,
    *,
    tiers: Sequence[str] = ("high-high",),
    fars: Sequence[float] = DEFAULT_FARS,
    top_k: Sequence[int] = (1, 5, 10),
    max_rank: int = 20,
) -> dict[str, Any]:
    """Open-set 1:N per tier (first side = probes, second = gallery): rank-k, DIR@FAR, operating
    points, CMC.
    """
    for t in tiers:
        tier_sides(t)
    need_low = any(any(TIERS[t]) for t in tiers)
    imgs = split.images()
    recs = {"high": emb.embed(imgs, "high")}
    if need_low:
        recs["low"] = emb.embed(imgs, "low")
    names = sorted(split.gallery)
    out: dict[str, Any] = {"protocol": "identify", "split": split.describe(), "tiers": {}, "cmc": {}}
    for t in tiers:
        low_probe, low_gallery = tier_sides(t)
        g = recs["low" if low_gallery else "high"]
        p = recs["low" if low_probe else "high"]
        templates = l2_normalize(
            np.stack([l2_normalize(np.stack([g[k].emb for k in split.gallery[n]])).mean(0) for n in names])
        )
        probes = l2_normalize(np.stack([p[k].emb for k in split.probes]))
        sim = probes @ templates.T
        res = open_set_identification(sim, np.array(split.probe_ids), np.array(names), fars=fars, top_k=top_k)
        ranks = rank_of_truth(sim, np.array(split.probe_ids), np.array(names))
        if (ranks > 0).any():
            out["cmc"][t] = cmc_curve(ranks, min(max_rank, len(names))).tolist()
        out["tiers"][t] = res
    out["embedding"] = {v: st.to_dict() for v, st in emb.stats.items()}
    out.update(out["tiers"][tiers[0]])
    return out
