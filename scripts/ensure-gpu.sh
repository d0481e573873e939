#!/usr/bin/env bash
# Makes sure wgpu will find an adapter. With no GPU driver at all, installs Mesa's lavapipe (a
# CPU Vulkan driver) on Debian/Ubuntu when running as root, and otherwise says what to install.
set -euo pipefail

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
if have_vulkan_icd || ls /dev/dri/renderD* >/dev/null 2>&1 || command -v nvidia-smi >/dev/null 2>&1; then
  exit 0
fi
if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = "0" ]; then
  echo "no GPU driver found: installing mesa-vulkan-drivers (lavapipe, a CPU Vulkan driver)" >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mesa-vulkan-drivers >/dev/null
  have_vulkan_icd && exit 0
fi
cat >&2 <<'MSG'
error: no GPU driver found and none could be installed.
  Install your GPU's Vulkan driver, or for a CPU fallback on Debian/Ubuntu:
    sudo apt-get install -y mesa-vulkan-drivers
MSG
exit 1
