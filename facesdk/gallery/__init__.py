"""Enrolled identities over a pluggable store, exact cosine search, and provenance.

A :class:`Gallery` is the public face of a :class:`GalleryStore`. The embedded file store
(:mod:`facesdk.gallery.file`) is the default; other stores (e.g. Milvus) come from plugins through
the ``facesdk_gallery_stores`` hook and are picked by name or by a ``name:`` URI prefix
(:func:`open_store`).

Templates. Every enrolled photo is kept as a per-image template (its L2-normalised embedding, with
an image id). The identity template is weight imprinting: the mean of the identity's normalised
image embeddings, renormalised (Qi, Brown & Lowe, "Low-Shot Learning with Imprinted Weights",
CVPR 2018, §3.1). ``search(..., templates="identity")`` scores probes against identity templates;
``templates="image"`` scores against every photo and keeps each identity's best photo. Cosine
similarity of unit vectors is their inner product.

Provenance. A gallery records which model made its embeddings (card id + sha256 of the artifact),
the embedding size, the backend and precision that ran, and an optional calibration record; it
refuses embeddings from another model (:meth:`Gallery.check_compatible`).
"""

from __future__ import annotations

import logging
import os
import re
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from ..errors import ConfigError, GalleryError, IncompatibleGalleryError

__all__ = [
    "TEMPLATE_LEVELS",
    "UNKNOWN",
    "Gallery",
    "GalleryStore",
    "Hit",
    "Match",
    "Provenance",
    "gallery_store_factories",
    "l2_normalize",
    "new_image_id",
    "open_store",
]

log = logging.getLogger(__name__)

UNKNOWN = "Unknown"
TEMPLATE_LEVELS = ("identity", "image")
#: Longest identity name accepted (characters).
MAX_NAME = 256


def l2_normalize(x: np.ndarray, axis: int = -1, eps: float = 1e-12) -> np.ndarray:
    """Divide vectors by their L2 norm (host-side; accelerators often cannot)."""
    x = np.asarray(x, dtype=np.float32)
    n = np.linalg.norm(x, axis=axis, keepdims=True)
    return x / np.maximum(n, eps)


def new_image_id() -> str:
    """A fresh, globally unique image id (random UUID4 hex), so merges across processes never clash."""
    return uuid.uuid4().hex


def check_name(name: object) -> str:
    """Validate an identity name (non-empty text, not ``Unknown``, no control characters)."""
    if (
        not isinstance(name, str)
        or not name.strip()
        or name == UNKNOWN
        or len(name) > MAX_NAME
        or any(ord(c) < 32 or ord(c) == 127 for c in name)
    ):
        raise ConfigError(f"invalid identity name {name!r}")
    return name


class Hit(NamedTuple):
    """One candidate identity: its score and the enrolled photo that matched best."""

    name: str
    similarity: float
    image_id: str | None = None


@dataclass
class Match:
    """Best identity for one probe: ``name`` is ``"Unknown"`` below the threshold."""

    name: str
    similarity: float
    top_k: list[tuple[str, float]] = field(default_factory=list)
    #: the threshold the decision used and the operating point it came from
    threshold: float | None = None
    operating_point: str | None = None
    #: the enrolled photo that matched best (per-image templates)
    image_id: str | None = None
    #: the normalised decision score compared with ``threshold`` (None: the decision used ``similarity``)
    score: float | None = None

    @property
    def known(self) -> bool:
        return self.name != UNKNOWN

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "name": self.name,
            "similarity": round(float(self.similarity), 4),
            "top_k": [[n, round(float(s), 4)] for n, s in self.top_k],
            **({"threshold": round(float(self.threshold), 4)} if self.threshold is not None else {}),
            **({"operating_point": self.operating_point} if self.operating_point else {}),
            **({"score": round(float(self.score), 4)} if self.score is not None else {}),
        }
        if self.image_id is not None:
            d["image_id"] = self.image_id
        return d


