"""Bulk jobs: embed or enrol very many images on a local process pool or on a Ray cluster.

The same per-batch function runs everywhere (see ``ARCHITECTURE.md``, "The streaming
pipeline"): a worker builds **one** :class:`~facesdk.pipeline.FaceRecognizer` when it starts
and then turns chunks of image paths into arrays (boxes, landmarks, embeddings, per-image
errors) with :meth:`FaceRecognizer.faces_many`. The driver

* reads the input lazily and keeps at most ``2 × workers`` chunks in flight (bounded memory
  on the driver for any number of images),
* collects chunks **in input order**,
* writes a ``.npz`` file (atomically, with provenance: model, sha256, backend, precision, tta)
  or a Parquet file (``pyarrow`` needed, written row group by row group), or enrols the
  faces into a gallery (:func:`enroll_folders`).

Executors: ``"process"`` (default; a ``spawn`` process pool on this machine), ``"ray"``
(``pip install 'facesdk[ray]'``; connects to ``address`` — ``"auto"``, ``"ray://host:10001"``
— or uses the Ray instance already initialised in this process, else starts a local one),
``"inline"`` (the calling process; for debugging and tiny jobs).
"""

from __future__ import annotations

import collections
import io
import json
import logging
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from .errors import BackendUnavailableError, ConfigError
from .fileio import atomic_writer

__all__ = ["BulkResult", "ChunkResult", "embed_bulk", "enroll_folders", "process_chunk"]

log = logging.getLogger(__name__)

EXECUTORS = ("process", "ray", "inline")


@dataclass
class ChunkResult:
    """What a worker returns for one chunk of images (plain arrays: cheap to pickle)."""

    index: np.ndarray  # int64 [n_images]: global input index
    source: list[str]
    error: list[str]  # "" when the image was processed, else "ErrorType: message"
    face_image: np.ndarray  # int64 [n_faces]: global index of each face's image
    box: np.ndarray  # float32 [n_faces, 4]
    score: np.ndarray  # float32 [n_faces]
    landmarks: np.ndarray  # float32 [n_faces, 5, 2] (NaN without landmarks)
    embedding: np.ndarray  # float32 [n_faces, D]
    provenance: dict[str, Any] = field(default_factory=dict)


@dataclass
class BulkResult:
    """Summary of a bulk job."""

    images: int = 0
    errors: int = 0
    faces: int = 0
    no_face: int = 0
    output: str | None = None
    provenance: dict[str, Any] = field(default_factory=dict)
    executor: str = ""
    workers: int = 0

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


# ---------------------------------------------------------------------- worker side

_WORKER: dict[str, Any] = {}


def _init_worker(rec_kwargs: dict[str, Any]) -> None:
    from .pipeline import FaceRecognizer

    _WORKER["rec"] = FaceRecognizer(**rec_kwargs)


def _provenance(rec: Any) -> dict[str, Any]:
    s = rec.embedder_session
    return {
        "model_id": rec.model_id,
        "model_sha256": rec.model_sha256,
        "detector": rec.detector_card.id,
        "backend": s.backend,
        "device": s.device,
        "precision": s.precision,
        "tta": rec.tta,
        "embedding_size": rec.embedding_size,
        "threshold": rec.threshold,
    }


def process_chunk(
    rec: Any, chunk: list[tuple[int, str]], select: str | None = "largest", threads: int = 1
) -> ChunkResult:
    """Run one chunk of ``(global index, path)`` through ``rec`` (the function every worker runs)."""
    from .stream import StreamItem

    items = [StreamItem(str(p), str(p)) for _, p in chunk]
    faces_img, boxes, scores, lms, embs, errors = [], [], [], [], [], []
    for (gi, _), r in zip(chunk, rec.faces_many(items, select=select, workers=threads)):
        errors.append("" if r.error is None else f"{type(r.error).__name__}: {r.error}")
        for f in r.faces:
            faces_img.append(gi)
            boxes.append(np.asarray(f.box, np.float32))
            scores.append(float(f.score))
            lms.append(
                np.full((5, 2), np.nan, np.float32)
                if f.landmarks is None
                else np.asarray(f.landmarks, np.float32).reshape(5, 2)
            )
            embs.append(np.asarray(f.embedding, np.float32))
    d = rec.embedding_size
    return ChunkResult(
        index=np.array([gi for gi, _ in chunk], np.int64),
        source=[str(p) for _, p in chunk],
        error=errors,
        face_image=np.array(faces_img, np.int64),
        box=np.stack(boxes) if boxes else np.zeros((0, 4), np.float32),
        score=np.array(scores, np.float32),
        landmarks=np.stack(lms) if lms else np.zeros((0, 5, 2), np.float32),
        embedding=np.stack(embs) if embs else np.zeros((0, d), np.float32),
        provenance=_provenance(rec),
    )


