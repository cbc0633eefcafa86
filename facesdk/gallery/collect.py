"""Collecting mode: find the people in a video, an image folder or a camera, and enroll them.

1. Every frame (or every ``step``-th) is detected and each face embedded (``FaceRecognizer``);
   faces that are too small or too blurred are dropped (blur: variance of the Laplacian of the
   grey face crop, Pech-Pacheco et al., "Diatom autofocusing in brightfield microscopy: a
   comparative study", ICPR 2000).
2. The embeddings are clustered with DBSCAN (Ester, Kriegel, Sander & Xu, "A density-based
   algorithm for discovering clusters in large spatial databases with noise", KDD 1996; scikit-learn,
   cosine distance). ``eps`` comes from the sorted k-distance graph, as that paper proposes, at its
   elbow: the point farthest from the chord between the graph's ends (the "Kneedle" knee,
   Satopää et al., "Finding a 'Kneedle' in a haystack", ICDCS workshops 2011).
3. A cluster is kept when it has enough faces, enough pose spread and good quality. Head pose is
   estimated from the five landmarks: yaw from the nose tip's horizontal offset from the eyes'
   midpoint, pitch from its vertical position between the eye line and the mouth line, relative to
   the frontal ArcFace 112×112 template (Deng et al., CVPR 2019) — a coarse geometric estimate
   (degrees via ``atan`` of the offset over an assumed nose depth of 0.6 interocular distances),
   good for telling a spread of poses from a single one, not a head-pose measurement.
4. ``mode="one"`` (one-in-one): the largest good cluster is the one person; ``mode="some"``
   (some-in-one): every good cluster is a person, named ``person_1…`` (largest first), by a list,
   a mapping or a callable (e.g. an interactive prompt). Each is enrolled with one per-image
   template per face (and, optionally, its loose face crop for later re-embedding).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from tqdm.auto import tqdm

from ..errors import ConfigError, ImageError
from ..stream import IMAGE_SUFFIXES, VIDEO_SUFFIXES

if TYPE_CHECKING:  # pragma: no cover
    from . import Gallery
    from ..pipeline import FaceRecognizer

__all__ = [
    "Cluster",
    "CollectResult",
    "CollectedFace",
    "cluster_faces",
    "collect",
    "collect_faces",
    "head_pose",
    "iter_frames",
    "kdistance_eps",
    "register_cli",
    "sharpness",
]

log = logging.getLogger(__name__)

#: Frontal reference from the ArcFace 112×112 template: nose-tip height between eye and mouth lines.
_FRONTAL_NOSE_Y = (71.7366 - 51.5989) / (92.2848 - 51.5989)
_NOSE_DEPTH = 0.6  # assumed nose depth in interocular distances (coarse)


@dataclass
class CollectedFace:
    """One face found while collecting."""

    source: str
    frame: int
    box: np.ndarray
    landmarks: np.ndarray | None
    score: float
    embedding: np.ndarray
    size: float
    sharpness: float
    yaw: float | None
    pitch: float | None
    crop: np.ndarray | None = None
    crop_meta: dict[str, Any] = field(default_factory=dict)

    def meta(self) -> dict[str, Any]:
        """Per-photo metadata stored in the gallery."""
        d: dict[str, Any] = {
            "source": self.source,
            "frame": self.frame,
            "box": [round(float(v), 1) for v in self.box],
            "size": round(self.size, 1),
            "sharpness": round(self.sharpness, 1),
            "collected": True,
        }
        if self.yaw is not None:
            d["yaw"], d["pitch"] = round(self.yaw, 1), round(float(self.pitch or 0.0), 1)
        d.update(self.crop_meta)
        return d


@dataclass
class Cluster:
    """A DBSCAN cluster and why it was kept or not."""

    label: int
    members: list[int]
    yaw_spread: float
    pitch_spread: float
    mean_sharpness: float
    mean_size: float
    good: bool
    reason: str = ""
    name: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "faces": len(self.members),
            "yaw_spread": round(self.yaw_spread, 1),
            "pitch_spread": round(self.pitch_spread, 1),
            "mean_sharpness": round(self.mean_sharpness, 1),
            "mean_size": round(self.mean_size, 1),
            "good": self.good,
            "reason": self.reason,
            "name": self.name,
        }


@dataclass
class CollectResult:
    """Everything collecting found: faces, DBSCAN labels (``-1`` noise), clusters, enrolled names."""

    faces: list[CollectedFace]
    labels: np.ndarray
    eps: float
    clusters: list[Cluster]
    enrolled: dict[str, int] = field(default_factory=dict)
    frames: int = 0
    dropped: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "frames": self.frames,
            "faces": len(self.faces),
            "dropped": self.dropped,
            "eps": round(self.eps, 4),
            "noise": int((self.labels < 0).sum()),
            "clusters": [c.to_dict() for c in self.clusters],
            "enrolled": self.enrolled,
        }


# ---------------------------------------------------------------------- inputs
def iter_frames(
    source: str | os.PathLike | int, *, step: int = 1, max_frames: int | None = None
) -> Iterator[tuple[str, int, np.ndarray]]:
    """Yield ``(source name, frame index, RGB uint8 image)`` from a folder, a video file or a camera index."""
    from ..image import load_image

    if step < 1:
        raise ConfigError("step must be ≥ 1")
    count = 0
    if isinstance(source, int) or (isinstance(source, str) and source.isdigit()):
        yield from _iter_capture(int(source), f"camera:{int(source)}", step, max_frames)
        return
    p = Path(source)
    if p.is_dir():
        files = sorted(q for q in p.rglob("*") if q.is_file() and q.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise ConfigError(f"{p} holds no images")
        for i, f in enumerate(files[::step]):
            if max_frames is not None and count >= max_frames:
                return
            try:
                img = load_image(f)
            except ImageError as exc:
                log.warning("skipping %s: %s", f, exc)
                continue
            count += 1
            yield str(f), i * step, img
        return
    if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES:
        yield from _iter_capture(str(p), str(p), step, max_frames)
        return
    if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES:
        yield str(p), 0, load_image(p)
        return
    raise ConfigError(f"{source} is not an image folder, a video file or a camera index")


def _iter_capture(
    src: int | str, name: str, step: int, max_frames: int | None
) -> Iterator[tuple[str, int, np.ndarray]]:
    try:
        import cv2
    except ImportError:
        raise ConfigError(
            "reading video or a camera needs OpenCV (pip install opencv-python-headless)"
        ) from None
    cap = cv2.VideoCapture(src)
    if not cap.isOpened():
        raise ImageError(f"cannot open video source {name}")
    i = count = 0
    try:
        while max_frames is None or count < max_frames:
            ok, frame = cap.read()
            if not ok:
                break
            if i % step == 0:
                count += 1
                yield name, i, np.ascontiguousarray(frame[:, :, ::-1])
            i += 1
    finally:
        cap.release()


# ---------------------------------------------------------------------- per-face measures
def head_pose(landmarks: np.ndarray | None) -> tuple[float | None, float | None]:
    """Coarse (yaw, pitch) in degrees from five landmarks (see the module docstring); None without them."""
    if landmarks is None:
        return None, None
    lm = np.asarray(landmarks, np.float64).reshape(-1, 2)
    if lm.shape[0] < 5 or not np.isfinite(lm).all():
        return None, None
    le, re_, nose, lmo, rmo = lm[:5]
    eye_mid = (le + re_) / 2
    mouth_mid = (lmo + rmo) / 2
    iod = float(np.linalg.norm(re_ - le))
    if iod < 1e-6:
        return None, None
    ex = (re_ - le) / iod  # eye axis (in-plane roll removed)
    ey = np.array([-ex[1], ex[0]])
    yaw_off = float(np.dot(nose - eye_mid, ex)) / iod
    h = float(np.dot(mouth_mid - eye_mid, ey))
    pitch_off = (float(np.dot(nose - eye_mid, ey)) / h - _FRONTAL_NOSE_Y) if abs(h) > 1e-6 else 0.0
    yaw = float(np.degrees(np.arctan2(yaw_off, _NOSE_DEPTH)))
    pitch = float(np.degrees(np.arctan2(pitch_off * h / iod, _NOSE_DEPTH)))
    return yaw, pitch


def sharpness(gray: np.ndarray) -> float:
    """Variance of the 4-neighbour Laplacian of a grey image (higher = sharper)."""
    g = np.asarray(gray, np.float32)
    if g.ndim == 3:
        g = g @ np.array([0.299, 0.587, 0.114], np.float32)
    if g.shape[0] < 3 or g.shape[1] < 3:
        return 0.0
    lap = g[:-2, 1:-1] + g[2:, 1:-1] + g[1:-1, :-2] + g[1:-1, 2:] - 4 * g[1:-1, 1:-1]
    return float(lap.var())


# ---------------------------------------------------------------------- detect + embed
def collect_faces(
    rec: FaceRecognizer,
    source: str | os.PathLike | int,
    *,
    step: int = 1,
    max_frames: int | None = None,
    min_face: float = 40.0,
    min_sharpness: float = 15.0,
    keep_crops: bool = False,
    progress: bool = False,
) -> tuple[list[CollectedFace], int, dict[str, int]]:
    """Detect and embed every face of every frame; returns (faces, frames read, dropped counts)."""
    from .tools import loose_crop

    faces: list[CollectedFace] = []
    dropped = {"too_small": 0, "blurred": 0}
    frames = 0
    for name, idx, img in tqdm(
        iter_frames(source, step=step, max_frames=max_frames),
        desc="collect",
        disable=not progress,
        unit="frame",
    ):
        frames += 1
        dets = rec.detect(img)
        keep, crops, cmetas, sizes, sharp = [], [], [], [], []
        for d in dets:
            size = float(min(d.box[2] - d.box[0], d.box[3] - d.box[1]))
            if size < min_face:
                dropped["too_small"] += 1
                continue
            crop, cmeta = loose_crop(img, d.box, d.landmarks, size=160, margin=0.4)
            c0 = int(160 * 0.4 / 1.8)
            s = sharpness(crop[c0 : 160 - c0, c0 : 160 - c0])
            if s < min_sharpness:
                dropped["blurred"] += 1
                continue
            keep.append(d)
            crops.append(crop)
            cmetas.append(cmeta)
            sizes.append(size)
            sharp.append(s)
        if not keep:
            continue
        emb = rec.embed_crops(rec.align(img, keep))
        for d, e, crop, cm, size, s in zip(keep, emb, crops, cmetas, sizes, sharp):
            yaw, pitch = head_pose(d.landmarks)
            faces.append(
                CollectedFace(
                    source=name,
                    frame=idx,
                    box=np.asarray(d.box, np.float32),
                    landmarks=d.landmarks,
                    score=float(d.score),
                    embedding=e,
                    size=size,
                    sharpness=s,
                    yaw=yaw,
                    pitch=pitch,
                    crop=crop if keep_crops else None,
                    crop_meta=cm if keep_crops else {},
                )
            )
    return faces, frames, dropped


# ---------------------------------------------------------------------- clustering
def kdistance_eps(emb: np.ndarray, k: int) -> float:
    """DBSCAN ``eps`` (cosine distance) at the elbow of the sorted k-distance graph."""
    from sklearn.neighbors import NearestNeighbors

    n = len(emb)
    if n <= k:
        raise ConfigError(f"need more than {k} faces to estimate eps, got {n}")
    nn = NearestNeighbors(n_neighbors=k + 1, metric="cosine").fit(emb)
    dist, _ = nn.kneighbors(emb)
    kd = np.sort(dist[:, k])
    x = np.linspace(0.0, 1.0, n)
    y = (kd - kd[0]) / max(kd[-1] - kd[0], 1e-12)
    # distance of each point below the chord from (0, 0) to (1, 1): the knee of a convex rising curve
    i = int(np.argmax(x - y))
    return float(kd[i])


def cluster_faces(
    emb: np.ndarray, *, min_samples: int = 3, eps: float | None = None
) -> tuple[np.ndarray, float]:
    """DBSCAN labels (``-1`` = noise) and the eps used."""
    from sklearn.cluster import DBSCAN

    emb = np.asarray(emb, np.float32)
    if eps is None:
        eps = kdistance_eps(emb, min_samples)
    if not 0 < eps < 2:
        raise ConfigError(f"eps must be a cosine distance in (0, 2), got {eps}")
    labels = DBSCAN(eps=eps, min_samples=min_samples, metric="cosine").fit_predict(emb)
    return labels.astype(np.int64), float(eps)


def _spread(v: list[float]) -> float:
    return float(np.percentile(v, 90) - np.percentile(v, 10)) if len(v) >= 2 else 0.0


def _judge_clusters(
    faces: list[CollectedFace], labels: np.ndarray, min_faces: int, min_pose_spread: float
) -> list[Cluster]:
    """One :class:`Cluster` per DBSCAN label (noise excluded), largest first, with ``good`` and the
    reason when it is not (too few faces, too little pose spread)."""
    clusters = []
    for lab in sorted(set(labels.tolist()) - {-1}):
        m = np.flatnonzero(labels == lab).tolist()
        yaws = [faces[i].yaw for i in m if faces[i].yaw is not None]
        pitches = [faces[i].pitch for i in m if faces[i].pitch is not None]
        c = Cluster(
            label=lab,
            members=m,
            yaw_spread=_spread(yaws),
            pitch_spread=_spread(pitches),  # type: ignore[arg-type]
            mean_sharpness=float(np.mean([faces[i].sharpness for i in m])),
            mean_size=float(np.mean([faces[i].size for i in m])),
            good=True,
        )
        if len(m) < min_faces:
            c.good, c.reason = False, f"{len(m)} faces < {min_faces}"
        elif max(c.yaw_spread, c.pitch_spread) < min_pose_spread:
            c.good, c.reason = (
                False,
                f"pose spread {max(c.yaw_spread, c.pitch_spread):.1f}° < {min_pose_spread}°",
            )
        clusters.append(c)
    clusters.sort(key=lambda c: -len(c.members))
    return clusters


def _name_clusters(good: list[Cluster], faces: list[CollectedFace], names: Any) -> None:
    """Name the good clusters in rank order (list, rank → name mapping, callable or ``person_<k>``);
    a cluster left without a name is not good."""
    for rank, c in enumerate(good):
        if callable(names):
            c.name = names(c, [faces[i] for i in c.members])
        elif isinstance(names, dict):
            c.name = names.get(rank)
        elif names is not None:
            c.name = list(names)[rank] if rank < len(names) else None
        else:
            c.name = f"person_{rank + 1}"
        if c.name is None:
            c.good, c.reason = False, "no name given"


def _enroll_clusters(
    gallery: Gallery, clusters: list[Cluster], faces: list[CollectedFace], keep_crops: bool
) -> dict[str, int]:
    """Add every good, named cluster's faces to ``gallery``; returns faces enrolled per name."""
    enrolled: dict[str, int] = {}
    for c in clusters:
        if not c.good or not c.name:
            continue
        fs = [faces[i] for i in c.members]
        crops = np.stack([f.crop for f in fs]) if keep_crops and all(f.crop is not None for f in fs) else None
        gallery.add_many(
            [c.name] * len(fs), np.stack([f.embedding for f in fs]), metas=[f.meta() for f in fs], crops=crops
        )
        enrolled[c.name] = len(fs)
    return enrolled


