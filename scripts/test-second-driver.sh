#!/usr/bin/env bash
# The GPUs' path checked by a second Vulkan driver: the kernel, network and training-step
# reference tests on SwiftShader (the Vulkan driver in Debian's chromium package) with every
# convolution on the `tiled` path, the one GPUs and browsers run. The main pass runs on lavapipe,
# whose own path is `subgroup`; SwiftShader brings another shader compiler and other limits
# (10 storage buffers per stage, 256-byte offset alignment, no 8-lane subgroups). Installs
# chromium when it is missing (scripts/ensure-chromium.sh); extra arguments go to `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/ensure-rust.sh
bash scripts/ensure-chromium.sh
ICD="${SWIFTSHADER_ICD:-/usr/lib/chromium/vk_swiftshader_icd.json}"
if [ ! -e "$ICD" ]; then
  echo "error: no SwiftShader Vulkan driver at $ICD (Debian's chromium-common ships it);" \
    "set SWIFTSHADER_ICD=/path/to/vk_swiftshader_icd.json." >&2
  exit 1
fi
export VK_ICD_FILENAMES="$ICD" ADAMATCH_CONV_PATH=tiled
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-/tmp}"
SUITES=(--test kernels --test network --test train)
cargo test --locked "${SUITES[@]}" --no-run
# The suites would pass as well on any adapter the loader found instead: make sure it is SwiftShader.
cargo build --locked --bin adamatch-wgpu
selected="$(target/debug/adamatch-wgpu info 2>&1 | grep '^selected:' || true)"
case "$selected" in
  *SwiftShader*) echo "second driver: $selected" >&2 ;;
  *)
    echo "error: with VK_ICD_FILENAMES=$ICD the adapter is not SwiftShader (${selected:-none found})." >&2
    exit 1
    ;;
esac
# Six tests run on lavapipe only: what they check does not depend on the driver (a trainer's
# bookkeeping; the finite-difference gradients of a second network, the first one runs here; the
# step at 48 pixels, whose kernels the kernel suite runs at odd shapes; the autotuner's timing
# and cache file; the repeatability of kernels without atomics, which lavapipe checks on every
# path; the tiled path's other tile candidates, which differ only in constants from the default
# tiles that every other test here runs, and which the browser test compiles on SwiftShader
# too), and on SwiftShader they cost half of this pass, mostly compiling pipelines, which CI's
# 45 minutes cannot spare.
LAVAPIPE_ONLY=(
  --skip step::the_adaptation_phase_starts_as_a_fresh_trainer_given_the_source_phase_model
  --skip gradients::gpu_gradients_match_finite_differences_official
  --skip step::paper_adamatch_steps_match_reference_at_48
  --skip conv2d::autotuning_times_each_pass_once_and_reads_its_choices_back_from_the_cache
  --skip conv2d::all_passes_are_bitwise_deterministic
  --skip conv2d::every_tile_candidate_matches_the_reference_and_the_default_tiles_bit_for_bit
)
cargo test --locked "${SUITES[@]}" "$@" -- "${LAVAPIPE_ONLY[@]}"
