#!/usr/bin/env python3
"""How often does a label-free signal rank an adapted model against its source-only baseline as the
labels do? Reads the per-run results of scripts/real_adaptation.py (RUNS/NAME/results.json, whose
`source_eval` and `target_eval` are `eval --json` of the saved model) and, for every (target, seed,
tag) with both a source-only and an AdaMatch run, compares each candidate's preference with the
target accuracies.

  scripts/verdict_candidates.py [--runs runs/real] [--tag=-recipe]

Candidates (nothing but the models' outputs on unlabeled target images and labeled source images):
  confidence   higher mean top-1 probability on the target
  mask-rate    more target images predicted with probability >= 0.95
  histogram    predicted-class histogram on the target closer (total variation) to the source's
               predicted-class histogram (the class prior the source teaches)
A candidate that always prefers one algorithm only agrees with the labels as often as that
algorithm wins: the table prints how often AdaMatch won beside it.
"""

import argparse
import glob
import json
import os


def histogram_distance(a, b):
    sa, sb = sum(a), sum(b)
    return 0.5 * sum(abs(x / sa - y / sb) for x, y in zip(a, b))


CANDIDATES = {
    "confidence": lambda r: r["target_eval"]["mean_confidence"],
    "mask-rate": lambda r: r["target_eval"]["mask_rate"],
    "histogram": lambda r: -histogram_distance(r["target_eval"]["predicted"], r["source_eval"]["predicted"]),
}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", default="runs/real")
    ap.add_argument("--tag", default=None, help="only runs whose folder ends in this tag")
    args = ap.parse_args()
    runs = {}
    for path in glob.glob(os.path.join(args.runs, "*", "results.json")):
        r = json.load(open(path))
        if "target_eval" not in r:
            continue
        name = os.path.basename(os.path.dirname(path))
        tag = name.split(f"-s{r['seed']}", 1)[1]
        if args.tag is not None and tag != args.tag:
            continue
        runs[(r["target"], r["seed"], tag, r["algorithm"])] = r
    pairs = sorted({k[:3] for k in runs if (k[:3] + ("source-only",)) in runs and (k[:3] + ("adamatch",)) in runs})
    if not pairs:
        raise SystemExit(f"no source-only/AdaMatch pairs with eval JSON under {args.runs}")
    agree = {c: 0 for c in CANDIDATES}
    print("| target | seed | tag | source-only | AdaMatch | " + " | ".join(CANDIDATES) + " |")
    print("|---|---|---|---|---|" + "---|" * len(CANDIDATES))
    adamatch_won = 0
    for p in pairs:
        so, am = runs[p + ("source-only",)], runs[p + ("adamatch",)]
        truth = am["target_acc"] > so["target_acc"]
        adamatch_won += truth
        cells = []
        for c, f in CANDIDATES.items():
            says = f(am) > f(so)
            agree[c] += says == truth
            cells.append(f"{'AdaMatch' if says else 'source-only'} ({f(so):.3f} / {f(am):.3f})")
        print(f"| {p[0]} | {p[1]} | {p[2] or '-'} | {100 * so['target_acc']:.1f}% | {100 * am['target_acc']:.1f}% | "
              + " | ".join(cells) + " |")
    print()
    print(f"{len(pairs)} pairs; AdaMatch ahead on the target's labels in {adamatch_won}")
    for c in CANDIDATES:
        print(f"{c}: ranks {agree[c]} of {len(pairs)} pairs as the labels do")


if __name__ == "__main__":
    main()