def collect(
    rec: FaceRecognizer,
    source: str | os.PathLike | int,
    gallery: Gallery | None = None,
    *,
    mode: str = "some",
    names: Sequence[str]
    | dict[int, str]
    | Callable[[Cluster, list[CollectedFace]], str | None]
    | None = None,
    min_faces: int = 5,
    min_samples: int = 3,
    eps: float | None = None,
    min_pose_spread: float = 0.0,
    min_face: float = 40.0,
    min_sharpness: float = 15.0,
    step: int = 1,
    max_frames: int | None = None,
    keep_crops: bool = False,
    progress: bool = False,
) -> CollectResult:
    """Collect faces from ``source``, cluster them, and enroll the good clusters into ``gallery``.

    Args:
        mode: ``"one"`` (one-in-one: the largest good cluster is the single person) or ``"some"``
            (some-in-one: every good cluster is a person).
        names: names in cluster order (largest first), a mapping cluster rank (0-based) → name,
            or a callable ``(cluster, faces) -> name | None`` (None skips the cluster). Default
            ``person_1``, ``person_2``…; for ``mode="one"`` a single name.
        min_faces: faces a cluster needs to be enrolled.
        min_pose_spread: degrees of yaw or pitch spread (10th–90th percentile) a cluster needs.
        min_face / min_sharpness: per-face quality gates (pixels, Laplacian variance).
        gallery: where to enroll (None: only cluster and report).
    """
    if mode not in ("one", "some"):
        raise ConfigError("mode must be 'one' or 'some'")
    faces, frames, dropped = collect_faces(
        rec,
        source,
        step=step,
        max_frames=max_frames,
        min_face=min_face,
        min_sharpness=min_sharpness,
        keep_crops=keep_crops,
        progress=progress,
    )
    if len(faces) <= min_samples:
        return CollectResult(faces, np.full(len(faces), -1), float("nan"), [], {}, frames, dropped)
    emb = np.stack([f.embedding for f in faces])
    labels, used_eps = cluster_faces(emb, min_samples=min_samples, eps=eps)
    clusters = _judge_clusters(faces, labels, min_faces, min_pose_spread)
    good = [c for c in clusters if c.good]
    if mode == "one":
        for c in good[1:]:
            c.good, c.reason = False, "one-in-one: not the largest cluster"
        good = good[:1]
    _name_clusters(good, faces, names)
    result = CollectResult(faces, labels, used_eps, clusters, {}, frames, dropped)
    if gallery is not None:
        gallery.check_compatible(rec.model_id, rec.embedding_size, rec.model_sha256)
        result.enrolled = _enroll_clusters(gallery, clusters, faces, keep_crops)
    log.info(
        "collected %d faces in %d frames: %d clusters (%d good), eps %.3f",
        len(faces),
        frames,
        len(clusters),
        sum(c.good for c in clusters),
        used_eps,
    )
    return result


