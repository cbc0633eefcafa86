"""Throughput protocol: the whole of LFW through the streaming pipeline, beside engine-only peers.

``facesdk bench --protocol throughput`` (or ``--config benchmarks/configs/throughput.yaml``) runs, in
one process and one sitting:

1. **Pipelines.** For every detector asked for (default: the default pipeline's MTCNN and the
   native-size YuNet card), every LFW image goes decode → detect → align → embed through
   :meth:`FaceRecognizer.faces_many` (thread pool, full embedder batches, flip TTA folded in),
   one face per image (the detection nearest the image centre; the fixed central box when
   nothing is detected, as the accuracy protocol does). Reported: wall time, images/s,
   process CPU time, per-stage seconds (summed over worker threads), seconds spent inside engine
   calls (``Session.run`` of the detector's and the embedder's sessions, summed over threads),
   and LFW ``pairs.txt`` 10-fold accuracy **from these very embeddings** (no cache).
2. **Peers, same run, same chunks.** Detection: OpenCV ``cv2.FaceDetectorYN`` on the same YuNet
   network at each image's own size (``yunet_s_dynamic.onnx``), interleaved image by image with
   facesdk's native-size YuNet so that machine load hits both alike: the ratio
   facesdk-YuNet / OpenCV. Embedding: the raw embedder session at batch 32 on the crops the
   pipeline itself handed its embedder (flipped as its TTA does), as many tensors as it embedded.
3. **Chunks, so that load drift cancels.** The images are processed in chunks (default 500). In
   each chunk every pipeline and every peer runs on the chunk's images, one after the other: the
   pipelines first on even chunks, the peers first (and the pipelines in reverse order) on odd
   chunks; on a peers-first chunk the embedder peer runs the previous chunk's crops (the engine's
   time does not depend on the pixels) for the tensor count one face per image gives, scaled to
   the count the pipeline then embedded. Every chunk gives a ratio; the report has the total
   (sum of pipeline walls / sum of engine-only times), the median and the range over the chunks.
4. **A/B of this work's fast paths, same process, interleaved.** In the detection peer's loop a third
   contender runs facesdk's YuNet with every input on the multi-threaded session (what it did before
   small inputs got a single-threaded session); after the chunks, dlib's chip on the first
   ``chip_ab`` images' faces: the exact numpy sampling vs one ``cv2.warpAffine`` per face, with the
   pixel differences and the cosine between the two chips' embeddings.
5. **Overhead.** ``pipeline wall / (detector engine-only + embedder engine-only)`` where the
   detector's engine-only time is OpenCV's for a native-size YuNet pipeline and the seconds inside the
   cascade's own engine calls for MTCNN (no external peer runs the same cascade).

The report records the command, the machine, ``os.getloadavg()`` per chunk (this harness is often
run on shared machines: read ratios from one run, not absolute times across runs). Timing never
happens in unit tests.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import logging
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from facesdk.align import landmarks_from_box
from facesdk.detect import Detection
from facesdk.errors import FaceSDKError
from facesdk.gallery import l2_normalize
from facesdk.image import load_image, to_tensor

from .datasets import load_dataset
from .latency import machine_info
from .metrics import verification_summary
from .protocols import FALLBACK_BOX

__all__ = ["run_throughput", "render_markdown", "main"]

log = logging.getLogger(__name__)

DEFAULT_DETECTORS = ("mtcnn", "yunet-2023mar-dynamic")
#: Images per chunk (pipelines and peers take turns on each chunk).
DEFAULT_CHUNK = 500


def _fallback(img: np.ndarray) -> Detection:
    h, w = img.shape[:2]
    box = np.array(
        [FALLBACK_BOX[0] * w, FALLBACK_BOX[1] * h, FALLBACK_BOX[2] * w, FALLBACK_BOX[3] * h], np.float32
    )
    return Detection(box=box, score=0.0, landmarks=landmarks_from_box(box, "arcface112"))


class _EngineClock:
    """Adds up the seconds spent inside ``run`` of the given sessions (a timing wrapper, no change)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.calls: dict[str, int] = {}
        self._undo: list[Callable[[], None]] = []

    def watch(self, role: str, session: Any) -> None:
        run = session.run
        self.seconds.setdefault(role, 0.0)
        self.calls.setdefault(role, 0)

        def timed(batch: np.ndarray) -> list[np.ndarray]:
            t0 = time.perf_counter()
            try:
                return run(batch)
            finally:
                self.seconds[role] += time.perf_counter() - t0
                self.calls[role] += 1

        session.run = timed
        self._undo.append(lambda: session.__dict__.pop("run", None))

    def restore(self) -> None:
        for u in self._undo:
            u()
        self._undo.clear()


