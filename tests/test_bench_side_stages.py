"""Every RESULTS.md figure comes from ``facesdk bench --config`` (#8 item 1): the configs it names exist
and parse, and each stage that replaced a side script or a test-only measurement runs end to end on a
tiny subset of real data (its shipped config with smaller options)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from facesdk.cli import main

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "benchmarks" / "configs"


def _run_config(
    name: str, tmp_path: Path, top: dict[str, Any] | None = None, **options: Any
) -> dict[str, Any]:
    """Run ``benchmarks/configs/<name>.yaml`` with its stage section updated by ``options`` (and its top-level
    keys by ``top``); the stage's result."""
    from facesdk_bench.runner import load_config

    cfg = yaml.safe_load((CONFIGS / f"{name}.yaml").read_text())
    load_config(CONFIGS / f"{name}.yaml")  # the shipped file parses as it is
    (stage,) = cfg["stages"]
    cfg[stage] = {**cfg[stage], **options}
    cfg.update(top or {})
    tmp_path.mkdir(parents=True, exist_ok=True)
    small = tmp_path / f"{name}.yaml"
    small.write_text(yaml.safe_dump(cfg))
    out = tmp_path / "out"
    assert main(["bench", "--config", str(small), "--out", str(out), "--no-progress"]) == 0
    rep = json.loads((out / "report.json").read_text())
    assert rep["stages"] == [stage] and f"## {stage}" in (out / "report.md").read_text()
    return rep["results"][stage]["result"]


def test_every_config_named_in_results_exists_and_parses() -> None:
    from facesdk_bench.runner import load_config, merge_overrides

    text = (REPO / "benchmarks" / "RESULTS.md").read_text()
    named = sorted(set(re.findall(r"--config\s+benchmarks/configs/([\w.@-]+\.yaml)", text)))
    assert len(named) >= 20
    for n in named:
        assert (CONFIGS / n).is_file(), n
        cfg = load_config(CONFIGS / n)
        if cfg.get("protocol") != "openset" and not cfg.get("root"):
            merge_overrides(cfg)  # stage names known, sections valid
    # no figure is attributed to a side script any more
    assert not re.search(r"python -m facesdk_bench\.(?!precision )\w+", text)
    assert "pytest tests/" not in text