def _run_in_worker(chunk: list[tuple[int, str]], select: str | None) -> ChunkResult:
    return process_chunk(_WORKER["rec"], chunk, select)


class _RayWorker:
    """Ray actor: one recogniser per worker process."""

    def __init__(self, rec_kwargs: dict[str, Any]) -> None:
        from .pipeline import FaceRecognizer

        self.rec = FaceRecognizer(**rec_kwargs)

    def run(self, chunk: list[tuple[int, str]], select: str | None) -> ChunkResult:
        return process_chunk(self.rec, chunk, select)


# ---------------------------------------------------------------------- driver side


def _chunks(paths: Iterable[Any], size: int) -> Iterator[list[tuple[int, str]]]:
    buf: list[tuple[int, str]] = []
    for i, p in enumerate(paths):
        buf.append((i, os.fspath(p)))
        if len(buf) >= size:
            yield buf
            buf = []
    if buf:
        yield buf


def _expand(inputs: Any) -> Iterator[str]:
    """Paths from a folder (every image below it, sorted), a text file list (``.txt``), or an iterable."""
    from .stream import IMAGE_SUFFIXES

    if isinstance(inputs, (str, os.PathLike)):
        p = Path(inputs)
        if p.is_dir():
            yield from (
                str(f) for f in sorted(p.rglob("*")) if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES
            )
            return
        if p.suffix.lower() == ".txt" and p.is_file():
            with open(p, encoding="utf-8") as f:
                yield from (ln.strip() for ln in f if ln.strip())
            return
        yield str(p)
        return
    for x in inputs:
        yield os.fspath(x)


def _ordered(
    submit: Callable[[list[tuple[int, str]]], Any],
    get: Callable[[Any], ChunkResult],
    chunks: Iterator[list[tuple[int, str]]],
    inflight: int,
) -> Iterator[ChunkResult]:
    q: collections.deque[Any] = collections.deque()
    for c in chunks:
        q.append(submit(c))
        if len(q) >= inflight:
            yield get(q.popleft())
    while q:
        yield get(q.popleft())


def _run_chunks(
    paths: Iterable[str],
    rec_kwargs: dict[str, Any],
    *,
    executor: str,
    address: str | None,
    workers: int,
    chunk_size: int,
    select: str | None,
) -> Iterator[ChunkResult]:
    chunks = _chunks(paths, chunk_size)
    inflight = 2 * max(workers, 1)
    if executor == "inline":
        _init_worker(rec_kwargs)
        try:
            for c in chunks:
                yield _run_in_worker(c, select)
        finally:
            _WORKER.pop("rec").close()
        return
    if executor == "process":
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(
            workers, mp_context=ctx, initializer=_init_worker, initargs=(rec_kwargs,)
        ) as ex:
            yield from _ordered(
                lambda c: ex.submit(_run_in_worker, c, select), lambda f: f.result(), chunks, inflight
            )
        return
    try:
        import ray
    except ImportError as exc:
        raise BackendUnavailableError("the Ray executor needs ray: pip install 'facesdk[ray]'") from exc
    started = False
    if not ray.is_initialized():
        ray.init(address=address, ignore_reinit_error=True, log_to_driver=False)
        started = address is None
    actor_cls = ray.remote(num_cpus=1)(_RayWorker)
    actors = [actor_cls.remote(rec_kwargs) for _ in range(workers)]
    turn = iter(range(1 << 62))
    try:
        yield from _ordered(
            lambda c: actors[next(turn) % len(actors)].run.remote(c, select), ray.get, chunks, inflight
        )
    finally:
        for a in actors:
            ray.kill(a)
        if started:
            ray.shutdown()


