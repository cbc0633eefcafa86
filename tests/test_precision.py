"""Precision is real: strict mismatches raise, lenient ones warn once and report what runs; int8 artifacts
built by the zoo recipes (ORT QDQ, OpenVINO NNCF) agree with fp32 on real aligned faces."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import numpy as np
import pytest

import facesdk
from facesdk import zoo
from facesdk.backend import Artifact
from facesdk.errors import ConfigError, DeviceMismatchError
from facesdk.plugins import get_backend
from facesdk.precision import normalize_precision, onnx_precision

MFN = "mobilefacenet-sirius"
DLIB = "dlib-resnet-v1"
#: calibration faces for the test copies of the recipes (the shipped cards use 500)
CALIB = 48


def test_precision_names() -> None:
    assert normalize_precision("F32") == "fp32" and normalize_precision("bfloat16") == "bf16"
    with pytest.raises(ConfigError):
        normalize_precision("int3")
    with pytest.raises(DeviceMismatchError):
        get_backend("onnxruntime").precision_that_runs("int8", "fp32", True, "x")
    assert get_backend("onnxruntime").precision_that_runs("int8", "fp32", False, "x") == "fp32"


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
@pytest.mark.parametrize("asked", ["int8", "fp16"])
def test_strict_mismatch_raises_lenient_warns_once(
    backend: str, asked: str, caplog: pytest.LogCaptureFixture
) -> None:
    art = Artifact.from_path(zoo.fetch(MFN, "onnx"))
    b = get_backend(backend)
    if backend == "openvino" and asked == "fp16":
        import openvino as ov

        if "FP16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"):
            pytest.skip("this CPU runs f16: no mismatch to provoke")
    with pytest.raises(DeviceMismatchError):
        b.load(art, precision=asked)
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        s = b.load(art, precision=asked, strict=False)
    assert s.precision != asked and s.precision in ("fp32", "bf16")
    assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 1


def test_tflite_float_model_is_not_int8() -> None:
    art = Artifact.from_path(zoo.fetch(MFN, "tflite"), "tflite")
    b = get_backend("tflite")
    with pytest.raises(DeviceMismatchError):
        b.load(art, precision="int8")
    assert b.load(art, precision="int8", strict=False).precision == "fp32"


def test_recognizer_int8_without_artifact_is_refused(caplog: pytest.LogCaptureFixture) -> None:
    # A card without an int8 artifact: precision="int8" cannot silently run the fp32 file in strict mode.
    card = zoo.get_card(MFN)
    fp32_only = dataclasses.replace(card, artifacts=tuple(a for a in card.artifacts if a.precision == "fp32"))
    with pytest.raises(DeviceMismatchError):
        facesdk.FaceRecognizer(embedder=fp32_only, backend="onnxruntime", precision="int8")
    with caplog.at_level(logging.WARNING):
        rec = facesdk.FaceRecognizer(
            embedder=fp32_only, backend="onnxruntime", precision="int8", strict=False
        )
    assert rec.describe()["embedder"]["precision"] == "fp32"
    assert rec.describe()["detector"]["precision"] == "fp32"


def test_openvino_fp32_pins_f32_and_bf16_is_real() -> None:
    import openvino as ov

    art = Artifact.from_path(zoo.fetch(MFN, "onnx"))
    b = get_backend("openvino")
    s = b.load(art, precision="fp32")
    assert s.precision == "fp32"
    from facesdk_backends.openvino.backend import _precision_name

    assert _precision_name(s._compiled.get_property("INFERENCE_PRECISION_HINT")) == "fp32"
    has_bf16 = "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    if has_bf16:
        assert b.load(art, precision="bf16").precision == "bf16"
    else:
        with pytest.raises(DeviceMismatchError):
            b.load(art, precision="bf16")


@pytest.fixture(scope="module")
def small_calib_card() -> zoo.ModelCard:
    """The dlib ResNet card with its int8 recipes calibrated on fewer faces (test speed)."""
    card = zoo.get_card(DLIB)
    arts = []
    for a in card.artifacts:
        if a.precision == "int8":
            srcs = tuple(
                dataclasses.replace(s, options={**s.options, "calibration": CALIB}) for s in a.sources
            )
            a = dataclasses.replace(a, sources=srcs)
        arts.append(a)
    test_card = dataclasses.replace(card, artifacts=tuple(arts))
    return test_card


@pytest.fixture(scope="module")
def real_crops(shared: Path) -> np.ndarray:
    """Aligned faces of the knn_examples photos (not LFW: never in the calibration set)."""
    rec = facesdk.FaceRecognizer(embedder=DLIB, backend="onnxruntime")
    out = []
    for p in sorted((shared / "data/photos/knn_examples").rglob("*.jp*g"))[:8]:
        img = rec.load(p)
        dets = rec.detect(img)
        if dets:
            out.append(rec.align(img, dets))
    return np.concatenate(out)


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_int8_parity_on_real_crops(
    backend: str, small_calib_card: zoo.ModelCard, real_crops: np.ndarray
) -> None:
    ref = facesdk.FaceRecognizer(embedder=DLIB, backend="onnxruntime", tta="none")
    q = facesdk.FaceRecognizer(
        embedder=small_calib_card,
        embedder_backend=backend,
        detector_backend="onnxruntime",
        precision="int8",
        tta="none",
    )
    d = q.describe()["embedder"]
    assert d["precision"] == "int8" and d["backend"] == backend
    a, b = ref.embed_crops(real_crops), q.embed_crops(real_crops)
    cos = (a * b).sum(1)
    assert len(real_crops) >= 8
    assert cos.mean() >= 0.99 and cos.min() >= 0.97, (cos.mean(), cos.min())
    # same/different decisions at the recogniser's threshold: at most one of all face pairs flips
    iu = np.triu_indices(len(a), 1)
    flips = ((a @ a.T)[iu] >= ref.threshold) != ((b @ b.T)[iu] >= ref.threshold)
    assert flips.sum() <= 1, flips.sum()


def test_int8_artifact_is_cached_by_key_and_carries_its_card(small_calib_card: zoo.ModelCard) -> None:
    import onnx

    p = zoo.fetch(small_calib_card, "onnx", "int8")
    assert onnx_precision(p) == "int8"
    mtime = p.stat().st_mtime_ns
    assert zoo.fetch(small_calib_card, "onnx", "int8") == p and p.stat().st_mtime_ns == mtime  # reused
    # key = (source sha256, tool version, calibration-set sha256)
    src_sha = zoo.sha256_file(zoo.fetch(DLIB, "onnx"))
    meta = {m.key: m.value for m in onnx.load(str(p), load_external_data=False).metadata_props}
    assert meta["facesdk.source_sha256"] == src_sha and meta["facesdk.precision"] == "int8"
    assert meta["facesdk.calibration_sha256"][:12] in p.parent.name and src_sha[:12] in p.parent.name
    assert meta["facesdk.tool"] in p.parent.name and meta["facesdk.model_id"] == DLIB
    # the card does not ask for uint8 Pads (bit-identical, not faster): dlib's five shortcut Pads stay
    # between DequantizeLinear and QuantizeLinear, and the file says so
    assert meta["facesdk.uint8_pads"] == "0"
    g = onnx.load(str(p)).graph
    made_by = {o: n.op_type for n in g.node for o in n.output}
    assert [made_by.get(n.input[0]) for n in g.node if n.op_type == "Pad"] == ["DequantizeLinear"] * 5
    # the fp32 file is never relabelled: asking it for fp32 works, the int8 one refuses fp32 in strict mode
    with pytest.raises(DeviceMismatchError):
        get_backend("onnxruntime").load(Artifact.from_path(p), precision="fp32")


def test_tensorrt_int8_build_is_import_safe() -> None:
    import importlib.util

    from facesdk.errors import BackendUnavailableError

    if importlib.util.find_spec("tensorrt") is not None:
        pytest.skip("tensorrt is installed: the GPU tests cover engine builds")
    art = Artifact.from_path(zoo.fetch(MFN, "onnx"))
    with pytest.raises(BackendUnavailableError):
        get_backend("tensorrt").compile(
            art, precision="int8", calibration=[np.zeros((1, 3, 112, 112), np.float32)]
        )


@pytest.mark.parametrize("model, tta, lo, hi", [(DLIB, "flip", 0.8, 1.0), (MFN, "none", 0.2, 0.6)])
def test_card_has_thresholds_per_backend_and_precision(model: str, tta: str, lo: float, hi: float) -> None:
    from facesdk.calibration import select_operating_point

    card = zoo.get_card(model)
    for backend, precision in [
        ("onnxruntime", "int8"),
        ("openvino", "int8"),
        ("openvino", "bf16"),
        ("tflite", "int8"),
    ]:
        pt = select_operating_point(
            card.operating_points, "verification", backend=backend, precision=precision, tta=tta
        )
        assert pt is not None and pt.backend == backend and pt.precision == precision
        assert lo < pt.threshold < hi and "LFW" in pt.data and "cross-validation" in pt.method
    # fp32 uses its own calibrated point (issue 9: LFW DevTrain) or [thresholds]; no int8 point is borrowed
    fp32 = select_operating_point(
        card.operating_points, "verification", backend="onnxruntime", precision="fp32", tta=tta
    )
    assert fp32 is None or fp32.precision in ("fp32", "*")


@pytest.fixture(scope="module")
def mfn_small_calib_card() -> zoo.ModelCard:
    """The MobileFaceNet card with its int8 recipes calibrated on fewer faces (test speed)."""
    card = zoo.get_card(MFN)
    arts = []
    for a in card.artifacts:
        if a.precision == "int8" and a.format in ("onnx", "tflite"):
            srcs = tuple(
                dataclasses.replace(s, options={**s.options, "calibration": CALIB}) for s in a.sources
            )
            a = dataclasses.replace(a, sources=srcs)
        arts.append(a)
    return dataclasses.replace(card, artifacts=tuple(arts))


@pytest.mark.parametrize("backend, fmt", [("onnxruntime", "onnx"), ("tflite", "tflite")])
def test_mobilefacenet_int8_parity_on_real_crops(
    backend: str, fmt: str, mfn_small_calib_card: zoo.ModelCard, shared: Path
) -> None:
    """MobileFaceNet int8 (PReLU fused, channels equalised, every PReLU split; every layer int8) on ONNX
    Runtime and in our full-int8 TFLite stays within the cosine bar of fp32 on real faces (not LFW)."""
    ref = facesdk.FaceRecognizer(embedder=MFN, backend="onnxruntime", tta="none")
    crops = []
    for p in sorted((shared / "data/photos/knn_examples").rglob("*.jp*g"))[:8]:
        img = ref.load(p)
        dets = ref.detect(img)
        if dets:
            crops.append(ref.align(img, dets))
    x = np.concatenate(crops)
    q = facesdk.FaceRecognizer(
        embedder=mfn_small_calib_card,
        embedder_backend=backend,
        detector_backend="onnxruntime",
        precision="int8",
        tta="none",
        strict=True,
    )
    d = q.describe()["embedder"]
    assert d["precision"] == "int8" and d["backend"] == backend
    assert "float_layers" not in d  # no layer kept in float
    art = Artifact.from_path(zoo.fetch(mfn_small_calib_card, fmt, "int8"))
    meta = get_backend(backend).read_metadata(art)
    # every Conv→PReLU split (split_prelu = "all"): no PReLU is left to run in float (ORT has no int8 PReLU)
    # or outside XNNPACK (no int8 PRELU there), which made int8 no faster than fp32
    assert len(meta["facesdk.split_prelu"].split(",")) == 33
    assert meta["facesdk.split_prelu"].split(",")[0].endswith("Conv2d_0/BatchNorm/FusedBatchNorm")
    assert int(meta["facesdk.equalized_pairs"]) > 30
    if fmt == "onnx":
        import onnx

        ops = {n.op_type for n in onnx.load(str(art.path)).graph.node}
    else:
        from ai_edge_litert.interpreter import Interpreter

        it = Interpreter(model_path=str(art.path))
        ops = {o["op_name"] for o in it._get_ops_details()}
    assert "PRelu" not in ops and "PRELU" not in ops, ops
    a, b = ref.embed_crops(x), q.embed_crops(x)
    cos = (a * b).sum(1)
    assert len(x) >= 8
    # 48-face calibration here; 500 faces on LFW: benchmarks/RESULTS.md
    assert cos.mean() >= 0.99 and cos.min() >= 0.97, (cos.mean(), cos.min())


def test_float_layers_of_a_mixed_precision_graph_are_read_from_the_graph(tmp_path: Path) -> None:
    """A layer left in float by the quantiser is listed (no label needed); a fully int8 graph lists none."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    from onnxruntime.quantization import QuantFormat, quantize_static

    from facesdk.precision import onnx_float_layers

    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "w0"),
        numpy_helper.from_array(rng.standard_normal((4, 4, 1, 1)).astype(np.float32), "w1"),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "w0"], ["y0"], name="first", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["y0"], ["r0"]),
        helper.make_node("Conv", ["r0", "w1"], ["y"], name="second"),
    ]
    g = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])],
        inits,
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    onnx.save(m, str(tmp_path / "f.onnx"))

    class Reader:
        def __init__(self) -> None:
            self.items = [{"x": rng.standard_normal((1, 3, 8, 8)).astype(np.float32)} for _ in range(4)]

        def get_next(self) -> dict[str, np.ndarray] | None:
            return self.items.pop() if self.items else None

    for exclude, expected in (([], []), (["first"], ["first"])):
        out = tmp_path / f"q{len(exclude)}.onnx"
        quantize_static(
            str(tmp_path / "f.onnx"),
            str(out),
            Reader(),
            quant_format=QuantFormat.QDQ,
            nodes_to_exclude=exclude,
        )
        assert onnx_precision(out) == "int8"
        assert onnx_float_layers(out) == expected
    assert onnx_float_layers(tmp_path / "f.onnx") == []  # plain fp32: onnx_precision says fp32


