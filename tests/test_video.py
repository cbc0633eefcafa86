"""Video input (per-frame results with timestamps) and annotated output, on a clip made from LFW photos."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import facesdk
from facesdk.errors import ImageError
from facesdk.video import VideoWriter, iter_frames, video_info

PEOPLE = ["Colin_Powell", "George_W_Bush", "Tony_Blair", "Serena_Williams"]
FPS = 10.0


@pytest.fixture(scope="module")
def rec() -> facesdk.FaceRecognizer:
    return facesdk.FaceRecognizer(
        detector="yunet-2023mar", embedder="mobilefacenet-sirius", backend="onnxruntime"
    )


@pytest.fixture(scope="module")
def clip(shared: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str], dict[str, Path]]:
    """12 frames: each person's second photo shown 3 frames long; the first photos are for enrolment."""
    root = shared / "data/lfw/images"
    out = tmp_path_factory.mktemp("video") / "lfw_clip.mp4"
    truth, enrol = [], {}
    with VideoWriter(out, FPS) as w:
        for p in PEOPLE:
            first, second = sorted((root / p).glob("*.jpg"))[:2]
            enrol[p] = first
            img = facesdk.load_image(second)
            for _ in range(3):
                w.write(img)
                truth.append(p)
    return out, truth, enrol


def test_frames_timestamps_and_identities(
    rec: facesdk.FaceRecognizer, clip: tuple[Path, list[str], dict[str, Path]]
) -> None:
    path, truth, enrol = clip
    info = video_info(path)
    assert info["frames"] == len(truth) and (info["width"], info["height"]) == (250, 250)
    frames = list(iter_frames(path, every=5))
    assert [f.index for f in frames] == [0, 5, 10]
    assert np.allclose([f.timestamp for f in frames], [0.0, 0.5, 1.0])
    g = rec.new_gallery()
    for name, f in enrol.items():
        rec.enroll(name, f, gallery=g)
    res = list(rec.identify_many(path, gallery=g, every=2))
    assert [r.frame for r in res] == list(range(0, len(truth), 2))
    assert np.allclose([r.timestamp for r in res], [i / FPS for i in range(0, len(truth), 2)])
    for r in res:
        best = max(r.faces, key=lambda f: f.area)
        assert best.match.name == truth[r.frame], (r.frame, best.match)
    with pytest.raises(ImageError):
        list(iter_frames(path.with_name("nope.mp4")))


def test_cli_identify_video_every_and_annotate(
    rec: facesdk.FaceRecognizer, clip: tuple[Path, list[str], dict[str, Path]], tmp_path: Path
) -> None:
    path, truth, enrol = clip
    g = rec.new_gallery()
    for name, f in enrol.items():
        rec.enroll(name, f, gallery=g)
    gpath = g.save(tmp_path / "g.npz")
    still = enrol[PEOPLE[0]]
    out = tmp_path / "annotated"
    cmd = [
        sys.executable,
        "-m",
        "facesdk",
        "--detector",
        "yunet-2023mar",
        "--embedder",
        "mobilefacenet-sirius",
        "--json",
        "identify",
        "-g",
        str(gpath),
        str(path),
        str(still),
        "--every",
        "5",
        "--annotate",
        str(out),
    ]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
    assert r.returncode == 0, r.stderr
    rows = json.loads(r.stdout)
    vid = [x for x in rows if "frame" in x]
    assert [x["frame"] for x in vid] == [0, 5, 10] and [x["timestamp"] for x in vid] == [0.0, 0.5, 1.0]
    assert [x["faces"][0]["name"] for x in vid] == [truth[0], truth[5], truth[10]]
    assert rows[-1]["image"] == str(still) and rows[-1]["faces"][0]["name"] == PEOPLE[0]
    assert video_info(out / "lfw_clip.annotated.mp4")["frames"] == 3
    drawn = facesdk.load_image(out / f"{still.stem}.jpg")
    assert drawn.shape == (250, 250, 3)
    diff = np.abs(drawn.astype(int) - facesdk.load_image(still).astype(int)).max(axis=2)
    assert (diff > 100).sum() > 200  # boxes and a label were drawn
