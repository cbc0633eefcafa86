"""Plugin discovery through entry points, a third-party backend end to end, strict mode."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest

import facesdk
from facesdk import zoo
from facesdk.backend import Artifact
from facesdk.errors import BackendUnavailableError, DeviceMismatchError
from facesdk.image import load_image
from facesdk.plugins import get_backend, list_backends, reset_plugin_manager

FIXTURE = Path(__file__).with_name("plugin_fixture")


def test_import_facesdk_imports_no_engine() -> None:
    code = (
        "import sys, facesdk, facesdk.pipeline, facesdk.cli; "
        "print(sorted(m for m in ('onnxruntime','openvino','ai_edge_litert','tensorrt','serial','torch') if "
        "m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
    out = subprocess.run(
        [sys.executable, "-c", "import facesdk, sys; print('onnxruntime' in sys.modules)"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert out.strip() == "False"


def test_builtin_backend_is_an_entry_point() -> None:
    from importlib.metadata import entry_points

    names = {ep.name for ep in entry_points(group="facesdk")}
    assert "onnxruntime" in names
    rows = {r["name"]: r for r in list_backends()}
    assert rows["onnxruntime"]["available"] and "cpu" in rows["onnxruntime"]["devices"]
    assert rows["onnxruntime"]["formats"] == ["onnx"]


@pytest.fixture
def toy_plugin() -> Iterator[None]:
    sys.path.insert(0, str(FIXTURE))
    reset_plugin_manager()
    try:
        yield
    finally:
        sys.path.remove(str(FIXTURE))
        sys.modules.pop("facesdk_toy", None)
        reset_plugin_manager()


def test_third_party_backend_found_by_entry_point(toy_plugin: None, tmp_path: Path, shared: Path) -> None:
    rows = {r["name"]: r for r in list_backends()}
    assert rows["toy"]["available"] and rows["toy"]["formats"] == ["npz-linear"]
    be = get_backend("toy")
    w = np.random.default_rng(0).normal(size=(112 * 112 * 3, 16)).astype(np.float32)
    np.savez(tmp_path / "proj.npz", w=w)
    s = be.load(Artifact(tmp_path / "proj.npz", "npz-linear"))
    assert s.run(np.ones((2, 112 * 112 * 3), np.float32))[0].shape == (2, 16)
    # The third-party backend runs the embedder inside the normal pipeline.
    card = zoo.ModelCard.from_dict(
        {
            "id": "toy-projection",
            "task": "embed",
            "family": "toy",
            "license": "MIT",
            "embedding_size": 16,
            "template": "arcface112",
            "input": {"size": [112, 112], "mean": [127.5] * 3, "std": [128.0] * 3, "layout": "NHWC"},
            "artifacts": [
                {
                    "format": "npz-linear",
                    "file": "proj.npz",
                    "sha256": zoo.sha256_file(tmp_path / "proj.npz"),
                    "sources": [{"kind": "path", "location": str(tmp_path / "proj.npz")}],
                }
            ],
        }
    )
    rec = facesdk.FaceRecognizer(embedder=card, detector_backend="onnxruntime", embedder_backend="toy")
    faces = rec.faces(shared / "data/photos/two_people.jpg")
    assert len(faces) == 2 and faces[0].embedding.shape == (16,)  # type: ignore[union-attr]
    assert rec.describe()["embedder"]["backend"] == "toy"


def test_unknown_backend() -> None:
    with pytest.raises(BackendUnavailableError, match="unknown backend"):
        get_backend("no-such-engine")


def test_strict_mode_refuses_silent_fallback(caplog: pytest.LogCaptureFixture) -> None:
    be = get_backend("ort")  # alias
    art = Artifact(zoo.fetch("yunet-2023mar", "onnx"), "onnx")
    with pytest.raises(DeviceMismatchError, match="CUDAExecutionProvider"):
        be.load(art, device="cuda:0")
    with pytest.raises(DeviceMismatchError):
        be.load(art, device="quantum")
    with pytest.raises(DeviceMismatchError):
        facesdk.FaceRecognizer(backend="onnxruntime", device="cuda")
    with caplog.at_level(logging.WARNING):
        s = be.load(art, device="cuda:0", strict=False)
    assert s.device == "cpu" and "falling back" in caplog.text
    s2 = be.load(art, device="cpu", threads=1, graph_optimization="basic")
    assert s2.device == "cpu" and s2.max_batch == 1


def test_broken_plugin_does_not_hide_others(tmp_path: Path) -> None:
    from facesdk.plugins import list_plugin_errors

    dist = tmp_path / "facesdk_broken-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: facesdk-broken\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[facesdk]\naaa_broken = facesdk_broken_missing_module\n")
    sys.path.insert(0, str(tmp_path))
    reset_plugin_manager()
    try:
        names = {r["name"] for r in list_backends()}
        assert "onnxruntime" in names
        assert "aaa_broken" in list_plugin_errors()
    finally:
        sys.path.remove(str(tmp_path))
        reset_plugin_manager()


def test_plugin_discovery_imports_no_backend_module() -> None:
    """Loading every entry point imports only the small ``plugin`` modules; listing the backend
    classes and the detector families, aligners and landmarkers imports their registering modules but
    still no engine, emulator (``max7800x.accel``), board driver or yaml."""
    code = (
        "import sys\n"
        "from facesdk.plugins import backend_classes, get_plugin_manager\n"
        "get_plugin_manager()\n"
        "print(sorted(m for m in sys.modules if m.startswith('facesdk_backends.') and not "
        "m.endswith('.plugin')"
        " and m.count('.') > 1))\n"
        "backend_classes()\n"
        "from facesdk.detect import families\n"
        "from facesdk.plugins import aligners, landmarker_families\n"
        "families(), aligners(), landmarker_families()\n"
        "heavy = ('onnxruntime', 'openvino', 'ai_edge_litert', 'tensorrt', 'serial', 'yaml', 'cv2',\n"
        "         'pymilvus',\n"
        "         'facesdk_backends.max7800x.accel.emulator', 'facesdk_backends.max7800x.accel.network',\n"
        "         'facesdk_backends.max7800x.board')\n"
        "print(sorted(m for m in heavy if m in sys.modules))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split("\n")
    assert out[0] == "[]" and out[1] == "[]", out


def test_backend_order_and_aliases_are_class_attributes(toy_plugin: None) -> None:
    from facesdk.backend import Backend
    from facesdk.plugins import backend_classes, backend_order

    classes = backend_classes()
    order = backend_order()
    assert order[:4] == ["onnxruntime", "openvino", "tensorrt", "tflite"]  # by Backend.priority
    assert order.index("toy") > order.index("tflite")  # a third party without a priority comes last
    assert classes["toy"].priority == Backend.priority
    for alias, name in [
        ("ort", "onnxruntime"),
        ("ov", "openvino"),
        ("litert", "tflite"),
        ("trt", "tensorrt"),
    ]:
        assert alias in classes[name].aliases and get_backend(alias).name == name


def test_backend_contract_checks(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Format, file, precision, closed-session and strict-or-warn checks, written once on Backend/Session."""
    from facesdk.errors import BackendError, ModelFormatError, ModelNotFoundError

    be = get_backend("onnxruntime")
    with pytest.raises(ModelFormatError, match="not 'tflite'"):
        be.load(Artifact(tmp_path / "m.tflite", "tflite"))
    with pytest.raises(ModelNotFoundError):
        be.load(Artifact(tmp_path / "missing.onnx", "onnx"))
    art = Artifact(zoo.fetch("yunet-2023mar", "onnx"), "onnx")
    with pytest.raises(DeviceMismatchError, match="precision 'ai8x'"):
        be.load(art, precision="ai8x")
    s = be.load(art, device="cpu")
    x = np.zeros((1, 3, 640, 640), np.float32)
    assert len(s.run(x)) > 0
    s.close()
    s.close()  # idempotent
    with pytest.raises(BackendError, match="closed"):
        s.run(x)
    with pytest.raises(DeviceMismatchError, match="nowhere"):
        be.strict_or_warn(True, "asked for nowhere")
    with caplog.at_level(logging.WARNING):
        be.strict_or_warn(False, "asked for nowhere", "running somewhere")
    assert "asked for nowhere; running somewhere" in caplog.text


