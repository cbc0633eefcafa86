"""A tiny third-party facesdk backend used by the tests: runs linear models stored as .npz."""

from __future__ import annotations

from typing import Any

import numpy as np

from facesdk.backend import Artifact, Availability, Backend, Session, TensorSpec
from facesdk.errors import DeviceMismatchError, ModelFormatError
from facesdk.plugins import hookimpl


class ToySession(Session):
    backend = "toy"

    def __init__(self, w: np.ndarray) -> None:
        self.w = w
        self.device = "cpu"
        self.precision = "fp32"
        self.inputs = [TensorSpec("x", (None, w.shape[0]))]
        self.outputs = [TensorSpec("y", (None, w.shape[1]))]

    def run(self, batch: np.ndarray) -> list[np.ndarray]:
        return [batch.reshape(len(batch), -1).astype(np.float32) @ self.w]


class ToyBackend(Backend):
    name = "toy"
    formats = ("npz-linear",)

    def available(self) -> Availability:
        return Availability(True, devices=("cpu",), version="0.1")

    def load(self, artifact: Artifact, *, device: str = "auto", precision: str = "fp32",
             strict: bool = True, **options: Any) -> Session:
        if device not in ("auto", "cpu"):
            raise DeviceMismatchError(f"toy runs on cpu only, not {device}")
        try:
            with np.load(artifact.path, allow_pickle=False) as z:
                return ToySession(np.asarray(z["w"], np.float32))
        except (OSError, KeyError, ValueError) as exc:
            raise ModelFormatError(f"not a toy model: {exc}") from None


@hookimpl
def facesdk_backends() -> list[type]:
    return [ToyBackend]
