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
    from .quantize import onnx_int8_qdq, onnx_to_tflite, onnx_to_tflite_int8, openvino_int8_nncf
    from .tflite_to_onnx import tflite_to_onnx

    return {
        "tflite-to-onnx": tflite_to_onnx, "dlib_resnet_to_onnx": dlib_resnet_to_onnx,
        "onnx_int8_qdq": onnx_int8_qdq, "openvino_int8_nncf": openvino_int8_nncf,
        "onnx_to_tflite": onnx_to_tflite, "onnx_to_tflite_int8": onnx_to_tflite_int8,
    }
