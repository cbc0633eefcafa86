"""Zoo recipes that build quantised artifacts from a card's fp32 ONNX model.

* ``onnx_int8_qdq``: ONNX Runtime static quantisation in QDQ format
  (``onnxruntime.quantization.quantize_static``; per-channel symmetric int8 weights, uint8 activations
  calibrated with min/max over the calibration set — the U8S8 form the ONNX Runtime quantisation guide
  recommends for x86-64, https://onnxruntime.ai/docs/performance/model-optimizations/quantization.html).
* ``openvino_int8_nncf``: OpenVINO IR quantised by NNCF post-training quantisation
  (``nncf.quantize``, MIXED preset: symmetric weights, asymmetric activations as PReLU outputs are
  signed; OpenVINO docs, "Basic Quantization Flow", model-optimization-guide/quantizing-models-post-training),
  written with ``openvino.save_model`` as ``.xml`` + ``.bin``.

Options a card's recipe source may set (MobileFaceNet uses them): ``equalize = true`` rescales the channels
between consecutive convolutions before quantisation (:func:`equalize_channels`, exact in float; SmoothQuant /
cross-layer equalisation), ``float_nodes = [...]`` keeps those nodes in fp32 (ONNX Runtime
``nodes_to_exclude``: mixed precision, written to the artifact's ``facesdk.float_layers`` and reported by
``FaceRecognizer.describe()``), ``split_prelu = [...]`` (or ``"all"``: every Conv→PRelu pair,
:func:`prelu_convs`) rewrites those Conv→PRelu pairs so the slope sits in int8 per-channel weights
(:func:`split_prelu`, exact in float; MobileFaceNet's first layer needs it for accuracy, and all of them
for speed: ONNX Runtime has no int8 PReLU kernel and XNNPACK no int8 PRELU, so an unsplit PReLU runs in
float / outside the delegate), ``activation_ranges = "percentile"`` (with ``percentile``) instead of min/max.
``uint8_pads = true`` runs constant Pads between equal-scale DequantizeLinear/QuantizeLinear on the uint8
tensor (:func:`fold_qdq_pads`, bit-identical; dlib ResNet's shortcut padding) — measured no faster, so no
card sets it.

Both calibrate on the same set (:mod:`facesdk_zoo.calibration`: real aligned LFW DevTrain faces whose
identities are in no evaluated pair). Each artifact is cached under a key made of the source model's
sha256, the quantisation tool's version with this recipe's version, and the calibration set's sha256
(``cache_key``), so changing any of them builds a new file instead of reusing a stale one. The card
metadata travels inside the artifact: ONNX ``metadata_props`` / OpenVINO ``rt_info`` under ``facesdk``.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from facesdk.errors import BackendUnavailableError, ConversionError
from facesdk.image import to_tensor

from .calibration import DEFAULT_COUNT, calibration_crops, crops_sha256

__all__ = [
    "RECIPE_VERSION",
    "artifact_metadata",
    "calibration_tensors",
    "onnx_int8_qdq",
    "openvino_int8_nncf",
]

log = logging.getLogger(__name__)

#: Bumped whenever a recipe's settings change (part of every cache key).
RECIPE_VERSION = "4"
#: The ONNX Runtime recipe's own version (5: Pads always on uint8; 6: only with ``uint8_pads = true`` —
#: bit-identical, but not faster in two interleaved measurements, see benchmarks/RESULTS.md).
ORT_RECIPE_VERSION = "6"


def _options(art: Any) -> dict[str, Any]:
    for s in art.sources:
        if s.kind == "recipe":
            return dict(s.options)
    return {}


def calibration_tensors(card: Any, art: Any) -> tuple[np.ndarray, str]:
    """The calibration crops of ``card`` as its float input tensor ``[N, …]``, and the set's sha256."""
    opts = _options(art)
    crops = calibration_crops(card.id, int(opts.get("calibration", DEFAULT_COUNT)), opts.get("detector"))
    spec = card.input
    x = to_tensor(crops, layout=spec.layout, color=spec.color, mean=spec.mean, std=spec.std, dtype=spec.dtype)
    return x, crops_sha256(crops)


