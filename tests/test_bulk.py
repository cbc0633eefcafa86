"""Bulk jobs: the same per-chunk function on a local process pool and on a local Ray instance."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from facesdk.bulk import embed_bulk, enroll_folders
from facesdk.errors import ConfigError
from facesdk.gallery import Gallery

REC = {"detector": "yunet-2023mar", "embedder": "mobilefacenet-sirius", "backend": "onnxruntime"}
PEOPLE = ["Colin_Powell", "George_W_Bush", "Tony_Blair"]


@pytest.fixture(scope="module")
def images(shared: Path) -> list[Path]:
    root = shared / "data/lfw/images"
    return [f for p in PEOPLE for f in sorted((root / p).glob("*.jpg"))[:3]]


def _load(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def test_process_pool_matches_inline_and_keeps_order(images: list[Path], tmp_path: Path) -> None:
    inputs = [*images[:4], tmp_path / "missing.jpg", *images[4:]]
    a = embed_bulk(inputs, tmp_path / "inline.npz", recognizer=REC, executor="inline", chunk_size=3)
    b = embed_bulk(
        iter(inputs), tmp_path / "pool.npz", recognizer=REC, executor="process", workers=2, chunk_size=3
    )
    assert a.images == b.images == len(inputs) and a.errors == b.errors == 1 and b.faces == len(images)
    za, zb = _load(tmp_path / "inline.npz"), _load(tmp_path / "pool.npz")
    assert list(zb["source"]) == [str(p) for p in inputs]
    assert zb["error"][4].startswith("ImageError") and all(
        e == "" for i, e in enumerate(zb["error"]) if i != 4
    )
    assert np.array_equal(za["face_image"], zb["face_image"]) and 4 not in zb["face_image"]
    assert np.allclose(za["embedding"], zb["embedding"], atol=1e-5)
    prov = json.loads(str(zb["provenance"]))
    assert prov["model_id"] == "mobilefacenet-sirius" and prov["backend"] == "onnxruntime"
    with pytest.raises(ConfigError):
        embed_bulk(inputs, tmp_path / "x.csv", recognizer=REC)


def test_ray_round_trip_two_workers(images: list[Path], tmp_path: Path) -> None:
    import ray

    people = tmp_path / "people"
    for f in images:
        if f.name.endswith("_0003.jpg"):
            continue  # held out as the probe
        d = people / f.parent.name
        d.mkdir(parents=True, exist_ok=True)
        (d / f.name).symlink_to(f)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        res = enroll_folders(
            people, tmp_path / "g.npz", recognizer=REC, executor="ray", workers=2, chunk_size=2
        )
        emb = embed_bulk(
            images, tmp_path / "ray.npz", recognizer=REC, executor="ray", workers=2, chunk_size=2
        )
    finally:
        ray.shutdown()
    assert res.images == 6 and res.errors == 0 and emb.images == len(images)
    g = Gallery.load(tmp_path / "g.npz")
    assert sorted(g.names) == PEOPLE
    z = _load(tmp_path / "ray.npz")
    ref = embed_bulk(images, tmp_path / "inline.npz", recognizer=REC, executor="inline")
    assert ref.faces == emb.faces
    assert np.allclose(_load(tmp_path / "inline.npz")["embedding"], z["embedding"], atol=1e-5)
    probes = [i for i, f in enumerate(images) if f.name.endswith("_0003.jpg")]
    m = g.identify(z["embedding"][probes])
    assert [x.name for x in m] == PEOPLE


def test_cli_bulk_embed_and_enroll(
    images: list[Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from facesdk.cli import main

    people = tmp_path / "people"
    for f in images[:4]:
        (people / f.parent.name).mkdir(parents=True, exist_ok=True)
        (people / f.parent.name / f.name).symlink_to(f)
    common = ["--detector", REC["detector"], "--embedder", REC["embedder"], "--json"]
    assert (
        main(["bulk", "embed", str(people), "-o", str(tmp_path / "e.npz"), "--executor", "inline", *common])
        == 0
    )
    out = json.loads(capsys.readouterr().out)
    assert out["images"] == 4 and out["faces"] == 4 and out["errors"] == 0
    assert len(_load(tmp_path / "e.npz")["embedding"]) == 4
    assert (
        main(["bulk", "enroll", str(people), "-o", str(tmp_path / "g.npz"), "--executor", "inline", *common])
        == 0
    )
    assert sorted(Gallery.load(tmp_path / "g.npz").names) == sorted({f.parent.name for f in images[:4]})
    assert (
        main(["bulk", "embed", str(people), "-o", str(tmp_path / "e.csv"), "--executor", "inline", *common])
        == 2
    )


def test_parquet_output_equals_npz(images: list[Path], tmp_path: Path) -> None:
    import pyarrow.parquet as pq  # the 'parquet' extra (also in 'all')

    inputs = [*images[:4], tmp_path / "missing.jpg", *images[4:7]]
    a = embed_bulk(inputs, tmp_path / "out.npz", recognizer=REC, executor="inline", chunk_size=3)
    b = embed_bulk(inputs, tmp_path / "out.parquet", recognizer=REC, executor="inline", chunk_size=3)
    assert (a.images, a.errors, a.faces) == (b.images, b.errors, b.faces) == (len(inputs), 1, 7)
    f = pq.ParquetFile(tmp_path / "out.parquet")
    assert f.metadata.num_row_groups == 3  # one row group per chunk: written as the chunks arrive
    t = f.read().to_pydict()
    z = _load(tmp_path / "out.npz")
    assert t["index"] == list(range(len(inputs))) and t["source"] == [str(p) for p in inputs]
    assert t["error"][4].startswith("ImageError") and t["box"][4] == [] and t["embedding"][4] == []
    for i in range(len(inputs)):
        k = np.nonzero(z["face_image"] == i)[0]
        assert len(t["embedding"][i]) == len(k)
        if len(k):
            assert np.allclose(np.asarray(t["embedding"][i], np.float32), z["embedding"][k], atol=1e-6)
            assert np.allclose(np.asarray(t["box"][i]), z["box"][k], atol=1e-4)
    prov = json.loads(f.schema_arrow.metadata[b"facesdk"])
    assert prov == json.loads(str(z["provenance"]))
