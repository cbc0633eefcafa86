"""Export a gallery to the firmware's database files and import them back; the dot-product
checkpoints of ai8x-training as databases.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Iterable

import numpy as np

from facesdk.errors import ConfigError, GalleryError

from .database import DotProductDB
from .embeddings_h import read_embeddings_h, write_embeddings_h
from .flash import read_flash_db, write_flash_db
from .profiles import DotProductProfile, get_profile
from .weights_h import read_weights_h, write_weights_bin, write_weights_h

log = logging.getLogger(__name__)

__all__ = ['export_firmware_db', 'import_firmware_db', 'load_dot_checkpoint']


def export_firmware_db(gallery, out_dir: str | os.PathLike, profile: str = "max78000", *,
                       capacity: int | None = None, threshold: int | None = None,
                       flash: bool = False, weights_bin: bool = False,
                       allow_other_model: bool = False) -> dict[str, Path]:
    """Export a gallery as ``weights_3.h`` + ``embeddings.h`` (and optionally ``weights_3.bin`` and
    the MAX78002 record-mode flash image ``facedb_flash.hex``) into ``out_dir``."""
    db = DotProductDB.from_gallery(gallery, profile, capacity=capacity, threshold=threshold,
                                   allow_other_model=allow_other_model)
    out = Path(out_dir)
    files = {
        "weights_h": write_weights_h(db, out / "weights_3.h"),
        "embeddings_h": write_embeddings_h(db.names, out / "embeddings.h"),
    }
    if weights_bin:
        files["weights_bin"] = write_weights_bin(db, out / "weights_3.bin")
    if flash:
        files["flash"] = write_flash_db(db.names, db.weights, out / "facedb_flash.hex")
    log.info("exported %d identities for %s to %s", len(db), db.profile.name, out)
    return files


def import_firmware_db(weights_h: str | os.PathLike | None = None,
                       embeddings_h: str | os.PathLike | None = None, *,
                       flash: str | os.PathLike | None = None, capacity: int | None = None,
                       profile: str | None = None) -> DotProductDB:
    """Read firmware database files back into a :class:`DotProductDB`.

    Either ``weights_3.h`` + ``embeddings.h`` (the default slots), a record-mode ``flash`` image, or
    both (recorded slots follow the default ones, as the firmware loads them).
    """
    names: list[str] = []
    rows = np.zeros((0, 64), np.int8)
    prof = get_profile(profile or "max78000", capacity)
    if weights_h is not None or embeddings_h is not None:
        if weights_h is None or embeddings_h is None:
            raise ConfigError("weights_3.h and embeddings.h are read together")
        full, prof = read_weights_h(weights_h, capacity=capacity, profile=profile)
        names = read_embeddings_h(embeddings_h)
        if len(names) > len(full):
            raise GalleryError(f"{embeddings_h} names {len(names)} slots; {weights_h} holds {len(full)}")
        rows = full[: len(names)]
    if flash is not None:
        fn, fw = read_flash_db(flash)
        if profile is None and weights_h is None:
            prof = get_profile("max78002", capacity)
        names, rows = names + fn, np.concatenate([rows, fw])
    if weights_h is None and flash is None:
        raise ConfigError("nothing to import: give weights_3.h + embeddings.h and/or a flash image")
    return DotProductDB(names, rows, prof)


def load_dot_checkpoint(path: str | os.PathLike, names: Iterable[str] | None = None) -> DotProductDB:
    """The populated (non-zero) rows of an ``ai8{5,7}-dot_emb_112`` checkpoint as a database.

    Uses the backend's restricted checkpoint reader (no code execution). Slot names default to
    ``s000``, ``s001``, …
    """
    from ..accel.checkpoint import load_state_dict  # the restricted (no-code) unpickler

    sd, _meta = load_state_dict(path)
    if "dot.op.weight" not in sd:
        raise GalleryError(f"{path}: not a dot-product checkpoint (no dot.op.weight)")
    w = np.asarray(sd["dot.op.weight"], np.float32)
    w = w.reshape(w.shape[0], -1)
    if not np.array_equal(w, np.round(w)) or w.min() < -128 or w.max() > 127:
        raise GalleryError(f"{path}: dot.op.weight is not 8-bit integer valued")
    shift = int(np.asarray(sd.get("dot.output_shift", -1)).ravel()[0])
    used = np.flatnonzero(np.any(w != 0, axis=1))
    if len(used) and used[-1] != len(used) - 1:
        log.warning("%s: populated slots are not contiguous", path)
    prof = get_profile("max78002" if w.shape[0] > 512 else "max78000", w.shape[0])
    prof = DotProductProfile(prof.name, prof.capacity, prof.threshold, prof.baseaddr, w.shape[1], shift)
    nm = list(names) if names is not None else [f"s{i:03d}" for i in used]
    if len(nm) != len(used):
        raise ConfigError(f"{len(nm)} names for {len(used)} populated slots")
    return DotProductDB(nm, w[used].astype(np.int8), prof)
