"""ONNX Runtime backend."""

from .backend import OnnxRuntimeBackend, OnnxRuntimeSession

__all__ = ["OnnxRuntimeBackend", "OnnxRuntimeSession"]
