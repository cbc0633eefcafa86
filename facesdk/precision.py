"""Precision names and what an artifact really computes in.

Backends compare a requested precision with what the loaded artifact/engine runs through
:meth:`facesdk.backend.Backend.precision_that_runs` (strict mode raises
:class:`~facesdk.errors.DeviceMismatchError`, otherwise one warning and the session reports the
precision that really runs).

ONNX precision is read from the graph itself: QDQ / QOperator / integer ops
(``QuantizeLinear``, ``QLinearConv``, ``ConvInteger`` …, the operator set of
https://onnxruntime.ai/docs/performance/model-optimizations/quantization.html)
mean int8; float16 initializers mean fp16; anything else fp32.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from .errors import ConfigError, ModelFormatError

__all__ = ["KNOWN_PRECISIONS", "normalize_precision", "onnx_float_layers", "onnx_precision"]

log = logging.getLogger(__name__)

#: Every precision name facesdk knows (backends run a subset).
KNOWN_PRECISIONS = ("fp32", "fp16", "bf16", "int8", "ai8x")

_ALIASES = {
    "f32": "fp32",
    "float32": "fp32",
    "float": "fp32",
    "f16": "fp16",
    "float16": "fp16",
    "half": "fp16",
    "bfloat16": "bf16",
    "i8": "int8",
    "u8": "int8",
    "qint8": "int8",
}

_INT_OPS = frozenset(
    {
        "QuantizeLinear",
        "DequantizeLinear",
        "DynamicQuantizeLinear",
        "QLinearConv",
        "QLinearMatMul",
        "QLinearAdd",
        "QLinearMul",
        "QLinearGlobalAveragePool",
        "QLinearAveragePool",
        "QLinearLeakyRelu",
        "QLinearSigmoid",
        "QLinearConcat",
        "ConvInteger",
        "MatMulInteger",
        "QGemm",
        "DynamicQuantizeMatMul",
    }
)
_FLOAT16 = 10  # onnx.TensorProto.FLOAT16

_cache: dict[tuple[str, int, int], str] = {}
_cache_lock = threading.Lock()


def normalize_precision(name: str) -> str:
    """Canonical precision name (``f32`` → ``fp32`` …); unknown names are a ConfigError."""
    p = _ALIASES.get(str(name).strip().lower(), str(name).strip().lower())
    if p not in KNOWN_PRECISIONS:
        raise ConfigError(f"unknown precision {name!r}; use one of {', '.join(KNOWN_PRECISIONS)}")
    return p


def onnx_precision(path: str | Path) -> str:
    """``int8``, ``fp16`` or ``fp32``: what an ONNX file computes in, read from its graph (cached)."""
    p = Path(path)
    try:
        st = p.stat()
    except OSError as exc:
        raise ModelFormatError(f"cannot read {p}: {exc}") from None
    key = (str(p.resolve()), st.st_mtime_ns, st.st_size)
    with _cache_lock:
        if key in _cache:
            return _cache[key]
    try:
        import onnx
    except ImportError as exc:  # pragma: no cover - onnx ships with the onnxruntime extra
        raise ModelFormatError("reading an ONNX file's precision needs the onnx package") from exc
    try:
        model = onnx.load(str(p), load_external_data=False)
    except Exception as exc:  # noqa: BLE001 - protobuf raises DecodeError and friends
        raise ModelFormatError(f"{p.name} is not a readable ONNX model: {exc}") from None
    props = {m.key: m.value for m in model.metadata_props}
    graphs = [model.graph]
    ops: set[str] = set()
    half = False
    while graphs:
        g = graphs.pop()
        for n in g.node:
            ops.add(n.op_type)
            for a in n.attribute:
                if a.g is not None and a.g.node:
                    graphs.append(a.g)
        half = half or any(t.data_type == _FLOAT16 for t in g.initializer)
    if ops & _INT_OPS:
        prec = "int8"
    elif half:
        prec = "fp16"
    else:
        prec = "fp32"
    declared = props.get("facesdk.precision")
    if declared and declared != prec:
        log.warning("%s declares precision %s but its graph computes in %s", p.name, declared, prec)
    with _cache_lock:
        _cache[key] = prec
    return prec


#: Float compute operators whose weights decide where the arithmetic happens.
_WEIGHTED_OPS = frozenset({"Conv", "ConvTranspose", "MatMul", "Gemm"})


def onnx_float_layers(path: str | Path) -> list[str]:
    """Names of the weighted layers (Conv/MatMul/Gemm) an int8 ONNX graph still runs in float.

    Read from the graph, not from any label: in a QDQ graph a layer runs int8 when its activation and
    weight inputs both come from ``DequantizeLinear`` (ONNX Runtime then fuses it into an integer kernel);
    a float Conv/MatMul/Gemm anywhere else is mixed precision. Empty for a fully quantised graph, and for
    a plain fp32 graph (everything is float there; :func:`onnx_precision` says ``fp32``).
    """
    p = Path(path)
    try:
        import onnx

        model = onnx.load(str(p), load_external_data=False)
    except ImportError as exc:  # pragma: no cover - onnx ships with the onnxruntime extra
        raise ModelFormatError("reading an ONNX file's layers needs the onnx package") from exc
    except Exception as exc:  # noqa: BLE001 - protobuf raises DecodeError and friends
        raise ModelFormatError(f"{p.name} is not a readable ONNX model: {exc}") from None
    g = model.graph
    if not any(n.op_type in _INT_OPS for n in g.node):
        return []
    produced = {o: n.op_type for n in g.node for o in n.output}
    out = []
    for n in g.node:
        if n.op_type not in _WEIGHTED_OPS:
            continue
        ins = [i for i in n.input[:2] if i]
        if not all(produced.get(i) == "DequantizeLinear" for i in ins):
            out.append(n.name or n.output[0])
    return out
