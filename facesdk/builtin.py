"""The core's own plugin: built-in detector families, aligners and landmarkers.

These are registered through the same hooks a third-party distribution implements
(:mod:`facesdk.plugins`), only without an entry point: the core is always installed, so
:func:`facesdk.plugins.get_plugin_manager` registers this module first and installed
plugins after it (a plugin may therefore override a built-in name). Each hook imports its
modules when it is called, so creating the plugin manager imports none of them.

A new built-in detector family is one module in :mod:`facesdk.detect` (a
:class:`~facesdk.detect.FaceDetector` subclass with ``family = "name"``) plus one line below.
"""

from __future__ import annotations

from typing import Any

from .plugins import hookimpl

__all__ = ["facesdk_detector_families", "facesdk_aligners", "facesdk_landmarkers"]


@hookimpl
def facesdk_detector_families() -> list[type]:
    """Decoders of the detector families the core ships."""
    from .detect.blazeface import BlazeFaceDetector
    from .detect.mtcnn import MTCNNDetector
    from .detect.ssd import SSDDetectionOutputDetector
    from .detect.tinierssd import TinierSSDDetector
    from .detect.ultraface import UltraFaceDetector
    from .detect.yunet import YuNetDetector

    return [
        YuNetDetector, UltraFaceDetector, SSDDetectionOutputDetector, TinierSSDDetector, BlazeFaceDetector,
        MTCNNDetector,
    ]


@hookimpl
def facesdk_aligners() -> dict[str, Any]:
    """Aligners that are algorithms rather than a 5-point template (templates are card data)."""
    from .detect.tinierssd import (
        ai8x_faceid112_crop,
        ai8x_faceid112_crop_firmware,
        ai8x_faceid_crop,
        ai8x_faceid_crop_firmware,
    )
    from .dlib.crop import dlib5_aligner, dlib150_aligner

    return {
        "dlib150": dlib150_aligner,
        "dlib150:dlib5": dlib5_aligner,
        "ai8x-faceid": ai8x_faceid_crop,
        "ai8x-faceid-firmware": ai8x_faceid_crop_firmware,
        "ai8x-faceid-112": ai8x_faceid112_crop,
        "ai8x-faceid-112-firmware": ai8x_faceid112_crop_firmware,
    }


@hookimpl
def facesdk_landmarkers() -> dict[str, Any]:
    """Landmarker families: ``factory(card) -> Landmarker``."""
    from .landmarks import BridgeLandmarker, ShapePredictorLandmarker

    return {"bridge": BridgeLandmarker, "dlib-sp5": ShapePredictorLandmarker}
