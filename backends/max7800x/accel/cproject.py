"""Import an ai8x-synthesis C project (MAX78000) into an emulator network, and its known-answer test.

``ai8xize.py`` turns a trained network into a C project: ``cnn.c`` (the accelerator's register
writes in ``cnn_configure()``, a layer summary in its leading comments), ``weights.h`` (``KERNELS``:
kernel-memory records; ``BIAS_0``..``BIAS_3``: bias memory of each quadrant), ``sampledata.h`` (the
sample input) and ``sampleoutput.h`` (what ``main.c``'s ``check_output()`` expects in data memory).
:func:`import_c_project` inverts that generation; :func:`known_answer_test` runs the imported network
on ``sampledata.h`` and compares every word of ``sampleoutput.h``.

Facts used (ai8x-synthesis @ ab4f4c0, ``izer/``), all for MAX78000 (``DevAI85`` in ``tornadocnn.py``):

* Register address ``0x50100000 + q·0x400000 + 4·(4 + 32·r + l)`` for layer ``l``, register ``r``,
  quadrant ``q``: r = 0 rows, 1 columns, 2 "1D", 3/4 pooling rows/columns, 5 stride, 6 SRAM write
  pointer, 9 multi-pass channel offset, 10 SRAM read pointer, 11 layer control, 12 mask offset and
  count, 14 processor enables, 15 post-processing, 20 layer control 2; global register 2 = last
  layer (``apbaccess.py``/``backend/max7800x.py`` ``write_lreg``).
* Rows ``= in_rows − 1 + 2·pad | pad << 16``; pooling rows/columns ``= pool − 1``; stride
  ``= pool_stride − 1`` (MAX78000 convolutions have stride 1); layer control: ``0x200`` ReLU,
  ``0x100`` max (else average) pooling, ``0x80`` pooling on, bit 16 32-bit output; post-processing:
  bits 13..17 output shift (bit 4 = negative), bit 12 + bits 0..11 bias on at that byte offset of
  the quadrant's bias memory, bits 22..23 weight width (1: 1-bit, 2: 2-bit, 3: 4-bit, 0: 8-bit),
  bits 24..25 no convolution (1 element-wise, 3 pass-through), bit 26 abs, bit 27 flatten; "1D"
  register: bit 8 1×1 kernel, bit 13 element-wise, bits 14..15 function (0 sub, 1 add, 2 or,
  3 xor), bits 18.. operands − 1; mask count: ``koffs << 16 | koffs + (kernels − 1)·bits`` with
  ``koffs = 8·(9·kern_offs // k_h·k_w)``; layer control 2: bits 0..3 input passes − 1, bits
  8.. ``(last − first output processor (rounded down to 4))·bits``; write pointer: word offset in
  bits 0..12, first output memory instance in bits 13..; processor enables in bits 0..15.
* Kernels (``kernels.py`` ``load``): per source processor, in order of output pass, output channel
  (``bits < 8``: ``8/bits`` output channels or passes packed in one byte, "phases"), input pass, the
  kernel's bytes in reverse tap order go into 72-bit kernel words, byte ``t`` of the stream at
  word ``kern_offs + t // 9``, byte ``8 − t % 9``. The ``--mexpress`` record address of kernel
  word ``c`` of processor ``p`` is ``0x50180000 + q·0x400000 + (p % 16)·0x4000 + 4·c``; its data
  are the 9-byte words packed most significant byte first (``apbaccess.py``).
* Biases (``kbias.py``): output channel ``i`` at ``offset + i + (ffs(output processors) % 4)·passes``
  of the quadrant with bias enabled (one byte each, added ×128); MAX78000 streaming layer 0 keeps
  a zero first byte (``SUPPORT_STREAM_BIAS`` is false).
* Data memory: ``0x50400000 + q·0x400000 + (p % 16 // 4)·0x8000 + 4·word``; channel ``c`` of an
  HWC tensor is byte ``p % 4`` of processor ``p`` = first output processor + ``c`` mod the
  per-pass channel count (``unload.py``).
* ``in_sequences`` are recovered from the memory offsets: a layer reads the latest earlier layer
  that wrote at its read pointer (operand ``j`` at the read pointer + ``j`` words).

Shapes and channel counts come from ``cnn.c``'s layer summary (written by the same tool); they are
checked against the registers (rows, columns, pooling, kernel counts). Not supported (typed
errors): MAX78002 projects, 1-bit/binary weights, 1-D convolutions, transposed convolutions,
gaps in processor maps, CHW (``big data``) inputs other than streaming HWC.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from facesdk.errors import ConfigError, ModelFormatError, ModelNotFoundError
from facesdk.zoo import sha256_file

from .network import Layer, Network

__all__ = ["CProject", "KatResult", "import_c_project", "known_answer_test", "read_c_words"]

log = logging.getLogger(__name__)

_APB = 0x50000000
_CNN = _APB + 0x100000
_GROUP = 0x400000
_MRAM = _APB + 0x180000
_SRAM = _APB + 0x400000
_MASK_OFFS_BYTES = 0x4000
_INSTANCE_BYTES = 0x8000
_MAX_LAYERS = 32
_KERNEL_WORDS = 1024
_MAX_FILE = 64 << 20

_REG = re.compile(r"\*\(\(volatile uint32_t \*\)\s*(0x[0-9a-fA-F]+)\)\s*=\s*(0x[0-9a-fA-F]+)\s*;")
_NUM = re.compile(r"0[xX][0-9a-fA-F]+|-?\d+")
_SUMMARY = re.compile(r"^//\s*Layer (\d+):\s*(.*)$", re.M)
_DIMS = re.compile(r"^(?:(\d+)x)?(\d+)x(\d+)x(\d+)")


@dataclass
class CProject:
    """An imported C project: the network, its chip and the known-answer test data."""

    network: Network
    chip: str
    path: Path
    sample_input: np.ndarray | None = None  # int CHW
    sample_output: list[tuple[int, int, list[int]]] = field(default_factory=list)  # (addr, mask, words)
    out_layout: dict = field(default_factory=dict)


@dataclass
class KatResult:
    """Outcome of the known-answer test: every word of ``sampleoutput.h`` compared."""

    words: int
    differing: int
    first_mismatches: list[tuple[int, int, int]]  # (address, expected, got)

    @property
    def passed(self) -> bool:
        return self.words > 0 and self.differing == 0

    def to_dict(self) -> dict:
        return {
            "words": self.words,
            "differing": self.differing,
            "passed": self.passed,
            "first_mismatches": [
                f"0x{a:08x}: expected 0x{e:08x}, got 0x{g:08x}" for a, e, g in self.first_mismatches
            ],
        }


def _read(path: Path) -> str:
    try:
        if path.stat().st_size > _MAX_FILE:
            raise ModelFormatError(
                f"{path}: larger than {_MAX_FILE >> 20} MiB; not a synthesized project file"
            )
        return path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        raise ModelNotFoundError(f"C project file not found: {path}") from None
    except OSError as exc:
        raise ModelFormatError(f"cannot read {path}: {exc.strerror or exc}") from None


def _define_words(text: str, name: str, path: Path) -> list[int]:
    m = re.search(r"#define\s+" + re.escape(name) + r"\s*\\?\s*\{(.*?)\}", text, re.S)
    if not m:
        raise ModelFormatError(f"{path}: no '#define {name} {{...}}'")
    body = m.group(1).replace("\\", " ")
    try:
        return [int(t, 0) & 0xFFFFFFFF for t in _NUM.findall(body)]
    except ValueError as exc:
        raise ModelFormatError(f"{path}: {name}: {exc}") from None


def read_c_words(path: str | Path, name: str) -> list[int]:
    """The numbers of ``#define NAME { ... }`` in a C header (unsigned 32-bit)."""
    p = Path(path)
    return _define_words(_read(p), name, p)


