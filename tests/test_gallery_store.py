"""The GalleryStore seam: API, exact search, file format hardening, threads, processes, kill -9."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import zipfile
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest

from facesdk.errors import (
    ConfigError,
    GalleryConflictError,
    GalleryError,
    GalleryLockedError,
    IncompatibleGalleryError,
)
from facesdk.fileio import file_lock
from facesdk.gallery import UNKNOWN, Gallery, GalleryStore, gallery_store_factories, l2_normalize
from facesdk.gallery.file import EmbeddedStore
from facesdk.plugins import hookimpl, register_plugin, unregister_plugin
from facesdk.gallery.index import ExactIndex

D = 32
SHA = "ab" * 32


def unit(rng: np.random.Generator, n: int, d: int = D) -> np.ndarray:
    return l2_normalize(rng.standard_normal((n, d)).astype(np.float32))


def test_enroll_search_rename_remove_and_templates(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    g = Gallery("m", D, model_sha256=SHA, backend="onnxruntime", precision="fp32", threshold=0.6)
    people = {f"p{i}": unit(rng, 3) for i in range(20)}
    ids = {n: g.add(n, e, meta={"source": n}) for n, e in people.items()}
    assert len(g) == 20 and g.counts()["p3"] == 3 and len(ids["p3"]) == 3
    # identity template = normalised mean of the normalised photos (weight imprinting)
    assert np.allclose(g.templates[3], l2_normalize(people["p3"].mean(0)), atol=1e-6)
    img_ids, names, mat = g.image_templates("p3")
    assert img_ids == ids["p3"] and names == ["p3"] * 3 and np.allclose(mat, people["p3"])
    # a photo's own embedding finds its identity and that very photo (per-image templates)
    hits = g.search_hits(people["p7"][1], top_k=3, templates="image")[0]
    assert (
        hits[0].name == "p7" and hits[0].image_id == ids["p7"][1] and hits[0].similarity == pytest.approx(1.0)
    )
    assert g.search(people["p7"][1], top_k=3)[0][0][0] == "p7"
    m = g.identify(np.stack([people["p5"][0], -people["p5"][0]]), threshold=0.3)
    assert m[0].name == "p5" and m[0].image_id in ids["p5"] and m[1].name == UNKNOWN
    g.rename("p5", "Ada")
    assert "Ada" in g and "p5" not in g and g.identify(people["p5"][0], threshold=0.3)[0].name == "Ada"
    assert g.images("Ada")[0].meta == {"source": "p5"}
    with pytest.raises(GalleryError):
        g.rename("p6", "Ada")
    assert g.remove("p6") == 3 and "p6" not in g and len(g) == 19
    assert g.remove_images(ids["p7"][:2]) == 2 and g.counts()["p7"] == 1
    assert np.allclose(g.templates[g.names.index("p7")], people["p7"][2], atol=1e-6)
    g.remove_images(ids["p7"][2:])
    assert "p7" not in g  # last photo gone: identity gone
    with pytest.raises(GalleryError):
        g.remove("nobody")
    for bad in ("", UNKNOWN, "a\nb", 5):
        with pytest.raises(ConfigError):
            g.add(bad, people["p1"])  # type: ignore[arg-type]
    with pytest.raises(IncompatibleGalleryError):
        g.add("x", np.ones(D + 1, np.float32))
    with pytest.raises(GalleryError):
        g.add("x", np.full(D, np.nan, np.float32))
    g.set_identity_meta("Ada", {"employee": 7})
    g.set_calibration({"task": "open-set", "far": 0.01, "data": "LFW DevTrain"}, threshold=0.42)
    p = g.save(tmp_path / "g.npz")
    h = Gallery.load(p)
    assert h.names == g.names and np.allclose(h.templates, g.templates) and h.counts() == g.counts()
    assert h.identity_meta("Ada") == {"employee": 7} and h.threshold == 0.42
    assert h.calibration == {"task": "open-set", "far": 0.01, "data": "LFW DevTrain"}
    assert h.model_sha256 == SHA and h.backend == "onnxruntime" and h.precision == "fp32"
    assert [r.image_id for r in h.images()] == [r.image_id for r in g.images()]


def test_exact_search_matches_brute_force_all_storages() -> None:
    rng = np.random.default_rng(1)
    x = unit(rng, 5000, 64)
    q = l2_normalize(x[:300] + 0.3 * rng.standard_normal((300, 64)).astype(np.float32))
    ref = q @ x.T
    ref_top = np.argsort(-ref, axis=1, kind="stable")[:, :10]
    for storage in ("fp32", "fp16", "int8"):
        ix = ExactIndex(64, storage=storage)
        for i in range(0, len(x), 7):  # many small appends
            ix.append(x[i : i + 7])
        assert ix.capacity <= 2 * len(x) and np.array_equal(ix.matrix, x)
        r = ix.search(q, 10)
        assert np.array_equal(r.rows[:, 0], ref_top[:, 0]), storage  # top-1 identical
        assert np.allclose(r.scores, np.take_along_axis(ref, r.rows, 1), atol=1e-5)  # exact fp32 scores
        assert (np.diff(r.scores, axis=1) <= 1e-7).all()
    ix = ExactIndex(64)
    ix.append(x[:10])
    ix.delete([0, 5])
    assert np.array_equal(ix.matrix, np.delete(x[:10], [0, 5], axis=0))
    assert ix.search(q[:2], 100).rows.shape == (2, 8)


def test_appends_are_amortised_constant() -> None:
    g = Gallery("m", 8)
    rng = np.random.default_rng(2)
    e = unit(rng, 20000, 8)
    caps = set()
    for i in range(20000):
        g.add(f"n{i}", e[i])
        caps.add(g.store._tindex.capacity)  # type: ignore[attr-defined]
    assert len(caps) <= 12  # capacity doubles: log2(20000/16) + 1 reallocations
    assert g.search(e[12345], 1)[0][0][0] == "n12345"


def test_threads_lose_nothing(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    n_threads, per = 4, 1500
    emb = unit(rng, n_threads * per)
    g = Gallery("m", D)
    errors: list[BaseException] = []

    def work(t: int) -> None:
        try:
            for i in range(t * per, (t + 1) * per):
                g.add(f"id{i}", emb[i])
                if i % 97 == 0:
                    g.search(emb[i], 3)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    ts = [threading.Thread(target=work, args=(t,)) for t in range(n_threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert not errors and len(g) == n_threads * per
    names = [h[0][0] for h in g.search(emb, 1)]
    assert names == [f"id{i}" for i in range(len(emb))]  # every probe finds itself
    h = Gallery.load(g.save(tmp_path / "t.npz"))
    assert len(h) == len(g) and [x[0][0] for x in h.search(emb, 1)] == names


_WORKER = textwrap.dedent(
    """
    import sys, numpy as np
    from facesdk.gallery import Gallery
    path, tag, n, every = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    g = Gallery.open(path, model_id="m", embedding_size=32)
    rng = np.random.default_rng(abs(hash(tag)) % 2**32)
    for i in range(n):
        g.add(f"{tag}{i}", rng.standard_normal(32).astype(np.float32))
        if (i + 1) % every == 0:
            g.save()
    g.save()
    """
)


def test_two_processes_enrolling_lose_nothing(tmp_path: Path) -> None:
    path = tmp_path / "shared.npz"
    procs = [
        subprocess.Popen([sys.executable, "-c", _WORKER, str(path), tag, "120", "7"]) for tag in ("a", "b")
    ]
    assert [p.wait(timeout=300) for p in procs] == [0, 0]
    g = Gallery.load(path)
    assert sorted(g.names) == sorted([f"a{i}" for i in range(120)] + [f"b{i}" for i in range(120)])
    assert not list(tmp_path.glob("*.tmp"))


def test_conflicting_renames_raise_and_keep_the_file(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    path = tmp_path / "c.npz"
    g0 = Gallery.open(path, model_id="m", embedding_size=D)
    g0.add("x", unit(rng, 1))
    g0.save()
    a, b = Gallery.load(path), Gallery.load(path)
    a.rename("x", "y")
    a.add("only-a", unit(rng, 1))
    a.save()
    b.add("only-b", unit(rng, 1))
    b.save()  # merges a's rename and addition
    assert sorted(Gallery.load(path).names) == ["only-a", "only-b", "y"]
    c = Gallery.load(path)
    b.rename("y", "z")
    b.save()
    c.rename("y", "w")
    with pytest.raises(GalleryConflictError):
        c.save()
    assert sorted(Gallery.load(path).names) == ["only-a", "only-b", "z"]
    with pytest.raises(IncompatibleGalleryError):
        Gallery.open(path, model_id="other", embedding_size=D)


def test_locked_file_gives_typed_error(tmp_path: Path) -> None:
    path = tmp_path / "l.npz"
    g = Gallery.open(path, model_id="m", embedding_size=D, lock_timeout=0.2)
    g.add("x", np.ones(D, np.float32))
    with file_lock(path), pytest.raises(GalleryLockedError):
        g.save()
    g.save()
    assert Gallery.load(path).names == ["x"]


_SAVER = textwrap.dedent(
    """
    import sys, numpy as np
    from facesdk.gallery import Gallery
    g = Gallery.open(sys.argv[1], model_id="m", embedding_size=512)
    rng = np.random.default_rng(0)
    base = len(g)
    i = 0
    while True:
        g.add(f"n{base + i:06d}", rng.standard_normal((20, 512)).astype(np.float32))
        g.save()
        print(base + i, flush=True)
        i += 1
    """
)


def test_kill_9_during_saves_leaves_old_or_new(tmp_path: Path) -> None:
    path = tmp_path / "k.npz"
    rng = np.random.default_rng(5)
    for round_ in range(4):
        before = len(Gallery.load(path)) if path.exists() else 0
        p = subprocess.Popen([sys.executable, "-c", _SAVER, str(path)], stdout=subprocess.PIPE, text=True)
        assert p.stdout is not None
        p.stdout.readline()  # at least one save happened
        time.sleep(0.05 + 0.1 * rng.random())
        os.kill(p.pid, signal.SIGKILL)
        p.wait()
        g = Gallery.load(path)  # never torn
        names = g.names
        assert len(names) > before and names == [f"n{i:06d}" for i in range(len(names))]
        assert all(c == 20 for c in g.counts().values())
    g.add("after", np.ones(512, np.float32))
    g.save()  # removes temps a killed writer left
    assert not list(tmp_path.glob("*.tmp"))


# ---------------------------------------------------------------------- hostile files
def _npz(path: Path, **arrays: np.ndarray) -> Path:
    with open(path, "wb") as f:
        np.savez(f, **arrays)
    return path


def _good_members() -> dict[str, np.ndarray]:
    meta = {
        "format": "facesdk-gallery",
        "version": 2,
        "provenance": {"model_id": "m", "embedding_size": 4},
        "generation": "x",
    }
    e = l2_normalize(np.eye(4, dtype=np.float32)[:2])
    return {
        "meta": np.array(json.dumps(meta)),
        "names": np.array(["a", "b"]),
        "identity_meta": np.array("[{}, {}]"),
        "image_ids": np.array(["i1", "i2"]),
        "image_identity": np.array([0, 1]),
        "image_emb": e,
        "image_weight": np.ones(2, np.float32),
        "image_samples": np.ones(2, np.int64),
        "image_meta": np.array("[{}, {}]"),
    }


def test_hostile_and_malformed_files(tmp_path: Path) -> None:
    good = _npz(tmp_path / "good.npz", **_good_members())
    assert Gallery.load(good).names == ["a", "b"]
    np.save(tmp_path / "plain.npy", np.zeros((3, 4), np.float32))
    cases: dict[str, dict[str, np.ndarray]] = {
        "badmeta": {**_good_members(), "meta": np.array("{not json")},
        "notgallery": {**_good_members(), "meta": np.array('{"format": "x"}')},
        "badversion": {**_good_members(), "meta": np.array('{"format": "facesdk-gallery", "version": 99}')},
        "noprov": {**_good_members(), "meta": np.array('{"format": "facesdk-gallery", "version": 2}')},
        "wrongshape": {**_good_members(), "image_emb": np.ones((2, 5), np.float32)},
        "wrongdtype": {**_good_members(), "image_identity": np.array([0.0, 1.0])},
        "outofrange": {**_good_members(), "image_identity": np.array([0, 7])},
        "nan": {**_good_members(), "image_emb": np.full((2, 4), np.nan, np.float32)},
        "notunit": {**_good_members(), "image_emb": np.ones((2, 4), np.float32)},
        "dupnames": {**_good_members(), "names": np.array(["a", "a"])},
        "metalen": {**_good_members(), "image_meta": np.array("[{}]")},
        "missing": {k: v for k, v in _good_members().items() if k != "image_emb"},
        "extra": {**_good_members(), "evil": np.zeros(3)},
        "objects": {**_good_members(), "names": np.array([object(), object()], dtype=object)},
    }
    for name, members in cases.items():
        p = tmp_path / f"{name}.npz"
        if name == "objects":
            with open(p, "wb") as f:
                np.savez(f, **members)  # a pickled object array: must never be unpickled
        else:
            _npz(p, **members)
        with pytest.raises(GalleryError):
            Gallery.load(p)
    for p in (tmp_path / "plain.npy",):
        with pytest.raises(GalleryError):
            Gallery.load(p)
    # a member whose header declares ~2 TB but holds 16 bytes: refused before any allocation
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for k, v in _good_members().items():
            if k == "image_emb":
                hdr = io.BytesIO()
                np.lib.format.write_array_header_1_0(
                    hdr, {"descr": "<f4", "fortran_order": False, "shape": (1 << 30, 512)}
                )
                zf.writestr("image_emb.npy", hdr.getvalue() + b"\0" * 16)
            else:
                b = io.BytesIO()
                np.save(b, v)
                zf.writestr(k + ".npy", b.getvalue())
    (tmp_path / "huge.npz").write_bytes(buf.getvalue())
    with pytest.raises(GalleryError, match="declares"):
        Gallery.load(tmp_path / "huge.npz")
    with pytest.raises(GalleryError, match="limit"):
        Gallery.load(good, max_bytes=10)


def test_version_1_files_still_load_and_migrate(tmp_path: Path) -> None:
    rng = np.random.default_rng(6)
    sums = rng.standard_normal((3, D)).astype(np.float32)
    meta = {
        "format": "facesdk-gallery",
        "version": 1,
        "model_id": "m",
        "model_sha256": None,
        "embedding_size": D,
        "backend": "onnxruntime",
        "precision": "fp32",
        "threshold": 0.4,
    }
    p = _npz(
        tmp_path / "v1.npz",
        names=np.array(["a", "b", "c"]),
        sums=sums,
        counts=np.array([2, 1, 5]),
        meta=np.array(json.dumps(meta)),
    )
    g = Gallery.load(p)
    assert g.names == ["a", "b", "c"] and g.counts() == {"a": 2, "b": 1, "c": 5} and g.threshold == 0.4
    assert np.allclose(g.templates, l2_normalize(sums), atol=1e-6)
    e = unit(rng, 1)
    g.add("a", e)  # running-sum semantics of version 1 are kept exactly
    assert np.allclose(g.templates[0], l2_normalize(sums[0] + e[0]), atol=1e-5)
    g.save()
    h = Gallery.load(p)
    assert h.counts()["a"] == 3 and np.allclose(h.templates, g.templates, atol=1e-6)


class _MemStores:
    """A third-party store plugin: records that the hook was asked and what it opened."""

    opened: ClassVar[list[str]] = []

    @hookimpl
    def facesdk_gallery_stores(self) -> dict[str, object]:
        def factory(uri: str, *, provenance: object, create: bool, **kw: object) -> GalleryStore:
            self.opened.append(uri)
            return EmbeddedStore(provenance)  # type: ignore[arg-type]

        return {"memtest": factory}


def test_gallery_stores_hook_is_called() -> None:
    register_plugin(_MemStores(), name="memtest")
    try:
        assert "memtest" in gallery_store_factories() and "file" in gallery_store_factories()
        g = Gallery.open("memtest:some/where", model_id="m", embedding_size=D)
        assert _MemStores.opened == ["some/where"]
        g.add("x", np.ones(D, np.float32))
        assert g.search(np.ones(D, np.float32), 1)[0][0][0] == "x"
        with pytest.raises(ConfigError):
            Gallery.open("nosuchstore://x", model_id="m", embedding_size=D)
        with pytest.raises(ConfigError):
            Gallery.open("x", store="nosuchstore", model_id="m", embedding_size=D)
    finally:
        unregister_plugin("memtest")
