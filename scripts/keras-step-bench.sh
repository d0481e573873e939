#!/usr/bin/env bash
# The seed's Keras AdaMatch step (on JAX, CPU) against ours on the same machine.
#
#   scripts/keras-step-bench.sh [--steps N] [--no-keras] [--no-ours]
#
# Makes a Python environment in target/keras-venv (keras and jax from PyPI, pinned; Python >= 3.11),
# times the seed's training step (scripts/keras_step_bench.py: WideResNet-28-2, 64 source + 192
# target images, random data), then `adamatch-wgpu bench --step --json` for the keras-example and
# paper presets on the default adapter, and prints a table with the ratios. Every JSON result is
# kept in target/step-bench/. Timings on a busy machine are noisy: each report has the load average.
set -euo pipefail
cd "$(dirname "$0")/.."

STEPS=3
RUN_KERAS=1
RUN_OURS=1
while [ $# -gt 0 ]; do
  case "$1" in
    --steps) STEPS="$2"; shift 2 ;;
    --no-keras) RUN_KERAS=0; shift ;;
    --no-ours) RUN_OURS=0; shift ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done

KERAS_VERSION=3.15.1
JAX_VERSION=0.10.2
PYTHON="${PYTHON:-python3}"
VENV=target/keras-venv
OUT=target/step-bench
mkdir -p "$OUT"

if [ "$RUN_KERAS" = 1 ]; then
  if ! "$VENV/bin/python" -c "import keras, jax; assert keras.__version__ == '$KERAS_VERSION' and jax.__version__ == '$JAX_VERSION'" 2>/dev/null; then
    "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || {
      echo "error: jax $JAX_VERSION needs Python >= 3.11 (set PYTHON=python3.11 or newer)" >&2
      exit 1
    }
    "$PYTHON" -m venv "$VENV"
    "$VENV/bin/pip" install --quiet --no-input "keras==$KERAS_VERSION" "jax[cpu]==$JAX_VERSION"
  fi
  echo "== Keras/JAX step (seed code), $STEPS timed steps; load: $(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null)"
  # jax picks the CPU; the JSON line is the last line of the output.
  JAX_PLATFORMS=cpu "$VENV/bin/python" scripts/keras_step_bench.py --steps "$STEPS" | tee "$OUT/keras.log"
  tail -n 1 "$OUT/keras.log" > "$OUT/keras.json"
fi

if [ "$RUN_OURS" = 1 ]; then
  bash scripts/ensure-rust.sh
  bash scripts/ensure-gpu.sh
  export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-/tmp}"
  cargo build --release --locked
  for preset in keras-example paper; do
    echo "== adamatch-wgpu bench --step --preset $preset; load: $(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null)"
    ./target/release/adamatch-wgpu bench --step --preset "$preset" --steps "$STEPS" --json > "$OUT/$preset.json"
  done
fi

"${PYTHON}" - "$OUT" <<'PY'
import json, os, sys
out = sys.argv[1]
def load(name):
    p = os.path.join(out, name)
    return json.load(open(p)) if os.path.exists(p) else None
keras = load("keras.json")
rows = []
if keras:
    # FLOPs: ours of the same recipe (keras-example), when measured; the step does the same work.
    ke = load("keras-example.json")
    flops = ke["step_gflop"] * 1e9 if ke else None
    rows.append(("Keras/JAX (seed), " + keras["framework"], keras["step_s_min"], keras.get("step_cpu_s"), keras["images_per_step"], flops, keras["host_load"]))
for preset in ("keras-example", "paper"):
    r = load(preset + ".json")
    if r:
        rows.append((f"adamatch-wgpu {preset}, {r['adapter'].split(' (')[0]}", r["step_ms"] / 1e3, r.get("step_cpu_s"), r["images_per_step"], r["step_gflop"] * 1e9, r["host_load"]))
if not rows:
    sys.exit("no results")
print()
print("CPU s: CPU time of the step over all threads (less disturbed by other load than wall time).")
print()
print("| step | s/step (fastest) | CPU s/step | images/s | GFLOP/step | GFLOP/s | load (1/5/15 min) | Keras / this, wall | Keras / this, CPU |")
print("|---|---|---|---|---|---|---|---|---|")
for name, s, cpu, imgs, flops, load in rows:
    ratio = f"{keras['step_s_min'] / s:.2f}x" if keras else "-"
    cpu_ratio = f"{keras['step_cpu_s'] / cpu:.2f}x" if keras and keras.get("step_cpu_s") and cpu else "-"
    gf = f"{flops / 1e9:.0f}" if flops else "-"
    gfs = f"{flops / 1e9 / s:.1f}" if flops else "-"
    ld = "/".join(f"{v:.1f}" for v in load) if load else "-"
    cs = f"{cpu:.1f}" if cpu else "-"
    print(f"| {name} | {s:.2f} | {cs} | {imgs / s:.1f} | {gf} | {gfs} | {ld} | {ratio} | {cpu_ratio} |")
PY
