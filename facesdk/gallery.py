"""Enrolled identities, exact cosine search, and a provenance-recording file format.

Enrollment is weight imprinting: each identity's template is the mean of its
L2-normalised sample embeddings, renormalised. The gallery keeps the running
sum and count so more photos can be added later.

File format (``.npz``, no pickles): arrays ``names`` (unicode), ``sums``
(float32 [K,D]), ``counts`` (int64 [K]) and ``meta`` (a JSON string) with the
format version, model id and sha256, embedding size, backend and precision
that produced the embeddings. Writes are atomic (temp file, fsync, rename).
"""

from __future__ import annotations

import json
import logging
import os
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from .errors import ConfigError, GalleryError, IncompatibleGalleryError
from .fileio import atomic_writer

__all__ = ["Gallery", "Match", "UNKNOWN", "l2_normalize"]

log = logging.getLogger(__name__)

UNKNOWN = "Unknown"
FORMAT = "facesdk-gallery"
VERSION = 1


def l2_normalize(x: np.ndarray, axis: int = -1, eps: float = 1e-12) -> np.ndarray:
    """Divide vectors by their L2 norm (host-side; accelerators often cannot)."""
    x = np.asarray(x, dtype=np.float32)
    n = np.linalg.norm(x, axis=axis, keepdims=True)
    return x / np.maximum(n, eps)


@dataclass
class Match:
    """Best identity for one probe: ``name`` is ``"Unknown"`` below the threshold."""

    name: str
    similarity: float
    top_k: list[tuple[str, float]] = field(default_factory=list)
    #: the threshold the decision used and the operating point it came from
    threshold: float | None = None
    operating_point: str | None = None

    @property
    def known(self) -> bool:
        return self.name != UNKNOWN

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "similarity": round(float(self.similarity), 4),
            "top_k": [[n, round(float(s), 4)] for n, s in self.top_k],
            **({"threshold": round(float(self.threshold), 4)} if self.threshold is not None else {}),
            **({"operating_point": self.operating_point} if self.operating_point else {}),
        }


