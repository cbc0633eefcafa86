"""Precision study: each embedder on every (backend, precision), on the same aligned LFW faces.

Faces are detected once (one detector on ONNX Runtime fp32) and aligned once per embedder; every
(backend, precision) then embeds exactly the same crops, so differences come from the engine and the
precision alone. Per configuration:

* LFW 10-fold verification accuracy (View 2 ``pairs.txt``; threshold chosen on the other nine folds,
  Huang et al. 2007, the standard "unrestricted" protocol) and the mean of the fold thresholds, which is
  what the card records per (backend, precision);
* mean and minimum cosine between its embedding and the ONNX Runtime fp32 embedding of the same crop;
* decisions flipped: pairs whose same/different decision at the ORT fp32 mean fold threshold differs;
* engine milliseconds per crop at batch 1 and 32, measured round-robin in one run (the configurations
  alternate within each repeat, so machine load hits all alike; a short pause before each lets the
  previous engine's spinning worker threads go idle) and given as ratios to ORT fp32.

Embeddings are cached in the shared bench cache (``EmbeddingCache``, one namespace per model, backend,
precision, detector, TTA, artifact sha256 and sha256 of all the aligned crops), so a killed run resumes,
precisions already done are reused, and a changed artifact or aligner never mixes with old rows.
"""

from __future__ import annotations

import hashlib
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from facesdk.errors import ConfigError, FaceSDKError
from facesdk.gallery import l2_normalize
from facesdk.image import load_image, to_tensor

from .cache import EmbeddingCache, FaceRecord, file_sha256
from .datasets import Dataset, PairList
from .metrics import verification_summary
from .protocols import fallback_face, select_center

__all__ = ["DEFAULT_CONFIGS", "run_precision_study"]

log = logging.getLogger(__name__)

DEFAULT_CONFIGS = [
    "onnxruntime/fp32",
    "onnxruntime/int8",
    "openvino/fp32",
    "openvino/bf16",
    "openvino/int8",
    "tflite/fp32",
    "tflite/int8",
]


def _detections(
    ds: Dataset, keys: list[str], detector: str, cache_root: Path, progress: bool
) -> dict[str, Any]:
    """Box, landmarks and image sha256 per key from one ORT fp32 detector run (cached as one npz)."""
    from tqdm.auto import tqdm

    import facesdk
    from facesdk.fileio import atomic_writer

    path = cache_root / "precision-study" / f"detections__{detector}__{ds.name}.npz"
    found: dict[str, Any] = {}
    if path.is_file():
        try:
            with np.load(path, allow_pickle=False) as z:
                for i, k in enumerate(z["keys"]):
                    found[str(k)] = (z["box"][i], z["lm"][i], bool(z["ok"][i]), str(z["sha"][i]))
        except (OSError, ValueError, KeyError) as exc:
            log.warning("re-detecting: unreadable %s (%s)", path, exc)
    todo = [k for k in keys if k not in found]
    if todo:
        rec = facesdk.FaceRecognizer(detector=detector, backend="onnxruntime", tta="none")
        try:
            for n, k in enumerate(tqdm(todo, desc=f"detect ({detector})", disable=not progress)):
                p = ds.path(k)
                img = load_image(p)
                dets = rec.detect(img)
                if dets:
                    d = select_center(dets, img.shape)
                    lm = d.landmarks if d.landmarks is not None else np.zeros((5, 2), np.float32)
                    found[k] = (
                        np.asarray(d.box, np.float32),
                        np.asarray(lm, np.float32),
                        True,
                        file_sha256(p),
                    )
                else:
                    found[k] = (np.zeros(4, np.float32), np.zeros((5, 2), np.float32), False, file_sha256(p))
                if (n + 1) % 1000 == 0 or n + 1 == len(todo):
                    ks = list(found)
                    with atomic_writer(path) as f:
                        np.savez(
                            f,
                            keys=np.array(ks),
                            box=np.stack([found[x][0] for x in ks]),
                            lm=np.stack([found[x][1] for x in ks]),
                            ok=np.array([found[x][2] for x in ks]),
                            sha=np.array([found[x][3] for x in ks]),
                        )
        finally:
            rec.close()
    return found


