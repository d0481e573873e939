#!/usr/bin/env bash
# Makes sure wgpu will find an adapter. With no GPU driver at all, installs Mesa's lavapipe (a
# CPU Vulkan driver) on Debian/Ubuntu when running as root, and otherwise says what to install.
#
#   bash scripts/ensure-gpu.sh               # checks (and installs) only
#   icd="$(bash scripts/ensure-gpu.sh --icd)" # also prints the Vulkan ICD file to run on, if any
#
# With --icd and ADAMATCH_NEWEST_LAVAPIPE=1, on a machine without a GPU (no render node, no NVIDIA
# driver) and where the caller has not chosen a driver (VK_ICD_FILENAMES unset), it prints the
# newest lavapipe that scripts/lavapipe.sh can unpack into target/ without touching the system
# (Mesa 25 on Debian bookworm, whose own is 22.3); nothing when the system's driver is the one to
# use. Opt-in: Mesa 25's lavapipe runs steps about 1.1x faster but compiles pipelines 3-5x
# slower, which a first run and a test suite of short processes pay (README, Performance).
set -euo pipefail
cd "$(dirname "$0")/.."
PRINT_ICD=0
[ "${1:-}" = "--icd" ] && PRINT_ICD=1

has_gpu() {
  ls /dev/dri/renderD* >/dev/null 2>&1 || command -v nvidia-smi >/dev/null 2>&1
}

print_icd() {
  if [ "$PRINT_ICD" = 1 ] && [ -z "${VK_ICD_FILENAMES:-}" ] && [ "${ADAMATCH_NEWEST_LAVAPIPE:-0}" = 1 ] &&
    [ "$(uname -s)" = "Linux" ] && ! has_gpu; then
    bash scripts/lavapipe.sh || true
  fi
}

have_vulkan_icd() {
  local f
  for f in /usr/share/vulkan/icd.d/*.json /etc/vulkan/icd.d/*.json; do
    [ -e "$f" ] && return 0
  done
  return 1
}

if [ "$(uname -s)" = "Darwin" ]; then
  exit 0 # Metal is always there.
fi
if have_vulkan_icd || has_gpu; then
  print_icd
  exit 0
fi
if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = "0" ]; then
  echo "no GPU driver found: installing mesa-vulkan-drivers (lavapipe, a CPU Vulkan driver)" >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mesa-vulkan-drivers >/dev/null
  if have_vulkan_icd; then
    print_icd
    exit 0
  fi
fi
cat >&2 <<'MSG'
error: no GPU driver found and none could be installed.
  Install your GPU's Vulkan driver, or for a CPU fallback on Debian/Ubuntu:
    sudo apt-get install -y mesa-vulkan-drivers
MSG
exit 1
