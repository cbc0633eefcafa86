"""TFLite / LiteRT backend.

Runs ``.tflite`` flatbuffers with ``ai_edge_litert`` (falling back to
``tflite_runtime`` when that is what is installed). Devices: ``cpu`` (XNNPACK)
and ``edgetpu`` (Coral, via ``libedgetpu``; the model must be compiled with
``edgetpu_compiler``). Quantised models: float input is quantised with the
input tensor's scale/zero-point and outputs are dequantised, so the core always
sees float tensors; the session reports precision ``int8`` for such models.
L2 normalisation stays on the host (the Edge TPU cannot do it).

Threads: a LiteRT ``Interpreter`` is not thread-safe (concurrent ``invoke`` calls fail or
corrupt each other's tensors), so a session serialises its runs with a lock: one session
shared by threads is correct, and runs one batch at a time (XNNPACK still uses ``threads``).
"""

from __future__ import annotations

import ctypes
import logging
import os
import platform
import threading
from typing import Any

import numpy as np

from facesdk.backend import Artifact, Availability, Backend, Session, TensorSpec
from facesdk.errors import BackendError, BackendUnavailableError, DeviceMismatchError, ModelFormatError
from facesdk.tflite_check import EDGETPU_CUSTOM_OP, validate_tflite

log = logging.getLogger(__name__)

_EDGETPU_LIB = {"Linux": "libedgetpu.so.1", "Darwin": "libedgetpu.1.dylib", "Windows": "edgetpu.dll"}.get(
    platform.system(), "libedgetpu.so.1"
)


def _import_interpreter() -> tuple[Any, Any, str]:
    try:
        from ai_edge_litert import interpreter as mod

        import ai_edge_litert

        return mod.Interpreter, mod.load_delegate, getattr(ai_edge_litert, "__version__", "ai-edge-litert")
    except ImportError:
        pass
    try:
        import tflite_runtime.interpreter as mod2

        return mod2.Interpreter, mod2.load_delegate, "tflite-runtime"
    except ImportError as exc:
        raise BackendUnavailableError(
            "ai-edge-litert is not installed (pip install 'facesdk[tflite]')"
        ) from exc


def _edgetpu_delegate(load_delegate: Any) -> Any:
    lib = os.environ.get("FACESDK_EDGETPU_LIB", _EDGETPU_LIB)
    try:
        ctypes.CDLL(lib)  # probe first: a failed load_delegate leaves a half-built Delegate behind
    except OSError as exc:
        raise DeviceMismatchError(
            f"Edge TPU runtime {lib} is not installed ({exc}); install libedgetpu1-std from the Coral apt "
            "repository and plug in a Coral device, or set FACESDK_EDGETPU_LIB to the library's path"
        ) from None
    try:
        return load_delegate(lib)
    except (ValueError, OSError) as exc:
        raise DeviceMismatchError(f"Edge TPU delegate {_EDGETPU_LIB} cannot be loaded: {exc}") from None


def _tflite_precision(interp: Any) -> str:
    """``int8`` when the graph holds quantised int8/uint8 tensors, else ``fp32``.

    float16 weights (stored half, DEQUANTIZE'd at load) still compute in fp32 on the CPU.
    """
    for d in interp.get_tensor_details():
        q = d.get("quantization") or (0.0, 0)
        if np.dtype(d["dtype"]) in (np.int8, np.uint8) and q[0]:
            return "int8"
    return "fp32"


