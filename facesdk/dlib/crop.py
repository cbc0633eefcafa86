"""dlib's face chip ("dlib crop") in numpy: dlib's ``get_face_chip_details`` + ``extract_image_chip``.

Reproduces ``dlib.get_face_chip(img, shape, size=150, padding=0.25)``
(``dlib/image_transforms/interpolation.h``) for the 5-point shape of
``shape_predictor_5_face_landmarks.dat``:

1. a similarity transform (Umeyama) from dlib's 5-point crop template, padded by
   ``padding`` and scaled to ``size``, onto the landmarks gives the crop's angle and
   scale; the crop rectangle is ``centered_drect`` at the image of the crop centre,
   ``size*scale`` wide (dlib's width-1 convention);
2. when the rectangle is much larger than the crop, dlib first shrinks the image
   with its ``pyramid_down<2>`` 5×5 filter (as many levels as needed) — plain
   bilinear sampling of a big face would alias;
3. every crop pixel is sampled bilinearly (float64 weights, truncated to uint8;
   neighbours outside the image give a black pixel).

Step 3 has two implementations (``method=`` / ``FACESDK_DLIB_CHIP``): ``"exact"``, numpy gathers in
float64, bit-identical to dlib; ``"fast"``, one ``cv2.warpAffine`` (``WARP_INVERSE_MAP``, bilinear) of
the sampled region in float32, framed by NaN so that the outside rule is dlib's, then truncated —
OpenCV quantises sampling positions to 1/32 pixel (``INTER_TAB_SIZE``, OpenCV ``imgproc``
``remap``), so on 421 faces of LFW and ../shared/data/photos 6.9e-6 of the chip values differ, by one
level, and the dlib ResNet embeddings of the two chips have cosine ≥ 0.9999997
(``tests/test_throughput_paths.py::test_fast_dlib_chip_matches_the_exact_one``); ≈ 0.15 vs 1.7 ms CPU
per LFW face. ``"auto"`` (the default) is fast when OpenCV is installed, else exact.

Part order. dlib's 5 points are ``DLIB5_PARTS``: outer and inner corner of the eye with
the larger x, outer and inner corner of the eye with the smaller x, nose base. The core's
5 points (``facesdk.detect.Detection.landmarks``) are: left eye centre, right eye centre,
nose tip, left and right mouth corner (left = smaller x). They are not the same points, so
the ``dlib150`` aligner registered here bridges them: it places a dlib-style face box from
the two eye centres (matched to the mid-points of the eye corners of the shape predictor's
mean shape) and runs dlib's shape predictor (:mod:`facesdk.dlib.shape_predictor`) in that box,
exactly as dlib's own pipeline does with its detector's box. Without landmarks the
detector's box is used directly. See :func:`dlib_box_from_core5`.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ..align import similarity_transform
from ..errors import ConfigError
from .shape_predictor import DLIB5_PARTS

if TYPE_CHECKING:  # pragma: no cover
    from .shape_predictor import ShapePredictor

__all__ = [
    "CHIP_METHODS",
    "DLIB5_TEMPLATE",
    "DLIB5_PARTS",
    "CORE5_TO_DLIB5_EYES",
    "DlibCropDetails",
    "dlib_crop_details",
    "dlib_crop_transform",
    "extract_crop",
    "extract_dlib_crop",
    "dlib_face_crop",
    "pyramid_down2",
    "dlib_box_from_core5",
    "dlib_predictor_rect",
    "dlib150_aligner",
    "dlib150_aligner_many",
    "dlib5_aligner",
]

#: How the chip's bilinear sampling is done (:func:`extract_crop`).
CHIP_METHODS = ("auto", "exact", "fast")

#: dlib's 5-point crop template (unpadded, unit square), in dlib's part order.
DLIB5_TEMPLATE = np.array(
    [
        [0.8595674595992, 0.2134981538014],
        [0.6460604764104, 0.2289674387677],
        [0.1205750620789, 0.2137274526848],
        [0.3340850613712, 0.2290642403242],
        [0.4901123135679, 0.6277975316475],
    ],
    dtype=np.float64,
)

#: Which dlib parts surround each eye of the core order: core 0 (image-left eye) is the
#: mid-point of dlib parts 2 and 3, core 1 (image-right eye) of dlib parts 0 and 1.
CORE5_TO_DLIB5_EYES = {0: (2, 3), 1: (0, 1)}


@dataclass(frozen=True)
class DlibCropDetails:
    """dlib's ``chip_details``: a rotated rectangle in the image and the crop size.

    ``rect`` is a dlib ``drectangle`` (left, top, right, bottom; width = right-left+1).
    """

    rect: tuple[float, float, float, float]
    angle: float
    rows: int
    cols: int


def _check_points(landmarks5: np.ndarray) -> np.ndarray:
    pts = np.asarray(landmarks5, np.float64)
    if pts.shape != (5, 2) or not np.all(np.isfinite(pts)):
        raise ConfigError(f"landmarks must be a finite (5, 2) array, got shape {pts.shape}")
    return pts


def dlib_crop_details(landmarks5: np.ndarray, size: int = 150, padding: float = 0.25) -> DlibCropDetails:
    """``get_face_chip_details`` for dlib's 5-point shape (``DLIB5_PARTS`` order)."""
    pts = _check_points(landmarks5)
    if size <= 0 or padding < 0:
        raise ConfigError(f"size must be > 0 and padding >= 0, got {size}, {padding}")
    crop_pts = (padding + DLIB5_TEMPLATE) / (2 * padding + 1) * size
    m, t = similarity_transform(crop_pts, pts)
    p = m @ np.array([1.0, 0.0])
    angle = math.atan2(p[1], p[0])
    scale = math.hypot(p[0], p[1])
    centre = m @ np.array([size / 2.0, size / 2.0]) + t
    w = size * scale - 1  # centered_drect: width-- / height--
    rect = (centre[0] - w / 2, centre[1] - w / 2, centre[0] + w / 2, centre[1] + w / 2)
    return DlibCropDetails(rect, angle, size, size)


