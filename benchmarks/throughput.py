"""Throughput protocol: the whole of LFW through the streaming pipeline, beside engine-only peers.

``facesdk bench --protocol throughput`` (or ``python -m facesdk_bench.throughput``) runs, in
one process and one sitting:

1. **Pipelines.** For every detector asked for (default: the default pipeline's MTCNN and the
   native-size YuNet card), every LFW image goes decode → detect → align → embed through
   :meth:`FaceRecognizer.faces_many` (thread pool, full embedder batches, flip TTA folded in),
   one face per image (the detection nearest the image centre; the fixed central box when
   nothing is detected, as the accuracy protocol does). Reported: wall time, images/s,
   per-stage seconds (summed over worker threads), seconds spent inside engine calls
   (``Session.run`` of the detector's and the embedder's sessions, summed over threads),
   and LFW ``pairs.txt`` 10-fold accuracy **from these very embeddings** (no cache).
2. **Peers, same run.** Detection: OpenCV ``cv2.FaceDetectorYN`` on the same YuNet network
   at each image's own size (``yunet_s_dynamic.onnx``), interleaved image by image with
   facesdk's native-size YuNet so that machine load hits both alike: the ratio
   facesdk-YuNet / OpenCV. Embedding: the raw embedder session at batch 32 on real crops
   (chips per second), which gives the engine-only time of the crops the pipeline embedded.
3. **Overhead.** ``pipeline wall / (detector engine-only + embedder engine-only)`` where the
   detector's engine-only time is OpenCV's for a YuNet pipeline and the seconds inside the
   cascade's own engine calls for MTCNN (no external peer runs the same cascade).

The report records the command, the machine, ``os.getloadavg()`` before and after (this
harness is often run on shared machines: read ratios from one run, not absolute times across
runs). Timing never happens in unit tests.
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


def _run_pipeline(
    rec: Any, paths: Sequence[Path], *, workers: int, batch_size: int, progress: bool, sample_crops: int = 32
) -> tuple[dict[str, Any], dict[str, np.ndarray], np.ndarray]:
    from facesdk.stream import StreamStats

    rec.faces(paths[0])  # warm-up outside the clock: engine sessions, the shape predictor's first load
    clock = _EngineClock()
    for role, s in rec.detector.sessions.items():
        clock.watch(f"detector:{role}", s)
    clock.watch("embedder", rec.embedder_session)
    st = StreamStats()
    emb: dict[str, np.ndarray] = {}
    fallbacks = errors = multi = 0
    crops: list[np.ndarray] = []
    load0 = os.getloadavg()
    cpu0 = os.times()
    t0 = time.perf_counter()
    try:
        stream = rec.faces_many(
            [str(p) for p in paths],
            select="center",
            fallback=_fallback,
            workers=workers,
            batch_size=batch_size,
            stats=st,
        )
        for r in tqdm(
            stream,
            total=len(paths),
            desc=f"throughput {rec.detector_card.id}",
            unit="img",
            disable=not progress,
        ):
            if r.error is not None:
                errors += 1
                continue
            fallbacks += r.fallback
            multi += r.detections > 1
            emb[r.source] = r.faces[0].embedding
        wall = time.perf_counter() - t0
        cpu1 = os.times()
    finally:
        clock.restore()
    cpu = (cpu1.user + cpu1.system) - (cpu0.user + cpu0.system)
    # real crops for the raw-embedder peer (the first images' faces)
    for p in paths[: sample_crops * 2]:
        if len(crops) >= sample_crops:
            break
        img = rec.load(p)
        d = rec.detector.detect(img)
        if d:
            crops.append(rec.align(img, d[:1])[0])
    det_engine = sum(v for k, v in clock.seconds.items() if k.startswith("detector:"))
    n = len(paths)
    row = {
        "detector": rec.detector_card.id,
        "embedder": rec.embedder_card.id,
        "tta": rec.tta,
        "backend": rec.embedder_session.backend,
        "device": rec.embedder_session.device,
        "precision": rec.embedder_session.precision,
        "workers": workers,
        "batch_size": batch_size,
        "images": n,
        "errors": errors,
        "no_detection_fallback": fallbacks,
        "multi_face_images": multi,
        "wall_s": wall,
        "images_per_s": n / wall if wall > 0 else None,
        # CPU seconds of the whole process (all threads): the work done, less sensitive to other
        # users of a shared machine than the wall time
        "cpu_s": cpu,
        "cpu_ms_per_image": 1000 * cpu / n if n else None,
        "stage_s": dict(st.seconds),
        "engine_s": dict(clock.seconds),
        "engine_calls": dict(clock.calls),
        "detector_engine_s": det_engine,
        "embedder_engine_s": clock.seconds.get("embedder", 0.0),
        "embedder_tensors": st.faces * (2 if rec.tta == "flip" else 1),
        "embedder_batches": st.batches,
        "loadavg_before": load0,
        "loadavg_after": os.getloadavg(),
    }
    return row, emb, np.stack(crops) if crops else np.zeros((0,), np.uint8)


def _raw_embedder(rec: Any, crops: np.ndarray, *, batch: int = 32, repeats: int = 8) -> dict[str, Any]:
    """Chips per second of the bare embedder session at ``batch`` (real crops, tiled to the batch)."""
    spec = rec.embedder_card.input
    x = np.concatenate([crops] * (batch // max(len(crops), 1) + 1))[:batch]
    t = to_tensor(
        x, layout=rec.embed_layout, color=spec.color, mean=spec.mean, std=spec.std, dtype=spec.dtype
    )
    s = rec.embedder_session
    s.run_batched(t)  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        s.run_batched(t)
        times.append(time.perf_counter() - t0)
    per = float(np.median(times)) / batch
    return {
        "batch": batch,
        "repeats": repeats,
        "median_batch_s": float(np.median(times)),
        "s_per_tensor": per,
        "tensors_per_s": 1.0 / per,
    }


def _yunet_peer(
    paths: Sequence[Path], model: Path, rec_yunet: Any, *, threads: int, progress: bool
) -> dict[str, Any]:
    """OpenCV FaceDetectorYN at native size vs facesdk's native-size YuNet, image by image."""
    try:
        import cv2
    except ImportError:
        return {"skipped": "cv2 not installed"}
    cv2.setNumThreads(threads)
    det = rec_yunet.detector
    yn = cv2.FaceDetectorYN.create(str(model), "", (320, 320), det.score_threshold, det.nms_threshold, 5000)
    t_cv = t_fs = 0.0
    n_cv = n_fs = 0
    load0 = os.getloadavg()
    for i, p in enumerate(tqdm(paths, desc="peer: OpenCV FaceDetectorYN", unit="img", disable=not progress)):
        img = load_image(p)
        bgr = np.ascontiguousarray(img[:, :, ::-1])
        h, w = img.shape[:2]
        order = (0, 1) if i % 2 == 0 else (1, 0)  # alternate who goes first
        for who in order:
            if who == 0:
                t0 = time.perf_counter()
                yn.setInputSize((w, h))
                _, faces = yn.detect(bgr)
                t_cv += time.perf_counter() - t0
                n_cv += 0 if faces is None else len(faces)
            else:
                t0 = time.perf_counter()
                n_fs += len(det.detect(img))
                t_fs += time.perf_counter() - t0
    return {
        "images": len(paths),
        "opencv_s": t_cv,
        "facesdk_s": t_fs,
        "ratio_facesdk_over_opencv": t_fs / t_cv,
        "opencv_faces": n_cv,
        "facesdk_faces": n_fs,
        "opencv_version": cv2.__version__,
        "loadavg_before": load0,
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
    peers: bool = True,
    peer_limit: int | None = None,
    accuracy: bool = True,
    pairs_only: bool = False,
    progress: bool = True,
    argv: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Run the protocol (see the module docstring) and return the report."""
    import facesdk
    from facesdk import zoo

    ds = load_dataset("lfw", root)
    paths = _images(ds, limit, pairs_only)
    thr = threads or len(os.sched_getaffinity(0))
    report: dict[str, Any] = {
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
        "rows": [],
        "peers": {},
    }
    opts = {"threads": thr}
    yunet_rec = None
    crops = None
    for det in detectors:
        rec = facesdk.FaceRecognizer(
            detector=det,
            embedder=embedder,
            backend=backend,
            precision=precision,
            batch_size=batch_size,
            backend_options=opts,
        )
        row, emb, c = _run_pipeline(rec, paths, workers=workers, batch_size=batch_size, progress=progress)
        if accuracy:
            row["lfw"] = _accuracy(ds, emb)
        if crops is None and len(c):
            crops = c
        if rec.detector_card.family == "yunet" and rec.detector_card.input.dynamic_size:
            yunet_rec = rec
        report["rows"].append(row)
        report.setdefault("_recs", []).append(rec)
    recs = report.pop("_recs", [])
    if peers and recs:
        if crops is not None:
            report["peers"]["raw_embedder_batch32"] = _raw_embedder(recs[0], crops, batch=32)
        if yunet_rec is None:
            yunet_rec = facesdk.FaceRecognizer(
                detector="yunet-2023mar-dynamic", embedder=embedder, backend=backend, backend_options=opts
            )
        card = zoo.get_card(yunet_rec.detector_card.id)
        model = zoo.fetch(card, "onnx")
        pp = paths[:peer_limit] if peer_limit else paths
        report["peers"]["opencv_yunet_native"] = _yunet_peer(
            pp, model, yunet_rec, threads=thr, progress=progress
        )
    raw = report["peers"].get("raw_embedder_batch32")
    yn = report["peers"].get("opencv_yunet_native")
    for row in report["rows"]:
        emb_only = raw["s_per_tensor"] * row["embedder_tensors"] if raw else None
        if row["detector"].startswith("yunet") and yn and "opencv_s" in yn:
            det_only = yn["opencv_s"] * len(paths) / yn["images"]
            src = "OpenCV FaceDetectorYN, native size" + (
                "" if yn["images"] == len(paths) else " (scaled from a subset)"
            )
        else:
            det_only, src = row["detector_engine_s"], "seconds inside the detector's own engine calls"
        row["engine_only_s"] = {
            "detector": det_only,
            "detector_source": src,
            "embedder": emb_only,
            "embedder_source": "raw embedder session at batch 32",
        }
        if emb_only is not None:
            row["overhead_ratio"] = row["wall_s"] / (det_only + emb_only)
    return report


def render_markdown(report: dict[str, Any]) -> str:
    """A short Markdown summary of a throughput report."""
    m = report["machine"]
    lines = [
        f"### Throughput: LFW, {report['dataset']['images']} images "
        f"({report['dataset'].get('selection', 'all images')}, {report['created']})",
        "",
        f"`{report['command']}` on {m.get('cpu')} ({m.get('cores')} cores), "
        f"{report['threads']} engine threads.",
        "",
        "| detector | embedder (tta) | wall s | images/s | CPU ms/img | decode | detect | align | embed "
        "| engine det/emb s | engine-only det + emb s | pipeline / engine-only | LFW 10-fold | fallbacks "
        "| load avg |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in report["rows"]:
        st = r["stage_s"]
        eo = r.get("engine_only_s", {})
        acc = r.get("lfw") or {}
        a = acc.get("mean_accuracy")
        acc_s = f"{100 * a:.2f} %" if isinstance(a, float) else "–"
        eo_s = f"{eo['detector']:.1f} + {eo['embedder']:.1f}" if eo.get("embedder") is not None else "–"
        lines.append(
            f"| {r['detector']} | {r['embedder']} ({r['tta']}) | {r['wall_s']:.1f} | {r['images_per_s']:.1f} "
            f"| {r.get('cpu_ms_per_image') or float('nan'):.1f} "
            f"| {st['decode']:.1f} | {st['detect']:.1f} | {st['align']:.1f} | {st['embed']:.1f} "
            f"| {r['detector_engine_s']:.1f} / {r['embedder_engine_s']:.1f} | {eo_s} "
            f"| {r.get('overhead_ratio', float('nan')):.2f} | {acc_s} | {r['no_detection_fallback']} "
            f"| {r['loadavg_before'][0]:.1f} → {r['loadavg_after'][0]:.1f} |"
        )
    yn = report["peers"].get("opencv_yunet_native")
    if yn and "opencv_s" in yn:
        lines += [
            "",
            f"Detection peer (same run, interleaved, {yn['images']} images): OpenCV {yn['opencv_version']} "
            f"FaceDetectorYN native size {yn['opencv_s']:.1f} s, facesdk YuNet native size "
            f"{yn['facesdk_s']:.1f} s: ratio facesdk/OpenCV = {yn['ratio_facesdk_over_opencv']:.2f}.",
        ]
    raw = report["peers"].get("raw_embedder_batch32")
    if raw:
        lines += [
            f"Embedding peer: raw embedder session at batch 32: {raw['tensors_per_s']:.1f} crops/s "
            f"({1000 * raw['s_per_tensor']:.2f} ms per crop)."
        ]
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
