"""Benchmark datasets: LFW (pairs protocols), a folder of person/ sub-folders (1:N), plugins.

A dataset exposes images by *key* (a path relative to its image root, with
forward slashes) and offers:

* :meth:`Dataset.pairs` ``(protocol)`` → :class:`PairList` for verification;
* :meth:`Dataset.identities` → ``{person: [keys]}`` for identification.

More datasets come from plugins: a ``facesdk_datasets`` hookimpl returns
``{name: loader}`` where ``loader(root, **options) -> Dataset``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from facesdk.errors import ConfigError

__all__ = [
    "DatasetError",
    "PairList",
    "Dataset",
    "LFWDataset",
    "FolderDataset",
    "IdentificationSplit",
    "identification_split",
    "dataset_loaders",
    "load_dataset",
    "IMAGE_SUFFIXES",
]

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".ppm", ".pgm", ".tif", ".tiff"}


class DatasetError(ConfigError):
    """A dataset directory or protocol file is missing or malformed."""


@dataclass
class PairList:
    """Verification pairs: image keys ``a``/``b``, ``same`` labels and (optional) ``folds``."""

    a: list[str]
    b: list[str]
    same: np.ndarray
    folds: np.ndarray | None = None
    name: str = "pairs"

    def __len__(self) -> int:
        return len(self.a)

    def images(self) -> list[str]:
        """Distinct image keys, in first-use order."""
        return list(dict.fromkeys([*self.a, *self.b]))

    def subset(self, limit: int | None) -> "PairList":
        """At most ``limit`` pairs, balanced over (fold, label) groups, deterministic (file order)."""
        if not limit or limit >= len(self):
            return self
        if limit < 2:
            raise ConfigError("--limit must be at least 2 pairs (one genuine, one impostor)")
        folds = self.folds if self.folds is not None else np.zeros(len(self), np.int64)
        groups: dict[tuple[int, bool], list[int]] = {}
        for i, (f, s) in enumerate(zip(folds, self.same)):
            groups.setdefault((int(f), bool(s)), []).append(i)
        keys = sorted(groups)
        chosen: list[int] = []
        depth = 0
        while len(chosen) < limit:  # round-robin over groups keeps folds and labels balanced
            added = False
            for k in keys:
                if depth < len(groups[k]) and len(chosen) < limit:
                    chosen.append(groups[k][depth])
                    added = True
            if not added:
                break
            depth += 1
        idx = np.array(sorted(chosen))
        sub_folds = self.folds[idx] if self.folds is not None else None
        if sub_folds is not None and min(np.bincount(sub_folds)[np.unique(sub_folds)]) < 2:
            sub_folds = None  # too few per fold: the protocol falls back to stratified folds
        return PairList(
            [self.a[i] for i in idx],
            [self.b[i] for i in idx],
            self.same[idx],
            sub_folds,
            f"{self.name}[:{limit}]",
        )


class Dataset:
    """Base class of benchmark datasets."""

    name: str = "dataset"

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).expanduser()
        if not self.root.is_dir():
            raise DatasetError(f"dataset root {self.root} is not a directory")

    @property
    def image_root(self) -> Path:
        """Directory the image keys are relative to."""
        return self.root

    def path(self, key: str) -> Path:
        """Absolute path of an image key."""
        return self.image_root / key

    def pairs(self, protocol: str = "pairs") -> PairList:
        """Verification pairs of a protocol."""
        raise DatasetError(f"dataset {self.name!r} has no verification pairs")

    def identities(self) -> dict[str, list[str]]:
        """``{person: [image keys]}`` (sorted), from person/ sub-folders of the image root."""
        out: dict[str, list[str]] = {}
        for d in sorted(p for p in self.image_root.iterdir() if p.is_dir()):
            imgs = sorted(f"{d.name}/{f.name}" for f in d.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
            if imgs:
                out[d.name] = imgs
        if not out:
            raise DatasetError(f"{self.image_root} has no person/ sub-folders with images")
        return out

    def describe(self) -> dict[str, Any]:
        return {"dataset": self.name, "root": str(self.root)}


class LFWDataset(Dataset):
    """Labeled Faces in the Wild: a standard LFW directory with the protocol files.

    Accepted layouts: ``root/images/<Name>/<Name>_0001.jpg`` (or ``root/lfw/…``,
    ``root/lfw-deepfunneled/…``, or the person folders directly in ``root``) with
    ``pairs.txt`` / ``pairsDevTest.txt`` / ``pairsDevTrain.txt`` in ``root``.
    """

    name = "lfw"
    PROTOCOL_FILES = {"pairs": "pairs.txt", "devtest": "pairsDevTest.txt", "devtrain": "pairsDevTrain.txt"}

    def __init__(self, root: str | Path, **_: Any) -> None:
        super().__init__(root)
        for sub in ("images", "lfw", "lfw-deepfunneled", "lfw_funneled", "lfw-funneled"):
            if (self.root / sub).is_dir():
                self._images = self.root / sub
                break
        else:
            self._images = self.root

    @property
    def image_root(self) -> Path:
        return self._images

    def _key(self, name: str, num: str, line_no: int, fname: str) -> str:
        try:
            n = int(num)
        except ValueError:
            raise DatasetError(f"{fname}:{line_no}: image number {num!r} is not an integer") from None
        return f"{name}/{name}_{n:04d}.jpg"

    def pairs(self, protocol: str = "pairs") -> PairList:
        """Parse ``pairs.txt`` (10 folds) or ``pairsDevTest.txt`` / ``pairsDevTrain.txt`` (no folds)."""
        fname = self.PROTOCOL_FILES.get(protocol, protocol)
        path = self.root / fname
        if not path.is_file():
            raise DatasetError(
                f"LFW protocol file {path} not found (protocols: {', '.join(self.PROTOCOL_FILES)})"
            )
        lines = [ln.split() for ln in path.read_text().splitlines()]
        lines = [ln for ln in lines if ln]
        if not lines:
            raise DatasetError(f"{path} is empty")
        head = lines[0]
        try:
            if len(head) == 2:
                n_folds, per = int(head[0]), int(head[1])
            elif len(head) == 1:
                n_folds, per = 1, int(head[0])
            else:
                raise ValueError
        except ValueError:
            raise DatasetError(f"{path}:1: expected 'folds pairs_per_class' or 'pairs_per_class'") from None
        body = lines[1:]
        if len(body) != n_folds * 2 * per:
            raise DatasetError(f"{path}: header promises {n_folds * 2 * per} pairs, found {len(body)}")
        a, b, same, folds = [], [], [], []
        for i, ln in enumerate(body):
            line_no = i + 2
            if len(ln) == 3:
                a.append(self._key(ln[0], ln[1], line_no, fname))
                b.append(self._key(ln[0], ln[2], line_no, fname))
                same.append(True)
            elif len(ln) == 4:
                a.append(self._key(ln[0], ln[1], line_no, fname))
                b.append(self._key(ln[2], ln[3], line_no, fname))
                same.append(False)
            else:
                raise DatasetError(f"{path}:{line_no}: expected 3 or 4 fields, got {len(ln)}")
            folds.append(i // (2 * per))
        pl = PairList(
            a, b, np.array(same, bool), np.array(folds, np.int64) if n_folds > 1 else None, f"lfw-{protocol}"
        )
        missing = [k for k in pl.images()[:50] if not self.path(k).is_file()]
        if missing:
            raise DatasetError(f"LFW images missing under {self.image_root}, e.g. {missing[0]}")
        return pl


class FolderDataset(Dataset):
    """A folder of ``person/`` sub-folders of photos (identification, 1:N).

    An optional ``pairs`` file in LFW format (``name i j`` is not meaningful
    here, so it lists keys: ``keyA keyB 0|1`` per line) enables verification.
    """

    name = "folder"

    def __init__(self, root: str | Path, pairs_file: str | Path | None = None, **_: Any) -> None:
        super().__init__(root)
        self.pairs_file = Path(pairs_file) if pairs_file else None

    def pairs(self, protocol: str = "pairs") -> PairList:
        if self.pairs_file is None:
            raise DatasetError("the folder dataset has no pairs: give pairs_file (lines 'keyA keyB 0|1')")
        a, b, same = [], [], []
        for i, ln in enumerate(self.pairs_file.read_text().splitlines(), 1):
            f = ln.split()
            if not f:
                continue
            if len(f) != 3 or f[2] not in ("0", "1"):
                raise DatasetError(f"{self.pairs_file}:{i}: expected 'keyA keyB 0|1'")
            a.append(f[0])
            b.append(f[1])
            same.append(f[2] == "1")
        return PairList(a, b, np.array(same, bool), None, f"folder-{self.pairs_file.name}")


@dataclass
class IdentificationSplit:
    """Gallery (enrolled images per person) and probes (mated and non-mated)."""

    gallery: dict[str, list[str]]
    probes: list[str]
    probe_ids: list[str]

    @property
    def enrolled(self) -> set[str]:
        return set(self.gallery)

    def images(self) -> list[str]:
        return list(dict.fromkeys([k for v in self.gallery.values() for k in v] + self.probes))

    def describe(self) -> dict[str, int]:
        mated = sum(1 for p in self.probe_ids if p in self.gallery)
        return {
            "enrolled": len(self.gallery),
            "gallery_images": sum(len(v) for v in self.gallery.values()),
            "probes": len(self.probes),
            "mated_probes": mated,
            "non_mated_probes": len(self.probes) - mated,
        }


def identification_split(
    identities: dict[str, list[str]],
    *,
    gallery_per_id: int = 1,
    enrolled_every: int = 2,
    max_probes_per_id: int | None = 5,
    include_singletons: bool = False,
    limit: int | None = None,
) -> IdentificationSplit:
    """Deterministic open-set split.

    People with more than ``gallery_per_id`` photos are candidates for enrollment;
    every ``enrolled_every``-th of them (sorted by name) is enrolled with their
    first ``gallery_per_id`` photos, and their other photos become mated probes.
    The other candidates' photos (and, with ``include_singletons``, people with
    too few photos) become non-mated probes. ``max_probes_per_id`` caps probes per
    person; ``limit`` caps the number of people considered (quick runs).
    """
    if gallery_per_id < 1 or enrolled_every < 1:
        raise ConfigError("gallery_per_id and enrolled_every must be >= 1")
    people = sorted(identities)
    cands = [p for p in people if len(identities[p]) > gallery_per_id]
    if limit:
        cands = cands[: max(int(limit), 2)]
    gallery: dict[str, list[str]] = {}
    probes: list[str] = []
    probe_ids: list[str] = []
    for i, p in enumerate(cands):
        imgs = identities[p]
        if i % enrolled_every == 0:
            gallery[p] = imgs[:gallery_per_id]
            rest = imgs[gallery_per_id:]
        else:
            rest = imgs
        rest = rest[:max_probes_per_id] if max_probes_per_id else rest
        probes.extend(rest)
        probe_ids.extend([p] * len(rest))
    if include_singletons:
        singles = [p for p in people if len(identities[p]) <= gallery_per_id]
        if limit:
            singles = singles[: int(limit)]
        for p in singles:
            probes.extend(identities[p][:1])
            probe_ids.append(p)
    if not gallery:
        raise DatasetError("no person has enough photos to be enrolled")
    return IdentificationSplit(gallery, probes, probe_ids)


# ---------------------------------------------------------------------- registry

Loader = Callable[..., Dataset]
BUILTIN: dict[str, Loader] = {"lfw": LFWDataset, "folder": FolderDataset}


def dataset_loaders() -> dict[str, Loader]:
    """Built-in loaders plus those of every ``facesdk_datasets`` plugin (plugins win)."""
    out = dict(BUILTIN)
    try:
        from facesdk.plugins import get_plugin_manager

        for group in reversed(get_plugin_manager().hook.facesdk_datasets()):
            for name, loader in (group or {}).items():
                out[name] = loader
    except Exception as exc:  # a broken plugin must not break the harness
        log.warning("dataset plugins failed to load: %s", exc)
    return out


def load_dataset(name: str, root: str | Path, **options: Any) -> Dataset:
    """Instantiate dataset ``name`` over ``root``."""
    loaders = dataset_loaders()
    if name not in loaders:
        raise DatasetError(f"unknown dataset {name!r} (known: {', '.join(sorted(loaders))})")
    ds = loaders[name](root, **options)
    if not isinstance(ds, Dataset):
        raise DatasetError(f"dataset plugin {name!r} returned {type(ds).__name__}, not a Dataset")
    return ds
