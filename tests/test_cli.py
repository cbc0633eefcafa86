"""The facesdk command: the documented flow, JSON output, one-line errors with exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from facesdk.cli import main


def run(*args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    return subprocess.run(
        [sys.executable, "-m", "facesdk", *args], capture_output=True, text=True, env=env, timeout=300
    )


def test_enroll_folder_then_identify_obama_and_biden(shared: Path, tmp_path: Path) -> None:
    knn = shared / "data/photos/knn_examples"
    g = tmp_path / "people.npz"
    r = run("enroll", "--gallery", str(g), str(knn / "train"), "--json")
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)
    assert set(summary["enrolled"]) == {"alex_lacamoire", "biden", "kit_harington", "obama", "rose_leslie"}
    r = run("--json", "identify", "--gallery", str(g), str(knn / "test/obama_and_biden.jpg"))
    assert r.returncode == 0, r.stderr
    faces = json.loads(r.stdout)[0]["faces"]
    assert {"obama", "biden"} <= {f["name"] for f in faces}
    assert all(len(f["box"]) == 4 and len(f["landmarks"]) == 5 for f in faces)
    r = run("identify", "-g", str(g), str(knn / "test/obama1.jpg"))
    assert r.returncode == 0 and "obama" in r.stdout


def test_enroll_single_name_and_verify(
    shared: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    knn = shared / "data/photos/knn_examples"
    g = tmp_path / "g.npz"
    assert main(["enroll", "-g", str(g), "--name", "Barack", str(knn / "train/obama")]) == 0
    assert "Barack" in capsys.readouterr().out
    assert main(["verify", str(knn / "test/obama1.jpg"), str(knn / "train/obama/obama2.jpg"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["same"] is True


def test_listing_commands(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["backends", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert any(r["name"] == "onnxruntime" and r["available"] for r in rows)
    assert main(["models", "--json"]) == 0
    models = {m["id"]: m for m in json.loads(capsys.readouterr().out)}
    assert models["yunet-2023mar"]["present"] and models["yunet-2023mar"]["license"] == "MIT"
    defaults = {m["id"] for m in models.values() if m["default"]}
    assert defaults == {"mtcnn", "dlib-resnet-v1", "dlib-shape-predictor-5"}
    assert all(models[d]["commercial_safe"] and models[d]["license"] for d in defaults)
    assert main(["models", "--commercial-safe", "--json"]) == 0
    safe = json.loads(capsys.readouterr().out)
    assert all(m["commercial_safe"] for m in safe) and defaults <= {m["id"] for m in safe}
    assert (
        main(
            [
                "detect",
                "--json",
                str(Path(os.environ["FACESDK_MODEL_MIRROR"]).parent / "data/photos/two_people.jpg"),
            ]
        )
        == 0
    )
    assert len(json.loads(capsys.readouterr().out)[0]["faces"]) == 2


@pytest.mark.parametrize(
    "make_args, code, needle",
    [
        (lambda t, s: ["detect", str(t / "missing.jpg")], 3, "not found"),
        (lambda t, s: ["detect", str(t / "corrupt.jpg")], 3, "corrupt"),
        (
            lambda t, s: ["identify", "-g", str(t / "nogallery.npz"), str(s / "data/photos/obama-240p.jpg")],
            7,
            "gallery",
        ),
        (lambda t, s: ["verify", str(t / "blank.png"), str(s / "data/photos/obama-240p.jpg")], 4, "no face"),
        (
            lambda t, s: ["detect", "--backend", "nope", str(s / "data/photos/obama-240p.jpg")],
            6,
            "unknown backend",
        ),
        (
            lambda t, s: ["detect", "--device", "cuda", str(s / "data/photos/obama-240p.jpg")],
            6,
            "not available",
        ),
        (
            lambda t, s: ["detect", "--detector", "nope", str(s / "data/photos/obama-240p.jpg")],
            5,
            "no model card",
        ),
        (
            lambda t, s: ["enroll", "-g", str(t / "g.npz"), str(s / "data/photos/obama-240p.jpg")],
            2,
            "not a folder",
        ),
    ],
)
def test_bad_input_gives_one_line_and_exit_code(
    shared: Path, tmp_path: Path, make_args, code, needle
) -> None:  # type: ignore[no-untyped-def]
    data = (shared / "data/photos/obama-240p.jpg").read_bytes()
    (tmp_path / "corrupt.jpg").write_bytes(data[: len(data) // 2])
    from PIL import Image

    Image.new("RGB", (300, 300), (120, 120, 120)).save(tmp_path / "blank.png")
    r = run(*make_args(tmp_path, shared))
    assert r.returncode == code, (r.returncode, r.stderr)
    err = [ln for ln in r.stderr.splitlines() if ln.startswith("facesdk: error:")]
    assert len(err) == 1 and needle in err[0].lower(), r.stderr
    assert "Traceback" not in r.stderr
