#!/usr/bin/env bash
# The newest lavapipe (Mesa's CPU Vulkan driver) the distribution offers, unpacked into a folder
# of the project's, without installing anything on the system.
#
#   scripts/lavapipe.sh [--dir DIR]     # prints the ICD file to use as VK_ICD_FILENAMES
#   export VK_ICD_FILENAMES="$(bash scripts/lavapipe.sh)"
#
# On Debian bookworm the backports suite carries Mesa 25 (bookworm itself: 22.3), whose lavapipe
# runs this project's kernels faster (README, Performance). The script downloads its
# mesa-vulkan-drivers package (with apt's own lists kept in DIR, default target/lavapipe; the
# system's sources and state are not touched), unpacks it into DIR and writes an ICD file naming
# the unpacked library by its absolute path. It prints nothing and exits 0 when the system's
# driver is already the newest, or when no newer one can be had (not Debian, no network): the
# caller then uses the system's driver. Messages go to standard error.
set -euo pipefail
cd "$(dirname "$0")/.."

DIR=target/lavapipe
while [ $# -gt 0 ]; do
  case "$1" in
    --dir) DIR="$2"; shift 2 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done
mkdir -p "$DIR"
DIR="$(cd "$DIR" && pwd)"
ARCH="$(dpkg --print-architecture 2>/dev/null || true)"
ICD="$DIR/lvp_icd.$ARCH.json"

note() { echo "lavapipe.sh: $*" >&2; }

if [ -s "$ICD" ] && [ -e "$DIR/root/usr/lib" ]; then
  echo "$ICD"
  exit 0
fi
codename="$(. /etc/os-release 2>/dev/null && echo "${VERSION_CODENAME:-}")"
if [ -z "$ARCH" ] || [ -z "$codename" ] || ! command -v apt-get >/dev/null; then
  note "not a Debian-like system: using the system's Vulkan driver"
  exit 0
fi

# apt with its lists, cache and sources in $DIR: the backports suite of this release only
mkdir -p "$DIR/apt/lists/partial" "$DIR/apt/cache/archives/partial" "$DIR/debs"
echo "deb http://deb.debian.org/debian $codename-backports main" > "$DIR/apt/sources.list"
APT=(-o "Dir::Etc::sourcelist=$DIR/apt/sources.list" -o "Dir::Etc::sourceparts=/nonexistent"
  -o "Dir::State::Lists=$DIR/apt/lists" -o "Dir::Cache=$DIR/apt/cache" -o "Debug::NoLocking=1"
  -o "APT::Sandbox::User=root")
if ! apt-get "${APT[@]}" update -qq >/dev/null 2>"$DIR/apt/update.log"; then
  note "no $codename-backports suite reachable ($(tail -n 1 "$DIR/apt/update.log")): using the system's Vulkan driver"
  exit 0
fi
newest="$(apt-cache "${APT[@]}" show "mesa-vulkan-drivers/$codename-backports" 2>/dev/null |
  sed -n 's/^Version: //p' | head -n 1)"
installed="$(dpkg-query -W -f '${Version}' mesa-vulkan-drivers 2>/dev/null || true)"
if [ -z "$newest" ]; then
  note "$codename-backports has no mesa-vulkan-drivers: using the system's Vulkan driver"
  exit 0
fi
if [ -n "$installed" ] && dpkg --compare-versions "$installed" ge "$newest"; then
  note "the system's lavapipe ($installed) is the newest: using it"
  exit 0
fi
(cd "$DIR/debs" && apt-get "${APT[@]}" download -qq "mesa-vulkan-drivers/$codename-backports" >/dev/null)
rm -rf "$DIR/root"
dpkg-deb -x "$DIR"/debs/mesa-vulkan-drivers_*.deb "$DIR/root"
lib="$(find "$DIR/root" -name libvulkan_lvp.so | head -n 1)"
if [ -z "$lib" ]; then
  note "the package holds no libvulkan_lvp.so: using the system's Vulkan driver"
  exit 0
fi
# missing libraries or symbols (a newer libdrm, say) show here rather than as an adapter that is
# not found
if missing="$(ldd -r "$lib" 2>&1 | grep -E 'not found|undefined symbol')" && [ -n "$missing" ]; then
  note "lavapipe $newest needs libraries this system lacks: $missing; using the system's Vulkan driver"
  exit 0
fi
api="$(sed -n 's/.*"api_version": *"\([^"]*\)".*/\1/p' "$DIR"/root/usr/share/vulkan/icd.d/lvp_icd*.json | head -n 1)"
cat > "$ICD.tmp" <<JSON
{
    "ICD": {
        "api_version": "${api:-1.3.0}",
        "library_path": "$lib"
    },
    "file_format_version": "1.0.0"
}
JSON
mv "$ICD.tmp" "$ICD"
note "lavapipe $newest unpacked into $DIR (the system's: ${installed:-none})"
echo "$ICD"
