#!/usr/bin/env bash
# The main job: enrol the people in knn_examples/train, then name the faces in knn_examples/test.
# Uses ../shared (or $FACESDK_SHARED) for the photos and, until registry defaults land, its models.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
shared="${FACESDK_SHARED:-$here/../shared}"
export FACESDK_MODEL_MIRROR="${FACESDK_MODEL_MIRROR:-$shared/models}"
py="${PYTHON:-$here/.venv/bin/python}"
out="${FACESDK_OUT:-$here/out}"
mkdir -p "$out"
"$py" -m facesdk backends
"$py" -m facesdk models
"$py" -m facesdk enroll --gallery "$out/knn_gallery.npz" "$shared/data/photos/knn_examples/train"
"$py" -m facesdk identify --gallery "$out/knn_gallery.npz" "$shared"/data/photos/knn_examples/test/*.jpg