def test_max7800x_kat_stage(tmp_path: Path, shared: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FACESDK_AI8X_DIR", str(shared / "ai8x"))
    res = _run_config("max7800x-kat", tmp_path)
    r = res["projects"]["faceid_112"]
    assert r["words"] == 16 and r["differing"] == 0 and r["passed"]


def _git_ok() -> bool:
    if shutil.which("git") is None:
        return False
    try:
        return (
            subprocess.run(
                ["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, timeout=30
            ).returncode
            == 0
        )
    except (OSError, subprocess.TimeoutExpired):
        return False


@pytest.mark.skipif(not _git_ok(), reason="the baseline emulator is read from git history")
def test_max7800x_vs_baseline_stage(tmp_path: Path, shared: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The working tree's emulator against HEAD's, read from git: the same outputs, both timed."""
    monkeypatch.setenv("FACESDK_AI8X_DIR", str(shared / "ai8x"))
    res = _run_config("max7800x-emulator-b745ef1", tmp_path, baseline="HEAD", candidate=None, runs=1)
    assert res["outputs_identical"] and res["steps"] == 2 and res["versions"]["candidate"] == "working tree"
    assert all(v["tinierssd"]["median_ms"] > 0 for v in res["networks"].values())
    res = _run_config("max7800x-vs-baseline", tmp_path / "lfw", baseline="HEAD", images=2, batch=2)
    assert res["outputs_identical"] and res["faces_per_s"]["candidate_faceid_112"] > 0
    assert res["batch"]["outputs_identical"] and res["batch"]["windows_per_s"]["candidate"] > 0
    from facesdk.errors import ConfigError
    from facesdk_bench.bench_max7800x_vs_baseline import run

    with pytest.raises(ConfigError):
        run(shared, baseline="no-such-commit-xyz", inputs="reference", runs=1)


def test_decode_memory_stage(tmp_path: Path) -> None:
    res = _run_config("decode-memory", tmp_path, width=1200, height=1000, baseline=None)
    assert set(res["cases"]) == {"rgba-png", "gray16-png", "rgb-jpeg"}
    # the decoded image alone is 3 B/px; a decode cannot need less
    assert all(3.0 <= r["after_b_per_px"] < 40 for r in res["cases"].values()), res


def test_collect_purity_stage(tmp_path: Path) -> None:
    res = _run_config(
        "collect-purity",
        tmp_path,
        people=["Serena_Williams", "Vladimir_Putin"],
        per_person=6,
        distractors=2,
        min_faces=4,
    )
    assert res["frames"] == 14 and res["faces"] >= 12
    assert res["purity"] >= 0.9 and res["recovered"] == ["Serena_Williams", "Vladimir_Putin"], res
    assert res["one_in_one_good_clusters"] == 1


def test_milvus_agreement_stage(tmp_path: Path) -> None:
    pytest.importorskip("pymilvus")
    pytest.importorskip("milvus_lite")
    res = _run_config("milvus-agreement", tmp_path, probes=60, extra=5, pool=80, compare=5, image_probes=20)
    assert res["gallery_identities"] == 1680 and res["probes"] == 60
    assert (
        res["top1_identical"] == 60
        and res["top3_names_identical"] == 5
        and res["image_level_identical"] == 20
    )
    assert res["rank1_correct_milvus"] >= 48


def test_photo_mode_stage(tmp_path: Path, shared: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two LFW DevTrain images through YuNet, firmware framing and photo mode (emulated TinierSSD)."""
    monkeypatch.setenv("FACESDK_AI8X_DIR", str(shared / "ai8x"))
    res = _run_config("max78000-photo-mode", tmp_path, identify=False, limit=0, lfw=2)
    t = res["lfw_devtrain"]
    assert t["images"] == 2 and t["yunet_faces"] >= 2 and res["heldout"]["images"] == 0
    assert 0 < t["photo_iou_found"] <= t["yunet_faces"] and t["windows"] > 0
    assert "photo" in res["photo_mode"]


def test_landmark_sources_variants_are_checked() -> None:
    from facesdk.errors import ConfigError
    from facesdk_bench.lfw_landmark_sources import parse_variant

    assert parse_variant("blazeface-full:sp2") == ("blazeface-full", "sp", 2)
    assert parse_variant("mtcnn:sp") == ("mtcnn", "sp", 1)
    assert parse_variant("dlibref") == ("dlibref", "ref", 1)
    for bad in ("mtcnn:nope", "mtcnn:sp0", ":sp"):
        with pytest.raises(ConfigError):
            parse_variant(bad)


def test_calibrate_stage_on_a_few_devtrain_people(tmp_path: Path) -> None:
    """``facesdk calibrate``'s computation as a stage (no card written), YuNet + MobileFaceNet, 16 people."""
    res = _run_config(
        "calibrate-dlib",
        tmp_path,
        top={"detector": "yunet-2023mar", "embedder": "mobilefacenet-sirius"},
        limit=16,
        gallery_size=6,
        trials=2,
        fars=[0.1],
        confidence=None,
        normalizations=["none"],
        folds=4,
    )
    assert res["model"] == "mobilefacenet-sirius" and res["subset"] == "devtrain"
    tasks = {p["task"] for p in res["operating_points"]}
    assert tasks == {"verification", "identification"}
    assert all(-1.0 <= p["threshold"] <= 1.0 for p in res["operating_points"])


def test_calibration_args_refuse_card_writing_and_unknown_options() -> None:
    from facesdk.errors import ConfigError
    from facesdk_bench.calibrate import calibration_args

    a = calibration_args(
        {"subset": "devtrain", "fars": [0.01, 0.001], "no_progress": True},
        root="x",
        embedder="e",
        dataset="lfw",
    )
    assert a.fars == "0.01,0.001" and a.no_progress and a.embedder == "e" and a.root == "x"
    with pytest.raises(ConfigError, match="does not write cards"):
        calibration_args({"write_card": "c.toml"}, root="x")
    with pytest.raises(ConfigError, match="not understood"):
        calibration_args({"no_such_option": 1}, root="x")


def test_embed_aligned_stage(tmp_path: Path) -> None:
    res = _run_config("embed-aligned", tmp_path, images=2)
    assert res["faces"] == 2
    assert res["arcface112_into_dlib"]["min"] > 0.97 and res["dlib150_into_mobilefacenet"]["min"] > 0.5


def test_unknown_stage_option_is_a_config_error(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("name: bad\nstages: [max78000-photo-mode]\nmax78000-photo-mode: {lfw: 1, min_score: 2}\n")
    from facesdk.errors import ConfigError

    assert main(["bench", "--config", str(cfg), "--no-progress"]) == ConfigError.exit_code


def test_small_galleries_far_function() -> None:
    """A 1-person gallery: the gallery-only margin is the raw cosine (accepted), cohort-margin is not."""
    import numpy as np

    from facesdk.calibration import CohortMargin
    from facesdk_bench.small_galleries import far_at

    rng = np.random.default_rng(0)
    probes = rng.standard_normal((50, 16)).astype(np.float32)
    probes /= np.linalg.norm(probes, axis=1, keepdims=True)
    g = probes[:1] + 0.0  # the gallery person looks like the first stranger
    sim = probes @ g.T
    assert far_at(sim, probes, 0.99, 0.5, None) == 1 / 50  # the look-alike only, at its raw cosine
    cohort = CohortMargin(probes[:1], 0.5)  # a cohort holding the look-alike too
    assert far_at(sim, probes, 0.99, 0.5, cohort) == 0.0


def test_small_galleries_stage(tmp_path: Path) -> None:
    res = _run_config(
        "small-galleries",
        tmp_path,
        top={"cache": str(tmp_path / "c")},
        sizes=[1, 2],
        trials=1,
        cohort=4,
        strangers=5,
    )
    assert [r["gallery_size"] for r in res["rows"]] == [1, 2] and res["rows"][0]["strangers"] == 5
    one = res["rows"][0]
    assert one["far_gallery_margin"]["mean"] >= one["far_cohort_margin"]["mean"]
    assert res["model"] == "dlib-resnet-v1" and 0 < res["threshold"] < 1


def test_throughput_stage_interleaves_chunks(tmp_path: Path) -> None:
    """The throughput protocol in chunks: every chunk runs the pipeline and both peers (the embedder peer
    on as many tensors as the pipeline embedded), the totals are the chunks' sums, and the ratios are
    formed chunk by chunk (issue 12: load drift between pipeline and peers cancels)."""
    res = _run_config(
        "throughput", tmp_path, top={"limit": 13}, detectors=["yunet-2023mar-dynamic"], chunk=5, chip_ab=4
    )
    assert res["chunking"]["chunks"] == 3 and res["dataset"]["images"] == 13
    (row,) = res["rows"]
    chunks = row["chunks"]
    assert len(chunks) == 3 and sum(c["images"] for c in chunks) == 13 == row["images"]
    assert row["errors"] == 0 and row["embedder_tensors"] == 26  # one face per image, flip TTA
    assert row["wall_s"] == pytest.approx(sum(c["wall_s"] for c in chunks))
    for c in chunks:
        assert c["detector_only_source"] == "opencv" and c["detector_only_s"] > 0 and c["embedder_only_s"] > 0
        assert c["ratio"] == pytest.approx(c["wall_s"] / (c["detector_only_s"] + c["embedder_only_s"]))
    eo = row["engine_only_s"]
    assert eo["detector"] == pytest.approx(sum(c["detector_only_s"] for c in chunks))
    assert row["overhead_ratio"] == pytest.approx(row["wall_s"] / (eo["detector"] + eo["embedder"]))
    assert row["overhead_ratio_chunks_min"] <= row["overhead_ratio_chunks_median"] <= row[
        "overhead_ratio_chunks_max"
    ]
    yn = res["peers"]["opencv_yunet_native"]
    assert len(yn["chunks"]) == 3 and yn["images"] == 13 and yn["facesdk_faces"] == yn["opencv_faces"]
    assert yn["opencv_s"] == pytest.approx(sum(c["opencv_s"] for c in yn["chunks"]))
    raw = res["peers"]["raw_embedder_batch32"]
    assert raw["tensors"] == 26  # the peer ran exactly what the pipeline embedded
    assert row["precision"] == "fp32" and res["precision"] == "fp32"
    # the single-threaded-session A/B ran in the same loop
    assert yn["single_thread_pixels"] > 0 and yn["facesdk_all_inputs_multithreaded_s"] > 0
    ab = res["chip_ab"]  # dlib chip: exact vs cv2.warpAffine on the same faces
    assert ab["faces"] == 4 and ab["max_abs_diff"] <= 1 and ab["embedding_cos_min"] > 0.99999
