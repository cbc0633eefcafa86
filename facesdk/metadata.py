"""Metadata that travels inside an artifact, read back and checked against the model card.

Each format carries key/value metadata next to the weights:

* ONNX: ``ModelProto.metadata_props`` (field 14, repeated ``StringStringEntryProto`` with
  ``key`` = 1, ``value`` = 2; onnx/onnx.proto3). Read here with a small protobuf walker over
  the top-level message only (the graph, field 7, is skipped by its length), so no ``onnx``
  package and no engine is needed, and a 90 MB model is not loaded into memory.
* TFLite: ``Model.metadata`` (``[Metadata {name; buffer}]``, tensorflow/lite/schema/schema.fbs),
  whose ``facesdk`` entry is a JSON buffer written by ``facesdk_zoo.tflite_writer``; read through
  :mod:`facesdk.tflite_check` (the one flatbuffer walker, bounds-checked).
* OpenVINO IR: the ``<rt_info>`` element at the end of the ``.xml`` (``Model.set_rt_info(value,
  ["facesdk", key])`` followed by ``openvino.save_model`` writes ``<rt_info><facesdk><key value="…"/>``;
  OpenVINO's IR v11 serializer, ``src/core/src/pass/serialize.cpp``). Read here with the standard
  library's streaming XML parser, so no engine is needed; a file that declares a DOCTYPE or entities
  (never written by OpenVINO) is refused before parsing.
* TensorRT: the JSON header facesdk writes before an engine (``facesdk_backends.tensorrt``).

facesdk's own keys start with ``facesdk.``: ``facesdk.model_id`` (the card the artifact was
made for), ``facesdk.precision`` and ``facesdk.source_sha256`` (sha256 of the file it was
converted from). :func:`check_metadata` compares them with the card; a mismatch means the file
is not the model the card describes.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from .errors import ModelFormatError

if TYPE_CHECKING:  # pragma: no cover
    from .zoo import ModelCard

__all__ = [
    "read_onnx_metadata", "read_tflite_metadata", "read_openvino_metadata", "read_metadata", "check_metadata",
]

#: Largest metadata entry read (a guard against a hostile length field).
_MAX_ENTRY = 1 << 20


def _varint(f: BinaryIO, what: str) -> int:
    out, shift = 0, 0
    while True:
        b = f.read(1)
        if not b:
            raise ModelFormatError(f"{what}: truncated protobuf varint")
        out |= (b[0] & 0x7F) << shift
        if b[0] < 0x80:
            return out
        shift += 7
        if shift > 63:
            raise ModelFormatError(f"{what}: malformed protobuf varint")


def _proto_strings(buf: bytes, what: str) -> dict[int, str]:
    """Length-delimited string fields of one small protobuf message (e.g. a StringStringEntryProto)."""
    import io

    f, out = io.BytesIO(buf), {}
    while f.tell() < len(buf):
        key = _varint(f, what)
        field, wire = key >> 3, key & 7
        if wire != 2:
            raise ModelFormatError(f"{what}: unexpected wire type {wire} in a metadata entry")
        n = _varint(f, what)
        data = f.read(n)
        if len(data) != n:
            raise ModelFormatError(f"{what}: truncated metadata entry")
        out[field] = data.decode("utf-8", "replace")
    return out


def read_onnx_metadata(path: str | os.PathLike) -> dict[str, str]:
    """``metadata_props`` of an ONNX file as a dict (raises ModelFormatError on a malformed file)."""
    p = Path(path)
    what = p.name
    meta: dict[str, str] = {}
    with open(p, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        while f.tell() < size:
            key = _varint(f, what)
            field, wire = key >> 3, key & 7
            if wire == 0:
                _varint(f, what)
            elif wire == 1:
                f.seek(8, 1)
            elif wire == 5:
                f.seek(4, 1)
            elif wire == 2:
                n = _varint(f, what)
                if f.tell() + n > size:
                    raise ModelFormatError(f"{what}: truncated ONNX file (field {field} runs past the end)")
                if field == 14:
                    if n > _MAX_ENTRY:
                        raise ModelFormatError(f"{what}: metadata entry of {n} bytes")
                    kv = _proto_strings(f.read(n), what)
                    meta[kv.get(1, "")] = kv.get(2, "")
                else:
                    f.seek(n, 1)
            else:
                raise ModelFormatError(f"{what}: not an ONNX protobuf (wire type {wire} at top level)")
    return meta


def read_tflite_metadata(path: str | os.PathLike) -> dict[str, str]:
    """``Model.metadata`` of a ``.tflite`` file, read by the one flatbuffer walker
    (:func:`facesdk.tflite_check.validate_tflite`, which checks every offset first): the ``facesdk``
    JSON buffer's entries as they are (``facesdk.model_id`` …); other entries as ``"<buffer N>"``."""
    from .tflite_check import validate_tflite

    meta: dict[str, str] = {}
    for k, v in validate_tflite(path).metadata.items():
        if k == "facesdk" and isinstance(v, Mapping):
            meta.update({str(a): str(b) for a, b in v.items()})
        else:
            meta[k] = f"<buffer {v}>"
    return meta


