"""OpenVINO backend: IR (.xml/.bin) and ONNX models on CPU, GPU or NPU.

Precision is an inference hint (``fp32`` → f32, ``fp16`` → f16, ``bf16``);
the session reports the precision OpenVINO says it uses, and strict mode raises
when that differs from the request. ``int8`` needs a quantised model (NNCF IR
with FakeQuantize nodes, or an ONNX QDQ model); such a model reports ``int8``.

Threads: one compiled model serves any number of threads. An ``InferRequest`` runs one
inference at a time ("Infer Request is busy" otherwise), so a session keeps a pool of
requests: each ``run`` takes a free one (creating one when all are busy) and gives it back.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import numpy as np

from facesdk.backend import Artifact, Availability, Backend, Session, TensorSpec
from facesdk.errors import BackendError, BackendUnavailableError, ModelFormatError
from facesdk.precision import normalize_precision

log = logging.getLogger(__name__)

_PRECISION_HINTS = {"fp32": "f32", "fp16": "f16", "bf16": "bf16"}
_HINT_PRECISIONS = {"f32": "fp32", "f16": "fp16", "bf16": "bf16"}


def _precision_name(hint: Any) -> str:
    """Normalise OpenVINO's element type (an ov.Type or a string) to fp32/fp16/bf16."""
    text = str(hint).lower()
    if "bf16" in text or "bfloat16" in text:
        return "bf16"
    if "f16" in text or "float16" in text:
        return "fp16"
    if "f32" in text or "float32" in text:
        return "fp32"
    return _HINT_PRECISIONS.get(text, text)


def _is_quantised(model: Any) -> bool:
    """True when the model holds FakeQuantize nodes (NNCF PTQ / POT IR, or ONNX QDQ as read by OpenVINO)."""
    return any(op.get_type_name() == "FakeQuantize" for op in model.get_ops())


def _import_ov() -> Any:
    try:
        import openvino as ov
    except ImportError as exc:
        raise BackendUnavailableError("openvino is not installed (pip install 'facesdk[openvino]')") from exc
    return ov


def _spec(port: Any, model_port: Any) -> TensorSpec:
    """Spec of a compiled port, named after the source model's port (compiling may rename it)."""
    ps = port.get_partial_shape()
    shape = tuple(int(d.get_length()) if d.is_static else None for d in ps)
    names = sorted(model_port.get_names())
    return TensorSpec(names[0] if names else "", shape, np.dtype(port.get_element_type().to_dtype()).name)


class OpenVINOSession(Session):
    """A compiled OpenVINO model."""

    backend = "openvino"

    def __init__(self, compiled: Any, model: Any, device: str, precision: str) -> None:
        self._compiled = compiled
        self._free = [compiled.create_infer_request()]  # idle infer requests (one per concurrent caller)
        self._pool_lock = threading.Lock()
        self.device = device
        self.precision = precision
        self.inputs = [_spec(p, m) for p, m in zip(compiled.inputs, model.inputs)]
        self.outputs = [_spec(p, m) for p, m in zip(compiled.outputs, model.outputs)]
        b = self.inputs[0].shape[0] if self.inputs[0].shape else None
        self.max_batch = b if isinstance(b, int) else None

    def run(self, batch: np.ndarray) -> list[np.ndarray]:
        self.check_open()
        compiled = self._compiled
        with self._pool_lock:
            req = self._free.pop() if self._free else None
        if req is None:
            req = compiled.create_infer_request()
        try:
            res = req.infer({0: np.ascontiguousarray(batch, dtype=self.inputs[0].dtype)})
            return [np.asarray(res[p]).copy() for p in compiled.outputs]
        except RuntimeError as exc:
            raise BackendError(f"openvino failed to run the model: {exc}") from None
        finally:
            with self._pool_lock:
                self._free.append(req)

    def release(self) -> None:
        self._compiled = None
        with self._pool_lock:
            self._free = []


class OpenVINOBackend(Backend):
    """Intel OpenVINO runtime."""

    name = "openvino"
    formats = ("openvino-ir", "onnx")
    description = "OpenVINO (CPU, GPU, NPU); reads IR and ONNX"
    aliases = ("ov",)
    priority = 20
    precisions = (*_PRECISION_HINTS, "int8")

    def available(self) -> Availability:
        try:
            ov = _import_ov()
            devices = tuple(d.lower() for d in ov.Core().available_devices)
        except BackendUnavailableError as exc:
            return Availability(False, reason=str(exc))
        except RuntimeError as exc:
            return Availability(False, reason=f"openvino failed to start: {exc}")
        return Availability(True, devices=devices, version=ov.__version__.split("-")[0])

    def load(
        self,
        artifact: Artifact,
        *,
        device: str = "auto",
        precision: str = "fp32",
        strict: bool = True,
        threads: int | None = None,
        dynamic_batch: bool = True,
        **options: Any,
    ) -> Session:
        """Compile an IR/ONNX model for ``device`` (cpu, gpu[.N], npu, auto → cpu)."""
        ov = _import_ov()
        path = self.check_artifact(artifact, strict)
        core = ov.Core()
        avail = [d.lower() for d in core.available_devices]
        dev = "cpu" if device == "auto" else device.lower()
        if dev.split(".")[0] not in {a.split(".")[0] for a in avail}:
            msg = f"OpenVINO device {device!r} is not available (have: {', '.join(avail)})"
            self.strict_or_warn(strict, msg, "falling back to CPU")
            dev = "cpu"
        precision = normalize_precision(precision)
        self.check_precision(precision)  # int8 needs a quantised model (FakeQuantize nodes)
        try:
            model = core.read_model(str(path))
        except RuntimeError as exc:
            raise ModelFormatError(f"openvino cannot read {path.name}: {exc}") from None
        quantised = _is_quantised(model)
        # A quantised model (FakeQuantize from NNCF, or ONNX QDQ) runs int8 whatever the hint; the hint then
        # only chooses the precision of the layers left in float, pinned to f32 for reproducible numbers.
        if quantised:
            want_hint = "f32"
            real_base = "int8"
            precision = self.precision_that_runs(precision, "int8", strict, path.name)
        elif precision == "int8":
            self.precision_that_runs(precision, "fp32", strict, f"{path.name} (not quantised)")
            precision, want_hint, real_base = "fp32", "f32", ""
        else:
            want_hint, real_base = _PRECISION_HINTS[precision], ""
        if dynamic_batch and len(model.inputs) == 1:
            ps = model.inputs[0].get_partial_shape()
            if ps.rank.is_static and len(ps) == 4 and ps[0].is_static:
                try:
                    new = ov.PartialShape([-1] + [d for d in list(ps)[1:]])
                    model.reshape({model.inputs[0]: new})
                except RuntimeError:
                    log.debug("model %s keeps its fixed batch", path.name)
        # "fp32" pins f32: OpenVINO would otherwise run bf16 silently on CPUs that have it.
        config: dict[str, Any] = {"INFERENCE_PRECISION_HINT": want_hint}
        if threads:
            config["INFERENCE_NUM_THREADS"] = int(threads)
        try:
            compiled = core.compile_model(model, dev.upper(), config)
        except RuntimeError as exc:
            raise BackendError(f"openvino cannot compile {path.name} for {dev}: {exc}") from None
        try:
            hint = compiled.get_property("INFERENCE_PRECISION_HINT")
        except RuntimeError:
            hint = want_hint
        real = real_base or _precision_name(hint)
        if real != precision:
            self.strict_or_warn(strict, f"asked OpenVINO {dev} for {precision} but it runs {real}")
        return OpenVINOSession(compiled, model, dev, real)
