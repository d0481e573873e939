#!/usr/bin/env bash
# The test command: checks the toolchain and a GPU adapter (installing lavapipe when there is no
# driver) and a Python environment with ONNX Runtime and TensorBoard (scripts/ensure-test-python.sh), then runs
# every test: the Rust suites, the kernel, network and training-step suites
# again on a second Vulkan driver with the GPUs' convolution path (scripts/test-second-driver.sh:
# SwiftShader, from Debian's chromium), then the browser tests (scripts/test-web.sh, which
# installs Chromium, the wasm toolchain and playwright-core as needed). Tests run on any adapter;
# CI uses lavapipe.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/ensure-rust.sh
icd="$(bash scripts/ensure-gpu.sh --icd)"
[ -n "$icd" ] && export VK_ICD_FILENAMES="$icd"
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-/tmp}"
# ONNX Runtime, onnx and tensorboard from PyPI (tests/onnx_export.rs, tests/tensorboard.rs).
ADAMATCH_TEST_PYTHON="$(bash scripts/ensure-test-python.sh)"
export ADAMATCH_TEST_PYTHON
cargo fmt --all -- --check
cargo clippy --all-targets --locked -- -D warnings
cargo test --locked "$@"
bash scripts/test-second-driver.sh
bash scripts/test-web.sh
