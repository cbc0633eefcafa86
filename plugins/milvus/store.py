"""A facesdk gallery store on Milvus (pymilvus): Milvus Lite files by default, Milvus servers by URI.

URIs (after the ``milvus:`` prefix of :func:`facesdk.gallery.open_store`): a local file path
(``galleries.db``: embedded Milvus Lite, for tests and small deployments) or a server URL
(``http://host:19530``: Milvus standalone/cluster). Options: ``collection`` (default
``facesdk_gallery``), ``index`` (``FLAT`` exact — the default —, ``HNSW`` or ``IVF_FLAT``; ``HNSW``/``IVF``
trade exactness for speed), ``index_params``, ``token``, ``db_name``.

Schema (three collections per gallery, all with consistency level ``Strong``):

- ``<collection>``: one row per enrolled photo — ``image_id`` (primary key), ``identity``,
  ``embedding`` (FLOAT_VECTOR, L2-normalised, metric IP = cosine), ``weight``, ``samples``,
  ``model_id``, ``model_sha256``, ``meta`` (JSON text), ``seq`` (insertion order).
- ``<collection>_identities``: one row per identity — ``key`` (sha256 of the name; primary key),
  ``identity``, ``embedding``
  (normalised template), ``sum`` (running weighted sum, weight imprinting as in the core),
  ``samples``, ``seq``, ``meta``.
- ``<collection>_facesdk``: the gallery's provenance record (model id + sha256, size, backend,
  precision, threshold, calibration). Opening a collection made by another model is refused
  (:class:`~facesdk.errors.IncompatibleGalleryError`); a collection without this record is refused.

Reopening an existing collection calls ``load_collection()`` (needed by Milvus Lite to search after a
restart). Writes are serialised by an in-process lock; Milvus applies each insert/upsert/delete
atomically per call, but read-modify-write of an identity's running sum from two processes at once
is last-writer-wins on the template (the photos themselves are never lost: templates can be rebuilt
from them with :meth:`MilvusStore.rebuild_templates`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from facesdk.errors import ConfigError, GalleryError, IncompatibleGalleryError
from facesdk.gallery import GalleryStore, Hit, ImageRecord, Provenance, l2_normalize

__all__ = ["INDEXES", "MilvusStore"]

log = logging.getLogger(__name__)

INDEXES = {
    "FLAT": ("FLAT", {}),
    "HNSW": ("HNSW", {"M": 16, "efConstruction": 200}),
    "IVF": ("IVF_FLAT", {"nlist": 128}),
    "IVF_FLAT": ("IVF_FLAT", {"nlist": 128}),
}
_MAXLEN = {"image_id": 128, "identity": 1024, "model_id": 256, "sha": 64, "meta": 65535}
_BATCH = 2048
_QUERY_LIMIT = 16384


def _key(name: str) -> str:
    """Primary key of an identity row (pymilvus does not escape backslashes in ``get(ids=...)``)."""
    return hashlib.sha256(name.encode("utf-8")).hexdigest()


def _lit(s: str) -> str:
    """A Milvus filter string literal (JSON escaping of quotes and backslashes)."""
    return json.dumps(s, ensure_ascii=False)


class MilvusStore(GalleryStore):
    """Gallery templates in Milvus. Use :meth:`open` (or ``Gallery.open("milvus:...")``)."""

    kind = "milvus"

    def __init__(
        self,
        client: Any,
        collection: str,
        provenance: Provenance,
        *,
        uri: str,
        index: str = "FLAT",
    ) -> None:
        self.client = client
        self.collection = collection
        self.provenance = provenance
        self.uri = uri
        self.index = index
        self._lock = threading.RLock()
        self._seq = time.time_ns()

    # ------------------------------------------------------------------ opening
    @classmethod
    def open(
        cls,
        uri: str,
        *,
        provenance: Provenance | None = None,
        create: bool = True,
        collection: str = "facesdk_gallery",
        index: str = "FLAT",
        index_params: dict[str, Any] | None = None,
        token: str = "",
        db_name: str = "",
        **_: Any,
    ) -> MilvusStore:
        """Connect, then open ``collection`` (checking its model) or create it with ``provenance``."""
        try:
            from pymilvus import MilvusClient
        except ImportError:
            raise ConfigError(
                "the milvus gallery store needs pymilvus (pip install 'facesdk[milvus]')"
            ) from None
        if not collection.replace("_", "").isalnum() or not collection[:1].isalpha() or len(collection) > 200:
            raise ConfigError(f"invalid Milvus collection name {collection!r}")
        key = index.upper()
        if key not in INDEXES:
            raise ConfigError(f"index must be one of {sorted(INDEXES)}, got {index!r}")
        target = uri or "facesdk_gallery.db"
        is_server = "://" in target
        if not is_server:
            p = Path(target)
            if p.suffix != ".db":
                raise ConfigError(f"a Milvus Lite file must end in .db, got {target!r}")
            p.parent.mkdir(parents=True, exist_ok=True)
            target = str(p)
        kw: dict[str, Any] = {}
        if token:
            kw["token"] = token
        if db_name:
            kw["db_name"] = db_name
        try:
            client = MilvusClient(target, **kw)
        except Exception as exc:  # noqa: BLE001 - pymilvus raises many kinds
            raise GalleryError(f"cannot connect to Milvus at {target!r}: {exc}") from None
        meta_coll = collection + "_facesdk"
        try:
            exists = client.has_collection(collection)
            if exists:
                if not client.has_collection(meta_coll):
                    raise GalleryError(
                        f"Milvus collection {collection!r} was not made by facesdk (no provenance)"
                    )
                for c in (collection, collection + "_identities", meta_coll):
                    client.load_collection(c)  # Milvus Lite needs it after a restart
                rows = client.get(meta_coll, ids=["provenance"], output_fields=["value"])
                if not rows:
                    raise GalleryError(f"Milvus collection {collection!r} has no provenance record")
                stored = Provenance.from_dict(json.loads(rows[0]["value"]))
                if provenance is not None:
                    stored.check_compatible(
                        provenance.model_id, provenance.embedding_size, provenance.model_sha256
                    )
                st = cls(client, collection, stored, uri=target, index=key)
                st.index = st._described_index()
                return st
            if not create:
                raise GalleryError(f"no Milvus collection {collection!r} at {target!r}")
            if provenance is None:
                raise GalleryError(f"no Milvus collection {collection!r}: give the model to create one")
            st = cls(client, collection, provenance, uri=target, index=key)
            st._create(key, index_params or {})
            return st
        except (GalleryError, ConfigError, IncompatibleGalleryError):
            client.close()
            raise
        except Exception as exc:  # noqa: BLE001
            client.close()
            raise GalleryError(f"Milvus error on {collection!r}: {exc}") from None

    def _create(self, index: str, params: dict[str, Any]) -> None:
        from pymilvus import DataType, MilvusClient

        d = self.provenance.embedding_size
        c = self.client
        s = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
        s.add_field("image_id", DataType.VARCHAR, is_primary=True, max_length=_MAXLEN["image_id"])
        s.add_field("identity", DataType.VARCHAR, max_length=_MAXLEN["identity"])
        s.add_field("embedding", DataType.FLOAT_VECTOR, dim=d)
        s.add_field("weight", DataType.FLOAT)
        s.add_field("samples", DataType.INT64)
        s.add_field("model_id", DataType.VARCHAR, max_length=_MAXLEN["model_id"])
        s.add_field("model_sha256", DataType.VARCHAR, max_length=_MAXLEN["sha"])
        s.add_field("meta", DataType.VARCHAR, max_length=_MAXLEN["meta"])
        s.add_field("seq", DataType.INT64)
        itype, defaults = INDEXES[index]
        ip = c.prepare_index_params()
        ip.add_index(
            field_name="embedding", index_type=itype, metric_type="IP", params={**defaults, **params}
        )
        c.create_collection(self.collection, schema=s, index_params=ip, consistency_level="Strong")

        s2 = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
        s2.add_field("key", DataType.VARCHAR, is_primary=True, max_length=64)
        s2.add_field("identity", DataType.VARCHAR, max_length=_MAXLEN["identity"])
        s2.add_field("embedding", DataType.FLOAT_VECTOR, dim=d)
        s2.add_field("sum", DataType.FLOAT_VECTOR, dim=d)
        s2.add_field("samples", DataType.INT64)
        s2.add_field("seq", DataType.INT64)
        s2.add_field("meta", DataType.VARCHAR, max_length=_MAXLEN["meta"])
        ip2 = c.prepare_index_params()
        ip2.add_index(
            field_name="embedding", index_type=itype, metric_type="IP", params={**defaults, **params}
        )
        ip2.add_index(field_name="sum", index_type="FLAT", metric_type="IP")
        c.create_collection(
            self.collection + "_identities", schema=s2, index_params=ip2, consistency_level="Strong"
        )

        s3 = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
        s3.add_field("key", DataType.VARCHAR, is_primary=True, max_length=64)
        s3.add_field("value", DataType.VARCHAR, max_length=65535)
        s3.add_field("dummy", DataType.FLOAT_VECTOR, dim=2)  # Milvus requires a vector field
        ip3 = c.prepare_index_params()
        ip3.add_index(field_name="dummy", index_type="FLAT", metric_type="L2")
        c.create_collection(
            self.collection + "_facesdk", schema=s3, index_params=ip3, consistency_level="Strong"
        )
        self._put_provenance()
        self.index = self._described_index()

    def _described_index(self) -> str:
        try:
            return str(self.client.describe_index(self.collection, "embedding").get("index_type", self.index))
        except Exception:  # noqa: BLE001
            return self.index

    def _put_provenance(self) -> None:
        self.client.upsert(
            self.collection + "_facesdk",
            [{"key": "provenance", "value": json.dumps(self.provenance.to_dict()), "dummy": [0.0, 0.0]}],
        )

    def set_provenance(self, prov: Provenance) -> None:
        with self._lock:
            GalleryStore.set_provenance(self, prov)
            self._put_provenance()

    # ------------------------------------------------------------------ helpers
    def _next_seq(self) -> int:
        self._seq = max(self._seq + 1, time.time_ns())
        return self._seq

    def _query_all(self, coll: str, fields: list[str], flt: str = "") -> list[dict[str, Any]]:
        # both collections have ``seq``: an always-true filter (Milvus wants a filter or a limit)
        first = self.client.query(coll, filter=flt or "seq >= 0", output_fields=fields, limit=_QUERY_LIMIT)
        if len(first) < _QUERY_LIMIT:
            return [dict(r) for r in first]
        # Milvus caps offset + limit of one query: page through the rest
        it = self.client.query_iterator(coll, batch_size=_BATCH, filter=flt, output_fields=fields)
        out: list[dict[str, Any]] = []
        try:
            while True:
                batch = it.next()
                if not batch:
                    break
                out.extend(batch)
        finally:
            it.close()
        return out

    def _identity_rows(self, fields: list[str]) -> list[dict[str, Any]]:
        rows = self._query_all(self.collection + "_identities", ["identity", "seq", *fields])
        rows.sort(key=lambda r: int(r["seq"]))
        return rows

    def _images_of(self, name: str | None, fields: list[str]) -> list[dict[str, Any]]:
        flt = "" if name is None else f"identity == {_lit(name)}"
        rows = self._query_all(self.collection, ["image_id", "identity", "seq", *fields], flt)
        rows.sort(key=lambda r: int(r["seq"]))
        return rows

    def _get_identity(self, name: str) -> dict[str, Any] | None:
        rows = self.client.get(
            self.collection + "_identities",
            ids=[_key(name)],
            output_fields=["identity", "sum", "samples", "seq", "meta"],
        )
        return dict(rows[0]) if rows else None

    def _put_identity(self, name: str, s: np.ndarray, samples: int, seq: int, meta: str) -> None:
        self.client.upsert(
            self.collection + "_identities",
            [
                {
                    "key": _key(name),
                    "identity": name,
                    "embedding": l2_normalize(s).tolist(),
                    "sum": np.asarray(s, np.float32).tolist(),
                    "samples": int(samples),
                    "seq": int(seq),
                    "meta": meta,
                }
            ],
        )

    def _rebuild_identity(self, name: str, seq: int | None = None, meta: str | None = None) -> int:
        rows = self._images_of(name, ["embedding", "weight", "samples"])
        if not rows:
            self.client.delete(self.collection + "_identities", ids=[_key(name)])
            return 0
        e = np.asarray([r["embedding"] for r in rows], np.float32)
        w = np.asarray([r["weight"] for r in rows], np.float32)
        old = self._get_identity(name)
        self._put_identity(
            name,
            (e * w[:, None]).sum(0),
            sum(int(r["samples"]) for r in rows),
            seq if seq is not None else (int(old["seq"]) if old else self._next_seq()),
            meta if meta is not None else (old["meta"] if old else "{}"),
        )
        return len(rows)

    def _guard(self, what: str) -> Any:
        store = self

        class _G:
            def __enter__(self) -> None:
                store._lock.acquire()

            def __exit__(self, et: object, ev: object, tb: object) -> None:
                store._lock.release()
                if ev is not None and not isinstance(ev, (GalleryError, ConfigError)):
                    raise GalleryError(f"Milvus {what} failed: {ev}") from None

        return _G()

    # ------------------------------------------------------------------ writes
    def _photo_row(self, name: str, image_id: str, v: np.ndarray, meta: dict[str, Any]) -> dict[str, Any]:
        """One photo's row of the collection (the schema's fields; metadata size checked)."""
        mj = json.dumps(meta)
        if len(mj) > _MAXLEN["meta"]:
            raise ConfigError("photo metadata too large for the Milvus schema")
        return {
            "image_id": image_id,
            "identity": name,
            "embedding": v.tolist(),
            "weight": 1.0,
            "samples": 1,
            "model_id": self.provenance.model_id,
            "model_sha256": self.provenance.model_sha256 or "",
            "meta": mj,
            "seq": self._next_seq(),
        }

    def add(
        self,
        name: str,
        embeddings: np.ndarray,
        image_ids: Sequence[str],
        metas: Sequence[dict[str, Any]] | None = None,
        crops: np.ndarray | None = None,
    ) -> None:
        if len(name) > _MAXLEN["identity"] // 4:
            raise ConfigError("identity name too long for the Milvus schema")
        e = np.asarray(embeddings, np.float32)
        metas = list(metas) if metas is not None else [{} for _ in image_ids]
        with self._guard("insert"):
            rows = [self._photo_row(name, iid, v, m) for iid, v, m in zip(image_ids, e, metas)]
            if self.client.get(self.collection, ids=list(image_ids), output_fields=["image_id"]):
                raise GalleryError("an image id is already enrolled")
            self.client.insert(self.collection, rows)
            old = self._get_identity(name)
            if old is None:
                self._put_identity(name, e.sum(0), len(e), self._next_seq(), "{}")
            else:
                s = np.asarray(old["sum"], np.float32) + e.sum(0)
                self._put_identity(name, s, int(old["samples"]) + len(e), int(old["seq"]), old["meta"])

    def add_many(self, groups: Sequence[tuple[str, np.ndarray, Sequence[str], Any, Any]]) -> None:
        """One batched insert of all photos and one upsert of the touched identity templates."""
        with self._guard("insert"):
            rows, sums = [], {}
            for name, e, ids, metas, _crops in groups:
                if len(name) > _MAXLEN["identity"] // 4:
                    raise ConfigError("identity name too long for the Milvus schema")
                metas = list(metas) if metas is not None else [{} for _ in ids]
                vecs = np.asarray(e, np.float32)
                rows += [self._photo_row(name, iid, v, m) for iid, v, m in zip(ids, vecs, metas)]
                s, c = sums.get(name, (0.0, 0))
                sums[name] = (s + np.asarray(e, np.float32).sum(0), c + len(ids))
            if not rows:
                return
            old = {}
            names = list(sums)
            for i in range(0, len(names), _BATCH):
                keys = [_key(n) for n in names[i : i + _BATCH]]
                for r in self.client.get(
                    self.collection + "_identities",
                    ids=keys,
                    output_fields=["identity", "sum", "samples", "seq", "meta"],
                ):
                    old[r["identity"]] = r
            for i in range(0, len(rows), _BATCH):
                self.client.insert(self.collection, rows[i : i + _BATCH])
            ident_rows = []
            for name, (s, c) in sums.items():
                o = old.get(name)
                if o is not None:
                    s = np.asarray(o["sum"], np.float32) + s
                    c += int(o["samples"])
                ident_rows.append(
                    {
                        "key": _key(name),
                        "identity": name,
                        "embedding": l2_normalize(s).tolist(),
                        "sum": np.asarray(s, np.float32).tolist(),
                        "samples": int(c),
                        "seq": int(o["seq"]) if o else self._next_seq(),
                        "meta": o["meta"] if o else "{}",
                    }
                )
            for i in range(0, len(ident_rows), _BATCH):
                self.client.upsert(self.collection + "_identities", ident_rows[i : i + _BATCH])

    def remove(self, name: str) -> int:
        with self._guard("delete"):
            if self._get_identity(name) is None:
                raise GalleryError(f"{name!r} is not enrolled")
            ids = [r["image_id"] for r in self._images_of(name, [])]
            if ids:
                self.client.delete(self.collection, ids=ids)
            self.client.delete(self.collection + "_identities", ids=[_key(name)])
            return len(ids)

    def remove_images(self, image_ids: Sequence[str]) -> int:
        with self._guard("delete"):
            rows = self.client.get(
                self.collection, ids=list(image_ids), output_fields=["image_id", "identity"]
            )
            found = {r["image_id"]: r["identity"] for r in rows}
            missing = [i for i in image_ids if i not in found]
            if missing:
                raise GalleryError(f"no enrolled image with id {missing[0]!r}")
            self.client.delete(self.collection, ids=list(image_ids))
            for name in set(found.values()):
                self._rebuild_identity(name)
            return len(found)

    def rename(self, old: str, new: str) -> None:
        with self._guard("rename"):
            o = self._get_identity(old)
            if o is None:
                raise GalleryError(f"{old!r} is not enrolled")
            if old == new:
                return
            if self._get_identity(new) is not None:
                raise GalleryError(f"{new!r} is already enrolled")
            rows = self._images_of(
                old, ["embedding", "weight", "samples", "model_id", "model_sha256", "meta"]
            )
            for r in rows:
                r["identity"] = new
            if rows:
                self.client.upsert(self.collection, rows)
            self._put_identity(
                new, np.asarray(o["sum"], np.float32), int(o["samples"]), int(o["seq"]), o["meta"]
            )
            self.client.delete(self.collection + "_identities", ids=[_key(old)])

    def set_identity_meta(self, name: str, meta: dict[str, Any]) -> None:
        with self._guard("update"):
            o = self._get_identity(name)
            if o is None:
                raise GalleryError(f"{name!r} is not enrolled")
            self._put_identity(
                name, np.asarray(o["sum"], np.float32), int(o["samples"]), int(o["seq"]), json.dumps(meta)
            )

    def rebuild_templates(self) -> int:
        """Recompute every identity template from its photos (after concurrent writers)."""
        with self._guard("rebuild"):
            names = {r["identity"] for r in self._images_of(None, [])}
            for n in names:
                self._rebuild_identity(n)
            return len(names)

    # ------------------------------------------------------------------ reads
    def names(self) -> list[str]:
        with self._guard("query"):
            return [r["identity"] for r in self._identity_rows([])]

    def __len__(self) -> int:
        return len(self.names())

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        with self._guard("query"):
            return self._get_identity(name) is not None

    def counts(self) -> dict[str, int]:
        with self._guard("query"):
            return {r["identity"]: int(r["samples"]) for r in self._identity_rows(["samples"])}

    def identity_meta(self, name: str) -> dict[str, Any]:
        with self._guard("query"):
            o = self._get_identity(name)
            if o is None:
                raise GalleryError(f"{name!r} is not enrolled")
            return dict(json.loads(o["meta"]))

    def identity_templates(self) -> tuple[list[str], np.ndarray]:
        with self._guard("query"):
            rows = self._identity_rows(["embedding"])
            d = self.provenance.embedding_size
            mat = np.asarray([r["embedding"] for r in rows], np.float32).reshape(-1, d)
            return [r["identity"] for r in rows], mat

    def image_templates(self, name: str | None = None) -> tuple[list[str], list[str], np.ndarray]:
        with self._guard("query"):
            rows = self._images_of(name, ["embedding"])
            d = self.provenance.embedding_size
            mat = np.asarray([r["embedding"] for r in rows], np.float32).reshape(-1, d)
            return [r["image_id"] for r in rows], [r["identity"] for r in rows], mat

    def images(self, name: str | None = None) -> list[ImageRecord]:
        with self._guard("query"):
            if name is not None and self._get_identity(name) is None:
                raise GalleryError(f"{name!r} is not enrolled")
            return [
                ImageRecord(r["image_id"], r["identity"], json.loads(r["meta"]), False)
                for r in self._images_of(name, ["meta"])
            ]

    def n_images(self) -> int:
        with self._guard("query"):
            return len(self._query_all(self.collection, ["image_id"]))

    def search(self, queries: np.ndarray, top_k: int, templates: str = "identity") -> list[list[Hit]]:
        q = np.asarray(queries, np.float32)
        with self._guard("search"):
            if templates == "identity":
                res = self.client.search(
                    self.collection + "_identities",
                    data=q.tolist(),
                    limit=int(top_k),
                    anns_field="embedding",
                    output_fields=["identity"],
                    search_params={"metric_type": "IP"},
                )
                return [[Hit(h["entity"]["identity"], float(h["distance"]), None) for h in hs] for hs in res]
            limit = min(16384, max(int(top_k) * 8, 64))
            res = self.client.search(
                self.collection,
                data=q.tolist(),
                limit=limit,
                anns_field="embedding",
                output_fields=["identity"],
                search_params={"metric_type": "IP"},
            )
            out = []
            for hs in res:
                seen: dict[str, Hit] = {}
                for h in hs:
                    n = h["entity"]["identity"]
                    if n not in seen:
                        seen[n] = Hit(n, float(h["distance"]), str(h.get("image_id") or h.get("id")))
                    if len(seen) == top_k:
                        break
                out.append(list(seen.values()))
            return out

    # ------------------------------------------------------------------ persistence
    def save(self, path: Any = None) -> None:
        if path is not None:
            raise ConfigError("a Milvus gallery is saved in Milvus; export it with `facesdk gallery export`")
        with self._guard("flush"):
            for c in (self.collection, self.collection + "_identities", self.collection + "_facesdk"):
                self.client.flush(c)

    def close(self) -> None:
        with self._lock:
            try:
                self.client.close()
            except Exception as exc:  # noqa: BLE001
                log.debug("closing the Milvus client: %s", exc)

    def describe(self) -> dict[str, Any]:
        return {"store": self.kind, "uri": self.uri, "collection": self.collection, "index": self.index}
