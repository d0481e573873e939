#!/usr/bin/env python3
"""AdaMatch against source-only on real target domains: trains both per target and seed, evaluates
the saved model on the whole source and target test sets, and prints a table (mean and spread over
seeds). Domains come from scripts/real-data.sh.

  scripts/real_adaptation.py [--data target/real-data] [--targets photo-digits,printed-digits,handwritten-uci]
                             [--seeds 1,2,3] [--algorithms source-only,adamatch] [--runs runs/real]
                             [--bin target/release/adamatch-wgpu] [--init-tag=-cal] [-- extra train flags]

--init-tag=T starts every run from the model of the source-only run of the same target and seed
whose folder ends in T (train --init), e.g. adaptation after a source-only phase; with it,
source-only is that model trained on for the same steps, the fair baseline.

A finished run is not trained again (its results.json is reused), so an interrupted sweep resumes.
Results: RUNS/NAME/results.json per run, RUNS/summary.json and the table on stdout.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time


def evaluate(binary, weights, data):
    """`eval --json` of the model on a dataset: accuracy, and what is known without labels
    (predicted-class counts, mean confidence, mask rate)."""
    out = subprocess.run(
        [binary, "eval", "--weights", weights, "--data", data, "--json"],
        check=True, capture_output=True, text=True,
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def main():
    argv = sys.argv[1:]
    extra = []
    if "--" in argv:
        i = argv.index("--")
        argv, extra = argv[:i], argv[i + 1:]
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="target/real-data")
    ap.add_argument("--targets", default="photo-digits,printed-digits,handwritten-uci")
    ap.add_argument("--seeds", default="1,2,3")
    ap.add_argument("--algorithms", default="source-only,adamatch")
    ap.add_argument("--runs", default="runs/real")
    ap.add_argument("--bin", default="target/release/adamatch-wgpu")
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--tag", default="", help="suffix of the run folder names (for variants)")
    ap.add_argument("--init-tag", default=None,
                    help="start from RUNS/TARGET-source-only-sSEED<INIT_TAG>/model.safetensors")
    args = ap.parse_args(argv)
    source = f"idx:{args.data}/mnist"
    rows = []
    for target in args.targets.split(","):
        for alg in args.algorithms.split(","):
            for seed in [int(s) for s in args.seeds.split(",")]:
                name = f"{target}-{alg}-s{seed}{args.tag}"
                run = os.path.join(args.runs, name)
                res_path = os.path.join(run, "results.json")
                if os.path.exists(res_path):
                    res = json.load(open(res_path))
                else:
                    # An interrupted run resumes from its checkpoint; its train time is then the
                    # resumed part's only, and the results say so.
                    resumed = os.path.exists(os.path.join(run, "checkpoint.safetensors"))
                    if os.path.exists(run) and not resumed:
                        subprocess.run(["rm", "-rf", run], check=True)
                    cmd = [args.bin, "train", "--preset", args.preset, "--source", source,
                           "--target", f"dir:{args.data}/{target}", "--algorithm", alg,
                           "--seed", str(seed), "--out", run, "--no-progress", *extra]
                    if resumed:
                        cmd.append("--resume")
                    if args.init_tag is not None:
                        init = os.path.join(args.runs, f"{target}-source-only-s{seed}{args.init_tag}",
                                            "model.safetensors")
                        if not os.path.exists(init):
                            sys.exit(f"{name}: --init-tag: no source-only model at {init}")
                        cmd += ["--init", init]
                    t0 = time.time()
                    log = subprocess.run(cmd, capture_output=True, text=True)
                    wall = time.time() - t0
                    if log.returncode != 0:
                        sys.exit(f"{name}: train failed:\n{log.stderr[-3000:]}")
                    weights = os.path.join(run, "model.safetensors")
                    source_eval = evaluate(args.bin, weights, source)
                    target_eval = evaluate(args.bin, weights, f"dir:{args.data}/{target}")
                    res = {
                        "target": target, "algorithm": alg, "seed": seed, "train_s": wall,
                        "source_acc": source_eval["accuracy"],
                        "target_acc": target_eval["accuracy"],
                        "source_eval": source_eval, "target_eval": target_eval,
                        "command": " ".join(cmd), "resumed": resumed,
                    }
                    with open(res_path, "w") as f:
                        json.dump(res, f, indent=1)
                print(f"{name}: source {100 * res['source_acc']:.1f}%  target {100 * res['target_acc']:.1f}%  "
                      f"({res['train_s']:.0f} s{', resumed' if res.get('resumed') else ''})", flush=True)
                rows.append(res)
    print()
    print("| target | algorithm | seeds | source test (MNIST) | target test | per seed | train time |")
    print("|---|---|---|---|---|---|---|")
    summary = []
    for target in args.targets.split(","):
        for alg in args.algorithms.split(","):
            rs = [r for r in rows if r["target"] == target and r["algorithm"] == alg]
            t = [100 * r["target_acc"] for r in rs]
            s = [100 * r["source_acc"] for r in rs]
            sd = statistics.stdev(t) if len(t) > 1 else 0.0
            summary.append({"target": target, "algorithm": alg, "target_mean": statistics.mean(t),
                            "target_sd": sd, "source_mean": statistics.mean(s), "target_each": t})
            print(f"| {target} | {alg} | {len(rs)} | {statistics.mean(s):.1f}% | "
                  f"**{statistics.mean(t):.1f}%** ± {sd:.1f} | {' / '.join(f'{v:.1f}' for v in t)} | "
                  f"{statistics.mean(r['train_s'] for r in rs) / 60:.1f} min |")
    with open(os.path.join(args.runs, f"summary{args.tag}.json"), "w") as f:
        json.dump(summary, f, indent=1)


if __name__ == "__main__":
    main()
