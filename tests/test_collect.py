"""Collecting mode on a synthetic sequence of real LFW photos (several people + distractors), and the
``facesdk gallery`` / ``facesdk collect`` commands (info, list, rename, remove, export, import, migrate)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("sklearn")

import facesdk
from facesdk.cli import main
from facesdk.gallery.collect import collect, head_pose, kdistance_eps, sharpness
from facesdk.errors import ConfigError, GalleryError
from facesdk.gallery import Gallery
from facesdk_bench.collect_purity import cluster_purity

PEOPLE = ["Ariel_Sharon", "Hugo_Chavez", "Junichiro_Koizumi", "Serena_Williams", "Vladimir_Putin"]
PER_PERSON = 9
DISTRACTORS = 20


@pytest.fixture(scope="module")
def rec() -> facesdk.FaceRecognizer:
    return facesdk.FaceRecognizer(
        detector="yunet-2023mar", embedder="mobilefacenet-sirius", backend="onnxruntime"
    )


@pytest.fixture(scope="module")
def sequence(shared: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """A folder of frames in order: each person's photos in a run, distractors (people with one LFW
    photo) between the runs. Symlinks to shared/ (nothing copied). Returns (folder, frame → person)."""
    root = shared / "data/lfw/images"
    singles = sorted(d.name for d in root.iterdir() if d.is_dir() and len(list(d.iterdir())) == 1)
    rng = np.random.default_rng(0)
    distractors = [root / s / f"{s}_0001.jpg" for s in rng.choice(singles, DISTRACTORS, replace=False)]
    frames: list[tuple[Path, str]] = []
    per_gap = DISTRACTORS // len(PEOPLE)
    for i, person in enumerate(PEOPLE):
        for j in range(1, PER_PERSON + 1):
            frames.append((root / person / f"{person}_{j:04d}.jpg", person))
        for d in distractors[i * per_gap : (i + 1) * per_gap]:
            frames.append((d, "distractor:" + d.parent.name))
    out = tmp_path_factory.mktemp("seq")
    truth = {}
    for k, (src, who) in enumerate(frames):
        dst = out / f"frame_{k:04d}.jpg"
        dst.symlink_to(src)
        truth[str(dst)] = who
    return out, truth


def test_collect_some_in_one_recovers_people_with_purity(rec, sequence, tmp_path: Path) -> None:
    folder, truth = sequence
    g = rec.open_gallery(tmp_path / "collected.npz", keep_crops=True)
    res = collect(rec, folder, g, mode="some", min_faces=5, keep_crops=True)
    g.save()
    good = [c for c in res.clusters if c.good]
    pur = cluster_purity(good, res.faces, truth, PEOPLE)
    purity, recovered = pur["purity"], pur["recovered"]
    print(
        f"collect: {len(res.faces)} faces, eps {res.eps:.3f}, {len(good)} good clusters, purity "
        f"{purity:.3f}, "
        f"recovered {len(recovered)}/{len(PEOPLE)}"
    )
    assert purity >= 0.95
    assert len(recovered) >= len(PEOPLE) - 1 and len(good) == len(recovered)  # one cluster per person
    assert set(res.enrolled) == {c.name for c in good} and all(n.startswith("person_") for n in res.enrolled)
    h = Gallery.load(tmp_path / "collected.npz")
    rec_ = h.images(good[0].name)
    assert len(rec_) == len(good[0].members) and rec_[0].has_crop and "yaw" in rec_[0].meta
    # one-in-one: only the largest cluster, under the given name
    one = collect(rec, folder, None, mode="one", names=["Someone"], min_faces=5)
    assert sum(c.good for c in one.clusters) == 1 and [c.name for c in one.clusters if c.good] == ["Someone"]


def test_pose_sharpness_and_eps_helpers() -> None:
    from facesdk.align import ARCFACE_112

    yaw, pitch = head_pose(ARCFACE_112)
    assert abs(yaw) < 2 and abs(pitch) < 2  # the frontal template is frontal
    turned = ARCFACE_112.copy()
    turned[2, 0] += 15  # nose to the side
    assert head_pose(turned)[0] > 20
    assert head_pose(None) == (None, None)
    rng = np.random.default_rng(0)
    flat = np.full((64, 64), 128, np.uint8)
    assert sharpness(flat) == 0 and sharpness(rng.integers(0, 255, (64, 64))) > 1000
    centres = rng.standard_normal((3, 16))
    pts = np.concatenate([c + 0.05 * rng.standard_normal((20, 16)) for c in centres])
    eps = kdistance_eps(pts, 3)
    assert 0 < eps < 0.1
    with pytest.raises(ConfigError):
        kdistance_eps(pts[:3], 3)


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out if code == 0 else out.out + out.err


def test_gallery_commands(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rng = np.random.default_rng(1)
    p = tmp_path / "g.npz"
    g = Gallery.open(p, model_id="m", embedding_size=16)
    for n in ("ada", "bob", "cy"):
        g.add(n, rng.standard_normal((2, 16)).astype(np.float32), meta={"source": f"{n}.jpg"})
    g.save()
    code, out = _run(capsys, "gallery", "info", str(p), "--json")
    info = json.loads(out)
    assert code == 0 and info["model_id"] == "m" and info["identities"] == 3 and info["images"] == 6
    code, out = _run(capsys, "gallery", "list", str(p), "--images", "--json")
    rows = json.loads(out)
    assert [r["name"] for r in rows] == ["ada", "bob", "cy"] and rows[0]["images"][0]["meta"][
        "source"
    ] == "ada.jpg"
    code, out = _run(capsys, "gallery", "rename", str(p), "bob", "Robert", "--json")
    assert code == 0 and Gallery.load(p).names == ["ada", "Robert", "cy"]
    img = rows[0]["images"][0]["image_id"]
    code, out = _run(capsys, "gallery", "remove", str(p), "cy", "--image", img, "--json")
    assert code == 0 and json.loads(out)["identities_left"] == 2 and Gallery.load(p).counts()["ada"] == 1
    code, out = _run(capsys, "gallery", "rename", str(p), "nobody", "x")
    assert code == GalleryError.exit_code and "nobody" in out
    # export to a new file and to Milvus Lite, import back (nothing duplicated)
    e = tmp_path / "copy.npz"
    code, out = _run(capsys, "gallery", "export", str(p), str(e), "--json")
    assert (
        code == 0 and json.loads(out)["copied"] == 3 and Gallery.load(e).counts() == Gallery.load(p).counts()
    )
    pytest.importorskip("pymilvus")
    mdb = tmp_path / "m.db"
    code, out = _run(capsys, "gallery", "export", str(p), f"milvus:{mdb}", "--json")
    assert code == 0, out
    code, out = _run(capsys, "gallery", "list", f"milvus:{mdb}", "--json")
    assert sorted(r["name"] for r in json.loads(out)) == ["Robert", "ada"]
    code, out = _run(capsys, "gallery", "import", str(e), str(p), "--json")
    assert code == 0 and json.loads(out)["skipped"] == 3 and json.loads(out)["copied"] == 0
    code, out = _run(capsys, "gallery", "info", str(tmp_path / "absent.npz"))
    assert code == GalleryError.exit_code and "not found" in out
    code, out = _run(
        capsys,
        "gallery",
        "migrate",
        str(p),
        str(tmp_path / "new.npz"),
        "--embedder",
        "mobilefacenet-sirius",
        "--detector",
        "yunet-2023mar",
        "--backend",
        "onnxruntime",
    )
    assert code == GalleryError.exit_code and "crop" in out  # nothing kept to re-embed


def test_collect_cli_then_migrate_crops_to_another_model(
    rec, shared: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = shared / "data/lfw/images"
    folder = tmp_path / "frames"
    folder.mkdir()
    k = 0
    for person in PEOPLE[:2]:
        for j in range(1, 8):
            (folder / f"f{k:03d}.jpg").symlink_to(root / person / f"{person}_{j:04d}.jpg")
            k += 1
    gal = tmp_path / "c.npz"
    code, out = _run(
        capsys,
        "collect",
        str(folder),
        "-g",
        str(gal),
        "--keep-crops",
        "--min-faces",
        "4",
        "--names",
        "Sharon,Chavez",
        "--detector",
        "yunet-2023mar",
        "--embedder",
        "mobilefacenet-sirius",
        "--backend",
        "onnxruntime",
        "--json",
    )
    assert code == 0, out
    res = json.loads(out)
    assert sorted(res["enrolled"]) == ["Chavez", "Sharon"]
    # the collected gallery served from Milvus Lite to `facesdk identify -g milvus:…`
    mdb = tmp_path / "c.db"
    code, out = _run(capsys, "gallery", "export", str(gal), f"milvus:{mdb}")
    assert code == 0, out
    code, out = _run(
        capsys,
        "identify",
        "-g",
        f"milvus:{mdb}",
        str(root / PEOPLE[1] / f"{PEOPLE[1]}_0010.jpg"),
        "--detector",
        "yunet-2023mar",
        "--embedder",
        "mobilefacenet-sirius",
        "--backend",
        "onnxruntime",
        "--json",
    )
    assert code == 0, out
    assert json.loads(out)[0]["faces"][0]["top_k"][0][0] == "Chavez"
    new = tmp_path / "dlib.npz"
    code, out = _run(
        capsys,
        "gallery",
        "migrate",
        str(gal),
        str(new),
        "--embedder",
        "dlib-resnet-v1",
        "--detector",
        "yunet-2023mar",
        "--backend",
        "onnxruntime",
        "--json",
    )
    assert code == 0, out
    m = Gallery.load(new)
    assert (
        m.model_id == "dlib-resnet-v1"
        and m.embedding_size == 128
        and m.counts() == Gallery.load(gal).counts()
    )
    # the migrated gallery recognises a held-out photo with the new model
    r2 = facesdk.FaceRecognizer(detector="yunet-2023mar", embedder="dlib-resnet-v1", backend="onnxruntime")
    r2.use_gallery(m)
    faces = r2.identify(root / PEOPLE[1] / f"{PEOPLE[1]}_0010.jpg")
    assert any(f.match is not None and f.match.name == "Chavez" for f in faces)


def test_enroll_keeps_sources_and_crops_when_the_store_does(rec, shared: Path, tmp_path: Path) -> None:  # noqa: ANN001
    knn = shared / "data/photos/knn_examples/train/obama"
    g = rec.open_gallery(tmp_path / "k.npz", keep_crops=True)
    rec.enroll("obama", sorted(knn.iterdir()), gallery=g)
    g.save()
    imgs = Gallery.load(tmp_path / "k.npz").images("obama")
    assert imgs and all(
        r.has_crop and r.meta["source"].endswith(".jpg") and "crop_box" in r.meta for r in imgs
    )


def test_enroll_cli_keep_crops_then_migrate(
    shared: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`facesdk enroll --keep-crops` keeps the crops `gallery migrate` re-embeds; one report per photo."""
    root = shared / "data/lfw/images"
    people = tmp_path / "people"
    for person in PEOPLE[:2]:
        (people / person).mkdir(parents=True)
        for j in range(1, 4):
            (people / person / f"{j}.jpg").symlink_to(root / person / f"{person}_{j:04d}.jpg")
    (people / PEOPLE[0] / "broken.jpg").write_bytes(b"not an image")
    gal = tmp_path / "e.npz"
    common = ["--detector", "yunet-2023mar", "--backend", "onnxruntime"]
    code, out = _run(
        capsys, "enroll", "-g", str(gal), str(people), "--keep-crops", "--embedder", "mobilefacenet-sirius",
        *common, "--json",
    )
    assert code == 0, out
    res = json.loads(out)
    assert res["enrolled"] == {PEOPLE[0]: 3, PEOPLE[1]: 3} and res["crops_kept"] is True
    assert [s["image"].endswith("broken.jpg") for s in res["skipped"]] == [True]
    rep = {r["name"]: r for r in res["reports"]}[PEOPLE[0]]
    assert [p["enrolled"] for p in rep["photos"]] == [True, True, True, False]
    new = tmp_path / "dlib.npz"
    code, out = _run(
        capsys, "gallery", "migrate", str(gal), str(new), "--embedder", "dlib-resnet-v1", *common, "--json"
    )
    assert code == 0, out
    assert json.loads(out)["reembedded"] == 6
    m = Gallery.load(new)
    assert m.model_id == "dlib-resnet-v1" and m.counts() == {PEOPLE[0]: 3, PEOPLE[1]: 3}
    # without --keep-crops nothing can be migrated, and --name with an unusable photo exits non-zero
    plain = tmp_path / "plain.npz"
    code, out = _run(
        capsys, "enroll", "-g", str(plain), "--name", "x", str(people / PEOPLE[1] / "1.jpg"),
        str(people / PEOPLE[0] / "broken.jpg"), "--embedder", "mobilefacenet-sirius", *common,
    )
    assert code != 0 and "broken.jpg" in out and Gallery.load(plain).counts() == {"x": 1}
    code, out = _run(
        capsys, "enroll", "-g", str(tmp_path / "strict.npz"), "--name", "x", "--strict",
        str(people / PEOPLE[1] / "1.jpg"), str(people / PEOPLE[0] / "broken.jpg"),
        "--embedder", "mobilefacenet-sirius", *common,
    )
    assert code != 0 and not (tmp_path / "strict.npz").exists()
