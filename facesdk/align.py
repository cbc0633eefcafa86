"""Five-point face alignment: Umeyama similarity transform to an embedder's template.

Points are ordered: image-left eye, image-right eye, nose tip, image-left mouth
corner, image-right mouth corner (``facesdk.detect.Detection.landmarks``).

Templates are card data: an embedder card's ``[alignment]`` table (points and crop
size, :class:`facesdk.zoo.AlignmentTemplate`) under the card's ``template`` name. Aligners
that are algorithms rather than a template (dlib's face chip, the ai8x FaceID crop) come
from the ``facesdk_aligners`` hook (:func:`facesdk.plugins.aligners`).

Similarity transform: S. Umeyama, "Least-squares estimation of transformation parameters
between two point patterns", IEEE TPAMI 13(4), 1991 (eqs. 34-43, with the reflection fix).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Callable, Union

import numpy as np
from PIL import Image

from .errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    from .zoo import AlignmentTemplate

__all__ = [
    "ARCFACE_112",
    "estimate_similarity",
    "similarity_transform",
    "similarity_matrices",
    "warp_affine",
    "warp_face",
    "get_aligner",
    "get_batch_aligner",
    "align_face",
    "template_points",
    "landmarks_from_box",
]

#: ArcFace / InsightFace 112×112 five-point template: the canonical frame of the landmark bridge
#: (:mod:`facesdk.landmarks`, whose fitted weights live in it). Embedders get their template from
#: their card (``mobilefacenet-sirius`` carries these same points as ``arcface112``).
ARCFACE_112 = np.array(
    [
        [38.2946, 51.6963],
        [73.5318, 51.5014],
        [56.0252, 71.7366],
        [41.5493, 92.3655],
        [70.7299, 92.2041],
    ],
    dtype=np.float32,
)

#: A custom aligner: ``func(image_rgb, box[4], landmarks5 | None) -> crop``.
Aligner = Callable[[np.ndarray, np.ndarray, "np.ndarray | None"], np.ndarray]
#: A template by name (looked up in the model cards) or as card data.
TemplateRef = Union[str, "AlignmentTemplate"]


def get_aligner(name: str) -> Aligner | None:
    """The aligner a plugin registered for ``name`` (``facesdk_aligners`` hook), if any."""
    from .plugins import aligners

    return aligners().get(name)


#: Optional batched form of an aligner, attached to it as ``aligner.many``:
#: ``many(images, boxes [N,4], landmarks list) -> [N,h,w,3]`` with one image per face (the same
#: array may repeat); it must give what N calls of the aligner give (the streaming pipeline uses it).
BatchAligner = Callable[[Sequence[np.ndarray], np.ndarray, Sequence["np.ndarray | None"]], np.ndarray]


def get_batch_aligner(name: str) -> BatchAligner | None:
    """The batched form (``.many``) of the aligner registered for ``name``, if it has one."""
    a = get_aligner(name)
    return getattr(a, "many", None) if a is not None else None


def template_points(template: TemplateRef) -> tuple[np.ndarray, tuple[int, int]]:
    """Points ``(K, 2)`` and output size (w, h) of a template: card data, or a name looked up in the cards."""
    from . import zoo

    if isinstance(template, zoo.AlignmentTemplate):
        return np.asarray(template.points, np.float32), template.size
    known = {c.alignment.name: c.alignment for c in zoo.list_cards() if c.alignment is not None}
    if template not in known:
        names = ", ".join(sorted(known)) or "none"
        raise ConfigError(f"unknown alignment template {template!r} (templates in cards: {names})")
    t = known[template]
    return np.asarray(t.points, np.float32), t.size


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Least-squares similarity ``dst ≈ M @ src + t``: ``(M [2,2], t [2])`` in float64.

    Umeyama (1991) as dlib's ``find_similarity_transform`` computes it (dlib's shape predictor
    relies on these exact numbers): the reflection fix flips the smaller singular value, and
    coincident source points give scale 1 rather than an error. The one implementation of the
    5-point similarity in facesdk; :func:`estimate_similarity` is its checked 2×3 form.
    """
    src = np.asarray(src, np.float64)
    dst = np.asarray(dst, np.float64)
    n = len(src)
    mf, mt = src.mean(0), dst.mean(0)
    sf, st = src - mf, dst - mt
    sigma_from = float((sf**2).sum()) / n
    cov = st.T @ sf / n
    u, d, vt = np.linalg.svd(cov)
    s = np.eye(2)
    det = np.linalg.det(cov)
    if det < 0 or (det == 0 and np.linalg.det(u) * np.linalg.det(vt) < 0):
        if d[1] < d[0]:
            s[1, 1] = -1
        else:
            s[0, 0] = -1
    r = u @ s @ vt
    c = 1.0 if sigma_from == 0 else float(np.trace(np.diag(d) @ s)) / sigma_from
    m = c * r
    return m, mt - m @ mf


