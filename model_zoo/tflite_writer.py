"""Our own ONNX → TFLite writer: fp32 and full-integer int8, without TensorFlow.

The flatbuffer is built with the ``flatbuffers`` package and the object API of the TFLite schema module
that ships inside ``ai-edge-litert`` (``ai_edge_litert.schema_py_generated``, generated from
``tensorflow/compiler/mlir/lite/schema/schema.fbs``). Supported ONNX operators are the ones our
embedders use (dlib ResNet as written by ``facesdk_zoo.dlib_resnet``, and the dot-product matching
head): Conv (incl. depthwise), per-channel Mul/Add folded into the preceding Conv (the BN/affine
fold: ``W' = W·γ``, ``b' = b·γ + β``), Relu (fused into Conv/Add), PReLU spelt
``relu(y) + a·(y − |y|)`` (→ PRELU with slope 2a) or an ONNX PRelu with constant slopes, constant
Reshape, NCHW→NHWC Transpose of a 1×1 map, MaxPool, AveragePool, Pad,
GlobalAveragePool (→ MEAN), Flatten/Reshape, MatMul/Gemm (→ FULLY_CONNECTED), Add, Mul,
LpNormalization / the L2 head (→ L2_NORMALIZATION), Identity. Anything else raises ConversionError.

Layout: ONNX is NCHW, TFLite NHWC. 4-D activations are written NHWC; Conv weights
``[O,I,kh,kw]`` become ``[O,kh,kw,I]`` (depthwise ``[1,kh,kw,O]``); ONNX pads that are not TF "SAME"
become an explicit PAD then a VALID convolution. Flatten of a 1×1 map is layout-free; larger maps are
refused (their NCHW flatten order would need a TRANSPOSE, which our models do not need).

Full-integer int8 (the TFLite quantisation spec, https://ai.google.dev/edge/litert/models/quantization_spec):
weights int8 symmetric per output channel (``[-127,127]``, zero point 0), biases int32 with
``scale = s_in · s_w[c]``, activations int8 asymmetric with (min, max) calibrated by running the float
model on the calibration set through LiteRT's reference kernels with every tensor preserved; input and
output tensors are int8. Operators that require equal input/output quantisation (MAX/AVERAGE_POOL_2D,
PAD, RESHAPE) reuse their input's parameters.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from facesdk.errors import BackendUnavailableError, ConversionError

__all__ = ["TFLGraph", "calibrate_ranges", "convert_onnx", "onnx_to_graph", "quantize_graph", "write_tflite"]

log = logging.getLogger(__name__)

WRITER_VERSION = "1"


def _schema() -> Any:
    try:
        from ai_edge_litert import schema_py_generated as s
    except ImportError as exc:
        raise BackendUnavailableError(
            "the TFLite writer needs ai-edge-litert (pip install 'facesdk[tflite]')"
        ) from exc
    return s


# --------------------------------------------------------------------------- a tiny TFLite IR


@dataclass
class Tensor:
    """One TFLite tensor: shape with batch 1 (signature -1 when dynamic), constant data or None."""

    name: str
    shape: tuple[int, ...]
    data: np.ndarray | None = None
    dynamic_batch: bool = False
    #: per-channel axis for weights (quantisation); None → per-tensor
    channel_axis: int | None = None
    #: "weight" | "bias" | "act" | "int" (int32 shape/paddings/axes)
    role: str = "act"
    #: bias of which (input tensor, weight tensor)
    bias_of: tuple[int, int] | None = None
    quant: tuple[np.ndarray, np.ndarray, int] | None = None  # scales, zero points, axis
    dtype: str = "float32"


@dataclass
class Op:
    """One operator: builtin name, input/output tensor indices and options (dict)."""

    kind: str
    inputs: list[int]
    outputs: list[int]
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class TFLGraph:
    """A single-subgraph TFLite model under construction."""

    tensors: list[Tensor] = field(default_factory=list)
    ops: list[Op] = field(default_factory=list)
    inputs: list[int] = field(default_factory=list)
    outputs: list[int] = field(default_factory=list)
    metadata: dict[str, str] = field(default_factory=dict)

    def add(self, t: Tensor) -> int:
        self.tensors.append(t)
        return len(self.tensors) - 1

    def const(self, name: str, data: np.ndarray, role: str = "weight", axis: int | None = None) -> int:
        return self.add(
            Tensor(
                name,
                tuple(data.shape),
                np.ascontiguousarray(data),
                role=role,
                channel_axis=axis,
                dtype=str(data.dtype),
            )
        )

    def act(self, name: str, shape: Iterable[int], dynamic: bool) -> int:
        return self.add(Tensor(name, tuple(int(d) for d in shape), dynamic_batch=dynamic))


# --------------------------------------------------------------------------- ONNX → IR


def _attrs(node: Any) -> dict[str, Any]:
    import onnx

    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def _same_pads(k: int, s: int, size: int) -> tuple[int, int]:
    """TF "SAME" padding (before, after) for one axis (TensorFlow's conv padding rule)."""
    out = -(-size // s)
    total = max((out - 1) * s + k - size, 0)
    return total // 2, total - total // 2


def _prelu(
    relu: Any, consumers: dict[str, list[Any]], consts: dict[str, np.ndarray]
) -> tuple[np.ndarray, list[Any], Any] | None:
    """Match ``Add(Relu(y), Mul(a, Sub(y, Abs(y))))``; return (a, nodes to skip, the Add) or None."""
    y = relu.input[0]
    by = {c.op_type: c for c in consumers.get(y, [])}
    if set(by) != {"Relu", "Abs", "Sub"} or len(consumers[y]) != 3:
        return None
    ab, sub = by["Abs"], by["Sub"]
    if list(sub.input) != [y, ab.output[0]]:
        return None
    muls = consumers.get(sub.output[0], [])
    if len(muls) != 1 or muls[0].op_type != "Mul":
        return None
    mul = muls[0]
    a_name = [i for i in mul.input if i != sub.output[0]]
    if len(a_name) != 1 or a_name[0] not in consts:
        return None
    adds = consumers.get(mul.output[0], [])
    if len(adds) != 1 or adds[0].op_type != "Add" or set(adds[0].input) != {relu.output[0], mul.output[0]}:
        return None
    return np.asarray(consts[a_name[0]], np.float32), [ab, sub, mul, adds[0]], adds[0]


class _OnnxTranslator:
    """One ONNX → TFLite IR translation: the model's constants and consumers, the IR being built, and the
    map from ONNX tensor names to (IR tensor index, is an NHWC 4-D map). One method per ONNX operator
    (``_op_<Type>``); :meth:`translate` walks the nodes in order, skipping those a previous method fused."""

    def __init__(self, model: Any) -> None:
        from onnx import numpy_helper

        self.g = g = model.graph
        consts: dict[str, np.ndarray] = {}
        for i in g.initializer:
            v = numpy_helper.to_array(i)
            consts[i.name] = v.astype(np.float32) if v.dtype.kind == "f" else v
        for n in g.node:
            if n.op_type == "Constant":
                consts[n.output[0]] = numpy_helper.to_array(_attrs(n)["value"])
        for n in g.node:  # fold constant Reshapes up front (pattern matching looks their outputs up)
            if n.op_type == "Reshape" and n.input[0] in consts and n.input[1] in consts:
                consts[n.output[0]] = self._reshaped(consts, n)
        self.consts = consts
        self.consumers: dict[str, list[Any]] = {}
        for n in g.node:
            for i in n.input:
                self.consumers.setdefault(i, []).append(n)
        self.graph_outputs = {o.name for o in g.output}
        self.out = TFLGraph(metadata={p.key: p.value for p in model.metadata_props})
        self.env: dict[str, tuple[int, bool]] = {}
        self.nodes = list(g.node)
        self.skip: set[int] = set()
        self.dynamic = False

    @staticmethod
    def _reshaped(consts: dict[str, np.ndarray], n: Any) -> np.ndarray:
        shape = [int(v) for v in np.asarray(consts[n.input[1]]).reshape(-1)]
        return np.asarray(consts[n.input[0]]).reshape(shape)

    # -- helpers
    def shape_of(self, idx: int) -> tuple[int, ...]:
        return self.out.tensors[idx].shape

    def act(self, name: str, shape: Iterable[int]) -> int:
        return self.out.act(name, shape, self.dynamic)

    def only_consumer(self, name: str, op_type: str) -> Any | None:
        cs = self.consumers.get(name, [])
        if len(cs) == 1 and cs[0].op_type == op_type and name not in self.graph_outputs:
            return cs[0]
        return None

    def fuse(self, node: Any) -> None:
        """Mark ``node`` as consumed by the operator being written."""
        self.skip.add(self.nodes.index(node))

    def channel_const(self, node: Any, name: str, c: int) -> np.ndarray | None:
        """The per-channel constant operand of a Mul/Add on an NCHW map ([1,C,1,1], [C,1,1] or scalar)."""
        other = [i for i in node.input if i != name]
        if len(other) != 1 or other[0] not in self.consts:
            return None
        v = np.asarray(self.consts[other[0]], np.float32)
        if v.size == 1:
            return np.full(c, float(v.reshape(-1)[0]), np.float32)
        if v.size == c and (v.ndim <= 1 or v.shape[-1] == 1 or v.ndim == 4):
            return v.reshape(c)
        return None

    def unary(self, n: Any, kind: str, inputs: list[int], options: dict[str, Any] | None = None) -> None:
        """Write ``kind`` on ``n``'s first input keeping its shape and layout."""
        x, nhwc = self.env[n.input[0]]
        y = self.act(n.output[0], self.shape_of(x))
        self.out.ops.append(Op(kind, [x, *inputs], [y], options or {}))
        self.env[n.output[0]] = (y, nhwc)

    # -- the walk
    def translate(self) -> TFLGraph:
        g, out = self.g, self.out
        inputs = [i for i in g.input if i.name not in self.consts]
        if len(inputs) != 1:
            raise ConversionError("only single-input models are supported")
        inp = inputs[0]
        dims = [d.dim_value if d.HasField("dim_value") else -1 for d in inp.type.tensor_type.shape.dim]
        self.dynamic = dims[0] <= 0
        if len(dims) == 4:
            self.env[inp.name] = (self.act(inp.name, (1, dims[2], dims[3], dims[1])), True)
        else:
            self.env[inp.name] = (self.act(inp.name, [1, *dims[1:]]), False)
        out.inputs = [self.env[inp.name][0]]
        for ni, n in enumerate(self.nodes):
            if ni in self.skip or n.op_type == "Constant":
                continue
            method = getattr(self, f"_op_{n.op_type}", None)
            if method is None:
                raise ConversionError(
                    f"ONNX operator {n.op_type!r} ({n.name or n.output[0]}) is not supported by the "
                    "TFLite writer"
                )
            method(n, _attrs(n))
        for o in g.output:
            idx, _ = self.env[o.name]
            out.tensors[idx].name = o.name
            out.outputs.append(idx)
        return out

    # -- operators
    def _op_Identity(self, n: Any, a: dict[str, Any]) -> None:
        self.env[n.output[0]] = self.env[n.input[0]]

    def _conv_epilogue(
        self, n: Any, w: np.ndarray, b: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, str, str]:
        """Fold the per-channel Mul / Add / Relu that follow a Conv (``W' = W·γ``, ``b' = b·γ + β``);
        returns the weights, bias, the last folded output name and the fused activation."""
        last, act = n.output[0], "NONE"
        while True:
            nxt = next(
                (c for t in ("Mul", "Add", "Relu") if (c := self.only_consumer(last, t)) is not None), None
            )
            if nxt is None:
                break
            if nxt.op_type == "Relu":
                self.fuse(nxt)
                return w, b, nxt.output[0], "RELU"
            v = self.channel_const(nxt, last, w.shape[0])
            if v is None:
                break
            if nxt.op_type == "Mul":
                w, b = w * v[:, None, None, None], b * v
            else:
                b = b + v
            self.fuse(nxt)
            last = nxt.output[0]
        return w, b, last, act

    def _conv_padding(
        self, n: Any, x: int, pads: list[int], k: tuple[int, int], s: tuple[int, int]
    ) -> tuple[int, str]:
        """"SAME"/"VALID", or an explicit PAD then "VALID" for ONNX pads that are not TF's SAME."""
        _, h, wd, c = self.shape_of(x)
        if pads == [0, 0, 0, 0]:
            return x, "VALID"
        same_h, same_w = _same_pads(k[0], s[0], h), _same_pads(k[1], s[1], wd)
        if (pads[0], pads[2]) == same_h and (pads[1], pads[3]) == same_w:
            return x, "SAME"
        p = self.out.const(
            f"{n.output[0]}/paddings",
            np.array([[0, 0], [pads[0], pads[2]], [pads[1], pads[3]], [0, 0]], np.int32),
            role="int",
        )
        y = self.act(f"{n.output[0]}/padded", (1, h + pads[0] + pads[2], wd + pads[1] + pads[3], c))
        self.out.ops.append(Op("PAD", [x, p], [y]))
        return y, "VALID"

    def _op_Conv(self, n: Any, a: dict[str, Any]) -> None:
        out = self.out
        x, _ = self.env[n.input[0]]
        w = self.consts[n.input[1]].astype(np.float32)
        b = (
            self.consts[n.input[2]].astype(np.float32)
            if len(n.input) > 2 and n.input[2]
            else np.zeros(w.shape[0], np.float32)
        )
        o_c, i_c, kh, kw = w.shape
        group = int(a.get("group", 1))
        if a.get("dilations", [1, 1]) != [1, 1]:
            raise ConversionError("dilated convolutions are not supported")
        sh, sw = a.get("strides", [1, 1])
        w, b, last, act = self._conv_epilogue(n, w, b)
        x, padding = self._conv_padding(n, x, list(a.get("pads", [0, 0, 0, 0])), (kh, kw), (sh, sw))
        _, h, wd, _c = self.shape_of(x)
        if padding == "SAME":
            oh, ow = -(-h // sh), -(-wd // sw)
        else:
            oh, ow = (h - kh) // sh + 1, (wd - kw) // sw + 1
        y = self.act(last, (1, oh, ow, o_c))
        opts: dict[str, Any] = {"padding": padding, "stride": (sh, sw), "act": act}
        if group == 1:
            wi = out.const(f"{n.output[0]}/weights", w.transpose(0, 2, 3, 1).copy(), axis=0)
            kind = "CONV_2D"
        elif group == o_c and i_c == 1 and group == _c:
            wi = out.const(f"{n.output[0]}/weights", w.transpose(1, 2, 3, 0).copy(), axis=3)
            kind = "DEPTHWISE_CONV_2D"
            opts["depth_multiplier"] = 1
        else:
            raise ConversionError(f"grouped convolution with group={group} is not supported")
        bi = out.const(f"{n.output[0]}/bias", b.astype(np.float32), role="bias", axis=0)
        out.tensors[bi].bias_of = (x, wi)
        out.ops.append(Op(kind, [x, wi, bi], [y], opts))
        self.env[last] = (y, True)

    def _pool(self, n: Any, a: dict[str, Any], kind: str) -> None:
        x, _ = self.env[n.input[0]]
        kh, kw = a["kernel_shape"]
        sh, sw = a.get("strides", [1, 1])
        if any(a.get("pads", [0, 0, 0, 0])) or a.get("ceil_mode", 0):
            raise ConversionError(f"{n.op_type} with padding or ceil_mode is not supported")
        _, h, wd, c = self.shape_of(x)
        y = self.act(n.output[0], (1, (h - kh) // sh + 1, (wd - kw) // sw + 1, c))
        opts = {"padding": "VALID", "stride": (sh, sw), "filter": (kh, kw), "act": "NONE"}
        self.out.ops.append(Op(kind, [x], [y], opts))
        self.env[n.output[0]] = (y, True)

    def _op_MaxPool(self, n: Any, a: dict[str, Any]) -> None:
        self._pool(n, a, "MAX_POOL_2D")

    def _op_AveragePool(self, n: Any, a: dict[str, Any]) -> None:
        self._pool(n, a, "AVERAGE_POOL_2D")

    def _op_Pad(self, n: Any, a: dict[str, Any]) -> None:
        x, nhwc = self.env[n.input[0]]
        if a.get("mode", b"constant") not in (b"constant", "constant"):
            raise ConversionError("only constant padding is supported")
        pv = self.consts[n.input[1]].astype(np.int64).reshape(-1)
        fill = self.consts[n.input[2]] if len(n.input) > 2 and n.input[2] else 0.0
        if float(np.asarray(fill).reshape(-1)[0]) != 0.0:
            raise ConversionError("only zero padding is supported")
        r = len(pv) // 2
        pairs = [(int(pv[i]), int(pv[i + r])) for i in range(r)]
        if nhwc:
            pairs = [pairs[0], pairs[2], pairs[3], pairs[1]]
        p = self.out.const(f"{n.output[0]}/paddings", np.array(pairs, np.int32), role="int")
        y = self.act(n.output[0], tuple(d + lo + hi for d, (lo, hi) in zip(self.shape_of(x), pairs)))
        self.out.ops.append(Op("PAD", [x, p], [y]))
        self.env[n.output[0]] = (y, nhwc)

    def _binary(self, n: Any, kind: str) -> None:
        """ADD / MUL of two equal-shape activations, or of an activation and a constant; a sole
        following Relu is fused."""
        names = list(n.input)
        act_in = [i for i in names if i not in self.consts]
        x, nhwc = self.env[act_in[0]]
        if len(act_in) == 2:
            x2, _ = self.env[act_in[1]]
            if self.shape_of(x) != self.shape_of(x2):
                raise ConversionError(f"{n.op_type} with broadcasting between activations is not supported")
            ins = [x, x2]
        else:
            cst = np.asarray(self.consts[next(i for i in names if i in self.consts)], np.float32)
            if nhwc and cst.ndim == 4:
                cst = cst.transpose(0, 2, 3, 1)
            elif nhwc and cst.ndim == 3:
                cst = cst.transpose(1, 2, 0)
            ins = [x, self.out.const(f"{n.output[0]}/const", cst.astype(np.float32).copy(), role="const")]
        last, act = n.output[0], "NONE"
        r = self.only_consumer(last, "Relu")
        if r is not None:
            self.fuse(r)
            last, act = r.output[0], "RELU"
        y = self.act(last, self.shape_of(x))
        self.out.ops.append(Op(kind, ins, [y], {"act": act}))
        self.env[last] = (y, nhwc)

    def _op_Add(self, n: Any, a: dict[str, Any]) -> None:
        self._binary(n, "ADD")

    def _op_Mul(self, n: Any, a: dict[str, Any]) -> None:
        self._binary(n, "MUL")

    def _prelu_op(self, n: Any, out_name: str, slope: np.ndarray) -> None:
        x, nhwc = self.env[n.input[0]]
        c = self.shape_of(x)[-1]
        al = self.out.const(f"{out_name}/alpha", slope.astype(np.float32).reshape(1, 1, c), role="const")
        y = self.act(out_name, self.shape_of(x))
        self.out.ops.append(Op("PRELU", [x, al], [y]))
        self.env[out_name] = (y, nhwc)

    def _op_Relu(self, n: Any, a: dict[str, Any]) -> None:
        m = _prelu(n, self.consumers, self.consts)
        if m is None:
            self.unary(n, "RELU", [])
            return
        # relu(y) + a·(y − |y|) is PReLU with slope 2a (how TF exports of MobileFaceNet spell PReLU)
        alpha, members, add = m
        self._prelu_op(n, add.output[0], 2.0 * alpha.reshape(-1))
        for member in members:
            self.fuse(member)

    def _op_PRelu(self, n: Any, a: dict[str, Any]) -> None:
        """ONNX PRelu with constant slopes (e.g. after facesdk_zoo.quantize.fuse_prelu)."""
        if n.input[1] not in self.consts:
            raise ConversionError(
                f"PRelu ({n.name or n.output[0]}) with a non-constant slope is not supported"
            )
        c = self.shape_of(self.env[n.input[0]][0])[-1]
        slope = np.asarray(self.consts[n.input[1]], np.float32).reshape(-1)
        if slope.size == 1:
            slope = np.full(c, float(slope[0]), np.float32)
        if slope.size != c:
            raise ConversionError(f"PRelu slope of {slope.size} values for {c} channels is not supported")
        self._prelu_op(n, n.output[0], slope)

    def _op_Transpose(self, n: Any, a: dict[str, Any]) -> None:
        x, nhwc = self.env[n.input[0]]
        shp = self.shape_of(x)
        if nhwc and list(a.get("perm", [])) == [0, 2, 3, 1] and shp[1] == shp[2] == 1:
            self.env[n.output[0]] = (x, True)  # NCHW→NHWC of a 1×1 map moves no data
            return
        raise ConversionError("Transpose is supported only as NCHW→NHWC of a 1x1 map")

    def _op_GlobalAveragePool(self, n: Any, a: dict[str, Any]) -> None:
        x, _ = self.env[n.input[0]]
        axes = self.out.const(f"{n.output[0]}/axes", np.array([1, 2], np.int32), role="int")
        y = self.act(n.output[0], (1, 1, 1, self.shape_of(x)[3]))
        self.out.ops.append(Op("MEAN", [x, axes], [y], {"keep_dims": True}))
        self.env[n.output[0]] = (y, True)

    def _op_Reshape(self, n: Any, a: dict[str, Any]) -> None:
        if n.input[0] in self.consts:  # constant folding (e.g. a PReLU slope reshaped)
            self.consts[n.output[0]] = self._reshaped(self.consts, n)
            return
        self._op_Flatten(n, a)

    def _op_Flatten(self, n: Any, a: dict[str, Any]) -> None:
        x, nhwc = self.env[n.input[0]]
        shp = self.shape_of(x)
        if nhwc and (shp[1] != 1 or shp[2] != 1):
            raise ConversionError(
                f"{n.op_type} of a {shp[1]}x{shp[2]} map needs a layout change (not supported)"
            )
        feat = int(np.prod(shp[1:]))
        s_idx = self.out.const(f"{n.output[0]}/shape", np.array([-1, feat], np.int32), role="int")
        y = self.act(n.output[0], (1, feat))
        self.out.ops.append(Op("RESHAPE", [x, s_idx], [y], {"new_shape": [-1, feat]}))
        self.env[n.output[0]] = (y, False)

    def _op_MatMul(self, n: Any, a: dict[str, Any]) -> None:
        out = self.out
        x, nhwc = self.env[n.input[0]]
        if nhwc:
            raise ConversionError(f"{n.op_type} on a 4-D map is not supported")
        w = np.asarray(self.consts[n.input[1]], np.float32)
        bias = None
        if n.op_type == "Gemm":
            if a.get("transA", 0) or float(a.get("alpha", 1.0)) != 1.0:
                raise ConversionError("Gemm with transA or alpha != 1 is not supported")
            w = w if a.get("transB", 0) else w.T
            if len(n.input) > 2:
                bias = np.asarray(self.consts[n.input[2]], np.float32).reshape(-1)
                bias = bias * float(a.get("beta", 1.0))
        else:
            w = w.T
        wi = out.const(f"{n.output[0]}/weights", w.copy(), axis=0)
        ins = [x, wi]
        if bias is not None:
            bi = out.const(f"{n.output[0]}/bias", bias, role="bias", axis=0)
            out.tensors[bi].bias_of = (x, wi)
            ins.append(bi)
        else:
            ins.append(-1)
        y = self.act(n.output[0], (1, w.shape[0]))
        out.ops.append(Op("FULLY_CONNECTED", ins, [y], {"act": "NONE"}))
        self.env[n.output[0]] = (y, False)

    _op_Gemm = _op_MatMul

    def _op_LpNormalization(self, n: Any, a: dict[str, Any]) -> None:
        _, nhwc = self.env[n.input[0]]
        if int(a.get("p", 2)) != 2 or nhwc or int(a.get("axis", -1)) not in (-1, 1):
            raise ConversionError("only L2 normalisation over the last axis is supported")
        self.unary(n, "L2_NORMALIZATION", [], {"act": "NONE"})


def onnx_to_graph(path: str | Path) -> TFLGraph:
    """Translate a float ONNX model of the supported operator set into the TFLite IR."""
    import onnx
    from onnx import shape_inference

    try:
        model = onnx.load(str(path))
    except Exception as exc:  # noqa: BLE001 - protobuf errors
        raise ConversionError(f"cannot read ONNX model {path}: {exc}") from None
    return _OnnxTranslator(shape_inference.infer_shapes(model)).translate()


# --------------------------------------------------------------------------- IR → flatbuffer

_ACT = {"NONE": 0, "RELU": 1}


def _tensor_t(s: Any, t: Tensor, buffers: list[Any]) -> Any:
    """The schema's ``TensorT`` of an IR tensor; constant data goes into a new buffer."""
    type_of = {
        "float32": s.TensorType.FLOAT32,
        "int8": s.TensorType.INT8,
        "int32": s.TensorType.INT32,
        "uint8": s.TensorType.UINT8,
    }
    tt = s.TensorT()
    tt.name = t.name
    tt.shape = list(t.shape)
    if t.dynamic_batch and t.data is None:
        tt.shapeSignature = [-1, *t.shape[1:]]
    tt.type = type_of[t.dtype]
    if t.data is not None:
        b = s.BufferT()
        b.data = np.frombuffer(np.ascontiguousarray(t.data).tobytes(), np.uint8)
        buffers.append(b)
        tt.buffer = len(buffers) - 1
    if t.quant is not None:
        q = s.QuantizationParametersT()
        q.scale = [float(v) for v in t.quant[0]]
        q.zeroPoint = [int(v) for v in t.quant[1]]
        q.quantizedDimension = int(t.quant[2])
        tt.quantization = q
    return tt


def _set_options(s: Any, o: Any, op: Op) -> None:
    """The builtin options of one operator (or its custom options) on the schema's ``OperatorT``."""
    k, opt = op.kind, op.options
    pad = {"SAME": s.Padding.SAME, "VALID": s.Padding.VALID}
    opts = s.BuiltinOptions
    if k in ("CONV_2D", "DEPTHWISE_CONV_2D"):
        bo = s.Conv2DOptionsT() if k == "CONV_2D" else s.DepthwiseConv2DOptionsT()
        bo.padding, (bo.strideH, bo.strideW) = pad[opt["padding"]], opt["stride"]
        if k == "DEPTHWISE_CONV_2D":
            bo.depthMultiplier = 1
        bo.dilationHFactor = bo.dilationWFactor = 1
        bo.fusedActivationFunction = _ACT[opt["act"]]
        o.builtinOptionsType = opts.Conv2DOptions if k == "CONV_2D" else opts.DepthwiseConv2DOptions
        o.builtinOptions = bo
    elif k in ("MAX_POOL_2D", "AVERAGE_POOL_2D"):
        bo = s.Pool2DOptionsT()
        bo.padding, (bo.strideH, bo.strideW) = pad[opt["padding"]], opt["stride"]
        bo.filterHeight, bo.filterWidth = opt["filter"]
        bo.fusedActivationFunction = 0
        o.builtinOptionsType, o.builtinOptions = opts.Pool2DOptions, bo
    elif k in ("ADD", "MUL"):
        bo = s.AddOptionsT() if k == "ADD" else s.MulOptionsT()
        bo.fusedActivationFunction = _ACT[opt.get("act", "NONE")]
        o.builtinOptionsType = opts.AddOptions if k == "ADD" else opts.MulOptions
        o.builtinOptions = bo
    elif k == "PAD":
        o.builtinOptionsType, o.builtinOptions = opts.PadOptions, s.PadOptionsT()
    elif k == "MEAN":
        bo = s.ReducerOptionsT()
        bo.keepDims = bool(opt.get("keep_dims", True))
        o.builtinOptionsType, o.builtinOptions = opts.ReducerOptions, bo
    elif k == "RESHAPE":
        bo = s.ReshapeOptionsT()
        bo.newShape = list(opt["new_shape"])
        o.builtinOptionsType, o.builtinOptions = opts.ReshapeOptions, bo
    elif k == "FULLY_CONNECTED":
        bo = s.FullyConnectedOptionsT()
        bo.fusedActivationFunction = _ACT[opt.get("act", "NONE")]
        o.builtinOptionsType, o.builtinOptions = opts.FullyConnectedOptions, bo
    elif k == "L2_NORMALIZATION":
        o.builtinOptionsType, o.builtinOptions = opts.L2NormOptions, s.L2NormOptionsT()
    elif k.startswith("CUSTOM:"):
        o.customOptions = list(opt.get("custom_options", b""))
    elif k not in ("RELU", "PRELU", "QUANTIZE", "DEQUANTIZE"):  # pragma: no cover - the IR makes no other
        raise ConversionError(f"cannot serialise {k}")


def _operator_code(s: Any, kind: str) -> Any:
    """``OperatorCodeT`` of a builtin (``CONV_2D``) or custom (``CUSTOM:<name>``) operator."""
    c = s.OperatorCodeT()
    if kind.startswith("CUSTOM:"):
        c.customCode = kind.split(":", 1)[1]
        code = s.BuiltinOperator.CUSTOM
    else:
        code = getattr(s.BuiltinOperator, kind)
    c.builtinCode = code
    c.deprecatedBuiltinCode = min(code, 127)
    c.version = 1
    return c


def write_tflite(graph: TFLGraph, description: str = "facesdk") -> bytes:
    """Serialise the IR as a TFLite flatbuffer (``TFL3``)."""
    s = _schema()
    import flatbuffers

    buffers = [s.BufferT()]  # buffer 0: the empty buffer of every activation
    tensors = [_tensor_t(s, t, buffers) for t in graph.tensors]
    opcodes: list[str] = []
    ops = []
    for op in graph.ops:
        if op.kind not in opcodes:
            opcodes.append(op.kind)
        o = s.OperatorT()
        o.opcodeIndex = opcodes.index(op.kind)
        o.inputs, o.outputs = list(op.inputs), list(op.outputs)
        _set_options(s, o, op)
        ops.append(o)
    sg = s.SubGraphT()
    sg.tensors, sg.operators = tensors, ops
    sg.inputs, sg.outputs = list(graph.inputs), list(graph.outputs)
    sg.name = "main"
    m = s.ModelT()
    m.version = 3
    m.description = description
    m.operatorCodes = [_operator_code(s, k) for k in opcodes]
    m.subgraphs = [sg]
    if graph.metadata:
        b = s.BufferT()
        b.data = np.frombuffer(json.dumps(graph.metadata, sort_keys=True).encode(), np.uint8)
        buffers.append(b)
        md = s.MetadataT()
        md.name = "facesdk"
        md.buffer = len(buffers) - 1
        m.metadata = [md]
    m.buffers = buffers
    builder = flatbuffers.Builder(1 << 20)
    builder.Finish(m.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


# --------------------------------------------------------------------------- int8


def calibrate_ranges(
    model: bytes, graph: TFLGraph, samples: np.ndarray, batch: int = 8, percentile: float | None = None
) -> dict[int, tuple[float, float]]:
    """(min, max) of every activation over ``samples`` (float NHWC), from LiteRT kernels (no delegate).

    With ``percentile`` (e.g. 99.99) the range is the mean over batches of the per-batch
    (100 − p, p) percentiles, which ignores rare outliers (the "percentile" calibration of
    TensorRT / ONNX Runtime); otherwise the absolute min/max.
    """
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    interp = Interpreter(
        model_content=model,
        experimental_preserve_all_tensors=True,
        experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
    )
    in_idx = interp.get_input_details()[0]["index"]
    acts = [i for i, t in enumerate(graph.tensors) if t.data is None]
    lo = {i: np.inf for i in acts}
    hi = {i: -np.inf for i in acts}
    plo: dict[int, list[float]] = {}
    phi: dict[int, list[float]] = {}
    cur = None
    for s0 in range(0, len(samples), batch):
        x = np.ascontiguousarray(samples[s0 : s0 + batch], np.float32)
        if cur != len(x):
            interp.resize_tensor_input(in_idx, list(x.shape))
            interp.allocate_tensors()
            cur = len(x)
        interp.set_tensor(in_idx, x)
        interp.invoke()
        for i in acts:
            v = interp.get_tensor(i)
            if percentile is not None:
                a, b = np.percentile(v, [100.0 - percentile, percentile])
                plo.setdefault(i, []).append(float(a))
                phi.setdefault(i, []).append(float(b))
            lo[i] = min(lo[i], float(v.min()))
            hi[i] = max(hi[i], float(v.max()))
    if percentile is not None:
        return {i: (max(lo[i], float(np.mean(plo[i]))), min(hi[i], float(np.mean(phi[i])))) for i in acts}
    return {i: (lo[i], hi[i]) for i in acts}


def _act_params(lo: float, hi: float) -> tuple[float, int]:
    """Asymmetric int8 scale/zero point covering [min(lo,0), max(hi,0)] (the range must hold 0)."""
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    if hi - lo < 1e-8:
        hi = lo + 1e-8
    scale = (hi - lo) / 255.0
    zp = int(np.clip(round(-128 - lo / scale), -128, 127))
    return scale, zp


def quantize_graph(graph: TFLGraph, ranges: dict[int, tuple[float, float]]) -> TFLGraph:
    """A full-integer int8 copy of ``graph``: int8 input/output, per-channel int8 weights, int32 biases."""
    import copy

    g = copy.deepcopy(graph)
    same_io = {"MAX_POOL_2D", "AVERAGE_POOL_2D", "PAD", "RESHAPE"}
    # activations: own calibrated params, then propagate equal-params constraints forward
    for i, t in enumerate(g.tensors):
        if t.data is None:
            s, z = _act_params(*ranges[i])
            t.quant, t.dtype = (np.array([s]), np.array([z]), 0), "int8"
    for op in g.ops:
        if op.kind in same_io:
            g.tensors[op.outputs[0]].quant = g.tensors[op.inputs[0]].quant
        if op.kind == "L2_NORMALIZATION":  # fixed by the TFLite int8 kernel: scale 1/128, zero point 0
            g.tensors[op.outputs[0]].quant = (np.array([1 / 128.0]), np.array([0]), 0)
    # weights, biases, constant operands
    for t in g.tensors:
        if t.data is None or t.role == "int":
            continue
        if t.role == "weight":
            ax = t.channel_axis if t.channel_axis is not None else 0
            w = t.data.astype(np.float32)
            red = tuple(d for d in range(w.ndim) if d != ax)
            amax = np.maximum(np.abs(w).max(axis=red), 1e-12)
            sc = amax / 127.0
            shp = [1] * w.ndim
            shp[ax] = -1
            t.data = np.clip(np.round(w / sc.reshape(shp)), -127, 127).astype(np.int8)
            t.quant, t.dtype = (sc, np.zeros(len(sc), np.int64), ax), "int8"
        elif t.role == "const":
            v = t.data.astype(np.float32)
            s, z = _act_params(float(v.min()), float(v.max()))
            t.data = np.clip(np.round(v / s) + z, -128, 127).astype(np.int8)
            t.quant, t.dtype = (np.array([s]), np.array([z]), 0), "int8"
    for t in g.tensors:
        if t.role == "bias" and t.bias_of is not None:
            x_i, w_i = t.bias_of
            s_in = float(g.tensors[x_i].quant[0][0])  # type: ignore[index]
            s_w = g.tensors[w_i].quant[0]  # type: ignore[index]
            sc = s_in * np.asarray(s_w, np.float64)
            t.data = np.round(t.data.astype(np.float64) / sc).astype(np.int32)
            t.quant, t.dtype = (sc, np.zeros(len(sc), np.int64), 0), "int32"
    g.metadata = {**g.metadata, "facesdk.precision": "int8"}
    return g


def convert_onnx(
    onnx_path: str | Path,
    out: str | Path,
    *,
    int8: bool = False,
    calibration: np.ndarray | None = None,
    metadata: dict[str, str] | None = None,
    percentile: float | None = None,
) -> Path:
    """ONNX file → ``.tflite`` (fp32, or full-int8 calibrated on ``calibration``: float NCHW tensors)."""
    from facesdk.fileio import atomic_write_bytes

    g = onnx_to_graph(onnx_path)
    g.metadata = {
        **g.metadata,
        "facesdk.writer": f"facesdk_zoo.tflite_writer {WRITER_VERSION}",
        "facesdk.precision": "fp32",
        **(metadata or {}),
    }
    data = write_tflite(g)
    if int8:
        if calibration is None or not len(calibration):
            raise ConversionError("full-integer int8 needs a calibration set")
        x = calibration.transpose(0, 2, 3, 1) if calibration.ndim == 4 else calibration
        ranges = calibrate_ranges(data, g, x, percentile=percentile)
        data = write_tflite(quantize_graph(g, ranges))
    return atomic_write_bytes(out, data)