@dataclass
class Provenance:
    """What produced a gallery's embeddings (stored with it, checked on use)."""

    model_id: str
    embedding_size: int
    model_sha256: str | None = None
    backend: str | None = None
    precision: str | None = None
    threshold: float = 0.5
    calibration: dict[str, Any] | None = None
    #: ``"user"`` when the threshold was chosen explicitly (it then wins over the recogniser's
    #: calibrated one), else where it came from (``"card"``, ``"default"``, ``"legacy"``)
    threshold_source: str = "default"

    def __post_init__(self) -> None:
        if not isinstance(self.model_id, str) or not self.model_id:
            raise ConfigError(f"invalid model id {self.model_id!r}")
        try:
            self.embedding_size = int(self.embedding_size)
            self.threshold = float(self.threshold)
        except (TypeError, ValueError):
            raise ConfigError("embedding_size and threshold must be numbers") from None
        if not 0 < self.embedding_size <= 65536:
            raise ConfigError("embedding_size must be positive (at most 65536)")
        from ..calibration import check_threshold

        self.threshold = check_threshold(self.threshold, what="gallery threshold")
        self.threshold_source = str(self.threshold_source)
        if self.model_sha256 is not None and not re.fullmatch(r"[0-9a-f]{64}", str(self.model_sha256)):
            raise ConfigError(f"model_sha256 must be 64 hex digits, got {self.model_sha256!r}")
        if self.calibration is not None and not isinstance(self.calibration, dict):
            raise ConfigError("calibration must be a dict (a JSON object)")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any], *, default_source: str = "legacy") -> Provenance:
        """Build from a stored record; raises GalleryError when it is malformed (including a stored
        threshold outside the score range, e.g. edited to -1, which would accept every stranger)."""
        if not isinstance(d, dict):
            raise GalleryError("gallery provenance is not an object")
        from ..calibration import check_threshold

        thr = check_threshold(d.get("threshold", 0.5), what="stored threshold", error=GalleryError)
        try:
            return cls(
                model_id=d["model_id"],
                embedding_size=d["embedding_size"],
                model_sha256=d.get("model_sha256"),
                backend=d.get("backend"),
                precision=d.get("precision"),
                threshold=thr,
                calibration=d.get("calibration"),
                threshold_source=str(d.get("threshold_source") or default_source),
            )
        except (KeyError, ConfigError) as exc:
            raise GalleryError(f"malformed gallery provenance: {exc}") from None

    def check_compatible(self, model_id: str, embedding_size: int, model_sha256: str | None = None) -> None:
        """Raise IncompatibleGalleryError unless embeddings of this model may be mixed in."""
        if model_id != self.model_id or int(embedding_size) != self.embedding_size:
            raise IncompatibleGalleryError(
                f"gallery holds embeddings of model {self.model_id!r} ({self.embedding_size}-d); "
                f"refusing to mix with {model_id!r} ({embedding_size}-d) — re-enroll with one model"
            )
        if model_sha256 and self.model_sha256 and model_sha256 != self.model_sha256:
            raise IncompatibleGalleryError(
                f"gallery was made by {self.model_id!r} with sha256 {self.model_sha256[:12]}…, "
                f"but the loaded model file has sha256 {model_sha256[:12]}…"
            )


@dataclass
class ImageRecord:
    """One enrolled photo: id, identity, metadata, whether its face crop was kept."""

    image_id: str
    name: str
    meta: dict[str, Any] = field(default_factory=dict)
    has_crop: bool = False


