#!/usr/bin/env bash
# The main job: AdaMatch training on the built-in synthetic pair (synth-digits -> synth-house),
# offline. With no arguments it runs the `tiny` preset (a source-only phase, then AdaMatch) into
# runs/tiny (its time on 2 CPU cores: README, Real domains);
# any arguments go to `adamatch-wgpu train` instead, e.g. `scripts/run.sh --preset paper --out runs/paper`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/ensure-rust.sh
icd="$(bash scripts/ensure-gpu.sh --icd)"
[ -n "$icd" ] && export VK_ICD_FILENAMES="$icd"
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-/tmp}"
cargo build --release --locked
if [ $# -eq 0 ]; then
  set -- --preset tiny --out runs/tiny
  [ -f runs/tiny/checkpoint.safetensors ] && set -- "$@" --resume
fi
exec ./target/release/adamatch-wgpu train "$@"