def _images(ds: Any, limit: int | None, pairs_only: bool = False) -> list[Path]:
    if pairs_only:  # the images of LFW pairs.txt (7,701), enough for the 10-fold accuracy
        files = sorted({ds.path(k) for k in ds.pairs("pairs").images()})
    else:
        files = sorted(p for p in ds.image_root.rglob("*.jpg") if p.is_file())
    return files[:limit] if limit else files


class _Row:
    """One pipeline of the run (a detector card + the embedder), accumulated over the chunks."""

    def __init__(self, rec: Any, warmup: Path, *, workers: int, batch_size: int) -> None:
        self.rec = rec
        self.workers = workers
        self.batch_size = batch_size
        rec.faces(warmup)  # warm-up outside the clock: engine sessions, the shape predictor's first load
        self.clock = _EngineClock()
        for role, s in rec.detector.sessions.items():
            self.clock.watch(f"detector:{role}", s)
        self.clock.watch("embedder", rec.embedder_session)
        # the crops the pipeline hands its embedder (references, no copy), for the embedder peer
        self._captured: list[np.ndarray] = []
        embed_crops = rec.embed_crops

        def capture(crops: np.ndarray, **kw: Any) -> np.ndarray:
            self._captured.append(crops)
            return embed_crops(crops, **kw)

        rec.embed_crops = capture
        self._undo_capture = lambda: rec.__dict__.pop("embed_crops", None)
        self.crops: np.ndarray | None = None  # the last chunk's crops (what the embedder peer runs)
        self.emb: dict[str, np.ndarray] = {}
        self.chunks: list[dict[str, Any]] = []
        self.stats: dict[str, float] = {}
        self.fallbacks = self.errors = self.multi = self.faces = self.batches = 0
        self.load0: tuple[float, ...] | None = None
        self.load1: tuple[float, ...] | None = None

    def close(self) -> None:
        self.clock.restore()
        self._undo_capture()

    def run_chunk(self, paths: Sequence[Path], *, progress: Any) -> dict[str, Any]:
        """The chunk's images through :meth:`FaceRecognizer.faces_many`; the chunk's timing record."""
        from facesdk.stream import StreamStats

        rec = self.rec
        st = StreamStats()
        eng0 = dict(self.clock.seconds)
        self._captured = []
        load0 = os.getloadavg()
        self.load0 = self.load0 or load0
        cpu0 = os.times()
        t0 = time.perf_counter()
        stream = rec.faces_many(
            [str(p) for p in paths],
            select="center",
            fallback=_fallback,
            workers=self.workers,
            batch_size=self.batch_size,
            stats=st,
        )
        for r in stream:
            progress.update(1)
            if r.error is not None:
                self.errors += 1
                continue
            self.fallbacks += r.fallback
            self.multi += r.detections > 1
            self.emb[r.source] = r.faces[0].embedding
        wall = time.perf_counter() - t0
        cpu1 = os.times()
        self.load1 = os.getloadavg()
        if self._captured:
            self.crops = np.concatenate(self._captured)
        self._captured = []
        for k, v in st.seconds.items():
            self.stats[k] = self.stats.get(k, 0.0) + v
        self.faces += st.faces
        self.batches += st.batches
        eng = {k: v - eng0.get(k, 0.0) for k, v in self.clock.seconds.items()}
        return {
            "images": len(paths),
            "wall_s": wall,
            "cpu_s": (cpu1.user + cpu1.system) - (cpu0.user + cpu0.system),
            "detector_engine_s": sum(v for k, v in eng.items() if k.startswith("detector:")),
            "embedder_engine_s": eng.get("embedder", 0.0),
            "embedder_tensors": st.faces * (2 if rec.tta == "flip" else 1),
            "loadavg": load0[0],
        }

    def summary(self) -> dict[str, Any]:
        rec = self.rec
        n = sum(c["images"] for c in self.chunks)
        wall = sum(c["wall_s"] for c in self.chunks)
        cpu = sum(c["cpu_s"] for c in self.chunks)
        return {
            "detector": rec.detector_card.id,
            "embedder": rec.embedder_card.id,
            "tta": rec.tta,
            "backend": rec.embedder_session.backend,
            "device": rec.embedder_session.device,
            "precision": rec.embedder_session.precision,
            "embedder_sha256": getattr(rec, "model_sha256", None),
            "workers": self.workers,
            "batch_size": self.batch_size,
            "images": n,
            "errors": self.errors,
            "no_detection_fallback": self.fallbacks,
            "multi_face_images": self.multi,
            # the sum of the chunks' wall times (the peers run between the chunks)
            "wall_s": wall,
            "images_per_s": n / wall if wall > 0 else None,
            # CPU seconds of the whole process (all threads): the work done, less sensitive to other
            # users of a shared machine than the wall time
            "cpu_s": cpu,
            "cpu_ms_per_image": 1000 * cpu / n if n else None,
            "stage_s": dict(self.stats),
            "engine_s": dict(self.clock.seconds),
            "engine_calls": dict(self.clock.calls),
            "detector_engine_s": sum(c["detector_engine_s"] for c in self.chunks),
            "embedder_engine_s": sum(c["embedder_engine_s"] for c in self.chunks),
            "embedder_tensors": sum(c["embedder_tensors"] for c in self.chunks),
            "embedder_batches": self.batches,
            "loadavg_before": self.load0,
            "loadavg_after": self.load1,
        }


