"""Validate a ``.tflite`` flatbuffer before any native interpreter sees it.

LiteRT's C++ loader trusts offsets inside the file; a truncated or corrupted model can crash the
process instead of raising. This module walks the flatbuffer in Python with the schema module shipped in
``ai-edge-litert`` (``schema_py_generated``; layout per ``tensorflow/compiler/mlir/lite/schema/schema.fbs``
and the FlatBuffers binary format, https://flatbuffers.dev/internals/) and checks every offset and
index it relies on: root table and vtables inside the file, buffer data (inline or ``offset``/``size``)
inside the file, tensor → buffer, operator → opcode and operator → tensor indices, subgraph inputs and
outputs, tensor types and shapes. Anything wrong raises :class:`~facesdk.errors.ModelFormatError`.

It also reports custom operators (``edgetpu-custom-op`` marks a model compiled by ``edgetpu_compiler``)
and reads the ``facesdk`` metadata buffer written by our TFLite writer.
"""

from __future__ import annotations

import json
import struct
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import BackendUnavailableError, ModelFormatError

__all__ = ["EDGETPU_CUSTOM_OP", "TFLiteInfo", "read_metadata", "validate_tflite"]

EDGETPU_CUSTOM_OP = "edgetpu-custom-op"
_MAX_RANK = 8
_MAX_TYPE = 64


@dataclass
class TFLiteInfo:
    """What a validated TFLite file holds."""

    version: int
    subgraphs: int
    tensors: int
    operators: int
    builtin_ops: list[str] = field(default_factory=list)
    custom_ops: list[str] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def edgetpu_compiled(self) -> bool:
        """True for a model compiled by ``edgetpu_compiler`` (it runs only with the Edge TPU delegate)."""
        return EDGETPU_CUSTOM_OP in self.custom_ops


def _schema() -> Any:
    try:
        from ai_edge_litert import schema_py_generated as s
    except ImportError as exc:
        raise BackendUnavailableError("checking .tflite files needs ai-edge-litert") from exc
    return s


def _check_table(buf: bytes, pos: int, what: str) -> None:
    """A table at ``pos``: its vtable (``pos - soffset``) and its declared sizes lie inside ``buf``."""
    n = len(buf)
    if pos < 0 or pos + 4 > n:
        raise ModelFormatError(f"{what}: table offset {pos} outside the file")
    (soff,) = struct.unpack_from("<i", buf, pos)
    vt = pos - soff
    if vt < 0 or vt + 4 > n:
        raise ModelFormatError(f"{what}: vtable offset {vt} outside the file")
    vt_size, obj_size = struct.unpack_from("<HH", buf, vt)
    if vt_size < 4 or vt + vt_size > n or pos + obj_size > n or vt_size % 2:
        raise ModelFormatError(f"{what}: corrupt vtable")
    for i in range(4, vt_size, 2):
        (fo,) = struct.unpack_from("<H", buf, vt + i)
        if fo and fo >= max(obj_size, 4):
            raise ModelFormatError(f"{what}: field offset outside its table")


def _vector(buf: bytes, table: Any, slot: int, elem: int, what: str) -> int:
    """Check the vector in field ``slot`` (vtable offset) of ``table``; return its length (0 if absent)."""
    o = table._tab.Offset(slot)
    if not o:
        return 0
    field_pos = table._tab.Pos + o
    if field_pos + 4 > len(buf):
        raise ModelFormatError(f"{what}: vector field outside the file")
    (rel,) = struct.unpack_from("<I", buf, field_pos)
    start = field_pos + rel
    if start + 4 > len(buf):
        raise ModelFormatError(f"{what}: vector outside the file")
    (length,) = struct.unpack_from("<I", buf, start)
    if start + 4 + length * elem > len(buf):
        raise ModelFormatError(f"{what}: vector of {length} elements runs past the end of the file")
    return length


def _tables(buf: bytes, parent: Any, slot: int, length: int, what: str) -> None:
    """Each table offset of a vector of tables lies inside the file."""
    vec = parent._tab.Vector(parent._tab.Offset(slot))
    for i in range(length):
        p = vec + 4 * i
        (rel,) = struct.unpack_from("<I", buf, p)
        _check_table(buf, p + rel, f"{what}[{i}]")