class GalleryStore(ABC):
    """Where a gallery's templates live. Embeddings handed to a store are already validated,
    L2-normalised float32 ``[m, D]``; names are validated. Stores must be thread-safe.

    A third-party store is a factory returned by the ``facesdk_gallery_stores`` hook::

        @hookimpl
        def facesdk_gallery_stores():
            return {"milvus": MilvusStore.open}

    called as ``factory(uri, provenance=Provenance | None, create=bool, **options)``.
    """

    #: Store kind, e.g. ``"file"`` or ``"milvus"``.
    kind: str = "?"
    provenance: Provenance

    # -- writes
    @abstractmethod
    def add(
        self,
        name: str,
        embeddings: np.ndarray,
        image_ids: Sequence[str],
        metas: Sequence[dict[str, Any]] | None = None,
        crops: np.ndarray | None = None,
    ) -> None:
        """Add per-image templates to ``name`` (creating the identity)."""

    def add_many(
        self,
        groups: Sequence[
            tuple[str, np.ndarray, Sequence[str], Sequence[dict[str, Any]] | None, np.ndarray | None]
        ],
    ) -> None:
        """Add several identities' photos at once: ``(name, embeddings, image_ids, metas, crops)`` each.
        Stores with per-call overhead (databases) override this with one batched write."""
        for name, e, ids, metas, crops in groups:
            self.add(name, e, ids, metas, crops)

    @abstractmethod
    def remove(self, name: str) -> int:
        """Remove an identity and all its images; returns the number of images removed."""

    @abstractmethod
    def remove_images(self, image_ids: Sequence[str]) -> int:
        """Remove photos by id (an identity left without photos is removed); returns how many."""

    @abstractmethod
    def rename(self, old: str, new: str) -> None:
        """Rename an identity (``new`` must not exist)."""

    @abstractmethod
    def set_identity_meta(self, name: str, meta: dict[str, Any]) -> None:
        """Replace an identity's metadata (a JSON object)."""

    def set_provenance(self, prov: Provenance) -> None:
        """Replace the stored provenance (same model only; e.g. a new calibration record)."""
        self.provenance.check_compatible(prov.model_id, prov.embedding_size, prov.model_sha256)
        self.provenance = prov

    # -- reads
    @abstractmethod
    def names(self) -> list[str]:
        """Identity names in enrollment order."""

    @abstractmethod
    def counts(self) -> dict[str, int]:
        """Samples per identity."""

    @abstractmethod
    def identity_meta(self, name: str) -> dict[str, Any]:
        """An identity's metadata."""

    @abstractmethod
    def identity_templates(self) -> tuple[list[str], np.ndarray]:
        """``(names, [K, D])`` L2-normalised identity templates."""

    @abstractmethod
    def image_templates(self, name: str | None = None) -> tuple[list[str], list[str], np.ndarray]:
        """``(image_ids, names, [N, D])`` per-image templates (of one identity, or all)."""

    @abstractmethod
    def images(self, name: str | None = None) -> list[ImageRecord]:
        """Records of the enrolled photos (of one identity, or all)."""

    def n_images(self) -> int:
        """Number of enrolled photos."""
        return len(self.images())

    def crops(self, image_ids: Sequence[str]) -> dict[str, np.ndarray]:
        """Kept face crops by image id (stores that keep none return ``{}``)."""
        return {}

    @abstractmethod
    def search(self, queries: np.ndarray, top_k: int, templates: str = "identity") -> list[list[Hit]]:
        """Top-K identities per (normalised) query, best first."""

    def __len__(self) -> int:
        return len(self.names())

    def __contains__(self, name: object) -> bool:
        return name in self.names()

    # -- persistence
    def save(self, path: str | os.PathLike | None = None) -> Path | None:
        """Persist (file stores) or flush (database stores); returns the file written, if any."""
        return None

    def close(self) -> None:
        """Release resources."""

    def describe(self) -> dict[str, Any]:
        """Where and what this store is (JSON-able)."""
        return {"store": self.kind}


def gallery_store_factories() -> dict[str, Callable[..., GalleryStore]]:
    """Store factories by name: the built-in ``file`` store plus every ``facesdk_gallery_stores`` hook."""
    from .file import EmbeddedStore
    from ..plugins import get_plugin_manager

    out: dict[str, Callable[..., GalleryStore]] = {"file": EmbeddedStore.open}
    for group in reversed(get_plugin_manager().hook.facesdk_gallery_stores()):
        for name, factory in (group or {}).items():
            out[str(name)] = factory
    return out


def _split_uri(uri: str, store: str | None, factories: dict[str, Any]) -> tuple[str, str]:
    if store:
        if store not in factories:
            raise ConfigError(f"unknown gallery store {store!r} (installed: {', '.join(sorted(factories))})")
        prefix = store + ":"
        return store, uri.removeprefix(prefix)
    m = re.match(r"^([A-Za-z][A-Za-z0-9+.-]+):(.*)$", uri)  # two letters at least: not a drive letter
    if m:
        name = m.group(1).lower()
        if name in factories:
            return name, m.group(2)
        if m.group(2).startswith("//") and name not in ("file",):
            raise ConfigError(
                f"no gallery store handles {name!r} URIs (installed: {', '.join(sorted(factories))})"
            )
    return "file", uri.removeprefix("file:")


