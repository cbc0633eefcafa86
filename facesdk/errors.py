"""Typed exceptions raised by facesdk.

Every error the SDK raises on bad input derives from :class:`FaceSDKError`, so an
application can catch one class; the CLI turns them into a one-line message and a
non-zero exit code.
"""

from __future__ import annotations

__all__ = [
    "FaceSDKError",
    "ImageError",
    "ImageDecodeError",
    "ImageTooLargeError",
    "NoFaceError",
    "ModelError",
    "ModelFormatError",
    "ModelNotFoundError",
    "ChecksumError",
    "DownloadError",
    "BackendError",
    "BackendUnavailableError",
    "DeviceMismatchError",
    "GalleryError",
    "IncompatibleGalleryError",
    "GalleryConflictError",
    "GalleryLockedError",
    "ConfigError",
    "DeviceLinkError",
    "LinkTimeoutError",
    "FrameError",
    "ConversionError",
]


class FaceSDKError(Exception):
    """Base class of every error facesdk raises on purpose."""

    exit_code: int = 1


class ConfigError(FaceSDKError, ValueError):
    """An argument or configuration value is invalid."""

    exit_code = 2


class ImageError(FaceSDKError):
    """An image could not be used."""

    exit_code = 3


class ImageDecodeError(ImageError):
    """The bytes are not a decodable image (corrupt, truncated, unknown format)."""


class ImageTooLargeError(ImageError):
    """The image has more pixels than the configured limit (decompression-bomb guard)."""


class NoFaceError(FaceSDKError):
    """No face was found where one was required (e.g. enrollment, verification)."""

    exit_code = 4


class ModelError(FaceSDKError):
    """A model could not be found, fetched, verified or parsed."""

    exit_code = 5


class ModelNotFoundError(ModelError):
    """No card with that id, or no source of the card could provide the file."""


class ModelFormatError(ModelError):
    """The model file is not of the expected format or is corrupt."""


class ChecksumError(ModelError):
    """A file's sha256 differs from the one on its model card (tampered or truncated download)."""


class DownloadError(ModelError):
    """A download failed (network error, HTTP error)."""


class ConversionError(ModelError):
    """A model conversion recipe failed."""


class BackendError(FaceSDKError):
    """A backend failed to load or run a model."""

    exit_code = 6


class BackendUnavailableError(BackendError):
    """The backend is unknown or its engine is not installed / not usable here."""


class DeviceMismatchError(BackendError):
    """Strict mode: the requested device/provider/precision is not the one that would run."""


class GalleryError(FaceSDKError):
    """A gallery file is unreadable or an operation on it is invalid."""

    exit_code = 7


class IncompatibleGalleryError(GalleryError):
    """The gallery's embeddings come from another model (or size) than the recogniser's."""


class GalleryConflictError(GalleryError):
    """Another process changed the gallery in a way this one's pending changes cannot be merged into
    (e.g. both renamed the same identity); nothing was written."""


class GalleryLockedError(GalleryError):
    """The gallery file stayed locked by another process longer than the lock timeout."""


class DeviceLinkError(FaceSDKError):
    """A link to a hardware device (serial port) failed."""

    exit_code = 8


class LinkTimeoutError(DeviceLinkError):
    """The device did not answer in time (silent port, wrong device, dropped link)."""


class FrameError(DeviceLinkError):
    """A received frame is malformed (bad sync, length or CRC)."""
