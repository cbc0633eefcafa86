"""dlib ``dlib_face_recognition_resnet_model_v1.dat`` → ONNX, without dlib.

The ``.dat`` file is a serialized ``anet_type`` from dlib's
``dnn_face_recognition_ex.cpp``: a ResNet-29-ish metric network on 150×150 RGB
crops. dlib writes a network outermost layer first, each layer writing its
sub-network *before* its own details, so the file holds a run of version integers
(one per layer, outer → inner: 2 = computational layer, 1 = tag/skip layer,
3 = the layer sitting on the input), then the input layer's record, then every
computational layer's details in forward (inner → outer) order.

Tag and skip layers carry no id in the file, so the converter holds the network's
structure as a *plan* (a token list in forward order, built from the C++ type)
and checks the file against it: the version pattern, every layer's version string
and every tensor shape.

ONNX model (opset 13):

* input ``input``: float32 ``[N, 3, 150, 150]``, RGB planes, already normalised as
  dlib's ``input_rgb_image_sized`` does: ``(pixel - mean_c) / 256`` with the means
  stored in the file (R 122.782, G 117.001, B 104.298). The card's ``[input]``
  table (mean = those float32 values, std = 256, RGB, NCHW) makes the core feed
  exactly this.
* output ``descriptor``: float32 ``[N, 128]``, dlib's raw (not normalised) descriptor.

``metadata_props``: ``facesdk.model_id``, ``facesdk.source_sha256``,
``facesdk.converter``, ``facesdk.converter_version``, ``dlib.input_mean``.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from facesdk.dlib.fmt import DlibReader, read_dat
from facesdk.errors import ConversionError, ModelFormatError

__all__ = [
    "CONVERTER_VERSION",
    "Layer",
    "DlibNet",
    "parse_resnet",
    "resnet_plan",
    "to_onnx",
    "convert",
    "recipe",
]

log = logging.getLogger(__name__)

CONVERTER_VERSION = "1.0"
CONVERTER_NAME = "facesdk_zoo.dlib_resnet"


# --------------------------------------------------------------------------- plan


def resnet_plan() -> list[str]:
    """Forward-order tokens of dlib's face-recognition ``anet_type``.

    ``tagN`` remembers the current tensor, ``skipN`` makes the tensor remembered by
    ``tagN`` current again, ``add_prevN`` adds the tensor remembered by ``tagN``.
    """

    def ares() -> list[str]:  # relu<add_prev1<block<N,affine,1,tag1<SUBNET>>>>
        return ["tag1", "con", "affine", "relu", "con", "affine", "add_prev1", "relu"]

    def ares_down() -> list[
        str
    ]:  # relu<add_prev2<avg_pool<2,2,2,2,skip1<tag2<block<N,affine,2,tag1<..>>>>>>>
        return [
            "tag1",
            "con",
            "affine",
            "relu",
            "con",
            "affine",
            "tag2",
            "skip1",
            "avg_pool",
            "add_prev2",
            "relu",
        ]

    plan = ["con", "affine", "relu", "max_pool"]
    plan += ares() * 3  # alevel4, 32 channels
    plan += ares_down() + ares() * 3  # alevel3, 64
    plan += ares_down() + ares() * 2  # alevel2, 128
    plan += ares_down() + ares() * 2  # alevel1, 256
    plan += ares_down()  # alevel0, 256
    plan += ["avg_pool", "fc"]  # avg_pool_everything, fc_no_bias<128>
    return plan


def _is_tagskip(tok: str) -> bool:
    return tok.startswith("tag") or tok.startswith("skip")


# --------------------------------------------------------------------------- parsing


@dataclass
class Layer:
    """One computational layer read from the file."""

    kind: str  # con | affine | relu | max_pool | avg_pool | add_prev | fc
    offset: int
    attrs: dict[str, Any] = field(default_factory=dict)
    weights: dict[str, np.ndarray] = field(default_factory=dict)


@dataclass
class DlibNet:
    """A parsed dlib metric network: input means, input size, layers in forward order."""

    input_mean: tuple[float, float, float]
    input_size: tuple[int, int]
    plan: list[str]
    layers: list[Layer]
    loss: dict[str, float]


def _skip_doubles(r: DlibReader, n: int, what: str) -> None:
    for _ in range(n):
        r.float_(what)


def _read_con(r: DlibReader) -> Layer:
    off = r.pos
    ver = r.expect_string(("con_4", "con_5", "con_6"), "con_ version")
    params = r.tensor("con_ params").reshape(-1)
    nf = r.int_(what="num_filters")
    kh, kw = r.int_(what="con nr"), r.int_(what="con nc")
    sy, sx = r.int_(what="stride_y"), r.int_(what="stride_x")
    py, px = r.int_(what="padding_y"), r.int_(what="padding_x")
    fshape = r.alias_tensor("con_ filters")
    bshape = r.alias_tensor("con_ biases")
    _skip_doubles(r, 4, "con_ multipliers")
    use_bias = r.bool_("use_bias") if ver in ("con_5", "con_6") else True
    use_relu = r.bool_("use_relu") if ver == "con_6" else False
    nfw = int(np.prod(fshape))
    nb = int(np.prod(bshape))
    if fshape[0] != nf or fshape[2:] != (kh, kw) or min(kh, kw, sy, sx) <= 0 or min(py, px) < 0:
        raise r.error(f"inconsistent con_ layer (filters {fshape}, {nf} filters, {kh}x{kw})", off)
    if params.size < nfw + (nb if use_bias else 0):
        raise r.error(f"con_ params hold {params.size} values, filters+biases need {nfw + nb}", off)
    w = params[:nfw].reshape(fshape)
    b = params[nfw : nfw + nb].reshape(-1) if use_bias and nb else np.zeros(nf, np.float32)
    return Layer("con", off, dict(stride=(sy, sx), pad=(py, px), relu=use_relu), {"W": w, "B": b})


def _read_affine(r: DlibReader) -> Layer:
    off = r.pos
    ver = r.expect_string(("affine_", "affine_2"), "affine_ version")
    params = r.tensor("affine_ params").reshape(-1)
    g = r.alias_tensor("affine_ gamma")
    b = r.alias_tensor("affine_ beta")
    mode = r.int_(what="affine_ mode")
    disabled = r.bool_("affine_ disabled") if ver == "affine_2" else False
    n = int(np.prod(g))
    if mode != 0:
        raise r.error(f"affine_ mode {mode} (FC_MODE) is not supported by this converter", off)
    if g != b or params.size != 2 * n:
        raise r.error(f"inconsistent affine_ layer (gamma {g}, beta {b}, {params.size} params)", off)
    return Layer(
        "affine", off, dict(disabled=disabled), {"gamma": params[:n].copy(), "beta": params[n:].copy()}
    )


def _read_relu(r: DlibReader) -> Layer:
    off = r.pos
    ver = r.expect_string(("relu_", "relu_2"), "relu_ version")
    disabled = r.bool_("relu_ disabled") if ver == "relu_2" else False
    return Layer("relu", off, dict(disabled=disabled))


def _read_pool(r: DlibReader, kind: str) -> Layer:
    off = r.pos
    r.expect_string((f"{kind}_2",), f"{kind}_ version")
    kh, kw = r.int_(what="pool nr"), r.int_(what="pool nc")
    sy, sx = r.int_(what="pool stride_y"), r.int_(what="pool stride_x")
    py, px = r.int_(what="pool padding_y"), r.int_(what="pool padding_x")
    if min(kh, kw, py, px) < 0 or min(sy, sx) <= 0:
        raise r.error(f"inconsistent {kind} layer", off)
    return Layer(kind, off, dict(kernel=(kh, kw), stride=(sy, sx), pad=(py, px)))


def _read_add_prev(r: DlibReader) -> Layer:
    off = r.pos
    r.expect_string(("add_prev_",), "add_prev_ version")
    return Layer("add_prev", off)


def _read_fc(r: DlibReader) -> Layer:
    off = r.pos
    ver = r.expect_string(("fc_2", "fc_3"), "fc_ version")
    nout = r.uint("fc num_outputs")
    nin = r.uint("fc num_inputs")
    params = r.tensor("fc_ params").reshape(-1)
    wshape = r.alias_tensor("fc_ weights")
    r.alias_tensor("fc_ biases")  # consumed; the bias shape follows from num_outputs
    bias_mode = r.int_(what="fc_ bias_mode")
    _skip_doubles(r, 4, "fc_ multipliers")
    use_bias = r.bool_("fc_ use_bias") if ver == "fc_3" else True
    has_bias = bias_mode == 0 and use_bias
    nw = nin * nout
    if int(np.prod(wshape)) != nw or params.size < nw + (nout if has_bias else 0):
        raise r.error(f"inconsistent fc_ layer ({nin}->{nout}, weights {wshape}, {params.size} params)", off)
    w = params[:nw].reshape(nin, nout)
    b = params[nw : nw + nout].copy() if has_bias else None
    weights = {"W": w} if b is None else {"W": w, "B": b}
    return Layer("fc", off, dict(num_outputs=nout, num_inputs=nin), weights)


_READERS = {
    "con": _read_con,
    "affine": _read_affine,
    "relu": _read_relu,
    "max_pool": lambda r: _read_pool(r, "max_pool"),
    "avg_pool": lambda r: _read_pool(r, "avg_pool"),
    "add_prev": _read_add_prev,
    "fc": _read_fc,
}


def _bookkeeping(r: DlibReader, n_tensors: int) -> None:
    """The three bools and bookkeeping tensors written after each layer's details."""
    for what in ("this_layer_setup_called", "gradient_input_is_stale", "output_and_gradient_input_disabled"):
        r.bool_(what)
    for i in range(n_tensors):
        r.tensor(f"bookkeeping tensor {i}")


