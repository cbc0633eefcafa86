"""The streaming, batched pipeline: many images (paths, arrays, a folder, a video) → results in input order.

::

    inputs ──► decode + detect + align (thread pool, a few inputs per task so that a batching
    detector such as MTCNN runs each engine once for them and the batched aligner sees all their
    faces, bounded window) ──► embed (full batches across images, flip TTA
    folded into the same batch) ──► match (one gallery search per batch) ──► results, one per
    input, in input order

Design:

* **Bounded memory.** At most ``window`` inputs are pulled from the input iterable ahead of
  what has been yielded (decoded images are dropped right after alignment unless
  ``keep_images``), so a generator of millions of paths is never materialised.
* **Order.** Results come out in input order; an input whose faces wait for a full embedder
  batch holds back only the inputs behind it, and a partial batch is flushed when the window
  is full or the input ends.
* **Per-item errors.** A failure while decoding, detecting or aligning one input (any
  :class:`~facesdk.errors.FaceSDKError`) becomes that input's :class:`ImageResult` with
  ``error`` set; the stream goes on. Errors of the embedder itself (a broken session) are not
  per-item and end the stream.
* **Threads.** Workers share the recogniser's sessions; every CPU backend's sessions are
  thread-safe (see ``facesdk.backend.Session``). ``workers=0`` runs everything in the calling
  thread (what :meth:`FaceRecognizer.faces` does for a single image).

Timing: :class:`StreamStats` sums the seconds each stage spent (across threads) and the wall
time, so ``pipeline / sum(engine-only)`` ratios can be formed by the benchmark.
"""

from __future__ import annotations

import collections
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .detect import Detection
from .errors import ConfigError, FaceSDKError, ImageError
from .image import load_image

if TYPE_CHECKING:  # pragma: no cover
    from .gallery import Gallery
    from .pipeline import Face, FaceRecognizer

__all__ = [
    "IMAGE_SUFFIXES",
    "VIDEO_SUFFIXES",
    "ImageResult",
    "StreamItem",
    "StreamStats",
    "first_result",
    "iter_inputs",
    "stream_faces",
]

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}
VIDEO_SUFFIXES = {".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv"}


@dataclass
class StreamItem:
    """One input of the stream: a label, something to decode (or a loader), and metadata.

    ``image`` is anything :func:`facesdk.image.load_image` takes, or a zero-argument callable
    returning one (called in a worker thread: lazy decoding, degradations …). ``frame`` and
    ``timestamp`` are set for video frames.
    """

    source: str
    image: Any
    frame: int | None = None
    timestamp: float | None = None


@dataclass
class ImageResult:
    """What the pipeline found in one input (in input order)."""

    index: int
    source: str
    faces: list[Face] = field(default_factory=list)
    error: FaceSDKError | None = None
    frame: int | None = None
    timestamp: float | None = None
    shape: tuple[int, ...] | None = None
    #: The decoded RGB image, only when the stream was asked to keep it (annotation).
    image: np.ndarray | None = None
    #: True when no face was detected and ``fallback`` supplied the face.
    fallback: bool = False
    #: Number of detections before ``select`` picked one.
    detections: int = 0

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_dict(self, with_embedding: bool = False) -> dict[str, Any]:
        d: dict[str, Any] = {"index": self.index, "source": self.source}
        if self.frame is not None:
            d["frame"] = self.frame
        if self.timestamp is not None:
            d["timestamp"] = round(float(self.timestamp), 3)
        if self.error is not None:
            d["error"] = {"type": type(self.error).__name__, "message": str(self.error)}
        else:
            d["faces"] = [f.to_dict(with_embedding=with_embedding) for f in self.faces]
        return d


@dataclass
class StreamStats:
    """Counts and summed stage seconds of a stream (stage seconds add up across threads)."""

    images: int = 0
    errors: int = 0
    faces: int = 0
    batches: int = 0
    seconds: dict[str, float] = field(
        default_factory=lambda: {"decode": 0.0, "detect": 0.0, "align": 0.0, "embed": 0.0, "match": 0.0}
    )
    wall: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, stage: str, seconds: float) -> None:
        with self._lock:
            self.seconds[stage] = self.seconds.get(stage, 0.0) + seconds

    def to_dict(self) -> dict[str, Any]:
        return {
            "images": self.images,
            "errors": self.errors,
            "faces": self.faces,
            "batches": self.batches,
            "seconds": {k: round(v, 4) for k, v in self.seconds.items()},
            "wall_s": round(self.wall, 4),
            "images_per_s": round(self.images / self.wall, 3) if self.wall > 0 else None,
        }


