"""The Backend contract: what every inference engine plugin implements.

A backend turns input tensors into output tensors, nothing else. Pre- and
post-processing live in the core so that every backend sees the same numbers.

Strict mode: when ``strict=True`` (the default) a backend must raise
:class:`~facesdk.errors.DeviceMismatchError` if the device, provider or precision
that would really run is not the one requested, instead of falling back silently.

The boilerplate every backend shares lives here, once: :meth:`Backend.strict_or_warn`
(the strict-mode rule), :meth:`Backend.check_artifact` (format and file checks),
:meth:`Backend.check_precision`, :meth:`Session.check_open` / :meth:`Session.close`
(the closed-session rule), and the class attributes ``priority`` (order of
``backend="auto"``) and ``aliases`` (other names ``get_backend`` accepts). A new backend
is one short module with a Backend and a Session subclass, plus its entry point.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Sequence

import numpy as np

from .errors import BackendError, ConfigError, DeviceMismatchError, ModelFormatError, ModelNotFoundError

if TYPE_CHECKING:  # pragma: no cover
    from .zoo import ModelCard

__all__ = ["TensorSpec", "Availability", "Artifact", "Backend", "Session", "PRECISIONS"]

log = logging.getLogger(__name__)

#: Precisions a backend may report.
PRECISIONS = ("fp32", "fp16", "bf16", "int8", "ai8x")


@dataclass(frozen=True)
class TensorSpec:
    """Name, shape and dtype of one model input or output.

    ``shape`` entries are ints, or ``None`` for a dynamic dimension.
    """

    name: str
    shape: tuple[int | None, ...]
    dtype: str = "float32"


@dataclass(frozen=True)
class Availability:
    """Whether a backend can run here, on which devices, and why not."""

    available: bool
    devices: tuple[str, ...] = ()
    reason: str | None = None
    version: str | None = None


@dataclass(frozen=True)
class Artifact:
    """A model file in one format, optionally with the card that describes it."""

    path: Path
    format: str
    card: "ModelCard | None" = None
    metadata: dict[str, str] = field(default_factory=dict)
    #: Input layout of this file ("NCHW"/"NHWC"); None means the card's input spec.
    layout: str | None = None

    @classmethod
    def from_path(cls, path: str | Path, format: str | None = None) -> "Artifact":
        """Wrap a file path, guessing the format from its suffix when not given."""
        p = Path(path)
        if not p.exists():
            raise ModelNotFoundError(f"model file not found: {p}")
        return cls(path=p, format=format or guess_format(p))


_SUFFIX_FORMATS = {
    ".onnx": "onnx",
    ".xml": "openvino-ir",
    ".tflite": "tflite",
    ".engine": "trt-engine",
    ".plan": "trt-engine",
    ".tar": "ai8x",
}


def guess_format(path: Path) -> str:
    """Return the artifact format implied by a file suffix."""
    fmt = _SUFFIX_FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise ConfigError(f"cannot tell the model format of {path.name!r}; pass format=")
    return fmt


class Session(ABC):
    """A loaded model, ready to run batches.

    Attributes report what *really* runs: ``device`` (e.g. ``"cpu"``,
    ``"cuda:0"``, ``"edgetpu"``), ``precision`` and ``backend`` name.

    Thread safety (part of the contract): one session may be shared by several threads and
    ``run`` may be called concurrently; a backend whose engine object is single-threaded
    serialises runs itself or keeps one engine handle per concurrent caller (ONNX Runtime:
    shared session; OpenVINO: a pool of infer requests; LiteRT and TensorRT: a lock).
    """

    backend: str
    device: str
    precision: str
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]

    #: Largest batch the model accepts, or ``None`` when the batch is dynamic.
    max_batch: int | None = None
    #: Set by :meth:`close`; :meth:`check_open` refuses to run afterwards.
    closed: bool = False

    @abstractmethod
    def run(self, batch: np.ndarray) -> list[np.ndarray]:
        """Run one batch through the model (first input) and return all outputs.

        Implementations start with :meth:`check_open`.
        """

    def check_open(self) -> None:
        """Raise :class:`~facesdk.errors.BackendError` if the session was closed."""
        if self.closed:
            raise BackendError(f"{getattr(self, 'backend', 'backend')} session is closed")

    def release(self) -> None:
        """Free engine objects (override; called once by :meth:`close`)."""

    def close(self) -> None:
        """Release engine resources. Idempotent."""
        if not self.closed:
            self.closed = True
            self.release()

    def describe(self) -> dict[str, Any]:
        """A JSON-friendly description of what runs."""
        return {
            "backend": self.backend,
            "device": self.device,
            "precision": self.precision,
            "inputs": [(t.name, list(t.shape), t.dtype) for t in self.inputs],
            "outputs": [(t.name, list(t.shape), t.dtype) for t in self.outputs],
        }

    def run_batched(self, batch: np.ndarray) -> list[np.ndarray]:
        """Run a batch of any size, splitting or padding for fixed-batch models."""
        n = batch.shape[0]
        mb = self.max_batch
        if mb is None or n == mb:
            return self.run(batch)
        parts: list[list[np.ndarray]] = []
        for start in range(0, n, mb):
            chunk = batch[start : start + mb]
            k = chunk.shape[0]
            if k < mb:
                pad = np.repeat(chunk[-1:], mb - k, axis=0)
                chunk = np.concatenate([chunk, pad], axis=0)
            outs = self.run(chunk)
            parts.append([o[:k] for o in outs])
        return [np.concatenate([p[i] for p in parts], axis=0) for i in range(len(parts[0]))]

    def __enter__(self) -> "Session":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Backend(ABC):
    """An inference engine plugin.

    Subclasses set ``name`` and ``formats`` and implement :meth:`available`
    and :meth:`load`. :meth:`load` must not import the engine at module import
    time of the plugin; import it lazily so ``facesdk.list_backends()`` is cheap
    and works when the engine is missing.
    """

    name: ClassVar[str]
    formats: ClassVar[tuple[str, ...]]
    #: One line for ``facesdk backends``.
    description: ClassVar[str] = ""
    #: Other names :func:`facesdk.plugins.get_backend` accepts (e.g. ``("ort",)``).
    aliases: ClassVar[tuple[str, ...]] = ()
    #: Order of ``backend="auto"``: the available backend with the lowest priority that runs
    #: one of a card's formats is chosen (ties by name). Third-party backends default to last.
    priority: ClassVar[int] = 100
    #: Precisions :meth:`check_precision` accepts (``None``: any of :data:`PRECISIONS`).
    precisions: ClassVar[tuple[str, ...] | None] = None

    def strict_or_warn(self, strict: bool, message: str, fallback: str | None = None) -> None:
        """The strict-mode rule, once: raise DeviceMismatchError, or log a warning and go on.

        ``fallback`` says what runs instead (e.g. ``"falling back to CPU"``); it is appended
        to the warning so a non-strict fallback is never silent.
        """
        if strict:
            raise DeviceMismatchError(message)
        if fallback:
            log.warning("%s: %s; %s", self.name, message, fallback)
        else:
            log.warning("%s: %s", self.name, message)

    def precision_that_runs(self, requested: str, running: str, strict: bool, what: str = "") -> str:
        """Compare the asked precision with what the loaded artifact/engine computes in; return the latter.

        A difference goes through :meth:`strict_or_warn`: DeviceMismatchError in strict mode, else one
        warning, and the session then reports ``running`` (never the asked-for label).
        """
        if requested != running:
            where = f"{what}: " if what else ""
            self.strict_or_warn(
                strict, f"{where}asked for {requested} but {running} runs", f"running {running}"
            )
        return running

    def check_artifact(self, artifact: Artifact, strict: bool = True) -> Path:
        """Format, file and metadata checks every ``load`` starts with; returns the artifact's path.

        The metadata the file carries (:meth:`read_metadata`) is compared with its card
        (:func:`facesdk.metadata.check_metadata`): a file made for another model, precision or
        source raises ModelFormatError in strict mode and logs a warning otherwise.

        Raises:
            ModelFormatError: the artifact's format is not one of :attr:`formats`, or (strict)
                its metadata contradicts its card.
            ModelNotFoundError: the file does not exist.
        """
        if artifact.format not in self.formats:
            raise ModelFormatError(
                f"backend {self.name!r} runs {', '.join(self.formats)} models, not {artifact.format!r}"
            )
        if not artifact.path.exists():
            raise ModelNotFoundError(f"model file not found: {artifact.path}")
        if artifact.card is not None:
            from .metadata import check_metadata

            spec = next(
                (
                    a
                    for a in artifact.card.artifacts
                    if a.format == artifact.format and a.file == artifact.path.name
                ),
                None,
            )
            meta = self.read_metadata(artifact)
            problems = check_metadata(meta, artifact.card, artifact.format, spec.precision if spec else None)
            if problems:
                msg = f"{artifact.path.name} does not match card {artifact.card.id!r}: " + "; ".join(problems)
                if strict:
                    raise ModelFormatError(msg)
                log.warning("%s: %s (loading it anyway)", self.name, msg)
        return artifact.path

    def read_metadata(self, artifact: Artifact) -> dict[str, str]:
        """What the artifact says about itself (ONNX ``metadata_props``, the TFLite metadata;
        see :mod:`facesdk.metadata`). Backends with their own container override this."""
        from .metadata import read_metadata

        return read_metadata(artifact.path, artifact.format)

    def check_precision(self, precision: str) -> None:
        """Raise DeviceMismatchError for a precision this backend can never run."""
        allowed = self.precisions if self.precisions is not None else PRECISIONS
        if precision not in allowed:
            raise DeviceMismatchError(
                f"backend {self.name!r} cannot run precision {precision!r} (it runs {', '.join(allowed)})"
            )

    @abstractmethod
    def available(self) -> Availability:
        """Report whether the engine is importable and usable, and on which devices."""

    @abstractmethod
    def load(
        self,
        artifact: Artifact,
        *,
        device: str = "auto",
        precision: str = "fp32",
        strict: bool = True,
        **options: Any,
    ) -> Session:
        """Load an artifact and return a Session that runs it."""

    def compile(
        self,
        onnx_model: Artifact,
        *,
        precision: str = "fp32",
        calibration: Sequence[np.ndarray] | None = None,
        out_dir: Path | None = None,
    ) -> Artifact:
        """Produce this backend's native artifact from an ONNX model (optional)."""
        raise BackendError(f"backend {self.name!r} cannot compile models")

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"
