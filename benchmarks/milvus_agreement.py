"""Milvus Lite gallery vs the embedded gallery on the same LFW descriptors: do they rank alike?

Stage ``milvus-agreement`` of ``facesdk bench`` (:mod:`facesdk_bench.stages`)::

    facesdk bench --config benchmarks/configs/milvus-agreement.yaml

Data: dlib ResNet descriptors of all LFW images (``shared/reference/lfw_dlib_descriptors.npz``). Gallery:
the first photo of each person with >= 2 photos, plus a second photo for ``extra`` people (the last
``extra`` of the first ``pool`` = 1,200 probe photos; their identity templates become means); probes:
the other photos of those people (the first ``probes``). Both galleries get the same adds; Milvus Lite
runs in a temporary folder with a FLAT index and inner product. Reported: top-1 agreement, top-3 names
and score differences on the first ``compare``, image-level top-1 agreement on the first
``image_probes``, and rank-1 accuracy against the true names (the scene of
``tests/test_milvus_store.py``).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["run", "to_markdown", "lfw_split"]


def lfw_split(desc_file: Path, max_probes: int) -> tuple[list[str], np.ndarray, list[str], np.ndarray]:
    """(gallery names, gallery descriptors, probe names, probe descriptors) as described above."""
    with np.load(desc_file, allow_pickle=False) as z:
        people = [str(p).split("/")[0] for p in z["paths"]]
        desc = z["descriptors"].astype(np.float32)
    first: dict[str, int] = {}
    count: dict[str, int] = {}
    for i, p in enumerate(people):
        first.setdefault(p, i)
        count[p] = count.get(p, 0) + 1
    g_idx = [i for p, i in first.items() if count[p] >= 2]
    gset = set(g_idx)
    probe_idx = [i for i, p in enumerate(people) if count[p] >= 2 and i not in gset][:max_probes]
    return [people[i] for i in g_idx], desc[g_idx], [people[i] for i in probe_idx], desc[probe_idx]


def run(
    shared: Path,
    probes: int = 1100,
    extra: int = 50,
    compare: int = 20,
    image_probes: int = 200,
    index: str = "FLAT",
    pool: int = 1200,
) -> dict[str, Any]:
    """Both galleries, the same adds and searches; agreement figures. The ``extra`` second photos are the
    last of the first ``pool`` probe photos (disjoint from the ``probes`` searched when ``pool`` >=
    ``probes + extra``)."""
    from facesdk.gallery import Gallery

    names, gal, probe_names, probe_desc = lfw_split(
        shared / "reference" / "lfw_dlib_descriptors.npz", max(int(pool), int(probes) + int(extra))
    )
    extra_n, extra_e = probe_names[-int(extra) :] if extra else [], probe_desc[-int(extra) :] if extra else []
    p_n, p_e = probe_names[: int(probes)], probe_desc[: int(probes)]
    kw = {"model_id": "dlib-resnet-v1", "embedding_size": int(gal.shape[1])}
    with tempfile.TemporaryDirectory() as tmp:
        mg = Gallery.open(f"milvus:{Path(tmp) / 'faces.db'}", collection="lfw", index=index, **kw)
        try:
            eg = Gallery("dlib-resnet-v1", int(gal.shape[1]))
            for g in (mg, eg):
                g.add_many(names, gal)
                if extra:
                    g.add_many(extra_n, extra_e)
            m_hits, e_hits = mg.search(p_e, top_k=3), eg.search(p_e, top_k=3)
            top1 = sum(a[0][0] == b[0][0] for a, b in zip(m_hits, e_hits))
            c = int(compare)
            names_same = sum([n for n, _ in a] == [n for n, _ in b] for a, b in zip(m_hits[:c], e_hits[:c]))
            dscore = max(
                (abs(x[1] - y[1]) for a, b in zip(m_hits[:c], e_hits[:c]) for x, y in zip(a, b)), default=0.0
            )
            ip = int(image_probes)
            mi = [h[0].name for h in mg.search_hits(p_e[:ip], 1, templates="image")]
            ei = [h[0].name for h in eg.search_hits(p_e[:ip], 1, templates="image")]
            index_built = mg.metadata().get("index")
        finally:
            mg.close()
    return {
        "gallery_identities": len(names),
        "gallery_images": len(names) + len(extra_n),
        "probes": len(p_n),
        "index": index_built,
        "top1_identical": int(top1),
        "top3_names_identical": int(names_same),
        "compared": min(c, len(p_n)),
        "max_abs_score_diff": float(dscore),
        "image_level_identical": int(sum(a == b for a, b in zip(mi, ei))),
        "image_probes": len(mi),
        "rank1_correct_milvus": int(sum(a[0][0] == n for a, n in zip(m_hits, p_n))),
    }


def to_markdown(res: dict[str, Any]) -> str:
    """One line with the agreement figures."""
    return (
        f"Milvus Lite ({res['index']}) vs embedded gallery: {res['gallery_identities']} identities "
        f"({res['gallery_images']} images), **top-1 identical for {res['top1_identical']}/{res['probes']} "
        f"probes**, top-3 names identical on {res['top3_names_identical']}/{res['compared']} "
        f"(max |Δscore| {res['max_abs_score_diff']:.1e}), image-level top-1 identical on "
        f"{res['image_level_identical']}/{res['image_probes']}; rank-1 correct "
        f"{res['rank1_correct_milvus']}/{res['probes']}"
    )