def test_third_party_detector_family_landmarker_and_aligner(toy_plugin: None, shared: Path) -> None:
    """A separate distribution adds a detector family, a landmarker family and an aligner through
    hooks; the pipeline uses each, and the core holds no table of them."""
    import dataclasses

    import facesdk_toy  # the fixture's module, loaded by its entry point

    from facesdk.detect import families
    from facesdk.plugins import aligners, landmarker_families

    assert "toy-centre" in families() and "yunet" in families()
    assert "toy-identity5" in landmarker_families() and "arcface112:toy5" in aligners()
    img = load_image(shared / "data/photos/two_people.jpg")
    ref = facesdk.FaceRecognizer(
        detector="yunet-2023mar", embedder="mobilefacenet-sirius", backend="onnxruntime"
    )
    everyone = ref.detect(img)
    assert len(everyone) == 2
    centre = dataclasses.replace(zoo.get_card("yunet-2023mar"), id="toy-centre-yunet", family="toy-centre")
    rec = facesdk.FaceRecognizer(detector=centre, embedder="mobilefacenet-sirius", backend="onnxruntime")
    got = rec.detect(img)
    cx = img.shape[1] / 2
    want = min(everyone, key=lambda d: abs((d.box[0] + d.box[2]) / 2 - cx))
    assert len(got) == 1 and facesdk_toy.CALLS["detector"] == 1 and np.allclose(got[0].box, want.box)

    lm_card = zoo.ModelCard.from_dict(
        {
            "id": "toy-identity",
            "task": "landmarks",
            "family": "toy-identity5",
            "license": "MIT",
            "input": {"size": [112, 112]},
        }
    )
    rec2 = facesdk.FaceRecognizer(
        detector="yunet-2023mar", embedder="mobilefacenet-sirius", backend="onnxruntime", landmarker=lm_card
    )
    e2 = np.stack([f.embedding for f in rec2.faces(img)])
    assert facesdk_toy.CALLS["landmarker"] == 2 and facesdk_toy.CALLS["aligner"] == 2
    e1 = np.stack([f.embedding for f in ref.faces(img)])  # the same points through the card's template
    assert np.allclose(e1, e2, atol=1e-6) and rec2.describe()["landmarker"] == "toy-identity"


