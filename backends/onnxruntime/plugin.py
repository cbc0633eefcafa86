"""Entry point of the ONNX Runtime backend."""

from facesdk.plugins import hookimpl


@hookimpl
def facesdk_backends() -> list[type]:
    from .backend import OnnxRuntimeBackend

    return [OnnxRuntimeBackend]
