"""A core :class:`facesdk.gallery.Gallery` scored the way the FaceID firmware scores its database.
"""

from __future__ import annotations

import math

import numpy as np

from facesdk.errors import ConfigError, IncompatibleGalleryError

from .database import DotProductDB
from .matching import dot_product_scores, firmware_decision, quantize_db_embeddings, quantize_probe
from .profiles import DB_SCALE, PROBE_SCALE, UNKNOWN, DotProductProfile, get_profile

__all__ = ['FirmwareGalleryScorer', 'float_threshold_to_score', 'score_threshold_to_float']


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
