"""SSD box decoding, once for every prior-based family (UltraFace raw heads, TinierSSD).

Centre-size encoding with variances (W. Liu et al., "SSD: Single Shot MultiBox Detector",
ECCV 2016, eq. 2; the ``center_variance``/``size_variance`` form of the Caffe SSD and of
ai8x-training's ``gcxgcy_to_cxcy``):

    cx = g_cx · v_c · w_p + cx_p,   cy = g_cy · v_c · h_p + cy_p,
    w  = exp(g_w · v_s) · w_p,      h  = exp(g_h · v_s) · h_p,

then corners ``(cx ∓ w/2, cy ∓ h/2)``. Priors are ``(cx, cy, w, h)``, normalised 0..1.
"""

from __future__ import annotations

import numpy as np

__all__ = ["decode_ssd_boxes"]


def decode_ssd_boxes(
    offsets: np.ndarray, priors: np.ndarray, center_variance: float = 0.1, size_variance: float = 0.2
) -> np.ndarray:
    """``[P,4]`` offsets ``(g_cx, g_cy, g_w, g_h)`` and ``[P,4]`` priors → ``[P,4]`` x1, y1, x2, y2."""
    g = np.asarray(offsets, np.float32).reshape(-1, 4)
    p = np.asarray(priors, np.float32).reshape(-1, 4)
    cxcy = g[:, :2] * center_variance * p[:, 2:] + p[:, :2]
    wh = np.exp(g[:, 2:] * size_variance) * p[:, 2:]
    return np.concatenate([cxcy - wh / 2, cxcy + wh / 2], axis=1)