#: Results for files already walked: (resolved path, mtime_ns, size) → info (a load checks metadata,
#: then validates: the file is walked once).
_cache: dict[tuple[str, int, int], TFLiteInfo] = {}
_cache_lock = threading.Lock()


def validate_tflite(path: str | Path | bytes) -> TFLiteInfo:
    """Check a TFLite flatbuffer thoroughly; return what it holds or raise ModelFormatError."""
    s = _schema()
    key = None
    if isinstance(path, (bytes, bytearray)):
        buf, name = bytes(path), "<bytes>"
    else:
        p = Path(path)
        name = p.name
        try:
            st = p.stat()
            key = (str(p.resolve()), st.st_mtime_ns, st.st_size)
            with _cache_lock:
                if key in _cache:
                    return _cache[key]
            buf = p.read_bytes()
        except OSError as exc:
            raise ModelFormatError(f"cannot read {p}: {exc}") from None
    if len(buf) < 16 or buf[4:8] != b"TFL3":
        raise ModelFormatError(f"{name} is not a TFLite flatbuffer (no TFL3 identifier)")
    try:
        info = _walk(s, buf, name)
        if key is not None:
            with _cache_lock:
                _cache[key] = info
        return info
    except ModelFormatError:
        raise
    except Exception as exc:  # noqa: BLE001 - struct.error, IndexError … from a corrupt file
        raise ModelFormatError(f"{name} is a corrupt TFLite file: {type(exc).__name__}: {exc}") from None