def _raw_embedder_chunk(rec: Any, crops: np.ndarray, tensors: int, *, batch: int = 32) -> dict[str, Any]:
    """Seconds of the bare embedder session for ``tensors`` tensors at ``batch`` (real crops, flipped
    as the pipeline's TTA does, cycled to the count; the tensors are built outside the clock)."""
    spec = rec.embedder_card.input
    s = rec.embedder_session
    if rec.tta == "flip":
        crops = np.concatenate([crops, crops[:, :, ::-1]])
    seconds = 0.0
    done = 0
    while done < tensors:
        k = min(batch, tensors - done)
        idx = np.arange(done, done + k) % len(crops)
        t = to_tensor(
            crops[idx], layout=rec.embed_layout, color=spec.color, mean=spec.mean, std=spec.std,
            dtype=spec.dtype,
        )
        t0 = time.perf_counter()
        s.run_batched(t)
        seconds += time.perf_counter() - t0
        done += k
    return {"tensors": tensors, "seconds": seconds}


class _YunetPeer:
    """OpenCV FaceDetectorYN at native size vs facesdk's native-size YuNet, image by image."""

    def __init__(self, model: Path, rec_yunet: Any, warmup: Path, *, threads: int) -> None:
        import cv2

        cv2.setNumThreads(threads)
        self.cv2 = cv2
        self.det = rec_yunet.detector
        self.yn = cv2.FaceDetectorYN.create(
            str(model), "", (320, 320), self.det.score_threshold, self.det.nms_threshold, 5000
        )
        img = load_image(warmup)  # warm-up of both, outside the clock
        self.det.detect(img)
        self.yn.setInputSize((img.shape[1], img.shape[0]))
        self.yn.detect(np.ascontiguousarray(img[:, :, ::-1]))
        self.images = self.faces_cv = self.faces_fs = 0
        self.t_cv = self.t_fs = self.t_mt = 0.0
        self.load0: tuple[float, ...] | None = None

    def run_chunk(self, paths: Sequence[Path], *, progress: Any) -> dict[str, Any]:
        t_cv = t_fs = t_mt = 0.0
        self.load0 = self.load0 or os.getloadavg()
        small = getattr(self.det, "single_thread_pixels", 0)
        for i, p in enumerate(paths):
            img = load_image(p)
            bgr = np.ascontiguousarray(img[:, :, ::-1])
            h, w = img.shape[:2]
            order = (0, 1, 2) if (self.images + i) % 2 == 0 else (2, 1, 0)  # alternate who goes first
            for who in order:
                if who == 0:
                    t0 = time.perf_counter()
                    self.yn.setInputSize((w, h))
                    _, faces = self.yn.detect(bgr)
                    t_cv += time.perf_counter() - t0
                    self.faces_cv += 0 if faces is None else len(faces)
                elif who == 1:
                    t0 = time.perf_counter()
                    self.faces_fs += len(self.det.detect(img))
                    t_fs += time.perf_counter() - t0
                elif small:  # A/B: the same detector with every input on the multi-threaded session
                    self.det.single_thread_pixels = 0
                    try:
                        t0 = time.perf_counter()
                        self.det.detect(img)
                        t_mt += time.perf_counter() - t0
                    finally:
                        self.det.single_thread_pixels = small
            progress.update(1)
        self.images += len(paths)
        self.t_cv += t_cv
        self.t_fs += t_fs
        self.t_mt += t_mt
        out = {"images": len(paths), "opencv_s": t_cv, "facesdk_s": t_fs, "ratio": t_fs / t_cv}
        if small:
            out["facesdk_all_threads_s"] = t_mt
        return out

    def summary(self, chunks: list[dict[str, Any]]) -> dict[str, Any]:
        ratios = [c["ratio"] for c in chunks]
        return {
            "images": self.images,
            "opencv_s": self.t_cv,
            "facesdk_s": self.t_fs,
            "ratio_facesdk_over_opencv": self.t_fs / self.t_cv,
            "ratio_chunks_median": float(np.median(ratios)),
            "ratio_chunks_min": float(np.min(ratios)),
            "ratio_chunks_max": float(np.max(ratios)),
            "chunks": chunks,
            **(
                {
                    "single_thread_pixels": self.det.single_thread_pixels,
                    "facesdk_all_inputs_multithreaded_s": self.t_mt,
                    "ratio_all_inputs_multithreaded_over_opencv": self.t_mt / self.t_cv,
                }
                if self.t_mt
                else {}
            ),
            "opencv_faces": self.faces_cv,
            "facesdk_faces": self.faces_fs,
            "opencv_version": self.cv2.__version__,
            "loadavg_before": self.load0,
            "loadavg_after": os.getloadavg(),
        }