# ---------------------------------------------------------------------- inputs


def _folder_images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def iter_inputs(inputs: Any, *, every: int = 1, max_frames: int | None = None) -> Iterator[StreamItem]:
    """Normalise what a user hands the stream into :class:`StreamItem` objects, lazily.

    Accepted: one path (an image file, a folder — every image below it, sorted — or a video
    file), one array / PIL image / bytes, a :class:`StreamItem`, or any iterable of these
    (generators included; they are consumed as the stream advances). Video files yield one
    item per ``every``-th frame (see :func:`facesdk.video.iter_frames`).
    """
    if isinstance(
        inputs, (str, os.PathLike, bytes, bytearray, memoryview, np.ndarray, StreamItem)
    ) or hasattr(inputs, "mode"):
        inputs = [inputs]
    for n, x in enumerate(inputs):
        if isinstance(x, StreamItem):
            yield x
        elif isinstance(x, (str, os.PathLike)):
            p = Path(x)
            try:
                is_dir = p.is_dir()
            except (OSError, ValueError):  # name too long, NUL: load_image reports it as an ImageError
                is_dir = False
            if is_dir:
                for f in _folder_images(p):
                    yield StreamItem(str(f), f)
            elif p.suffix.lower() in VIDEO_SUFFIXES:
                from .video import iter_frames

                for fr in iter_frames(p, every=every, max_frames=max_frames):
                    yield StreamItem(f"{p}#{fr.index}", fr.image, frame=fr.index, timestamp=fr.timestamp)
            else:
                yield StreamItem(str(p), p)
        else:
            yield StreamItem(f"<{type(x).__name__} #{n}>", x)


# ---------------------------------------------------------------------- stages

#: Inputs one worker task decodes, detects and aligns together (the default ``detect_batch``).
DEFAULT_DETECT_BATCH = 8


@dataclass
class _Prepared:
    index: int
    item: StreamItem
    faces: list[Face]
    dets: list[Detection] | None  # detections still waiting for the embedder (None: nothing to do)
    error: FaceSDKError | None = None
    shape: tuple[int, ...] | None = None
    image: np.ndarray | None = None  # kept for the caller (keep_images)
    work: np.ndarray | None = None  # the decoded image, until its faces are aligned
    crops: np.ndarray | None = None  # the aligned faces, until they are embedded
    fallback: bool = False
    detections: int = 0


def _pick(dets: list[Detection], shape: tuple[int, ...], select: Any) -> list[Detection]:
    if not dets or select is None:
        return dets
    if select == "largest":
        return [max(dets, key=lambda d: d.width * d.height)]
    if select == "center":
        cy, cx = shape[0] / 2, shape[1] / 2
        return [
            min(
                dets,
                key=lambda d: ((d.box[0] + d.box[2]) / 2 - cx) ** 2 + ((d.box[1] + d.box[3]) / 2 - cy) ** 2,
            )
        ]
    if callable(select):
        d = select(dets, shape)
        return [] if d is None else [d]
    raise ConfigError(f"select must be None, 'largest', 'center' or a callable, not {select!r}")


