#!/usr/bin/env bash
# Builds the browser bundle into web/pkg (git-ignored): the crate's inference path for wasm32
# with the `web` feature, then wasm-bindgen's JS glue (--target web). Installs what is missing:
# the wasm32-unknown-unknown target (rustup) and wasm-bindgen-cli at exactly the version of the
# wasm-bindgen crate in Cargo.lock (the two must match). Prints the wasm size.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/ensure-rust.sh
if ! command -v cargo >/dev/null 2>&1 && [ -f "$HOME/.cargo/env" ]; then
  . "$HOME/.cargo/env"
fi

TARGET=wasm32-unknown-unknown
if ! rustc --print target-libdir --target "$TARGET" 2>/dev/null | xargs -I{} test -d {}; then
  if command -v rustup >/dev/null 2>&1; then
    echo "installing the Rust target $TARGET (rustup target add $TARGET)" >&2
    rustup target add "$TARGET" >&2
  else
    echo "error: the Rust standard library for $TARGET is missing and rustup is not installed;" \
      "install the target for your toolchain (with rustup: rustup target add $TARGET)" >&2
    exit 1
  fi
fi

WB_VERSION=$(awk '$0 == "name = \"wasm-bindgen\"" { getline; gsub(/version = |"/, ""); print; exit }' Cargo.lock)
if [ -z "$WB_VERSION" ]; then
  echo "error: no wasm-bindgen entry in Cargo.lock" >&2
  exit 1
fi
if [ "$(wasm-bindgen --version 2>/dev/null)" != "wasm-bindgen $WB_VERSION" ]; then
  echo "installing wasm-bindgen-cli $WB_VERSION (the version in Cargo.lock; takes a few minutes once)" >&2
  # No default features: they only add TLS for the test runner's downloads, which we don't use.
  if ! cargo install --locked --no-default-features wasm-bindgen-cli --version "$WB_VERSION"; then
    echo "note: the locked install failed (a version pinned in wasm-bindgen-cli's own lockfile is" \
      "not available from this registry); installing with freshly resolved dependencies" >&2
    cargo install --no-default-features wasm-bindgen-cli --version "$WB_VERSION"
  fi
  if [ "$(wasm-bindgen --version 2>/dev/null)" != "wasm-bindgen $WB_VERSION" ]; then
    echo "error: wasm-bindgen $WB_VERSION is not on PATH after installing it" \
      "(found: $(wasm-bindgen --version 2>&1 || true)); is ~/.cargo/bin on PATH?" >&2
    exit 1
  fi
fi

# `cargo rustc --crate-type cdylib` makes the wasm module without turning the native library
# into a cdylib too. The `web` profile is release with LTO, optimised for size.
cargo rustc --locked --lib --profile web --target "$TARGET" --features web --crate-type cdylib
WASM="target/$TARGET/web/adamatch_wgpu.wasm"
rm -rf web/pkg
wasm-bindgen --target web --out-dir web/pkg "$WASM"

BYTES=$(wc -c <web/pkg/adamatch_wgpu_bg.wasm)
GZ=$(gzip -9 -c web/pkg/adamatch_wgpu_bg.wasm | wc -c)
echo "web bundle: web/pkg/adamatch_wgpu_bg.wasm is $((BYTES / 1024)) KiB ($((GZ / 1024)) KiB gzipped)"
echo "serve it: cargo run --release -- serve [--weights runs/NAME/model.safetensors]"
