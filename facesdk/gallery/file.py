"""The embedded gallery store: in memory, persisted to one ``.npz`` file (no pickles).

File format, version 2 (a zip of ``.npy`` members, written by ``numpy.savez``):

- ``meta``: JSON string: ``format`` = ``facesdk-gallery``, ``version`` = 2, ``provenance`` (model id,
  sha256, embedding size, backend, precision, threshold, calibration), ``generation`` (a random id
  that changes at every save; used to detect another process's save), counts, ``saved_at``.
- ``names`` (unicode ``[K]``), ``identity_meta`` (JSON list of K objects).
- ``image_ids`` (unicode ``[N]``), ``image_identity`` (int64 ``[N]``, index into ``names``),
  ``image_emb`` (float32 ``[N, D]``, L2-normalised), ``image_weight`` (float32 ``[N]``),
  ``image_samples`` (int64 ``[N]``), ``image_meta`` (JSON list of N objects).
- optional ``crop_ids`` (unicode ``[M]``) and ``crops`` (uint8 ``[M, h, w, 3]``): kept face crops.

Identity template ``k`` = normalise(sum of ``weight * emb`` over its images) (weight imprinting; a
version-1 file's per-identity running sums migrate to one row with ``weight = |sum|``, so templates
are bit-for-bit those of version 1). Version-1 files (``names``, ``sums``, ``counts``, ``meta``)
still load.

Reading is hardened: every member's ``.npy`` header is checked (dtype, rank, no object arrays,
declared size = stored size) before any data is read, total declared size is bounded, and arrays
are read with ``allow_pickle=False``.

Concurrency: one re-entrant lock per store (threads); saving takes an exclusive file lock
(:func:`facesdk.fileio.file_lock`), and when the file's generation differs from the one this store
last read or wrote, the file is re-read and this store's journal of pending operations is replayed
onto it (adds commute; a rename onto a name that appeared meanwhile raises
:class:`~facesdk.errors.GalleryConflictError`), then written atomically — no lost updates.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import uuid
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import GalleryConflictError, GalleryError, GalleryLockedError
from ..fileio import LockTimeout, atomic_writer, file_lock, stale_temps
from . import GalleryStore, Hit, ImageRecord, Provenance, l2_normalize, new_image_id
from .index import ExactIndex

__all__ = ["FORMAT", "MAX_FILE_BYTES", "VERSION", "EmbeddedStore", "read_gallery_meta"]

log = logging.getLogger(__name__)

FORMAT = "facesdk-gallery"
VERSION = 2
#: Upper bound on the declared (uncompressed) size of a gallery file's arrays.
MAX_FILE_BYTES = int(os.environ.get("FACESDK_MAX_GALLERY_BYTES") or 16 << 30)
#: Upper bound on a JSON member.
MAX_JSON_BYTES = 256 << 20

# member -> (dtype kind(s), rank)
_V2 = {
    "meta": ("U", 0),
    "names": ("U", 1),
    "identity_meta": ("U", 0),
    "image_ids": ("U", 1),
    "image_identity": ("i", 1),
    "image_emb": ("f", 2),
    "image_weight": ("f", 1),
    "image_samples": ("i", 1),
    "image_meta": ("U", 0),
    "crop_ids": ("U", 1),
    "crops": ("u", 4),
}
_V1 = {"meta": ("U", 0), "names": ("U", 1), "sums": ("f", 2), "counts": ("i", 1)}
_OPTIONAL = {"crop_ids", "crops"}


class _Grow:
    """A growable 1-D array (capacity doubling: amortised O(1) append)."""

    def __init__(self, dtype: Any) -> None:
        self.a = np.zeros((16,), dtype)
        self.n = 0

    def extend(self, v: np.ndarray) -> None:
        v = np.asarray(v, self.a.dtype).reshape(-1)
        need = self.n + len(v)
        if need > len(self.a):
            cap = len(self.a)
            while cap < need:
                cap *= 2
            b = np.zeros((cap,), self.a.dtype)
            b[: self.n] = self.a[: self.n]
            self.a = b
        self.a[self.n : need] = v
        self.n = need

    @property
    def v(self) -> np.ndarray:
        return self.a[: self.n]

    def keep(self, mask: np.ndarray) -> None:
        kept = self.a[: self.n][mask]
        self.a = np.zeros((max(16, len(kept)),), self.a.dtype)
        self.a[: len(kept)] = kept
        self.n = len(kept)


def _dt(x: Any) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(x))


class EmbeddedStore(GalleryStore):
    """The default store: contiguous in-memory matrices, optionally bound to an ``.npz`` file."""

    kind = "file"

    def __init__(
        self,
        provenance: Provenance,
        *,
        path: str | os.PathLike | None = None,
        storage: str = "fp32",
        keep_crops: bool = False,
        lock_timeout: float = 60.0,
    ) -> None:
        self.provenance = provenance
        self.path = Path(path) if path is not None else None
        self.storage = storage
        self.keep_crops = bool(keep_crops)
        self.lock_timeout = float(lock_timeout)
        self._lock = threading.RLock()
        self._reset()
        self._journal: list[tuple[Any, ...]] = []
        self._base_gen: str | None = None

    def _reset(self) -> None:
        d = self.provenance.embedding_size
        self._names: list[str] = []
        self._pos: dict[str, int] = {}
        self._imeta: list[dict[str, Any]] = []
        self._sums = np.zeros((16, d), np.float32)
        self._counts = _Grow(np.int64)
        self._tindex = ExactIndex(d, storage=self.storage)
        self._iindex = ExactIndex(d, storage=self.storage)
        self._img_ids: list[str] = []
        self._img_pos: dict[str, int] = {}
        self._img_ident = _Grow(np.int64)
        self._img_weight = _Grow(np.float32)
        self._img_samples = _Grow(np.int64)
        self._img_meta: list[dict[str, Any]] = []
        self._crops: dict[str, np.ndarray] = {}
        self._groups: tuple[np.ndarray, np.ndarray] | None = None

    # ------------------------------------------------------------------ opening
    @classmethod
    def open(
        cls,
        uri: str | os.PathLike,
        *,
        provenance: Provenance | None = None,
        create: bool = True,
        storage: str = "fp32",
        keep_crops: bool = False,
        lock_timeout: float = 60.0,
        max_bytes: int | None = None,
    ) -> EmbeddedStore:
        """Open the gallery file at ``uri`` (bound: saves merge), or a new one bound to it."""
        p = Path(os.fspath(uri))
        try:
            exists = p.exists()
        except (OSError, ValueError) as exc:  # name too long, NUL in the name, permission
            why = getattr(exc, "strerror", None) or exc
            raise GalleryError(f"cannot open gallery file {str(p)[:200]}: {why}") from None
        if exists:
            if not p.is_file():
                raise GalleryError(f"{p} is not a file")
            st = cls._read(p, storage=storage, max_bytes=max_bytes)
            st.keep_crops = keep_crops or bool(st._crops)
            st.lock_timeout = float(lock_timeout)
            return st
        if not create:
            raise GalleryError(f"gallery file not found: {p}")
        if provenance is None:
            raise GalleryError(f"gallery file not found: {p} (give the model to create one)")
        return cls(provenance, path=p, storage=storage, keep_crops=keep_crops, lock_timeout=lock_timeout)

    # ------------------------------------------------------------------ reads
    def names(self) -> list[str]:
        with self._lock:
            return list(self._names)

    def __len__(self) -> int:
        return len(self._names)

    def __contains__(self, name: object) -> bool:
        return name in self._pos

    def counts(self) -> dict[str, int]:
        with self._lock:
            return {n: int(c) for n, c in zip(self._names, self._counts.v)}

    def identity_meta(self, name: str) -> dict[str, Any]:
        with self._lock:
            return dict(self._imeta[self._index(name)])

    def identity_templates(self) -> tuple[list[str], np.ndarray]:
        with self._lock:
            return list(self._names), self._tindex.matrix.copy()

    def image_templates(self, name: str | None = None) -> tuple[list[str], list[str], np.ndarray]:
        with self._lock:
            rows = self._rows_of(name)
            ids = [self._img_ids[r] for r in rows]
            names = [self._names[i] for i in self._img_ident.v[rows]]
            return ids, names, self._iindex.matrix[rows].copy()

    def images(self, name: str | None = None) -> list[ImageRecord]:
        with self._lock:
            return [
                ImageRecord(
                    self._img_ids[r],
                    self._names[self._img_ident.a[r]],
                    dict(self._img_meta[r]),
                    self._img_ids[r] in self._crops,
                )
                for r in self._rows_of(name)
            ]

    def crops(self, image_ids: Sequence[str]) -> dict[str, np.ndarray]:
        with self._lock:
            return {i: self._crops[i] for i in image_ids if i in self._crops}

    def n_images(self) -> int:
        return len(self._img_ids)

    def _index(self, name: str) -> int:
        try:
            return self._pos[name]
        except (KeyError, TypeError):
            raise GalleryError(f"{name!r} is not enrolled") from None

    def _rows_of(self, name: str | None) -> np.ndarray:
        if name is None:
            return np.arange(len(self._img_ids))
        return np.flatnonzero(self._img_ident.v == self._index(name))

    # ------------------------------------------------------------------ writes (journalled)
    def add(
        self,
        name: str,
        embeddings: np.ndarray,
        image_ids: Sequence[str],
        metas: Sequence[dict[str, Any]] | None = None,
        crops: np.ndarray | None = None,
    ) -> None:
        m = len(embeddings)
        op = (
            "add",
            name,
            np.asarray(embeddings, np.float32),
            list(image_ids),
            np.ones(m, np.float32),
            np.ones(m, np.int64),
            [dict(x) for x in metas] if metas is not None else [{} for _ in range(m)],
            crops if (crops is not None and self.keep_crops) else None,
        )
        self._do(op)

    def remove(self, name: str) -> int:
        with self._lock:
            self._index(name)
            return self._do(("remove", name))

    def remove_images(self, image_ids: Sequence[str]) -> int:
        with self._lock:
            missing = [i for i in image_ids if i not in self._img_pos]
            if missing:
                raise GalleryError(f"no enrolled image with id {missing[0]!r}")
            return self._do(("remove_images", list(image_ids)))

    def rename(self, old: str, new: str) -> None:
        self._do(("rename", old, new))

    def set_identity_meta(self, name: str, meta: dict[str, Any]) -> None:
        self._do(("meta", name, dict(meta)))

    def set_provenance(self, prov: Provenance) -> None:
        with self._lock:
            self._do(("provenance", prov))

    def _do(self, op: tuple[Any, ...]) -> Any:
        with self._lock:
            r = self._apply(op, replay=False)
            if self.path is not None:
                self._journal.append(op)
            return r

    def _apply(self, op: tuple[Any, ...], *, replay: bool) -> Any:
        kind = op[0]
        if kind == "add":
            _, name, emb, ids, weights, samples, metas, crops = op
            if replay:  # the same photo cannot be added twice
                keep = np.array([i not in self._img_pos for i in ids], bool)
                if not keep.all():
                    emb, weights, samples = emb[keep], weights[keep], samples[keep]
                    ids = [i for i, k in zip(ids, keep) if k]
                    metas = [x for x, k in zip(metas, keep) if k]
                    crops = crops[keep] if crops is not None else None
                if not len(ids):
                    return 0
            elif any(i in self._img_pos for i in ids):
                raise GalleryError("an image id is already enrolled")
            self._add_rows(name, emb, ids, weights, samples, metas, crops)
            return len(ids)
        if kind == "remove":
            if op[1] not in self._pos:
                if replay:
                    return 0
                raise GalleryError(f"{op[1]!r} is not enrolled")
            return self._remove_identity(self._pos[op[1]])
        if kind == "remove_images":
            rows = [self._img_pos[i] for i in op[1] if i in self._img_pos]
            return self._remove_rows(np.asarray(rows, np.int64))
        if kind == "rename":
            _, old, new = op
            if old not in self._pos:
                if replay:
                    raise GalleryConflictError(
                        f"cannot rename {old!r}: another process removed or renamed it"
                    )
                raise GalleryError(f"{old!r} is not enrolled")
            if new in self._pos and new != old:
                if replay:
                    raise GalleryConflictError(
                        f"cannot rename {old!r} to {new!r}: another process enrolled {new!r}"
                    )
                raise GalleryError(f"{new!r} is already enrolled")
            i = self._pos.pop(old)
            self._names[i] = new
            self._pos[new] = i
            return None
        if kind == "meta":
            _, name, meta = op
            if name not in self._pos:
                if replay:
                    return None
                raise GalleryError(f"{name!r} is not enrolled")
            self._imeta[self._pos[name]] = meta
            return None
        if kind == "provenance":
            GalleryStore.set_provenance(self, op[1])
            return None
        raise AssertionError(kind)  # pragma: no cover

    def _add_rows(
        self,
        name: str,
        emb: np.ndarray,
        ids: list[str],
        weights: np.ndarray,
        samples: np.ndarray,
        metas: list[dict[str, Any]],
        crops: np.ndarray | None,
    ) -> None:
        d = self.provenance.embedding_size
        i = self._pos.get(name)
        new = i is None
        if new:
            i = len(self._names)
            if i >= len(self._sums):
                s = np.zeros((2 * len(self._sums), d), np.float32)
                s[:i] = self._sums[:i]
                self._sums = s
            self._sums[i] = 0.0
            self._names.append(name)
            self._pos[name] = i
            self._imeta.append({})
            self._counts.extend([0])
        self._sums[i] += (emb.astype(np.float64) * weights[:, None]).sum(0).astype(np.float32)
        self._counts.a[i] += int(samples.sum())
        t = l2_normalize(self._sums[i])
        if new:
            self._tindex.append(t)
        else:
            self._tindex.replace([i], t[None])
        start = len(self._img_ids)
        self._iindex.append(emb)
        self._img_ids.extend(ids)
        for k, iid in enumerate(ids):
            self._img_pos[iid] = start + k
        self._img_ident.extend(np.full(len(ids), i))
        self._img_weight.extend(weights)
        self._img_samples.extend(samples)
        self._img_meta.extend(metas)
        if crops is not None:
            for iid, c in zip(ids, crops):
                self._crops[iid] = np.ascontiguousarray(c, np.uint8)
        self._groups = None

    def _remove_identity(self, i: int) -> int:
        rows = np.flatnonzero(self._img_ident.v == i)
        self._drop_rows(rows)
        name = self._names[i]
        del self._names[i]
        del self._imeta[i]
        keep = np.ones(len(self._counts.v), bool)
        keep[i] = False
        self._counts.keep(keep)
        k = len(self._names)
        self._sums[i:k] = self._sums[i + 1 : k + 1]
        self._tindex.delete([i])
        self._pos = {n: j for j, n in enumerate(self._names)}
        self._img_ident.a[: self._img_ident.n][self._img_ident.v > i] -= 1
        log.debug("removed %r (%d images)", name, len(rows))
        return len(rows)

    def _drop_rows(self, rows: np.ndarray) -> None:
        if not len(rows):
            return
        keep = np.ones(len(self._img_ids), bool)
        keep[rows] = False
        for r in rows:
            self._crops.pop(self._img_ids[r], None)
        self._iindex.delete(rows)
        self._img_ids = [x for x, k in zip(self._img_ids, keep) if k]
        self._img_meta = [x for x, k in zip(self._img_meta, keep) if k]
        self._img_pos = {x: j for j, x in enumerate(self._img_ids)}
        self._img_ident.keep(keep)
        self._img_weight.keep(keep)
        self._img_samples.keep(keep)
        self._groups = None

    def _remove_rows(self, rows: np.ndarray) -> int:
        if not len(rows):
            return 0
        affected = sorted({int(x) for x in self._img_ident.v[rows]}, reverse=True)
        self._drop_rows(rows)
        for i in affected:  # recompute sums exactly from the remaining photos
            mine = np.flatnonzero(self._img_ident.v == i)
            if not len(mine):
                self._remove_identity(i)
                continue
            w = self._img_weight.v[mine].astype(np.float64)
            self._sums[i] = (self._iindex.matrix[mine].astype(np.float64) * w[:, None]).sum(0)
            self._counts.a[i] = int(self._img_samples.v[mine].sum())
            self._tindex.replace([i], l2_normalize(self._sums[i])[None])
        return len(rows)

    # ------------------------------------------------------------------ search
    def _grouping(self) -> tuple[np.ndarray, np.ndarray]:
        if self._groups is None:
            ident = self._img_ident.v
            order = np.argsort(ident, kind="stable")
            starts = np.searchsorted(ident[order], np.arange(len(self._names)))
            self._groups = (order, starts)
        return self._groups

    def search(self, queries: np.ndarray, top_k: int, templates: str = "identity") -> list[list[Hit]]:
        with self._lock:
            k = min(top_k, len(self._names))
            if templates == "identity":
                res = self._tindex.search(queries, k)
                sims_img = None
                top_rows, top_vals = res.rows, res.scores
            else:
                sims_img = self._iindex.scores(queries)  # [Q, N]
                order, starts = self._grouping()
                best = np.maximum.reduceat(sims_img[:, order], starts, axis=1)  # [Q, K]
                kk = min(k, best.shape[1])
                part = np.argpartition(-best, kk - 1, axis=1)[:, :kk]
                vals = np.take_along_axis(best, part, axis=1)
                o = np.lexsort((part, -vals), axis=1)
                top_rows = np.take_along_axis(part, o, axis=1)
                top_vals = np.take_along_axis(vals, o, axis=1)
            out: list[list[Hit]] = []
            ident = self._img_ident.v
            for qi in range(len(queries)):
                hits = []
                for j, s in zip(top_rows[qi], top_vals[qi]):
                    rows = np.flatnonzero(ident == j) if len(ident) < 4096 else self._rows_for(int(j))
                    if sims_img is not None:
                        r = rows[int(np.argmax(sims_img[qi, rows]))]
                    else:
                        r = rows[int(np.argmax(self._iindex.matrix[rows] @ queries[qi]))]
                    hits.append(Hit(self._names[int(j)], float(s), self._img_ids[int(r)]))
                out.append(hits)
            return out

    def _rows_for(self, i: int) -> np.ndarray:
        order, starts = self._grouping()
        end = starts[i + 1] if i + 1 < len(starts) else len(order)
        return order[starts[i] : end]

    # ------------------------------------------------------------------ persistence
    def describe(self) -> dict[str, Any]:
        return {
            "store": self.kind,
            "path": str(self.path) if self.path else None,
            "storage": self.storage,
            "images_total": len(self._img_ids),
            "crops_kept": len(self._crops),
            "unsaved_changes": len(self._journal),
        }

    def save(self, path: str | os.PathLike | None = None) -> Path:
        target = Path(path) if path is not None else self.path
        if target is None:
            raise GalleryError("this gallery has no file yet: give a path to save it")
        with self._lock:
            try:
                with file_lock(target, timeout=self.lock_timeout):
                    for t in stale_temps(target):
                        log.warning("removing stale temp file %s (a writer died mid-save)", t)
                        try:
                            t.unlink()
                        except OSError:
                            pass
                    same = self.path is not None and _same_file(target, self.path)
                    if same and target.exists():
                        disk_gen = read_gallery_meta(target).get("generation")
                        if disk_gen != self._base_gen:
                            self._merge_from_disk(target)
                    elif same and self._base_gen is not None:
                        log.warning("%s vanished since it was read; writing it anew", target)
                    gen = uuid.uuid4().hex
                    self._write(target, gen)
            except LockTimeout as exc:
                raise GalleryLockedError(str(exc)) from None
            self.path, self._base_gen = target, gen
            self._journal.clear()
        log.info(
            "saved gallery with %d identities (%d images) to %s", len(self._names), len(self._img_ids), target
        )
        return target

    def _merge_from_disk(self, target: Path) -> None:
        disk = EmbeddedStore._read(target, storage=self.storage)
        disk.provenance.check_compatible(
            self.provenance.model_id, self.provenance.embedding_size, self.provenance.model_sha256
        )
        disk.keep_crops = self.keep_crops
        for op in self._journal:
            disk._apply(op, replay=True)  # GalleryConflictError leaves the file as it is
        log.info(
            "merged %d pending change(s) into %s saved meanwhile by another process",
            len(self._journal),
            target,
        )
        self._adopt(disk)

    def _adopt(self, other: EmbeddedStore) -> None:
        for attr in (
            "provenance",
            "_names",
            "_pos",
            "_imeta",
            "_sums",
            "_counts",
            "_tindex",
            "_iindex",
            "_img_ids",
            "_img_pos",
            "_img_ident",
            "_img_weight",
            "_img_samples",
            "_img_meta",
            "_crops",
        ):
            setattr(self, attr, getattr(other, attr))
        self._groups = None

    def _write(self, target: Path, generation: str) -> None:
        n = len(self._img_ids)
        meta = {
            "format": FORMAT,
            "version": VERSION,
            "provenance": self.provenance.to_dict(),
            "generation": generation,
            "identities": len(self._names),
            "images": n,
            "storage": self.storage,
            "saved_at": _dt(time.time()),
        }
        arrays: dict[str, np.ndarray] = {
            "meta": np.array(json.dumps(meta)),
            "names": np.array(self._names, dtype=np.str_) if self._names else np.zeros((0,), "<U1"),
            "identity_meta": np.array(json.dumps(self._imeta)),
            "image_ids": np.array(self._img_ids, dtype=np.str_) if n else np.zeros((0,), "<U1"),
            "image_identity": self._img_ident.v.astype(np.int64),
            "image_emb": np.ascontiguousarray(self._iindex.matrix, np.float32),
            "image_weight": self._img_weight.v.astype(np.float32),
            "image_samples": self._img_samples.v.astype(np.int64),
            "image_meta": np.array(json.dumps(self._img_meta)),
        }
        if self._crops:
            shapes = {c.shape for c in self._crops.values()}
            if len(shapes) == 1:
                ids = [i for i in self._img_ids if i in self._crops]
                arrays["crop_ids"] = np.array(ids, dtype=np.str_)
                arrays["crops"] = np.stack([self._crops[i] for i in ids])
            else:
                log.warning("face crops of different sizes are not saved")
        with atomic_writer(target) as f:
            np.savez(f, **arrays)  # type: ignore[arg-type]

    # ------------------------------------------------------------------ reading
    @classmethod
    def _read(cls, p: Path, *, storage: str = "fp32", max_bytes: int | None = None) -> EmbeddedStore:
        arrays, meta = _read_members(p, MAX_FILE_BYTES if max_bytes is None else int(max_bytes))
        if meta.get("version") == 1:
            return cls._from_v1(p, arrays, meta, storage)
        if meta.get("version") != VERSION:
            raise GalleryError(f"{p}: unsupported gallery version {meta.get('version')!r}")
        prov = Provenance.from_dict(meta.get("provenance"))  # type: ignore[arg-type]
        d = prov.embedding_size
        names = [str(x) for x in arrays["names"]]
        ids = [str(x) for x in arrays["image_ids"]]
        ident = arrays["image_identity"].astype(np.int64)
        emb = arrays["image_emb"]
        w = arrays["image_weight"].astype(np.float32)
        samples = arrays["image_samples"].astype(np.int64)
        n, k = len(ids), len(names)
        if emb.shape != (n, d) or ident.shape != (n,) or w.shape != (n,) or samples.shape != (n,):
            raise GalleryError(f"{p}: inconsistent gallery arrays")
        imeta = _json_list(arrays["identity_meta"], k, p, "identity_meta")
        gmeta = _json_list(arrays["image_meta"], n, p, "image_meta")
        if len(set(names)) != k or len(set(ids)) != n:
            raise GalleryError(f"{p}: duplicate identity names or image ids")
        if n and (ident.min() < 0 or ident.max() >= k):
            raise GalleryError(f"{p}: image rows point at identities that do not exist")
        if k and len(np.unique(ident)) != k:
            raise GalleryError(f"{p}: an identity has no images")
        if not np.isfinite(emb).all() or not np.isfinite(w).all() or (w <= 0).any() or (samples < 1).any():
            raise GalleryError(f"{p}: non-finite or non-positive gallery values")
        norms = np.linalg.norm(emb, axis=1) if n else np.zeros(0)
        if n and np.abs(norms - 1).max() > 1e-3:
            raise GalleryError(f"{p}: image templates are not unit vectors")
        st = cls(prov, path=p, storage=storage)
        st._load_rows(names, imeta, ids, ident, emb, w, samples, gmeta)
        if "crops" in arrays:
            cids = [str(x) for x in arrays["crop_ids"]]
            crops = arrays["crops"]
            if len(cids) != len(crops) or not set(cids) <= set(ids) or crops.shape[-1:] != (3,):
                raise GalleryError(f"{p}: inconsistent face crops")
            st._crops = {i: crops[j] for j, i in enumerate(cids)}
            st.keep_crops = True
        st._base_gen = meta.get("generation")
        return st

    def _load_rows(
        self,
        names: list[str],
        imeta: list[dict[str, Any]],
        ids: list[str],
        ident: np.ndarray,
        emb: np.ndarray,
        w: np.ndarray,
        samples: np.ndarray,
        gmeta: list[dict[str, Any]],
    ) -> None:
        k, d = len(names), self.provenance.embedding_size
        self._names = list(names)
        self._pos = {x: i for i, x in enumerate(names)}
        self._imeta = list(imeta)
        sums = np.zeros((max(16, k), d), np.float32)
        if len(ident) == k and np.array_equal(ident, np.arange(k)):  # one photo per identity
            sums[:k] = emb * w[:, None]
        else:
            np.add.at(sums, ident, emb * w[:, None])
        self._sums = sums
        cnt = np.zeros(k, np.int64)
        np.add.at(cnt, ident, samples)
        self._counts = _Grow(np.int64)
        self._counts.extend(cnt)
        self._tindex = ExactIndex(d, storage=self.storage, capacity=k)
        self._tindex.append(l2_normalize(sums[:k]))
        self._iindex = ExactIndex(d, storage=self.storage, capacity=len(ids))
        self._iindex.append(emb)
        self._img_ids = list(ids)
        self._img_pos = {x: j for j, x in enumerate(ids)}
        for g, v in ((self._img_ident, ident), (self._img_weight, w), (self._img_samples, samples)):
            g.extend(v)
        self._img_meta = list(gmeta)
        self._groups = None

    @classmethod
    def _from_v1(
        cls, p: Path, arrays: dict[str, np.ndarray], meta: dict[str, Any], storage: str
    ) -> EmbeddedStore:
        if meta.get("format") != FORMAT:
            raise GalleryError(f"{p} is not a facesdk gallery")
        try:
            d = int(meta.get("embedding_size", -1))
        except (TypeError, ValueError):
            raise GalleryError(f"{p}: bad embedding_size") from None
        prov = Provenance.from_dict({**meta, "embedding_size": d})
        names = [str(x) for x in arrays["names"]]
        sums = arrays["sums"].astype(np.float32)
        counts = arrays["counts"].astype(np.int64)
        if sums.shape != (len(names), d) or counts.shape != (len(names),):
            raise GalleryError(f"{p}: inconsistent gallery arrays")
        if len(set(names)) != len(names):
            raise GalleryError(f"{p}: duplicate identity names")
        norms = np.linalg.norm(sums, axis=1)
        if not np.isfinite(sums).all() or (norms <= 0).any() or (counts < 1).any():
            raise GalleryError(f"{p}: non-finite or empty identity sums")
        st = cls(prov, path=p, storage=storage)
        ids = [new_image_id() for _ in names]
        st._load_rows(
            names,
            [{} for _ in names],
            ids,
            np.arange(len(names)),
            l2_normalize(sums),
            norms.astype(np.float32),
            counts,
            [{"migrated_from": "v1 identity sum"} for _ in names],
        )
        st._base_gen = None  # a v1 file has no generation: the first save re-reads and merges
        log.info("%s: version-1 gallery (one template per identity) migrated in memory", p)
        return st


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.abspath(a) == os.path.abspath(b) or (a.exists() and b.exists() and a.samefile(b))
    except OSError:
        return False


def _json_list(arr: np.ndarray, n: int, p: Path, what: str) -> list[dict[str, Any]]:
    try:
        v = json.loads(str(arr))
    except (ValueError, RecursionError):
        raise GalleryError(f"{p}: {what} is not valid JSON") from None
    if not isinstance(v, list) or len(v) != n or not all(isinstance(x, dict) for x in v):
        raise GalleryError(f"{p}: {what} must be a list of {n} objects")
    return v


def _member_header(zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> tuple[tuple[int, ...], np.dtype, int]:
    with zf.open(info) as f:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
        elif version in ((2, 0), (3, 0)):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
        else:
            raise ValueError(f"unsupported .npy version {version}")
        return shape, dtype, int(f.tell()) if fortran is False else -1


def _read_members(p: Path, max_bytes: int) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Validate every member's header, then read arrays (no pickles) and the meta JSON."""
    try:
        zf = zipfile.ZipFile(p)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
        raise GalleryError(f"{p} is not a readable facesdk gallery: {exc}") from None
    try:
        with zf:
            infos = {i.filename: i for i in zf.infolist()}
            members = {n[:-4]: i for n, i in infos.items() if n.endswith(".npy")}
            if set(members) != {n[:-4] for n in infos} or len(infos) != len(members):
                raise GalleryError(f"{p}: unexpected members in gallery file")
            if "meta" not in members:
                raise GalleryError(f"{p} is not a facesdk gallery (no meta)")
            spec = _V1 if "sums" in members else _V2
            required = set(spec) - _OPTIONAL
            if not required <= set(members) or not set(members) <= set(spec):
                raise GalleryError(
                    f"{p}: gallery members {sorted(members)} do not match format (need {sorted(required)})"
                )
            total = sum(i.file_size for i in members.values())
            if total > max_bytes:
                raise GalleryError(f"{p}: declares {total} bytes of arrays, above the limit of {max_bytes}")
            arrays: dict[str, np.ndarray] = {}
            for name, info in members.items():
                kind, rank = spec[name]
                try:
                    shape, dtype, hlen = _member_header(zf, info)
                except (ValueError, OSError, EOFError, zipfile.BadZipFile, SyntaxError) as exc:
                    raise GalleryError(f"{p}: member {name!r} has a bad header: {exc}") from None
                if hlen < 0:
                    raise GalleryError(f"{p}: member {name!r} is Fortran-ordered")
                if dtype.hasobject or dtype.kind != kind or len(shape) != rank:
                    raise GalleryError(
                        f"{p}: member {name!r} has dtype {dtype} / rank {len(shape)}, expected "
                        f"{kind!r} / {rank}"
                    )
                if kind == "U" and rank == 0 and dtype.itemsize > 4 * MAX_JSON_BYTES:
                    raise GalleryError(f"{p}: member {name!r} is too large")
                nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize if shape else dtype.itemsize
                if hlen + nbytes != info.file_size:
                    raise GalleryError(
                        f"{p}: member {name!r} declares {nbytes} bytes, holds {info.file_size - hlen}"
                    )
                try:
                    with zf.open(info) as f:
                        arrays[name] = np.lib.format.read_array(f, allow_pickle=False)  # type: ignore[arg-type]
                except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
                    raise GalleryError(f"{p} is not a readable facesdk gallery: {exc}") from None
    except zipfile.BadZipFile as exc:
        raise GalleryError(f"{p} is not a readable facesdk gallery: {exc}") from None
    try:
        meta = json.loads(str(arrays["meta"]))
    except (ValueError, RecursionError):
        raise GalleryError(f"{p}: gallery metadata is not valid JSON") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise GalleryError(f"{p} is not a facesdk gallery")
    return arrays, meta


def read_gallery_meta(path: str | os.PathLike) -> dict[str, Any]:
    """Only the ``meta`` record of a gallery file (cheap: one small member)."""
    p = Path(path)
    try:
        with zipfile.ZipFile(p) as zf:
            info = zf.getinfo("meta.npy")
            if info.file_size > 4 * MAX_JSON_BYTES:
                raise GalleryError(f"{p}: metadata too large")
            with zf.open(info) as f:
                arr = np.lib.format.read_array(f, allow_pickle=False)  # type: ignore[arg-type]
        meta = json.loads(str(arr))
    except GalleryError:
        raise
    except (KeyError, zipfile.BadZipFile, OSError, ValueError, EOFError, RecursionError) as exc:
        raise GalleryError(f"{p} is not a readable facesdk gallery: {exc}") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise GalleryError(f"{p} is not a facesdk gallery")
    return meta
