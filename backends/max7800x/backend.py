"""Backends ``max78000`` and ``max78002``: ai8x networks on the bit-exact emulator (or a board).

An ``ai8x`` artifact is a quantised ``.pth.tar`` checkpoint plus its ai8x-synthesis network
YAML. The YAML is found, in order: ``yaml=`` load option (a path); the card's
``params.yaml`` file name next to the checkpoint; the same name in
``$FACESDK_AI8X_DIR/networks``.

Devices: ``emulator`` (also ``auto``/``cpu``): the NumPy emulator, bit-exact with ADI's
izer simulator. ``serial`` / ``serial:<port>`` (or ``port=``): a board running the facesdk
firmware, through ``facesdk_backends.max7800x.board.driver``. Strict mode refuses
a model that does not fit the chip and ``serial`` without a port.

Precision is always ``ai8x`` (8-bit integer weights/activations, the chip's arithmetic);
``fp32`` (the pipeline default, meaning "the model's native precision"), ``int8`` and
``ai8x`` are accepted, other requests raise DeviceMismatchError in strict mode.
Sessions take int8-range integer ``[N,C,H,W]`` (or ``[C,H,W]``) tensors and return the
output layers as int8 (int64 for 32-bit wide outputs) with a batch axis.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from facesdk.backend import Artifact, Availability, Backend, Session, TensorSpec
from facesdk.errors import BackendUnavailableError, ConfigError, DeviceMismatchError, ModelNotFoundError

if TYPE_CHECKING:  # the emulator (and yaml) load on first use, not at plugin discovery
    from .accel.emulator import Model
    from .accel.fit import FitReport

__all__ = ["Max78000Backend", "Max78002Backend", "Max7800xSession", "find_yaml", "AI8X_DIR_ENV"]

log = logging.getLogger(__name__)

#: Environment variable naming a directory with ``trained/`` checkpoints and ``networks/`` YAMLs.
AI8X_DIR_ENV = "FACESDK_AI8X_DIR"


def find_yaml(artifact: Artifact, yaml_path: str | os.PathLike | None = None) -> Path:
    """Locate the network YAML of an ai8x artifact (see module docs)."""
    if yaml_path is not None:
        p = Path(yaml_path)
        if not p.is_file():
            raise ModelNotFoundError(f"network YAML not found: {p}")
        return p
    name = None
    if artifact.card is not None:
        name = artifact.card.params.get("yaml")
    if not name:
        raise ConfigError(f"{artifact.path.name}: pass yaml= (the ai8x network YAML) to load it")
    from facesdk.zoo import _check_name, _verify

    _check_name(name, "network YAML")  # a card field: one plain file name, never a path
    shas = {
        f: sha
        for a in (artifact.card.artifacts if artifact.card is not None else ())
        for f, sha in a.companions
    }
    cands = [artifact.path.parent / name]
    env = os.environ.get(AI8X_DIR_ENV)
    if env:
        cands += [Path(env) / "networks" / name, Path(env) / name]
    for c in cands:
        if c.is_file():
            if name in shas:  # the card pins the YAML's bytes: a tampered copy is refused
                _verify(c, shas[name], f"network YAML of {artifact.card.id!r}")
            return c
    raise ModelNotFoundError(
        f"network YAML {name!r} not found next to {artifact.path.name}"
        + (f" nor in ${AI8X_DIR_ENV}/networks" if env else f"; set ${AI8X_DIR_ENV}")
    )


class Max7800xSession(Session):
    """An ai8x network on the emulator."""

    precision = "ai8x"

    def __init__(self, model: Model, backend: str, fit: FitReport) -> None:
        self.model = model
        self.backend = backend
        self.device = "emulator"
        self.fit = fit
        self.max_batch = None
        c, *hw = model.input_shape
        self.inputs = [TensorSpec("input", (None, c, *hw), "int8")]
        _, shapes = model.shapes()
        self.outputs = []
        for i in model.output_layers:
            l = model.layers[i]
            name = l.name or (l.module.rsplit(".", 1)[-1] if l.module else f"L{i}")
            self.outputs.append(
                TensorSpec(name, (None, *shapes[i]), "int8" if l.output_width == 8 else "int64")
            )

    def run(self, batch: np.ndarray) -> list[np.ndarray]:
        self.check_open()
        b = np.asarray(batch)
        if b.ndim == len(self.model.input_shape):
            b = b[None]
        return self.model.run(b)

    def run_layers(self, batch: np.ndarray) -> list[np.ndarray]:
        """Every layer's output (debugging, parity checks)."""
        return self.model.run_all(np.asarray(batch))

    def describe(self) -> dict[str, Any]:
        d = super().describe()
        d.update(
            chip=self.fit.chip.name,
            arch=self.model.arch,
            fits=self.fit.fits,
            weight_bytes=self.fit.weight_bytes,
        )
        return d


