"""The Milvus gallery store plugin against a real Milvus Lite (started by pymilvus from a local file).

Real LFW embeddings: dlib ResNet descriptors of every LFW image (``shared/reference``). Gallery = the
first photo of each person with at least two photos; probes = their other photos.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("pymilvus")
pytest.importorskip("milvus_lite")

from facesdk.errors import ConfigError, GalleryError, IncompatibleGalleryError
from facesdk.gallery import Gallery, gallery_store_factories


@pytest.fixture(scope="module")
def lfw(shared: Path) -> tuple[list[str], np.ndarray, list[str], np.ndarray]:
    from facesdk_bench.milvus_agreement import lfw_split

    return lfw_split(shared / "reference/lfw_dlib_descriptors.npz", 1200)


def test_plugin_registered_by_entry_point() -> None:
    from importlib.metadata import entry_points

    assert any(ep.name == "milvus" for ep in entry_points(group="facesdk"))
    assert "milvus" in gallery_store_factories()


def test_milvus_lite_agrees_with_embedded_store(tmp_path: Path, lfw) -> None:
    names, gal, probe_names, probes = lfw
    db = tmp_path / "faces.db"
    kw = {"model_id": "dlib-resnet-v1", "embedding_size": 128, "model_sha256": "cd" * 32}
    mg = Gallery.open(f"milvus:{db}", collection="lfw", index="FLAT", **kw)
    eg = Gallery("dlib-resnet-v1", 128, model_sha256="cd" * 32)
    mg.add_many(names, gal)
    eg.add_many(names, gal)
    # a second photo for a few identities: identity templates become means (weight imprinting)
    extra_n, extra_e = probe_names[-50:], probes[-50:]
    mg.add_many(extra_n, extra_e)
    eg.add_many(extra_n, extra_e)
    assert len(mg) == len(eg) == len(names) and mg.counts() == eg.counts()
    p_n, p_e = probe_names[:1100], probes[:1100]
    m_top = [h[0][0] for h in mg.search(p_e, top_k=3)]
    e_top = [h[0][0] for h in eg.search(p_e, top_k=3)]
    agree = np.mean([a == b for a, b in zip(m_top, e_top)])
    assert len(p_n) >= 1000 and agree == 1.0
    assert np.mean([a == b for a, b in zip(m_top, p_n)]) > 0.8  # and they are mostly right (rank-1 LFW)
    ms = mg.search(p_e[:20], top_k=3)
    es = eg.search(p_e[:20], top_k=3)
    for a, b in zip(ms, es):
        assert [n for n, _ in a] == [n for n, _ in b]
        assert np.allclose([s for _, s in a], [s for _, s in b], atol=1e-4)
    mi = [h[0].name for h in mg.search_hits(p_e[:200], 1, templates="image")]
    ei = [h[0].name for h in eg.search_hits(p_e[:200], 1, templates="image")]
    assert mi == ei
    # rename / remove / metadata / provenance, then reopen (load_collection) in a fresh client
    who = names[0]
    mg.rename(who, "Renamed Person")
    assert "Renamed Person" in mg and who not in mg
    mg.remove(names[1])
    mg.set_identity_meta("Renamed Person", {"badge": 1})
    with pytest.raises(GalleryError):
        mg.remove("nobody at all")
    mg.save()
    mg.close()
    again = Gallery.open(f"milvus:{db}", collection="lfw", create=False)
    assert again.model_id == "dlib-resnet-v1" and again.model_sha256 == "cd" * 32
    assert len(again) == len(names) - 1 and again.identity_meta("Renamed Person") == {"badge": 1}
    assert again.search(gal[0], 1)[0][0][0] == "Renamed Person"
    assert again.metadata()["store"] == "milvus" and again.metadata()["index"] == "FLAT"
    again.close()
    with pytest.raises(IncompatibleGalleryError):
        Gallery.open(f"milvus:{db}", collection="lfw", model_id="mobilefacenet-sirius", embedding_size=192)
    with pytest.raises(IncompatibleGalleryError):
        Gallery.open(f"milvus:{db}", collection="lfw", model_id="dlib-resnet-v1", embedding_size=128,
                     model_sha256="ef" * 32)


def test_milvus_index_choice_and_bad_options(tmp_path: Path, lfw) -> None:
    names, gal, _, _ = lfw
    g = Gallery.open(f"milvus:{tmp_path / 'h.db'}", collection="hnsw", index="HNSW", model_id="m",
                     embedding_size=128)
    g.add_many(names[:200], gal[:200])
    assert g.metadata()["index"] in ("HNSW", "FLAT")  # what Milvus reports it built
    assert g.search(gal[:50], 1)[0][0][0] == names[0]
    name = 'quote " and back\\slash'
    g.add(name, gal[300])
    assert g.search(gal[300], 1)[0][0][0] == name and g.remove(name) == 1
    g.close()
    with pytest.raises(ConfigError):
        Gallery.open(f"milvus:{tmp_path / 'x.db'}", index="NOPE", model_id="m", embedding_size=128)
    with pytest.raises(ConfigError):
        Gallery.open(f"milvus:{tmp_path / 'x.txt'}", model_id="m", embedding_size=128)
    with pytest.raises(GalleryError):
        Gallery.open(f"milvus:{tmp_path / 'y.db'}", collection="absent", create=False)
