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
    return zoo.ModelCard.from_dict({
        "id": cid, "task": "detect", "family": "yunet", "license": "Apache-2.0",
        "input": {"size": [640, 640], "color": "BGR"},
        "artifacts": [{"format": "onnx", "file": "face_detection_yunet_2023mar.onnx", "sha256": sha,
                       "sources": [{"kind": "url", "location": url}]}],
    })


def test_builtin_cards_have_provenance() -> None:
    cards = {c.id: c for c in zoo.list_cards()}
    assert {"yunet-2023mar", "ultraface-rfb-320", "mobilefacenet-sirius"} <= set(cards)
    for c in cards.values():
        assert c.license and c.artifacts and c.input.size[0] > 0
        for a in c.artifacts:
            assert a.sha256 is None or len(a.sha256) == 64
    assert not cards["mobilefacenet-sirius"].commercial_safe and cards["yunet-2023mar"].commercial_safe
    assert "mobilefacenet-sirius" not in {c.id for c in zoo.list_cards(commercial_safe=True)}


def test_url_download_verified_and_cached(server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
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
    card = zoo.ModelCard.from_dict({
        "id": "pkg", "task": "detect", "family": "yunet", "license": "MIT", "input": {"size": [1, 1]},
        "artifacts": [{"format": "toml", "file": "yunet-2023mar.toml", "sha256": None,
                       "sources": [{"kind": "package", "location": "facesdk_zoo:cards/yunet-2023mar.toml"}]}],
    })
    assert zoo.fetch(card).name == "yunet-2023mar.toml"


def test_bad_cards(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="missing field"):
        zoo.ModelCard.from_dict({"id": "x"})
    bad = tmp_path / "bad.toml"
    bad.write_text("id = [unclosed")
    with pytest.raises(ConfigError):
        zoo.ModelCard.from_toml(bad)
    with pytest.raises(ConfigError):
        zoo.ModelCard.from_dict({"id": "x", "task": "dance", "family": "f", "license": "MIT",
                                 "input": {"size": [1, 1]}})
