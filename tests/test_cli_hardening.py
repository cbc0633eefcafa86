"""The facesdk command line, hardened (issue 11): per-file errors, folders, stdin, argument checks,
one-line usage errors, --jsonl, verify --exit-code, one warning per message, bench defaults.
In-process (``facesdk.cli.main``) to stay fast."""

from __future__ import annotations

import io
import json
import shutil
import sys
from pathlib import Path

import pytest

from facesdk.cli import main


@pytest.fixture(scope="module")
def photos(shared: Path) -> Path:
    return shared / "data/photos"


@pytest.fixture(scope="module")
def gallery(photos: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    g = tmp_path_factory.mktemp("g") / "g.npz"
    assert main(["enroll", "-g", str(g), "--name", "obama", str(photos / "knn_examples/train/obama")]) == 0
    return g


def _stdin(monkeypatch: pytest.MonkeyPatch, data: bytes) -> None:
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data)))


def test_one_bad_file_among_many_is_reported_and_the_rest_still_run(
    photos: Path, tmp_path: Path, capsys
) -> None:
    bad = tmp_path / "corrupt.jpg"
    data = (photos / "obama-240p.jpg").read_bytes()
    bad.write_bytes(data[: len(data) // 3])
    args = [
        str(photos / "two_people.jpg"),
        str(tmp_path / "missing.jpg"),
        str(bad),
        str(photos / "obama-240p.jpg"),
    ]
    assert main(["detect", "--jsonl", *args]) == 3  # the first error's exit code, at the end
    out, err = capsys.readouterr()
    rows = [json.loads(line) for line in out.splitlines()]
    assert [r["image"] for r in rows] == args
    assert len(rows[0]["faces"]) == 2 and len(rows[3]["faces"]) == 1
    assert rows[1]["error"]["type"] == "ImageError" and rows[2]["error"]["type"] == "ImageDecodeError"
    assert len(err.strip().splitlines()) == 2 and "Traceback" not in err


def test_folder_and_stdin_inputs(photos: Path, gallery: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    folder = tmp_path / "imgs"
    folder.mkdir()
    for name in ("two_people.jpg", "obama-240p.jpg"):
        shutil.copy(photos / name, folder / name)
    (folder / "notes.txt").write_text("not an image")
    assert main(["detect", "--json", str(folder)]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [Path(r["image"]).name for r in rows] == ["obama-240p.jpg", "two_people.jpg"]
    assert main(["identify", "--json", "-g", str(gallery), str(folder)]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert any(f["name"] == "obama" for r in rows for f in r["faces"])
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["detect", str(empty)]) == 2
    assert "no images" in capsys.readouterr().err
    _stdin(monkeypatch, (photos / "two_people.jpg").read_bytes())
    assert main(["detect", "--json", "-"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert len(rows) == 1 and len(rows[0]["faces"]) == 2
    _stdin(monkeypatch, (photos / "knn_examples/test/obama1.jpg").read_bytes())
    assert main(["verify", "--json", "-", str(photos / "obama-240p.jpg")]) == 0
    assert json.loads(capsys.readouterr().out)["same"] is True


@pytest.mark.parametrize(
    "argv",
    [
        ["identify", "-g", "x.npz", "--top-k", "0", "a.jpg"],
        ["identify", "-g", "x.npz", "--top-k", "-1", "a.jpg"],
        ["identify", "-g", "x.npz", "--top-k", "three", "a.jpg"],
        ["--threshold", "5", "detect", "a.jpg"],
        ["verify", "--threshold", "nan", "a.jpg", "b.jpg"],
        ["detect"],
        ["nonsense-command"],
        ["verify", "only-one.jpg"],
    ],
)
def test_argument_errors_are_one_line(argv: list[str], capsys) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("facesdk") and "error" in err, err


def test_verify_exit_code_and_jsonl(photos: Path, capsys) -> None:
    a, b = str(photos / "knn_examples/test/obama1.jpg"), str(photos / "knn_examples/test/kit_with_rose.jpg")
    assert main(["verify", "--jsonl", a, b]) == 0  # documented: different people is not an error
    assert json.loads(capsys.readouterr().out.strip())["same"] is False
    assert main(["verify", "--exit-code", a, b]) == 1
    assert "different people" in capsys.readouterr().out
    assert main(["verify", "--exit-code", a, str(photos / "obama-240p.jpg")]) == 0


def test_no_strict_fallback_warning_is_printed_once(photos: Path) -> None:
    """Regression: one fallback warning per session (four for MTCNN + dlib) on stderr."""
    import subprocess

    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "facesdk",
            "--no-strict",
            "--device",
            "cuda",
            "detect",
            str(photos / "obama-240p.jpg"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    assert len([ln for ln in r.stderr.splitlines() if "falling back" in ln]) == 1, r.stderr


def test_bench_defaults_are_the_recognizers(capsys) -> None:
    from facesdk.pipeline import DEFAULT_DETECTOR, DEFAULT_EMBEDDER
    from facesdk_bench.runner import DEFAULTS

    assert (DEFAULTS["detector"], DEFAULTS["embedder"]) == (DEFAULT_DETECTOR, DEFAULT_EMBEDDER)
    assert main(["bench", "--help"]) == 0
    out = capsys.readouterr().out
    assert "--detector" in out and "--embedder" in out
