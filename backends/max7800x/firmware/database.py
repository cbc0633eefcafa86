"""The populated slots of the firmware's dot-product layer (:class:`DotProductDB`): names, int8 rows,
identification the firmware way, conversion to and from a core Gallery.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from facesdk.errors import ConfigError, GalleryError, IncompatibleGalleryError

from .matching import dot_product_scores, firmware_decision, quantize_db_embeddings, quantize_probe
from .profiles import (
    DB_SCALE,
    FIRMWARE_MODEL_ALIASES,
    FIRMWARE_MODEL_ID,
    NAME_LEN,
    PROFILES,
    UNKNOWN,
    DotProductProfile,
    get_profile,
)

__all__ = ["DotProductDB", "MatchResult", "firmware_name"]


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
            raise ConfigError(
                f"{len(self.weights)} slots exceed the layer's capacity of {self.profile.capacity}"
            )
        if len(self.weights) and self.weights.shape[1] != self.profile.embedding_size:
            raise IncompatibleGalleryError(
                f"the {self.profile.name} dot-product layer takes {self.profile.embedding_size}-d "
                "embeddings, "
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

    def identify(
        self, probes: np.ndarray, *, quantized: bool = False, threshold: int | None = None
    ) -> list[MatchResult]:
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
    def from_gallery(
        cls,
        gallery,
        profile: str | DotProductProfile = "max78000",
        *,
        capacity: int | None = None,
        threshold: int | None = None,
        truncate_names: bool = True,
        allow_other_model: bool = False,
    ) -> "DotProductDB":
        """One slot per identity: its normalised template, quantised as db_gen does.

        Names are cut to the firmware's 6 characters; two identities whose cut names collide
        raise :class:`ConfigError` (the firmware could not tell them apart). The rows must come from
        the firmware's FaceID network (``ai85-faceid-112``): a gallery of another model raises
        :class:`IncompatibleGalleryError` (its embeddings would be compared with faceid_112 probes)
        unless ``allow_other_model``.
        """
        prof = get_profile(profile, capacity)
        if gallery.embedding_size != prof.embedding_size:
            raise IncompatibleGalleryError(
                f"the {prof.name} FaceID dot-product layer takes {prof.embedding_size}-d embeddings "
                f"(faceid_112); the gallery holds {gallery.embedding_size}-d embeddings of "
                f"{gallery.model_id!r}"
            )
        if not allow_other_model and gallery.model_id not in FIRMWARE_MODEL_ALIASES:
            raise IncompatibleGalleryError(
                f"the gallery holds embeddings of {gallery.model_id!r}; the firmware compares probes of its "
                f"FaceID network ({FIRMWARE_MODEL_ID}, faceid_112), so its database must be enrolled with "
                f"embedder={FIRMWARE_MODEL_ID!r}"
            )
        if len(gallery) > prof.capacity:
            raise ConfigError(f"{len(gallery)} identities exceed the layer's {prof.capacity} slots")
        names = [firmware_name(n, truncate_names) for n in gallery.names]
        seen: dict[str, str] = {}
        for full, short in zip(gallery.names, names):
            if short in seen:
                raise ConfigError(
                    f"identities {seen[short]!r} and {full!r} both become {short!r} in the firmware's "
                    f"{NAME_LEN}-character names; rename one"
                )
            seen[short] = full
        w = (
            quantize_db_embeddings(gallery.templates)
            if len(gallery)
            else np.zeros((0, prof.embedding_size), np.int8)
        )
        return cls(names, w, prof, threshold)

    def to_gallery(self, model_id: str = FIRMWARE_MODEL_ID, **kw):
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


def firmware_name(name: str, truncate: bool = True) -> str:
    if not name or not all(32 <= ord(c) < 127 for c in name) or '"' in name or "\\" in name:
        raise ConfigError(
            f"name {name!r}: the firmware stores printable ASCII names without quotes or backslashes"
        )
    if len(name) > NAME_LEN:
        if not truncate:
            raise ConfigError(f"name {name!r} is longer than the firmware's {NAME_LEN} characters")
        return name[:NAME_LEN]
    return name