class TFLiteSession(Session):
    """A TFLite interpreter; float in, float out (quantisation handled here)."""

    backend = "tflite"

    def __init__(self, interp: Any, device: str, threads: int | None) -> None:
        self._interp = interp
        self._lock = threading.Lock()  # one interpreter: one run at a time
        self.device = device
        inp = interp.get_input_details()
        out = interp.get_output_details()
        self._in = inp[0]
        self._outs = out
        self.inputs = [
            TensorSpec(d["name"], tuple(int(x) for x in d["shape"]), np.dtype(d["dtype"]).name) for d in inp
        ]
        self.outputs = [
            TensorSpec(d["name"], tuple(int(x) for x in d["shape"]), np.dtype(d["dtype"]).name) for d in out
        ]
        self.precision = _tflite_precision(interp)
        sig = self._in.get("shape_signature")
        self._dynamic_batch = sig is not None and len(sig) > 0 and int(sig[0]) == -1
        self.max_batch = None if self._dynamic_batch else int(self._in["shape"][0])
        self._batch = int(self._in["shape"][0])

    def _quantize(self, x: np.ndarray) -> np.ndarray:
        dt = np.dtype(self._in["dtype"])
        if dt in (np.int8, np.uint8):
            scale, zp = self._in["quantization"]
            if x.dtype.kind == "f":
                info = np.iinfo(dt)
                x = np.clip(np.round(x / scale + zp), info.min, info.max)
            return x.astype(dt)
        return x.astype(dt, copy=False)

    def _dequantize(self, y: np.ndarray, d: dict[str, Any]) -> np.ndarray:
        if np.dtype(d["dtype"]) in (np.int8, np.uint8, np.int16):
            scale, zp = d["quantization"]
            if scale:
                return (y.astype(np.float32) - zp) * scale
        return y

    def run(self, batch: np.ndarray) -> list[np.ndarray]:
        with self._lock:
            return self._run(batch)

    def _run(self, batch: np.ndarray) -> list[np.ndarray]:
        self.check_open()
        n = batch.shape[0]
        if self._dynamic_batch and n != self._batch:
            shape = list(self._in["shape"])
            shape[0] = n
            self._interp.resize_tensor_input(self._in["index"], shape)
            self._interp.allocate_tensors()
            self._in = self._interp.get_input_details()[0]
            self._outs = self._interp.get_output_details()
            self._batch = n
        try:
            self._interp.set_tensor(self._in["index"], self._quantize(batch))
            self._interp.invoke()
            return [self._dequantize(self._interp.get_tensor(d["index"]).copy(), d) for d in self._outs]
        except (ValueError, RuntimeError) as exc:
            raise BackendError(f"tflite failed to run the model: {exc}") from None

    def release(self) -> None:
        self._interp = None


class TFLiteBackend(Backend):
    """LiteRT interpreter on the CPU or a Coral Edge TPU."""

    name = "tflite"
    formats = ("tflite",)
    description = "TFLite/LiteRT (ai-edge-litert); Coral Edge TPU delegate"
    aliases = ("litert",)
    priority = 40
    precisions = ("fp32", "int8")

    def available(self) -> Availability:
        try:
            _, load_delegate, version = _import_interpreter()
        except BackendUnavailableError as exc:
            return Availability(False, reason=str(exc))
        devices = ["cpu"]
        try:
            _edgetpu_delegate(load_delegate)
            devices.append("edgetpu")
        except DeviceMismatchError:
            pass
        return Availability(True, devices=tuple(devices), version=version)

    def load(
        self,
        artifact: Artifact,
        *,
        device: str = "auto",
        precision: str = "fp32",
        strict: bool = True,
        threads: int | None = None,
        **options: Any,
    ) -> Session:
        """Load a .tflite file; ``device`` is ``cpu``, ``edgetpu`` or ``auto``."""
        interp_cls, load_delegate, _ = _import_interpreter()
        path = self.check_artifact(artifact, strict)  # reads (and validates) the flatbuffer's metadata
        # Walk the whole flatbuffer first: a corrupt file must raise ModelFormatError, never crash LiteRT.
        info = validate_tflite(path)
        delegates = []
        dev = "cpu" if device in ("auto", "cpu") else device
        if info.edgetpu_compiled and device == "auto":
            dev = "edgetpu"
        if dev == "edgetpu":
            try:
                delegates.append(_edgetpu_delegate(load_delegate))
            except DeviceMismatchError as exc:
                if info.edgetpu_compiled:
                    raise DeviceMismatchError(
                        f"{path.name} was compiled by edgetpu_compiler ({EDGETPU_CUSTOM_OP}) and runs "
                        f"only with the Edge TPU delegate, which cannot load here: {exc}. Use the "
                        "uncompiled int8 .tflite on the CPU instead"
                    ) from None
                self.strict_or_warn(strict, str(exc), "falling back to CPU")
                dev = "cpu"
        elif info.edgetpu_compiled:
            raise DeviceMismatchError(
                f"{path.name} was compiled by edgetpu_compiler ({EDGETPU_CUSTOM_OP}); it runs only on "
                "device='edgetpu' with libedgetpu installed, not on the CPU"
            )
        elif dev != "cpu":
            raise DeviceMismatchError(f"the tflite backend has no device {device!r} (cpu, edgetpu)")
        try:
            interp = interp_cls(
                model_path=str(path), num_threads=threads, experimental_delegates=delegates or None
            )
            interp.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            raise ModelFormatError(f"LiteRT cannot load {path.name}: {exc}") from None
        s = TFLiteSession(interp, dev, threads)
        s.precision = self.precision_that_runs(precision, s.precision, strict, path.name)
        return s
