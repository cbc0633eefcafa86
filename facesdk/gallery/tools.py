"""Gallery maintenance: copy between stores (export/import), re-embed kept face crops (migrate),
and the loose face crop that makes re-embedding with another model possible.

A kept crop is a square region around the detected face (the box enlarged by ``margin`` on each
side), resized to ``size``×``size``, stored with the detection box and five landmarks in crop
coordinates (photo metadata ``crop_box`` / ``crop_landmarks``). Migration runs the new model's own
alignment on it (its template, its landmarker if any), so a crop kept for one embedder serves another.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from ..errors import ConfigError, GalleryError
from . import Gallery

if TYPE_CHECKING:  # pragma: no cover
    from ..pipeline import FaceRecognizer

__all__ = ["MigrationReport", "copy_gallery", "loose_crop", "migrate_gallery"]

log = logging.getLogger(__name__)


def loose_crop(
    image: np.ndarray,
    box: np.ndarray,
    landmarks: np.ndarray | None,
    *,
    size: int = 192,
    margin: float = 0.5,
) -> tuple[np.ndarray, dict[str, Any]]:
    """A ``size``×``size`` RGB crop around a face and its box/landmarks in crop pixels (JSON-able)."""
    b = np.asarray(box, np.float64)
    cx, cy = (b[0] + b[2]) / 2, (b[1] + b[3]) / 2
    side = max(b[2] - b[0], b[3] - b[1]) * (1 + 2 * margin)
    if not np.isfinite(side) or side <= 1:
        raise ConfigError(f"degenerate face box {box}")
    x0, y0 = cx - side / 2, cy - side / 2
    scale = size / side
    img = Image.fromarray(np.ascontiguousarray(image, np.uint8))
    crop = img.transform(
        (size, size),
        Image.Transform.AFFINE,
        (1 / scale, 0, x0, 0, 1 / scale, y0),
        resample=Image.Resampling.BILINEAR,
    )
    cb = (b - [x0, y0, x0, y0]) * scale
    meta: dict[str, Any] = {"crop_box": [round(float(v), 3) for v in cb]}
    if landmarks is not None:
        lm = (np.asarray(landmarks, np.float64).reshape(-1, 2) - [x0, y0]) * scale
        meta["crop_landmarks"] = np.round(lm, 3).tolist()
    return np.asarray(crop, np.uint8), meta


def copy_gallery(src: Gallery, dest: Gallery, *, skip_existing: bool = True) -> dict[str, int]:
    """Copy every photo (template, metadata, kept crop, image id) and identity metadata of ``src``
    into ``dest`` (same model). Photos whose image id ``dest`` already holds are skipped."""
    dest.check_compatible(src.model_id, src.embedding_size, src.model_sha256)
    have = {r.image_id for r in dest.images()} if skip_existing and len(dest) else set()
    ids, names, mat = src.image_templates()
    recs = {r.image_id: r for r in src.images()}
    keep = [i for i, x in enumerate(ids) if x not in have]
    crops = src.store.crops([ids[i] for i in keep])
    copied = 0
    by_shape: dict[Any, list[int]] = {}
    for i in keep:  # crops of one shape go together (a store keeps one crop shape)
        c = crops.get(ids[i])
        by_shape.setdefault(None if c is None else c.shape, []).append(i)
    for shape, rows in by_shape.items():
        dest.add_many(
            [names[i] for i in rows],
            mat[rows],
            image_ids=[ids[i] for i in rows],
            metas=[recs[ids[i]].meta for i in rows],
            crops=None if shape is None else np.stack([crops[ids[i]] for i in rows]),
        )
        copied += len(rows)
    for n in src.names:
        m = src.identity_meta(n)
        if m and n in dest:
            dest.set_identity_meta(n, {**dest.identity_meta(n), **m})
    return {"copied": copied, "skipped": len(ids) - len(keep), "identities": len(set(names))}


@dataclass
class MigrationReport:
    """What :func:`migrate_gallery` re-embedded and what it could not."""

    reembedded: int = 0
    identities: int = 0
    skipped: list[dict[str, str]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"reembedded": self.reembedded, "identities": self.identities, "skipped": self.skipped}


def migrate_gallery(src: Gallery, dest: Gallery, rec: FaceRecognizer, *, batch: int = 64) -> MigrationReport:
    """Re-embed ``src``'s kept face crops with ``rec`` (another model) into ``dest``.

    Photos without a kept crop (or without its box) cannot be migrated and are listed in the report.
    """
    from ..detect import Detection

    dest.check_compatible(rec.model_id, rec.embedding_size, rec.model_sha256)
    rep = MigrationReport()
    recs = src.images()
    crops = src.store.crops([r.image_id for r in recs])
    todo = []
    for r in recs:
        if r.image_id not in crops or "crop_box" not in r.meta:
            rep.skipped.append({"image_id": r.image_id, "name": r.name, "reason": "no face crop was kept"})
            continue
        todo.append(r)
    if not todo:
        raise GalleryError(
            "no photo of this gallery kept a face crop: nothing to re-embed (enroll with crops kept)"
        )
    for s in range(0, len(todo), batch):
        part = todo[s : s + batch]
        aligned = []
        for r in part:
            lm = r.meta.get("crop_landmarks")
            det = Detection(
                np.asarray(r.meta["crop_box"], np.float32),
                1.0,
                None if lm is None else np.asarray(lm, np.float32),
            )
            aligned.append(rec.align(crops[r.image_id], [det])[0])
        emb = rec.embed_crops(np.stack(aligned))
        dest.add_many(
            [r.name for r in part],
            emb,
            image_ids=[r.image_id for r in part],
            metas=[{**r.meta, "migrated_from": src.model_id} for r in part],
            crops=np.stack([crops[r.image_id] for r in part]),
        )
        rep.reembedded += len(part)
    for n in src.names:
        m = src.identity_meta(n)
        if m and n in dest:
            dest.set_identity_meta(n, m)
    rep.identities = len({r.name for r in todo})
    log.info(
        "migrated %d photos of %d identities from %s to %s",
        rep.reembedded,
        rep.identities,
        src.model_id,
        rec.model_id,
    )
    return rep
