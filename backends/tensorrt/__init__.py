"""TensorRT backend (NVIDIA GPUs). Import-safe without TensorRT or a GPU.

The classes are imported on first use (PEP 562), so loading the entry point
(``.plugin``) during plugin discovery imports nothing else of this package.
"""

from typing import Any

__all__ = ["TensorRTBackend"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from . import backend

        return getattr(backend, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