def artifact_metadata(
    card: Any, art: Any, source: Path, tool: str, calib_sha: str, count: int
) -> dict[str, str]:
    """The card facts stored inside a quantised artifact."""
    from facesdk.zoo import sha256_file

    return {
        "facesdk.model_id": card.id,
        "facesdk.precision": art.precision,
        "facesdk.source_sha256": sha256_file(source),
        "facesdk.tool": tool,
        "facesdk.recipe_version": RECIPE_VERSION,
        "facesdk.calibration": f"LFW DevTrain identities in no evaluated pair, {count} aligned faces",
        "facesdk.calibration_sha256": calib_sha,
        "facesdk.input_mean": ",".join(f"{v:g}" for v in card.input.mean),
        "facesdk.input_std": ",".join(f"{v:g}" for v in card.input.std),
        "facesdk.template": str(card.template or ""),
    }


def _key(source: Path, tool: str, card: Any, art: Any, version: str = RECIPE_VERSION) -> str:
    from facesdk.zoo import sha256_file

    _, calib = calibration_tensors(card, art)
    return f"src-{sha256_file(source)[:12]}_{tool}_r{version}_cal-{calib[:12]}"


# --------------------------------------------------------------------------- ONNX Runtime


def _ort_version() -> str:
    try:
        import onnxruntime as ort
    except ImportError as exc:
        raise BackendUnavailableError(
            "onnxruntime is needed to quantise (pip install 'facesdk[onnxruntime]')"
        ) from exc
    return f"onnxruntime-{ort.__version__}"


class TensorReader:
    """``onnxruntime.quantization.CalibrationDataReader`` over a tensor, in batches."""

    def __init__(self, name: str, x: np.ndarray, batch: int) -> None:
        self.name, self.x, self.batch = name, x, batch
        self._it: Iterator[dict[str, np.ndarray]] = self._gen()

    def _gen(self) -> Iterator[dict[str, np.ndarray]]:
        for i in range(0, len(self.x), self.batch):
            yield {self.name: self.x[i : i + self.batch]}

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._it, None)

    def rewind(self) -> None:
        self._it = self._gen()

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        return self._gen()


def _flush_every(n_batches: int) -> int:
    return next((m for m in range(5, n_batches + 2) if n_batches % m), n_batches + 1)


def fuse_prelu(model: Any) -> int:
    """Rewrite ``relu(y) + a·(y − |y|)`` as ``PRelu(y, 2a)`` in place (exact); return how many were fused.

    TensorFlow exports of MobileFaceNet spell PReLU with five element-wise ops; quantised one by one they
    lose most of the int8 accuracy, while a PRelu node stays one operator (kept in float or quantised as a
    unit by the tools).
    """
    from onnx import helper, numpy_helper

    from .tflite_writer import _prelu

    g = model.graph
    consts = {i.name: numpy_helper.to_array(i) for i in g.initializer}
    for n in g.node:
        if n.op_type == "Reshape" and n.input[0] in consts and n.input[1] in consts:
            consts[n.output[0]] = consts[n.input[0]].reshape([int(v) for v in consts[n.input[1]].reshape(-1)])
    consumers: dict[str, list[Any]] = {}
    for n in g.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    drop: set[int] = set()
    new_nodes: dict[int, Any] = {}
    fused = 0
    for n in g.node:
        if n.op_type != "Relu":
            continue
        m = _prelu(n, consumers, consts)
        if m is None:
            continue
        alpha, members, add = m
        name = f"{add.output[0]}_prelu_slope"
        slope = (2.0 * np.asarray(alpha, np.float32)).reshape(-1, 1, 1)
        g.initializer.append(numpy_helper.from_array(slope, name))
        new_nodes[id(n)] = helper.make_node(
            "PRelu", [n.input[0], name], [add.output[0]], name=f"{add.output[0]}_prelu"
        )
        drop.update(id(x) for x in members)
        fused += 1
    kept = []
    for n in g.node:
        if id(n) in new_nodes:
            kept.append(new_nodes[id(n)])
        elif id(n) not in drop:
            kept.append(n)
    used = {i for n in kept for i in n.input} | {o.name for o in g.output}
    kept = [n for n in kept if n.op_type != "Reshape" or any(o in used for o in n.output)]
    del g.node[:]
    g.node.extend(kept)
    return fused


