"""The benchmark is stages declared in configs (#8 item 5); the card answers threshold questions."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from facesdk import zoo
from facesdk.errors import ConfigError
from facesdk.plugins import hookimpl, register_plugin, unregister_plugin

REPO = Path(__file__).resolve().parents[1]


class _ProbeStages:
    """A third-party stage, registered through the ``facesdk_bench_stages`` hook."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, dict[str, Any]]] = []

    @hookimpl
    def facesdk_bench_stages(self) -> dict[str, Any]:
        def probe(ctx: Any) -> None:
            self.seen.append((ctx.current, ctx.options()))
            ctx.report["results"][ctx.current] = {"result": ctx.options().get("value")}

        return {"probe": probe}


@pytest.fixture
def probe() -> Any:
    p = _ProbeStages()
    register_plugin(p, name="probe-stages")
    yield p
    unregister_plugin("probe-stages")


def test_stages_compose_from_config(probe: Any, tmp_path: Path) -> None:
    from facesdk_bench.runner import load_config, merge_overrides, run_benchmark

    cfg_file = tmp_path / "probe.yaml"
    cfg_file.write_text(
        'name: probe\nstages: [probe, "probe@again"]\nprobe: {value: 1}\n"probe@again": {value: 2}\n'
    )
    cfg = merge_overrides(load_config(cfg_file))  # no dataset root needed: no stage reads the dataset
    report = run_benchmark(cfg, argv=["bench", "--config", str(cfg_file)])
    assert probe.seen == [("probe", {"value": 1}), ("probe@again", {"value": 2})]
    assert report["stages"] == ["probe", "probe@again"]
    assert report["results"] == {"probe": {"result": 1}, "probe@again": {"result": 2}}
    with pytest.raises(ConfigError, match="unknown benchmark stage 'nope'"):
        merge_overrides(load_config(cfg_file), stages="probe,nope")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nnot_a_key: 1\n")
    with pytest.raises(ConfigError, match="unknown config keys"):
        load_config(bad)


def test_default_stages_follow_the_enabled_sections() -> None:
    from facesdk_bench.runner import DEFAULTS
    from facesdk_bench.stages import stage_names, stages

    assert {"accuracy", "latency", "parity", "peers", "detectors", "dlib-embedder", "max7800x-speed",
            "lfw-max78000", "landmark-sources"} <= set(stages())
    cfg = {**DEFAULTS, "peers": {}}
    assert stage_names(cfg) == ["accuracy"]
    cfg = {**DEFAULTS, "latency": {"enabled": True}, "parity": {"enabled": True}, "peers": {"opencv": True}}
    assert stage_names(cfg) == ["accuracy", "latency", "parity", "peers"]


def test_every_config_parses_and_names_known_stages() -> None:
    from facesdk_bench.runner import load_config
    from facesdk_bench.stages import stage_names, stages

    known = stages()
    files = sorted((REPO / "benchmarks" / "configs").glob("*.yaml"))
    assert len(files) >= 10
    for f in files:
        cfg = load_config(f)
        for entry in stage_names(cfg):
            assert entry.split("@", 1)[0] in known, (f.name, entry)


def test_dlib_embedder_stage_through_the_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A side script is now a stage: ``facesdk bench --config`` writes its figures into the report."""
    from facesdk.cli import main

    cfg = tmp_path / "dlib.yaml"
    cfg.write_text("name: dlib\nstages: [dlib-embedder]\ndlib-embedder: {repeats: 1, batches: [8]}\n")
    out = tmp_path / "out"
    assert main(["bench", "--config", str(cfg), "--out", str(out), "--no-progress"]) == 0
    rep = json.loads((out / "report.json").read_text())
    res = rep["results"]["dlib-embedder"]["result"]
    assert res["max_abs_diff_vs_dlib"] < 1e-4 and res["crops"] == 200 and res["ms_core_per_crop_b8"] > 0
    md = (out / "report.md").read_text()
    assert "## dlib-embedder" in md and "| 8 |" in md and "stages: dlib-embedder" in md


def test_threshold_for_operating_point() -> None:
    """``ModelCard.threshold_for(backend, precision, tta, task)``: calibrated points, then the flat table."""
    card = zoo.ModelCard.from_dict({
        "id": "t", "task": "embed", "family": "x", "license": "MIT", "input": {"size": [1, 1]},
        "thresholds": {"default": 0.4, "default:flip": 0.5, "openvino:int8": 0.35},
        "operating_points": [
            {"task": "identification", "threshold": 0.62, "far": 0.01, "gallery_size": 1000},
            {"task": "verification", "threshold": 0.45, "target": "best-accuracy", "backend": "openvino",
             "precision": "fp16"},
        ],
    })
    assert card.threshold_for("onnxruntime", "fp32") == 0.4
    assert card.threshold_for("onnxruntime", "fp32", "flip") == 0.5
    assert card.threshold_for("openvino", "int8") == 0.35
    assert card.threshold_for("openvino", "int8", "flip") == 0.35  # backend/precision beats the tta default
    assert card.threshold_key("openvino", "int8", "flip") == "openvino:int8"
    assert card.threshold_for("openvino", "fp16") == 0.45  # a calibrated point beats the flat table
    assert card.threshold_for("onnxruntime", "fp32", task="identification") == 0.62
    empty = zoo.ModelCard.from_dict({"id": "e", "task": "embed", "family": "x", "license": "MIT",
                                     "input": {"size": [1, 1]}, "thresholds": {"default": 0.4}})
    assert empty.threshold_for("onnxruntime") == 0.4
    assert empty.threshold_for("onnxruntime", task="identification") is None  # never borrowed from 1:1
    dlib = zoo.get_card("dlib-resnet-v1")
    k = dlib.threshold_key("onnxruntime", "fp32", "flip")
    assert k is not None and dlib.threshold_for("onnxruntime", "fp32", "flip") in (
        dlib.thresholds[k], *[p.threshold for p in dlib.operating_points])