def _check(executor: str, workers: int, chunk_size: int) -> None:
    if executor not in EXECUTORS:
        raise ConfigError(f"executor must be one of {EXECUTORS}, not {executor!r}")
    if workers < 1 or chunk_size < 1:
        raise ConfigError("workers and chunk_size must be >= 1")


def _rec_kwargs(recognizer: dict[str, Any] | None, threads: int) -> dict[str, Any]:
    kw = dict(recognizer or {})
    opts = dict(kw.get("backend_options") or {})
    opts.setdefault("threads", threads)
    kw["backend_options"] = opts
    return kw


def embed_bulk(
    inputs: Any,
    out: str | os.PathLike,
    *,
    recognizer: dict[str, Any] | None = None,
    executor: str = "process",
    address: str | None = None,
    workers: int = 2,
    chunk_size: int = 64,
    threads_per_worker: int = 1,
    select: str | None = "largest",
    progress: bool = False,
) -> BulkResult:
    """Embed every image of ``inputs`` and write the faces to ``out`` (``.npz`` or ``.parquet``).

    Args:
        inputs: a folder (all images below it), a ``.txt`` list of paths, or an iterable of paths.
        out: result file. ``.npz`` arrays: ``source``/``error`` per image, ``face_image``, ``box``,
            ``score``, ``landmarks``, ``embedding`` per face, ``provenance`` (JSON). ``.parquet``:
            one row per image (faces as lists), written in row groups.
        recognizer: keyword arguments of :class:`FaceRecognizer` (built once per worker).
        executor: ``"process"``, ``"ray"`` or ``"inline"``; address: Ray cluster address.
        workers: worker processes / Ray actors; chunk_size: images per task.
        threads_per_worker: engine threads per worker (``backend_options["threads"]`` default).
        select: ``"largest"`` (one face per image, default), ``"center"`` or ``None`` (all faces).
    """
    _check(executor, workers, chunk_size)
    outp = Path(out)
    suffix = outp.suffix.lower()
    if suffix not in (".npz", ".parquet"):
        raise ConfigError(f"bulk output must be .npz or .parquet, not {outp.name!r}")
    kw = _rec_kwargs(recognizer, threads_per_worker)
    res = BulkResult(output=str(outp), executor=executor, workers=workers)
    chunks = _run_chunks(
        _expand(inputs),
        kw,
        executor=executor,
        address=address,
        workers=workers,
        chunk_size=chunk_size,
        select=select,
    )
    bar = tqdm(desc=f"embed ({executor})", unit="img", disable=not progress)
    if suffix == ".parquet":
        _write_parquet(outp, chunks, res, bar)
    else:
        _write_npz(outp, chunks, res, bar)
    bar.close()
    return res


def _count(res: BulkResult, c: ChunkResult, bar: Any) -> None:
    res.images += len(c.index)
    res.errors += sum(1 for e in c.error if e)
    res.faces += len(c.face_image)
    res.provenance = res.provenance or c.provenance
    bar.update(len(c.index))


def _write_npz(path: Path, chunks: Iterator[ChunkResult], res: BulkResult, bar: Any) -> None:
    parts: list[ChunkResult] = []
    for c in chunks:
        _count(res, c, bar)
        parts.append(c)
    d = int(res.provenance.get("embedding_size", 0)) if res.provenance else 0

    def cat(name: str, empty: np.ndarray) -> np.ndarray:
        arrs = [getattr(c, name) for c in parts]
        return np.concatenate(arrs) if arrs else empty

    arrays = {
        "index": cat("index", np.zeros(0, np.int64)),
        "source": np.array([s for c in parts for s in c.source], dtype=str),
        "error": np.array([e for c in parts for e in c.error], dtype=str),
        "face_image": cat("face_image", np.zeros(0, np.int64)),
        "box": cat("box", np.zeros((0, 4), np.float32)),
        "score": cat("score", np.zeros(0, np.float32)),
        "landmarks": cat("landmarks", np.zeros((0, 5, 2), np.float32)),
        "embedding": cat("embedding", np.zeros((0, d), np.float32)),
        "provenance": np.array(json.dumps(res.provenance, sort_keys=True)),
    }
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    with atomic_writer(path) as f:
        f.write(buf.getvalue())