def _graph_index(model: Any) -> tuple[set[str], dict[str, list[Any]], set[str]]:
    """(initialiser names, consumers of each tensor, graph output names) of an ONNX model."""
    g = model.graph
    consumers: dict[str, list[Any]] = {}
    for n in g.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    return {i.name for i in g.initializer}, consumers, {o.name for o in g.output}


def _conv_pairs(model: Any) -> list[tuple[Any, Any, str]]:
    """(Conv A, Conv B, tensor between them) where B is A's only consumer, possibly through one PRelu."""
    g = model.graph
    inits, consumers, outs = _graph_index(model)
    pairs = []
    for a in g.node:
        if a.op_type != "Conv" or a.input[1] not in inits:
            continue
        t = a.output[0]
        nxt = consumers.get(t, [])
        if len(nxt) == 1 and nxt[0].op_type == "PRelu" and t not in outs and nxt[0].input[1] in inits:
            t = nxt[0].output[0]
            nxt = consumers.get(t, [])
        if len(nxt) != 1 or nxt[0].op_type != "Conv" or t in outs:
            continue
        b = nxt[0]
        if b.input[0] == t and b.input[1] in inits:
            pairs.append((a, b, t))
    return pairs


def equalize_channels(model: Any, x: np.ndarray, batch: int = 32) -> int:
    """Rescale the channels between consecutive convolutions so int8 activations lose less (exact in float).

    For a Conv A followed (through at most one per-channel PRelu, which is positively homogeneous:
    ``prelu(y / s) = prelu(y) / s`` for ``s > 0``) by its only consumer Conv B, output channel ``i`` of A
    (weights and bias) is divided by ``s_i`` and input channel ``i`` of B multiplied by it; the model
    computes the same function. ``s`` comes from the per-channel absolute maximum ``r_i`` of the tensor
    between them over ``x`` (the calibration set):

    * B depthwise: ``s_i = r_i / max(r)`` — every channel then spans the same range, so the per-tensor
      int8 activation scale fits all of them, and B's per-channel weight scales absorb ``s`` exactly;
    * B a full convolution: ``s_i = sqrt(r_i / w_i)`` with ``w_i`` the largest |weight| of B's input
      channel ``i`` — the balance between activation and weight ranges of SmoothQuant with α = 0.5
      (Xiao et al., "SmoothQuant", ICML 2023, eq. 4), the activation-range form of the cross-layer
      equalisation of Nagel et al., "Data-Free Quantization Through Weight Equalization and Bias
      Correction", ICCV 2019, §4.1 (``s_i = sqrt(r1_i · r2_i) / r2_i``).

    Returns the number of rescaled pairs. ``model`` (an ``onnx.ModelProto`` whose PReLUs are PRelu
    nodes, see :func:`fuse_prelu`) is changed in place.
    """
    import onnx
    import onnxruntime as ort
    from onnx import helper, numpy_helper

    pairs = _conv_pairs(model)
    if not pairs:
        return 0
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    names = list(dict.fromkeys(t for _, _, t in pairs))
    for t in names:
        probe.graph.output.append(helper.make_tensor_value_info(t, onnx.TensorProto.FLOAT, None))
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.log_severity_level = 3
    sess = ort.InferenceSession(probe.SerializeToString(), so, providers=["CPUExecutionProvider"])
    in_name = sess.get_inputs()[0].name
    rng: dict[str, np.ndarray] = {}
    for s0 in range(0, len(x), batch):
        for t, v in zip(names, sess.run(names, {in_name: x[s0 : s0 + batch]})):
            m = np.abs(v).max(axis=(0, 2, 3)).astype(np.float64)
            rng[t] = np.maximum(rng[t], m) if t in rng else m
    del sess
    inits = {i.name: i for i in model.graph.initializer}

    def get(name: str) -> np.ndarray:
        return numpy_helper.to_array(inits[name]).astype(np.float64)

    def put(name: str, v: np.ndarray) -> None:
        inits[name].CopyFrom(numpy_helper.from_array(v.astype(np.float32), name))

    done = 0
    for a, b, t in pairs:
        r = rng[t]
        top = float(r.max())
        if top <= 0:
            continue
        wb = get(b.input[1])
        group = next((int(h.i) for h in b.attribute if h.name == "group"), 1)
        if group == len(r) and wb.shape[1] == 1:
            s = np.maximum(r, 1e-3 * top) / top
            wb = wb * s[:, None, None, None]
        elif group == 1 and wb.shape[1] == len(r):
            rw = np.abs(wb).max(axis=(0, 2, 3))
            s = np.sqrt(np.maximum(r, 1e-6 * top) / np.maximum(rw, 1e-6 * rw.max()))
            s = s / np.exp(np.log(s).mean())
            wb = wb * s[None, :, None, None]
        else:
            continue
        put(a.input[1], get(a.input[1]) / s[:, None, None, None])
        if len(a.input) > 2 and a.input[2]:
            put(a.input[2], get(a.input[2]) / s)
        put(b.input[1], wb)
        done += 1
    return done


