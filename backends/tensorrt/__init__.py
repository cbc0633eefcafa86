"""TensorRT backend (NVIDIA GPUs). Import-safe without TensorRT or a GPU."""

from .backend import TensorRTBackend

__all__ = ["TensorRTBackend"]