def parse_resnet(path: str | Path, plan: list[str] | None = None) -> DlibNet:
    """Parse ``dlib_face_recognition_resnet_model_v1.dat`` (or a net of the same type).

    Raises:
        ModelFormatError: the file is truncated/corrupt or does not match the plan
            (the message names the byte offset).
    """
    plan = plan or resnet_plan()
    r = read_dat(path)
    r.expect_int(1, "add_loss_layer version")
    r.expect_string(("loss_metric_", "loss_metric_2"), "loss layer version")
    loss = {"margin": r.float_("loss margin"), "dist_thresh": r.float_("loss dist_thresh")}

    # the run of versions, outermost layer first, ending with 3 (layer on the input)
    expected = [1 if _is_tagskip(t) else 2 for t in reversed(plan)]
    expected[-1] = 3
    for i, want in enumerate(expected):
        start = r.pos
        got = r.int_(what="layer version")
        if got != want:
            raise r.error(
                f"network structure differs from dlib's face-recognition ResNet: layer {i} (from the output) "
                f"has version {got}, expected {want}",
                start,
            )

    r.expect_string(("input_rgb_image_sized",), "input layer")
    mean = (r.float_("avg_red"), r.float_("avg_green"), r.float_("avg_blue"))
    nr, nc = r.uint("input NR"), r.uint("input NC")

    layers: list[Layer] = []
    first = True
    for tok in plan:
        if _is_tagskip(tok):
            continue
        kind = "add_prev" if tok.startswith("add_prev") else tok
        layers.append(_READERS[kind](r))
        if first:  # add_layer directly on the input: 3 tensors + sample_expansion_factor
            _bookkeeping(r, 3)
            r.uint("sample_expansion_factor")
            first = False
        else:
            _bookkeeping(r, 3)
    if not r.at_end():
        raise r.error(f"{r.remaining} unexpected trailing bytes after the network")
    return DlibNet(mean, (int(nr), int(nc)), list(plan), layers, loss)


