"""YuNet at the image's own size (dynamic-input card) agrees with OpenCV's FaceDetectorYN (same network)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

import facesdk


def test_native_size_yunet_matches_opencv(shared: Path) -> None:
    rec = facesdk.FaceRecognizer(
        detector="yunet-2023mar-dynamic", embedder="mobilefacenet-sirius", backend="onnxruntime"
    )
    model = shared / "models/yunet/yunet_s_dynamic.onnx"
    images = [
        shared / "data/photos/knn_examples/test/kit_with_rose.jpg",
        shared / "data/photos/obama-240p.jpg",
        shared / "data/photos/two_people.jpg",
        min((shared / "data/lfw/images/Tony_Blair").glob("*.jpg")),
    ]
    for p in images:
        img = rec.load(p)
        h, w = img.shape[:2]
        ours = rec.detect(img)
        x, _ = rec.detector.preprocess(img)
        assert max(h, w) <= 1920 and x.shape[2:] == (-(-h // 32) * 32, -(-w // 32) * 32)  # native, padded
        yn = cv2.FaceDetectorYN.create(
            str(model), "", (w, h), rec.detector.score_threshold, rec.detector.nms_threshold, 5000
        )
        _, ref = yn.detect(np.ascontiguousarray(img[:, :, ::-1]))
        ref = np.zeros((0, 15), np.float32) if ref is None else ref
        assert len(ours) == len(ref) >= 1, (p, len(ours), len(ref))
        for d in ours:
            boxes = np.stack([ref[:, 0], ref[:, 1], ref[:, 0] + ref[:, 2], ref[:, 1] + ref[:, 3]], axis=1)
            boxes = np.clip(boxes, 0, [w, h, w, h])  # facesdk clips boxes to the image
            k = int(np.argmin(np.abs(boxes - d.box).sum(1)))
            assert np.abs(boxes[k] - d.box).max() < 2.0
            assert np.abs(ref[k, 4:14].reshape(5, 2) - d.landmarks).max() < 2.0
            assert abs(float(ref[k, 14]) - d.score) < 0.02
