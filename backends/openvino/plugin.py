"""Entry point of the OpenVINO backend."""

from facesdk.plugins import hookimpl


@hookimpl
def facesdk_backends() -> list[type]:
    from .backend import OpenVINOBackend

    return [OpenVINOBackend]