def open_store(
    uri: str | os.PathLike,
    *,
    store: str | None = None,
    provenance: Provenance | None = None,
    create: bool = True,
    **options: Any,
) -> GalleryStore:
    """Open (or create) a gallery store by URI: ``people.npz`` / ``file:people.npz`` (embedded file
    store), ``milvus:galleries.db`` or ``milvus:http://host:19530`` (the Milvus plugin), …"""
    factories = gallery_store_factories()
    name, rest = _split_uri(os.fspath(uri), store, factories)
    st = factories[name](rest, provenance=provenance, create=create, **options)
    if not isinstance(st, GalleryStore):
        raise ConfigError(f"gallery store {name!r} returned {type(st).__name__}, not a GalleryStore")
    return st


class Gallery:
    """Enrolled identities of one embedding model, over a store (embedded in memory/file by default).

    Args:
        model_id: card id of the embedder that made the embeddings.
        embedding_size: D.
        model_sha256: sha256 of the embedder artifact (recorded and checked).
        backend, precision: what produced the embeddings (recorded).
        threshold: cosine similarity below which a match is ``Unknown`` (used when the
            caller gives none; :class:`~facesdk.FaceRecognizer` passes its own unless
            this one was set by the user, see ``threshold_source``).
        threshold_source: ``"user"`` when the threshold was chosen explicitly (it then
            wins over the recogniser's calibrated one), else where it came from.
        calibration: where the threshold came from (a JSON object; see the calibration tools).
        store: a :class:`GalleryStore` to use instead of a new in-memory embedded store.
        storage: scan copy of the embedded store: ``fp32`` (default), ``fp16`` or ``int8``
            (compressed scan, exact fp32 re-ranking).
        keep_crops: keep enrolled face crops (needed to re-embed with another model later).
    """

    def __init__(
        self,
        model_id: str,
        embedding_size: int,
        *,
        model_sha256: str | None = None,
        backend: str | None = None,
        precision: str | None = None,
        threshold: float = 0.5,
        threshold_source: str = "default",
        calibration: dict[str, Any] | None = None,
        store: GalleryStore | None = None,
        storage: str = "fp32",
        keep_crops: bool = False,
    ) -> None:
        if store is None:
            from .file import EmbeddedStore

            prov = Provenance(
                model_id, embedding_size, model_sha256, backend, precision, threshold, calibration,
                threshold_source,
            )  # fmt: skip
            store = EmbeddedStore(prov, storage=storage, keep_crops=keep_crops)
        self._store = store

    @classmethod
    def from_store(cls, store: GalleryStore) -> Gallery:
        """Wrap an opened store."""
        g = cls.__new__(cls)
        g._store = store
        return g

    @classmethod
    def open(
        cls,
        uri: str | os.PathLike,
        *,
        model_id: str | None = None,
        embedding_size: int | None = None,
        model_sha256: str | None = None,
        backend: str | None = None,
        precision: str | None = None,
        threshold: float = 0.5,
        calibration: dict[str, Any] | None = None,
        create: bool = True,
        store: str | None = None,
        threshold_source: str = "default",
        **options: Any,
    ) -> Gallery:
        """Open a gallery by path/URI, creating it (with this provenance) when missing.

        Opening a file binds the gallery to it: :meth:`save` then takes the file lock, merges
        changes another process saved meanwhile, and writes atomically. When ``model_id`` is given,
        an existing gallery of another model is refused (IncompatibleGalleryError).
        """
        prov = None
        if model_id is not None:
            if embedding_size is None:
                raise ConfigError("embedding_size is required with model_id")
            prov = Provenance(
                model_id, embedding_size, model_sha256, backend, precision, threshold, calibration,
                threshold_source,
            )  # fmt: skip
        st = open_store(uri, store=store, provenance=prov, create=create, **options)
        if prov is not None:
            st.provenance.check_compatible(prov.model_id, prov.embedding_size, prov.model_sha256)
        return cls.from_store(st)

    @classmethod
    def load(cls, path: str | os.PathLike, **options: Any) -> Gallery:
        """Read an existing gallery file (validated; bounded memory; never unpickles)."""
        from .file import EmbeddedStore

        return cls.from_store(EmbeddedStore.open(path, provenance=None, create=False, **options))

    # ------------------------------------------------------------------ provenance
    @property
    def store(self) -> GalleryStore:
        return self._store

    @property
    def provenance(self) -> Provenance:
        return self._store.provenance

    @property
    def model_id(self) -> str:
        return self._store.provenance.model_id

    @property
    def embedding_size(self) -> int:
        return self._store.provenance.embedding_size

    @property
    def model_sha256(self) -> str | None:
        return self._store.provenance.model_sha256

    @property
    def backend(self) -> str | None:
        return self._store.provenance.backend

    @property
    def precision(self) -> str | None:
        return self._store.provenance.precision

    @property
    def calibration(self) -> dict[str, Any] | None:
        return self._store.provenance.calibration

    @property
    def threshold(self) -> float:
        return self._store.provenance.threshold

    @threshold.setter
    def threshold(self, value: float) -> None:
        prov = Provenance(**{**self.provenance.to_dict(), "threshold": value, "threshold_source": "user"})
        self._store.set_provenance(prov)

    @property
    def threshold_source(self) -> str:
        return self._store.provenance.threshold_source

    @threshold_source.setter
    def threshold_source(self, value: str) -> None:
        self._store.set_provenance(
            Provenance(**{**self.provenance.to_dict(), "threshold_source": str(value)})
        )

    def set_calibration(self, calibration: dict[str, Any] | None, threshold: float | None = None) -> None:
        """Record a calibration (and optionally its threshold) in the provenance."""
        d = self.provenance.to_dict()
        d["calibration"] = calibration
        if threshold is not None:
            d["threshold"] = threshold
        self._store.set_provenance(Provenance(**d))

    def metadata(self) -> dict[str, Any]:
        """The provenance record plus counts and where the gallery lives."""
        return {
            "format": "facesdk-gallery",
            **self.provenance.to_dict(),
            "identities": len(self),
            "images": self._store.n_images(),
            **self._store.describe(),
        }

    def check_compatible(self, model_id: str, embedding_size: int, model_sha256: str | None = None) -> None:
        """Raise IncompatibleGalleryError unless embeddings of this model may be mixed in."""
        self.provenance.check_compatible(model_id, embedding_size, model_sha256)

    # ------------------------------------------------------------------ content
    def __len__(self) -> int:
        return len(self._store)

    def __contains__(self, name: object) -> bool:
        return name in self._store

    @property
    def names(self) -> list[str]:
        """Enrolled identity names, in enrollment order."""
        return self._store.names()

    def counts(self) -> dict[str, int]:
        """Number of samples enrolled per identity."""
        return self._store.counts()

    @property
    def templates(self) -> np.ndarray:
        """``[K, D]`` L2-normalised identity templates (in :attr:`names` order)."""
        return self._store.identity_templates()[1]

    def image_templates(self, name: str | None = None) -> tuple[list[str], list[str], np.ndarray]:
        """``(image_ids, names, [N, D])`` per-image templates."""
        return self._store.image_templates(name)

    def images(self, name: str | None = None) -> list[ImageRecord]:
        """Enrolled photo records (id, identity, metadata, crop kept?)."""
        return self._store.images(name)

    def identity_meta(self, name: str) -> dict[str, Any]:
        return self._store.identity_meta(name)

    def set_identity_meta(self, name: str, meta: dict[str, Any]) -> None:
        """Replace an identity's metadata (a JSON-serialisable object)."""
        _check_json(meta)
        self._store.set_identity_meta(name, dict(meta))

    def _check_embeddings(self, emb: np.ndarray) -> np.ndarray:
        try:
            e = np.asarray(emb, dtype=np.float32)
        except (TypeError, ValueError):
            raise GalleryError("embeddings must be numeric arrays") from None
        if e.ndim == 1:
            e = e[None]
        if e.ndim != 2 or e.shape[1] != self.embedding_size:
            raise IncompatibleGalleryError(
                f"embeddings of shape {e.shape} do not fit this gallery "
                f"(model {self.model_id!r}, size {self.embedding_size})"
            )
        if not np.isfinite(e).all():
            raise GalleryError("embeddings contain NaN or infinite values")
        return e

    # ------------------------------------------------------------------ writes
    def add(
        self,
        name: str,
        embeddings: np.ndarray,
        *,
        image_ids: Sequence[str] | None = None,
        meta: dict[str, Any] | Sequence[dict[str, Any]] | None = None,
        crops: np.ndarray | None = None,
    ) -> list[str]:
        """Enroll (or extend) ``name`` with one or more photos' embeddings; returns their image ids.

        Args:
            meta: one metadata object for every photo, or one per photo (e.g. ``{"source": path}``).
            crops: ``[m, h, w, 3]`` uint8 aligned face crops to keep (stores that keep crops).
        """
        check_name(name)
        e = self._check_embeddings(embeddings)
        if len(e) == 0:
            raise ConfigError(f"no embeddings given for {name!r}")
        if np.any(np.linalg.norm(e, axis=1) < 1e-6):
            raise GalleryError("an embedding is all zeros")
        e = l2_normalize(e)
        ids = [new_image_id() for _ in range(len(e))] if image_ids is None else [str(i) for i in image_ids]
        _check_ids(ids, len(e))
        metas: list[dict[str, Any]] | None
        if meta is None:
            metas = None
        elif isinstance(meta, dict):
            metas = [dict(meta) for _ in ids]
        else:
            metas = [dict(m) for m in meta]
            if len(metas) != len(ids):
                raise ConfigError("give one metadata object per embedding")
        if metas is not None:
            _check_json(metas)
        if crops is not None:
            crops = np.asarray(crops)
            if crops.dtype != np.uint8 or crops.ndim != 4 or len(crops) != len(e) or crops.shape[3] != 3:
                raise ConfigError(f"crops must be [{len(e)}, h, w, 3] uint8, got {crops.dtype} {crops.shape}")
        self._store.add(name, e, ids, metas, crops)
        return ids

    enroll = add

    def add_many(
        self,
        names: Sequence[str],
        embeddings: np.ndarray,
        *,
        metas: Sequence[dict[str, Any]] | None = None,
        crops: np.ndarray | None = None,
        image_ids: Sequence[str] | None = None,
    ) -> list[str]:
        """Enroll many photos at once: ``names[i]`` is the identity of ``embeddings[i]``; returns image ids.

        Same result as calling :meth:`add` per photo, in one batched store write.
        """
        e = self._check_embeddings(embeddings)
        names = list(names)
        if len(names) != len(e):
            raise ConfigError("give one name per embedding")
        for n in set(names):
            check_name(n)
        if len(e) and np.any(np.linalg.norm(e, axis=1) < 1e-6):
            raise GalleryError("an embedding is all zeros")
        e = l2_normalize(e)
        if metas is not None:
            metas = [dict(m) for m in metas]
            if len(metas) != len(e):
                raise ConfigError("give one metadata object per embedding")
            _check_json(metas)
        if crops is not None:
            crops = np.asarray(crops)
            if crops.dtype != np.uint8 or crops.ndim != 4 or len(crops) != len(e) or crops.shape[3] != 3:
                raise ConfigError(f"crops must be [{len(e)}, h, w, 3] uint8")
        ids = [new_image_id() for _ in range(len(e))] if image_ids is None else [str(i) for i in image_ids]
        _check_ids(ids, len(e))
        order: dict[str, list[int]] = {}
        for i, n in enumerate(names):
            order.setdefault(n, []).append(i)
        groups = [
            (
                n,
                e[rows],
                [ids[i] for i in rows],
                [metas[i] for i in rows] if metas is not None else None,
                crops[rows] if crops is not None else None,
            )
            for n, rows in order.items()
        ]
        self._store.add_many(groups)
        return ids

    def remove(self, name: str) -> int:
        """Remove an identity (GalleryError if it is not enrolled); returns images removed."""
        return self._store.remove(name)

    def remove_images(self, image_ids: Iterable[str]) -> int:
        """Remove single photos by image id."""
        return self._store.remove_images(list(image_ids))

    def rename(self, old: str, new: str) -> None:
        """Rename an identity."""
        check_name(new)
        self._store.rename(old, new)

    # ------------------------------------------------------------------ search
    def similarities(
        self, embeddings: np.ndarray, templates: str = "identity", *, normalized: bool = False
    ) -> np.ndarray:
        """Cosine similarity ``[N, K]`` of probes to every identity (columns in :attr:`names` order).

        ``normalized=True`` says the probes are unit vectors already (``FaceRecognizer`` embeddings
        are), so they are not L2-normalised a second time.
        """
        e = self._check_embeddings(embeddings)
        e = e if normalized else l2_normalize(e)
        if templates == "identity":
            return e @ self.templates.T
        _ids, names, mat = self.image_templates()
        s = e @ mat.T
        order = {n: i for i, n in enumerate(self.names)}
        out = np.full((len(e), len(order)), -np.inf, np.float32)
        col = np.array([order[n] for n in names], np.int64)
        np.maximum.at(out, (slice(None), col), s) if len(col) else None
        return out

    def search_hits(
        self, embeddings: np.ndarray, top_k: int = 5, templates: str = "identity", *, normalized: bool = False
    ) -> list[list[Hit]]:
        """Top-K :class:`Hit` (name, cosine, best-matching image id) per probe, best first
        (``normalized``: see :meth:`similarities`)."""
        if templates not in TEMPLATE_LEVELS:
            raise ConfigError(f"templates must be one of {TEMPLATE_LEVELS}")
        if not isinstance(top_k, (int, np.integer)) or top_k < 1:
            raise ConfigError("top_k must be a positive integer")
        e = self._check_embeddings(embeddings)
        e = e if normalized else l2_normalize(e)
        if len(self) == 0:
            return [[] for _ in range(len(e))]
        return self._store.search(e, int(top_k), templates)

    def search(
        self, embeddings: np.ndarray, top_k: int = 5, templates: str = "identity", *, normalized: bool = False
    ) -> list[list[tuple[str, float]]]:
        """Top-K (name, cosine) per probe, best first."""
        hits = self.search_hits(embeddings, top_k, templates, normalized=normalized)
        return [[(h.name, h.similarity) for h in hs] for hs in hits]

    def identify(
        self,
        embeddings: np.ndarray,
        *,
        threshold: float | None = None,
        top_k: int = 5,
        templates: str = "identity",
        normalized: bool = False,
    ) -> list[Match]:
        """Best identity per probe, or ``Unknown`` below ``threshold`` (``normalized``: see similarities)."""
        from ..calibration import check_threshold

        thr = self.threshold if threshold is None else check_threshold(threshold)
        src = f"gallery ({self.threshold_source})" if threshold is None else None
        out = []
        for hits in self.search_hits(embeddings, top_k=top_k, templates=templates, normalized=normalized):
            cands = [(h.name, h.similarity) for h in hits]
            if hits and hits[0].similarity >= thr:
                out.append(Match(hits[0].name, hits[0].similarity, cands, thr, src, hits[0].image_id))
            else:
                out.append(Match(UNKNOWN, hits[0].similarity if hits else -1.0, cands, thr, src))
        return out

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | os.PathLike | None = None) -> Path | None:
        """Persist: for a file gallery, lock, merge what other processes saved meanwhile, write atomically.

        ``path`` defaults to the file the gallery was opened from; a new path is a save-as.
        """
        return self._store.save(path)

    def close(self) -> None:
        self._store.close()

    def __enter__(self) -> Gallery:  # noqa: PYI034
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @classmethod
    def from_templates(
        cls, names: Iterable[str], embeddings: np.ndarray, model_id: str, **kw: Any
    ) -> Gallery:
        """Build a gallery with one embedding per name."""
        e = np.asarray(embeddings, np.float32)
        g = cls(model_id, e.shape[1], **kw)
        for n, v in zip(names, e):
            g.add(n, v)
        return g


def _check_ids(ids: list[str], n: int) -> None:
    if len(ids) != n or len(set(ids)) != len(ids) or not all(re.fullmatch(r"[\w.:-]{1,128}", i) for i in ids):
        raise ConfigError("image_ids must be unique short ids ([A-Za-z0-9_.:-]), one per embedding")


def _check_json(obj: Any) -> None:
    import json

    try:
        s = json.dumps(obj, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"metadata must be JSON-serialisable: {exc}") from None
    if len(s) > 1 << 20:
        raise ConfigError("metadata larger than 1 MiB")