def prelu_convs(model: Any) -> list[str]:
    """Names of the Conv nodes whose only consumer is a PRelu with constant slopes (what
    :func:`split_prelu` can rewrite), in graph order."""
    g = model.graph
    inits, consumers, outs = _graph_index(model)
    names = []
    for n in g.node:
        users = consumers.get(n.output[0], []) if n.op_type == "Conv" else []
        if n.output[0] in outs or len(users) != 1:
            continue
        if users[0].op_type == "PRelu" and users[0].input[1] in inits:
            if not n.name:
                raise ConversionError("split_prelu needs named Conv nodes")
            names.append(n.name)
    return names


def _split_names(model: Any, option: Any) -> list[str]:
    """The recipe option ``split_prelu``: a list of Conv names, or ``"all"`` for every Conv→PRelu pair."""
    if option in (None, "", []):
        return []
    if isinstance(option, str):
        if option != "all":
            raise ConversionError(f"split_prelu must be a list of Conv names or 'all', not {option!r}")
        return prelu_convs(model)
    return [str(n) for n in option]


def split_prelu(model: Any, conv_name: str) -> None:
    """Rewrite ``PRelu(Conv(x), a)`` as ``Relu(Conv(x)) + σ ⊙ Relu(Conv'(x))``, exact in float (in place).

    ``Conv'`` has the weights and bias of ``Conv`` times ``−|a|`` per output channel and ``σ = −sign(a)``
    is applied by a 1×1 depthwise convolution (weights ±1, exact in int8). Why: with a per-tensor int8
    scale on the convolution's output, PReLU multiplies the quantisation error of a channel's negative side
    by ``|a|`` (MobileFaceNet's first layer has ``|a|`` up to ≈ 9.4, i.e. three bits lost); here the
    slope sits in the per-channel int8 weights of ``Conv'`` and every int8 tensor is at the output's scale.
    For the full-integer TFLite export, where no layer may stay in float, and for speed: after the split the
    graph has only int8 convolutions (ReLU fused), a depthwise 1×1 and an add — ops ONNX Runtime and XNNPACK
    run in int8, while a PReLU runs in float there.
    """
    from onnx import helper, numpy_helper

    g = model.graph
    inits = {i.name: i for i in g.initializer}
    conv = next((n for n in g.node if n.name == conv_name and n.op_type == "Conv"), None)
    if conv is None:
        raise ConversionError(f"no Conv node named {conv_name!r} to split")
    users = [n for n in g.node if conv.output[0] in n.input]
    if len(users) != 1 or users[0].op_type != "PRelu" or users[0].input[1] not in inits:
        raise ConversionError(f"{conv_name!r} is not followed by exactly one PRelu with constant slopes")
    prelu = users[0]
    w = numpy_helper.to_array(inits[conv.input[1]]).astype(np.float64)
    c = w.shape[0]
    b = (
        numpy_helper.to_array(inits[conv.input[2]]).astype(np.float64)
        if len(conv.input) > 2 and conv.input[2]
        else np.zeros(c)
    )
    a = numpy_helper.to_array(inits[prelu.input[1]]).astype(np.float64).reshape(-1)
    a = np.full(c, a[0]) if a.size == 1 else a
    k = -np.abs(a)
    base = conv.output[0]
    names = {s: f"{base}/split_{s}" for s in ("wn", "bn", "sign", "n", "p", "rn", "m")}
    g.initializer.extend(
        [
            numpy_helper.from_array((w * k[:, None, None, None]).astype(np.float32), names["wn"]),
            numpy_helper.from_array((b * k).astype(np.float32), names["bn"]),
            numpy_helper.from_array(
                np.where(a > 0, -1.0, 1.0).astype(np.float32).reshape(c, 1, 1, 1), names["sign"]
            ),
        ]
    )
    attrs = {h.name: helper.get_attribute_value(h) for h in conv.attribute}
    new = [
        helper.make_node("Relu", [base], [names["p"]], name=f"{base}/split_relu_p"),
        helper.make_node(
            "Conv", [conv.input[0], names["wn"], names["bn"]], [names["n"]], name=f"{base}/split_neg", **attrs
        ),
        helper.make_node("Relu", [names["n"]], [names["rn"]], name=f"{base}/split_relu_n"),
        helper.make_node(
            "Conv",
            [names["rn"], names["sign"]],
            [names["m"]],
            name=f"{base}/split_sign",
            group=c,
            kernel_shape=[1, 1],
        ),
        helper.make_node("Add", [names["p"], names["m"]], [prelu.output[0]], name=f"{base}/split_add"),
    ]
    nodes = []
    for n in g.node:
        if n is prelu:
            nodes.extend(new)
        else:
            nodes.append(n)
    del g.node[:]
    g.node.extend(nodes)