def _ffs(x: int) -> int:
    return (x & -x).bit_length() - 1


def _fls(x: int) -> int:
    return x.bit_length() - 1


def _contiguous(mask: int) -> bool:
    m = mask >> _ffs(mask)
    return (m & (m + 1)) == 0


def _parse_registers(text: str, path: Path) -> tuple[dict[tuple[int, int, int], int], int]:
    """``{(quadrant, layer, register): value}`` from ``cnn_configure()``, and the layer count."""
    start = text.find("int cnn_configure(")
    if start < 0:
        raise ModelFormatError(f"{path}: no cnn_configure() (not an ai8x-synthesis cnn.c)")
    end = text.find("\nint ", start + 10)
    body = text[start : end if end > 0 else len(text)]
    regs: dict[tuple[int, int, int], int] = {}
    for a, v in _REG.findall(body):
        addr, val = int(a, 16), int(v, 16)
        off = addr - _CNN
        if off < 0 or off >= 4 * _GROUP:
            continue
        q, rest = divmod(off, _GROUP)
        word = rest // 4
        if 4 <= word < 4 + 21 * _MAX_LAYERS:
            r, layer = divmod(word - 4, _MAX_LAYERS)
            regs[(q, layer, r)] = val
    init = text[text.find("int cnn_init(") :]
    m = re.search(r"0x50100008\)\s*=\s*(0x[0-9a-fA-F]+)", init)
    if not m:
        raise ModelFormatError(f"{path}: no layer-count register write in cnn_init()")
    return regs, int(m.group(1), 16) + 1