def similarity_matrices(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """The ``M`` of :func:`similarity_transform` for one ``src`` and a stack of ``dst`` ``[N,P,2]``
    (float64, batched SVD; the same arithmetic face by face)."""
    src = np.asarray(src, np.float64)
    dst = np.asarray(dst, np.float64)
    n = src.shape[0]
    mf, mt = src.mean(0), dst.mean(1)
    sf, st = src - mf, dst - mt[:, None, :]
    sigma_from = float((sf**2).sum()) / n
    cov = np.einsum("kpi,pj->kij", st, sf) / n
    u, d, vt = np.linalg.svd(cov)
    det = np.linalg.det(cov)
    flip = (det < 0) | ((det == 0) & (np.linalg.det(u) * np.linalg.det(vt) < 0))
    s = np.repeat(np.eye(2)[None], len(cov), axis=0)
    second = flip & (d[:, 1] < d[:, 0])
    s[second, 1, 1] = -1
    s[flip & ~second, 0, 0] = -1
    r = u @ s @ vt
    if sigma_from == 0:
        c = np.ones(len(cov))
    else:
        c = np.einsum("ki,kii->k", d, s) / sigma_from
    return c[:, None, None] * r


def estimate_similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity transform (rotation, uniform scale, translation) mapping src → dst.

    :func:`similarity_transform` with input checks; returns a 2×3 matrix.
    """
    src = np.asarray(src, dtype=np.float64).reshape(-1, 2)
    dst = np.asarray(dst, dtype=np.float64).reshape(-1, 2)
    if src.shape != dst.shape or src.shape[0] < 2:
        raise ConfigError("similarity estimation needs two equal sets of at least 2 points")
    if ((src - src.mean(0)) ** 2).sum() / len(src) < 1e-12:
        raise ConfigError("degenerate landmarks: all points coincide")
    m, t = similarity_transform(src, dst)
    return np.concatenate([m, t[:, None]], axis=1)


def warp_affine(image: np.ndarray, matrix: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Warp an RGB uint8 image by a 2×3 image→output matrix, bilinear, zero border."""
    a = np.vstack([matrix, [0.0, 0.0, 1.0]])
    inv = np.linalg.inv(a)
    # PIL maps output pixel centres by (x, y) -> inv; half-pixel conventions match cv2.warpAffine
    # when the matrix is applied to pixel indices, so shift by 0.5 on both sides.
    shift = np.array([[1, 0, 0.5], [0, 1, 0.5], [0, 0, 1]])
    unshift = np.array([[1, 0, -0.5], [0, 1, -0.5], [0, 0, 1]])
    inv_pil = shift @ inv @ unshift
    data = tuple(inv_pil[:2].ravel())
    out = Image.fromarray(image).transform(size, Image.AFFINE, data=data, resample=Image.BILINEAR)
    return np.asarray(out)


def warp_face(image: np.ndarray, landmarks: np.ndarray, template: TemplateRef = "arcface112") -> np.ndarray:
    """Align one face: similarity transform of its 5 landmarks onto ``template``, then warp."""
    pts, size = template_points(template)
    m = estimate_similarity(landmarks, pts)
    return warp_affine(image, m, size)


def landmarks_from_box(box: np.ndarray, template: TemplateRef = "arcface112") -> np.ndarray:
    """Approximate 5 landmarks for a box-only detector by placing the template in the box.

    Crude (no pose information); used only when the detector gives no landmarks.
    """
    pts, (w, h) = template_points(template)
    x1, y1, x2, y2 = [float(v) for v in box]
    # The template face spans roughly the central 70 % of the crop horizontally.
    rel = (pts - np.array([w, h]) * 0.5) / np.array([w * 0.78, h * 0.78])
    c = np.array([(x1 + x2) / 2, (y1 + y2) / 2 + 0.05 * (y2 - y1)])
    return (c + rel * np.array([x2 - x1, y2 - y1])).astype(np.float32)


def align_face(
    image: np.ndarray, box: np.ndarray, landmarks: np.ndarray | None, template: TemplateRef = "arcface112"
) -> np.ndarray:
    """Crop one face for an embedder: a registered aligner for ``template``, else a 5-point warp.

    Box-only detections get template landmarks placed in the box (:func:`landmarks_from_box`).
    """
    if isinstance(template, str):
        custom = get_aligner(template)
        if custom is not None:
            return custom(image, box, landmarks)
    if isinstance(template, str) and ":" in template:
        raise ConfigError(f"no aligner for {template!r} (template:point-set)")
    if landmarks is None:
        landmarks = landmarks_from_box(box, template)
    return warp_face(image, landmarks, template)