# --------------------------------------------------------------------------- ONNX


def _out_size(n: int, k: int, s: int, p: int) -> int:
    """Output length of a convolution/pooling along one axis: ``1 + (n + 2p − k) // s``."""
    return 1 + (n + 2 * p - k) // s


class _OnnxBuilder:
    """ONNX nodes and initialisers of one dlib network, written layer by layer (one method per dlib layer
    kind, ``_<kind>``); ``cur``/``shape`` follow the running tensor and its (C, H, W). Names are numbered
    in creation order (an output's name before its constants), which keeps the file's bytes stable."""

    def __init__(self, net: DlibNet) -> None:
        self.nodes: list[Any] = []
        self.inits: list[Any] = []
        self.counter = 0
        self.cur = "input"
        self.shape: tuple[int, int, int] = (3, net.input_size[0], net.input_size[1])
        self.tags: dict[str, tuple[str, tuple[int, int, int]]] = {}

    def name(self, prefix: str) -> str:
        self.counter += 1
        return f"{prefix}_{self.counter}"

    def const(self, arr: np.ndarray, prefix: str) -> str:
        from onnx import numpy_helper

        n = self.name(prefix)
        self.inits.append(numpy_helper.from_array(np.ascontiguousarray(arr), n))
        return n

    def emit(self, op: str, inputs: list[str], y: str, **attrs: Any) -> None:
        """Append ``op`` reading ``inputs`` into ``y``, which becomes the running tensor."""
        from onnx import helper

        self.nodes.append(helper.make_node(op, inputs, [y], **attrs))
        self.cur = y

    def build(self, net: DlibNet) -> None:
        it = iter(net.layers)
        for tok in net.plan:
            if tok.startswith("tag"):
                self.tags[tok[3:]] = (self.cur, self.shape)
            elif tok.startswith("skip"):
                self.cur, self.shape = self.tags[tok[4:]]
            else:
                layer = next(it)
                method = getattr(self, f"_{layer.kind}", None)
                if method is None:  # pragma: no cover - readers only produce the kinds below
                    raise ConversionError(f"unsupported dlib layer {layer.kind!r}")
                method(layer, tok)

    def _con(self, layer: Layer, tok: str) -> None:
        a, w = layer.attrs, layer.weights
        (sy, sx), (py, px) = a["stride"], a["pad"]
        out_c, in_c, kh, kw = w["W"].shape
        c, h, wd = self.shape
        if in_c != c:
            raise ConversionError(f"con at byte {layer.offset}: {in_c} input channels, tensor has {c}")
        y = self.name("conv")
        ins = [self.cur, self.const(w["W"], "W"), self.const(w["B"], "B")]
        self.emit("Conv", ins, y, kernel_shape=[kh, kw], strides=[sy, sx], pads=[py, px, py, px])
        self.shape = (out_c, _out_size(h, kh, sy, py), _out_size(wd, kw, sx, px))
        if a["relu"]:
            self.emit("Relu", [self.cur], self.name("relu"))

    def _affine(self, layer: Layer, tok: str) -> None:
        a, w = layer.attrs, layer.weights
        if a["disabled"]:
            return
        c = self.shape[0]
        if w["gamma"].size != c:
            raise ConversionError(
                f"affine at byte {layer.offset}: {w['gamma'].size} channels, tensor has {c}"
            )
        y1, y2 = self.name("mul"), self.name("add")
        self.emit("Mul", [self.cur, self.const(w["gamma"].reshape(1, c, 1, 1), "gamma")], y1)
        self.emit("Add", [y1, self.const(w["beta"].reshape(1, c, 1, 1), "beta")], y2)

    def _relu(self, layer: Layer, tok: str) -> None:
        if not layer.attrs["disabled"]:
            self.emit("Relu", [self.cur], self.name("relu"))

    def _pool(self, layer: Layer, tok: str) -> None:
        a = layer.attrs
        (kh, kw), (sy, sx), (py, px) = a["kernel"], a["stride"], a["pad"]
        mx = layer.kind == "max_pool"
        y = self.name(layer.kind)
        c, h, wd = self.shape
        if kh == 0 and kw == 0:  # "_everything": global pooling
            self.emit("GlobalMaxPool" if mx else "GlobalAveragePool", [self.cur], y)
            self.shape = (c, 1, 1)
            return
        if py or px:
            raise ConversionError(f"{layer.kind} at byte {layer.offset}: padded pooling is not supported")
        self.emit("MaxPool" if mx else "AveragePool", [self.cur], y, kernel_shape=[kh, kw], strides=[sy, sx])
        self.shape = (c, _out_size(h, kh, sy, 0), _out_size(wd, kw, sx, 0))

    _max_pool = _avg_pool = _pool

    def _padded(self, t: str, s: tuple[int, int, int], target: tuple[int, int, int]) -> str:
        """``t`` zero-padded at the end of each axis to ``target`` (dlib's add_prev of unequal shapes)."""
        if s == target:
            return t
        from onnx import helper

        pads = np.array([0, 0, 0, 0, 0, target[0] - s[0], target[1] - s[1], target[2] - s[2]], np.int64)
        y = self.name("pad")
        self.nodes.append(helper.make_node("Pad", [t, self.const(pads, "pads")], [y], mode="constant"))
        return y

    def _add_prev(self, layer: Layer, tok: str) -> None:
        other, oshape = self.tags[tok[len("add_prev") :]]
        c, h, w = (max(p, q) for p, q in zip(self.shape, oshape))
        target = (c, h, w)
        y = self.name("add")
        self.emit("Add", [self._padded(self.cur, self.shape, target), self._padded(other, oshape, target)], y)
        self.shape = target

    def _fc(self, layer: Layer, tok: str) -> None:
        a, w = layer.attrs, layer.weights
        nin = int(np.prod(self.shape))
        if nin != a["num_inputs"]:
            raise ConversionError(f"fc at byte {layer.offset}: {a['num_inputs']} inputs, tensor has {nin}")
        f, y = self.name("flatten"), self.name("fc")
        self.emit("Flatten", [self.cur], f, axis=1)
        self.emit("MatMul", [f, self.const(w["W"], "fcW")], y)
        if "B" in w:
            yb = self.name("fcb")
            self.emit("Add", [y, self.const(w["B"], "fcB")], yb)
        self.shape = (a["num_outputs"], 1, 1)


