"""TensorRT backend (NVIDIA GPUs).

* ``compile(onnx)`` builds a serialized engine (FP32, FP16, or INT8 with an entropy calibrator;
  dynamic batch via an optimisation profile) and writes it with a small facesdk header:
  ``b"FSDKTRT1"`` + uint32 little-endian JSON length + JSON metadata (source
  sha256, precision, TensorRT version, batch range) + the engine bytes. Engines
  are specific to a GPU and TensorRT version; the header lets us refuse a
  mismatching one with a clear error instead of a crash.
* ``load(engine)`` deserialises it and runs it with CUDA memory from
  ``cuda-python`` (``cuda.bindings.runtime``).

Import-safe: nothing here imports tensorrt or CUDA until ``available()`` /
``load()`` is called, so the backend lists as unavailable (with the reason) on
machines without a GPU.
"""

from __future__ import annotations

import hashlib
import json
import logging
import struct
import threading
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from facesdk.backend import Artifact, Availability, Backend, Session, TensorSpec
from facesdk.errors import BackendError, BackendUnavailableError, DeviceMismatchError, ModelFormatError

log = logging.getLogger(__name__)

MAGIC = b"FSDKTRT1"


def _import_trt() -> Any:
    try:
        import tensorrt as trt
    except ImportError as exc:
        raise BackendUnavailableError(
            "tensorrt is not installed (pip install tensorrt; needs an NVIDIA GPU)"
        ) from exc
    return trt


def _import_cudart() -> Any:
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        try:
            from cuda import cudart  # type: ignore[no-redef]
        except ImportError as exc:
            raise BackendUnavailableError("cuda-python is not installed (pip install cuda-python)") from exc
    return cudart


def _check(result: Any) -> Any:
    err = result[0] if isinstance(result, tuple) else result
    if int(err) != 0:
        raise BackendError(f"CUDA error {err}")
    if isinstance(result, tuple):
        return result[1] if len(result) == 2 else result[1:]
    return None


