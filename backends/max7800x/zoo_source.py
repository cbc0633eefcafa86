"""Model-zoo sources for ai8x artifacts: the recipes ``ai8x-dir`` and ``ai8x-cproject``.

ai8x checkpoints are not on a package registry here; cards name them by file and this
recipe copies ``$FACESDK_AI8X_DIR/trained/<file>`` (or ``$FACESDK_AI8X_DIR/<file>``) into
the facesdk cache (the zoo then checks the card's sha256), together with the network
YAML named by the card's ``params.yaml`` (from ``$FACESDK_AI8X_DIR/networks``), which is
placed next to the cached checkpoint where the backend looks for it.

``ai8x-cproject`` imports the synthesized C project named by the card's ``params.cproject``
(relative to ``$FACESDK_AI8X_DIR``), requires its known-answer test to match every output word,
and caches the network as a pickle-free ``.npz`` (byte-reproducible, so the card's sha256 pins it).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from facesdk.errors import ModelNotFoundError
from facesdk.fileio import atomic_path
from facesdk.zoo import _check_name, _contained, _verify

from .backend import AI8X_DIR_ENV

__all__ = ["copy_from_ai8x_dir", "import_from_c_project"]


def copy_from_ai8x_dir(card: Any, art: Any, inputs: dict[str, Path], out: Path) -> None:
    """Recipe: copy the checkpoint (and its YAML) from ``$FACESDK_AI8X_DIR``.

    File names come from the card and are checked to be plain names inside the ai8x directory; the
    YAML must be one of the artifact's companions (with a sha256) and is verified before it is
    moved (atomically) beside the cached checkpoint.
    """
    root = os.environ.get(AI8X_DIR_ENV)
    if not root:
        raise ModelNotFoundError(
            f"model {card.id!r}: set ${AI8X_DIR_ENV} to the ai8x directory (trained/, networks/)")
    base = Path(root)
    what = f"model {card.id!r}"
    fname = _check_name(art.file, "artifact file")
    src = next((p for p in (_contained(base, f"trained/{fname}", what), _contained(base, fname, what))
                if p.is_file()), None)
    if src is None:
        raise ModelNotFoundError(f"{what}: {art.file} not found in ${AI8X_DIR_ENV} ({base})")
    shutil.copyfile(src, out)
    yml = card.params.get("yaml")
    if yml:
        _check_name(yml, "network YAML")
        shas = dict(art.companions)
        if yml not in shas:
            raise ModelNotFoundError(
                f"{what}: network YAML {yml} is not a companion (with sha256) of {fname}")
        ysrc = next((p for p in (_contained(base, f"networks/{yml}", what), _contained(base, yml, what))
                     if p.is_file()), None)
        if ysrc is None:
            raise ModelNotFoundError(f"{what}: network YAML {yml} not found in ${AI8X_DIR_ENV}")
        dest = _contained(Path(out).parent, yml, what)
        with atomic_path(dest, suffix=".part", verify=lambda t: _verify(t, shas[yml], what)) as tmp:
            shutil.copyfile(ysrc, tmp)


def import_from_c_project(card: Any, art: Any, inputs: dict[str, Path], out: Path) -> None:
    """Recipe: import ``$FACESDK_AI8X_DIR/<params.cproject>`` and save the network (KAT must pass)."""
    from facesdk.errors import ModelFormatError

    from .accel.cproject import import_c_project, known_answer_test
    from .accel.network import save_network

    root = os.environ.get(AI8X_DIR_ENV)
    rel = card.params.get("cproject")
    if not root or not rel:
        raise ModelNotFoundError(f"model {card.id!r}: set ${AI8X_DIR_ENV} (the card names C project {rel!r})")
    base = Path(root).resolve()
    d = (base / str(rel)).resolve()
    if base not in d.parents and d != base:
        raise ModelFormatError(f"model {card.id!r}: C project path {rel!r} leaves ${AI8X_DIR_ENV}")
    proj = import_c_project(d)
    kat = known_answer_test(proj)
    if not kat.passed:
        raise ModelFormatError(f"model {card.id!r}: known-answer test of {d} failed "
                               f"({kat.differing}/{kat.words} output words differ)")
    save_network(proj.network, out)