@dataclass
class _Summary:
    operands: int
    in_shape: tuple[int, int, int]
    out_shape: tuple[int, int, int]
    op: str  # conv2d | linear | none
    kernel: tuple[int, int]
    stride: tuple[int, int]
    pad: tuple[int, int]
    eltwise: str | None
    streaming: bool
    text: str


def _parse_summary(text: str, path: Path) -> dict[int, _Summary]:
    out: dict[int, _Summary] = {}
    for num, desc in _SUMMARY.findall(text):
        m = _DIMS.match(desc)
        if not m:
            continue
        ops = int(m.group(1) or 1)
        ins = (int(m.group(2)), int(m.group(3)), int(m.group(4)))
        mo = re.search(r"(\d+)x(\d+)x(\d+) output", desc)
        if not mo:
            raise ModelFormatError(f"{path}: layer {num} summary has no output shape: {desc!r}")
        outs = (int(mo.group(1)), int(mo.group(2)), int(mo.group(3)))
        if "conv1d" in desc or "convtranspose" in desc.lower():
            raise ModelFormatError(
                f"{path}: layer {num}: {desc.split(',')[2].strip()} is not supported "
                "by the C-project importer (conv2d, linear, pass-through, element-wise)"
            )
        mk = re.search(r"conv2d with kernel size (\d+)x(\d+), stride (\d+)/(\d+), pad (\d+)/(\d+)", desc)
        if mk:
            op, k = "conv2d", (int(mk.group(1)), int(mk.group(2)))
            stride, pad = (int(mk.group(3)), int(mk.group(4))), (int(mk.group(5)), int(mk.group(6)))
        elif re.search(r"\blinear\b", desc):
            op, k, stride, pad = "linear", (1, 1), (1, 1), (0, 0)
        elif "no convolution" in desc:
            op, k, stride, pad = "none", (1, 1), (1, 1), (0, 0)
        else:
            raise ModelFormatError(f"{path}: layer {num}: cannot read the operation from {desc!r}")
        me = re.search(r"\d+-element (add|sub|or|xor|multiply|mul)", desc)
        elt = None if not me else {"multiply": "mul"}.get(me.group(1), me.group(1))
        out[int(num)] = _Summary(
            ops, ins, outs, op, k, stride, pad, elt, "streaming" in desc.split(",")[0], desc
        )
    return out