def fold_qdq_pads(model: Any) -> int:
    """Run ``DequantizeLinear → Pad → QuantizeLinear`` as one uint8 ``Pad`` (in place, bit-identical).

    ONNX Runtime's QDQ quantiser leaves constant-mode ``Pad`` nodes (dlib ResNet's channel padding of the
    shortcut and its odd-size spatial padding) in float between a DequantizeLinear and a QuantizeLinear of
    the same scale and zero point; ONNX Runtime then dequantises, pads and requantises the whole tensor.
    With equal (scale, zero point) on both sides and pad value 0, ``Q(pad(DQ(q), 0)) = pad(q, zp)``
    exactly (``Q(0) = zp``; ONNX operator specs of QuantizeLinear / DequantizeLinear / Pad), so the Pad
    runs on the uint8 tensor with constant value ``zp``. Returns the number of folded Pads.
    """
    from onnx import numpy_helper

    g = model.graph
    inits = {i.name: i for i in g.initializer}
    producer = {o: n for n in g.node for o in n.output}
    consumers: dict[str, list[Any]] = {}
    for n in g.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    outs = {o.name for o in g.output}

    def const(name: str) -> np.ndarray | None:
        return numpy_helper.to_array(inits[name]) if name in inits else None

    drop: set[int] = set()
    folded = 0
    for pad in g.node:
        if pad.op_type != "Pad" or pad.output[0] in outs:
            continue
        mode = next((h.s for h in pad.attribute if h.name == "mode"), b"constant")
        dq = producer.get(pad.input[0])
        users = consumers.get(pad.output[0], [])
        if mode != b"constant" or dq is None or dq.op_type != "DequantizeLinear" or len(users) != 1:
            continue
        q = users[0]
        if q.op_type != "QuantizeLinear" or q.output[0] in outs or len(pad.input) > 3:
            continue
        value = const(pad.input[2]) if len(pad.input) > 2 and pad.input[2] else np.zeros(1, np.float32)
        dq_s, dq_z = (const(x) for x in (dq.input[1], dq.input[2])) if len(dq.input) > 2 else (None, None)
        q_s, q_z = (const(x) for x in (q.input[1], q.input[2])) if len(q.input) > 2 else (None, None)
        if value is None or np.any(value != 0):
            continue
        if any(v is None or v.size != 1 for v in (dq_s, dq_z, q_s, q_z)):
            continue
        if dq_s.item() != q_s.item() or dq_z.item() != q_z.item() or dq_z.dtype != q_z.dtype:
            continue
        zp_name = f"{pad.name or pad.output[0]}_zero_point_value"
        g.initializer.append(numpy_helper.from_array(dq_z.reshape(()).astype(dq_z.dtype), zp_name))
        new_in = [dq.input[0], pad.input[1], zp_name]
        del pad.input[:]
        pad.input.extend(new_in)
        pad.output[0] = q.output[0]
        drop.add(id(q))
        if len(consumers.get(dq.output[0], [])) == 1 and dq.output[0] not in outs:
            drop.add(id(dq))
        folded += 1
    kept = [n for n in g.node if id(n) not in drop]
    del g.node[:]
    g.node.extend(kept)
    return folded


