"""Bit-exact NumPy emulator of the MAX78000/MAX78002 CNN accelerator.

Arithmetic (ai8x-synthesis ``izer`` simulator, which ADI's on-chip known-answer tests come from):

* per layer: pooling of every operand (max, or average truncated toward zero; the
  pool stride applies even without a pooling window) → element-wise operation of the
  operands (add/sub/or/xor clipped to int8; channel concatenation without ``eltwise``)
  → convolution / linear → requantisation → activation;
* ``acc = Σ w·x + 128·bias_hw`` in exact integers;
  ``out = clip(floor(0.5 + acc / 2**(7 - s)), -128, 127)`` with ``s = output_shift + 8 - weight_bits``
  (computed as an integer shift, no floating point); ReLU clips to 0..127 after that; a
  ``output_width: 32`` layer returns the raw accumulator.

Stride-1 convolutions are ``kh·kw`` BLAS ``sgemm`` calls on shifted views of the padded
input, accumulated in place (no im2col copy); others are one matrix product over an im2col
matrix. Either way the float32 sums are split into groups small enough that every partial
sum is an integer below 2**24 and therefore exact; group results are summed as integers.
Depthwise convolutions are per-channel tap sums in int32.
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from facesdk.errors import ConfigError

from ..chips import chip_key
from .network import Layer, Network, parse_network

__all__ = ["Model", "load_model", "requantize", "conv2d_acc", "pool2d", "LayerResult"]

log = logging.getLogger(__name__)

#: Largest number of 8-bit × 8-bit products whose float32 sum is exact (128·128·1024 = 2**24).
_EXACT_CHUNK = 1024


def requantize(acc: np.ndarray, shift: int, bits: int = 8) -> np.ndarray:
    """``clip(floor(0.5 + acc * 2**(shift-7)), -2**(bits-1), 2**(bits-1)-1)`` in exact integers."""
    acc = np.asarray(acc)
    if acc.dtype not in (np.int32, np.int64):
        acc = acc.astype(np.int64)
    e = 7 - int(shift)
    if e > 0:
        out = acc + (1 << (e - 1))
        np.right_shift(out, e, out=out)
    elif e == 0:
        out = acc.copy()
    else:
        out = acc.astype(np.int64) << (-e)
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    return np.clip(out, lo, hi, out=out)


def _exact_matmul(a: np.ndarray, b: np.ndarray, max_abs_a: int, max_abs_b: int) -> np.ndarray:
    """Exact integer ``a @ b`` of integer-valued float32 matrices, as int32 (int64 if it could overflow).

    Products are summed in float32 over chunks small enough that every partial sum stays
    below 2**24 (exactly representable); chunk results are added as integers.
    """
    k = a.shape[1]
    per = max(1, max_abs_a) * max(1, max_abs_b)
    chunk = max(1, min(k, (1 << 24) // per))
    itype = np.int32 if per * k < (1 << 31) - (1 << 22) else np.int64
    if chunk >= k:
        return (a @ b).astype(itype)
    out = np.zeros((a.shape[0], b.shape[1]), dtype=itype)
    for s in range(0, k, chunk):
        out += (a[:, s : s + chunk] @ b[s : s + chunk]).astype(itype)
    return out


def _prepare_weights(w: np.ndarray) -> tuple[np.ndarray, int]:
    """A conv weight ``[O, C, kh, kw]`` as the GEMM matrix ``[kh·kw·C, O]`` (float32) and its max |w|."""
    o, cg, kh, kw = w.shape
    wm = np.ascontiguousarray(w.transpose(2, 3, 1, 0).reshape(kh * kw * cg, o).astype(np.float32))
    return wm, int(np.abs(w).max(initial=0))


def _im2col(
    x: np.ndarray, kh: int, kw: int, pad: tuple[int, int], stride: tuple[int, int], ho: int, wo: int
) -> np.ndarray:
    """``[N·Ho·Wo, kh·kw·C]`` float32 patches of NHWC ``x`` (zero padding), one strided copy per tap."""
    n, h, wd, c = x.shape
    (ph, pw), (sh, sw) = pad, stride
    if kh == 1 and kw == 1 and ph == 0 and pw == 0:
        xs = x[:, : (ho - 1) * sh + 1 : sh, : (wo - 1) * sw + 1 : sw, :]
        return xs.astype(np.float32).reshape(n * ho * wo, c)
    cols = np.zeros((n, ho, wo, kh, kw, c), np.float32)
    for ky in range(kh):
        oy0, oy1 = max(0, -(-(ph - ky) // sh)), min(ho, (h - 1 + ph - ky) // sh + 1)
        if oy1 <= oy0:
            continue
        iy0 = oy0 * sh + ky - ph
        for kx in range(kw):
            ox0, ox1 = max(0, -(-(pw - kx) // sw)), min(wo, (wd - 1 + pw - kx) // sw + 1)
            if ox1 <= ox0:
                continue
            ix0 = ox0 * sw + kx - pw
            cols[:, oy0:oy1, ox0:ox1, ky, kx, :] = x[
                :, iy0 : iy0 + (oy1 - oy0 - 1) * sh + 1 : sh, ix0 : ix0 + (ox1 - ox0 - 1) * sw + 1 : sw, :
            ]
    return cols.reshape(n * ho * wo, kh * kw * c)


def _conv_shifted(
    x: np.ndarray, wm: np.ndarray, wmax: int, kh: int, kw: int, pad: tuple[int, int]
) -> np.ndarray | None:
    """Stride-1 convolution as ``kh·kw`` GEMMs on shifted *views* of the flattened padded input
    (no im2col copy), accumulated in place by BLAS ``sgemm`` (``beta = 1``).

    Output row ``oy``, column ``ox`` lives at flat index ``oy·Wp + ox`` of a grid as wide as the
    padded input; tap ``(ky, kx)`` reads the input at that index plus ``ky·Wp + kx``. Taps are
    summed in float32 in groups small enough that every partial sum is an integer below 2**24
    (exact), groups in int32/int64. Returns ``[N, Ho, Wo, O]``, or None when one tap alone could
    exceed 2**24 (the caller then uses im2col, which splits the reduction further).
    """
    from scipy.linalg.blas import sgemm

    n, h, wd, c = x.shape
    o = wm.shape[1]
    per_tap = c * 128 * max(1, wmax)
    if per_tap > (1 << 24):
        return None
    group = max(1, (1 << 24) // per_tap)
    ph, pw = pad
    hp, wp = h + 2 * ph, wd + 2 * pw
    ho, wo = hp - kh + 1, wp - kw + 1
    m = ho * wp
    taps = kh * kw
    itype = np.int32 if per_tap * taps < (1 << 31) - (1 << 22) else np.int64
    out = np.empty((n, ho, wo, o), itype)
    xp = np.zeros((hp + 1, wp, c), np.float32)  # one spare row: the last taps read past the grid
    acc = np.empty((m, o), np.float32)  # C order [M, O] == Fortran order [O, M] for sgemm
    for i in range(n):
        xp[ph : ph + h, pw : pw + wd] = x[i]
        xf = xp.reshape(-1, c)
        for g0 in range(0, taps, group):
            for k in range(g0, min(taps, g0 + group)):
                ky, kx = divmod(k, kw)
                off = ky * wp + kx
                beta = 0.0 if k == g0 else 1.0  # the group's first tap overwrites the accumulator
                sgemm(1.0, wm[k * c : (k + 1) * c].T, xf[off : off + m].T, beta=beta, c=acc.T, overwrite_c=1)
            part = acc.reshape(ho, wp, o)[:, :wo]  # exact integers: the cast truncates nothing
            if g0 == 0:
                np.copyto(out[i], part, casting="unsafe")
            else:
                out[i] += part.astype(itype)
    return out


def _conv_nhwc(
    x: np.ndarray,
    w: np.ndarray,
    bias_hw: np.ndarray | None,
    pad: tuple[int, int],
    stride: tuple[int, int],
    groups: int,
    prepared: tuple[np.ndarray, int] | None = None,
) -> np.ndarray:
    """Accumulator of a convolution on NHWC data: ``[N,Ho,Wo,O]`` int32 (bias ×128 added).

    ``prepared``: the result of :func:`_prepare_weights` for ``w`` (cached per layer by Model).
    """
    n, h, wd, c = x.shape
    o, cg, kh, kw = w.shape
    if cg * groups != c:
        raise ConfigError(f"conv expects {cg * groups} input channels, got {c}")
    ph, pw = pad
    ho = (h + 2 * ph - kh) // stride[0] + 1
    wo = (wd + 2 * pw - kw) // stride[1] + 1
    if groups > 1 and cg == 1 and groups == o:  # depthwise: per-channel tap sums
        xp = np.pad(x.astype(np.int32), ((0, 0), (ph, ph), (pw, pw), (0, 0)))
        acc = np.zeros((n, ho, wo, o), dtype=np.int32)
        w32 = w.astype(np.int32)
        for ky in range(kh):
            for kx in range(kw):
                sl = xp[
                    :,
                    ky : ky + (ho - 1) * stride[0] + 1 : stride[0],
                    kx : kx + (wo - 1) * stride[1] + 1 : stride[1],
                    :,
                ]
                acc += sl * w32[:, 0, ky, kx]
    elif groups > 1:
        og = o // groups
        acc = np.concatenate(
            [
                _conv_nhwc(x[..., g * cg : (g + 1) * cg], w[g * og : (g + 1) * og], None, pad, stride, 1)
                for g in range(groups)
            ],
            axis=-1,
        )
    else:
        wm, wmax = prepared if prepared is not None else _prepare_weights(w)
        acc = None
        if stride == (1, 1) and kh * kw > 1:
            acc = _conv_shifted(x, wm, wmax, kh, kw, pad)
        if acc is None:
            cols = _im2col(x, kh, kw, pad, stride, ho, wo)
            acc = _exact_matmul(cols, wm, 128, wmax).reshape(n, ho, wo, o)
    if bias_hw is not None:
        acc += (np.asarray(bias_hw) * 128).astype(acc.dtype)  # acc is this call's own array
    return acc


def conv2d_acc(
    x: np.ndarray,
    w: np.ndarray,
    bias_hw: np.ndarray | None = None,
    pad: tuple[int, int] = (1, 1),
    stride: tuple[int, int] = (1, 1),
    groups: int = 1,
) -> np.ndarray:
    """Full-resolution accumulator of a 2-D convolution on NCHW data: ``[N,O,Ho,Wo]`` int64."""
    acc = _conv_nhwc(np.asarray(x).transpose(0, 2, 3, 1), w, bias_hw, pad, stride, groups)
    return acc.transpose(0, 3, 1, 2).astype(np.int64)


def _pool_nhwc(
    x: np.ndarray, kind: str | None, size: tuple[int, int], stride: tuple[int, int], round_avg: bool = False
) -> tuple[np.ndarray, np.ndarray | None]:
    if kind is None or size == (1, 1):
        if stride != (1, 1):
            x = x[:, :: stride[0], :: stride[1], :]
        return x, None
    ph, pw = size
    sh, sw = stride
    n, h, w, c = x.shape
    if h < ph or w < pw:
        raise ConfigError(f"pool window {ph}x{pw} larger than the {h}x{w} input")
    if kind == "max" and (ph, pw) == (sh, sw):  # element-wise maxima of the strided taps (no reduce)
        ho, wo = h // ph, w // pw
        m = x[:, 0 : ho * ph : ph, 0 : wo * pw : pw, :].copy()
        for dy in range(ph):
            for dx in range(pw):
                if dy or dx:
                    np.maximum(m, x[:, dy : ho * ph : ph, dx : wo * pw : pw, :], out=m)
        return m, None
    if (ph, pw) == (sh, sw):
        ho, wo = h // ph, w // pw
        win = x[:, : ho * ph, : wo * pw, :].reshape(n, ho, ph, wo, pw, c)
        axes: tuple[int, ...] = (2, 4)
    else:
        win = sliding_window_view(x, (ph, pw), axis=(1, 2))[:, ::sh, ::sw]
        axes = (4, 5)
    if kind == "max":
        return win.max(axis=axes), None
    s = win.sum(axis=axes, dtype=np.int64)
    cnt = ph * pw
    if round_avg:  # izer compute.pool2d(floor=False): ceil(avg - 0.5) below 0, floor(avg + 0.5) else
        q = np.sign(s) * ((2 * np.abs(s) + cnt) // (2 * cnt))
    else:
        q = np.where(s >= 0, s // cnt, -((-s) // cnt))
    return np.clip(q, -128, 127).astype(np.int32), s


def pool2d(
    x: np.ndarray, kind: str | None, size: tuple[int, int], stride: tuple[int, int], round_avg: bool = False
) -> tuple[np.ndarray, np.ndarray | None]:
    """Pool NCHW ``[N,C,H,W]``; returns (pooled, window sums for average pooling else None).

    The stride is applied even when there is no window (``size == (1,1)``), as on the chip.
    Average pooling truncates toward zero (or, with ``round_avg``, rounds half away from zero as izer's
    ``--avg-pool-rounding`` does: ``compute.pool2d(floor=False)``).
    """
    p, s = _pool_nhwc(np.asarray(x).transpose(0, 2, 3, 1), kind, size, stride, round_avg)
    return p.transpose(0, 3, 1, 2), None if s is None else s.transpose(0, 3, 1, 2)


_BLAS_CONTROLLER: object | None = None


def _blas_controller() -> object | None:
    """One threadpoolctl controller, made once: scanning the loaded libraries on every run
    (what ``threadpool_limits`` does) costs about a millisecond. scipy's BLAS, which the
    convolutions use, is loaded first so that the controller sees it."""
    global _BLAS_CONTROLLER
    if _BLAS_CONTROLLER is None:
        try:
            import scipy.linalg.blas  # noqa: F401  (load its OpenBLAS before scanning)
            from threadpoolctl import ThreadpoolController
        except ImportError:  # optional dependency
            _BLAS_CONTROLLER = False
        else:
            _BLAS_CONTROLLER = ThreadpoolController()
    return _BLAS_CONTROLLER or None


@contextlib.contextmanager
def blas_threads(n: int | None) -> Iterator[None]:
    """Limit BLAS threads while emulating (small GEMMs run best on one thread, and
    oversubscribed BLAS threads are very slow on a busy machine). No-op without threadpoolctl."""
    ctl = _blas_controller() if n else None
    if ctl is None:
        yield
        return
    with ctl.limit(limits=int(n), user_api="blas"):  # type: ignore[attr-defined]
        yield


class LayerResult:
    """Output of one emulated layer, with its pre-rounding accumulator where one exists."""

    __slots__ = ("output", "acc", "pooled")

    def __init__(self, output: np.ndarray, acc: np.ndarray | None, pooled: list[np.ndarray]) -> None:
        self.output = output
        self.acc = acc
        self.pooled = pooled


class Model:
    """An ai8x network ready to emulate.

    ``run(x)`` takes ``x`` as ``[C,H,W]`` (or a batch ``[N,C,H,W]``) of integers in
    -128..127 and returns the outputs of the layers marked ``output: true`` (else the last
    layer), as int8 (int64 for 32-bit wide outputs), without or with the batch axis
    matching the input. ``run_all`` returns every layer's output; ``run_layer`` runs one
    layer on given inputs and can return its accumulator.
    """

    def __init__(
        self,
        network: Network,
        *,
        chip: str = "max78000",
        avg_pool_rounding: bool = False,
        threads: int | None = 1,
    ) -> None:
        self.network = network
        #: BLAS threads while running (None: leave the BLAS default).
        self.threads = threads
        self.layers: list[Layer] = network.layers
        self.input_shape = tuple(network.input_shape)
        self.arch = network.arch
        self.chip = chip
        self.avg_pool_rounding = avg_pool_rounding
        self._prepared: dict[int, tuple[np.ndarray, int]] = {}

    def _weights_for(self, l: Layer) -> tuple[np.ndarray, int]:
        """The layer's GEMM weight matrix and max |w|, prepared once."""
        got = self._prepared.get(l.index)
        if got is None:
            assert l.weights is not None
            got = self._prepared[l.index] = _prepare_weights(l.weights)
        return got

    @property
    def output_layers(self) -> list[int]:
        return self.network.output_layers

    def __repr__(self) -> str:
        return (
            f"<ai8x Model {self.arch} {len(self.layers)} layers, input {self.input_shape}, chip {self.chip}>"
        )

    # ------------------------------------------------------------------ input
    def _check_input(self, x: np.ndarray) -> tuple[np.ndarray, bool]:
        x = np.asarray(x)
        given = tuple(x.shape)
        single = x.ndim == len(self.input_shape)
        if single:
            x = x[None]
        if x.ndim != len(self.input_shape) + 1 or tuple(x.shape[1:]) != self.input_shape:
            raise ConfigError(f"input must be {self.input_shape} (or a batch of them), got {given}")
        if x.dtype.kind == "f":
            if not np.all(np.round(x) == x):
                raise ConfigError("accelerator input must be integers in -128..127")
        elif x.dtype.kind not in "iu":
            raise ConfigError(f"accelerator input must be integers, got dtype {x.dtype}")
        if x.size and (x.min() < -128 or x.max() > 127):
            raise ConfigError("accelerator input values must lie in -128..127")
        x = x.astype(np.int32)
        if x.ndim == 3:  # 1-D network input [N,C,L] → [N,C,L,1]
            x = x[..., None]
        return x, single

    # ------------------------------------------------------------------ layers
    def _layer(self, l: Layer, ops: Sequence[np.ndarray]) -> LayerResult:
        """One layer on NHWC int32 operands; the result is NHWC too."""
        sums = None
        pooled = []
        for a in ops:
            p, s = _pool_nhwc(a, l.pool, l.pool_size, l.pool_stride, self.avg_pool_rounding)
            pooled.append(p)
            sums = s if sums is None else sums
        if len(pooled) > 1:
            if l.eltwise:
                x = pooled[0].astype(np.int64)
                for b in pooled[1:]:
                    if l.eltwise == "add":
                        x = x + b
                    elif l.eltwise == "sub":
                        x = x - b
                    elif l.eltwise == "mul":
                        x = x * b
                    elif l.eltwise == "or":
                        x = np.bitwise_or(x, b)
                    else:
                        x = np.bitwise_xor(x, b)
                x = requantize(x, l.shift) if l.eltwise == "mul" else np.clip(x, -128, 127)
                x = x.astype(np.int32)
            else:
                x = np.concatenate(pooled, axis=-1)
        else:
            x = pooled[0]
        acc = None
        if l.op in ("conv2d", "conv1d"):
            assert l.weights is not None
            if l.flatten:
                x = x.transpose(0, 3, 1, 2).reshape(x.shape[0], 1, 1, -1)
            prep = self._weights_for(l) if l.groups == 1 else None
            acc = _conv_nhwc(x, l.weights, l.bias, l.pad, l.stride, l.groups, prep)
        elif l.op == "linear":
            assert l.weights is not None
            xf = x.transpose(0, 3, 1, 2).reshape(x.shape[0], -1)  # PyTorch flatten order C,H,W
            if xf.shape[1] != l.weights.shape[1]:
                raise ConfigError(
                    f"layer {l.index}: linear expects {l.weights.shape[1]} features, got {xf.shape[1]}"
                )
            acc = _exact_matmul(
                xf.astype(np.float32),
                l.weights.T.astype(np.float32),
                128,
                int(np.abs(l.weights).max(initial=0)),
            )
            if l.bias is not None:
                acc = acc + (l.bias * 128).astype(acc.dtype)
            acc = acc[:, None, None, :]
        else:
            out = x
            if l.activation == "relu":
                out = np.clip(out, 0, 127)
            elif l.activation == "abs":
                out = np.clip(np.abs(out), 0, 127)
            return LayerResult(out, sums, pooled)
        if l.output_width == 32:
            out = acc.astype(np.int64)
            if l.activation == "relu":
                out = np.maximum(out, 0)
            elif l.activation == "abs":
                out = np.abs(out)
        else:
            out = requantize(acc, l.shift)
            if l.activation == "relu":
                np.clip(out, 0, 127, out=out)
            elif l.activation == "abs":
                np.clip(np.abs(out), 0, 127, out=out)
            out = out.astype(np.int32, copy=False)
        return LayerResult(out, acc, pooled)

    def run_layer(self, index: int, inputs: Sequence[np.ndarray]) -> LayerResult:
        """Run layer ``index`` on its source tensors (NCHW ``[N,C,H,W]``, one per ``in_sequences``).

        The result's ``output`` and ``acc`` (pre-rounding accumulator; the window sums for
        an average-pooling-only layer) are NCHW int64.
        """
        l = self.layers[index]
        if len(inputs) != len(l.in_sequences):
            raise ConfigError(f"layer {index} takes {len(l.in_sequences)} inputs, got {len(inputs)}")
        ops = []
        for a in inputs:
            a = np.asarray(a)
            if a.ndim == 3:
                a = a[..., None]
            ops.append(a.transpose(0, 2, 3, 1).astype(np.int32))
        r = self._layer(l, ops)
        t = lambda a: None if a is None else a.transpose(0, 3, 1, 2).astype(np.int64)  # noqa: E731
        return LayerResult(t(r.output), t(r.acc), [t(p) for p in r.pooled])

    def _forward(self, x: np.ndarray, keep_all: bool) -> dict[int, np.ndarray]:
        """Run every layer on NCHW input; returns NHWC outputs by layer index."""
        outs: dict[int, np.ndarray] = {-1: x.transpose(0, 2, 3, 1).astype(np.int32)}
        last_use: dict[int, int] = {}
        for l in self.layers:
            for s in l.in_sequences:
                last_use[s] = l.index
        wanted = set(self.output_layers)
        for l in self.layers:
            srcs = []
            for s in l.in_sequences:
                if s not in outs:
                    raise ConfigError(f"layer {l.index} reads layer {s}, which has not run")
                srcs.append(outs[s])
            outs[l.index] = self._layer(l, srcs).output
            if not keep_all:  # drop intermediates no later layer reads
                for s in l.in_sequences:
                    if last_use.get(s) == l.index and s not in wanted and s != -1:
                        outs.pop(s, None)
        return outs

    @staticmethod
    def _cast(a: np.ndarray, layer: Layer, single: bool) -> np.ndarray:
        a = a.transpose(0, 3, 1, 2)
        a = a.astype(np.int8) if layer.output_width == 8 else a.astype(np.int64)
        if layer.op == "conv1d" and a.shape[-1] == 1:
            a = a[..., 0]
        return np.ascontiguousarray(a[0] if single else a)

    def run(self, x: np.ndarray) -> list[np.ndarray]:
        """Outputs of the network's output layers for ``x`` ([C,H,W] or [N,C,H,W] ints)."""
        xb, single = self._check_input(x)
        with blas_threads(self.threads):
            outs = self._forward(xb, keep_all=False)
        return [self._cast(outs[i], self.layers[i], single) for i in self.output_layers]

    def run_all(self, x: np.ndarray) -> list[np.ndarray]:
        """Every layer's output (NCHW), in layer order."""
        xb, single = self._check_input(x)
        with blas_threads(self.threads):
            outs = self._forward(xb, keep_all=True)
        return [self._cast(outs[l.index], l, single) for l in self.layers]

    def output_shapes(self) -> list[tuple[int, ...]]:
        """Shapes (without batch) of every layer's output, computed from shapes only."""
        return [tuple(s) for s in self.shapes()[1]]

    def shapes(self) -> tuple[list[list[tuple[int, ...]]], list[tuple[int, ...]]]:
        """Per layer: the input shapes after pooling, and the output shape ([C,H,W] each)."""
        shp: dict[int, tuple[int, ...]] = {
            -1: self.input_shape if len(self.input_shape) == 3 else (*self.input_shape, 1)
        }
        ins: list[list[tuple[int, ...]]] = []
        outs: list[tuple[int, ...]] = []
        for l in self.layers:
            pooled = []
            for s in l.in_sequences:
                c, h, w = shp[s]
                if l.pool and l.pool_size != (1, 1):
                    h = (h - l.pool_size[0]) // l.pool_stride[0] + 1
                    w = (w - l.pool_size[1]) // l.pool_stride[1] + 1
                else:
                    h = -(-h // l.pool_stride[0])
                    w = -(-w // l.pool_stride[1])
                pooled.append((c, h, w))
            if len(pooled) > 1 and not l.eltwise:
                c = sum(p[0] for p in pooled)
                pooled_in = (c, pooled[0][1], pooled[0][2])
            else:
                pooled_in = pooled[0]
            ins.append(pooled)
            c, h, w = pooled_in
            if l.op in ("conv2d", "conv1d"):
                if l.flatten:
                    c, h, w = c * h * w, 1, 1
                kh, kw = l.kernel_size
                h = (h + 2 * l.pad[0] - kh) // l.stride[0] + 1
                w = (w + 2 * l.pad[1] - kw) // l.stride[1] + 1
                c = l.out_channels or c
            elif l.op == "linear":
                c, h, w = l.out_channels or c, 1, 1
            shp[l.index] = (c, h, w)
            outs.append((c, h, w))
        return ins, outs


def load_model(
    checkpoint_path: str | Path,
    yaml_path: str | Path,
    chip: str = "max78000",
    *,
    input_shape: tuple[int, ...] | None = None,
    avg_pool_rounding: bool = False,
    threads: int | None = 1,
) -> Model:
    """Load a quantised ai8x checkpoint + network YAML into an emulator :class:`Model`.

    Raises ModelFormatError (bad/hostile checkpoint, mismatched YAML) or ModelNotFoundError.
    """
    chip = chip_key(chip)
    net = parse_network(checkpoint_path, yaml_path, input_shape=input_shape)
    return Model(net, chip=chip, avg_pool_rounding=avg_pool_rounding, threads=threads)