def _accuracy(ds: Any, emb: dict[str, np.ndarray]) -> dict[str, Any] | None:
    pairs = ds.pairs("pairs")
    key = {k: str(ds.path(k)) for k in pairs.images()}
    ok = np.array([key[a] in emb and key[b] in emb for a, b in zip(pairs.a, pairs.b)])
    if not ok.any():
        return None
    ea = l2_normalize(np.stack([emb[key[a]] for a, o in zip(pairs.a, ok) if o]))
    eb = l2_normalize(np.stack([emb[key[b]] for b, o in zip(pairs.b, ok) if o]))
    s = np.einsum("ij,ij->i", ea, eb).astype(np.float64)
    folds = pairs.folds[ok] if pairs.folds is not None and ok.all() else None
    try:
        summ = verification_summary(s, pairs.same[ok].astype(int), folds, k=10)
    except FaceSDKError as exc:  # e.g. a --limit subset with pairs of one kind only
        return {"skipped": str(exc), "pairs": int(ok.sum())}
    keep = ("pairs", "mean_accuracy", "std_accuracy", "fold_accuracies", "eer", "auc")
    return {
        "protocol": "lfw-pairs (10 folds)" if folds is not None else "lfw-pairs subset (stratified folds)",
        **{k: summ[k] for k in keep if k in summ},
    }


def _chip_ab(rec: Any, paths: Sequence[Path]) -> dict[str, Any] | None:
    """A/B of dlib's chip, same process, interleaved face by face: the exact numpy sampling vs one
    ``cv2.warpAffine`` (``facesdk.dlib.crop``, ``method=``) on the same faces and shapes; their pixel
    differences and the cosine between the embeddings of the two chips (the recogniser's embedder,
    its TTA). None when the recogniser does not use dlib's chip."""
    if rec.template != "dlib150" or rec.landmarker is not None or not paths:
        return None
    try:
        import cv2  # noqa: F401
    except ImportError:
        return {"skipped": "cv2 not installed"}
    from facesdk.dlib.crop import dlib_face_crop, dlib_predictor_rect
    from facesdk.dlib.shape_predictor import load_default

    sp = load_default()
    imgs, rects = [], []
    for p in paths:
        img = rec.load(p)
        d = rec.detector.detect(img)
        det = d[0] if d else _fallback(img)
        imgs.append(img)
        rects.append(dlib_predictor_rect(sp, det.box, det.landmarks))
    shapes = sp.predict_many(imgs, np.asarray(rects, np.float64))
    wall = {"exact": 0.0, "fast": 0.0}
    cpu = {"exact": 0.0, "fast": 0.0}
    chips: dict[str, list[np.ndarray]] = {"exact": [], "fast": []}
    for i, (im, sh) in enumerate(zip(imgs, shapes)):
        for m in ("exact", "fast") if i % 2 == 0 else ("fast", "exact"):
            c0, t0 = time.thread_time(), time.perf_counter()
            chips[m].append(dlib_face_crop(im, sh, 150, 0.25, method=m))
            wall[m] += time.perf_counter() - t0
            cpu[m] += time.thread_time() - c0
    ex, fa = np.stack(chips["exact"]), np.stack(chips["fast"])
    diff = np.abs(ex.astype(np.int16) - fa.astype(np.int16))
    cos = np.einsum("ij,ij->i", rec.embed_crops(ex), rec.embed_crops(fa)).astype(np.float64)
    n = len(ex)
    return {
        "faces": n,
        "exact_ms_per_face": 1000 * wall["exact"] / n,
        "fast_ms_per_face": 1000 * wall["fast"] / n,
        "exact_cpu_ms_per_face": 1000 * cpu["exact"] / n,
        "fast_cpu_ms_per_face": 1000 * cpu["fast"] / n,
        "ratio_fast_over_exact": wall["fast"] / wall["exact"],
        "values_differing": float((diff > 0).mean()),
        "max_abs_diff": int(diff.max()),
        "embedding_cos_min": float(cos.min()),
        "embedding_cos_mean": float(cos.mean()),
        "embedding_cos_p001": float(np.quantile(cos, 0.001)),
    }