class _Runner:
    """Per-group work in the pool (decode → detect → select → align) and per-batch work in the
    consumer thread (embed → match).

    Alignment runs per worker group (a batched aligner, dlib's shape predictor, sees the faces of
    the group's images at once) in the worker threads, so that it overlaps the embedder.
    """

    def __init__(
        self,
        rec: FaceRecognizer,
        *,
        select: Any,
        fallback: Callable[[np.ndarray], Detection] | None,
        max_faces: int | None,
        keep_images: bool,
        stats: StreamStats,
        color: str = "RGB",
        embed: bool = True,
    ) -> None:
        self.rec = rec
        self.select = select
        self.fallback = fallback
        self.max_faces = max_faces
        self.keep_images = keep_images
        self.stats = stats
        self.color = color
        self.do_embed = embed
        self.batch_size = rec.batch_size
        if select not in (None, "largest", "center") and not callable(select):
            raise ConfigError(f"select must be None, 'largest', 'center' or a callable, not {select!r}")

    def _error(self, index: int, item: StreamItem, exc: BaseException) -> _Prepared:
        if isinstance(exc, FaceSDKError):
            return _Prepared(index, item, [], None, error=exc)
        # an unexpected failure of one item must not end the stream
        log.debug("item %s failed", item.source, exc_info=exc)
        err = ImageError(f"{item.source}: {type(exc).__name__}: {exc}")
        return _Prepared(index, item, [], None, error=err)

    def _decode(self, item: StreamItem) -> np.ndarray:
        t0 = time.perf_counter()
        try:
            src = item.image() if callable(item.image) else item.image
            return load_image(src, color=self.color, max_pixels=self.rec.max_pixels)
        finally:
            self.stats.add("decode", time.perf_counter() - t0)

    def _finish(self, index: int, item: StreamItem, img: np.ndarray, dets: list[Detection]) -> _Prepared:
        from .pipeline import Face

        n_det = len(dets)
        dets = _pick(dets, img.shape, self.select)[: self.max_faces or None]
        fb = False
        if not dets and self.fallback is not None:
            dets, fb = [self.fallback(img)], True
        todo = dets if dets and self.do_embed else None
        return _Prepared(
            index,
            item,
            [Face.from_detection(d) for d in dets],
            todo,
            shape=img.shape,
            image=img if self.keep_images else None,
            work=img if todo else None,
            fallback=fb,
            detections=n_det,
        )

    def prepare(self, index: int, item: StreamItem) -> _Prepared:
        """Decode → detect → select → align for one input (errors become that input's result)."""
        done, stop = self.prepare_group(index, [item])
        if stop is not None:
            raise stop
        return done[0]

    def prepare_group(
        self, start: int, items: list[StreamItem]
    ) -> tuple[list[_Prepared], BaseException | None]:
        """Decode the inputs ``start, start+1, …`` one by one, then detect all decoded images in one
        :meth:`FaceDetector.detect_many` call (a batching detector runs each engine once for the
        group); a failure of the group call is retried image by image so that it stays per item.

        Returns the prepared inputs and, when decoding input ``k`` raised something that must end
        the stream (``KeyboardInterrupt``, ``MemoryError`` …), that exception: the inputs before
        ``k`` are still finished, so the consumer hands out their results first and then raises it
        (an interrupt keeps the work done before it, as one input per task did).
        """
        out: list[_Prepared | None] = [None] * len(items)
        imgs: list[tuple[int, np.ndarray]] = []
        stop: BaseException | None = None
        for k, item in enumerate(items):
            try:
                imgs.append((k, self._decode(item)))
            except (MemoryError, RecursionError) as exc:
                stop = exc
            except Exception as exc:
                out[k] = self._error(start + k, item, exc)
            except BaseException as exc:  # KeyboardInterrupt, SystemExit, GeneratorExit
                stop = exc
            if stop is not None:
                out = out[:k]
                break
        det = self.rec.detector
        if imgs:
            t0 = time.perf_counter()
            try:
                found = det.detect_many([im for _, im in imgs]) if len(imgs) > 1 else None
            except (MemoryError, RecursionError):
                raise
            except Exception:
                log.debug("group detection failed; retrying image by image", exc_info=True)
                found = None
            for j, (k, im) in enumerate(imgs):
                try:
                    dets = found[j] if found is not None else det.detect(im)
                    out[k] = self._finish(start + k, items[k], im, dets)
                except (MemoryError, RecursionError):
                    raise
                except Exception as exc:
                    out[k] = self._error(start + k, items[k], exc)
            self.stats.add("detect", time.perf_counter() - t0)
        done = [p for p in out if p is not None]
        waiting = [p for p in done if p.dets and p.error is None]
        if waiting:  # align here, in the worker, while the consumer thread runs the embedder
            for p, c in zip(waiting, self.align(waiting)):
                p.crops = c if p.error is None else None
                p.work = None
        return done, stop

    def align(self, items: list[_Prepared]) -> list[np.ndarray]:
        """Crops of every waiting face (one batched call; per-item retry so one bad face fails one item)."""
        rec = self.rec
        t0 = time.perf_counter()
        try:
            flat = rec.align_many([p.work for p in items for _ in p.dets], [d for p in items for d in p.dets])
            out, k = [], 0
            for p in items:
                out.append(flat[k : k + len(p.dets)])
                k += len(p.dets)
        except (MemoryError, RecursionError):
            raise
        except Exception:
            out = []
            for p in items:
                try:
                    out.append(rec.align(p.work, p.dets))
                except (MemoryError, RecursionError):
                    raise
                except Exception as exc:
                    bad = self._error(p.index, p.item, exc)
                    p.error, p.faces = bad.error, []
                    out.append(np.zeros((0,), np.uint8))
        self.stats.add("align", time.perf_counter() - t0)
        return out

    def embed(
        self, batch: list[_Prepared], gallery: Gallery | None, top_k: int, threshold: float | None
    ) -> None:
        """Embed (and match) the aligned faces of every waiting item of ``batch`` in one go."""
        items = [p for p in batch if p.dets]
        if not items:
            return
        ok = [(p, p.crops) for p in items if p.error is None and p.crops is not None and len(p.crops)]
        for p in items:
            p.dets, p.work, p.crops = None, None, None
        if not ok:
            return
        t0 = time.perf_counter()
        emb = self.rec.embed_crops(np.concatenate([c for _, c in ok]), batch_size=self.batch_size)
        t1 = time.perf_counter()
        self.stats.add("embed", t1 - t0)
        self.stats.batches += 1
        faces = [f for p, _ in ok for f in p.faces]
        for f, e in zip(faces, emb):
            f.embedding = e
        if gallery is not None and len(faces):
            matches = self.rec.match_batch(emb, gallery, threshold=threshold, top_k=top_k, unit=True)
            for f, m in zip(faces, matches):
                f.match = m
            self.stats.add("match", time.perf_counter() - t1)