class Gallery:
    """In-memory gallery of enrolled identities for one embedding model.

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
    ) -> None:
        if embedding_size <= 0:
            raise ConfigError("embedding_size must be positive")
        from .calibration import check_threshold

        threshold = check_threshold(threshold, what="gallery threshold")
        self.threshold_source = str(threshold_source)
        self.model_id = model_id
        self.embedding_size = int(embedding_size)
        self.model_sha256 = model_sha256
        self.backend = backend
        self.precision = precision
        self.threshold = float(threshold)
        self._names: list[str] = []
        self._sums = np.zeros((0, self.embedding_size), np.float32)
        self._counts = np.zeros((0,), np.int64)
        self._templates: np.ndarray | None = None

    # ------------------------------------------------------------------ content
    def __len__(self) -> int:
        return len(self._names)

    def __contains__(self, name: object) -> bool:
        return name in self._names

    @property
    def names(self) -> list[str]:
        """Enrolled identity names, in insertion order."""
        return list(self._names)

    def counts(self) -> dict[str, int]:
        """Number of samples enrolled per identity."""
        return {n: int(c) for n, c in zip(self._names, self._counts)}

    @property
    def templates(self) -> np.ndarray:
        """``[K, D]`` L2-normalised identity templates."""
        if self._templates is None:
            self._templates = l2_normalize(self._sums) if len(self._names) else self._sums.copy()
        return self._templates

    def _check_embeddings(self, emb: np.ndarray) -> np.ndarray:
        e = np.asarray(emb, dtype=np.float32)
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

    def add(self, name: str, embeddings: np.ndarray) -> None:
        """Enroll (or extend) ``name`` with one or more embeddings (weight imprinting)."""
        if not isinstance(name, str) or not name.strip() or name == UNKNOWN:
            raise ConfigError(f"invalid identity name {name!r}")
        e = l2_normalize(self._check_embeddings(embeddings))
        if name in self._names:
            i = self._names.index(name)
            self._sums[i] += e.sum(0)
            self._counts[i] += len(e)
        else:
            self._names.append(name)
            self._sums = np.vstack([self._sums, e.sum(0, keepdims=True)])
            self._counts = np.append(self._counts, len(e))
        self._templates = None

    def remove(self, name: str) -> None:
        """Remove an identity."""
        if name not in self._names:
            raise GalleryError(f"{name!r} is not enrolled")
        i = self._names.index(name)
        del self._names[i]
        self._sums = np.delete(self._sums, i, axis=0)
        self._counts = np.delete(self._counts, i)
        self._templates = None

    # ------------------------------------------------------------------ search
    def similarities(self, embeddings: np.ndarray) -> np.ndarray:
        """Cosine similarity ``[N, K]`` of probes to every identity."""
        e = l2_normalize(self._check_embeddings(embeddings))
        return e @ self.templates.T

    def search(self, embeddings: np.ndarray, top_k: int = 5) -> list[list[tuple[str, float]]]:
        """Top-K (name, cosine) per probe, best first."""
        if not self._names:
            e = self._check_embeddings(embeddings)
            return [[] for _ in range(len(e))]
        sims = self.similarities(embeddings)
        k = min(top_k, sims.shape[1])
        idx = np.argsort(-sims, axis=1, kind="stable")[:, :k]
        return [[(self._names[j], float(sims[i, j])) for j in idx[i]] for i in range(len(sims))]

    def identify(
        self, embeddings: np.ndarray, *, threshold: float | None = None, top_k: int = 5
    ) -> list[Match]:
        """Best identity per probe, or ``Unknown`` when below ``threshold``."""
        from .calibration import check_threshold

        thr = self.threshold if threshold is None else check_threshold(threshold)
        src = f"gallery ({self.threshold_source})" if threshold is None else None
        out = []
        for cands in self.search(embeddings, top_k=top_k):
            if cands and cands[0][1] >= thr:
                out.append(Match(cands[0][0], cands[0][1], cands, thr, src))
            else:
                out.append(Match(UNKNOWN, cands[0][1] if cands else -1.0, cands, thr, src))
        return out

    # ------------------------------------------------------------------ provenance
    def metadata(self) -> dict[str, Any]:
        """The provenance record stored with the gallery."""
        return {
            "format": FORMAT,
            "version": VERSION,
            "model_id": self.model_id,
            "model_sha256": self.model_sha256,
            "embedding_size": self.embedding_size,
            "backend": self.backend,
            "precision": self.precision,
            "threshold": self.threshold,
            "threshold_source": self.threshold_source,
            "identities": len(self._names),
            "saved_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }

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

    # ------------------------------------------------------------------ files
    def save(self, path: str | os.PathLike) -> Path:
        """Write the gallery atomically to ``path`` (.npz)."""
        p = Path(path)
        with atomic_writer(p) as f:
            np.savez(
                f,
                names=np.array(self._names, dtype=np.str_) if self._names else np.zeros((0,), "<U1"),
                sums=self._sums.astype(np.float32),
                counts=self._counts.astype(np.int64),
                meta=np.array(json.dumps(self.metadata())),
            )
        log.info("saved gallery with %d identities to %s", len(self), p)
        return p

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Gallery":
        """Read a gallery file, validating its format and contents."""
        p = Path(path)
        if not p.is_file():
            raise GalleryError(f"gallery file not found: {p}")
        try:
            with np.load(p, allow_pickle=False) as z:
                meta = json.loads(str(z["meta"]))
                names = [str(n) for n in z["names"]]
                sums = np.asarray(z["sums"], np.float32)
                counts = np.asarray(z["counts"], np.int64)
        except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError, json.JSONDecodeError) as exc:
            raise GalleryError(f"{p} is not a readable facesdk gallery: {exc}") from None
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise GalleryError(f"{p} is not a facesdk gallery")
        if meta.get("version") != VERSION:
            raise GalleryError(f"{p}: unsupported gallery version {meta.get('version')!r}")
        from .calibration import check_threshold

        # a stored threshold outside the score range (e.g. edited to -1) would accept every stranger
        thr = check_threshold(meta.get("threshold", 0.5), what=f"{p}: stored threshold", error=GalleryError)
        d = int(meta.get("embedding_size", -1))
        if sums.ndim != 2 or sums.shape != (len(names), d) or counts.shape != (len(names),):
            raise GalleryError(f"{p}: inconsistent gallery arrays")
        if len(set(names)) != len(names):
            raise GalleryError(f"{p}: duplicate identity names")
        g = cls(
            meta["model_id"],
            d,
            model_sha256=meta.get("model_sha256"),
            backend=meta.get("backend"),
            precision=meta.get("precision"),
            threshold=thr,
            threshold_source=str(meta.get("threshold_source", "legacy")),
        )
        g._names, g._sums, g._counts = names, sums, counts
        return g

    @classmethod
    def from_templates(
        cls, names: Iterable[str], embeddings: np.ndarray, model_id: str, **kw: Any
    ) -> "Gallery":
        """Build a gallery with one embedding per name."""
        e = np.asarray(embeddings, np.float32)
        g = cls(model_id, e.shape[1], **kw)
        for n, v in zip(names, e):
            g.add(n, v)
        return g