def _chunks(n: int, size: int) -> list[tuple[int, int]]:
    """``[start, stop)`` ranges of about ``size`` items covering ``range(n)`` (the last not tiny)."""
    k = max(1, round(n / max(size, 1)))
    edges = np.linspace(0, n, k + 1).round().astype(int)
    return [(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:]) if b > a]


def _report_head(
    ds: Any, paths: list[Path], thr: int, precision: str, chunk: int, n_chunks: int, pairs_only: bool,
    argv: Sequence[str] | None,
) -> dict[str, Any]:
    """The report's fixed part: command, machine, dataset, threads, chunking; empty rows and peers."""
    return {
        "facesdk_bench": 1,
        "protocol": "throughput",
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(["facesdk", *(argv if argv is not None else sys.argv[1:])]),
        "machine": machine_info(),
        "dataset": {
            "name": "lfw",
            "root": str(ds.root),
            "images": len(paths),
            "selection": "pairs.txt images" if pairs_only else "all images",
        },
        "threads": thr,
        "ort_spinning": os.environ.get("FACESDK_ORT_SPINNING", "0") == "1",
        "precision": precision,
        "chunking": {
            "chunk": chunk,
            "chunks": n_chunks,
            "order": "even chunks: pipelines (in the given order), then the peers; odd chunks: the peers, "
            "then the pipelines in reverse order",
        },
        "rows": [],
        "peers": {},
    }  # fmt: skip


def _make_rows(
    detectors: Sequence[str], embedder: str | None, backend: str, precision: str, batch_size: int, thr: int,
    first: Path, workers: int,
) -> list[_Row]:
    """One recogniser (a pipeline row) per detector, warmed up on ``first``."""
    import facesdk

    rows = []
    for det in detectors:
        rec = facesdk.FaceRecognizer(
            detector=det,
            embedder=embedder,
            backend=backend,
            precision=precision,
            batch_size=batch_size,
            backend_options={"threads": thr},
        )
        rows.append(_Row(rec, first, workers=workers, batch_size=batch_size))
    return rows  # fmt: skip


def _is_native_yunet(rec: Any) -> bool:
    return rec.detector_card.family == "yunet" and rec.detector_card.input.dynamic_size


def _make_yunet_peer(
    rows: list[_Row], embedder: str | None, backend: str, thr: int, first: Path, report: dict[str, Any]
) -> _YunetPeer | None:
    """OpenCV's FaceDetectorYN on the native-size YuNet file, beside facesdk's (a row's recogniser when
    one runs native-size YuNet); None, noted in ``report``, without OpenCV."""
    import facesdk
    from facesdk import zoo

    try:
        import cv2  # noqa: F401
    except ImportError:
        report["peers"]["opencv_yunet_native"] = {"skipped": "cv2 not installed"}
        return None
    yrec = next((r.rec for r in rows if _is_native_yunet(r.rec)), None) or facesdk.FaceRecognizer(
        detector="yunet-2023mar-dynamic", embedder=embedder, backend=backend, backend_options={"threads": thr}
    )
    card = zoo.get_card(yrec.detector_card.id)
    return _YunetPeer(zoo.fetch(card, "onnx"), yrec, first, threads=thr)


def _run_chunk(
    ci: int, part: list[Path], rows: list[_Row], ypeer: _YunetPeer | None, share: float, peers: bool,
    bar: Any, det_chunks: list[dict[str, Any]], emb_chunks: list[list[dict[str, Any]]],
) -> None:
    """One chunk: the pipelines and the peers one after the other (order reversed on odd chunks), then
    each row's chunk record with its engine-only times and ratio."""
    steps: list[tuple[str, int]] = [("row", i) for i in range(len(rows))]
    peer_steps: list[tuple[str, int]] = [("det", 0)] if ypeer is not None else []
    if peers:
        peer_steps += [("emb", i) for i in range(len(rows))]
    order = steps + peer_steps if ci % 2 == 0 else peer_steps + steps[::-1]
    rec_chunk: dict[int, dict[str, Any]] = {}
    emb_rec: dict[int, dict[str, Any]] = {}
    for kind, i in order:
        if kind == "row":
            rec_chunk[i] = rows[i].run_chunk(part, progress=bar)
        elif kind == "det" and ypeer is not None:
            k = max(1, round(share * len(part)))
            d = ypeer.run_chunk(part[:k], progress=bar)
            d["scale"] = len(part) / k
            det_chunks.append(d)
        elif kind == "emb":
            r = rows[i]
            # expected embedder tensors (one face per image, + flip) when the peer runs before the pipeline
            want = rec_chunk[i]["embedder_tensors"] if i in rec_chunk else (
                len(part) * (2 if r.rec.tta == "flip" else 1)
            )
            if r.crops is not None and want:
                e = _raw_embedder_chunk(r.rec, r.crops, want, batch=32)
                e["crops_from"] = "this chunk" if i in rec_chunk else "the previous chunk"
                emb_rec[i] = e
    for i, row in enumerate(rows):
        c = rec_chunk[i]
        e = emb_rec.get(i)
        if e is not None:
            # the peer ran the tensor count expected before the pipeline; scale to the real count
            c["embedder_only_s"] = e["seconds"] * c["embedder_tensors"] / max(e["tensors"], 1)
            emb_chunks[i].append(e)
        if _is_native_yunet(row.rec) and det_chunks and ypeer is not None and len(det_chunks) == ci + 1:
            c["detector_only_s"] = det_chunks[-1]["opencv_s"] * det_chunks[-1]["scale"]
            c["detector_only_source"] = "opencv"
        else:
            c["detector_only_s"] = c["detector_engine_s"]
            c["detector_only_source"] = "own engine calls"
        if "embedder_only_s" in c:
            c["ratio"] = c["wall_s"] / (c["detector_only_s"] + c["embedder_only_s"])
        row.chunks.append(c)  # fmt: skip


