"""Known-answer test of msdk C projects on the emulator: the network recovered from ``cnn.c`` and
``weights.h`` run on ``sampledata.h`` must reproduce every word of ``sampleoutput.h``.

Stage ``max7800x-kat`` of ``facesdk bench`` (:mod:`facesdk_bench.stages`)::

    FACESDK_AI8X_DIR=../shared/ai8x facesdk bench --config benchmarks/configs/max7800x-kat.yaml

Option ``projects``: folders under ``shared/ai8x/msdk`` (default ``[faceid_112]``). The same import and
test as ``facesdk max7800x import-c DIR --check``
(:func:`facesdk_backends.max7800x.accel.cproject.known_answer_test`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from facesdk.errors import ConfigError

__all__ = ["run", "to_markdown"]


def run(shared: Path, projects: list[str] | None = None) -> dict[str, Any]:
    """Import each project and run its known-answer test."""
    from facesdk_backends.max7800x.accel.cproject import import_c_project, known_answer_test

    base = shared / "ai8x" / "msdk"
    out: dict[str, Any] = {}
    for name in projects or ["faceid_112"]:
        d = (base / name).resolve()
        if not d.is_relative_to(base.resolve()):  # names come from a config: stay under msdk/
            raise ConfigError(f"max7800x-kat: project {name!r} is outside {base}")
        proj = import_c_project(d)
        kat = known_answer_test(proj)
        out[name] = {
            "arch": proj.network.arch,
            "chip": proj.chip,
            "layers": len(proj.network.layers),
            **kat.to_dict(),
        }
    return {"projects": out}


def to_markdown(res: dict[str, Any]) -> str:
    """One line per project: words matching / words."""
    lines = []
    for name, r in res["projects"].items():
        lines.append(
            f"{name} ({r['arch']}, {r['layers']} layers, {r['chip']}): **{r['words'] - r['differing']} / "
            f"{r['words']} output words match**, {r['differing']} differing "
            f"({'PASS' if r['passed'] else 'FAIL'})"
        )
    return "\n".join(lines)