class _KernelMemory:
    """The 72-bit kernel words of every processor, from ``KERNELS`` (``--mexpress`` records)."""

    def __init__(self, words: list[int], path: Path) -> None:
        self.mem = np.zeros((64, _KERNEL_WORDS, 9), np.uint8)
        self.used = np.zeros((64, _KERNEL_WORDS), bool)
        i = 0
        while i < len(words) and words[i] != 0:
            if i + 1 >= len(words):
                raise ModelFormatError(f"{path}: KERNELS ends inside a record")
            addr, n = words[i], words[i + 1]
            off = addr - _MRAM
            q, rest = divmod(off, _GROUP)
            if off < 0 or q >= 4 or rest >= 16 * _MASK_OFFS_BYTES:
                raise ModelFormatError(f"{path}: KERNELS address 0x{addr:08x} is not MAX78000 kernel memory")
            p = q * 16 + rest // _MASK_OFFS_BYTES
            col = (rest % _MASK_OFFS_BYTES) // 4
            if i + 2 + n > len(words):
                raise ModelFormatError(f"{path}: KERNELS record at 0x{addr:08x} runs past the array")
            data = np.array(words[i + 2 : i + 2 + n], np.uint32)
            raw = np.stack([(data >> s) & 0xFF for s in (24, 16, 8, 0)], 1).astype(np.uint8).ravel()
            count = (n * 4) // 9
            if col + count > _KERNEL_WORDS:
                raise ModelFormatError(f"{path}: KERNELS record at 0x{addr:08x} exceeds the kernel memory")
            self.mem[p, col : col + count] = raw[: count * 9].reshape(count, 9)
            self.used[p, col : col + count] = True
            i += 2 + n
        if i >= len(words):
            raise ModelFormatError(f"{path}: KERNELS has no terminating 0")

    def byte(self, p: int, kern_offs: int, t: int) -> int:
        """Byte ``t`` of a layer's stream on processor ``p`` (``kernels.py`` ``add_kernel_data``)."""
        col, pos = divmod(t, 9)
        if not self.used[p, kern_offs + col]:
            raise ModelFormatError(
                f"kernels not found in kernel memory: processor {p}, word {kern_offs + col} "
                "is not loaded by KERNELS"
            )
        return int(self.mem[p, kern_offs + col, 8 - pos])


def _signed(v: int, bits: int) -> int:
    return v - (1 << bits) if v >= 1 << (bits - 1) else v


def _expand(ch: int) -> tuple[int, int]:
    """(passes, channels per pass) as ``backend/max7800x.py`` computes them."""
    exp = (ch + 63) // 64
    thresh = (ch + exp - 1) // exp
    if ch > 64:
        thresh = min((thresh + 3) & ~3, 64)
    return exp, thresh