def _row_report(r: _Row, ds: Any, accuracy: bool, share: float) -> dict[str, Any]:
    """A pipeline row: its summary, LFW accuracy, chunks, and the totals and chunk statistics of
    pipeline / engine-only."""
    row = r.summary()
    if accuracy:
        row["lfw"] = _accuracy(ds, r.emb)
    row["chunks"] = r.chunks
    ratios = [c["ratio"] for c in r.chunks if "ratio" in c]
    if ratios:
        det_only = sum(c["detector_only_s"] for c in r.chunks)
        emb_only = sum(c["embedder_only_s"] for c in r.chunks)
        opencv = r.chunks[0]["detector_only_source"] == "opencv"
        row["engine_only_s"] = {
            "detector": det_only,
            "detector_source": "OpenCV FaceDetectorYN, native size, same chunks"
            + ("" if share == 1.0 else " (scaled from a share of each chunk)")
            if opencv
            else "seconds inside the detector's own engine calls",
            "embedder": emb_only,
            "embedder_source": "raw embedder session at batch 32, same chunks",
        }
        row["overhead_ratio"] = row["wall_s"] / (det_only + emb_only)
        row["overhead_ratio_chunks_median"] = float(np.median(ratios))
        row["overhead_ratio_chunks_min"] = float(np.min(ratios))
        row["overhead_ratio_chunks_max"] = float(np.max(ratios))
    return row


