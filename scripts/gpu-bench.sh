#!/usr/bin/env bash
# Benchmarks for a real GPU, in well under 10 minutes: the engine (WRN-28-2 forward+backward at
# batch 256), the paper preset's whole AdaMatch step and the keras-example step, then a markdown
# table (adapter, GFLOP/s per kernel family, whole-step GFLOP/s, images/s, and the estimated time
# of the seed's 2-epoch MNIST -> SVHN run: ~1.3 PFLOP, 1,874 keras-example steps).
#
#   scripts/gpu-bench.sh [--quick] [--out DIR] [--bin PATH]
#
# --quick  tiny shapes (any adapter, lavapipe included, in about a minute): checks the script.
# --out    where the JSON reports and the table go (default target/gpu-bench).
# --bin    a prebuilt adamatch-wgpu (also $ADAMATCH_BIN); otherwise target/release/adamatch-wgpu,
#          built with cargo when cargo is there.
#
# On a machine without a Vulkan loader, Debian packages of one (libvulkan1) placed in .gl/ are
# unpacked first (as root); NVIDIA's ICD is found under /usr/local/nvidia when the default
# locations have none.
set -euo pipefail
cd "$(dirname "$0")/.."

QUICK=0
OUT=target/gpu-bench
BIN="${ADAMATCH_BIN:-}"
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) QUICK=1; shift ;;
    --out) OUT="$2"; shift 2 ;;
    --bin) BIN="$2"; shift 2 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done
mkdir -p "$OUT"
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-/tmp}"

# A Vulkan loader and driver.
if ! ldconfig -p 2>/dev/null | grep -q 'libvulkan.so.1'; then
  if ls .gl/*.deb >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    for f in .gl/*.deb; do dpkg -x "$f" /; done
    ldconfig
  fi
fi
if ! ls /usr/share/vulkan/icd.d/*.json /etc/vulkan/icd.d/*.json >/dev/null 2>&1; then
  if [ -f /usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json ]; then
    export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
  fi
fi

if [ -z "$BIN" ]; then
  BIN=target/release/adamatch-wgpu
  if command -v cargo >/dev/null 2>&1 || [ -f "$HOME/.cargo/env" ]; then
    bash scripts/ensure-rust.sh
    [ -f "$HOME/.cargo/env" ] && . "$HOME/.cargo/env"
    cargo build --release --locked
  fi
fi
[ -x "$BIN" ] || { echo "error: no adamatch-wgpu binary at $BIN (build it, or pass --bin)" >&2; exit 1; }

"$BIN" info > "$OUT/info.txt" 2>&1 || { cat "$OUT/info.txt" >&2; exit 1; }
grep -E '^\[|selected:' "$OUT/info.txt"

if [ "$QUICK" = 1 ]; then
  ENGINE=(--batch 16 --depth 10 --width 1 --reps 1)
  STEP=(--batch 2 --uratio 1 --steps 1)
else
  ENGINE=(--batch 256 --reps 5)
  STEP=(--steps 10 --engine-reps 3)
fi
load() { cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || true; }
echo "== engine: bench ${ENGINE[*]} (load $(load))"
timeout 300 "$BIN" bench "${ENGINE[@]}" --json > "$OUT/engine.json"
for preset in paper keras-example; do
  echo "== step: bench --step --preset $preset ${STEP[*]} (load $(load))"
  timeout 300 "$BIN" bench --step --preset "$preset" "${STEP[@]}" --json > "$OUT/step-$preset.json"
done

python3 - "$OUT" <<'PY' | tee "$OUT/table.md"
import json, os, sys
out = sys.argv[1]
eng = json.load(open(os.path.join(out, "engine.json")))
steps = {p: json.load(open(os.path.join(out, f"step-{p}.json"))) for p in ("paper", "keras-example")}
paper, keras = steps["paper"], steps["keras-example"]
BUDGET_FLOP = 1.3e15   # the seed's 2 epochs of MNIST -> SVHN (issue 6)
SEED_STEPS = 2 * 937   # the same budget counted in keras-example steps
print(f"adapter: {paper['adapter']}")
print()
print("| measurement | ms | images/s | GFLOP/s |")
print("|---|---|---|---|")
print(f"| engine {eng['network']} forward+backward, batch {eng['batch']} | {eng['pass_ms']:.1f} | {eng['pass_images_per_s']:.0f} | {eng['pass_gflops']:.0f} |")
for name, r in steps.items():
    print(f"| {name} step ({r['source_batch']} + {r['target_batch']} images, {r['step_gflop']:.0f} GFLOP) | {r['step_ms']:.1f} | {r['images_per_s']:.0f} | {r['gflops']:.0f} |")
    e = r.get("engine")
    if e:
        print(f"| {name} main pass alone (batch {e['batch']}) | {e['pass_ms']:.1f} | - | {e['gflops']:.0f} |")
print()
print(f"paper step, per kernel family ({paper['kernel_timing']}):")
print()
print("| family | calls | ms | share | GFLOP/s |")
print("|---|---|---|---|---|")
for f in paper["families"]:
    gf = f"{f['gflops']:.0f}" if f["gflop"] > 0 else "-"
    print(f"| {f['name']} | {f['calls']} | {f['ms']:.2f} | {100 * f['share']:.1f}% | {gf} |")
print()
t_flop = BUDGET_FLOP / (paper["gflops"] * 1e9)
t_steps = SEED_STEPS * keras["step_ms"] / 1e3
print(f"seed's 2-epoch budget: 1.3 PFLOP at the paper step's {paper['gflops']:.0f} GFLOP/s = {t_flop:.0f} s ({t_flop / 60:.1f} min); "
      f"{SEED_STEPS} keras-example steps x {keras['step_ms']:.1f} ms = {t_steps:.0f} s ({t_steps / 60:.1f} min)")
PY
echo "reports in $OUT"
