"""Markdown report sections rendered from report dicts (each section has its own function)."""

from __future__ import annotations

from facesdk_bench.report import render_markdown


def _ident_row(backend: str, rank1: float) -> dict:
    tier = {
        "rank_k": {"1": rank1, "5": 0.99, "10": 1.0},
        "dir_at_far": {"0.01": {"dir": 0.8}, "0.001": {"dir": 0.5}},
        "precision_at_recall": {"0.99": {"precision": 0.97}},
        "recall_at_precision": {"0.999": {"recall": 0.42}},
    }
    return {"model": "m", "backend": backend, "precision": "fp32", "protocol": "identify",
            "split": "BLUFR-style, 10 trials", "rank_k": tier["rank_k"], "dir_at_far": tier["dir_at_far"],
            "tiers": {"high": tier}}


def test_identification_section_lists_every_row_and_tier() -> None:
    rows = [_ident_row("onnxruntime", 0.9512), _ident_row("openvino", 0.9)]
    md = render_markdown({"name": "t", "rows": rows})
    lines = md.splitlines()
    i = lines.index("## Identification (1:N, open set)")
    assert lines[i + 2] == "Split: BLUFR-style, 10 trials"
    head = lines[i + 4]
    assert "DIR@FAR=0.01" in head and "DIR@FAR=0.001" in head and "recall@prec≥0.999" in head
    rows = [ln for ln in lines[i + 6 :] if ln.startswith("| m |")]
    assert rows[0].split(" | ")[1:5] == ["onnxruntime", "fp32", "high", "95.12 %"]
    assert rows[1].split(" | ")[1] == "openvino" and len(rows) == 2
    assert "80.00 %" in rows[0] and "42.00 %" in rows[0]


def test_peer_lines_and_not_run() -> None:
    md = render_markdown(
        {
            "name": "t",
            "peers": [{"peer": "dlib", "available": False, "reason": "not installed"}],
            "skipped": [{"backend": "tensorrt", "precision": "fp16", "reason": "no GPU"}],
        }
    )
    assert "- **dlib**: not run (not installed)" in md
    assert "## Not run" in md and "- tensorrt/fp16: no GPU" in md
