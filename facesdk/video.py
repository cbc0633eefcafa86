"""Video input and output for the streaming pipeline (OpenCV ``VideoCapture`` / ``VideoWriter``).

OpenCV is optional: ``pip install 'facesdk[video]'`` (opencv-python-headless). It is imported
only when a video is read or written, so ``import facesdk`` stays light.

Frames come out as RGB uint8 arrays with their index and timestamp (seconds, from the
container's position when it reports one, else ``index / fps``). With ``every=N`` only every
N-th frame is decoded: the others are skipped with ``grab()`` (demuxed, not converted).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import BackendUnavailableError, ConfigError, ImageDecodeError, ImageError

__all__ = ["VideoFrame", "VideoWriter", "iter_frames", "video_info"]

log = logging.getLogger(__name__)


def _cv2() -> Any:
    try:
        import cv2
    except ImportError as exc:
        raise BackendUnavailableError(
            "video needs OpenCV: pip install 'facesdk[video]' (opencv-python-headless)"
        ) from exc
    return cv2


@dataclass
class VideoFrame:
    """One decoded frame: RGB uint8 image, frame index, timestamp in seconds."""

    index: int
    timestamp: float
    image: np.ndarray


def _open(path: str | os.PathLike) -> Any:
    cv2 = _cv2()
    p = Path(path)
    if not p.is_file():
        raise ImageError(f"video file not found: {p}")
    cap = cv2.VideoCapture(str(p))
    if not cap.isOpened():
        cap.release()
        raise ImageDecodeError(f"{p}: OpenCV cannot open this video")
    return cap


def video_info(path: str | os.PathLike) -> dict[str, Any]:
    """Frames per second, frame count and size as the container reports them."""
    cv2 = _cv2()
    cap = _open(path)
    try:
        return {
            "fps": float(cap.get(cv2.CAP_PROP_FPS) or 0.0),
            "frames": int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0),
            "width": int(cap.get(cv2.CAP_PROP_FRAME_WIDTH) or 0),
            "height": int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT) or 0),
        }
    finally:
        cap.release()


def iter_frames(
    path: str | os.PathLike, *, every: int = 1, max_frames: int | None = None, start: int = 0
) -> Iterator[VideoFrame]:
    """Decode every ``every``-th frame of a video (from frame ``start``), at most ``max_frames`` of them.

    Raises:
        ImageError: the file does not exist; ImageDecodeError: OpenCV cannot open it.
        BackendUnavailableError: OpenCV is not installed.
    """
    if every < 1:
        raise ConfigError("every must be >= 1")
    cv2 = _cv2()
    cap = _open(path)
    try:
        fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
        i, n = 0, 0
        while max_frames is None or n < max_frames:
            take = i >= start and (i - start) % every == 0
            if not cap.grab():
                break
            if take:
                ok, bgr = cap.retrieve()
                if not ok or bgr is None:
                    log.warning("%s: frame %d could not be decoded; stopping", path, i)
                    break
                pos = float(cap.get(cv2.CAP_PROP_POS_MSEC) or 0.0) / 1000.0
                ts = i / fps if fps > 0 else pos
                if bgr.ndim == 2:
                    bgr = np.repeat(bgr[:, :, None], 3, axis=2)
                yield VideoFrame(i, ts, np.ascontiguousarray(bgr[:, :, 2::-1]))
                n += 1
            i += 1
    finally:
        cap.release()


class VideoWriter:
    """Write RGB frames to a video file (``mp4v`` for .mp4/.m4v/.mov, ``MJPG`` for .avi).

    The file is written to a temporary name beside the target and moved into place on
    :meth:`close` (an interrupted run leaves no half-written video under the real name).
    """

    def __init__(self, path: str | os.PathLike, fps: float, size: tuple[int, int] | None = None) -> None:
        self.path = Path(path)
        self.fps = float(fps) if fps and fps > 0 else 25.0
        self.size = size
        self._w: Any = None
        self._tmp = self.path.with_name(f".{self.path.stem}.partial{self.path.suffix}")
        self.frames = 0

    def _start(self, w: int, h: int) -> None:
        cv2 = _cv2()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        four = "MJPG" if self.path.suffix.lower() == ".avi" else "mp4v"
        self._w = cv2.VideoWriter(str(self._tmp), cv2.VideoWriter_fourcc(*four), self.fps, (w, h))
        if not self._w.isOpened():
            raise ImageError(f"OpenCV cannot write video {self.path} (codec {four})")
        self.size = (w, h)

    def write(self, rgb: np.ndarray) -> None:
        """Append one RGB uint8 frame (resized to the first frame's size if it differs)."""
        img = np.asarray(rgb)
        if self._w is None:
            self._start(img.shape[1], img.shape[0])
        if (img.shape[1], img.shape[0]) != self.size:
            from .image import resize

            img = resize(img, self.size)  # type: ignore[arg-type]
        self._w.write(np.ascontiguousarray(img[:, :, ::-1]))
        self.frames += 1

    def close(self) -> Path:
        """Finish the file and move it into place."""
        if self._w is not None:
            self._w.release()
            self._w = None
            from .fileio import commit_temp

            commit_temp(self._tmp, self.path)
        return self.path

    def __enter__(self) -> VideoWriter:  # noqa: PYI034
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        if exc_type is not None and self._w is not None:
            self._w.release()
            self._w = None
            self._tmp.unlink(missing_ok=True)
            return
        self.close()
