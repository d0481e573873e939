#!/usr/bin/env bash
# The main job. Until training lands (issue 4) this builds the release binary and runs the engine
# benchmark: a WRN-28-2 training-mode forward+backward on the best adapter, per-kernel table.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/ensure-rust.sh
bash scripts/ensure-gpu.sh
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-/tmp}"
cargo build --release --locked
exec ./target/release/adamatch-wgpu bench "$@"
