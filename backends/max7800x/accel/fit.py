"""Does a network fit MAX78000 / MAX78002? Memory and layer limits, with numbers.

Model of the accelerator (from ai8x-synthesis ``izer``: ``tornadocnn.py``, ``kernels.py``):

* 64 processors in 4 quadrants of 16. Each processor has its own kernel (weight) memory of
  72-bit rows: 768 rows on MAX78000 (64·768·9 B = 442,368 B); on MAX78002 4,096 rows, 5,120 on
  processors 0/16/32/48 (``MASK_WIDTH_SMALL``/``MASK_WIDTH_LARGE``; 2,396,160 B). A layer occupies,
  on every processor that receives one of its input
  channels, ``ceil((kc·k·bits + pad) / 72)`` rows where ``kc`` = output channels ×
  input passes (or passes only, for depthwise), ``k`` = kernel taps, and narrow (1/2/4-bit)
  kernels are packed several to a row. Layers are stacked at row offsets rounded to 4.
* Bias memory: 4 banks (one per quadrant) of 512 B (MAX78000) / 2,048 B (MAX78002); each layer's
  biases (``out_channels + (first output processor % 4)·passes`` bytes, +1 for a streaming first
  layer on MAX78000) sit in one bank, allocated first-fit-decreasing as ``kbias.py`` does.
* Dimensions: rows/columns ≤ 1,023 / 2,047; ``flatten`` needs pooled H·W ≤ 256 (``izer.py``).
* Data memory: 16 SRAM instances, each shared by 4 processors (one byte per channel in a
  32-bit word): 8,192 words each on MAX78000 (512 KiB), 20,480 on MAX78002 (1,280 KiB). In
  HWC format a ``C×H×W`` tensor needs ``H·W·ceil(C/64)`` words per instance; CHW
  ("big data", first layer) needs ``ceil(H·W/4)`` words per channel. A layer's input and
  output must both be resident, except for ``streaming`` layers, whose input comes through
  the FIFO / a ring buffer (and whose output is streamed if the next layer streams too).
* Layer count (32 / 128), channels per layer (≤ 1024 = 16 passes of 64), kernel sizes
  (1×1 or 3×3 in 2-D, 1–9 in 1-D), pooling windows ≤ 16, depthwise convolution
  (MAX78002 only).

Kernel row placement (the ``rows``/``@row`` columns and the row total) is **an estimate** of
izer's allocator, which searches for free rows per processor and may end a few rows higher or
lower (e.g. 313 here vs 316 for izer on one network); a report that says "fits" with a wide
margin will synthesise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..chips import CHIPS, ChipSpec, chip_spec
from .emulator import Model
from .network import Layer

__all__ = ["ChipSpec", "CHIPS", "FitReport", "LayerFit", "check_fit", "chip_spec"]


@dataclass
class LayerFit:
    """Per-layer numbers."""

    index: int
    desc: str
    in_shape: tuple[int, ...]
    out_shape: tuple[int, ...]
    weight_bytes: int = 0
    kernel_rows: int = 0
    kernel_offset: int = 0
    processors: int = 0
    bias_bytes: int = 0
    data_words: int = 0
    problems: list[str] = field(default_factory=list)


@dataclass
class FitReport:
    """What fits and what does not, with the numbers."""

    chip: ChipSpec
    arch: str
    layers: list[LayerFit]
    weight_bytes: int
    kernel_rows_used: int
    bias_bytes: int
    max_data_words: int
    problems: list[str]

    @property
    def fits(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        c = self.chip
        return {
            "chip": c.name,
            "arch": self.arch,
            "fits": self.fits,
            "layers": {"used": len(self.layers), "limit": c.max_layers},
            "weights": {
                "bytes": self.weight_bytes,
                "kernel_rows_used": self.kernel_rows_used,
                "kernel_rows_are_estimate": True,  # this module's placement, not izer's allocator
                "kernel_rows_per_processor": c.kernel_rows,
                "kernel_rows_processors_0_16_32_48": c.kernel_rows_large or c.kernel_rows,
                "memory_bytes": c.weight_bytes,
            },
            "bias": {"bytes": self.bias_bytes, "limit": c.bias_bytes},
            "data": {
                "max_words_per_instance": self.max_data_words,
                "limit": c.data_words,
                "memory_bytes": c.data_bytes,
            },
            "problems": list(self.problems),
            "per_layer": [
                {
                    "layer": l.index,
                    "op": l.desc,
                    "in": list(l.in_shape),
                    "out": list(l.out_shape),
                    "weight_bytes": l.weight_bytes,
                    "kernel_rows": l.kernel_rows,
                    "kernel_offset": l.kernel_offset,
                    "processors": l.processors,
                    "bias_bytes": l.bias_bytes,
                    "data_words": l.data_words,
                    "problems": l.problems,
                }
                for l in self.layers
            ],
        }

    def format(self) -> str:
        """A human-readable table."""
        c = self.chip
        lines = [
            f"{self.arch} on {c.name}: {'FITS' if self.fits else 'DOES NOT FIT'}",
            f"  layers        {len(self.layers):>10} / {c.max_layers}",
            f"  weights       {self.weight_bytes:>10,} B  (kernel rows used ~{self.kernel_rows_used} "
            f"(estimate of izer's placement) / {c.kernel_rows}"
            + (
                f" ({c.kernel_rows_large} on 0/16/32/48)"
                if c.kernel_rows_large not in (0, c.kernel_rows)
                else ""
            )
            + f" per processor, {c.weight_bytes:,} B memory)",
            f"  bias          {self.bias_bytes:>10,} B / {c.bias_bytes:,} B",
            f"  data          {self.max_data_words:>10,} words / {c.data_words:,} per instance "
            f"({c.data_bytes // 1024} KiB)",
            "",
            f"  {'L':>3} {'operation':<44} {'in':>14} {'out':>14} {'w bytes':>9} {'rows':>5} {'@row':>5} "
            f"{'procs':>5} {'data':>6}",
        ]
        for l in self.layers:
            lines.append(
                f"  {l.index:>3} {l.desc[:44]:<44} {'x'.join(map(str, l.in_shape)):>14} "
                f"{'x'.join(map(str, l.out_shape)):>14} {l.weight_bytes:>9,} {l.kernel_rows:>5} "
                f"{l.kernel_offset:>5} {l.processors:>5} {l.data_words:>6}"
                + ("  !! " + "; ".join(l.problems) if l.problems else "")
            )
        if self.problems:
            lines += ["", "Problems:"] + [f"  - {p}" for p in self.problems]
        return "\n".join(lines)


def _words(shape: tuple[int, ...], fmt: str) -> int:
    c, h, w = shape
    if fmt == "CHW":
        return math.ceil(h * w / 4)
    return h * w * math.ceil(c / 64)


def _popcount(m: int) -> int:
    return bin(m).count("1")


def check_fit(model: Model, chip: str | ChipSpec | None = None) -> FitReport:
    """Check a model against a chip's limits (default: the chip the model was loaded for)."""
    spec = chip if isinstance(chip, ChipSpec) else chip_spec(chip or model.chip)
    ins, outs = model.shapes()
    problems: list[str] = []
    rows_top = [0] * spec.processors
    fits: list[LayerFit] = []
    total_w = total_b = max_words = 0
    layers: list[Layer] = model.layers
    if len(layers) > spec.max_layers:
        problems.append(f"{len(layers)} layers, {spec.name} has {spec.max_layers}")
    for l, lin, lout in zip(layers, ins, outs):
        in_shape = lin[0] if len(lin) == 1 or l.eltwise else (sum(s[0] for s in lin), *lin[0][1:])
        lf = LayerFit(l.index, l.describe(), tuple(in_shape), tuple(lout))
        cin, cout = in_shape[0], lout[0]
        if cin > spec.max_channels or cout > spec.max_channels:
            lf.problems.append(f"{max(cin, cout)} channels > {spec.max_channels}")
        if l.pool and max(l.pool_size) > spec.max_pool:
            lf.problems.append(f"pool {l.pool_size} > {spec.max_pool}")
        if l.weights is not None:
            bits = abs(l.weight_bits)
            if l.weight_bits == -1 and not spec.supports_binary:
                lf.problems.append("binary (±1) weights need MAX78002")
            kh, kw = l.kernel_size
            if l.op == "conv2d" and (kh, kw) not in ((1, 1), (3, 3)):
                lf.problems.append(f"kernel {kh}x{kw} (only 1x1 and 3x3)")
            if l.op == "conv1d" and not 1 <= kh <= 9:
                lf.problems.append(f"1-D kernel {kh} (1..9)")
            depthwise = l.groups > 1
            if depthwise and not spec.depthwise:
                lf.problems.append(f"depthwise convolution (groups={l.groups}) needs MAX78002")
            lf.weight_bytes = (l.weights.size * bits + 7) // 8
            ksize = kh * kw
            if l.op == "linear" or l.flatten:
                feats = l.weights.shape[1] if l.op == "linear" else l.weights.shape[1]
                nproc = min(spec.processors, cin)
                in_exp = 1
                ksize = math.ceil(feats / nproc)  # flattened pixels become kernel taps (1x1 ... up to 9)
            else:
                nproc = min(spec.processors, cin)
                in_exp = math.ceil(cin / spec.processors)
            if l.processors is not None and _popcount(l.processors) > 0:
                nproc = _popcount(l.processors)
                in_exp = math.ceil(cin / nproc) if not (l.op == "linear" or l.flatten) else 1
            out_map_n = _popcount(l.output_processors) if l.output_processors else min(spec.processors, cout)
            out_exp = math.ceil(cout / max(1, out_map_n))
            kc = in_exp if depthwise else min(out_map_n, cout) * out_exp * in_exp
            qfactor = 8 // bits
            res = (kc % qfactor) * ksize * (qfactor - 1)
            rows = (kc * ksize * bits + res + 71) // 72
            procs = (
                [p for p in range(spec.processors) if (l.processors >> p) & 1]
                if l.processors
                else list(range(nproc))
            )
            offs = max(rows_top[p] for p in procs)
            offs = (offs + 3) & ~3
            for p in procs:
                rows_top[p] = offs + rows
            lf.kernel_rows, lf.kernel_offset, lf.processors = rows, offs, len(procs)
            over = [p for p in procs if offs + rows > spec.kernel_rows_of(p)]
            if over:
                lf.problems.append(
                    f"kernel memory exhausted at processor {over[-1]}: rows {offs}.."
                    f"{offs + rows} > {spec.kernel_rows_of(over[-1])} "
                    f"(processors {_ranges(over)})"
                )
            if l.bias is not None:
                lf.bias_bytes = int(l.bias.size)
            total_w += lf.weight_bytes
            total_b += lf.bias_bytes
        for dims, what in ((in_shape[1:], "input"), (tuple(lout)[1:], "output")):
            if max(dims) > spec.max_dim:
                lf.problems.append(f"{what} dimension {max(dims)} > {spec.max_dim}")
        if l.flatten:
            ph, pw = _pooled(in_shape[1:], l)
            if ph * pw > 256:
                lf.problems.append(f"flatten of {ph}x{pw} = {ph * pw} pixels > 256")
        # data memory
        fmt = l.data_format if l.index == 0 else "HWC"
        nxt = layers[l.index + 1] if l.index + 1 < len(layers) else None
        in_words = 0 if l.streaming else sum(_words(s, fmt) for s in _sources_shapes(model, l))
        out_streamed = l.streaming and nxt is not None and nxt.streaming and nxt.in_sequences == [l.index]
        out_words = 0 if out_streamed else _words(tuple(lout), "HWC")
        lf.data_words = in_words + out_words
        max_words = max(max_words, lf.data_words)
        if lf.data_words > spec.data_words:
            what = "input+output" if in_words else "output"
            lf.problems.append(
                f"data memory: {what} needs {lf.data_words:,} words per instance > {spec.data_words:,}"
                + ("" if l.streaming else " (streaming could help)")
            )
        fits.append(lf)
    problems += _bias_banks(model, spec, fits)
    if total_w > spec.weight_bytes:
        problems.append(f"weights: {total_w:,} B > {spec.weight_bytes:,} B")
    for lf in fits:
        problems += [f"layer {lf.index}: {p}" for p in lf.problems]
    return FitReport(spec, model.arch, fits, total_w, max(rows_top), total_b, max_words, problems)


