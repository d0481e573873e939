#!/usr/bin/env bash
# Makes target/test-venv, a Python environment from PyPI with what the tests run against: ONNX
# Runtime (CPU), onnx and numpy for the ONNX export (tests/onnx_export.rs), tensorboard for the
# event files (tests/tensorboard.rs). Does nothing when it is already there. Prints its python's
# path. PYTHON=/path/to/python3 picks the interpreter.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=target/test-venv
PACKAGES=(onnxruntime==1.32.0 onnx==1.23.2 numpy==2.4.6 tensorboard==2.21.0)
CHECK="import onnx, onnxruntime, numpy, tensorboard"
if ! "$VENV/bin/python" -c "$CHECK" 2>/dev/null; then
  PYTHON="${PYTHON:-python3}"
  if ! command -v "$PYTHON" >/dev/null 2>&1; then
    echo "error: the tests need Python 3 (with venv and pip) to install ONNX Runtime and TensorBoard;" \
      "install it (Debian: apt-get install -y python3 python3-venv) or set PYTHON=/path/to/python3" >&2
    exit 1
  fi
  echo "installing ${PACKAGES[*]} into $VENV (from PyPI, once)" >&2
  rm -rf "$VENV"
  if ! "$PYTHON" -m venv "$VENV" >&2; then
    echo "error: $PYTHON -m venv failed; install the venv module (Debian: apt-get install -y python3-venv)" >&2
    exit 1
  fi
  "$VENV/bin/pip" install --quiet --no-input --disable-pip-version-check "${PACKAGES[@]}" >&2
  "$VENV/bin/python" -c "$CHECK"
fi
echo "$PWD/$VENV/bin/python"
