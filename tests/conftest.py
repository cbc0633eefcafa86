"""Shared fixtures: the ../shared data directory (FACESDK_SHARED) is required, never skipped."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def shared_root() -> Path:
    """Locate ../shared (or $FACESDK_SHARED). Missing data is an error, not a skip."""
    root = Path(os.environ.get("FACESDK_SHARED", REPO.parent / "shared")).resolve()
    if not (root / "README.md").exists():
        raise RuntimeError(
            f"facesdk test data not found at {root}: set FACESDK_SHARED to the shared/ directory"
        )
    return root


@pytest.fixture(scope="session")
def shared() -> Path:
    """Path of the shared data directory."""
    return shared_root()


@pytest.fixture(scope="session", autouse=True)
def _model_mirror(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Point the model zoo at ../shared/models and at a private cache for the whole run."""
    os.environ["FACESDK_MODEL_MIRROR"] = str(shared_root() / "models")
    os.environ.setdefault("FACESDK_CACHE", str(tmp_path_factory.mktemp("facesdk-cache")))
