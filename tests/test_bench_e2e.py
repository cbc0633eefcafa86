"""End to end: `facesdk bench` on LFW pairsDevTest (--limit) with onnxruntime; resumable cache; CLI errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from facesdk.cli import main
from facesdk_bench.datasets import LFWDataset
from facesdk_bench.protocols import ImageEmbedder, fallback_face


@pytest.fixture(scope="module")
def bench_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("bench-cache")


@pytest.fixture(scope="module")
def devtest_run(
    shared: Path, bench_cache: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[dict, Path]:
    out = tmp_path_factory.mktemp("bench-out")
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = main(
            [
                "bench",
                "--config",
                str(Path(__file__).resolve().parents[1] / "benchmarks/configs/devtest.yaml"),
                "--root",
                str(shared / "data" / "lfw"),
                "--protocol",
                "devtest",
                "--backends",
                "onnxruntime",
                "--limit",
                "200",
                "--threads",
                "2",
                "--cache",
                str(bench_cache),
                "--out",
                str(out),
                "--json",
            ]
        )
    assert rc == 0
    return json.loads(buf.getvalue()), out


def test_devtest_report_files_and_accuracy(devtest_run: tuple[dict, Path]) -> None:
    rep, out = devtest_run
    for name in ("report.md", "report.json", "roc.png", "det.png", "tiers.png", "latency.png"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    assert (out / "roc.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert rep["dataset"]["pairs"] == 200
    assert 0.9 < rep["mean_accuracy"] <= 1.0
    row = rep["rows"][0]
    assert (row["backend"], row["device"], row["precision"], row["model"]) == (
        "onnxruntime",
        "cpu",
        "fp32",
        "mobilefacenet-sirius",
    )
    assert row["genuine"] == 100 and len(row["fold_thresholds"]) == 10
    assert set(row["tiers"]) == {"high-high", "low-high"}
    # degraded probes are harder, but not random
    assert (
        0.6 < row["tiers"]["low-high"]["mean_accuracy"] <= row["tiers"]["high-high"]["mean_accuracy"] + 0.02
    )
    emb = row["embedding"]["high"]
    assert emb["images"] == emb["computed"] + emb["cached"] and "no_detection_fallback" in emb
    lat = rep["latency"][0]
    assert {"decode", "detect", "align", "embed_b1", "match", "end_to_end"} <= set(lat["stages"])
    assert lat["embedder_session"]["backend"] == "onnxruntime"
    assert rep["peers"] and "peer implementation" in rep["peers"][0]["peer"]
    on_file = json.loads((out / "report.json").read_text())
    assert on_file["mean_accuracy"] == pytest.approx(rep["mean_accuracy"])
    assert "onnxruntime/fp32" in on_file["curves"]
    md = (out / "report.md").read_text()
    assert "| mobilefacenet-sirius | onnxruntime | fp32 |" in md and "![roc.png](roc.png)" in md


def test_rerun_uses_cache(devtest_run: tuple[dict, Path], shared: Path, bench_cache: Path, capsys) -> None:
    rep, _ = devtest_run
    rc = main(
        [
            "bench",
            "--dataset",
            "lfw",
            "--root",
            str(shared / "data" / "lfw"),
            "--protocol",
            "devtest",
            "--backends",
            "ort",
            "--limit",
            "200",
            "--tiers",
            "high-high,low-high",
            "--cache",
            str(bench_cache),
            "--detector",
            "yunet-2023mar",
            "--embedder",
            "mobilefacenet-sirius",
            "--json",
        ]
    )
    assert rc == 0
    again = json.loads(capsys.readouterr().out)
    emb = again["rows"][0]["embedding"]
    assert emb["high"]["computed"] == 0 and emb["low"]["computed"] == 0
    assert again["mean_accuracy"] == pytest.approx(rep["mean_accuracy"])


def test_interrupted_embedding_resumes(shared: Path, tmp_path: Path) -> None:
    from facesdk.pipeline import FaceRecognizer

    ds = LFWDataset(shared / "data" / "lfw")
    keys = ds.pairs("devtest").images()[:8]

    class Flaky(LFWDataset):
        def path(self, key: str) -> Path:
            if key == keys[5]:
                raise KeyboardInterrupt  # as if the user pressed Ctrl-C on the 6th image
            return super().path(key)

    flaky = Flaky(shared / "data" / "lfw")
    rec = FaceRecognizer(backend="onnxruntime", backend_options={"threads": 1}, batch_size=4)
    try:
        emb = ImageEmbedder(rec, ds, tmp_path, progress=False)
        shas = {k: emb.sha(k) for k in keys}
        emb2 = ImageEmbedder(rec, flaky, tmp_path, batch_size=2, progress=False)
        emb2._sha.update(shas)  # hashed already, so the interruption happens while embedding
        with pytest.raises(KeyboardInterrupt):
            emb2.embed(keys)
        done = ImageEmbedder(rec, ds, tmp_path, progress=False)
        # images 1-4 were embedded (two batches of 2) and flushed to disk; image 5 was still pending
        assert len(done.cache("high")) == 4
        recs = done.embed(keys)
        assert done.stats["high"].computed == 4 and done.stats["high"].cached == 4
        e = np.stack([recs[k].emb for k in keys])
        assert np.allclose(np.linalg.norm(e, axis=1), 1.0, atol=1e-4)
    finally:
        rec.close()


def test_fallback_box_is_central() -> None:
    box, lm = fallback_face((250, 250, 3), "arcface112")
    assert np.allclose(box, [67, 80, 175, 187])
    assert lm.shape == (5, 2) and (box[0] < lm[:, 0]).all() and (lm[:, 0] < box[2]).all()


def test_cli_errors(shared: Path, tmp_path: Path, capsys) -> None:
    # missing dataset root: one-line error, exit code of ConfigError (2)
    assert main(["bench", "--dataset", "lfw", "--root", str(tmp_path / "nope")]) == 2
    assert "not a directory" in capsys.readouterr().err
    assert main(["bench", "--dataset", "lfw", "--root", str(shared / "data" / "lfw"), "--limit", "1"]) == 2
    assert main(["bench", "--config", str(tmp_path / "none.yaml")]) == 2
    bad = tmp_path / "bad.yaml"
    bad.write_text("dataset: lfw\nwhatever: 1\n")
    assert main(["bench", "--config", str(bad)]) == 2
    assert "unknown config keys" in capsys.readouterr().err
    # an unknown backend is reported as not run; nothing ran -> non-zero exit
    rc = main(
        [
            "bench",
            "--dataset",
            "lfw",
            "--root",
            str(shared / "data" / "lfw"),
            "--protocol",
            "devtest",
            "--backends",
            "nosuchengine",
            "--limit",
            "20",
            "--cache",
            str(tmp_path / "c"),
            "--json",
        ]
    )
    assert rc == 6
    rep = json.loads(capsys.readouterr().out)
    assert rep["rows"] == [] and "nosuchengine" in rep["skipped"][0]["reason"]
    assert main(["bench", "--protocol", "nonsense"]) == 2  # a one-line usage error, not a SystemExit
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
