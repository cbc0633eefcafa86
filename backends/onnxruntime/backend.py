"""ONNX Runtime backend: any provider onnxruntime reports, thread settings, dynamic batch.

Devices map to execution providers: ``cpu`` → CPUExecutionProvider,
``cuda[:N]`` → CUDAExecutionProvider, ``tensorrt`` → TensorrtExecutionProvider,
``openvino`` → OpenVINOExecutionProvider, ``coreml``, ``dml``. ``auto`` picks the
first accelerated provider available, else CPU.

Threads: ``InferenceSession.run`` may be called from several threads at once (ONNX Runtime
documents sessions as thread-safe for concurrent ``Run`` calls), so a session is shared as is.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import numpy as np

from facesdk.backend import Artifact, Availability, Backend, Session, TensorSpec
from facesdk.errors import BackendError, BackendUnavailableError, DeviceMismatchError, ModelFormatError
from facesdk.precision import normalize_precision, onnx_precision

log = logging.getLogger(__name__)

_DEVICE_PROVIDERS = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
    "openvino": "OpenVINOExecutionProvider",
    "coreml": "CoreMLExecutionProvider",
    "dml": "DmlExecutionProvider",
    "rocm": "ROCMExecutionProvider",
}
_PROVIDER_DEVICES = {v: k for k, v in _DEVICE_PROVIDERS.items()}
_AUTO_ORDER = ["cuda", "rocm", "coreml", "dml", "cpu"]

_ORT_TYPES = {
    "tensor(float)": "float32",
    "tensor(float16)": "float16",
    "tensor(double)": "float64",
    "tensor(uint8)": "uint8",
    "tensor(int8)": "int8",
    "tensor(int32)": "int32",
    "tensor(int64)": "int64",
}


def _import_ort() -> Any:
    try:
        import onnxruntime as ort
    except ImportError as exc:
        raise BackendUnavailableError(
            "onnxruntime is not installed (pip install 'facesdk[onnxruntime]')"
        ) from exc
    return ort


def _spec(arg: Any) -> TensorSpec:
    shape = tuple(d if isinstance(d, int) else None for d in arg.shape)
    return TensorSpec(arg.name, shape, _ORT_TYPES.get(arg.type, arg.type))


class OnnxRuntimeSession(Session):
    """A loaded ONNX model on one execution provider."""

    backend = "onnxruntime"

    def __init__(self, sess: Any, device: str, precision: str) -> None:
        self._sess = sess
        self.device = device
        self.precision = precision
        self.inputs = [_spec(a) for a in sess.get_inputs()]
        self.outputs = [_spec(a) for a in sess.get_outputs()]
        b = self.inputs[0].shape[0] if self.inputs and self.inputs[0].shape else None
        self.max_batch = b if isinstance(b, int) else None
        self.providers = list(sess.get_providers())

    def run(self, batch: np.ndarray) -> list[np.ndarray]:
        self.check_open()
        want = self.inputs[0].dtype
        if str(batch.dtype) != want:
            batch = batch.astype(want, copy=False)
        try:
            return list(self._sess.run(None, {self.inputs[0].name: batch}))
        except Exception as exc:  # onnxruntime raises its own exception types
            raise BackendError(f"onnxruntime failed to run the model: {exc}") from None

    def release(self) -> None:
        self._sess = None


class OnnxRuntimeBackend(Backend):
    """Runs ONNX models with ONNX Runtime."""

    name = "onnxruntime"
    formats = ("onnx",)
    description = "ONNX Runtime (CPU and any provider onnxruntime reports)"
    aliases = ("ort",)
    priority = 10
    precisions = ("fp32", "fp16", "int8")

    def available(self) -> Availability:
        try:
            ort = _import_ort()
        except BackendUnavailableError as exc:
            return Availability(False, reason=str(exc))
        # Azure EP is a remote-inference shim, not a device.
        provs = [p for p in ort.get_available_providers() if p != "AzureExecutionProvider"]
        devices = tuple(_PROVIDER_DEVICES.get(p, p) for p in provs)
        return Availability(True, devices=devices, version=ort.__version__)

    def load(
        self,
        artifact: Artifact,
        *,
        device: str = "auto",
        precision: str = "fp32",
        strict: bool = True,
        threads: int | None = None,
        inter_op_threads: int | None = None,
        graph_optimization: str = "all",
        session_options: dict[str, Any] | None = None,
        session_config: dict[str, str] | None = None,
        spinning: bool | None = None,
        **options: Any,
    ) -> Session:
        """Load an ONNX file.

        ``threads`` sets intra-op threads; ``graph_optimization`` is one of
        ``disable``, ``basic``, ``extended``, ``all``; ``session_options``
        sets any other ``onnxruntime.SessionOptions`` attribute; ``session_config`` adds
        session configuration entries (``SessionOptions.add_session_config_entry``).
        ``spinning``: whether idle intra-op threads busy-wait for work (ONNX Runtime's
        ``session.intra_op.allow_spinning``, on by default in ONNX Runtime). facesdk turns it **off**
        unless asked (``spinning=True`` or ``FACESDK_ORT_SPINNING=1``): the streaming pipeline runs
        several sessions from several threads, and their spinning threads take the cores from each
        other and from the decode/align threads (on the 2-core benchmark machine under load, MTCNN
        ran 6–8× slower with spinning on; see benchmarks/RESULTS.md, "Throughput").
        """
        ort = _import_ort()
        path = self.check_artifact(artifact, strict)
        precision = normalize_precision(precision)
        self.check_precision(precision)
        avail = ort.get_available_providers()
        dev_name, _, dev_idx = device.partition(":")
        if device == "auto":
            dev_name = next(d for d in _AUTO_ORDER if _DEVICE_PROVIDERS[d] in avail)
        provider = _DEVICE_PROVIDERS.get(dev_name)
        if provider is None:
            raise DeviceMismatchError(f"onnxruntime does not know device {device!r}")
        if provider not in avail:
            msg = f"{provider} is not available here (onnxruntime has: {', '.join(avail)})"
            self.strict_or_warn(strict, msg, "falling back to CPU")
            provider, dev_name, dev_idx = "CPUExecutionProvider", "cpu", ""
        so = ort.SessionOptions()
        if threads:
            so.intra_op_num_threads = int(threads)
        if inter_op_threads:
            so.inter_op_num_threads = int(inter_op_threads)
        levels = {
            "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
            "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
            "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
            "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
        }
        so.graph_optimization_level = levels[graph_optimization]
        so.log_severity_level = 3
        for k, v in (session_options or {}).items():
            setattr(so, k, v)
        if spinning is None:
            spinning = os.environ.get("FACESDK_ORT_SPINNING", "0") == "1"
        config = dict(session_config or {})
        config.setdefault("session.intra_op.allow_spinning", "1" if spinning else "0")
        config.setdefault("session.inter_op.allow_spinning", "1" if spinning else "0")
        for k, v in config.items():
            so.add_session_config_entry(str(k), str(v))
        prov_opts: dict[str, Any] = {}
        if dev_idx:
            prov_opts["device_id"] = int(dev_idx)
        providers: list[Any] = [(provider, prov_opts)]
        if provider != "CPUExecutionProvider":
            providers.append("CPUExecutionProvider")
        try:
            sess = ort.InferenceSession(str(path), sess_options=so, providers=providers)
        except Exception as exc:
            raise ModelFormatError(f"onnxruntime cannot load {path.name}: {exc}") from None
        running = sess.get_providers()[0]
        if running != provider:
            self.strict_or_warn(strict, f"asked for {provider} but onnxruntime runs {running}")
        real_dev = _PROVIDER_DEVICES.get(running, running)
        if dev_idx and real_dev != "cpu":
            real_dev = f"{real_dev}:{dev_idx}"
        # The precision is what the graph computes in (QDQ/integer ops → int8, float16 weights → fp16),
        # never what was asked for: an fp32 file asked to run "int8" is a mismatch, not a relabel.
        real_prec = self.precision_that_runs(precision, onnx_precision(path), strict, path.name)
        return OnnxRuntimeSession(sess, real_dev, real_prec)