def _result(p: _Prepared) -> ImageResult:
    return ImageResult(
        index=p.index,
        source=p.item.source,
        faces=p.faces,
        error=p.error,
        frame=p.item.frame,
        timestamp=p.item.timestamp,
        shape=p.shape,
        image=p.image,
        fallback=p.fallback,
        detections=p.detections,
    )


def stream_faces(
    rec: FaceRecognizer,
    inputs: Any,
    *,
    gallery: Gallery | None = None,
    top_k: int = 5,
    threshold: float | None = None,
    select: Any = None,
    max_faces: int | None = None,
    fallback: Callable[[np.ndarray], Detection] | None = None,
    workers: int | None = None,
    window: int | None = None,
    batch_size: int | None = None,
    keep_images: bool = False,
    every: int = 1,
    max_frames: int | None = None,
    color: str = "RGB",
    embed: bool = True,
    stats: StreamStats | None = None,
    detect_batch: int | None = None,
) -> Iterator[ImageResult]:
    """The streaming pipeline behind :meth:`FaceRecognizer.faces_many` (see the module docstring).

    Args:
        rec: the recogniser whose detector, aligner and embedder run.
        inputs: see :func:`iter_inputs`.
        gallery: when given, every face is matched (one search per embedder batch).
        select: ``None`` (all faces), ``"largest"``, ``"center"`` or a callable picking one detection.
        max_faces: keep at most this many faces per image (highest score first).
        fallback: ``image -> Detection`` used when nothing is detected (benchmarks' fixed box).
        workers: threads for decode/detect/align (default ``min(4, cpu_count)``; 0 = the calling thread).
        window: most inputs in flight ahead of the consumer (default: the larger of
            ``4 × max(workers, 1) + 4`` and ``batch_size + detect_batch × max(workers, 1)``).
        batch_size: faces per embedder batch (default ``rec.batch_size``; flip TTA doubles the tensor).
        keep_images: attach the decoded image to each result (for drawing).
        every, max_frames: frame sampling for video inputs.
        color: channel order of array inputs ("RGB" or "BGR").
        embed: ``False`` stops after detection (no alignment, embedding or matching).
        stats: a :class:`StreamStats` to fill.
        detect_batch: inputs one worker task decodes, detects (one
            :meth:`~facesdk.detect.FaceDetector.detect_many` call: MTCNN runs each network once
            for all of them) and aligns (one batched aligner call) together (default 8).
    """
    if workers is None:
        workers = min(4, os.cpu_count() or 1)
    if workers < 0:
        raise ConfigError("workers must be >= 0")
    bs = int(batch_size or rec.batch_size)
    if bs < 1:
        raise ConfigError("batch_size must be >= 1")
    if detect_batch is None:
        detect_batch = DEFAULT_DETECT_BATCH
    if detect_batch < 1:
        raise ConfigError("detect_batch must be >= 1")
    if window is None:  # room for a full embedder batch of one-face images plus every worker's group
        window = max(4 * max(workers, 1) + 4, bs + detect_batch * max(workers, 1))
    if window < 1:
        raise ConfigError("window must be >= 1")
    if every < 1:
        raise ConfigError("every must be >= 1")
    st = stats if stats is not None else StreamStats()
    runner = _Runner(
        rec,
        select=select,
        fallback=fallback,
        max_faces=max_faces,
        keep_images=keep_images,
        stats=st,
        color=color,
        embed=embed,
    )
    runner.batch_size = bs
    items = iter_inputs(inputs, every=every, max_frames=max_frames)
    return _generate(runner, items, workers, window, bs, gallery, top_k, threshold, st, detect_batch)


