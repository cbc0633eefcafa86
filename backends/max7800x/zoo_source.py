"""Model-zoo source for ai8x artifacts: the recipe ``ai8x-dir``.

ai8x checkpoints are not on a package registry here; cards name them by file and this
recipe copies ``$FACESDK_AI8X_DIR/trained/<file>`` (or ``$FACESDK_AI8X_DIR/<file>``) into
the facesdk cache (the zoo then checks the card's sha256), together with the network
YAML named by the card's ``params.yaml`` (from ``$FACESDK_AI8X_DIR/networks``), which is
placed next to the cached checkpoint where the backend looks for it.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from facesdk.errors import ModelNotFoundError

from .backend import AI8X_DIR_ENV

__all__ = ["copy_from_ai8x_dir"]


def copy_from_ai8x_dir(card: Any, art: Any, inputs: dict[str, Path], out: Path) -> None:
    """Recipe: copy the checkpoint (and its YAML) from ``$FACESDK_AI8X_DIR``."""
    root = os.environ.get(AI8X_DIR_ENV)
    if not root:
        raise ModelNotFoundError(f"model {card.id!r}: set ${AI8X_DIR_ENV} to the ai8x directory (trained/, networks/)")
    base = Path(root)
    src = next((p for p in (base / "trained" / art.file, base / art.file) if p.is_file()), None)
    if src is None:
        raise ModelNotFoundError(f"model {card.id!r}: {art.file} not found in ${AI8X_DIR_ENV} ({base})")
    shutil.copyfile(src, out)
    yml = card.params.get("yaml")
    if yml:
        ysrc = next((p for p in (base / "networks" / yml, base / yml) if p.is_file()), None)
        if ysrc is None:
            raise ModelNotFoundError(f"model {card.id!r}: network YAML {yml} not found in ${AI8X_DIR_ENV}")
        shutil.copyfile(ysrc, Path(out).parent / yml)
