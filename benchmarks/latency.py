"""Latency and throughput per pipeline stage and end to end.

Every figure comes from ``time.perf_counter`` around one call, after warm-up
runs, repeated; reports give p50/p95/p99 and mean in milliseconds and
images/s. Peak RSS is the process high-water mark (``resource.getrusage``),
so it only grows across the configurations measured in one process. The
device, provider and precision that ran come from the backend Sessions.
"""

from __future__ import annotations

import logging
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
from tqdm.auto import tqdm

from facesdk.align import align_face
from facesdk.gallery import Gallery, l2_normalize
from facesdk.image import load_image

from .protocols import fallback_face, select_center

__all__ = ["timed", "percentiles", "peak_rss_mb", "machine_info", "measure_latency"]

log = logging.getLogger(__name__)


def peak_rss_mb() -> float | None:
    """Peak resident set size of this process in MiB (None where unsupported)."""
    try:
        import resource
    except ImportError:  # Windows
        return None
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return float(r) / (1024 * 1024 if sys.platform == "darwin" else 1024)


def machine_info() -> dict[str, Any]:
    """CPU, core count, OS and Python of this machine."""
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 0
    mem = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem = round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": cores,
        "memory_gib": mem,
        "os": platform.platform(),
        "python": platform.python_version(),
        "numpy": np.__version__,
    }


def percentiles(ms: Sequence[float]) -> dict[str, float]:
    """p50/p95/p99/mean/min of a list of milliseconds."""
    a = np.asarray(ms, np.float64)
    return {
        "p50_ms": float(np.percentile(a, 50)),
        "p95_ms": float(np.percentile(a, 95)),
        "p99_ms": float(np.percentile(a, 99)),
        "mean_ms": float(a.mean()),
        "min_ms": float(a.min()),
        "n": int(a.size),
    }


def timed(fn: Callable[[int], Any], warmup: int, repeats: int) -> list[float]:
    """Call ``fn(i)`` ``warmup`` times untimed, then ``repeats`` times timed; milliseconds."""
    for i in range(warmup):
        fn(i)
    out = []
    for i in range(repeats):
        t0 = time.perf_counter()
        fn(i)
        out.append((time.perf_counter() - t0) * 1000.0)
    return out


def measure_latency(
    rec: Any,
    images: Sequence[Path],
    *,
    batch_sizes: Sequence[int] = (1, 8, 32),
    warmup: int = 3,
    repeats: int = 20,
    gallery_size: int = 1000,
    threads: int | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Per-stage latency of one FaceRecognizer on ``images`` (cycled).

    Stages: ``decode`` (file → RGB), ``detect``, ``align`` (one face), ``embed``
    (per batch size; per-image ms = call / batch), ``match`` (one probe against
    ``gallery_size`` random identities), and ``end_to_end`` (decode → detect →
    align → embed(1) → match, one image at a time).
    """
    if not images:
        from facesdk.errors import ConfigError

        raise ConfigError("latency needs at least one image")
    paths = list(images)
    decoded = [load_image(p) for p in paths]

    def face_of(img: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        dets = rec.detector.detect(img)
        if dets:
            d = select_center(dets, img.shape)
            return d.box, d.landmarks
        return fallback_face(img.shape, rec.template)

    faces = [face_of(im) for im in decoded]
    crops = np.stack([align_face(im, b, lm, rec.template) for im, (b, lm) in zip(decoded, faces)])
    rng = np.random.default_rng(0)
    d = rec.embedding_size
    gal = Gallery.from_templates(
        [f"id{i:05d}" for i in range(gallery_size)],
        l2_normalize(rng.standard_normal((gallery_size, d)).astype(np.float32)),
        rec.model_id,
    )
    probe = rec.embed_crops(crops[:1])
    n = len(paths)
    stages: dict[str, Any] = {}
    bar = tqdm(
        total=5 + len(batch_sizes),
        desc=f"latency {rec.embedder_session.backend}",
        disable=not progress,
        leave=False,
    )

    def add(name: str, ms: list[float], per: int = 1, extra: dict[str, Any] | None = None) -> None:
        p = percentiles(ms)
        p["images_per_s"] = float(per * 1000.0 / p["mean_ms"]) if p["mean_ms"] > 0 else None
        if per > 1:
            p["per_image_p50_ms"] = p["p50_ms"] / per
        stages[name] = {**p, **(extra or {})}
        bar.update(1)

    add("decode", timed(lambda i: load_image(paths[i % n]), warmup, repeats))
    add("detect", timed(lambda i: rec.detector.detect(decoded[i % n]), warmup, repeats))
    add(
        "align",
        timed(
            lambda i: align_face(decoded[i % n], faces[i % n][0], faces[i % n][1], rec.template),
            warmup,
            repeats,
        ),
    )
    for b in batch_sizes:
        batch = np.stack([crops[i % n] for i in range(b)])
        add(
            f"embed_b{b}",
            timed(lambda i: rec.embed_crops(batch), warmup, max(3, repeats // max(1, b // 8))),
            per=b,
            extra={"batch_size": b},
        )
    add(
        "match",
        timed(lambda i: gal.search(probe, top_k=5), warmup, repeats),
        extra={"gallery_size": gallery_size},
    )

    def e2e(i: int) -> None:
        img = load_image(paths[i % n])
        box, lm = face_of(img)
        e = rec.embed_crops(align_face(img, box, lm, rec.template)[None])
        gal.search(e, top_k=5)

    add("end_to_end", timed(e2e, warmup, repeats))
    bar.close()
    return {
        "backend": rec.embedder_session.backend,
        "device": rec.embedder_session.device,
        "precision": rec.embedder_session.precision,
        "detector_session": {
            k: v for k, v in rec.detector.session.describe().items() if k not in ("inputs", "outputs")
        },
        "embedder_session": {
            k: v for k, v in rec.embedder_session.describe().items() if k not in ("inputs", "outputs")
        },
        "providers": getattr(rec.embedder_session, "providers", None),
        "threads": threads,
        "warmup": warmup,
        "repeats": repeats,
        "images": n,
        "stages": stages,
        "peak_rss_mb": peak_rss_mb(),
    }