# ---------------------------------------------------------------------- CLI
def _cmd_collect(args: Any) -> int:
    import json
    import sys

    from ..cli import _recognizer

    rec = _recognizer(args)
    gallery = rec.open_gallery(args.gallery, keep_crops=args.keep_crops) if args.gallery else None
    names: Any = None
    if args.names:
        names = [n.strip() for n in args.names.split(",") if n.strip()]
    elif args.prompt:

        def names(c: Cluster, fs: list[CollectedFace]) -> str | None:
            sys.stderr.write(
                f"cluster of {len(c.members)} faces (e.g. {fs[0].source} frame {fs[0].frame}); "
                "name (empty = skip): "
            )
            sys.stderr.flush()
            line = sys.stdin.readline().strip()
            return line or None

    source: Any = int(args.source) if args.source.isdigit() else args.source
    res = collect(
        rec,
        source,
        gallery,
        mode=args.mode,
        names=names,
        min_faces=args.min_faces,
        min_samples=args.min_samples,
        eps=args.eps,
        min_pose_spread=args.min_pose_spread,
        min_face=args.min_face,
        min_sharpness=args.min_sharpness,
        step=args.step,
        max_frames=args.max_frames,
        keep_crops=args.keep_crops,
        progress=not args.json,
    )
    if gallery is not None:
        gallery.save()
    d = res.to_dict()
    d["gallery"] = args.gallery
    if args.json:
        sys.stdout.write(json.dumps(d, indent=2) + "\n")
    else:
        lines = [
            (
                f"{res.frames} frame(s), {len(res.faces)} face(s), eps {res.eps:.3f}, "
                f"{int((res.labels < 0).sum())} noise"
            )
        ]
        for c in res.clusters:
            state = f"enrolled as {c.name}" if c.good and c.name in res.enrolled else f"skipped ({c.reason})"
            lines.append(
                f"  cluster {c.label}: {len(c.members)} faces, yaw spread {c.yaw_spread:.0f}°, {state}"
            )
        sys.stdout.write("\n".join(lines) + "\n")
    return 0


