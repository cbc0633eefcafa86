"""Entry point: registers the built-in model cards and conversion recipes."""

from __future__ import annotations

from typing import Any

from facesdk.plugins import hookimpl

from . import CARDS_DIR


@hookimpl
def facesdk_model_cards() -> list[Any]:
    return [CARDS_DIR]


@hookimpl
def facesdk_recipes() -> dict[str, Any]:
    from .dlib_resnet import recipe as dlib_resnet_to_onnx
    from .tflite_to_onnx import tflite_to_onnx

    return {"tflite-to-onnx": tflite_to_onnx, "dlib_resnet_to_onnx": dlib_resnet_to_onnx}
