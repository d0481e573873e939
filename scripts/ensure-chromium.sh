#!/usr/bin/env bash
# Makes sure Debian's chromium is there (installing it as root on Debian/Ubuntu), for the browser
# tests (its WebGPU) and the second-driver tests (the SwiftShader Vulkan driver it ships), and
# otherwise says what to install. CHROMIUM=/path/to/chromium picks another browser binary.
set -euo pipefail
CHROMIUM="${CHROMIUM:-/usr/bin/chromium}"
[ -x "$CHROMIUM" ] && exit 0
echo "no browser at $CHROMIUM: installing Debian's chromium (apt-get install -y chromium)" >&2
if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = "0" ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null || true
fi
if [ ! -x "$CHROMIUM" ]; then
  echo "error: Chromium is needed and could not be installed. Install it (Debian/Ubuntu:" \
    "sudo apt-get install -y chromium) or set CHROMIUM=/path/to/chromium." >&2
  exit 1
fi