def register_cli(subparsers: Any, common: Any) -> None:
    """Add ``facesdk collect``."""
    p = subparsers.add_parser(
        "collect",
        parents=[common],
        help="find the people in a video / folder / camera and enroll them (DBSCAN)",
    )
    p.add_argument("source", help="video file, image folder, or camera index (0, 1, …)")
    p.add_argument("--gallery", "-g", help="gallery to enroll into (path or store URI); omit to only report")
    p.add_argument(
        "--mode",
        choices=["one", "some"],
        default="some",
        help="one-in-one (a single person) or some-in-one (several people), default some",
    )
    p.add_argument("--names", help="comma-separated names, largest cluster first (default person_1, …)")
    p.add_argument("--prompt", action="store_true", help="ask a name for each good cluster on the terminal")
    p.add_argument("--min-faces", type=int, default=5)
    p.add_argument("--min-samples", type=int, default=3, help="DBSCAN min_samples (and k of the k-distance)")
    p.add_argument("--eps", type=float, help="DBSCAN eps (cosine distance); default: k-distance elbow")
    p.add_argument("--min-pose-spread", type=float, default=0.0, help="degrees of yaw/pitch spread required")
    p.add_argument("--min-face", type=float, default=40.0, help="smallest face side in pixels")
    p.add_argument("--min-sharpness", type=float, default=15.0, help="smallest Laplacian variance")
    p.add_argument("--step", type=int, default=1, help="use every STEP-th frame")
    p.add_argument("--max-frames", type=int)
    p.add_argument("--keep-crops", action="store_true", help="keep face crops (allows `gallery migrate`)")
    p.set_defaults(func=_cmd_collect)
