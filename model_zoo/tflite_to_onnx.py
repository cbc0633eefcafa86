"""Zoo recipe ``tflite-to-onnx``: convert a card's TFLite artifact to ONNX.

The conversion engine is ``tflite2onnx`` (PyPI, Apache-2.0; it reads the
TFLite flatbuffer through the ``tflite`` package and writes ONNX opset 11).
It works with numpy 2 and onnx >= 1.15 and covers every op the MediaPipe
BlazeFace graphs use (CONV_2D, DEPTHWISE_CONV_2D, fp16 DEQUANTIZE of weights,
PAD, MAX_POOL_2D, ADD, RELU, RESHAPE, CONCATENATION, RESIZE_BILINEAR).

tflite2onnx turns the NHWC image input into an NCHW one. By default this
recipe puts an NHWC input back in front (a single ``Transpose`` node) so the
TFLite and ONNX artifacts of one card take the very same tensor; set
``keep_nhwc = false`` in the card's source to keep tflite2onnx's NCHW input.

Card usage::

    sources = [{ kind = "recipe", location = "tflite-to-onnx",
                 inputs = { tflite = "blazeface-short:tflite" } }]

The converted file is cached by :func:`facesdk.zoo.fetch` (converted once). tflite2onnx emits the
graph's initializers and value_infos in an order that changes from run to run; the recipe sorts
both by name (order carries no meaning in ONNX), so the output bytes are reproducible and the card
can pin their sha256.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

from facesdk.errors import ModelFormatError, ModelNotFoundError
from facesdk.zoo import ArtifactSpec, ModelCard, check_magic

__all__ = ["tflite_to_onnx", "nhwc_input"]

log = logging.getLogger(__name__)


def nhwc_input(model: Any) -> Any:
    """Give an ONNX model with one NCHW image input an NHWC input (in place; returns the model)."""
    from onnx import TensorProto, helper

    graph = model.graph
    inits = {i.name for i in graph.initializer}
    real = [i for i in graph.input if i.name not in inits]
    if len(real) != 1:
        raise ModelFormatError(f"expected one image input, found {len(real)}")
    inp = real[0]
    dims = [d.dim_value if d.HasField("dim_value") else None for d in inp.type.tensor_type.shape.dim]
    if len(dims) != 4 or dims[1] not in (1, 3):
        raise ModelFormatError(f"input {inp.name!r} is not an NCHW image tensor (shape {dims})")
    name = inp.name
    inner = name + "_nchw"
    for node in graph.node:
        for k, v in enumerate(node.input):
            if v == name:
                node.input[k] = inner
    n, c, h, w = dims
    new_inp = helper.make_tensor_value_info(name, TensorProto.FLOAT, [n, h, w, c])
    idx = list(graph.input).index(inp)
    graph.input.remove(inp)
    graph.input.insert(idx, new_inp)
    graph.node.insert(
        0, helper.make_node("Transpose", [name], [inner], perm=[0, 3, 1, 2], name="nhwc_to_nchw")
    )
    return model


def _canonical_order(model: Any) -> None:
    """Sort initializers and value_infos by name (in place): reproducible bytes."""
    g = model.graph
    for name in ("initializer", "value_info"):
        rep = getattr(g, name)
        copies = []
        for x in sorted(rep, key=lambda x: x.name):
            c = type(x)()
            c.CopyFrom(x)
            copies.append(c)
        del rep[:]
        rep.extend(copies)


def tflite_to_onnx(card: ModelCard, art: ArtifactSpec, inputs: dict[str, Path], out: Path) -> None:
    """Recipe: convert ``inputs["tflite"]`` into the ONNX file ``out``.

    Raises:
        ModelNotFoundError: tflite2onnx/onnx are not installed or no input was given.
        ModelFormatError: the TFLite file cannot be converted.
    """
    src = inputs.get("tflite") or next(iter(inputs.values()), None)
    if src is None:
        raise ModelNotFoundError(f"recipe tflite-to-onnx for {card.id!r}: no TFLite input named in the card")
    check_magic(Path(src), "tflite")
    try:
        import onnx
        import tflite2onnx
    except ImportError as exc:
        raise ModelNotFoundError(
            f"recipe tflite-to-onnx needs tflite2onnx and onnx (pip install 'facesdk[models]'): {exc}"
        ) from None
    opts = {}
    for s in art.sources:
        if s.kind == "recipe" and s.location == "tflite-to-onnx":
            opts = dict(s.options)
    t2o_log = logging.getLogger("tflite2onnx")
    old_level = t2o_log.level
    t2o_log.setLevel(logging.ERROR)  # it warns once per fp16 weight tensor
    try:
        with tempfile.TemporaryDirectory(prefix="facesdk-t2o-") as tmp:
            raw = Path(tmp) / "raw.onnx"
            try:
                tflite2onnx.convert(str(src), str(raw))
            except Exception as exc:  # noqa: BLE001 - tflite2onnx raises bare asserts/NotImplementedError
                raise ModelFormatError(f"tflite2onnx cannot convert {Path(src).name}: {exc!r}") from None
            model = onnx.load(str(raw))
    finally:
        t2o_log.setLevel(old_level)
    if opts.get("keep_nhwc", True):
        nhwc_input(model)
    _canonical_order(model)
    model.producer_name = "facesdk tflite-to-onnx (tflite2onnx %s)" % getattr(tflite2onnx, "__version__", "?")
    onnx.checker.check_model(model)
    onnx.save(model, str(out))
    log.info("converted %s to ONNX (%s)", Path(src).name, out)
