"""MAX78000 photo mode: the window tiling and the merge of boxes across windows (host side, no emulator),
and the identification/recall helpers of benchmarks/photo_mode_max78000.py."""

from __future__ import annotations

import numpy as np
import pytest

from facesdk.detect.tinierssd import TinierSSDDetector, merge_window_boxes
from facesdk.errors import ConfigError


class _Card:
    class input:  # noqa: N801 - a stand-in for the card's input spec
        size = (168, 224)


def _detector(**params) -> TinierSSDDetector:
    """A detector without a backend session: only the photo-mode settings (as __init__ reads them)."""
    det = TinierSSDDetector.__new__(TinierSSDDetector)
    det.card = _Card()
    det.configure_photo_mode({"photo_mode": True, **params})
    return det


@pytest.mark.parametrize("size", [(2000, 1428), (427, 240), (240, 427), (100, 60), (630, 374)])
def test_windows_cover_the_photo_at_every_scale(size):
    w, h = size
    det = _detector()
    wins = det.windows(w, h)
    assert wins
    heights = sorted({wh for _x, _y, _w, wh in wins}, reverse=True)
    # scales: the biggest 3:4 window that fits, then each sqrt(2) smaller, down to 1/4 of the shorter side
    assert heights[0] == round(min(h, w / 0.75))
    for a, b in zip(heights, heights[1:]):
        assert abs(a / b - 2**0.5) < 0.02
    assert heights[-1] >= max(64, 0.25 * min(w, h)) / 2**0.5 - 1
    for hh in heights:
        sub = [(x, y, ww, wh) for x, y, ww, wh in wins if wh == hh]
        ww = sub[0][2]
        assert abs(ww / hh - 0.75) < 0.02
        if ww <= w and hh <= h:  # inside the photo, and every pixel in some window of this scale
            assert all(0 <= x and 0 <= y and x + ww <= w + 1 and y + hh <= h + 1 for x, y, _a, _b in sub)
            cover = np.zeros((h, w), bool)
            for x, y, a, b in sub:
                cover[y : y + b, x : x + a] = True
            assert cover.all()
            # neighbours overlap by half a window (the grid steps by 1 - photo_overlap)
            xs = sorted({x for x, *_ in sub})
            assert all(d <= ww * 0.5 + 1 for d in np.diff(xs))


def test_window_parameters_are_checked():
    assert len(_detector(photo_overlap=0.75).windows(800, 600)) > len(_detector().windows(800, 600))
    assert len(_detector(photo_min_window=0.125).windows(800, 600)) > len(_detector().windows(800, 600))
    for bad in (
        {"photo_scale_step": 1.0},
        {"photo_overlap": 0.95},
        {"photo_min_window": 0},
        {"photo_min_votes": 0},
    ):
        with pytest.raises(ConfigError):
            _detector(**bad)


def test_merge_keeps_faces_seen_by_several_windows():
    # face A seen by windows 0, 1, 2 (slightly shifted boxes); face B by window 3 only; C: a part of A
    # (a small window sees the mouth of a big face as a face) and D: a lone false box
    boxes = np.array(
        [
            [100, 100, 200, 230],
            [102, 98, 203, 228],
            [97, 104, 198, 233],
            [400, 100, 480, 200],
            [130, 170, 170, 220],
            [600, 600, 650, 660],
        ],
        np.float32,
    )
    scores = np.array([0.8, 0.85, 0.7, 0.75, 0.86, 0.65], np.float32)
    source = np.array([0, 1, 2, 3, 4, 5])
    keep = merge_window_boxes(boxes, scores, source, nms_threshold=0.3, min_votes=1)
    assert keep == [1, 3, 5]  # NMS keeps A's best box; C lies inside A and goes; best first
    keep2 = merge_window_boxes(boxes, scores, source, nms_threshold=0.3, min_votes=2)
    assert keep2 == [1]  # only A is seen by two or more windows
    # boxes of one window count once
    keep3 = merge_window_boxes(boxes, scores, np.array([0, 0, 0, 3, 4, 5]), min_votes=2)
    assert keep3 == []
    # two neighbouring faces that overlap a little are both kept
    pair = np.array([[0, 0, 100, 130], [80, 0, 180, 130]], np.float32)
    assert sorted(merge_window_boxes(pair, np.array([0.8, 0.7], np.float32), np.array([0, 1]))) == [0, 1]


def test_bench_matching_rules():
    from facesdk_bench.photo_mode_max78000 import PROBE_LABELS, match

    ref = [[100, 100, 200, 230], [400, 100, 480, 200]]
    got = [[90, 95, 215, 240], [405, 130, 470, 230], [0, 0, 10, 10]]
    idx, extra = match(ref, got, "iou")
    assert idx == [0, -1] and extra == 2  # the second box overlaps B with IoU < 0.5
    idx, extra = match(ref, got, "centre")
    assert idx == [0, 1] and extra == 1  # but each centre lies in the other box
    assert all(lo < hi for labels in PROBE_LABELS.values() for lo, hi, _n in labels)