def test_alignment_template_is_card_data(shared: Path) -> None:
    """A 5-point template comes from a card's [alignment] table, not from code."""
    from facesdk.align import ARCFACE_112, align_face, template_points
    from facesdk.errors import ConfigError

    pts, size = template_points("arcface112")  # carried by the mobilefacenet-sirius card
    assert size == (112, 112) and np.allclose(pts, ARCFACE_112)
    shifted = zoo.ModelCard.from_dict(
        {
            "id": "toy-shifted",
            "task": "embed",
            "family": "toy",
            "license": "MIT",
            "template": "toy-shifted",
            "input": {"size": [120, 112]},
            "alignment": {"points": (ARCFACE_112 + [8.0, 0.0]).tolist(), "size": [120, 112]},
        }
    )
    assert shifted.alignment is not None and shifted.alignment.name == "toy-shifted"
    img = load_image(shared / "data/photos/two_people.jpg")
    d = facesdk.FaceRecognizer(
        detector="yunet-2023mar", embedder="mobilefacenet-sirius", backend="onnxruntime"
    ).detect(img)[0]
    a = align_face(img, d.box, d.landmarks, "arcface112")
    b = align_face(img, d.box, d.landmarks, shifted.alignment)
    assert b.shape == (112, 120, 3)
    assert np.abs(b[:, 8:120].astype(int) - a.astype(int)).mean() < 1.0  # the same face, 8 px to the right
    with pytest.raises(ConfigError, match="alignment"):
        zoo.ModelCard.from_dict(
            {
                "id": "bad",
                "task": "embed",
                "family": "x",
                "license": "MIT",
                "input": {"size": [1, 1]},
                "alignment": {"points": [[0, 0]], "size": [9, 9]},
            }
        )
    with pytest.raises(ConfigError, match="unknown alignment template"):
        template_points("no-such-template")


def test_lazy_public_names_resolve() -> None:
    """The two PEP 562 re-export maps that remain (``facesdk`` and ``facesdk_backends.max7800x``: lazy public
    API, not extension registration) cannot drift: every name in ``__all__`` resolves."""
    import importlib

    for mod in ("facesdk", "facesdk_backends.max7800x"):
        m = importlib.import_module(mod)
        missing = [n for n in m.__all__ if getattr(m, n, None) is None]
        assert missing == [], (mod, missing)
