"""OpenVINO backend."""

from .backend import OpenVINOBackend, OpenVINOSession

__all__ = ["OpenVINOBackend", "OpenVINOSession"]