def _extract_kernels(
    km: _KernelMemory,
    li: int,
    s: _Summary,
    procs: list[int],
    kern_offs: int,
    kern_count: int,
    bits: int,
    start_col: int,
    path: Path,
) -> np.ndarray:
    """Invert ``kernels.py``: the int weights ``[out, in, kh, kw]`` of one layer."""
    ksize = s.kernel[0] * s.kernel[1]
    in_ch, out_ch = s.in_shape[0], s.out_shape[0]
    in_exp, in_thresh = _expand(in_ch)
    out_exp, out_thresh = _expand(out_ch)
    q = 8 // bits
    if len(procs) != in_thresh:
        raise ModelFormatError(
            f"{path}: layer {li}: {len(procs)} processors enabled for {in_ch} input "
            f"channels ({in_thresh} per pass)"
        )
    flat = np.zeros((out_ch * in_ch, ksize), np.int64)
    seen = np.zeros(out_ch * in_ch, bool)
    n_flat = out_ch * in_ch
    for ch, p in enumerate(procs):
        t = (start_col * ksize * in_exp // 9) * 9 + (start_col * ksize * in_exp % 9) // q
        for expand in range(out_exp):
            m = expand * out_thresh
            stop = m + out_thresh
            while m < stop:
                src = ch + m * in_ch
                for ie in range(in_exp):
                    if ie * in_thresh + ch < in_ch and src < n_flat:
                        k = [km.byte(p, kern_offs, t + ksize - 1 - j) for j in range(ksize)]
                        t += ksize
                        n = 0
                        for i in range(q):
                            if m < out_ch:
                                idx = n + ie * q
                                ko = src + (idx % in_exp) * in_thresh + (idx // in_exp) * in_ch
                                if ko < n_flat:
                                    vals = np.array(
                                        [_signed((b >> (i * bits)) & ((1 << bits) - 1), bits) for b in k],
                                        np.int64,
                                    )
                                    if seen[ko] and not np.array_equal(flat[ko], vals):
                                        raise ModelFormatError(
                                            f"{path}: layer {li}: kernel {ko} stored twice "
                                            "with different values"
                                        )
                                    flat[ko] = vals
                                    seen[ko] = True
                                n += 1
                    else:
                        t += ksize // q
                m += q
        if t > kern_count * ksize // q + start_col * ksize * in_exp + 9:
            raise ModelFormatError(f"{path}: layer {li}: processor {p} stream longer than its kernel count")
    if not seen.all():
        raise ModelFormatError(f"{path}: layer {li}: {int((~seen).sum())} kernels not found in kernel memory")
    return flat.reshape(out_ch, in_ch, s.kernel[0], s.kernel[1])


@dataclass
class _LayerRegs:
    """The registers of one layer that the importer reads (quadrant 0 unless a list per quadrant)."""

    post: list[int]  # post-processing, per quadrant
    lctl: int  # layer control
    oned: int  # "1D" register
    lctl2: int  # layer control 2
    procs_mask: int  # processor enables of all quadrants, 64 bits
    rows: int
    rptr: int  # SRAM read pointer (word offset)
    wptr: int  # SRAM write pointer (instance << 13 | word offset)
    mcnt: int  # mask offset and count
    pool: tuple[int, int, int]  # pooling rows, columns, stride registers

    @classmethod
    def read(cls, regs: dict[tuple[int, int, int], int], li: int) -> _LayerRegs:
        def reg(q: int, r: int) -> int:
            return regs.get((q, li, r), 0)

        return cls(
            post=[reg(q, 15) for q in range(4)],
            lctl=reg(0, 11),
            oned=reg(0, 2),
            lctl2=reg(0, 20),
            procs_mask=sum((reg(q, 14) & 0xFFFF) << (16 * q) for q in range(4)),
            rows=reg(0, 0),
            rptr=reg(0, 10) & 0x1FFF,
            wptr=reg(0, 6),
            mcnt=reg(0, 12),
            pool=(reg(0, 3), reg(0, 4), reg(0, 5)),
        )


def _project_arch(ctext: str, cpath: Path, d: Path) -> str:
    """The network name of ``cnn.c``'s header; refuses projects generated for another device."""
    head = ctext[:4000]
    dev = re.search(r"--device\s+(\S+)", head)
    if dev and dev.group(1).upper() not in ("MAX78000", "AI85", "85"):
        raise ModelFormatError(f"{cpath}: generated for {dev.group(1)}; only MAX78000 projects are imported")
    mname = re.search(r"^//\s*(\S+)\s*$", head[head.find("*/") + 2 :], re.M)
    return mname.group(1) if mname else d.name


def _bias_memory(wtext: str, wpath: Path) -> list[np.ndarray]:
    """``BIAS_0``..``BIAS_3`` of ``weights.h`` as bytes (empty where a quadrant has none)."""
    out = []
    for q in range(4):
        if re.search(rf"#define\s+BIAS_{q}\b", wtext):
            out.append(np.array(_define_words(wtext, f"BIAS_{q}", wpath), np.int64) & 0xFF)
        else:
            out.append(np.zeros(0, np.int64))
    return out


def _structure(li: int, s: _Summary, r: _LayerRegs, nlayers: int, cpath: Path,
               writers: list[tuple[int, int]]) -> Layer:
    """A layer's operation, shapes, pooling, activation and inputs from its registers, checked against
    the summary (weights and biases are added by :func:`_attach_weights`)."""
    if not r.procs_mask or not _contiguous(r.procs_mask):
        raise ModelFormatError(
            f"{cpath}: layer {li}: processor map 0x{r.procs_mask:016x} is empty or has gaps"
        )
    none_op = (r.post[0] >> 24) & 3
    if (none_op != 0) != (s.op == "none"):
        raise ModelFormatError(
            f"{cpath}: layer {li}: summary says {s.op!r}, post-processing register "
            f"0x{r.post[0]:08x} disagrees"
        )
    pad = (r.rows >> 16) & 3
    if s.op != "linear" and (r.rows & 0x3FF) - 2 * pad + 1 != s.in_shape[1]:
        raise ModelFormatError(
            f"{cpath}: layer {li}: rows register 0x{r.rows:x} does not match {s.in_shape[1]} input rows"
        )
    pool = None
    pool_size = (1, 1)
    pool_stride = (1, 1)
    if r.lctl & 0x80:
        pool = "max" if r.lctl & 0x100 else "avg"
        pool_size = ((r.pool[0] & 0xF) + 1, (r.pool[1] & 0xF) + 1)
        st = (r.pool[2] & 0xF) + 1
        pool_stride = (st, st)
    activation = "relu" if r.lctl & 0x200 else ("abs" if r.post[0] >> 26 & 1 else None)
    operands = ((r.oned >> 18) & 0xF) + 1 if r.oned >> 13 & 1 else 1
    if operands != s.operands:
        raise ModelFormatError(
            f"{cpath}: layer {li}: {s.operands} operands in the summary, {operands} in the registers"
        )
    eltwise = {0: "sub", 1: "add", 2: "or", 3: "xor"}[(r.oned >> 14) & 3] if operands > 1 else None
    # in_sequences from memory offsets: the latest earlier layer that wrote at the read pointer
    if li == 0:
        srcs = [-1]
    else:
        srcs = []
        for j in range(operands):
            cand = [lj for (w, lj) in writers if w == r.rptr + j]
            srcs.append(cand[-1] if cand else li - 1)
    writers.append((r.wptr & 0x1FFF, li))
    return Layer(
        index=li,
        op=s.op if s.op != "none" else ("passthrough" if operands == 1 else "none"),
        name=f"L{li}",
        in_sequences=srcs,
        eltwise=eltwise,
        kernel_size=s.kernel,
        pad=(pad, pad),
        stride=s.stride,
        pool=pool,
        pool_size=pool_size,
        pool_stride=pool_stride,
        activation=activation,
        flatten=bool(r.post[0] >> 27 & 1),
        output_width=32 if r.lctl >> 16 & 1 else 8,
        output=li == nlayers - 1,
        streaming=s.streaming,
        processors=r.procs_mask,
    )


def _attach_weights(layer: Layer, s: _Summary, r: _LayerRegs, km: _KernelMemory,
                    bias_mem: list[np.ndarray], cpath: Path, wpath: Path) -> None:
    """Weights, biases, output shift and output processors of a layer (pass-through and element-wise
    layers only get their shift and processors)."""
    li = layer.index
    qbits = (r.post[0] >> 22) & 3
    bits = {0: 8, 1: 1, 2: 2, 3: 4}[qbits]
    if bits == 1:
        raise ModelFormatError(f"{cpath}: layer {li}: 1-bit weights are not supported by the importer")
    sh = (r.post[0] >> 13) & 0x1F
    hw_shift = -(sh & 0xF) if sh & 0x10 else sh
    if s.op not in ("conv2d", "linear"):
        layer.output_shift = hw_shift
        layer.output_processors = r.procs_mask
        return
    if s.stride != (1, 1):
        raise ModelFormatError(f"{cpath}: layer {li}: MAX78000 convolutions have stride 1")
    if layer.flatten:
        raise ModelFormatError(f"{cpath}: layer {li}: flattened layers are not supported by the importer")
    koffs_reg, kmax = r.mcnt >> 16, r.mcnt & 0xFFFF
    ksize = s.kernel[0] * s.kernel[1]
    kern_offs = (koffs_reg // 8) * ksize // 9
    kern_count = (kmax - koffs_reg) // bits + 1
    in_exp, _ = _expand(s.in_shape[0])
    out_exp, out_thresh = _expand(s.out_shape[0])
    if (r.lctl2 & 0xF) + 1 != in_exp:
        raise ModelFormatError(
            f"{cpath}: layer {li}: {in_exp} input passes expected, layer control 2 "
            f"says {(r.lctl2 & 0xF) + 1}"
        )
    first_aligned = (r.wptr >> 13) * 4
    last_out = first_aligned + (r.lctl2 >> 8) // bits
    first_out = last_out - out_thresh + 1
    start_col = first_out - first_aligned
    if not 0 <= start_col < 4:
        raise ModelFormatError(
            f"{cpath}: layer {li}: output processors {first_out}..{last_out} do not fit the write pointer"
        )
    layer.output_processors = ((1 << out_thresh) - 1) << first_out
    procs = [p for p in range(64) if r.procs_mask >> p & 1]
    w = _extract_kernels(km, li, s, procs, kern_offs, kern_count, bits, start_col, wpath)
    layer.weights = w.reshape(w.shape[0], -1) if s.op == "linear" else w
    layer.weight_bits = bits
    layer.output_shift = hw_shift - (8 - bits)
    bq = [q for q in range(4) if r.post[q] >> 12 & 1]
    if len(bq) > 1:
        raise ModelFormatError(f"{cpath}: layer {li}: bias enabled in quadrants {bq} (depthwise?)")
    if bq:
        q = bq[0]
        off = (r.post[q] & 0xFFF) + start_col * out_exp + (1 if li == 0 and s.streaming else 0)
        b = bias_mem[q][off : off + s.out_shape[0]]
        if len(b) != s.out_shape[0]:
            raise ModelFormatError(
                f"{wpath}: BIAS_{q} too short for layer {li}'s {s.out_shape[0]} biases at offset {off}"
            )
        layer.bias = np.where(b >= 128, b - 256, b).astype(np.int64)


def _read_samples(proj: CProject, d: Path) -> None:
    """``sampledata.h`` (the HWC sample input) and ``sampleoutput.h`` (expected data-memory records)."""
    sd, so = d / "sampledata.h", d / "sampleoutput.h"
    if sd.is_file():
        words = _define_words(_read(sd), "SAMPLE_INPUT_0", sd)
        c, h, wd = proj.network.input_shape
        if c > 4 or len(words) != h * wd:
            raise ModelFormatError(
                f"{sd}: {len(words)} words for a {c}x{h}x{wd} input; only HWC inputs of at "
                "most 4 channels (one word per pixel) are read"
            )
        a = np.array(words, np.uint32)
        chans = [((a >> (8 * k)) & 0xFF).astype(np.int64) for k in range(c)]
        proj.sample_input = np.stack([np.where(x >= 128, x - 256, x).reshape(h, wd) for x in chans])
    if so.is_file():
        words = _define_words(_read(so), "SAMPLE_OUTPUT", so)
        i = 0
        while i < len(words) and words[i] != 0:
            if i + 3 > len(words):
                raise ModelFormatError(f"{so}: SAMPLE_OUTPUT ends inside a record")
            addr, mask, n = words[i : i + 3]
            proj.sample_output.append((addr, mask, words[i + 3 : i + 3 + n]))
            i += 3 + n


def import_c_project(directory: str | Path) -> CProject:
    """Read an ai8x-synthesis MAX78000 C project (``cnn.c``, ``weights.h``, and if present
    ``sampledata.h``/``sampleoutput.h``) into an emulator :class:`Network`.

    Raises:
        ModelNotFoundError: a file is missing.
        ModelFormatError: the files are not a project this importer understands (see module doc).
    """
    d = Path(directory)
    if not d.is_dir():
        raise ModelNotFoundError(f"C project directory not found: {d}")
    cpath, wpath = d / "cnn.c", d / "weights.h"
    ctext = _read(cpath)
    arch = _project_arch(ctext, cpath, d)
    regs, nlayers = _parse_registers(ctext, cpath)
    summ = _parse_summary(ctext, cpath)
    if sorted(summ) != list(range(nlayers)):
        raise ModelFormatError(
            f"{cpath}: layer summary lists {sorted(summ)}, registers configure {nlayers} layers"
        )
    wtext = _read(wpath)
    km = _KernelMemory(_define_words(wtext, "KERNELS", wpath), wpath)
    bias_mem = _bias_memory(wtext, wpath)
    layers: list[Layer] = []
    writers: list[tuple[int, int]] = []  # (word offset, layer)
    for li in range(nlayers):
        r = _LayerRegs.read(regs, li)
        layer = _structure(li, summ[li], r, nlayers, cpath, writers)
        _attach_weights(layer, summ[li], r, km, bias_mem, cpath, wpath)
        layers.append(layer)
    net = Network(
        arch=arch,
        layers=layers,
        input_shape=summ[0].in_shape,
        # provenance without the machine's absolute path, so the saved network is byte-identical
        # wherever it is imported (the zoo card pins its sha256)
        meta={
            "source": "ai8x-synthesis C project",
            "project": d.name,
            "cnn_c_sha256": sha256_file(cpath),
            "weights_h_sha256": sha256_file(wpath),
            "chip": "max78000",
        },
    )
    proj = CProject(network=net, chip="max78000", path=d)
    last, r = layers[-1], _LayerRegs.read(regs, nlayers - 1)
    _, out_thresh = _expand(summ[nlayers - 1].out_shape[0])
    proj.out_layout = {
        "word_offset": r.wptr & 0x1FFF,
        "first_processor": (last.output_processors and _ffs(last.output_processors)) or 0,
        "per_pass": out_thresh,
        "pixel_stride": ((r.lctl2 >> 4) & 0xF) + 1,
        "pass_offset": regs.get((0, nlayers - 1, 9), 0),
    }
    _read_samples(proj, d)
    log.info("imported %s: %d layers from %s", arch, nlayers, d)
    return proj


def output_words(proj: CProject, out: np.ndarray) -> dict[int, int]:
    """Data-memory words (address → value) holding the last layer's int8 output ``[C, H, W]``."""
    lay = proj.out_layout
    out = np.asarray(out)
    if out.ndim == 1:
        out = out[:, None, None]
    if proj.network.layers[-1].output_width != 8:
        raise ConfigError("the known-answer comparison handles 8-bit outputs only")
    c_n, h, w = out.shape
    mem: dict[int, int] = {}
    for c in range(c_n):
        pas, k = divmod(c, lay["per_pass"])
        p = lay["first_processor"] + k
        q, inst, byte = p // 16, (p % 16) // 4, p % 4
        for y in range(h):
            for x in range(w):
                word = lay["word_offset"] + (y * w + x) * lay["pixel_stride"] + pas * lay["pass_offset"]
                addr = _SRAM + q * _GROUP + inst * _INSTANCE_BYTES + 4 * word
                mem[addr] = mem.get(addr, 0) | ((int(out[c, y, x]) & 0xFF) << (8 * byte))
    return mem


def known_answer_test(proj: CProject, model=None) -> KatResult:
    """Run the network on ``sampledata.h`` and compare with every word of ``sampleoutput.h``.

    ``model`` is an emulator :class:`~.emulator.Model` of ``proj.network`` (built when omitted).
    """
    if proj.sample_input is None or not proj.sample_output:
        raise ModelNotFoundError(f"{proj.path}: the known-answer test needs sampledata.h and sampleoutput.h")
    if model is None:
        from .emulator import Model

        model = Model(proj.network, chip=proj.chip)
    got = output_words(proj, model.run(proj.sample_input)[0])
    n = diff = 0
    bad: list[tuple[int, int, int]] = []
    for addr, mask, words in proj.sample_output:
        for k, want in enumerate(words):
            a = addr + 4 * k
            g = got.get(a)
            n += 1
            if g is None or (g & mask) != (want & mask):
                diff += 1
                if len(bad) < 8:
                    bad.append((a, want, -1 if g is None else g & mask))
    return KatResult(words=n, differing=diff, first_mismatches=bad)
