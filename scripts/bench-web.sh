#!/usr/bin/env bash
# Browser training throughput against native `train` on this machine (tests/web/bench-train.mjs):
# builds the bundle and the release binary, then runs the benchmark in headless Chromium with
# WebGPU. Needs what scripts/test-web.sh installs (Chromium, Node.js 20+, npm); arguments pass
# through (--preset tiny --steps 6 --warmup 2 --conv-path tiled).
set -euo pipefail
cd "$(dirname "$0")/.."
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-/tmp}"
for tool in node npm; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    echo "error: $tool not found; scripts/test-web.sh installs what the browser tools need" >&2
    exit 1
  fi
done
bash scripts/build-web.sh
cargo build --locked --release --bin adamatch-wgpu
export ADAMATCH_BIN="$PWD/target/release/adamatch-wgpu"
(cd tests/web && npm ci --no-audit --no-fund --loglevel=error)
node tests/web/bench-train.mjs "$@"