def _ranges(ps: list[int]) -> str:
    out, start = [], ps[0]
    for a, b in zip(ps, ps[1:] + [None]):
        if b != a + 1:
            out.append(f"{start}" if start == a else f"{start}-{a}")
            start = b
    return ", ".join(out)


def _pooled(hw: tuple[int, ...], l: Layer) -> tuple[int, int]:
    h, w = (hw + (1,))[:2]
    if not l.pool:
        return h, w
    (ph, pw), (sh, sw) = l.pool_size, l.pool_stride
    return (h - ph) // sh + 1, (w - pw) // sw + 1


def _bias_banks(model: Model, spec: ChipSpec, fits: list[LayerFit]) -> list[str]:
    """Place each layer's biases in one quadrant's bank as izer ``kbias.py`` does (first fit decreasing:
    flattened layers first on MAX78000, then by size, ties in layer order; each into the emptiest bank)."""
    entries = []
    for l, lf in zip(model.layers, fits):
        if l.bias is None or not np.any(l.bias) or l.groups > 1:
            continue
        first = (l.output_processors & -l.output_processors).bit_length() - 1 if l.output_processors else 0
        cout = int(l.bias.size)
        out_exp = math.ceil(cout / spec.processors)
        # MAX78000 streaming layer 0 keeps a zero first byte (SUPPORT_STREAM_BIAS false)
        workaround = 1 if l.index == 0 and l.streaming and spec.key == "max78000" else 0
        blen = cout + (first % 4) * out_exp + workaround
        flat_first = spec.key == "max78000" and l.flatten
        entries.append((l.index, blen, flat_first))
    order = sorted(entries, key=lambda e: -1 if e[2] else spec.bias_bank_bytes - e[1])
    used = [0, 0, 0, 0]
    problems = []
    for idx, blen, _ in order:
        g = int(np.argmin(used))
        if used[g] + blen > spec.bias_bank_bytes:
            problems.append(
                f"layer {idx}: bias memory capacity exhausted: needs {blen} B in one bank, "
                f"banks used {used} of {spec.bias_bank_bytes} B"
            )
        used[g] += blen
    return problems


def _sources_shapes(model: Model, l: Layer) -> list[tuple[int, ...]]:
    _, outs = model.shapes()
    res = []
    for s in l.in_sequences:
        res.append(tuple(model.input_shape) if s == -1 else tuple(outs[s]))
    return res
