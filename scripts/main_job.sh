#!/usr/bin/env bash
# The main job: enrol the people in knn_examples/train, then name the faces in knn_examples/test.
# The default pipeline uses only models installed from PyPI (MTCNN + dlib's ResNet, converted to ONNX
# once and cached); ../shared (or $FACESDK_SHARED) provides the photos only.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
shared="${FACESDK_SHARED:-$here/../shared}"
py="${PYTHON:-$here/.venv/bin/python}"
out="${FACESDK_OUT:-$here/out}"
mkdir -p "$out"
"$py" -m facesdk backends
"$py" -m facesdk models
"$py" -m facesdk enroll --gallery "$out/knn_gallery.npz" "$shared/data/photos/knn_examples/train"
"$py" -m facesdk identify --gallery "$out/knn_gallery.npz" "$shared"/data/photos/knn_examples/test/*.jpg