def to_onnx(net: DlibNet, metadata: dict[str, str] | None = None) -> Any:
    """Build an ``onnx.ModelProto`` (opset 13) computing dlib's descriptor from a normalised crop."""
    import onnx
    from onnx import TensorProto, helper

    b = _OnnxBuilder(net)
    b.build(net)
    b.nodes.append(helper.make_node("Identity", [b.cur], ["descriptor"]))
    h, wd = net.input_size
    graph = helper.make_graph(
        b.nodes,
        "dlib_face_recognition_resnet_model_v1",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, h, wd])],
        [helper.make_tensor_value_info("descriptor", TensorProto.FLOAT, ["N", b.shape[0]])],
        b.inits,
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", 13)],
        producer_name="facesdk",
        producer_version=CONVERTER_VERSION,
        doc_string="dlib face-recognition ResNet converted by facesdk (no dlib used); "
        "input (rgb - mean)/256 NCHW, output raw 128-d descriptor",
    )
    model.ir_version = 8
    meta = {"dlib.input_mean": ",".join(repr(float(m)) for m in net.input_mean), **(metadata or {})}
    helper.set_model_props(model, meta)
    onnx.checker.check_model(model)
    return model


def convert(dat_path: str | Path, out_path: str | Path, model_id: str = "dlib-resnet-v1") -> Path:
    """Convert a ``.dat`` file to ONNX at ``out_path`` (deterministic bytes)."""

    dat_path, out_path = Path(dat_path), Path(out_path)
    sha = hashlib.sha256(dat_path.read_bytes()).hexdigest()
    net = parse_resnet(dat_path)
    model = to_onnx(
        net,
        {
            "facesdk.model_id": model_id,
            "facesdk.source_sha256": sha,
            "facesdk.converter": CONVERTER_NAME,
            "facesdk.converter_version": CONVERTER_VERSION,
        },
    )
    out_path.write_bytes(model.SerializeToString())
    log.info("converted %s (%d layers) to %s", dat_path.name, len(net.layers), out_path)
    return out_path


def recipe(card: Any, artifact: Any, inputs: dict[str, Path], out_path: Path) -> None:
    """Zoo recipe ``dlib_resnet_to_onnx``: ``inputs["dat"]`` → ONNX at ``out_path``."""
    if "dat" not in inputs:
        raise ConversionError("recipe dlib_resnet_to_onnx needs an input named 'dat'")
    try:
        convert(inputs["dat"], out_path, model_id=card.id)
    except ModelFormatError:
        raise
    except ImportError as exc:
        raise ConversionError(f"converting {card.id!r} needs the onnx package: {exc}") from None
