"""On-device matching head: an enrolled gallery exported as one dot-product layer.

The head is the imprinting / dot-product layer of Qi, Brown & Lowe, "Low-Shot Learning with Imprinted
Weights" (CVPR 2018): a fully-connected layer without bias whose rows are the L2-normalised identity
templates, applied to the L2-normalised embedding, so each output is the cosine similarity
``s_k = <e/||e||, t_k>`` — exactly :meth:`facesdk.Gallery.similarities`.

Two forms, in ONNX (ORT, OpenVINO, TensorRT's parser) and TFLite (fp32, or full-int8 via our writer):

* ``beside``: input ``embedding [N, D]`` → ``scores [N, K]`` (runs after any embedder, any TTA);
* ``appended``: the embedder's graph with the head on its output: input ``[N, …]`` image tensor →
  outputs ``descriptor`` and ``scores``.

Identity names, the threshold and provenance ride in the file (ONNX ``metadata_props`` / the TFLite
``facesdk`` metadata buffer) and are read back by :func:`load_head_names`. Decisions are made on the host
by :func:`decide` with the gallery's rule (best score, ``Unknown`` below the threshold).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from facesdk.errors import ConfigError, GalleryError, ModelFormatError
from facesdk.gallery import UNKNOWN, Gallery, Match

__all__ = ["decide", "export_head", "head_onnx", "load_head_names"]

log = logging.getLogger(__name__)


def _meta(gallery: Gallery, form: str) -> dict[str, str]:
    return {
        "facesdk.head": form,
        "facesdk.head.names": json.dumps(gallery.names),
        "facesdk.head.threshold": repr(float(gallery.threshold)),
        "facesdk.model_id": gallery.model_id,
        "facesdk.head.model_sha256": gallery.model_sha256 or "",
        "facesdk.head.formula": "scores = normalize(e) @ normalize(templates).T (cosine)",
    }


def head_onnx(gallery: Gallery, embedder: str | Path | None = None) -> Any:
    """The head as an ONNX ModelProto: beside (``embedder=None``) or appended to an ONNX embedder file."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    if len(gallery) == 0:
        raise GalleryError("cannot export an empty gallery")
    t = np.ascontiguousarray(gallery.templates.T.astype(np.float32))  # [D, K]
    d, k = t.shape
    nodes = []
    if embedder is None:
        graph = helper.make_graph(
            [],
            "facesdk_head",
            [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["N", d])],
            [],
            [numpy_helper.from_array(t, "head_templates_T")],
        )
        src = "embedding"
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
        graph = model.graph  # make_model copies the graph: extend the model's own
        form = "beside"
    else:
        model = onnx.load(str(embedder))
        graph = model.graph
        if len(graph.output) != 1:
            raise ConfigError("the embedder must have exactly one output to append a head")
        src = graph.output[0].name
        graph.initializer.append(numpy_helper.from_array(t, "head_templates_T"))
        form = "appended"
    nodes.append(helper.make_node("LpNormalization", [src], ["head_normalized"], axis=1, p=2))
    nodes.append(helper.make_node("MatMul", ["head_normalized", "head_templates_T"], ["scores"]))
    graph.node.extend(nodes)
    graph.output.append(helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["N", k]))
    meta = _meta(gallery, form)
    old = {p.key: p.value for p in model.metadata_props if p.key not in meta}
    del model.metadata_props[:]
    for key, v in {**old, **meta}.items():
        model.metadata_props.add(key=key, value=v)
    onnx.checker.check_model(model)
    return model


def export_head(
    gallery: Gallery,
    out: str | Path,
    *,
    embedder: str | Path | None = None,
    fmt: str | None = None,
    int8: bool = False,
    calibration: np.ndarray | None = None,
) -> Path:
    """Write the head (beside, or appended to the ONNX ``embedder``) as ``.onnx`` or ``.tflite``.

    ``int8`` (TFLite only) writes a full-integer model; its calibration inputs are ``calibration``:
    embeddings ``[N, D]`` for a head beside the embedder, float NCHW image tensors for an appended one.
    """
    from facesdk.fileio import atomic_write_bytes

    out = Path(out)
    fmt = fmt or {".onnx": "onnx", ".tflite": "tflite"}.get(out.suffix.lower())
    if fmt not in ("onnx", "tflite"):
        raise ConfigError(f"head format must be onnx or tflite, not {fmt!r}")
    model = head_onnx(gallery, embedder)
    if fmt == "onnx":
        if int8:
            raise ConfigError("an int8 ONNX head: quantise the appended model with the onnx_int8_qdq recipe")
        return atomic_write_bytes(out, model.SerializeToString())
    import tempfile

    from .tflite_writer import convert_onnx

    with tempfile.TemporaryDirectory(prefix="facesdk-head-") as td:
        tmp = Path(td) / "head.onnx"
        tmp.write_bytes(model.SerializeToString())
        return convert_onnx(tmp, out, int8=int8, calibration=calibration)


def load_head_names(path: str | Path) -> tuple[list[str], float]:
    """Identity names and threshold stored in an exported head (ONNX or TFLite)."""
    p = Path(path)
    if p.suffix.lower() == ".onnx":
        import onnx

        try:
            props = {m.key: m.value for m in onnx.load(str(p), load_external_data=False).metadata_props}
        except Exception as exc:  # noqa: BLE001 - protobuf errors
            raise ModelFormatError(f"{p.name} is not a readable ONNX head: {exc}") from None
    else:
        from facesdk.tflite_check import read_metadata

        props = read_metadata(p).get("facesdk", {})
    try:
        return [str(n) for n in json.loads(props["facesdk.head.names"])], float(
            props["facesdk.head.threshold"]
        )
    except (KeyError, ValueError, TypeError) as exc:
        raise ModelFormatError(f"{p.name} carries no facesdk head metadata ({exc})") from None


def decide(scores: np.ndarray, names: list[str], threshold: float, top_k: int = 5) -> list[Match]:
    """The gallery's rule on head scores: best identity, ``Unknown`` below ``threshold``."""
    s = np.asarray(scores, np.float32)
    if s.ndim != 2 or s.shape[1] != len(names):
        raise ConfigError(f"scores of shape {s.shape} do not fit {len(names)} identities")
    out = []
    kk = min(top_k, len(names))
    for row in s:
        idx = np.argsort(-row, kind="stable")[:kk]
        cands = [(names[j], float(row[j])) for j in idx]
        best = cands[0]
        out.append(Match(best[0] if best[1] >= threshold else UNKNOWN, best[1], cands))
    return out
