"""TFLite / LiteRT backend (ai-edge-litert), with the Coral Edge TPU delegate."""

from .backend import TFLiteBackend, TFLiteSession

__all__ = ["TFLiteBackend", "TFLiteSession"]
