"""Calibration sets for post-training quantisation: real aligned faces that are never evaluated.

Images come from LFW (Huang et al., "Labeled Faces in the Wild", UMass TR 07-49, 2007): one image per
identity of ``peopleDevTrain.txt`` whose identity appears in neither ``pairs.txt`` (the 10-fold View 2
protocol every LFW accuracy here is reported on) nor ``pairsDevTest.txt``. On the standard files that
leaves 1,053 identities, so a calibration set of up to 1,053 faces shares no person with any evaluated
pair. Identities are taken in name order with an even stride, so a set of N is deterministic.

Each face is detected and aligned by the embedder's own default pipeline (ONNX Runtime, fp32), exactly
as at inference time, and stored once as ``uint8 [N, h, w, 3]`` crops in
``<cache>/calibration/<card>-<detector>-<N>.npz`` (atomic write). Its identity for artifact caching is
the sha256 of the crop bytes (:func:`crops_sha256`).

The LFW directory is ``$FACESDK_CALIBRATION_LFW``, else ``$FACESDK_SHARED/data/lfw``, else
``../shared/data/lfw`` beside the source checkout.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

import numpy as np

from facesdk.errors import ConfigError, ModelNotFoundError

__all__ = ["DEFAULT_COUNT", "calibration_crops", "calibration_images", "crops_sha256", "lfw_root"]

log = logging.getLogger(__name__)

#: Faces in the default calibration set (the ONNX Runtime docs suggest a few hundred representative inputs).
DEFAULT_COUNT = 500


def lfw_root() -> Path:
    """The LFW directory that holds ``peopleDevTrain.txt``, ``pairs.txt`` and ``images/``."""
    cands = []
    if os.environ.get("FACESDK_CALIBRATION_LFW"):
        cands.append(Path(os.environ["FACESDK_CALIBRATION_LFW"]))
    if os.environ.get("FACESDK_SHARED"):
        cands.append(Path(os.environ["FACESDK_SHARED"]) / "data" / "lfw")
    cands.append(Path(__file__).resolve().parents[1].parent / "shared" / "data" / "lfw")
    for c in cands:
        if (c / "peopleDevTrain.txt").is_file() and (c / "pairs.txt").is_file():
            return c
    raise ModelNotFoundError(
        "no LFW directory for the calibration set (set FACESDK_CALIBRATION_LFW to a folder with "
        f"peopleDevTrain.txt, pairs.txt and images/); looked in {', '.join(map(str, cands))}"
    )


def _pair_names(path: Path) -> set[str]:
    names: set[str] = set()
    if not path.is_file():
        return names
    for line in path.read_text(encoding="utf-8").splitlines()[1:]:
        p = line.split("\t")
        if len(p) == 3:
            names.add(p[0])
        elif len(p) == 4:
            names.update((p[0], p[2]))
    return names


def calibration_images(count: int = DEFAULT_COUNT, root: Path | None = None) -> list[Path]:
    """``count`` image paths: one per DevTrain identity that no evaluation pair uses."""
    root = root or lfw_root()
    evaluated = _pair_names(root / "pairs.txt") | _pair_names(root / "pairsDevTest.txt")
    people = []
    for line in (root / "peopleDevTrain.txt").read_text(encoding="utf-8").splitlines()[1:]:
        p = line.split("\t")
        if len(p) == 2 and p[0] not in evaluated:
            people.append(p[0])
    people.sort()
    if count < 1 or count > len(people):
        raise ConfigError(f"calibration count must be 1..{len(people)} (unevaluated DevTrain identities)")
    idx = np.linspace(0, len(people) - 1, count).round().astype(int)
    out = []
    for i in dict.fromkeys(idx.tolist()):
        name = people[i]
        out.append(root / "images" / name / f"{name}_0001.jpg")
    return out


def crops_sha256(crops: np.ndarray) -> str:
    """Identity of a calibration set: sha256 of its shape and uint8 bytes."""
    h = hashlib.sha256(repr(tuple(crops.shape)).encode())
    h.update(np.ascontiguousarray(crops, np.uint8).tobytes())
    return h.hexdigest()


def calibration_crops(card_id: str, count: int = DEFAULT_COUNT, detector: str | None = None) -> np.ndarray:
    """Aligned uint8 crops ``[N, h, w, 3]`` for embedder ``card_id`` (built once, then cached)."""
    from facesdk import zoo
    from facesdk.fileio import atomic_writer

    det_name = detector or "default"
    path = zoo.cache_dir() / "calibration" / f"{card_id}-{det_name}-{count}.npz"
    if path.is_file():
        try:
            with np.load(path, allow_pickle=False) as z:
                return np.asarray(z["crops"], np.uint8)
        except (OSError, ValueError, KeyError) as exc:
            log.warning("rebuilding unreadable calibration set %s: %s", path, exc)
    from tqdm.auto import tqdm

    import facesdk
    from facesdk.image import load_image

    rec = facesdk.FaceRecognizer(detector=detector, embedder=card_id, backend="onnxruntime", tta="none")
    crops, names = [], []
    try:
        for p in tqdm(calibration_images(count), desc=f"calibration faces ({card_id})", leave=False):
            img = load_image(p)
            dets = rec.detect(img)
            if not dets:
                log.debug("calibration: no face in %s, skipped", p.name)
                continue
            cy, cx = img.shape[0] / 2, img.shape[1] / 2
            d = min(
                dets,
                key=lambda d: ((d.box[0] + d.box[2]) / 2 - cx) ** 2 + ((d.box[1] + d.box[3]) / 2 - cy) ** 2,
            )
            crops.append(rec.align(img, [d])[0])
            names.append(p.name)
    finally:
        rec.close()
    if not crops:
        raise ModelNotFoundError("no face found in any calibration image")
    arr = np.stack(crops).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_writer(path) as f:
        np.savez(f, crops=arr, names=np.array(names))
    log.info(
        "calibration set for %s: %d faces (%d without a face skipped) -> %s",
        card_id,
        len(arr),
        count - len(arr),
        path,
    )
    return arr
