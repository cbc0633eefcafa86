"""ai8x network description: ai8x-synthesis YAML + quantised checkpoint → a list of layers.

The mapping follows ai8x-synthesis (izer) rules:

* YAML layers are executed in order; a layer reads the previous layer's output unless
  ``in_sequences`` names other layers (by index or ``name``; ``-1`` is the network input).
  Several sources without ``eltwise`` are concatenated along channels; with ``eltwise``
  (add/sub/mul/or/xor) they are combined element-wise.
* Checkpoint modules are assigned, in state-dict order, to the YAML layers that have
  weights (every operation except ``passthrough``/``none``). A module's weight is
  ``<prefix>.op.weight`` (or ``<prefix>.weight``), its bias ``<prefix>.op.bias``.
* ``weight_bits`` comes from the checkpoint (or the YAML ``quantization``/``weight_bits``;
  otherwise inferred from the value range); the effective shift is
  ``output_shift + 8 - weight_bits``; the hardware bias is ``bias // 2**(weight_bits-1)``
  and is added as ``bias_hw * 128`` to the accumulator.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from facesdk.errors import ConfigError, ModelFormatError, ModelNotFoundError

from .checkpoint import load_state_dict

__all__ = ["Layer", "Network", "parse_network", "ARCH_INPUT_SHAPES", "OPS", "save_network", "load_network"]

log = logging.getLogger(__name__)

#: Input shapes (C, H, W) of known ai8x architectures (YAMLs do not state them).
ARCH_INPUT_SHAPES: dict[str, tuple[int, int, int]] = {
    "ai85tinierssdface": (3, 224, 168),
    "ai85faceidnet": (3, 160, 120),
    "ai85faceidnet_112": (3, 112, 112),
    "ai87netmobilefacenet_112": (3, 112, 112),
}

OPS = ("conv2d", "conv1d", "linear", "passthrough", "none")
_OP_ALIASES = {
    "conv2d": "conv2d",
    "conv1d": "conv1d",
    "linear": "linear",
    "mlp": "linear",
    "fc": "linear",
    "fullyconnected": "linear",
    "passthrough": "passthrough",
    "none": "none",
}
_ELTWISE = ("add", "sub", "mul", "or", "xor")


@dataclass
class Layer:
    """One accelerator layer (pooling → element-wise → conv/linear → requantise → activation)."""

    index: int
    op: str
    name: str | None = None
    module: str | None = None
    in_sequences: list[int] = field(default_factory=list)
    eltwise: str | None = None
    kernel_size: tuple[int, int] = (1, 1)
    pad: tuple[int, int] = (0, 0)
    stride: tuple[int, int] = (1, 1)
    groups: int = 1
    pool: str | None = None  # "max" | "avg"
    pool_size: tuple[int, int] = (1, 1)
    pool_stride: tuple[int, int] = (1, 1)
    activation: str | None = None  # "relu" | "abs"
    flatten: bool = False
    output_width: int = 8
    output: bool = False
    streaming: bool = False
    data_format: str = "HWC"
    processors: int | None = None
    output_processors: int | None = None
    weights: np.ndarray | None = None  # int64 (O, C/groups, kh, kw) or (O, F) for linear
    bias: np.ndarray | None = None  # int64 hardware bias (added ×128)
    weight_bits: int = 8
    output_shift: int = 0  # checkpoint value, before the +8-weight_bits adjustment
    yaml: dict[str, Any] = field(default_factory=dict)

    @property
    def shift(self) -> int:
        """Effective shift ``output_shift + 8 - |weight_bits|``."""
        return int(self.output_shift) + 8 - abs(int(self.weight_bits))

    @property
    def has_weights(self) -> bool:
        return self.op in ("conv2d", "conv1d", "linear")

    @property
    def in_channels(self) -> int | None:
        if self.weights is None:
            return None
        if self.op == "linear":
            return int(self.weights.shape[1])
        return int(self.weights.shape[1]) * self.groups

    @property
    def out_channels(self) -> int | None:
        return None if self.weights is None else int(self.weights.shape[0])

    def describe(self) -> str:
        parts = [f"L{self.index:02d} {self.op}"]
        if self.pool:
            parts.append(f"{self.pool}pool{self.pool_size[0]}x{self.pool_size[1]}/{self.pool_stride[0]}")
        if self.eltwise:
            parts.append(f"eltwise-{self.eltwise}")
        if self.weights is not None:
            parts.append(
                f"{self.in_channels}->{self.out_channels} k{self.kernel_size[0]}x{self.kernel_size[1]}"
            )
        return " ".join(parts)


@dataclass
class Network:
    """A parsed network: layers with weights, the input shape and metadata."""

    arch: str
    layers: list[Layer]
    input_shape: tuple[int, ...]
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def output_layers(self) -> list[int]:
        outs = [l.index for l in self.layers if l.output]
        return outs or [self.layers[-1].index]


def _pair(v: Any, what: str, default: tuple[int, int]) -> tuple[int, int]:
    if v is None:
        return default
    if isinstance(v, str):
        parts = v.lower().split("x")
        try:
            vals = [int(p) for p in parts]
        except ValueError:
            raise ConfigError(f"bad {what} {v!r}") from None
        return (vals[0], vals[1] if len(vals) > 1 else 1)
    if isinstance(v, (list, tuple)):
        if len(v) == 1:
            return (int(v[0]), int(v[0]))
        return (int(v[0]), int(v[1]))
    return (int(v), int(v))


def _mask(v: Any) -> int | None:
    if v is None:
        return None
    if isinstance(v, int):
        return v
    # izer yamlcfg.py: int(pmap.replace('.', '').replace('_', ''), 16) -- strings are hex, dots/underscores
    # group digits (upstream's own YAMLs write 0xffff.ffff.ffff.ffff)
    try:
        return int(str(v).replace(".", "").replace("_", ""), 16)
    except ValueError:
        raise ModelFormatError(f"bad processor mask {v!r}") from None


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read an ai8x-synthesis network YAML (safe loader)."""
    p = Path(path)
    if not p.is_file():
        raise ModelNotFoundError(f"network YAML not found: {p}")
    try:
        doc = yaml.safe_load(p.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ModelFormatError(f"{p.name}: not a valid YAML file: {exc}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("layers"), list) or not doc["layers"]:
        raise ModelFormatError(f"{p.name}: no 'layers' list in the network description")
    return doc


def _parse_layer(i: int, d: dict[str, Any]) -> Layer:
    if not isinstance(d, dict):
        raise ModelFormatError(f"layer {i}: expected a mapping, got {type(d).__name__}")
    d = {str(k).lower(): v for k, v in d.items()}
    _refuse_unsupported(i, d)
    # izer yamlcfg.py: the operation is one of convolution / operation / operator / op (only one)
    keys = [k for k in ("convolution", "operation", "operator", "op") if k in d]
    if len(keys) > 1:
        raise ModelFormatError(f"layer {i}: duplicate operation keys {keys}")
    raw_op = d[keys[0]] if keys else "conv2d"
    op_key = "none" if raw_op is None else str(raw_op).lower().replace("_", "")
    if op_key in ("convtranspose2d",):
        raise ModelFormatError(f"layer {i}: {raw_op} is not supported by this emulator")
    shorthand = _ELTWISE_OPS.get(op_key)  # operation: add|sub|or|xor = no convolution, 2 operands
    if shorthand is not None:
        if d.get("eltwise") is not None and str(d["eltwise"]).lower() != shorthand:
            raise ModelFormatError(f"layer {i}: operation {raw_op!r} and eltwise {d['eltwise']!r} disagree")
        d["eltwise"] = shorthand
        op_key = "none"
    if op_key not in _OP_ALIASES:
        raise ModelFormatError(f"layer {i}: unknown operation {raw_op!r}")
    op = _OP_ALIASES[op_key]
    if "conv_groups" in d and "groups" in d:
        raise ModelFormatError(f"layer {i}: duplicate key conv_groups/groups")
    groups = d.get("conv_groups", d.get("groups", 1))
    act = d.get("activate", d.get("activation"))
    act = None if act is None or str(act).lower() == "none" else str(act).lower()
    if act not in (None, "relu", "abs"):
        raise ModelFormatError(f"layer {i}: unknown activation {act!r}")
    kdefault = (1, 1) if op in ("linear", "passthrough", "none") else (3, 3)
    # izer yamlcfg.py defaults: conv2d kernel 3x3, conv1d kernel 9 (DEFAULT_1D_KERNEL); padding 1 for
    # conv1d/conv2d (padding = [[1, 1]] * MAX_LAYERS), 0 for linear and no-convolution layers
    pdefault = 0 if op in ("linear", "passthrough", "none") else 1
    if op == "conv1d":
        ks = d.get("kernel_size", 9)
        k = (int(str(ks).split("x")[0]), 1)
    else:
        k = _pair(d.get("kernel_size"), "kernel_size", kdefault)
    if op == "conv1d":
        p = int(d.get("pad", pdefault))
        pad = (p, 0)
    else:
        pad = _pair(d.get("pad"), "pad", (pdefault, pdefault))
    if min(pad) < 0 or max(pad) > 2:
        # izer izer.py: "does not support `pad` >= 3" (SUPPORT_ARBITRARY_PADDING is false on both chips)
        raise ModelFormatError(f"layer {i}: pad {pad} outside 0..2 (the accelerator pads at most 2)")
    pool, psize = None, (1, 1)
    if d.get("max_pool") is not None and d.get("avg_pool") is not None:
        raise ModelFormatError(f"layer {i}: both max_pool and avg_pool")
    if d.get("max_pool") is not None:
        pool, psize = "max", _pair(d["max_pool"], "max_pool", (1, 1))
    elif d.get("avg_pool") is not None:
        pool, psize = "avg", _pair(d["avg_pool"], "avg_pool", (1, 1))
    if op == "conv1d" and pool:
        psize = (psize[0], 1)
    pstride = _pair(d.get("pool_stride"), "pool_stride", psize)
    if op == "conv1d":
        pstride = (pstride[0], 1)
    if pool and psize == (1, 1):
        pool = None
    elt = d.get("eltwise")
    elt = None if elt is None else str(elt).lower()
    if elt == "mul":
        raise ModelFormatError(f"layer {i}: eltwise 'mul' is refused by ai8x-synthesis (add, sub, or, xor)")
    if elt is not None and elt not in _ELTWISE:
        raise ModelFormatError(f"layer {i}: unknown eltwise {elt!r}")
    if pool and op != "conv1d" and pstride[0] != pstride[1]:
        raise ModelFormatError(f"layer {i}: non-square pool_stride {pstride} (izer: not supported)")
    stride = _pair(d.get("stride"), "stride", (1, 1))
    if stride != (1, 1):
        raise ModelFormatError(f"layer {i}: {op} stride {stride}; izer supports stride 1 only (use pooling)")
    ow = int(d.get("output_width", 8))
    if ow not in (8, 32):
        raise ModelFormatError(f"layer {i}: output_width must be 8 or 32")
    if ow == 32 and act is not None:
        raise ModelFormatError(
            f"layer {i}: activation {act!r} on a 32-bit output (the accelerator returns "
            "the raw accumulator; izer refuses the combination)"
        )
    q = d.get("quantization")
    if q is not None:
        qs = str(q).lower()
        if qs in ("bin", "binary"):
            d["quantization"] = -1
        elif qs in ("1", "2", "4", "8"):
            d["quantization"] = int(qs)
        else:
            raise ModelFormatError(f"layer {i}: quantization must be 1, 2, 4, 8 or bin/binary, not {q!r}")
    return Layer(
        index=i,
        op=op,
        name=d.get("name"),
        eltwise=elt,
        kernel_size=k,
        pad=pad,
        stride=stride,
        groups=int(groups),
        pool=pool,
        pool_size=psize,
        pool_stride=pstride,
        activation=act,
        flatten=bool(d.get("flatten", False)),
        output_width=ow,
        output=bool(d.get("output", False)),
        streaming=bool(d.get("streaming", False)),
        data_format=str(d.get("data_format", "HWC")).upper(),
        processors=_mask(d.get("processors")),
        output_processors=_mask(d.get("output_processors")),
        yaml=d,
    )


#: izer's ``operation:`` shorthands for element-wise layers (yamlcfg.py).
_ELTWISE_OPS = {"add": "add", "sub": "sub", "or": "or", "bitwiseor": "or", "xor": "xor", "bitwisexor": "xor"}

#: YAML keys that change values and that this emulator does not implement: refused, never ignored.
#: (key, value that is harmless) -- izer yamlcfg.py accepts them all.
_REFUSED_KEYS = {
    "dilation": 1,
    "pool_dilation": 1,
    "in_dim": None,
    "in_crop": None,
    "in_skip": 0,
    "read_gap": 0,
    "bypass": False,
    "weight_source": None,
    "sequence": None,
    "buffer_shift": None,
    "buffer_insert": None,
    "output_pad": None,
    "in_channels": None,
}


def _refuse_unsupported(i: int, d: dict[str, Any]) -> None:
    """Refuse value-changing options the emulator does not implement (ModelFormatError, not a wrong
    number)."""
    for key, harmless in _REFUSED_KEYS.items():
        if key not in d:
            continue
        v = d[key]
        if harmless is not None and (v == harmless or v == [harmless, harmless]):
            continue
        raise ModelFormatError(
            f"layer {i}: `{key}: {v}` changes the result and is not implemented by this "
            "emulator (refused rather than ignored)"
        )
    if "pool_first" in d and not bool(d["pool_first"]):
        raise ModelFormatError(
            f"layer {i}: `pool_first: false` (element-wise before pooling) is not "
            "implemented by this emulator (refused rather than ignored)"
        )
    if "operands" in d:
        n = d["operands"]
        seq = d.get("in_sequences")
        if not isinstance(seq, list) or len(seq) != int(n):
            raise ModelFormatError(
                f"layer {i}: `operands: {n}` without {n} in_sequences is not implemented "
                "by this emulator (interleaved operands from one buffer)"
            )


def _resolve_sources(layers: list[Layer]) -> None:
    names = {l.name: l.index for l in layers if l.name}
    for l in layers:
        src = l.yaml.get("in_sequences")
        if src is None:
            l.in_sequences = [l.index - 1]
            continue
        items = src if isinstance(src, list) else [src]
        out = []
        for s in items:
            if isinstance(s, int):
                j = s
            elif isinstance(s, str) and s in names:
                j = names[s]
            else:
                try:
                    j = int(s)
                except (TypeError, ValueError):
                    raise ModelFormatError(
                        f"layer {l.index}: in_sequences names unknown layer {s!r}"
                    ) from None
            if j >= l.index or j < -1:
                raise ModelFormatError(f"layer {l.index}: in_sequences {j} is not an earlier layer")
            out.append(j)
        l.in_sequences = out


def _infer_bits(w: np.ndarray) -> int:
    a = np.abs(w)
    if a.size and a.min() == a.max() == 1:
        return -1
    for b in (1, 2, 4, 8):
        if w.min() >= -(2 ** (b - 1)) and w.max() < 2 ** (b - 1):
            return b
    raise ModelFormatError("weights exceed the 8-bit range; is this a quantised (-q) checkpoint?")


def izer_weight_bits(w: np.ndarray, yaml_bits: Any = None, ckpt_bits: Any = None) -> int:
    """A layer's weight width as izer ``checkpoint.py`` decides it: the YAML ``quantization``, else 1
    for all-zero weights, else the checkpoint's ``weight_bits`` (0 means 8), else 8 -- never guessed
    from the values (a checkpoint without ``weight_bits`` is 8-bit)."""
    if yaml_bits is not None:
        return int(yaml_bits)
    if not np.any(w):
        return 1
    if ckpt_bits is not None:
        return int(np.asarray(ckpt_bits).ravel()[0]) or 8
    return 8


def _modules(sd: dict[str, np.ndarray]) -> list[tuple[str, str]]:
    """(module prefix, weight key) in state-dict order, as izer assigns them."""
    mods = []
    for k, v in sd.items():
        parts = k.rsplit(".", 2)
        if parts[-1] != "weight" or v.ndim < 2:
            continue
        if len(parts) == 3:
            prefix, sub = parts[0], parts[1]
            if sub in ("bn", "batchnorm"):
                continue
            if sub != "op":
                prefix = f"{parts[0]}.{parts[1]}"
        else:
            prefix = parts[0]
        mods.append((prefix, k))
    return mods


def _to_int(a: np.ndarray, what: str) -> np.ndarray:
    if not np.all(np.isfinite(a)) or not np.all(np.round(a) == a):
        raise ModelFormatError(f"{what} is not integer-valued; use the quantised (-q) checkpoint")
    return a.astype(np.int64)


def parse_network(
    checkpoint: str | Path,
    network_yaml: str | Path,
    *,
    input_shape: tuple[int, ...] | None = None,
    check_arch: bool = True,
) -> Network:
    """Build the layer list from a quantised ai8x checkpoint and its network YAML.

    Raises:
        ModelFormatError: the checkpoint or YAML is malformed or they do not match.
    """
    doc = load_yaml(network_yaml)
    sd, meta = load_state_dict(checkpoint)
    arch = str(doc.get("arch", meta.get("arch", "")))
    ck_arch = meta.get("arch")
    if check_arch and ck_arch and arch and str(ck_arch).lower() != arch.lower():
        raise ModelFormatError(f"network YAML is for {arch!r} but the checkpoint holds {ck_arch!r}")
    layers = [_parse_layer(i, d) for i, d in enumerate(doc["layers"])]
    _resolve_sources(layers)
    mods = _modules(sd)
    wl = [l for l in layers if l.has_weights]
    if len(mods) < len(wl):
        raise ModelFormatError(
            f"network YAML has {len(wl)} layers with weights but the checkpoint has {len(mods)} weight "
            "tensors"
        )
    if len(mods) > len(wl):
        log.warning("checkpoint has %d weight tensors, YAML uses the first %d", len(mods), len(wl))
    for l, (prefix, wkey) in zip(wl, mods):
        w = _to_int(sd[wkey], wkey)
        l.module = prefix
        if l.op == "conv2d" and w.ndim != 4:
            raise ModelFormatError(f"layer {l.index}: conv2d expects a 4-D weight, {wkey} is {w.shape}")
        if l.op == "conv1d":
            if w.ndim != 3:
                raise ModelFormatError(f"layer {l.index}: conv1d expects a 3-D weight, {wkey} is {w.shape}")
            w = w[..., None]
        if l.op == "linear" and w.ndim != 2:
            raise ModelFormatError(f"layer {l.index}: linear expects a 2-D weight, {wkey} is {w.shape}")
        if l.op in ("conv2d", "conv1d") and tuple(w.shape[2:]) != tuple(l.kernel_size):
            raise ModelFormatError(
                f"layer {l.index}: YAML kernel_size {l.kernel_size} but {wkey} has {tuple(w.shape[2:])}"
            )
        ybits = l.yaml.get("quantization", l.yaml.get("weight_bits"))
        ckbits = sd.get(f"{prefix}.weight_bits")
        bits = izer_weight_bits(w, ybits, ckbits)
        if bits not in (-1, 1, 2, 4, 8):
            raise ModelFormatError(f"layer {l.index}: weight_bits {bits} not in 1/2/4/8")
        if bits == -1:
            if not np.all(np.abs(w) == 1):
                raise ModelFormatError(f"layer {l.index}: binary weights must be ±1")
        elif w.min() < -(2 ** (bits - 1)) or w.max() >= 2 ** (bits - 1):
            raise ModelFormatError(f"layer {l.index}: weights of {wkey} exceed {bits}-bit range")
        l.weights, l.weight_bits = w, bits
        bkey = f"{prefix}.op.bias" if f"{prefix}.op.weight" == wkey else f"{prefix}.bias"
        if bkey in sd and not l.yaml.get("no_bias", False):
            wb = int(ckbits.ravel()[0]) if ckbits is not None and int(ckbits.ravel()[0]) > 0 else 8
            b = _to_int(sd[bkey], bkey) // (2 ** (wb - 1))
            if b.min() < -128 or b.max() > 127:
                raise ModelFormatError(f"layer {l.index}: bias {bkey} exceeds the 8-bit range")
            l.bias = b
        if "output_shift" in l.yaml:
            l.output_shift = int(l.yaml["output_shift"])
        elif f"{prefix}.output_shift" in sd:
            l.output_shift = int(np.asarray(sd[f"{prefix}.output_shift"]).ravel()[0])
        if l.groups > 1 and l.in_channels is not None and l.groups != l.out_channels:
            raise ModelFormatError(f"layer {l.index}: only depthwise grouping (groups = channels) exists")
    shape = tuple(input_shape) if input_shape is not None else ARCH_INPUT_SHAPES.get(arch)
    if shape is None:
        first = wl[0] if wl else None
        raise ConfigError(
            f"unknown input shape for arch {arch!r}; pass input_shape=(C,H,W)"
            + (f" with C={first.in_channels}" if first else "")
        )
    return Network(
        arch=arch,
        layers=layers,
        input_shape=shape,
        meta={k: v for k, v in meta.items() if k in ("arch", "epoch", "extras")},
    )


# ---------------------------------------------------------------------------- network files
_NET_FORMAT = "facesdk-ai8x-network-1"
_LAYER_FIELDS = (
    "index",
    "op",
    "name",
    "in_sequences",
    "eltwise",
    "kernel_size",
    "pad",
    "stride",
    "groups",
    "pool",
    "pool_size",
    "pool_stride",
    "activation",
    "flatten",
    "output_width",
    "output",
    "streaming",
    "data_format",
    "processors",
    "output_processors",
    "weight_bits",
    "output_shift",
)


def save_network(net: Network, path: str | Path) -> Path:
    """Write ``net`` as a ``.npz`` without pickles: ``network.json`` (layers, shapes, provenance) and
    one int array per layer's weights/bias. Byte-identical for the same network (fixed zip dates),
    written atomically (:mod:`facesdk.fileio`), permissions per umask."""
    import io
    import json
    import zipfile

    from ..firmware.cfiles import atomic_write

    meta = {
        "format": _NET_FORMAT,
        "arch": net.arch,
        "input_shape": list(net.input_shape),
        "meta": {k: v for k, v in net.meta.items() if isinstance(v, (str, int, float, bool))},
        "layers": [],
    }
    arrays: dict[str, np.ndarray] = {}
    for l in net.layers:
        d = {}
        for f in _LAYER_FIELDS:
            v = getattr(l, f)
            d[f] = list(v) if isinstance(v, tuple) else v
        meta["layers"].append(d)
        if l.weights is not None:
            arrays[f"w{l.index:03d}"] = np.asarray(l.weights, np.int16)
        if l.bias is not None:
            arrays[f"b{l.index:03d}"] = np.asarray(l.bias, np.int32)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:

        def put(name: str, data: bytes) -> None:
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            z.writestr(info, data)

        put("network.json", json.dumps(meta, sort_keys=True).encode())
        for k in sorted(arrays):
            b = io.BytesIO()
            np.lib.format.write_array(b, arrays[k], allow_pickle=False)
            put(k + ".npy", b.getvalue())
    return atomic_write(path, buf.getvalue())


def load_network(path: str | Path) -> Network:
    """Read a network written by :func:`save_network` (no pickles; ModelFormatError if malformed)."""
    import io
    import json
    import zipfile

    p = Path(path)
    if not p.is_file():
        raise ModelNotFoundError(f"network file not found: {p}")
    try:
        with zipfile.ZipFile(p) as z:
            names = set(z.namelist())
            if "network.json" not in names:
                raise ModelFormatError(f"{p}: not a facesdk ai8x network file (no network.json)")
            for info in z.infolist():
                if info.file_size > 256 << 20:
                    raise ModelFormatError(f"{p}: member {info.filename} is implausibly large")
            meta = json.loads(z.read("network.json"))
            if meta.get("format") != _NET_FORMAT:
                raise ModelFormatError(f"{p}: unknown network format {meta.get('format')!r}")
            layers = []
            for d in meta["layers"]:
                kw = {f: d[f] for f in _LAYER_FIELDS if f in d}
                for f in ("kernel_size", "pad", "stride", "pool_size", "pool_stride"):
                    if f in kw:
                        kw[f] = tuple(int(v) for v in kw[f])
                l = Layer(**kw)
                i = l.index
                if f"w{i:03d}.npy" in names:
                    l.weights = np.lib.format.read_array(
                        io.BytesIO(z.read(f"w{i:03d}.npy")), allow_pickle=False
                    ).astype(np.int64)
                if f"b{i:03d}.npy" in names:
                    l.bias = np.lib.format.read_array(
                        io.BytesIO(z.read(f"b{i:03d}.npy")), allow_pickle=False
                    ).astype(np.int64)
                layers.append(l)
            return Network(
                arch=str(meta["arch"]),
                layers=layers,
                input_shape=tuple(int(v) for v in meta["input_shape"]),
                meta=dict(meta.get("meta", {})),
            )
    except ModelFormatError:
        raise
    except (zipfile.BadZipFile, OSError, ValueError, KeyError, TypeError) as exc:
        raise ModelFormatError(f"{p}: not a readable network file ({type(exc).__name__}: {exc})") from None
