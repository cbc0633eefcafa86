"""Built-in plugin of the benchmark harness: the ``bench`` command and the lfw/folder datasets."""

from __future__ import annotations

from typing import Any

from facesdk.plugins import hookimpl

__all__ = ["facesdk_cli", "facesdk_datasets", "facesdk_bench_stages"]


@hookimpl
def facesdk_cli(subparsers: Any) -> None:
    """Add ``facesdk bench`` and ``facesdk calibrate``."""
    from .calibrate import register as register_calibrate
    from .cli import register

    register(subparsers)
    register_calibrate(subparsers)


@hookimpl
def facesdk_datasets() -> dict[str, Any]:
    """The built-in dataset loaders."""
    from .datasets import FolderDataset, LFWDataset

    return {"lfw": LFWDataset, "folder": FolderDataset}


@hookimpl
def facesdk_bench_stages() -> dict[str, Any]:
    """The built-in benchmark stages (:mod:`facesdk_bench.stages`)."""
    from .stages import BUILTIN_STAGES

    return dict(BUILTIN_STAGES)
