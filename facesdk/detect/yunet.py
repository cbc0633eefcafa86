"""YuNet decoder (OpenCV Zoo face_detection_yunet_2023mar).

Outputs per stride s in (8, 16, 32): ``cls_s`` [1,N,1], ``obj_s`` [1,N,1],
``bbox_s`` [1,N,4], ``kps_s`` [1,N,10] over a grid of (H/s)×(W/s) anchors
(row-major). score = sqrt(cls·obj); centre = (col + dx, row + dy)·s;
size = exp(dw, dh)·s; landmarks = (col + kx, row + ky)·s. Input: BGR float
0–255, NCHW; the image is letterboxed into the model's size. A card with a dynamic input
(``input.dynamic_size``) runs at the image's own size, zero-padded right/bottom to a multiple
of 32 (what OpenCV's ``FaceDetectorYN`` does), after an optional downscale to
``params.max_input_side``.

Small inputs on one thread: with ONNX Runtime and more than one engine thread, a dynamic-size card's
inputs of at most ``params.single_thread_pixels`` (padded) pixels run on a second, single-threaded
session of the same file: for a 256×256 LFW input, waking a second intra-op thread costs more than it
saves (same process, interleaved, load ≈ 5.6: 1.96 ms on 1 thread vs 2.85 ms on 2; 320×320: 3.33 vs
4.66 ms; benchmarks/RESULTS.md, "Throughput"). Both sessions give the same outputs (same graph, same
kernels; ``tests/test_throughput_paths.py``).
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np


from ..backend import Artifact, Backend
from ..errors import ModelFormatError
from ..image import letterbox, resize, to_tensor
from ..zoo import ModelCard
from .base import Detection, FaceDetector
from .nms import nms

__all__ = ["YuNetDetector"]


class YuNetDetector(FaceDetector):
    """YuNet: anchor-free, five landmarks."""

    family = "yunet"

    def __init__(
        self, card: ModelCard, backend: Backend, artifacts: dict[str, Artifact], **kw: Any
    ) -> None:
        super().__init__(card, backend, artifacts, **kw)
        #: padded input pixels up to which the single-threaded session runs (0: never)
        self.single_thread_pixels = 0
        limit = int(self.params.get("single_thread_pixels", 0) or 0)
        load = {k: v for k, v in kw.items() if k not in ("score_threshold", "nms_threshold")}
        threads = load.get("threads") or (
            len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        )
        if card.input.dynamic_size and limit > 0 and backend.name == "onnxruntime" and threads > 1:
            main = artifacts.get("main") or next(iter(artifacts.values()))
            self.sessions["small"] = backend.load(main, **{**load, "threads": 1})
            self.single_thread_pixels = limit

    def run_main(self, tensor: np.ndarray) -> dict[str, np.ndarray]:
        """The main session, or the single-threaded one for a small input (see the module notes)."""
        hw = tensor.shape[2:4] if self.layout == "NCHW" else tensor.shape[1:3]
        pixels = int(hw[0]) * int(hw[1])
        s = self.sessions["small"] if pixels <= self.single_thread_pixels else self.session
        outs = s.run(tensor)
        return {spec.name: o for spec, o in zip(s.outputs, outs)}

    def input_size(self, image: np.ndarray) -> tuple[int, int]:
        if self.card.input.dynamic_size:
            h, w = image.shape[:2]
            return (int(np.ceil(w / 32) * 32), int(np.ceil(h / 32) * 32))
        return self.card.input.size

    def preprocess(self, image: np.ndarray) -> tuple[np.ndarray, dict[str, Any]]:
        spec = self.card.input
        if spec.dynamic_size:
            return self._native(image)
        size = self.input_size(image)
        boxed, scale = letterbox(image, size)
        t = to_tensor(boxed[None], layout=self.layout, color=spec.color, mean=spec.mean, std=spec.std)
        return t, {"scale": scale, "size": size}

    def _native(self, image: np.ndarray) -> tuple[np.ndarray, dict[str, Any]]:
        """Native-size input: optional downscale, then zero padding to a multiple of 32.

        The uint8 pixels are written straight into the zero-padded float tensor, one channel at a
        time, in the card's colour order ((x − mean) / std, the numbers :func:`to_tensor` gives),
        without a float copy of the whole image first.
        """
        spec = self.card.input
        h, w = image.shape[:2]
        scale = 1.0
        cap = int(self.params.get("max_input_side", 0) or 0)
        if cap and max(h, w) > cap:
            scale = cap / max(h, w)
            image = resize(image, (max(1, round(w * scale)), max(1, round(h * scale))))
            h, w = image.shape[:2]
        size = (int(np.ceil(w / 32) * 32), int(np.ceil(h / 32) * 32))
        if spec.color not in ("RGB", "BGR") or image.ndim != 3 or image.shape[2] != 3:
            t = np.zeros(
                (1, 3, size[1], size[0]) if self.layout == "NCHW" else (1, size[1], size[0], 3), np.float32
            )
            x = to_tensor(image[None], layout=self.layout, color=spec.color, mean=spec.mean, std=spec.std)
            if self.layout == "NCHW":
                t[:, :, :h, :w] = x
            else:
                t[:, :h, :w, :] = x
            return t, {"scale": scale, "size": size}
        src = (2, 1, 0) if spec.color == "BGR" else (0, 1, 2)
        mean = np.asarray(spec.mean, np.float32)
        std = np.asarray(spec.std, np.float32)
        if self.layout == "NCHW" and not mean.any() and (std == 1).all():
            # planes first (one uint8 transpose), then one contiguous uint8 → float32 copy per plane
            planes = np.ascontiguousarray(image.transpose(2, 0, 1))
            t = np.empty((1, 3, size[1], size[0]), np.float32)
            t[0, :, :h, :w] = planes[list(src)]
            t[0, :, h:, :] = 0
            t[0, :, :h, w:] = 0
        elif self.layout == "NCHW":
            t = np.zeros((1, 3, size[1], size[0]), np.float32)
            for c in range(3):
                out = t[0, c, :h, :w]
                np.subtract(image[:, :, src[c]], mean[c], out=out)
                if std[c] != 1:
                    np.divide(out, std[c], out=out)
        else:
            t = np.zeros((1, size[1], size[0], 3), np.float32)
            out = t[0, :h, :w, :]
            np.subtract(image[:, :, list(src)], mean, out=out)
            if np.any(std != 1):
                np.divide(out, std, out=out)
        return t, {"scale": scale, "size": size}

    def _anchors(self, w: int, h: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Column, row and stride of every anchor of all strides (cached per input size)."""
        key = (w, h)
        cache = self.__dict__.setdefault("_anchor_cache", {})
        got = cache.get(key)
        if got is None:
            cols, rows, strides = [], [], []
            for s in self.params.get("strides", (8, 16, 32)):
                nc, nr = w // s, h // s
                r, c = np.divmod(np.arange(nr * nc), nc)
                cols.append(c)
                rows.append(r)
                strides.append(np.full(nr * nc, s))
            got = (
                np.concatenate(cols).astype(np.float64),  # float64 as the grid's ints promote to
                np.concatenate(rows).astype(np.float64),
                np.concatenate(strides).astype(np.float64),
            )
            if len(cache) > 64:
                cache.clear()
            cache[key] = got
        return got

    def decode(self, outputs: dict[str, np.ndarray], meta: dict[str, Any]) -> list[Detection]:
        """All strides at once: candidates are picked on ``cls·obj`` before any box is decoded."""
        w, h = meta["size"]
        st = self.params.get("strides", (8, 16, 32))
        cls = np.concatenate([outputs[f"cls_{s}"].reshape(-1) for s in st])
        obj = np.concatenate([outputs[f"obj_{s}"].reshape(-1) for s in st])
        score = np.sqrt(np.clip(cls, 0, 1) * np.clip(obj, 0, 1))
        idx = np.nonzero(score >= self.score_threshold)[0]
        if idx.size == 0:
            return []
        col, row, stride = self._anchors(w, h)
        if len(col) != len(cls):
            raise ModelFormatError(f"YuNet outputs have {len(cls)} anchors, expected {len(col)} for {w}x{h}")
        # map the candidates to (stride, anchor) and gather only their boxes and landmarks
        sizes = np.cumsum([0] + [outputs[f"cls_{s}"].size for s in st])
        part = np.searchsorted(sizes, idx, side="right") - 1
        bbox = np.empty((idx.size, 4), np.float32)
        kps = np.empty((idx.size, 10), np.float32)
        for k, s in enumerate(st):
            sel = part == k
            if sel.any():
                local = idx[sel] - sizes[k]
                bbox[sel] = outputs[f"bbox_{s}"].reshape(-1, 4)[local]
                kps[sel] = outputs[f"kps_{s}"].reshape(-1, 10)[local]
        c, r, s_ = col[idx], row[idx], stride[idx]
        cx = (c + bbox[:, 0]) * s_
        cy = (r + bbox[:, 1]) * s_
        bw = np.exp(bbox[:, 2]) * s_  # exp in float32; × a power of two is exact
        bh = np.exp(bbox[:, 3]) * s_
        boxes = np.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], axis=1).astype(np.float32)
        k5 = kps.reshape(-1, 5, 2)
        lm = np.stack(
            [(k5[:, :, 0] + c[:, None]) * s_[:, None], (k5[:, :, 1] + r[:, None]) * s_[:, None]], axis=2
        ).astype(np.float32)
        scores = score[idx].astype(np.float32)
        keep = nms(boxes, scores, self.nms_threshold, top_k=int(self.params.get("keep_top_k", 750)))
        inv = np.float32(1.0 / meta["scale"])
        boxes, lm, scores = boxes[keep] * inv, lm[keep] * inv, scores[keep]
        return [Detection(box=boxes[j], score=float(scores[j]), landmarks=lm[j]) for j in range(len(keep))]