def run_throughput(
    root: str | Path,
    *,
    detectors: Sequence[str] = DEFAULT_DETECTORS,
    embedder: str | None = None,
    backend: str = "onnxruntime",
    precision: str = "fp32",
    threads: int | None = None,
    workers: int = 2,
    batch_size: int = 16,
    limit: int | None = None,
    chunk: int = DEFAULT_CHUNK,
    chip_ab: int = 500,
    peers: bool = True,
    peer_limit: int | None = None,
    accuracy: bool = True,
    pairs_only: bool = False,
    progress: bool = True,
    argv: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Run the protocol (see the module docstring) and return the report.

    ``chunk``: images per chunk; in every chunk each pipeline and the engine-only peers run on the
    chunk's images one after the other (the order reversed every other chunk), so that the ratios
    pipeline / engine-only and facesdk / OpenCV compare times taken at nearly the same moment.
    ``peer_limit``: run the detection peer on about this many images in all (the same share of
    every chunk; the chunk's OpenCV time is scaled to the chunk). ``chip_ab``: after the chunks, the
    A/B of dlib's chip (exact numpy vs ``cv2.warpAffine``, :func:`_chip_ab`) on this many images (0: no).
    """
    if chunk < 1:
        raise FaceSDKError(f"chunk must be >= 1, not {chunk}")
    ds = load_dataset("lfw", root)
    paths = _images(ds, limit, pairs_only)
    if not paths:
        raise FaceSDKError(f"no images under {ds.image_root}")
    thr = threads or len(os.sched_getaffinity(0))
    spans = _chunks(len(paths), chunk)
    report = _report_head(ds, paths, thr, precision, chunk, len(spans), pairs_only, argv)
    rows = _make_rows(detectors, embedder, backend, precision, batch_size, thr, paths[0], workers)
    ypeer = _make_yunet_peer(rows, embedder, backend, thr, paths[0], report) if peers else None
    share = min(1.0, peer_limit / len(paths)) if peer_limit else 1.0
    det_chunks: list[dict[str, Any]] = []
    emb_chunks: list[list[dict[str, Any]]] = [[] for _ in rows]
    total = len(paths) * (len(rows) + (share if ypeer else 0.0))
    bar = tqdm(total=round(total), desc="throughput", unit="img", disable=not progress)
    try:
        for ci, (a, b) in enumerate(spans):
            _run_chunk(ci, paths[a:b], rows, ypeer, share, peers, bar, det_chunks, emb_chunks)
    finally:
        bar.close()
        for r in rows:
            r.close()
    for r in rows:
        report["rows"].append(_row_report(r, ds, accuracy, share))
    if ypeer is not None and det_chunks:
        report["peers"]["opencv_yunet_native"] = ypeer.summary(det_chunks)
    if chip_ab and rows:
        ab = next((a for a in (_chip_ab(r.rec, paths[:chip_ab]) for r in rows[::-1]) if a), None)
        if ab is not None:
            report["chip_ab"] = ab
    all_emb = [e for es in emb_chunks for e in es]
    if all_emb:
        sec = sum(e["seconds"] for e in all_emb)
        ten = sum(e["tensors"] for e in all_emb)
        report["peers"]["raw_embedder_batch32"] = {
            "batch": 32,
            "tensors": ten,
            "seconds": sec,
            "s_per_tensor": sec / ten,
            "tensors_per_s": ten / sec,
        }
    return report


def render_markdown(report: dict[str, Any]) -> str:
    """A short Markdown summary of a throughput report."""
    m = report["machine"]
    ch = report.get("chunking") or {}
    lines = [
        f"### Throughput: LFW, {report['dataset']['images']} images "
        f"({report['dataset'].get('selection', 'all images')}, {report['created']})",
        "",
        f"`{report['command']}` on {m.get('cpu')} ({m.get('cores')} cores), "
        f"{report['threads']} engine threads, {ch.get('chunks', 1)} chunks of ≈ {ch.get('chunk', '–')} "
        "images (pipelines and peers take turns on each chunk).",
        "",
        "| detector | embedder (tta, precision) | wall s | images/s | CPU ms/img | decode | detect | align "
        "| embed | engine det/emb s | engine-only det + emb s | pipeline / engine-only: total (chunk median, "
        "range) | LFW 10-fold | fallbacks | load avg |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in report["rows"]:
        st = r["stage_s"]
        eo = r.get("engine_only_s", {})
        acc = r.get("lfw") or {}
        a = acc.get("mean_accuracy")
        acc_s = f"{100 * a:.2f} % ± {100 * acc.get('std_accuracy', 0.0):.2f}" if isinstance(a, float) else "–"
        eo_s = f"{eo['detector']:.1f} + {eo['embedder']:.1f}" if eo.get("embedder") is not None else "–"
        ratio = "–"
        if "overhead_ratio" in r:
            ratio = f"{r['overhead_ratio']:.2f}"
            if "overhead_ratio_chunks_median" in r:
                ratio += (
                    f" ({r['overhead_ratio_chunks_median']:.2f}, {r['overhead_ratio_chunks_min']:.2f}–"
                    f"{r['overhead_ratio_chunks_max']:.2f})"
                )
        lb, la = r.get("loadavg_before") or (float("nan"),), r.get("loadavg_after") or (float("nan"),)
        lines.append(
            f"| {r['detector']} | {r['embedder']} ({r['tta']}, {r.get('precision', 'fp32')}) "
            f"| {r['wall_s']:.1f} "
            f"| {r['images_per_s']:.1f} | {r.get('cpu_ms_per_image') or float('nan'):.1f} "
            f"| {st['decode']:.1f} | {st['detect']:.1f} | {st['align']:.1f} | {st['embed']:.1f} "
            f"| {r['detector_engine_s']:.1f} / {r['embedder_engine_s']:.1f} | {eo_s} "
            f"| {ratio} | {acc_s} | {r['no_detection_fallback']} "
            f"| {lb[0]:.1f} → {la[0]:.1f} |"
        )
    yn = report["peers"].get("opencv_yunet_native")
    if yn and "opencv_s" in yn:
        med = (
            f" (chunk median {yn['ratio_chunks_median']:.2f}, range {yn['ratio_chunks_min']:.2f}–"
            f"{yn['ratio_chunks_max']:.2f})"
            if "ratio_chunks_median" in yn
            else ""
        )
        lines += [
            "",
            f"Detection peer (same run, same chunks, interleaved image by image, {yn['images']} images): "
            f"OpenCV {yn['opencv_version']} FaceDetectorYN native size {yn['opencv_s']:.1f} s, facesdk YuNet "
            f"native size {yn['facesdk_s']:.1f} s: ratio facesdk/OpenCV = "
            f"{yn['ratio_facesdk_over_opencv']:.2f}{med}.",
        ]
        if "ratio_all_inputs_multithreaded_over_opencv" in yn:
            lines.append(
                f"A/B in the same loop: facesdk YuNet with every input on the {report['threads']}-thread "
                f"session (no single-threaded session for inputs ≤ {yn['single_thread_pixels']} pixels) "
                f"{yn['facesdk_all_inputs_multithreaded_s']:.1f} s: ratio "
                f"{yn['ratio_all_inputs_multithreaded_over_opencv']:.2f}."
            )
    raw = report["peers"].get("raw_embedder_batch32")
    if raw:
        lines += [
            f"Embedding peer: raw embedder session at batch 32 on the pipelines' own crops: "
            f"{raw['tensors_per_s']:.1f} tensors/s ({1000 * raw['s_per_tensor']:.2f} ms per tensor)."
        ]
    ab = report.get("chip_ab")
    if ab and "faces" in ab:
        lines.append(
            f"dlib chip A/B (same process, interleaved, {ab['faces']} faces): exact numpy "
            f"{ab['exact_ms_per_face']:.3f} ms/face ({ab['exact_cpu_ms_per_face']:.3f} CPU), cv2.warpAffine "
            f"{ab['fast_ms_per_face']:.3f} ms/face ({ab['fast_cpu_ms_per_face']:.3f} CPU), ratio "
            f"{ab['ratio_fast_over_exact']:.3f}; {100 * ab['values_differing']:.4f} % of values differ (max "
            f"{ab['max_abs_diff']}); embedding cosine min {ab['embedding_cos_min']:.7f}, mean "
            f"{ab['embedding_cos_mean']:.7f}."
        )
    lines += ["", "Stage seconds are summed over worker threads (they overlap each other and the wall time)."]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m facesdk_bench.throughput --root ../shared/data/lfw [--limit N] [--out report.json]``."""
    p = argparse.ArgumentParser(prog="facesdk bench --protocol throughput")
    add_arguments(p)
    args = p.parse_args(argv)
    return run_from_args(args, list(argv) if argv is not None else sys.argv[1:])


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Options of the throughput protocol (shared with ``facesdk bench``)."""
    p.add_argument("--root", help="LFW directory (default ../shared/data/lfw)")
    p.add_argument(
        "--detectors", help=f"comma-separated detector cards (default {','.join(DEFAULT_DETECTORS)})"
    )
    p.add_argument("--embedder", help="embedder card (default: the default pipeline's)")
    p.add_argument("--threads", type=int, help="engine threads (default: all cores)")
    p.add_argument("--workers", type=int, default=2, help="stream worker threads (default 2)")
    p.add_argument(
        "--batch-size", type=int, default=16, help="faces per embedder batch (flip TTA doubles it)"
    )
    p.add_argument("--limit", type=int, help="only the first N images (sorted paths)")
    p.add_argument(
        "--chunk", type=int, default=DEFAULT_CHUNK, help=f"images per chunk (default {DEFAULT_CHUNK})"
    )
    p.add_argument("--precision", default="fp32", help="embedder precision (fp32, int8 …)")
    p.add_argument("--chip-ab", type=int, default=500, help="images of the dlib chip A/B (0: none)")
    p.add_argument("--peer-limit", type=int, help="run the detection peer on the first N images only")
    p.add_argument("--no-peers", action="store_true")
    p.add_argument("--pairs-only", action="store_true", help="only the 7,701 images of LFW pairs.txt")
    p.add_argument("--out", help="write the JSON report here")
    p.add_argument("--no-progress", action="store_true")


def run_from_args(args: argparse.Namespace, argv: list[str]) -> int:
    root = args.root or str(Path(__file__).resolve().parents[2] / "shared/data/lfw")
    dets = [d for d in (args.detectors or ",".join(DEFAULT_DETECTORS)).split(",") if d]
    rep = run_throughput(
        root,
        detectors=dets,
        embedder=getattr(args, "embedder", None),
        threads=args.threads,
        workers=args.workers,
        batch_size=args.batch_size,
        limit=args.limit,
        chunk=args.chunk,
        chip_ab=args.chip_ab,
        precision=args.precision,
        peers=not args.no_peers,
        peer_limit=args.peer_limit,
        progress=not args.no_progress,
        pairs_only=args.pairs_only,
        argv=argv,
    )
    if args.out:
        from facesdk.fileio import atomic_write_bytes

        atomic_write_bytes(args.out, json.dumps(rep, indent=2, default=float).encode())
    sys.stdout.write(render_markdown(rep) + "\n")
    return 0


if __name__ == "__main__":  # pragma: no cover
    logging.basicConfig(level=logging.WARNING)
    sys.exit(main())