def _generate(
    runner: _Runner,
    items: Iterator[StreamItem],
    workers: int,
    window: int,
    bs: int,
    gallery: Gallery | None,
    top_k: int,
    threshold: float | None,
    st: StreamStats,
    detect_batch: int = 1,
) -> Iterator[ImageResult]:
    t_start = time.perf_counter()
    pending: collections.deque[_Prepared] = collections.deque()  # prepared, waiting for the embedder
    pending_faces = 0
    pool = ThreadPoolExecutor(workers, thread_name_prefix="facesdk-stream") if workers > 0 else None
    # groups of inputs being decoded + detected (one pool task per group), oldest first
    Group = tuple[list[_Prepared], BaseException | None]
    inflight: collections.deque[tuple[int, Future[Group] | Group]] = collections.deque()
    inflight_items = 0
    next_index = 0
    exhausted = False

    def fill() -> None:
        nonlocal exhausted, inflight_items, next_index
        while not exhausted and inflight_items + len(pending) < window:
            group: list[StreamItem] = []
            room = min(detect_batch, window - inflight_items - len(pending))
            while len(group) < room:
                try:
                    group.append(next(items))
                except StopIteration:
                    exhausted = True
                    break
            if not group:
                return
            start, next_index = next_index, next_index + len(group)
            inflight_items += len(group)
            task = (
                pool.submit(runner.prepare_group, start, group)
                if pool
                else runner.prepare_group(start, group)
            )
            inflight.append((len(group), task))

    def emit(flush: bool) -> Iterator[ImageResult]:
        nonlocal pending_faces
        if flush and pending_faces:
            runner.embed(list(pending), gallery, top_k, threshold)
            pending_faces = 0
        while pending and not pending[0].dets:
            p = pending.popleft()
            st.images += 1
            st.errors += p.error is not None
            st.faces += len(p.faces)
            yield _result(p)

    try:
        while True:
            fill()
            if not inflight:
                break
            n_group, head = inflight.popleft()
            inflight_items -= n_group
            done, stop = head.result() if isinstance(head, Future) else head
            for p in done:
                pending.append(p)
                if p.dets:
                    pending_faces += len(p.dets)
                yield from emit(flush=pending_faces >= bs or len(pending) >= window)
            if stop is not None:  # e.g. an interrupt while decoding: the inputs before it are out
                raise stop
            st.wall = time.perf_counter() - t_start
        yield from emit(flush=True)
    finally:
        st.wall = time.perf_counter() - t_start
        if pool is not None:
            for _, f in inflight:
                if isinstance(f, Future):
                    f.cancel()
            pool.shutdown(wait=True, cancel_futures=True)


def first_result(results: Iterable[ImageResult]) -> ImageResult:
    """The single result of a one-item stream (raises its error)."""
    for r in results:
        if r.error is not None:
            raise r.error
        return r
    raise ConfigError("the stream produced no result")
