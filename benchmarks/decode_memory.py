"""Peak resident memory per pixel while ``facesdk.load_image`` decodes one large file.

Stage ``decode-memory`` of ``facesdk bench`` (:mod:`facesdk_bench.stages`)::

    facesdk bench --config benchmarks/configs/decode-memory.yaml

Each case (``rgba-png``: RGBA PNG whose alpha is composited on white; ``gray16-png``: 16-bit greyscale
PNG; ``rgb-jpeg``: RGB JPEG) is written once at ``width`` × ``height`` (default 4000 × 4000 = 16 MP),
then decoded in a fresh Python process: the peak resident set after the decode minus the same figure
after a tiny warm-up decode, divided by the pixels — the code of
``tests/test_image.py::test_decode_peak_memory_is_bounded`` calls :func:`measure` too. The peak is the
process's own ``VmHWM`` (``/proc/self/status``; ``ru_maxrss`` where there is no /proc): on Linux
``ru_maxrss`` of a child starts at its parent's resident size at the fork, which hides the decode when
the parent is large.

Option ``baseline``: a commit whose ``facesdk/image.py`` (and ``errors.py``) is measured too, in its own
fresh processes, from a temporary package read with ``git show`` (the "before" column).
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from facesdk.errors import ConfigError

__all__ = ["run", "to_markdown", "CASES", "write_case", "measure"]

CASES = ("rgba-png", "gray16-png", "rgb-jpeg")

_PROBE = (
    "import resource, sys\n"
    "sys.path[:0] = sys.argv[3:]\n"
    "def peak_kb():\n"
    "    try:\n"  # this process's own high-water mark (ru_maxrss also counts the parent's RSS at fork)
    "        with open('/proc/self/status') as f:\n"
    "            return int(next(ln.split()[1] for ln in f if ln.startswith('VmHWM:')))\n"
    "    except (OSError, StopIteration):\n"
    "        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
    "import importlib\n"
    "load_image = importlib.import_module(sys.argv[2]).load_image\n"
    "import numpy as np\n"
    "load_image(np.zeros((8, 8, 4), np.uint8))\n"
    "base = peak_kb()\n"
    "a = load_image(sys.argv[1])\n"
    "peak = peak_kb()\n"
    "print((peak - base) * 1024 / (a.shape[0] * a.shape[1]))\n"
)


def write_case(case: str, path: Path, width: int, height: int) -> Path:
    """Write the test file of one case (deterministic content)."""
    from PIL import Image

    if case == "rgba-png":
        Image.new("RGBA", (width, height), (10, 200, 30, 128)).save(path, compress_level=1)
    elif case == "gray16-png":
        Image.fromarray(np.full((height, width), 40000, np.uint16)).save(path, compress_level=1)
    elif case == "rgb-jpeg":
        y, x = np.mgrid[0:height, 0:width]
        rgb = np.stack(
            [(x * 255 // max(1, width - 1)), (y * 255 // max(1, height - 1)), ((x + y) % 256)], axis=-1
        ).astype(np.uint8)
        Image.fromarray(rgb).save(path, quality=90)
        del rgb
    else:
        raise ConfigError(f"decode-memory: unknown case {case!r} (known: {', '.join(CASES)})")
    return path


def _baseline_module(commit: str, repo: Path, dest: Path) -> str:
    """Write ``facesdk/image.py`` + ``errors.py`` of ``commit`` as package ``facesdk_at_<sha>``."""
    from .bench_max7800x_vs_baseline import _git

    sha = _git(repo, "rev-parse", "--verify", "--quiet", f"{commit}^{{commit}}").strip()
    pkg = dest / f"facesdk_at_{sha[:12]}"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    for f in ("image.py", "errors.py"):
        (pkg / f).write_text(_git(repo, "show", f"{sha}:facesdk/{f}"))
    return f"{pkg.name}.image"


def measure(path: Path, module: str = "facesdk.image", extra_path: list[str] | None = None) -> float:
    """Peak resident bytes per pixel above a warm-up decode while ``module.load_image`` decodes ``path``,
    in a fresh Python process (its own ``VmHWM``)."""
    out = subprocess.run(
        [sys.executable, "-c", _PROBE, str(path), module, *(extra_path or [])],
        capture_output=True,
        text=True,
        timeout=600,
    )
    if out.returncode != 0:
        raise ConfigError(f"decode-memory: decoding {path.name} with {module} failed: {out.stderr[-400:]}")
    return float(out.stdout.strip())


def run(
    cases: list[str] | None = None,
    width: int = 4000,
    height: int = 4000,
    baseline: str | None = None,
    repo: Path | None = None,
) -> dict[str, Any]:
    """Bytes per pixel above the baseline for each case (current code, and ``baseline``'s if given)."""
    cases = list(cases or CASES)
    repo = repo or Path(__file__).resolve().parents[1]
    res: dict[str, Any] = {"width": int(width), "height": int(height), "baseline": baseline, "cases": {}}
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        before = _baseline_module(baseline, repo, t) if baseline else None
        for case in cases:
            f = write_case(case, t / f"{case}.{'jpg' if case.endswith('jpeg') else 'png'}", width, height)
            row = {"after_b_per_px": round(measure(f), 1)}
            if before:
                row["before_b_per_px"] = round(measure(f, before, [tmp]), 1)
                row["ratio"] = round(row["after_b_per_px"] / row["before_b_per_px"], 2)
            res["cases"][case] = row
            f.unlink()
    return res


def to_markdown(res: dict[str, Any]) -> str:
    """One table row per case."""
    b = res.get("baseline")
    head = (
        f"| file ({res['width']}×{res['height']}) | "
        + (f"before ({b}) | " if b else "")
        + "now |"
        + (" ratio |" if b else "")
    )
    lines = [head, "|---|" + ("---|" if b else "") + "---|" + ("---|" if b else "")]
    for case, r in res["cases"].items():
        cells = [case] + ([f"{r['before_b_per_px']} B/px"] if b else []) + [f"{r['after_b_per_px']} B/px"]
        cells += [str(r["ratio"])] if b else []
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