def test_equalisation_and_prelu_split_are_exact_in_float() -> None:
    """The two graph rewrites behind MobileFaceNet's int8 recipe change no output (float, ONNX Runtime)."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    from facesdk_zoo.quantize import equalize_channels, split_prelu

    rng = np.random.default_rng(1)
    c = 6
    inits = {
        "w0": rng.standard_normal((c, 3, 3, 3)),
        "b0": rng.standard_normal(c),
        "a0": rng.uniform(-9, 9, (c, 1, 1)),  # MobileFaceNet-like slopes, negative ones too
        "w1": rng.standard_normal((c, 1, 3, 3)) * rng.uniform(0.01, 10, (c, 1, 1, 1)),
        "b1": rng.standard_normal(c),
        "a1": rng.uniform(-3, 3, (c, 1, 1)),
        "w2": rng.standard_normal((4, c, 1, 1)),
    }
    nodes = [
        helper.make_node("Conv", ["x", "w0", "b0"], ["y0"], name="conv0", pads=[1, 1, 1, 1]),
        helper.make_node("PRelu", ["y0", "a0"], ["p0"]),
        helper.make_node("Conv", ["p0", "w1", "b1"], ["y1"], name="dw", group=c, pads=[1, 1, 1, 1]),
        helper.make_node("PRelu", ["y1", "a1"], ["p1"]),
        helper.make_node("Conv", ["p1", "w2"], ["y"], name="pw"),
    ]
    g = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 10, 10])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(v.astype(np.float32), k) for k, v in inits.items()],
    )
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    x = rng.standard_normal((8, 3, 10, 10)).astype(np.float32)

    def run(m: onnx.ModelProto) -> np.ndarray:
        s = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
        return s.run(None, {"x": x})[0]

    ref = run(model)
    assert equalize_channels(model, x) == 2  # conv0→dw (depthwise) and dw→pw (pointwise)
    split_prelu(model, "conv0")
    assert not any(n.op_type == "PRelu" and n.input[0] == "y0" for n in model.graph.node)
    np.testing.assert_allclose(run(model), ref, rtol=1e-4, atol=1e-4 * float(np.abs(ref).max()))


def test_uint8_pad_folding_is_bit_identical(shared: Path) -> None:
    """DequantizeLinear → Pad → QuantizeLinear (dlib's shortcut padding in the QDQ graph) folded into one
    uint8 Pad gives exactly the same bytes, on a real face, for channel and spatial padding."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    from facesdk_zoo.quantize import fold_qdq_pads

    img = facesdk.load_image(shared / "data/photos/obama-240p.jpg").astype(np.float32)
    x = (img.transpose(2, 0, 1)[None] - 127.5) / 64.0  # signed values: a zero point inside the range
    inits = [
        numpy_helper.from_array(np.array(0.0317, np.float32), "s"),
        numpy_helper.from_array(np.array(73, np.uint8), "z"),
        numpy_helper.from_array(np.array([0, 0, 0, 0, 0, 5, 1, 1], np.int64), "pads"),
    ]
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"]),
        helper.make_node("DequantizeLinear", ["q", "s", "z"], ["dq"]),
        helper.make_node("Pad", ["dq", "pads"], ["p"], name="pad", mode="constant"),
        helper.make_node("QuantizeLinear", ["p", "s", "z"], ["q2"]),
        helper.make_node("DequantizeLinear", ["q2", "s", "z"], ["y"]),
    ]
    g = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x.shape))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        inits,
    )
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8

    def run(m: onnx.ModelProto) -> np.ndarray:
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        return ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"]).run(
            None, {"x": x}
        )[0]

    ref = run(model)
    assert fold_qdq_pads(model) == 1
    ops = [n.op_type for n in model.graph.node]
    assert ops == ["QuantizeLinear", "Pad", "DequantizeLinear"], ops
    out = run(model)
    assert out.shape == (1, 8, img.shape[0] + 1, img.shape[1] + 1)
    np.testing.assert_array_equal(out, ref)
    # a Pad whose two sides have different scales is left alone (folding it would not be exact)
    model2 = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    model2.graph.initializer.append(numpy_helper.from_array(np.array(0.05, np.float32), "s2"))
    model2.graph.node[3].input[1] = "s2"
    assert fold_qdq_pads(model2) == 0
