"""Prints the table of scripts/keras-step-bench.sh from the JSON results in its output folder.

    step_bench_table.py OUT_DIR "paper tiny" [PEAK_GFLOPS]

FLOPs per step are ours (`bench --step`'s count of the step's ops) for every row of a size: the
seed's step does the same work. The CPU's fp32 peak, unless given, is estimated from /proc/cpuinfo:
cores x clock x SIMD lanes (16 with AVX-512, 8 with AVX2) x 2 (a fused multiply-add) x 2 FMA
pipes; the clock is the one the kernel reports (a VM's nominal clock), so the fraction is a guide.
"""

import json
import os
import sys

NETWORK = {"paper": "WRN-28-2, 64 + 192", "tiny": "WRN-10-1, 16 + 48"}


def load(out, name):
    path = os.path.join(out, name)
    if not os.path.exists(path):
        return None
    try:
        return json.load(open(path))
    except json.JSONDecodeError:
        print(f"warning: {path} holds no JSON result (a failed run?)", file=sys.stderr)
        return None


def estimated_peak_gflops():
    try:
        info = open("/proc/cpuinfo").read()
    except OSError:
        return None, "unknown"
    cores = info.count("processor\t:")
    mhz = [float(line.split(":")[1]) for line in info.splitlines() if line.startswith("cpu MHz")]
    if not cores or not mhz:
        return None, "unknown"
    lanes = 16 if " avx512f" in info else 8 if " avx2" in info else 4
    ghz = max(mhz) / 1000
    peak = cores * ghz * lanes * 2 * 2
    return peak, f"{cores} cores x {ghz:.2f} GHz x {lanes} lanes x 2 (FMA) x 2 pipes"


def rss_of(out, name, keras):
    if keras:
        return keras.get("peak_rss_bytes")
    path = os.path.join(out, f"{name}.rss")
    if os.path.exists(path):
        text = open(path).read().split()
        if text and text[-1].isdigit():
            return int(text[-1]) * 1024
    return None


def driver_of(adapter):
    """`llvmpipe, Mesa 25.0.7` out of wgpu's adapter line (its name, and the driver's version)."""
    name = adapter.split(" (")[0]
    if "Mesa " in adapter:
        version = adapter.split("Mesa ")[1].split()[0].split("-")[0].rstrip(")")
        return f"{name}, Mesa {version}"
    return name


def main():
    out, sizes = sys.argv[1], sys.argv[2].split()
    peak, how = (float(sys.argv[3]), "given") if len(sys.argv) > 3 and sys.argv[3] else estimated_peak_gflops()
    print()
    print(f"CPU fp32 peak: {peak:.0f} GFLOP/s ({how})" if peak else "CPU fp32 peak: unknown")
    print("CPU s: the step's CPU time over all threads. GFLOP: our count of the step's work, the same for every row of a size.")
    print()
    print("| step | runs on | s/step (fastest) | median | CPU s | GFLOP/s | of peak | peak RSS | first step | time / TensorFlow's |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for size in sizes:
        ours_runs = []
        i = 0
        while os.path.exists(os.path.join(out, f"ours-{size}-{i}.json")):
            r = load(out, f"ours-{size}-{i}.json")
            if r:
                ours_runs.append((f"ours-{size}-{i}", r))
            i += 1
        tf = load(out, f"keras-tensorflow-{size}.json")
        gflop = ours_runs[0][1]["step_gflop"] if ours_runs else None
        rows = []
        for backend in ("tensorflow", "jax"):
            k = load(out, f"keras-{backend}-{size}.json")
            if k:
                rows.append((f"Keras {backend} (seed)", k["framework"], k["step_s_min"], k["step_s_median"], k.get("step_cpu_s"), rss_of(out, None, k), k.get("compile_and_first_step_s")))
        for name, ours in ours_runs:
            rows.append((f"adamatch-wgpu `{size}`", driver_of(ours["adapter"]), ours["step_ms"] / 1e3, ours["step_ms_median"] / 1e3, ours.get("step_cpu_s"), rss_of(out, name, None), None))
        for name, runs_on, s, med, cpu, rss, first in rows:
            gfs = gflop / s if gflop else None
            cells = [
                f"{NETWORK.get(size, size)}: {name}",
                runs_on,
                f"{s:.3f}" if s < 1 else f"{s:.2f}",
                f"{med:.3f}" if med < 1 else f"{med:.2f}",
                f"{cpu:.2f}" if cpu else "-",
                f"{gfs:.0f}" if gfs else "-",
                f"{100 * gfs / peak:.0f}%" if gfs and peak else "-",
                f"{rss / 2**30:.2f} GiB" if rss else "-",
                f"{first:.1f} s" if first else "-",
                f"{s / tf['step_s_min']:.2f}x" if tf else "-",
            ]
            print("| " + " | ".join(cells) + " |")
    load_avg = os.getloadavg() if hasattr(os, "getloadavg") else None
    if load_avg:
        print()
        print("load at the end: " + "/".join(f"{v:.1f}" for v in load_avg))


if __name__ == "__main__":
    main()