def _rotate(centre: np.ndarray, p: np.ndarray, angle: float) -> np.ndarray:
    ca, sa = math.cos(angle), math.sin(angle)
    d = p - centre
    return np.array([ca * d[0] - sa * d[1], sa * d[0] + ca * d[1]]) + centre


def _corners(rect: tuple[float, float, float, float], angle: float) -> np.ndarray:
    """tl, tr, bl, br corners of ``rect`` rotated by ``angle`` about its centre."""
    l, t, r, b = rect
    c = np.array([(l + r) / 2, (t + b) / 2])
    return np.stack([_rotate(c, np.array(p, np.float64), angle) for p in ((l, t), (r, t), (l, b), (r, b))])


def _rect_down(rect: tuple[float, float, float, float]) -> tuple[float, float, float, float]:
    l, t, r, b = rect
    return (l / 2 - 1.25, t / 2 - 0.75, r / 2 - 1.25, b / 2 - 0.75)


def _area(rect: tuple[float, float, float, float]) -> float:
    l, t, r, b = rect
    if t > b or l > r:
        return 0.0
    return (r - l + 1) * (b - t + 1)


def dlib_crop_transform(landmarks5: np.ndarray, size: int = 150, padding: float = 0.25) -> np.ndarray:
    """2×3 affine matrix mapping crop pixel ``(x, y, 1)`` to image coordinates (no pyramid)."""
    d = dlib_crop_details(landmarks5, size, padding)
    return _crop_to_image(d.rect, d.angle, d.rows, d.cols)


def _crop_to_image(rect: tuple[float, float, float, float], angle: float, rows: int, cols: int) -> np.ndarray:
    tl, tr, bl, _ = _corners(rect, angle)
    # crop (0,0) → tl, (cols-1, 0) → tr, (0, rows-1) → bl  (dlib's find_affine_transform of 3 points)
    ax = (tr - tl) / max(cols - 1, 1)
    ay = (bl - tl) / max(rows - 1, 1)
    return np.array([[ax[0], ay[0], tl[0]], [ax[1], ay[1], tl[1]]], np.float64)