def read_engine_file(path: Path) -> tuple[dict[str, Any], bytes]:
    """Split a facesdk engine file into (metadata, engine bytes)."""
    data = path.read_bytes()
    if not data.startswith(MAGIC) or len(data) < len(MAGIC) + 4:
        raise ModelFormatError(f"{path.name} is not a facesdk TensorRT engine (missing {MAGIC!r} header)")
    (n,) = struct.unpack_from("<I", data, len(MAGIC))
    start = len(MAGIC) + 4
    if start + n > len(data):
        raise ModelFormatError(f"{path.name}: truncated engine header")
    try:
        meta = json.loads(data[start : start + n].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelFormatError(f"{path.name}: corrupt engine header: {exc}") from None
    return meta, data[start + n :]


def write_engine_file(path: Path, meta: dict[str, Any], engine: bytes) -> None:
    """Write an engine with its facesdk header."""
    head = json.dumps(meta, sort_keys=True).encode()
    path.write_bytes(MAGIC + struct.pack("<I", len(head)) + head + engine)


def _entropy_calibrator(trt: Any, cudart: Any, batches: list[np.ndarray]) -> Any:
    """An ``IInt8EntropyCalibrator2`` feeding ``batches`` (float32, equal batch size) from one device buffer.

    Defined inside a function so importing this module never needs tensorrt.
    """
    if not batches:
        raise DeviceMismatchError("TensorRT int8 calibration needs at least one batch")
    arrs = [np.ascontiguousarray(b, np.float32) for b in batches]
    n = arrs[0].shape[0]
    arrs = [a for a in arrs if a.shape[0] == n]

    class _Calibrator(trt.IInt8EntropyCalibrator2):  # type: ignore[misc, name-defined]
        def __init__(self) -> None:
            super().__init__()
            self._i = 0
            self._ptr = _check(cudart.cudaMalloc(max(a.nbytes for a in arrs)))

        def get_batch_size(self) -> int:
            return int(n)

        def get_batch(self, names: list[str]) -> list[int] | None:
            if self._i >= len(arrs):
                return None
            a = arrs[self._i]
            self._i += 1
            kind = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
            _check(cudart.cudaMemcpy(self._ptr, a.ctypes.data, a.nbytes, kind))
            return [int(self._ptr)]

        def read_calibration_cache(self) -> bytes | None:
            return None  # always calibrate from the given set: the zoo caches the finished engine instead

        def write_calibration_cache(self, cache: Any) -> None:
            return None

        def free(self) -> None:
            if self._ptr:
                cudart.cudaFree(self._ptr)
                self._ptr = 0

    return _Calibrator()


class TensorRTSession(Session):
    """A deserialised engine with device buffers sized per batch."""

    backend = "tensorrt"

    def __init__(self, trt: Any, cudart: Any, engine: Any, device: str, precision: str) -> None:
        self._trt, self._cudart, self._engine = trt, cudart, engine
        self._ctx = engine.create_execution_context()
        self._lock = threading.Lock()  # one execution context and its buffers: one run at a time
        self._stream = _check(cudart.cudaStreamCreate())
        self.device, self.precision = device, precision
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        self._in = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self._out = [n for n in names if engine.get_tensor_mode(n) != trt.TensorIOMode.INPUT]

        def spec(n: str) -> TensorSpec:
            shape = tuple(int(d) if d >= 0 else None for d in engine.get_tensor_shape(n))
            return TensorSpec(n, shape, np.dtype(trt.nptype(engine.get_tensor_dtype(n))).name)

        self.inputs = [spec(n) for n in self._in]
        self.outputs = [spec(n) for n in self._out]
        b = self.inputs[0].shape[0]
        self.max_batch = b if isinstance(b, int) else None
        self._bufs: dict[str, tuple[int, int]] = {}

    def _buffer(self, name: str, nbytes: int) -> int:
        ptr, size = self._bufs.get(name, (0, 0))
        if size < nbytes:
            if ptr:
                _check(self._cudart.cudaFree(ptr))
            ptr = _check(self._cudart.cudaMalloc(nbytes))
            self._bufs[name] = (ptr, nbytes)
        return ptr

    def run(self, batch: np.ndarray) -> list[np.ndarray]:
        with self._lock:
            return self._run(batch)

    def _run(self, batch: np.ndarray) -> list[np.ndarray]:
        self.check_open()
        cudart = self._cudart
        x = np.ascontiguousarray(batch, dtype=self.inputs[0].dtype)
        name = self._in[0]
        if not self._ctx.set_input_shape(name, x.shape):
            raise BackendError(f"input shape {x.shape} is outside the engine's optimisation profile")
        p = self._buffer(name, x.nbytes)
        h2d, d2h = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice, cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        _check(cudart.cudaMemcpyAsync(p, x.ctypes.data, x.nbytes, h2d, self._stream))
        self._ctx.set_tensor_address(name, p)
        outs = []
        for n in self._out:
            shape = tuple(self._ctx.get_tensor_shape(n))
            arr = np.empty(shape, dtype=np.dtype(self._trt.nptype(self._engine.get_tensor_dtype(n))))
            self._ctx.set_tensor_address(n, self._buffer(n, max(arr.nbytes, 1)))
            outs.append(arr)
        if not self._ctx.execute_async_v3(self._stream):
            raise BackendError("TensorRT execution failed")
        for n, arr in zip(self._out, outs):
            _check(cudart.cudaMemcpyAsync(arr.ctypes.data, self._bufs[n][0], arr.nbytes, d2h, self._stream))
        _check(cudart.cudaStreamSynchronize(self._stream))
        return outs

    def release(self) -> None:
        for ptr, _ in self._bufs.values():
            self._cudart.cudaFree(ptr)
        self._bufs.clear()
        self._cudart.cudaStreamDestroy(self._stream)
        self._ctx = None


class TensorRTBackend(Backend):
    """NVIDIA TensorRT engines; builds them from ONNX with :meth:`compile`."""

    name = "tensorrt"
    formats = ("trt-engine",)
    description = "NVIDIA TensorRT (GPU); engines built from ONNX"
    aliases = ("trt",)
    priority = 30

    def available(self) -> Availability:
        try:
            trt = _import_trt()
            cudart = _import_cudart()
            count = _check(cudart.cudaGetDeviceCount())
        except (BackendUnavailableError, BackendError) as exc:
            return Availability(False, reason=str(exc))
        if not count:
            return Availability(False, reason="no CUDA GPU visible")
        return Availability(
            True, devices=tuple(f"cuda:{i}" for i in range(int(count))), version=trt.__version__
        )

    def read_metadata(self, artifact: Artifact) -> dict[str, str]:
        """The engine file's facesdk header as ``facesdk.*`` keys (model_id, precision, source_sha256 …)."""
        meta, _ = read_engine_file(artifact.path)
        return {f"facesdk.{k}": str(v) for k, v in meta.items() if v is not None}

    def compile(
        self,
        onnx_model: Artifact,
        *,
        precision: str = "fp32",
        calibration: Sequence[np.ndarray] | None = None,
        out_dir: Path | None = None,
        max_batch: int = 32,
    ) -> Artifact:
        """Build an engine from an ONNX file (FP32, FP16 or INT8; dynamic batch 1..max_batch).

        INT8 uses TensorRT's entropy calibrator (``IInt8EntropyCalibrator2``) over ``calibration``: float
        input batches, e.g. the zoo's calibration faces (:func:`facesdk_zoo.quantize.calibration_tensors`);
        layers without an int8 kernel may run FP16. Untested here: this project has no GPU.
        """
        trt = _import_trt()
        if precision not in ("fp32", "fp16", "int8"):
            raise DeviceMismatchError(f"TensorRT compile supports fp32, fp16 and int8, not {precision!r}")
        if precision == "int8" and not calibration:
            raise DeviceMismatchError("TensorRT int8 needs calibration batches (calibration=[...])")
        data = onnx_model.path.read_bytes()
        logger = trt.Logger(trt.Logger.WARNING)
        builder = trt.Builder(logger)
        network = builder.create_network(0)
        parser = trt.OnnxParser(network, logger)
        if not parser.parse(data):
            errs = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
            raise ModelFormatError(f"TensorRT cannot parse {onnx_model.path.name}: {errs}")
        config = builder.create_builder_config()
        if precision in ("fp16", "int8"):
            config.set_flag(trt.BuilderFlag.FP16)
        calib = None
        if precision == "int8":
            config.set_flag(trt.BuilderFlag.INT8)
            calib = _entropy_calibrator(trt, _import_cudart(), list(calibration or ()))
            config.int8_calibrator = calib
        inp = network.get_input(0)
        shape = list(inp.shape)
        batch_range = [1, 1]
        if shape and shape[0] == -1:
            prof = builder.create_optimization_profile()
            rest = shape[1:]
            prof.set_shape(inp.name, [1, *rest], [max(1, max_batch // 2), *rest], [max_batch, *rest])
            config.add_optimization_profile(prof)
            if calib is not None:
                config.set_calibration_profile(prof)
            batch_range = [1, max_batch]
        try:
            engine = builder.build_serialized_network(network, config)
        finally:
            if calib is not None:
                calib.free()
        if engine is None:
            raise BackendError(f"TensorRT failed to build an engine for {onnx_model.path.name}")
        meta = {
            "source_sha256": hashlib.sha256(data).hexdigest(),
            "precision": precision,
            "tensorrt": trt.__version__,
            "batch": batch_range,
            "model_id": onnx_model.card.id if onnx_model.card else None,
        }
        out = (out_dir or onnx_model.path.parent) / (onnx_model.path.stem + f".{precision}.engine")
        write_engine_file(out, meta, bytes(engine))
        return Artifact(out, "trt-engine", onnx_model.card, {k: str(v) for k, v in meta.items()})

    def load(
        self,
        artifact: Artifact,
        *,
        device: str = "auto",
        precision: str = "fp32",
        strict: bool = True,
        **options: Any,
    ) -> Session:
        """Load a facesdk engine file on ``cuda[:N]``."""
        self.check_artifact(artifact, strict)  # an ONNX model needs compile() first
        meta, blob = read_engine_file(artifact.path)
        trt = _import_trt()
        cudart = _import_cudart()
        if device not in ("auto", "cuda") and not device.startswith("cuda"):
            raise DeviceMismatchError(f"TensorRT runs on CUDA GPUs, not {device!r}")
        idx = int(device.split(":")[1]) if ":" in device else 0
        count = int(_check(cudart.cudaGetDeviceCount()))
        if idx >= count:
            raise DeviceMismatchError(f"cuda:{idx} does not exist ({count} GPU(s))")
        _check(cudart.cudaSetDevice(idx))
        if meta.get("tensorrt") != trt.__version__:
            raise ModelFormatError(
                f"{artifact.path.name} was built by TensorRT {meta.get('tensorrt')}, this is "
                f"{trt.__version__}; rebuild it"
            )
        real = meta.get("precision", "fp32")
        if real != precision:
            self.strict_or_warn(
                strict, f"engine {artifact.path.name} is {real}, asked for {precision}", f"running {real}"
            )
        runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        engine = runtime.deserialize_cuda_engine(blob)
        if engine is None:
            raise ModelFormatError(
                f"TensorRT cannot deserialise {artifact.path.name} (built for another GPU?)"
            )
        return TensorRTSession(trt, cudart, engine, f"cuda:{idx}", real)