def _refuse_dtd(p: Path) -> None:
    """ModelFormatError when the XML declares a DOCTYPE or entities (entity-expansion attacks)."""
    tail = b""
    with open(p, "rb") as f:
        while chunk := f.read(1 << 20):
            block = tail + chunk
            if b"<!DOCTYPE" in block or b"<!ENTITY" in block:
                raise ModelFormatError(f"{p.name}: an OpenVINO IR has no DOCTYPE or entity declarations")
            tail = chunk[-16:]


def read_openvino_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The ``<rt_info><facesdk>`` entries of an OpenVINO IR ``.xml`` as ``{"facesdk.<key>": value}``
    (raises ModelFormatError for a file that is not an IR or not well-formed XML)."""
    import xml.etree.ElementTree as ET

    p = Path(path)
    _refuse_dtd(p)
    meta: dict[str, str] = {}
    stack: list[str] = []
    try:
        for event, el in ET.iterparse(p, events=("start", "end")):
            if event == "start":
                if not stack and el.tag != "net":
                    raise ModelFormatError(f"{p.name}: not an OpenVINO IR (root element <{el.tag}>)")
                stack.append(el.tag)
                continue
            if stack[:3] == ["net", "rt_info", "facesdk"] and len(stack) == 4:
                value = el.get("value")
                if value is not None:
                    if len(value) > _MAX_ENTRY:
                        raise ModelFormatError(f"{p.name}: metadata entry of {len(value)} characters")
                    meta[f"facesdk.{el.tag}"] = value
            stack.pop()
            el.clear()  # read already: keep memory flat on large graphs
    except ET.ParseError as exc:
        raise ModelFormatError(f"{p.name}: not a well-formed OpenVINO IR: {exc}") from None
    return meta


def read_metadata(path: str | os.PathLike, fmt: str) -> dict[str, str]:
    """The metadata an artifact carries, for the formats the core can read (ONNX, TFLite, OpenVINO IR);
    else ``{}``."""
    if fmt == "onnx":
        return read_onnx_metadata(path)
    if fmt == "tflite":
        return read_tflite_metadata(path)
    if fmt == "openvino-ir":
        return read_openvino_metadata(path)
    return {}


def check_metadata(
    meta: Mapping[str, str], card: "ModelCard", fmt: str, precision: str | None = None
) -> list[str]:
    """Where an artifact's own metadata contradicts its card: a list of problems (empty = consistent).

    Checked: ``facesdk.model_id`` against the card id; ``facesdk.precision`` against the artifact
    entry's precision (when the card lists this file); ``facesdk.source_sha256`` against the sha256
    the card gives the file it was made from (the card's ONNX artifact, for a file converted from ONNX).
    """
    problems = []
    mid = meta.get("facesdk.model_id")
    if mid and mid != card.id:
        problems.append(f"the file says it is model {mid!r}, the card is {card.id!r}")
    prec = meta.get("facesdk.precision")
    if prec and precision is not None and prec != precision:
        problems.append(f"the file says precision {prec!r}, the card's {fmt} entry says {precision!r}")
    src = meta.get("facesdk.source_sha256")
    if src and fmt != "onnx":
        onnx = [a.sha256 for a in card.artifacts if a.format == "onnx" and a.sha256]
        if onnx and src.lower() not in {s.lower() for s in onnx}:
            problems.append(
                f"the file was built from {src[:12]}…, not from the card's ONNX ({onnx[0][:12]}…)"
            )
    return problems
