"""Packaging and CI (issue 11): pip-first metadata, licence, data packages, no --no-deps step."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

REPO = Path(__file__).resolve().parents[1]
PY = tomllib.loads((REPO / "pyproject.toml").read_text())


def test_build_requirements_and_licence() -> None:
    req = PY["build-system"]["requires"]
    m = re.fullmatch(r"setuptools>=(\d+)", next(r for r in req if r.startswith("setuptools")))
    assert m and int(m.group(1)) >= 77  # SPDX licence expression needs setuptools >= 77
    assert PY["project"]["license"] == "Apache-2.0" and PY["project"]["license-files"] == ["LICENSE"]
    text = (REPO / "LICENSE").read_text()
    assert "Apache License" in text and "Version 2.0, January 2004" in text


def test_python_310_gets_tomli_and_the_emulator_gets_scipy() -> None:
    deps = PY["project"]["dependencies"]
    assert any(
        d.replace(" ", "").startswith("tomli") and "python_version<'3.11'" in d.replace(" ", "") for d in deps
    )
    src = (REPO / "facesdk" / "zoo.py").read_text()
    assert "import tomli as tomllib" in src and "sys.version_info >= (3, 11)" in src
    extras = PY["project"]["optional-dependencies"]
    for extra in ("max7800x", "all"):
        assert any(d.startswith("scipy") for d in extras[extra]), extra


def test_data_directories_are_packages_so_setuptools_keeps_them() -> None:
    pk = PY["tool"]["setuptools"]["packages"]
    assert {"facesdk_zoo.cards", "facesdk_zoo.cards.cohorts", "facesdk_bench.configs"} <= set(pk)
    data = PY["tool"]["setuptools"]["package-data"]
    assert data["facesdk_zoo.cards"] == ["*.toml"] and data["facesdk_bench.configs"] == ["*.yaml"]
    assert data["facesdk_zoo.cards.cohorts"] == ["*.npz"]


def test_no_no_deps_install_step_and_ci_keeps_readme_commands() -> None:
    setup = (REPO / "scripts" / "setup.sh").read_text()
    assert not [ln for ln in setup.splitlines() if "--no-deps" in ln and not ln.lstrip().startswith("#")]
    ci = (REPO / ".ci" / "run").read_text()
    readme = (REPO / "README.md").read_text()
    for cmd in ("scripts/setup.sh && scripts/main_job.sh", ".venv/bin/python -m pytest -q"):
        assert cmd in readme and f"\n{cmd}\n" in ci
    assert "pip wheel" in ci and "python3 -m venv" in ci and "ruff check" in ci
    assert 'PYTHON="$work/venv/bin/python"' in ci and "FACESDK_MODEL_MIRROR" in ci


def test_ruff_selects_the_line_limit() -> None:
    assert PY["tool"]["ruff"]["line-length"] == 110
    assert "E501" in PY["tool"]["ruff"]["lint"]["select"]


@pytest.mark.parametrize(
    "card", ["mtcnn", "blazeface-short", "blazeface-full", "dlib-resnet-v1", "dlib-shape-predictor-5"]
)
def test_pip_distributed_models_have_a_pinned_pypi_source(card: str) -> None:
    from facesdk import zoo

    for art in zoo.get_card(card).artifacts:
        if any(s.kind == "recipe" for s in art.sources):
            continue
        pypi = [s for s in art.sources if s.kind == "pypi"]
        assert pypi and "==" in pypi[0].location and len(pypi[0].options["archive_sha256"]) == 64