class _Max7800xBackend(Backend):
    chip: ClassVar[str] = "max78000"
    formats = ("ai8x",)

    def available(self) -> Availability:
        devices = ["emulator"]
        try:
            import serial  # noqa: F401

            devices.append("serial")
        except ImportError:
            pass
        return Availability(True, tuple(devices), version="emulator")

    def load(
        self,
        artifact: Artifact,
        *,
        device: str = "auto",
        precision: str = "fp32",
        strict: bool = True,
        **options: Any,
    ) -> Session:
        if artifact.format != "ai8x":
            raise ConfigError(f"backend {self.name} runs ai8x checkpoints, not {artifact.format!r}")
        if precision not in ("fp32", "int8", "ai8x", "auto") and strict:
            raise DeviceMismatchError(
                f"{self.name} computes in ai8x 8-bit integer arithmetic; precision {precision!r} cannot run"
            )
        raw_dev = device or "auto"
        dev = raw_dev.lower()
        port = options.pop("port", None)
        if dev.startswith("serial"):
            port = raw_dev.partition(":")[2] or port  # a port name is case-sensitive (/dev/ttyACM0)
            if not port:
                raise DeviceMismatchError(
                    f"{self.name}: device 'serial' needs a port (device='serial:/dev/ttyUSB0')"
                )
        elif dev not in ("auto", "emulator", "cpu"):
            raise DeviceMismatchError(f"{self.name} runs on 'emulator' or 'serial:<port>', not {device!r}")
        from .accel.emulator import Model, load_model
        from .accel.fit import check_fit

        if Path(artifact.path).suffix.lower() == ".npz":  # a network imported from a synthesized C project
            from .accel.network import load_network

            options.pop("yaml", None)
            options.pop("input_shape", None)
            model = Model(
                load_network(artifact.path),
                chip=self.chip,
                avg_pool_rounding=bool(options.pop("avg_pool_rounding", False)),
                threads=options.pop("threads", 1),
            )
        else:
            yaml_path = find_yaml(artifact, options.pop("yaml", None))
            shape = options.pop("input_shape", None)
            if shape is None and artifact.card is not None and artifact.card.params.get("input_shape"):
                shape = tuple(int(v) for v in artifact.card.params["input_shape"])
            model = load_model(
                artifact.path,
                yaml_path,
                chip=self.chip,
                input_shape=shape,
                avg_pool_rounding=bool(options.pop("avg_pool_rounding", False)),
                threads=options.pop("threads", 1),
            )
        fit = check_fit(model)
        if not fit.fits:
            msg = f"{model.arch} does not fit {fit.chip.name}: " + "; ".join(fit.problems[:3])
            self.strict_or_warn(strict, msg, "emulating anyway")
        if port:
            try:
                from .board import driver  # the serial link to a board
            except ImportError as exc:
                raise BackendUnavailableError(
                    f"{self.name}: the serial driver is not available: {exc}"
                ) from None
            opener = getattr(driver, "open_session", None)
            if opener is None:
                raise BackendUnavailableError(f"{self.name}: the serial driver has no open_session()")
            return opener(model=model, port=port, backend=self.name, fit=fit, **options)
        if options:
            log.debug("%s: ignoring load options %s", self.name, sorted(options))
        return Max7800xSession(model, self.name, fit)


class Max78000Backend(_Max7800xBackend):
    """MAX78000 (ai85): 64 processors, 442,368 B weights, 512 KiB data, 32 layers."""

    name = "max78000"
    chip = "max78000"
    description = "Analog Devices MAX78000 CNN accelerator (bit-exact emulator; serial board)"


class Max78002Backend(_Max7800xBackend):
    """MAX78002 (ai87): 64 processors, 2,396,160 B weights, 1,280 KiB data, 128 layers."""

    name = "max78002"
    chip = "max78002"
    description = "Analog Devices MAX78002 CNN accelerator (bit-exact emulator; serial board)"