def _crops(
    rec: Any, ds: Dataset, keys: list[str], det: dict[str, Any], progress: bool
) -> tuple[np.ndarray, int]:
    """Aligned crops of every key for ``rec``'s embedder (fallback box when nothing was detected)."""
    from tqdm.auto import tqdm

    from facesdk.align import align_face
    from facesdk.detect import Detection

    out, fallbacks = [], 0
    for k in tqdm(keys, desc=f"align ({rec.model_id})", disable=not progress):
        img = load_image(ds.path(k))
        box, lm, ok, _ = det[k]
        if not ok:
            box, lm = fallback_face(img.shape, rec.template)
            fallbacks += 1
            out.append(align_face(img, box, lm, rec.template))
        else:
            out.append(rec.align(img, [Detection(box, 1.0, lm)])[0])
    return np.stack(out), fallbacks


def _embed(
    rec: Any, crops: np.ndarray, keys: list[str], det: dict[str, Any], cache: EmbeddingCache, progress: bool
) -> np.ndarray:
    from tqdm.auto import tqdm

    shas = [det[k][3] for k in keys]
    pos = {s: i for i, s in enumerate(shas)}
    missing = cache.missing(shas)
    step = 256
    for s0 in tqdm(range(0, len(missing), step), desc=f"embed {cache.namespace}", disable=not progress):
        part = missing[s0 : s0 + step]
        idx = [pos[s] for s in part]
        emb = rec.embed_crops(crops[idx])
        for s, i, e in zip(part, idx, emb):
            box, lm, ok, _ = det[keys[i]]
            cache.put(s, FaceRecord(e, box, lm, 1.0, not ok, int(ok)))
    cache.flush()
    return cache.matrix(shas)


