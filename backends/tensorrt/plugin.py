"""Entry point of the TensorRT backend."""

from facesdk.plugins import hookimpl


@hookimpl
def facesdk_backends() -> list[type]:
    from .backend import TensorRTBackend

    return [TensorRTBackend]