def _write_parquet(path: Path, chunks: Iterator[ChunkResult], res: BulkResult, bar: Any) -> None:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError as exc:
        raise BackendUnavailableError("Parquet output needs pyarrow (pip install pyarrow); use .npz") from exc
    writer = None
    with atomic_writer(path) as f:
        for c in chunks:
            _count(res, c, bar)
            per: dict[int, list[int]] = collections.defaultdict(list)
            for k, gi in enumerate(c.face_image.tolist()):
                per[gi].append(k)
            table = pa.table(
                {
                    "index": c.index,
                    "source": c.source,
                    "error": c.error,
                    "box": [[c.box[k].tolist() for k in per[gi]] for gi in c.index.tolist()],
                    "score": [[float(c.score[k]) for k in per[gi]] for gi in c.index.tolist()],
                    "embedding": [[c.embedding[k].tolist() for k in per[gi]] for gi in c.index.tolist()],
                }
            )
            if writer is None:
                meta = {b"facesdk": json.dumps(res.provenance, sort_keys=True).encode()}
                writer = pq.ParquetWriter(f, table.schema.with_metadata(meta))
            writer.write_table(table)
        if writer is not None:
            writer.close()


def enroll_folders(
    root: str | os.PathLike,
    gallery: Any,
    *,
    recognizer: dict[str, Any] | None = None,
    executor: str = "process",
    address: str | None = None,
    workers: int = 2,
    chunk_size: int = 64,
    threads_per_worker: int = 1,
    progress: bool = False,
) -> BulkResult:
    """Enrol ``root/<person>/<images>`` into ``gallery`` (a Gallery, or a path saved atomically at the end).

    One face per image (the largest); images that fail (``errors``) or show no face (``no_face``)
    are skipped. Every worker's embedder must be the gallery's model (checked).
    """
    from .gallery import Gallery

    _check(executor, workers, chunk_size)
    rootp = Path(root)
    if not rootp.is_dir():
        raise ConfigError(f"{root} is not a folder of person/ sub-folders")
    people = sorted(d for d in rootp.iterdir() if d.is_dir())
    if not people:
        raise ConfigError(f"{root} has no person/ sub-folders")
    from .stream import IMAGE_SUFFIXES

    plan = [(p.name, f) for p in people for f in sorted(p.iterdir()) if f.suffix.lower() in IMAGE_SUFFIXES]
    kw = _rec_kwargs(recognizer, threads_per_worker)
    res = BulkResult(executor=executor, workers=workers)
    embs: dict[str, list[np.ndarray]] = collections.defaultdict(list)
    sources: dict[str, list[dict[str, str]]] = collections.defaultdict(list)
    bar = tqdm(desc=f"enrol ({executor})", unit="img", disable=not progress, total=len(plan))
    for c in _run_chunks(
        (f for _, f in plan),
        kw,
        executor=executor,
        address=address,
        workers=workers,
        chunk_size=chunk_size,
        select="largest",
    ):
        _count(res, c, bar)
        for k, gi in enumerate(c.face_image.tolist()):
            embs[plan[gi][0]].append(c.embedding[k])
            sources[plan[gi][0]].append({"source": str(plan[gi][1])})
        with_face = set(c.face_image.tolist())
        res.no_face += sum(1 for gi, e in zip(c.index.tolist(), c.error) if not e and gi not in with_face)
    bar.close()
    path = None
    if not isinstance(gallery, Gallery):
        path = Path(gallery)
        p = res.provenance
        # opened bound to the file (created if missing): the save below takes the file lock and merges
        # what other processes saved meanwhile, so concurrent bulk enrollments are never lost
        gallery = (
            Gallery.load(path)
            if path.exists()
            else Gallery.open(
                path,
                model_id=p["model_id"],
                embedding_size=p["embedding_size"],
                model_sha256=p["model_sha256"],
                backend=p["backend"],
                precision=p["precision"],
                threshold=float(p.get("threshold") or 0.5),
            )
        )
    p = res.provenance
    if p:
        gallery.check_compatible(p["model_id"], p["embedding_size"], p["model_sha256"])
    for name, e in embs.items():
        gallery.add(name, np.stack(e), meta=sources[name])
    if path is not None:
        gallery.save(path)
        res.output = str(path)
    return res