def _latency(
    recs: dict[str, Any], crops: np.ndarray, batch_sizes: list[int], repeats: int, pause: float = 0.2
) -> dict[str, dict]:
    """Engine ms per crop per batch size, configurations interleaved within each repeat (medians).

    ``pause`` seconds pass before each configuration's timed block: ONNX Runtime's and XNNPACK's worker
    threads keep spinning for a while after a run, and without the pause they take cores from the next
    configuration (a scratch check, dlib ResNet, 2 threads, batch 32, in one process: ORT int8/fp32
    2.04–2.19× without a pause, 2.25–2.42× with 0.2 s, 2.45× when each engine runs in a block of its own).
    """
    tensors = {}
    for label, rec in recs.items():
        sp = rec.embedder_card.input
        tensors[label] = to_tensor(
            crops, layout=rec.embed_layout, color=sp.color, mean=sp.mean, std=sp.std, dtype=sp.dtype
        )
    times: dict[str, dict[int, list[float]]] = {lab: {b: [] for b in batch_sizes} for lab in recs}
    for label, rec in recs.items():  # warm-up: allocations, lazy compilation
        for b in batch_sizes:
            rec.embedder_session.run_batched(tensors[label][:b])
    for _ in range(repeats):
        for b in batch_sizes:
            for label, rec in recs.items():
                x = tensors[label]
                n = max(b, (len(x) // b) * b) if b > 1 else min(len(x), 8)
                time.sleep(pause)
                t0 = time.perf_counter()
                for s0 in range(0, n, b):
                    rec.embedder_session.run_batched(x[s0 : s0 + b])
                times[label][b].append((time.perf_counter() - t0) * 1000.0 / n)
    return {lab: {str(b): float(np.median(v)) for b, v in d.items()} for lab, d in times.items()}


def run_precision_study(
    cfg: dict[str, Any], ds: Dataset, pairs: PairList, cache_root: Path, progress: bool = True
) -> dict[str, Any]:
    """Run the study the config's ``precision_study`` block asks for; return its report section."""
    import facesdk

    ps = dict(cfg.get("precision_study") or {})
    embedders = list(ps.get("embedders") or [cfg["embedder"]])
    configs = list(ps.get("configs") or DEFAULT_CONFIGS)
    detector = str(ps.get("detector") or cfg["detector"])
    threads = int(cfg.get("threads") or 2)
    lat = dict(ps.get("latency") or {})
    batch_sizes = [int(b) for b in lat.get("batch_sizes", [1, 32])]
    if pairs.folds is None:
        raise ConfigError("the precision study needs a protocol with folds (LFW pairs.txt)")
    keys = pairs.images()
    det = _detections(ds, keys, detector, cache_root, progress)
    kpos = {k: i for i, k in enumerate(keys)}
    ia = np.array([kpos[a] for a in pairs.a])
    ib = np.array([kpos[b] for b in pairs.b])
    labels = pairs.same.astype(int)
    rows: list[dict[str, Any]] = []
    skipped: list[dict[str, str]] = []
    for emb_id in embedders:
        recs: dict[str, Any] = {}
        for c in configs:
            backend, _, precision = c.partition("/")
            try:
                recs[c] = facesdk.FaceRecognizer(
                    detector=detector,
                    embedder=emb_id,
                    embedder_backend=backend,
                    detector_backend="onnxruntime",
                    precision=precision,
                    strict=True,
                    batch_size=32,
                    backend_options={"threads": threads},
                )
            except FaceSDKError as exc:
                log.warning("precision study: %s %s skipped: %s", emb_id, c, exc)
                skipped.append({"model": emb_id, "config": c, "reason": f"{type(exc).__name__}: {exc}"})
        if "onnxruntime/fp32" not in recs:
            raise ConfigError("the precision study needs onnxruntime/fp32 as its reference")
        ref_rec = recs["onnxruntime/fp32"]
        crops, fallbacks = _crops(ref_rec, ds, keys, det, progress)
        # the crops' own hash in every cache namespace: a change of the aligner (e.g. another dlib-chip
        # resampler) must not mix embeddings of old crops with those of new ones
        crops_sha = hashlib.sha256(np.ascontiguousarray(crops).data).hexdigest()[:12]
        embs: dict[str, np.ndarray] = {}
        for c, rec in recs.items():
            s = rec.embedder_session
            cache = EmbeddingCache(
                cache_root,
                rec.model_id,
                s.backend,
                s.precision,
                detector,
                # the artifact's sha256 too: a rebuilt int8 file (new recipe) must not reuse old embeddings
                variant=f"precision-study-tta-{rec.tta}-{rec.model_sha256[:12]}-crops-{crops_sha}",
            )
            embs[c] = l2_normalize(_embed(rec, crops, keys, det, cache, progress))
        ref = embs["onnxruntime/fp32"]
        ref_scores = np.einsum("ij,ij->i", ref[ia], ref[ib])
        ref_summary = verification_summary(
            ref_scores, labels, pairs.folds, k=int(cfg.get("folds", 10)), fars=[]
        )
        ref_thr = float(np.mean(ref_summary["fold_thresholds"]))
        rng = np.random.default_rng(0)
        lat_idx = rng.choice(len(crops), size=min(int(lat.get("images", 64)), len(crops)), replace=False)
        ms = _latency(
            recs,
            crops[np.sort(lat_idx)],
            batch_sizes,
            int(lat.get("repeats", 5)),
            float(lat.get("pause", 0.2)),
        )
        for c, rec in recs.items():
            e = embs[c]
            sc = np.einsum("ij,ij->i", e[ia], e[ib])
            summ = (
                ref_summary
                if c == "onnxruntime/fp32"
                else verification_summary(sc, labels, pairs.folds, k=int(cfg.get("folds", 10)), fars=[])
            )
            cos = np.einsum("ij,ij->i", e, ref)
            flips = int(((sc >= ref_thr) != (ref_scores >= ref_thr)).sum())
            s = rec.embedder_session
            row = {
                "model": rec.model_id,
                "config": c,
                "backend": s.backend,
                "precision": s.precision,
                "device": s.device,
                "float_layers": rec.describe()["embedder"].get("float_layers", []),
                "tta": rec.tta,
                "detector": detector,
                "mean_accuracy": summ["mean_accuracy"],
                "std_accuracy": summ["std_accuracy"],
                "mean_fold_threshold": float(np.mean(summ["fold_thresholds"])),
                "cosine_to_ort_fp32_mean": float(cos.mean()),
                "cosine_to_ort_fp32_min": float(cos.min()),
                "decisions_flipped": flips,
                "flip_threshold": ref_thr,
                "pairs": len(sc),
                "ms_per_crop": ms[c],
                "ratio_to_ort_fp32": {b: ms[c][b] / ms["onnxruntime/fp32"][b] for b in ms[c]},
                "no_detection_fallback": fallbacks,
                "crops_sha256": crops_sha,
                "threads": threads,
            }
            rows.append(row)
            log.info(
                "%s %s: acc %.4f cos %.5f/%.5f flips %d ms %s",
                rec.model_id,
                c,
                row["mean_accuracy"],
                row["cosine_to_ort_fp32_mean"],
                row["cosine_to_ort_fp32_min"],
                flips,
                ms[c],
            )
        for rec in recs.values():
            rec.close()
        del crops
    return {
        "detector": detector,
        "configs": configs,
        "rows": rows,
        "skipped": skipped,
        "batch_sizes": batch_sizes,
        "latency": "engine only (Session.run_batched), interleaved with a "
        f"{float(lat.get('pause', 0.2)):g} s pause before each configuration, median",
    }


def render(study: dict[str, Any]) -> list[str]:
    """Markdown lines for the study's table."""
    bs = study.get("batch_sizes", [1, 32])
    head = [
        "model",
        "backend",
        "precision",
        "float layers",
        "LFW 10-fold",
        "mean fold thr",
        "cos mean",
        "cos min",
        "flips",
        *[f"ms/crop b{b}" for b in bs],
        *[f"× ORT fp32 b{b}" for b in bs],
    ]
    out = [
        "## Precision study (same aligned faces for every backend/precision)",
        "",
        f"Detector {study.get('detector')} (ONNX Runtime fp32) once; {study.get('latency')}.",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    for r in study.get("rows", []):
        cells = [
            r["model"],
            r["backend"],
            r["precision"],
            str(len(r.get("float_layers") or [])),
            f"{100 * r['mean_accuracy']:.2f} ± {100 * r['std_accuracy']:.2f} %",
            f"{r['mean_fold_threshold']:.4f}",
            f"{r['cosine_to_ort_fp32_mean']:.5f}",
            f"{r['cosine_to_ort_fp32_min']:.5f}",
            f"{r['decisions_flipped']}/{r['pairs']}",
            *[f"{r['ms_per_crop'][str(b)]:.2f}" for b in bs],
            *[f"{r['ratio_to_ort_fp32'][str(b)]:.2f}" for b in bs],
        ]
        out.append("| " + " | ".join(cells) + " |")
    for s in study.get("skipped", []):
        out.append(f"- not run: {s['model']} {s['config']}: {s['reason']}")
    return out + [""]


def operating_points_toml(report: dict[str, Any], model: str) -> str:
    """``[[operating_points]]`` TOML for ``model``: k-fold best-accuracy thresholds per (backend, precision).

    Each point is the mean of the ten fold thresholds of the study (each chosen on the other nine
    folds), i.e. the bench's cross-validated threshold, with the accuracy it measured.
    """
    st = report.get("precision_study") or {}
    ds = report.get("dataset") or {}
    day = str(report.get("created", ""))[:10]
    out = []
    for r in st.get("rows", []):
        if r["model"] != model:
            continue
        out += [
            "[[operating_points]]",
            'task = "verification"',
            'target = "best-accuracy"',
            f"threshold = {r['mean_fold_threshold']:.4f}",
            f'backend = "{r["backend"]}"',
            f'precision = "{r["precision"]}"',
            f'tta = "{r["tta"]}"',
            f'detector = "{r["detector"]}"',
            f'data = "LFW View 2 pairs.txt, {r["pairs"]} pairs'
            + (f" (limit {ds.get('limit')})" if ds.get("limit") else "")
            + ', faces detected once by the detector above, aligned per the card"',
            (
                'method = "10-fold cross-validation (mean of the fold thresholds, each chosen on the '
                'other folds)"'
            ),
            f"measured = {{ accuracy = {r['mean_accuracy']:.4f}, accuracy_std = {r['std_accuracy']:.4f} }}",
            f'date = "{day}"',
            "",
        ]
    return "\n".join(out)


if __name__ == "__main__":  # python -m facesdk_bench.precision REPORT.json MODEL
    import json
    import sys

    sys.stdout.write(operating_points_toml(json.loads(Path(sys.argv[1]).read_text()), sys.argv[2]))