def _walk(s: Any, buf: bytes, name: str) -> TFLiteInfo:
    (root,) = struct.unpack_from("<I", buf, 0)
    _check_table(buf, root, f"{name}: model")
    m = s.Model.GetRootAs(buf, 0)
    # Model fields (schema.fbs): version 4, operator_codes 6, subgraphs 8, description 10, buffers 12,
    # metadata_buffer 14, metadata 16
    n_codes = _vector(buf, m, 6, 4, f"{name}: operator codes")
    n_sub = _vector(buf, m, 8, 4, f"{name}: subgraphs")
    n_buf = _vector(buf, m, 12, 4, f"{name}: buffers")
    n_md = _vector(buf, m, 16, 4, f"{name}: metadata")
    _tables(buf, m, 6, n_codes, f"{name}: operator code")
    _tables(buf, m, 8, n_sub, f"{name}: subgraph")
    _tables(buf, m, 12, n_buf, f"{name}: buffer")
    _tables(buf, m, 16, n_md, f"{name}: metadata")
    if n_sub < 1:
        raise ModelFormatError(f"{name}: no subgraph")
    if n_buf < 1:
        raise ModelFormatError(f"{name}: no buffers (buffer 0 must exist)")
    ops_by_name = {v: k for k, v in vars(s.BuiltinOperator).items() if not k.startswith("_")}
    builtin, custom = [], []
    for i in range(n_codes):
        c = m.OperatorCodes(i)
        if c.CustomCode() is not None:
            custom.append(c.CustomCode().decode("utf-8", "replace"))
        code = max(int(c.BuiltinCode()), int(c.DeprecatedBuiltinCode()))
        if code not in ops_by_name:
            raise ModelFormatError(f"{name}: unknown builtin operator code {code}")
        builtin.append(ops_by_name[code])
    for i in range(n_buf):
        b = m.Buffers(i)
        n = _vector(buf, b, 4, 1, f"{name}: buffer {i}")
        off, size = int(b.Offset()), int(b.Size())
        if (off or size) and (n or off < 16 or off + size > len(buf)):
            raise ModelFormatError(f"{name}: buffer {i} points outside the file")
    n_tensors = n_ops = 0
    for si in range(n_sub):
        g = m.Subgraphs(si)
        # SubGraph fields: tensors 4, inputs 6, outputs 8, operators 10, name 12
        nt = _vector(buf, g, 4, 4, f"{name}: subgraph {si} tensors")
        ni = _vector(buf, g, 6, 4, f"{name}: subgraph {si} inputs")
        no = _vector(buf, g, 8, 4, f"{name}: subgraph {si} outputs")
        nop = _vector(buf, g, 10, 4, f"{name}: subgraph {si} operators")
        _tables(buf, g, 4, nt, f"{name}: tensor")
        _tables(buf, g, 10, nop, f"{name}: operator")
        for ti in range(nt):
            t = g.Tensors(ti)
            # Tensor fields: shape 4, type 6, buffer 8, name 10, quantization 12, is_variable 14, sparsity 16,
            # shape_signature 18
            rank = _vector(buf, t, 4, 4, f"{name}: tensor {ti} shape")
            _vector(buf, t, 18, 4, f"{name}: tensor {ti} shape signature")
            _vector(buf, t, 10, 1, f"{name}: tensor {ti} name")
            if rank > _MAX_RANK or any(t.Shape(k) < 0 for k in range(rank)):
                raise ModelFormatError(f"{name}: tensor {ti} has an invalid shape")
            if not 0 <= t.Type() < _MAX_TYPE:
                raise ModelFormatError(f"{name}: tensor {ti} has an invalid type {t.Type()}")
            if not 0 <= t.Buffer() < n_buf:
                raise ModelFormatError(f"{name}: tensor {ti} refers to buffer {t.Buffer()} of {n_buf}")
            if t._tab.Offset(12):
                q = t.Quantization()
                _check_table(buf, q._tab.Pos, f"{name}: tensor {ti} quantization")
                for slot, size in ((4, 4), (6, 4), (8, 4), (10, 8)):
                    _vector(buf, q, slot, size, f"{name}: tensor {ti} quantization")
        for k in range(ni):
            if not 0 <= g.Inputs(k) < nt:
                raise ModelFormatError(f"{name}: subgraph input {g.Inputs(k)} is not a tensor")
        for k in range(no):
            if not 0 <= g.Outputs(k) < nt:
                raise ModelFormatError(f"{name}: subgraph output {g.Outputs(k)} is not a tensor")
        for oi in range(nop):
            op = g.Operators(oi)
            # Operator fields: opcode_index 4, inputs 6, outputs 8
            a = _vector(buf, op, 6, 4, f"{name}: operator {oi} inputs")
            z = _vector(buf, op, 8, 4, f"{name}: operator {oi} outputs")
            _vector(buf, op, 14, 1, f"{name}: operator {oi} custom options")
            if not 0 <= op.OpcodeIndex() < n_codes:
                raise ModelFormatError(f"{name}: operator {oi} uses opcode {op.OpcodeIndex()} of {n_codes}")
            for k in range(a):
                if not -1 <= op.Inputs(k) < nt:
                    raise ModelFormatError(f"{name}: operator {oi} reads tensor {op.Inputs(k)} of {nt}")
            for k in range(z):
                if not 0 <= op.Outputs(k) < nt:
                    raise ModelFormatError(f"{name}: operator {oi} writes tensor {op.Outputs(k)} of {nt}")
        n_tensors += nt
        n_ops += nop
    meta: dict[str, Any] = {}
    for i in range(n_md):
        md = m.Metadata(i)
        key = (md.Name() or b"").decode("utf-8", "replace")
        bi = int(md.Buffer())
        if not 0 <= bi < n_buf:
            raise ModelFormatError(f"{name}: metadata {key!r} refers to buffer {bi} of {n_buf}")
        if key == "facesdk":
            raw = m.Buffers(bi).DataAsNumpy()
            try:
                meta[key] = json.loads(bytes(raw).decode("utf-8")) if not isinstance(raw, int) else {}
            except (UnicodeDecodeError, json.JSONDecodeError):
                raise ModelFormatError(f"{name}: corrupt facesdk metadata") from None
        else:
            meta[key] = bi
    return TFLiteInfo(int(m.Version()), n_sub, n_tensors, n_ops, builtin, custom, meta)


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The metadata entries of a validated TFLite file (``facesdk`` → its JSON dict)."""
    return validate_tflite(path).metadata
