"""facesdk: one face-recognition pipeline (detect → align → embed → match) on many inference engines.

``import facesdk`` imports no inference engine; backends are plugins loaded on use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = [
    "FaceRecognizer",
    "Face",
    "Verification",
    "Gallery",
    "Match",
    "Detection",
    "load_image",
    "list_backends",
    "get_backend",
    "register_plugin",
    "errors",
    "zoo",
    "__version__",
]

_LAZY = {
    "FaceRecognizer": ("facesdk.pipeline", "FaceRecognizer"),
    "Face": ("facesdk.pipeline", "Face"),
    "Verification": ("facesdk.pipeline", "Verification"),
    "Gallery": ("facesdk.gallery", "Gallery"),
    "Match": ("facesdk.gallery", "Match"),
    "Detection": ("facesdk.detect", "Detection"),
    "load_image": ("facesdk.image", "load_image"),
    "list_backends": ("facesdk.plugins", "list_backends"),
    "get_backend": ("facesdk.plugins", "get_backend"),
    "register_plugin": ("facesdk.plugins", "register_plugin"),
    "errors": ("facesdk.errors", None),
    "zoo": ("facesdk.zoo", None),
}

if TYPE_CHECKING:  # pragma: no cover
    from . import errors, zoo
    from .detect import Detection
    from .gallery import Gallery, Match
    from .image import load_image
    from .pipeline import Face, FaceRecognizer, Verification
    from .plugins import get_backend, list_backends, register_plugin


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        mod, attr = _LAZY[name]
        m = importlib.import_module(mod)
        value = m if attr is None else getattr(m, attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'facesdk' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(list(globals()) + list(_LAZY))
