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

__all__ = ["KNOWN_PRECISIONS", "normalize_precision", "onnx_precision"]

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
