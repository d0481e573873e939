#!/usr/bin/env bash
# Checks for cargo and says how to get it when missing.
set -euo pipefail
if ! command -v cargo >/dev/null 2>&1; then
  [ -f "$HOME/.cargo/env" ] && . "$HOME/.cargo/env"
fi
if ! command -v cargo >/dev/null 2>&1; then
  echo "error: cargo not found. Install Rust (https://rustup.rs): curl -sSf https://sh.rustup.rs | sh" >&2
  exit 1
fi
