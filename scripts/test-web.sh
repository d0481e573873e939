#!/usr/bin/env bash
# The browser tests (tests/web): the web demo in headless Chromium with WebGPU on SwiftShader,
# every result compared with the native `predict --json`. Installs what is missing (Debian, as
# root): Debian's chromium, Node.js 20+ and npm, the wasm32 target and wasm-bindgen-cli (through
# build-web.sh), and playwright-core at the version pinned in tests/web/package-lock.json. Then
# builds the bundle and the binary and runs the tests. Anything it cannot install is an error
# that says what to install; nothing is skipped.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/ensure-rust.sh
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-/tmp}"

APT_UPDATED=""
apt_install() {
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = "0" ]; then
    if [ -z "$APT_UPDATED" ]; then
      apt-get update -qq
      APT_UPDATED=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
  else
    return 1
  fi
}

CHROMIUM="${CHROMIUM:-/usr/bin/chromium}"
CHROMIUM="$CHROMIUM" bash scripts/ensure-chromium.sh
export CHROMIUM

node_major() { node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0; }
if ! command -v node >/dev/null 2>&1 || [ "$(node_major)" -lt 20 ]; then
  echo "Node.js 20+ not found (playwright-core needs it): installing nodejs" >&2
  apt_install nodejs || true
  if ! command -v node >/dev/null 2>&1 || [ "$(node_major)" -lt 20 ]; then
    echo "error: the web tests need Node.js 20 or newer (found: $(node --version 2>/dev/null || echo none))." \
      "Install it from your distribution or https://nodejs.org." >&2
    exit 1
  fi
fi
if ! command -v npm >/dev/null 2>&1; then
  echo "npm not found: installing npm" >&2
  if ! apt_install npm || ! command -v npm >/dev/null 2>&1; then
    echo "error: the web tests need npm (Debian/Ubuntu: sudo apt-get install -y npm)." >&2
    exit 1
  fi
fi

bash scripts/build-web.sh
# The browser build lints clean too (build-web.sh made sure the target is installed).
cargo clippy --locked --target wasm32-unknown-unknown --lib --features web -- -D warnings
# The binary the tests run: `serve` for the page, `predict --json` for the native results.
cargo build --locked --bin adamatch-wgpu
export ADAMATCH_BIN="$PWD/target/debug/adamatch-wgpu"

cd tests/web
if ! npm ci --no-audit --no-fund --loglevel=error; then
  echo "error: could not install playwright-core with npm (tests/web/package-lock.json)." >&2
  exit 1
fi
# One file at a time: both drive a browser, and CI has two cores.
node --test --test-concurrency=1 web.test.mjs train.test.mjs