def pyramid_down2(image: np.ndarray) -> np.ndarray:
    """dlib's ``pyramid_down<2>`` on uint8 images: 5×5 [1 4 6 4 1]² filter, keep every other pixel."""
    img = np.asarray(image)
    if img.shape[0] <= 8 or img.shape[1] <= 8:
        return img[:0, :0]
    x = img.astype(np.int32)
    nr, nc = x.shape[:2]
    oc = (nc - 3) // 2
    c0 = np.arange(oc) * 2
    rows = x[:, c0] + 4 * x[:, c0 + 1] + 6 * x[:, c0 + 2] + 4 * x[:, c0 + 3] + x[:, c0 + 4]
    orr = (nr - 3) // 2
    r0 = np.arange(2, 2 + 2 * orr, 2)
    out = rows[r0 - 2] + 4 * rows[r0 - 1] + 6 * rows[r0] + 4 * rows[r0 + 1] + rows[r0 + 2]
    return (out // 256).astype(np.uint8)


def resolve_chip_method(method: str | None) -> str:
    """The chip implementation that runs for ``method`` (None: ``$FACESDK_DLIB_CHIP`` or ``"auto"``):
    ``"fast"`` or ``"exact"``; ``"auto"`` is fast when OpenCV is installed."""
    m = method or os.environ.get("FACESDK_DLIB_CHIP") or "auto"
    if m not in CHIP_METHODS:
        raise ConfigError(f"dlib chip method must be one of {CHIP_METHODS}, not {m!r}")
    if m == "auto":
        return "fast" if _cv2() is not None else "exact"
    if m == "fast" and _cv2() is None:
        raise ConfigError("the 'fast' dlib chip needs OpenCV (pip install 'facesdk[video]')")
    return m


def _cv2() -> Any:
    try:
        import cv2
    except ImportError:  # pragma: no cover - OpenCV is an optional extra
        return None
    return cv2


def _extract_crop_fast(img: np.ndarray, a: np.ndarray, cols: int, rows: int) -> np.ndarray:
    """dlib's bilinear sampling with one ``cv2.warpAffine`` (float32, truncated to uint8).

    The sampled part of the image is framed by one pixel of NaN and so is everything beyond it:
    a crop pixel whose 2×2 neighbourhood leaves the image interpolates a NaN and becomes black, dlib's
    rule. OpenCV quantises the sampling position to 1/32 pixel (``INTER_TAB_SIZE``) and interpolates
    in float32, so a few pixels differ from dlib's float64 result by a level (see the module docstring).
    """
    cv2 = _cv2()
    h, w = img.shape[:2]
    cx = np.array([0.0, cols - 1, 0.0, cols - 1])
    cy = np.array([0.0, 0.0, rows - 1, rows - 1])
    xs = a[0, 0] * cx + a[0, 1] * cy + a[0, 2]
    ys = a[1, 0] * cx + a[1, 1] * cy + a[1, 2]
    shape = (rows, cols) + img.shape[2:]
    if not (np.all(np.isfinite(xs)) and np.all(np.isfinite(ys))):
        return np.zeros(shape, np.uint8)
    # only the part of the image the crop samples (plus its neighbours) is turned into float32
    x0, x1 = max(math.floor(xs.min()) - 1, 0), min(math.ceil(xs.max()) + 2, w)
    y0, y1 = max(math.floor(ys.min()) - 1, 0), min(math.ceil(ys.max()) + 2, h)
    if x1 - x0 < 1 or y1 - y0 < 1:
        return np.zeros(shape, np.uint8)
    nan = float("nan")
    sub = cv2.copyMakeBorder(
        img[y0:y1, x0:x1].astype(np.float32), 1, 1, 1, 1, cv2.BORDER_CONSTANT, value=(nan, nan, nan, nan)
    )
    m = a.copy()
    m[0, 2] -= x0 - 1
    m[1, 2] -= y0 - 1
    out = cv2.warpAffine(
        sub, m, (cols, rows), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
        borderMode=cv2.BORDER_CONSTANT, borderValue=(nan, nan, nan, nan),
    )
    np.nan_to_num(out, copy=False, nan=0.0)
    return out.reshape(shape).astype(np.uint8)  # values are >= 0: truncation as dlib's


def extract_crop(
    image_rgb: np.ndarray, transform: np.ndarray, size: int | tuple[int, int], *, method: str | None = None
) -> np.ndarray:
    """Bilinear sampling as dlib's ``interpolate_bilinear``.

    Crop pixel (x, y) ← image at ``transform @ (x, y, 1)``.

    Weights in float64, result truncated to uint8; a pixel whose 2×2 neighbourhood is not
    entirely inside the image is black. ``method``: ``"exact"`` (this numpy code, bit-identical to
    dlib), ``"fast"`` (one ``cv2.warpAffine``, see :func:`_extract_crop_fast`) or ``"auto"``
    (default, or ``FACESDK_DLIB_CHIP``): fast when OpenCV is installed.
    """
    img = np.asarray(image_rgb)
    if img.ndim not in (2, 3) or img.dtype != np.uint8:
        raise ConfigError(f"image must be uint8 HxW or HxWxC, got {img.dtype} {img.shape}")
    cols, rows = (size, size) if isinstance(size, int) else size
    a = np.asarray(transform, np.float64).reshape(2, 3)
    if resolve_chip_method(method) == "fast":
        return _extract_crop_fast(img, a, cols, rows)
    yy, xx = np.mgrid[0:rows, 0:cols].astype(np.float64)
    px = a[0, 0] * xx + a[0, 1] * yy + a[0, 2]
    py = a[1, 0] * xx + a[1, 1] * yy + a[1, 2]
    left = np.floor(px)
    top = np.floor(py)
    h, w = img.shape[:2]
    ok = (left >= 0) & (top >= 0) & (left + 1 < w) & (top + 1 < h)
    # the four neighbours are gathered (np.take: a row gather several times faster than fancy
    # indexing) as uint8 from the flat image (one index array, three offsets), and only the
    # gathered values are turned into float64: no float copy of the image
    pix = img.reshape(h * w, -1)
    i00 = np.where(ok, top * w + left, 0).astype(np.intp).ravel()
    lr = (px - left).reshape(-1, 1)
    tb = (py - top).reshape(-1, 1)
    tl, tr = np.take(pix, i00, axis=0).astype(np.float64), np.take(pix, i00 + 1, axis=0).astype(np.float64)
    bl, br = (
        np.take(pix, i00 + w, axis=0).astype(np.float64),
        np.take(pix, i00 + w + 1, axis=0).astype(np.float64),
    )
    val = (1 - tb) * ((1 - lr) * tl + lr * tr) + tb * ((1 - lr) * bl + lr * br)
    out = np.where(ok.reshape(-1, 1), np.trunc(val), 0).astype(np.uint8)
    return out.reshape((rows, cols) + img.shape[2:])


def extract_dlib_crop(
    image_rgb: np.ndarray, details: DlibCropDetails, *, method: str | None = None
) -> np.ndarray:
    """dlib's ``extract_image_chip`` with bilinear interpolation and its image pyramid
    (``method``: the bilinear sampling, see :func:`extract_crop`)."""
    img = np.asarray(image_rgb)
    h, w = img.shape[:2]
    rect, angle, rows, cols = details.rect, details.angle, details.rows, details.cols
    n = rows * cols
    if angle == 0 and rows == rect[3] - rect[1] + 1 and cols == rect[2] - rect[0] + 1:
        # no rotation or scaling: a plain (zero-padded) crop
        l, t = int(round(rect[0])), int(round(rect[1]))
        out = np.zeros((rows, cols) + img.shape[2:], np.uint8)
        ys, xs = slice(max(t, 0), min(t + rows, h)), slice(max(l, 0), min(l + cols, w))
        out[ys.start - t : ys.stop - t, xs.start - l : xs.stop - l] = img[ys, xs]
        return out
    # pyramid depth and the part of the image it is built from
    depth, grow = 0, 2.0
    r = _rect_down(rect)
    while _area(r) > n:
        r = _rect_down(r)
        depth += 1
        grow = grow * 2 + 2
    c = _corners(rect, angle)
    bb = (c[:, 0].min() - grow, c[:, 1].min() - grow, c[:, 0].max() + grow, c[:, 1].max() + grow)
    bb = (max(bb[0], 0.0), max(bb[1], 0.0), min(bb[2], w - 1.0), min(bb[3], h - 1.0))
    bl, bt, br, bbm = (
        int(math.floor(v + 0.5)) if v >= 0 else -int(math.floor(-v + 0.5)) for v in bb
    )  # lround
    sub = img[bt : bbm + 1, bl : br + 1]
    rect_s = (rect[0] - bl, rect[1] - bt, rect[2] - bl, rect[3] - bt)
    level = -1
    while _area(_rect_down(rect_s)) > n:
        level += 1
        rect_s = _rect_down(rect_s)
    src = sub
    for _ in range(level + 1):
        src = pyramid_down2(src)
    return extract_crop(src, _crop_to_image(rect_s, angle, rows, cols), (cols, rows), method=method)


def dlib_face_crop(
    image_rgb: np.ndarray,
    landmarks5: np.ndarray,
    size: int = 150,
    padding: float = 0.25,
    *,
    method: str | None = None,
) -> np.ndarray:
    """``dlib.get_face_chip(img, shape, size, padding)`` for a dlib 5-point shape → uint8 crop
    (``method``: ``"exact"``, ``"fast"`` or ``"auto"``, see :func:`extract_crop`)."""
    return extract_dlib_crop(image_rgb, dlib_crop_details(landmarks5, size, padding), method=method)


def dlib_box_from_core5(landmarks5_core: np.ndarray, mean_shape: np.ndarray) -> tuple[int, int, int, int]:
    """A dlib-style face box (left, top, right, bottom) placed from the core's eye centres.

    The eye centres are matched to the mid-points of the eye corners of the shape
    predictor's mean shape (``mean_shape``, box-normalised, dlib order): the box's
    scale comes from the eye distance and its position from the eyes' mid-point.
    """
    pts = _check_points(landmarks5_core)
    ms = np.asarray(mean_shape, np.float64)
    eyes_img = np.stack([pts[0], pts[1]])
    eyes_ref = np.stack([ms[list(CORE5_TO_DLIB5_EYES[k])].mean(0) for k in (0, 1)])
    d_img = np.linalg.norm(eyes_img[1] - eyes_img[0])
    d_ref = np.linalg.norm(eyes_ref[1] - eyes_ref[0])
    if d_img <= 0 or d_ref <= 0:
        raise ConfigError("eye landmarks coincide; cannot place a face box")
    s = d_img / d_ref  # box side (right - left) in pixels
    origin = eyes_img.mean(0) - s * eyes_ref.mean(0)
    left, top = np.floor(origin + 0.5)
    side = float(np.floor(s + 0.5))
    return int(left), int(top), int(left + side), int(top + side)


def dlib_predictor_rect(
    predictor: "ShapePredictor", box: np.ndarray, landmarks5: np.ndarray | None
) -> tuple[float, float, float, float]:
    """The dlib rectangle the shape predictor runs in: placed from the core's eye centres
    (:func:`dlib_box_from_core5`) when there are landmarks, else the detector box
    ``(x1, y1, x2, y2)`` as dlib's inclusive rectangle."""
    if landmarks5 is not None:
        return dlib_box_from_core5(landmarks5, predictor.initial_shape)
    b = np.asarray(box, np.float64).reshape(4)
    return (b[0], b[1], b[2] - 1, b[3] - 1)


def dlib150_aligner(image_rgb: np.ndarray, box: np.ndarray, landmarks5: np.ndarray | None) -> np.ndarray:
    """Aligner for template ``dlib150``: dlib's shape predictor in a dlib-style box, then dlib's crop.

    With core landmarks, the box is placed from the eye centres (:func:`dlib_box_from_core5`);
    without them the detector box ``(x1, y1, x2, y2)`` is used as dlib's rectangle.
    """
    from .shape_predictor import load_default

    sp = load_default()
    shape = sp.predict(image_rgb, dlib_predictor_rect(sp, box, landmarks5))
    return dlib_face_crop(image_rgb, shape, 150, 0.25)


def dlib5_aligner(image_rgb: np.ndarray, box: np.ndarray, landmarks: np.ndarray | None) -> np.ndarray:
    """Aligner ``dlib150:dlib5``: dlib's 150×150 crop straight from dlib-order 5 points (a landmarker's)."""
    if landmarks is None:
        raise ConfigError("dlib crops need 5 landmarks")
    return dlib_face_crop(image_rgb, landmarks, 150, 0.25)


def dlib150_aligner_many(
    images: Sequence[np.ndarray], boxes: np.ndarray, landmarks: Sequence[np.ndarray | None]
) -> np.ndarray:
    """:func:`dlib150_aligner` for many faces: one batched shape-predictor pass
    (:meth:`ShapePredictor.predict_many`, bit-identical to per-face calls), then one crop per face."""
    from .shape_predictor import load_default

    sp = load_default()
    b = np.asarray(boxes, np.float64).reshape(-1, 4)
    rects = np.array([dlib_predictor_rect(sp, bx, lm) for bx, lm in zip(b, landmarks)], np.float64).reshape(
        -1, 4
    )
    shapes = sp.predict_many(images, rects)
    if not len(shapes):
        return np.zeros((0, 150, 150, 3), np.uint8)
    return np.stack([dlib_face_crop(im, s, 150, 0.25) for im, s in zip(images, shapes)])


#: the batched form the streaming pipeline looks for (:func:`facesdk.align.get_batch_aligner`)
dlib150_aligner.many = dlib150_aligner_many  # type: ignore[attr-defined]
