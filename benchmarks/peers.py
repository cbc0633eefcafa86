"""Peer implementations side by side (clearly labelled as the peer's, not facesdk's).

* OpenCV ``cv2.FaceDetectorYN`` on the same YuNet ONNX file: detection latency
  and box/landmark agreement with facesdk's YuNet decoder.
* OpenCV DNN (``cv2.dnn.readNetFromONNX``) running the same embedder ONNX file
  on facesdk's crops: an independent runtime for the parity table.
* dlib (only when the ``dlib`` package is importable): its 128-d ResNet
  embedder through ``face_recognition_models``.

Each function returns ``None`` (with a reason logged) when the peer is absent.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from facesdk.image import letterbox, load_image, to_tensor

from .latency import percentiles, timed

__all__ = ["opencv_available", "opencv_yunet_compare", "opencv_dnn_embedder", "dlib_status"]

log = logging.getLogger(__name__)


def opencv_available() -> str | None:
    """OpenCV's version, or None when ``cv2`` is not importable."""
    try:
        import cv2
    except ImportError:
        return None
    return str(cv2.__version__)


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    x1, y1 = max(a[0], b[0]), max(a[1], b[1])
    x2, y2 = min(a[2], b[2]), min(a[3], b[3])
    inter = max(0.0, x2 - x1) * max(0.0, y2 - y1)
    ua = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / ua) if ua > 0 else 0.0


def opencv_yunet_compare(
    rec: Any,
    model_path: Path,
    images: Sequence[Path],
    *,
    warmup: int = 3,
    repeats: int = 20,
    score_threshold: float | None = None,
    nms_threshold: float | None = None,
) -> dict[str, Any] | None:
    """Compare OpenCV's FaceDetectorYN (peer) with facesdk's YuNet on the same model and images."""
    ver = opencv_available()
    if ver is None:
        log.info("peer OpenCV FaceDetectorYN skipped: cv2 not installed")
        return None
    import cv2

    st = float(score_threshold if score_threshold is not None else rec.detector.score_threshold)
    nt = float(nms_threshold if nms_threshold is not None else rec.detector.nms_threshold)
    imgs = [load_image(p) for p in images]
    bgr = [np.ascontiguousarray(im[:, :, ::-1]) for im in imgs]
    det = cv2.FaceDetectorYN.create(str(model_path), "", (320, 320), st, nt, 5000)

    def peer_detect(img: np.ndarray) -> np.ndarray:
        det.setInputSize((img.shape[1], img.shape[0]))
        _, faces = det.detect(img)
        return np.zeros((0, 15), np.float32) if faces is None else faces

    ious, lm_err, counts_equal = [], [], 0
    for im, b in zip(imgs, bgr):
        ours = rec.detector.detect(im)
        theirs = peer_detect(b)
        counts_equal += int(len(ours) == len(theirs))
        if ours and len(theirs):
            t = theirs[np.argmax(theirs[:, 14])]
            tb = np.array([t[0], t[1], t[0] + t[2], t[1] + t[3]])
            o = ours[0]
            ious.append(_iou(o.box, tb))
            if o.landmarks is not None:
                lm_err.append(float(np.abs(o.landmarks - t[4:14].reshape(5, 2)).mean()))
    # the same 640x640 letterboxed input facesdk feeds the network: isolates the decoders
    same_iou, same_lm = [], []
    for im in imgs:
        ours = rec.detector.detect(im)
        size = (
            rec.detector.input_size(im)
            if hasattr(rec.detector, "input_size")
            else tuple(rec.detector_card.input.size)
        )
        boxed, scale = letterbox(im, size)
        det.setInputSize((boxed.shape[1], boxed.shape[0]))
        _, theirs = det.detect(np.ascontiguousarray(boxed[:, :, ::-1]))
        if ours and theirs is not None and len(theirs):
            t = theirs[np.argmax(theirs[:, 14])] / scale
            tb = np.array([t[0], t[1], t[0] + t[2], t[1] + t[3]])
            same_iou.append(_iou(ours[0].box, tb))
            if ours[0].landmarks is not None:
                same_lm.append(float(np.abs(ours[0].landmarks - t[4:14].reshape(5, 2)).mean()))
    n = len(imgs)
    ms_peer = timed(lambda i: peer_detect(bgr[i % n]), warmup, repeats)
    ms_ours = timed(lambda i: rec.detector.detect(imgs[i % n]), warmup, repeats)
    return {
        "peer": f"OpenCV {ver} cv2.FaceDetectorYN (peer implementation)",
        "model": str(Path(model_path).name),
        "images": n,
        "same_face_count": counts_equal,
        "top_box_mean_iou": float(np.mean(ious)) if ious else None,
        "top_box_min_iou": float(np.min(ious)) if ious else None,
        "landmark_mean_abs_px": float(np.mean(lm_err)) if lm_err else None,
        "same_input_top_box_mean_iou": float(np.mean(same_iou)) if same_iou else None,
        "same_input_landmark_mean_abs_px": float(np.mean(same_lm)) if same_lm else None,
        "peer_latency": percentiles(ms_peer),
        "facesdk_latency": {
            **percentiles(ms_ours),
            "backend": rec.detector.session.backend,
            "device": rec.detector.session.device,
        },
        "note": "peer runs at the image's own size; facesdk letterboxes to the card's 640x640 input",
    }


def opencv_dnn_embedder(rec: Any, model_path: Path) -> Callable[[np.ndarray], np.ndarray] | None:
    """An embed function running the embedder ONNX with OpenCV DNN (peer), same preprocessing."""
    if opencv_available() is None:
        return None
    import cv2

    try:
        net = cv2.dnn.readNetFromONNX(str(model_path))
    except Exception as exc:  # OpenCV may not support every ONNX op
        log.info("OpenCV DNN cannot load %s: %s", model_path, exc)
        return None
    spec = rec.embedder_card.input

    def embed(crops: np.ndarray) -> np.ndarray:
        outs = []
        for i in range(0, len(crops), 32):
            t = to_tensor(
                crops[i : i + 32],
                layout=spec.layout,
                color=spec.color,
                mean=spec.mean,
                std=spec.std,
                dtype=spec.dtype,
            )
            net.setInput(np.ascontiguousarray(t, np.float32))
            outs.append(np.asarray(net.forward(), np.float32).reshape(len(t), -1))
        return np.concatenate(outs)

    return embed


def dlib_status() -> dict[str, Any]:
    """Whether the dlib peer can run here."""
    try:
        import dlib  # noqa: F401
    except ImportError:
        return {"peer": "dlib", "available": False, "reason": "dlib is not installed (pip install dlib)"}
    try:
        import face_recognition_models  # noqa: F401
    except ImportError:
        return {"peer": "dlib", "available": False, "reason": "face_recognition_models is not installed"}
    return {"peer": "dlib", "available": True}
