#!/usr/bin/env bash
# The seed's Keras AdaMatch step (on TensorFlow, the seed's own backend, and on JAX; CPU) against
# ours on the same machine, in one run.
#
#   scripts/keras-step-bench.sh [--steps N] [--sizes "paper tiny"] [--no-keras] [--no-jax]
#                               [--no-ours] [--peak-gflops G]
#
# Makes two Python environments (target/keras-tf-venv: keras and tensorflow-cpu; target/keras-venv:
# keras and jax; pinned, from PyPI, Python >= 3.11), times the seed's training step
# (scripts/keras_step_bench.py) for each size, TensorFlow first, then `adamatch-wgpu bench --step
# --json` for the same size, and prints one table: seconds per step, CPU seconds, GFLOP/s, the
# fraction of the CPU's fp32 peak, peak memory and the ratio to the TensorFlow step. Sizes:
# `paper` (WRN-28-2, 64 source + 192 target images, the seed's) and `tiny` (WRN-10-1, 16 + 48).
# Ours runs on the default adapter, and on a CPU machine also on the newest lavapipe that
# `scripts/lavapipe.sh` can unpack when it is newer than the system's (`--no-newest` skips it).
# Every result is kept in target/step-bench/; each report has the load average, since a busy
# machine makes noisy timings.
set -euo pipefail
cd "$(dirname "$0")/.."

STEPS=3
SIZES="paper tiny"
RUN_KERAS=1
RUN_JAX=1
RUN_OURS=1
NEWEST=1
PEAK_GFLOPS=""
while [ $# -gt 0 ]; do
  case "$1" in
    --steps) STEPS="$2"; shift 2 ;;
    --sizes) SIZES="$2"; shift 2 ;;
    --no-keras) RUN_KERAS=0; shift ;;
    --no-jax) RUN_JAX=0; shift ;;
    --no-ours) RUN_OURS=0; shift ;;
    --no-newest) NEWEST=0; shift ;;
    --peak-gflops) PEAK_GFLOPS="$2"; shift 2 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done

KERAS_VERSION=3.15.1
JAX_VERSION=0.10.2
TF_VERSION=2.21.0
PYTHON="${PYTHON:-python3}"
OUT=target/step-bench
mkdir -p "$OUT"

# network arguments of the seed's script and our preset, per size
size_args() {
  case "$1" in
    paper) echo "--depth 28 --width 2 --source-batch 64" ;;
    tiny) echo "--depth 10 --width 1 --source-batch 16" ;;
    *) echo "unknown size '$1' (paper or tiny)" >&2; exit 2 ;;
  esac
}

make_venv() { # dir, check, packages...
  local venv="$1" check="$2"
  shift 2
  if ! "$venv/bin/python" -c "$check" 2>/dev/null; then
    "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || {
      echo "error: the Keras benchmark needs Python >= 3.11 (set PYTHON=python3.11 or newer)" >&2
      exit 1
    }
    "$PYTHON" -m venv "$venv"
    "$venv/bin/pip" install --quiet --no-input "$@"
  fi
}

keras_step() { # backend, venv, size
  local backend="$1" venv="$2" size="$3"
  echo "== Keras/$backend step (seed code), $size, $STEPS timed steps; load: $(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null)"
  # shellcheck disable=SC2046
  JAX_PLATFORMS=cpu TF_CPP_MIN_LOG_LEVEL=2 "$venv/bin/python" scripts/keras_step_bench.py \
    --backend "$backend" --steps "$STEPS" $(size_args "$size") | tee "$OUT/keras-$backend-$size.log"
  tail -n 1 "$OUT/keras-$backend-$size.log" > "$OUT/keras-$backend-$size.json"
}

if [ "$RUN_KERAS" = 1 ]; then
  make_venv target/keras-tf-venv \
    "import keras, tensorflow as tf; assert keras.__version__ == '$KERAS_VERSION' and tf.__version__ == '$TF_VERSION'" \
    "keras==$KERAS_VERSION" "tensorflow-cpu==$TF_VERSION"
  if [ "$RUN_JAX" = 1 ]; then
    make_venv target/keras-venv \
      "import keras, jax; assert keras.__version__ == '$KERAS_VERSION' and jax.__version__ == '$JAX_VERSION'" \
      "keras==$KERAS_VERSION" "jax[cpu]==$JAX_VERSION"
  fi
fi
if [ "$RUN_OURS" = 1 ]; then
  bash scripts/ensure-rust.sh
  bash scripts/ensure-gpu.sh
  export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-/tmp}"
  cargo build --release --locked
  # the drivers ours runs on: the environment's, and the newest lavapipe where that differs
  DRIVERS=("${VK_ICD_FILENAMES:-}")
  if [ "$NEWEST" = 1 ] && [ -z "${VK_ICD_FILENAMES:-}" ] &&
    ./target/release/adamatch-wgpu info 2>/dev/null | grep -q llvmpipe; then
    newest="$(bash scripts/lavapipe.sh || true)"
    [ -n "$newest" ] && DRIVERS+=("$newest")
  fi
fi

rm -f "$OUT"/ours-*.json "$OUT"/ours-*.rss "$OUT"/keras-*.json
for size in $SIZES; do
  size_args "$size" >/dev/null
  if [ "$RUN_KERAS" = 1 ]; then
    keras_step tensorflow target/keras-tf-venv "$size"
    [ "$RUN_JAX" = 1 ] && keras_step jax target/keras-venv "$size"
  fi
  if [ "$RUN_OURS" = 1 ]; then
    for i in "${!DRIVERS[@]}"; do
      icd="${DRIVERS[$i]}"
      echo "== adamatch-wgpu bench --step --preset $size${icd:+ (VK_ICD_FILENAMES=$icd)}; load: $(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null)"
      # /usr/bin/time's peak RSS is the process's, GPU memory included on a CPU driver
      timer=()
      [ -x /usr/bin/time ] && timer=(/usr/bin/time -f '%M' -o "$OUT/ours-$size-$i.rss")
      (
        [ -n "$icd" ] && export VK_ICD_FILENAMES="$icd"
        "${timer[@]}" ./target/release/adamatch-wgpu bench --step --preset "$size" --steps "$STEPS" --json \
          > "$OUT/ours-$size-$i.json"
      )
    done
  fi
done

"${PYTHON}" scripts/step_bench_table.py "$OUT" "$SIZES" "$PEAK_GFLOPS"
