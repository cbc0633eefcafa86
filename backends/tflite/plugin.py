"""Entry point of the TFLite / LiteRT backend."""

from facesdk.plugins import hookimpl


@hookimpl
def facesdk_backends() -> list[type]:
    from .backend import TFLiteBackend

    return [TFLiteBackend]