def onnx_int8_qdq(card: Any, art: Any, inputs: dict[str, Path], out: Path) -> None:
    """Recipe: static QDQ int8 ONNX (per-channel int8 weights, calibrated uint8 activations)."""
    tool = _ort_version()
    import onnx
    import onnxruntime as ort
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    src = inputs["model"]
    x, calib_sha = calibration_tensors(card, art)
    sess = ort.InferenceSession(str(src), providers=["CPUExecutionProvider"])
    in0 = sess.get_inputs()[0]
    batch = 16 if not isinstance(in0.shape[0], int) else int(in0.shape[0])
    del sess
    log.info("quantising %s to int8 QDQ with %d calibration faces", src.name, len(x))
    opts = _options(art)
    float_nodes = [str(n) for n in opts.get("float_nodes", [])]
    split: list[str] = []
    method = str(opts.get("activation_ranges", "minmax")).lower()
    with tempfile.TemporaryDirectory(prefix="facesdk-q-", dir=out.parent) as td:
        tmp = Path(td) / "q.onnx"
        base = src
        m0 = onnx.load(str(src))
        equalized = 0
        if fuse_prelu(m0):
            if opts.get("equalize"):
                equalized = equalize_channels(m0, x)
                log.info("channel equalisation: %d convolution pairs rescaled", equalized)
            split = _split_names(m0, opts.get("split_prelu"))
            for name in split:
                split_prelu(m0, name)
            base = Path(td) / "prelu.onnx"
            onnx.save(m0, str(base))
        opset = max(
            (
                o.version
                for o in onnx.load(str(src), load_external_data=False).opset_import
                if o.domain in ("", "ai.onnx")
            ),
            default=13,
        )
        if opset < 13:  # per-channel QuantizeLinear/DequantizeLinear (the axis attribute) needs opset 13
            from onnx import version_converter

            conv = Path(td) / "opset13.onnx"
            onnx.save(version_converter.convert_version(onnx.load(str(base)), 13), str(conv))
            base = conv
        # ONNX Runtime's recommended pre-processing: shape inference and graph optimisation, which folds the
        # per-channel Mul/Add after each Conv (dlib's affine layers) into the Conv before quantisation, so the
        # int8 graph becomes QLinearConv+Relu instead of separate int8 Mul/Add (slow and less accurate).
        from onnxruntime.quantization.shape_inference import quant_pre_process

        pre = Path(td) / "pre.onnx"
        try:
            quant_pre_process(str(base), str(pre), skip_symbolic_shape=True)
            base = pre
        except Exception as exc:  # noqa: BLE001 - optional step; quantise the model as it is
            log.warning("quantisation pre-processing of %s failed (%s); quantising without it", src.name, exc)
        # bounded memory: min/max are folded every few batches. onnxruntime raises "No data is
        # collected" when the batch count is a multiple of this number, so pick one that is not.
        extra: dict[str, Any] = {"CalibMaxIntermediateOutputs": _flush_every(-(-len(x) // batch))}
        calib = CalibrationMethod.MinMax
        pct = float(opts.get("percentile", 99.999))
        if method == "percentile":
            calib, extra = CalibrationMethod.Percentile, {"CalibPercentile": pct}
        elif method != "minmax":
            raise ConversionError(f"activation_ranges must be 'minmax' or 'percentile', not {method!r}")
        missing = set(float_nodes) - {n.name for n in onnx.load(str(base)).graph.node}
        if missing:
            raise ConversionError(f"float_nodes not in {src.name}: {', '.join(sorted(missing))}")
        try:
            quantize_static(
                str(base),
                str(tmp),
                TensorReader(in0.name, x, batch),
                quant_format=QuantFormat.QDQ,
                per_channel=True,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                calibrate_method=calib,
                nodes_to_exclude=float_nodes,
                extra_options=extra,
            )
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises many kinds
            raise ConversionError(f"onnxruntime could not quantise {src.name}: {exc}") from None
        model = onnx.load(str(tmp))
        folded = fold_qdq_pads(model) if opts.get("uint8_pads") else 0
        meta = artifact_metadata(card, art, src, tool, calib_sha, len(x))
        meta["facesdk.recipe_version"] = ORT_RECIPE_VERSION
        meta["facesdk.uint8_pads"] = str(folded)
        meta["facesdk.activation_ranges"] = method if method != "percentile" else f"percentile {pct}"
        meta["facesdk.equalized_pairs"] = str(equalized)
        meta["facesdk.float_layers"] = ",".join(float_nodes)
        meta["facesdk.split_prelu"] = ",".join(split)
        keep = {p.key: p.value for p in model.metadata_props if p.key not in meta}
        del model.metadata_props[:]
        for k, v in {**keep, **meta}.items():
            model.metadata_props.add(key=k, value=v)
        onnx.save(model, str(out))


def _options_tag(options: dict[str, Any], keys: tuple[str, ...]) -> str:
    """A short hash of the recipe options that change the artifact (empty when none is set)."""
    import hashlib
    import json

    used = {k: options[k] for k in keys if k in options}
    if not used:
        return ""
    return "_o" + hashlib.sha256(json.dumps(used, sort_keys=True, default=str).encode()).hexdigest()[:8]


def _onnx_key(card: Any, art: Any, inputs: dict[str, Path], options: dict[str, Any]) -> str:
    tag = _options_tag(
        options, ("equalize", "float_nodes", "split_prelu", "activation_ranges", "percentile", "uint8_pads")
    )
    return _key(inputs["model"], _ort_version() + tag, card, art, ORT_RECIPE_VERSION)


onnx_int8_qdq.cache_key = _onnx_key  # type: ignore[attr-defined]


# --------------------------------------------------------------------------- OpenVINO + NNCF


def _nncf_version() -> str:
    try:
        import nncf
        import openvino as ov
    except ImportError as exc:
        raise BackendUnavailableError(
            "OpenVINO int8 needs nncf and openvino (pip install 'facesdk[openvino]')"
        ) from exc
    return f"nncf-{nncf.__version__}+openvino-{ov.__version__.split('-')[0]}"


def openvino_int8_nncf(card: Any, art: Any, inputs: dict[str, Path], out: Path) -> None:
    """Recipe: NNCF post-training int8 quantisation of the ONNX model, saved as OpenVINO IR.

    The ``.bin`` is written beside ``out`` under the name the card's ``companions`` gives it.
    """
    tool = _nncf_version()
    import nncf
    import openvino as ov

    src = inputs["model"]
    x, calib_sha = calibration_tensors(card, art)
    import onnx

    m0 = onnx.load(str(src))
    with tempfile.TemporaryDirectory(prefix="facesdk-q-", dir=out.parent) as td0:
        if fuse_prelu(m0):
            fused = Path(td0) / "prelu.onnx"
            onnx.save(m0, str(fused))
            model = ov.Core().read_model(str(fused))
        else:
            model = ov.Core().read_model(str(src))
    data = nncf.Dataset([x[i : i + 1] for i in range(len(x))])
    log.info("quantising %s to int8 with NNCF on %d calibration faces", src.name, len(x))
    try:
        q = nncf.quantize(model, data, subset_size=len(x), preset=nncf.QuantizationPreset.MIXED)
    except Exception as exc:  # noqa: BLE001 - nncf raises many kinds
        raise ConversionError(f"NNCF could not quantise {src.name}: {exc}") from None
    for k, v in artifact_metadata(card, art, src, tool, calib_sha, len(x)).items():
        q.set_rt_info(v, ["facesdk", k.removeprefix("facesdk.")])
    bin_name = Path(art.file).with_suffix(".bin").name
    with tempfile.TemporaryDirectory(prefix="facesdk-q-", dir=out.parent) as td:
        xml = Path(td) / "q.xml"
        ov.save_model(q, str(xml), compress_to_fp16=False)
        shutil.move(str(xml.with_suffix(".bin")), str(out.parent / bin_name))
        shutil.move(str(xml), str(out))


def _ov_key(card: Any, art: Any, inputs: dict[str, Path], options: dict[str, Any]) -> str:
    return _key(inputs["model"], _nncf_version(), card, art)


openvino_int8_nncf.cache_key = _ov_key  # type: ignore[attr-defined]


# --------------------------------------------------------------------------- TFLite (our writer)


def _tflite_tool() -> str:
    from .tflite_writer import WRITER_VERSION

    try:
        import ai_edge_litert
    except ImportError as exc:
        raise BackendUnavailableError(
            "the TFLite recipes need ai-edge-litert (pip install 'facesdk[tflite]')"
        ) from exc
    return f"facesdk-tflite-writer-{WRITER_VERSION}+litert-{getattr(ai_edge_litert, '__version__', 'x')}"


def onnx_to_tflite(card: Any, art: Any, inputs: dict[str, Path], out: Path) -> None:
    """Recipe: fp32 TFLite (NHWC) written by :mod:`facesdk_zoo.tflite_writer` from the card's ONNX model."""
    from facesdk.zoo import sha256_file

    from .tflite_writer import convert_onnx

    src = inputs["model"]
    meta = {
        "facesdk.model_id": card.id,
        "facesdk.source_sha256": sha256_file(src),
        "facesdk.tool": _tflite_tool(),
        "facesdk.template": str(card.template or ""),
    }
    convert_onnx(src, out, metadata=meta)


def _tflite_fp32_key(card: Any, art: Any, inputs: dict[str, Path], options: dict[str, Any]) -> str:
    from facesdk.zoo import sha256_file

    return f"src-{sha256_file(inputs['model'])[:12]}_{_tflite_tool()}"


onnx_to_tflite.cache_key = _tflite_fp32_key  # type: ignore[attr-defined]


def onnx_to_tflite_int8(card: Any, art: Any, inputs: dict[str, Path], out: Path) -> None:
    """Recipe: full-integer int8 TFLite (int8 in/out, per-channel int8 weights), calibrated.

    Source option ``percentile`` (e.g. 99.99) takes activation ranges from per-batch percentiles instead
    of min/max (MobileFaceNet: cosine to fp32 0.958 → 0.986 in our check; dlib ResNet: min/max is better).
    """
    from .tflite_writer import convert_onnx

    tool = _tflite_tool()
    src = inputs["model"]
    x, calib_sha = calibration_tensors(card, art)
    pct = _options(art).get("percentile")
    meta = artifact_metadata(card, art, src, tool, calib_sha, len(x))
    meta["facesdk.activation_ranges"] = f"percentile {pct}" if pct else "min/max"
    log.info("writing full-int8 TFLite of %s calibrated on %d faces", src.name, len(x))
    p = float(pct) if pct else None
    split_opt = _options(art).get("split_prelu")
    if not _options(art).get("equalize") and not split_opt:
        convert_onnx(src, out, int8=True, calibration=x, metadata=meta, percentile=p)
        return
    import onnx

    model = onnx.load(str(src))
    fuse_prelu(model)
    n = equalize_channels(model, x) if _options(art).get("equalize") else 0
    split = _split_names(model, split_opt)
    for name in split:
        split_prelu(model, name)
    meta["facesdk.equalized_pairs"] = str(n)
    meta["facesdk.split_prelu"] = ",".join(split)
    log.info("channel equalisation: %d convolution pairs rescaled", n)
    with tempfile.TemporaryDirectory(prefix="facesdk-q-", dir=out.parent) as td:
        eq = Path(td) / "equalized.onnx"
        onnx.save(model, str(eq))
        convert_onnx(eq, out, int8=True, calibration=x, metadata=meta, percentile=p)


def _tflite_int8_key(card: Any, art: Any, inputs: dict[str, Path], options: dict[str, Any]) -> str:
    pct = options.get("percentile")
    tag = _options_tag(options, ("equalize", "split_prelu"))
    return _key(inputs["model"], _tflite_tool() + (f"_p{pct}" if pct else "") + tag, card, art)


onnx_to_tflite_int8.cache_key = _tflite_int8_key  # type: ignore[attr-defined]
