"""Collecting mode (:func:`facesdk.gallery.collect.collect`) on a synthetic sequence of real LFW photos.

Stage ``collect-purity`` of ``facesdk bench`` (:mod:`facesdk_bench.stages`)::

    facesdk bench --config benchmarks/configs/collect-purity.yaml

The sequence: each of ``people`` contributes ``per_person`` consecutive frames (its LFW photos
``_0001`` …), and ``distractors`` frames of people with a single LFW photo (drawn with
``numpy.random.default_rng(seed)``) are spread evenly between the runs — the scene of
``tests/test_collect.py``. Frames are symlinks to the shared data in a temporary folder.

A face counts as its frame's person when its box centre lies within 30 px of the 250×250 image's centre
(LFW photos are centred on their person), otherwise as "background". Reported: faces, the chosen
``eps``, good clusters, purity (majority label / members, summed over good clusters), people recovered
(a good cluster whose majority is one of ``people``), and how many good clusters one-in-one mode keeps.
Options: ``people``, ``per_person`` (9), ``distractors`` (20), ``seed`` (0), ``min_faces`` (5),
``detector`` / ``embedder`` / ``backend`` (yunet-2023mar, mobilefacenet-sirius, onnxruntime).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from facesdk.errors import ConfigError

__all__ = ["run", "to_markdown", "build_sequence", "PEOPLE", "true_label", "cluster_purity"]

PEOPLE = ["Ariel_Sharon", "Hugo_Chavez", "Junichiro_Koizumi", "Serena_Williams", "Vladimir_Putin"]


def build_sequence(
    lfw_images: Path, out: Path, people: list[str], per_person: int, distractors: int, seed: int = 0
) -> dict[str, str]:
    """Symlink the frames into ``out`` in order; returns frame path → person (``distractor:NAME``)."""
    singles = sorted(d.name for d in lfw_images.iterdir() if d.is_dir() and len(list(d.iterdir())) == 1)
    rng = np.random.default_rng(seed)
    picks = [lfw_images / s / f"{s}_0001.jpg" for s in rng.choice(singles, distractors, replace=False)]
    frames: list[tuple[Path, str]] = []
    per_gap = distractors // max(1, len(people))
    for i, person in enumerate(people):
        if "/" in person or person.startswith("."):
            raise ConfigError(f"collect-purity: not an LFW person name: {person!r}")
        for j in range(1, per_person + 1):
            frames.append((lfw_images / person / f"{person}_{j:04d}.jpg", person))
        for d in picks[i * per_gap : (i + 1) * per_gap]:
            frames.append((d, "distractor:" + d.parent.name))
    truth = {}
    for k, (src, who) in enumerate(frames):
        if not src.is_file():
            raise ConfigError(f"collect-purity: {src} not found")
        dst = out / f"frame_{k:04d}.jpg"
        dst.symlink_to(src)
        truth[str(dst)] = who
    return truth


def true_label(face: Any, truth: dict[str, str]) -> str:
    """The person a collected face shows: LFW photos are centred on their person, so a face whose box
    centre lies within 30 px of the 250×250 frame's centre is that person, any other a background face."""
    cx = (face.box[0] + face.box[2]) / 2
    cy = (face.box[1] + face.box[3]) / 2
    return truth[face.source] if abs(cx - 125) < 30 and abs(cy - 125) < 30 else "background"


def cluster_purity(
    good: list[Any], faces: list[Any], truth: dict[str, str], people: list[str]
) -> dict[str, Any]:
    """Purity of the good clusters (faces of each cluster's majority person / all their faces), the
    people recovered (majority of some cluster) and one record per cluster."""
    majority = total = 0
    recovered: set[str] = set()
    clusters = []
    for c in good:
        labels = [true_label(faces[i], truth) for i in c.members]
        top, n = max(((lab, labels.count(lab)) for lab in set(labels)), key=lambda x: x[1])
        majority += n
        total += len(labels)
        if top in people:
            recovered.add(top)
        clusters.append({"name": c.name, "members": len(labels), "majority": top, "majority_count": n})
    return {"purity": majority / max(total, 1), "recovered": recovered, "clusters": clusters}


def run(
    shared: Path,
    people: list[str] | None = None,
    per_person: int = 9,
    distractors: int = 20,
    seed: int = 0,
    min_faces: int = 5,
    detector: str = "yunet-2023mar",
    embedder: str = "mobilefacenet-sirius",
    backend: str = "onnxruntime",
    progress: bool = True,
) -> dict[str, Any]:
    """Collect some-in-one and one-in-one on the sequence; purity and people recovered."""
    os.environ.setdefault("FACESDK_MODEL_MIRROR", str(shared / "models"))  # YuNet, MobileFaceNet
    import facesdk
    from facesdk.gallery.collect import collect

    people = list(people or PEOPLE)
    rec = facesdk.FaceRecognizer(detector=detector, embedder=embedder, backend=backend)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            truth = build_sequence(
                shared / "data" / "lfw" / "images",
                Path(tmp),
                people,
                int(per_person),
                int(distractors),
                int(seed),
            )
            res = collect(rec, tmp, None, mode="some", min_faces=int(min_faces), progress=progress)
            one = collect(rec, tmp, None, mode="one", names=["Someone"], min_faces=int(min_faces))
    finally:
        rec.close()
    good = [c for c in res.clusters if c.good]
    pur = cluster_purity(good, res.faces, truth, people)
    return {
        "pipeline": f"{detector} + {embedder} on {backend}",
        "frames": len(truth),
        "people": people,
        "per_person": int(per_person),
        "distractors": int(distractors),
        "faces": len(res.faces),
        "eps": round(float(res.eps), 3),
        "good_clusters": len(good),
        "purity": round(pur["purity"], 4),
        "recovered": sorted(pur["recovered"]),
        "one_in_one_good_clusters": sum(c.good for c in one.clusters),
        "clusters": pur["clusters"],
    }


def to_markdown(res: dict[str, Any]) -> str:
    """One line with the figures."""
    return (
        f"{res['pipeline']}: {res['frames']} frames ({len(res['people'])} people × {res['per_person']} + "
        f"{res['distractors']} distractors), {res['faces']} faces, eps {res['eps']}, "
        f"**{res['good_clusters']} good clusters, purity {100 * res['purity']:.1f} %, "
        f"{len(res['recovered'])}/{len(res['people'])} people recovered**; one-in-one keeps "
        f"{res['one_in_one_good_clusters']} cluster(s)"
    )
