#!/usr/bin/env python3
"""A/B of `cllm bench --json` runs: every timed step over its floor, one bar per run.

usage: python3 docs/plot_ab.py --out PNG [--peer HF.json] [--title T] LABEL=FILE.json [LABEL=FILE.json ...]

Steps: each forward row (context c, n tokens) over its memory floor (bytes read / read bandwidth
measured in the same run), and the prefill over its compute floor (FLOPs / bf16 matmul rate
measured in the same run). --peer adds tests/reference/hf_peer_bench.py's prefill, over the first
run's compute floor (the same shape and tokens). Runs given twice under one label (alternated
rounds) are drawn as their mean, with each round as a dot.
"""
import argparse
import collections
import json

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def ratios(run):
    """{step name: time over its floor} of one bench JSON."""
    out = collections.OrderedDict()
    for r in run["forward"]:
        out[f"c{r['context']} n={r['n']}"] = r["forward_ms"] / r["floor_ms"]
    if run.get("prefill_tokens") and run.get("prefill_floor_ms"):
        out[f"prefill {run['prefill_tokens']}\n(compute floor)"] = run["prefill_ms"] / run["prefill_floor_ms"]
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--peer", help="hf_peer_bench.py JSON of the same run: its prefill is drawn too")
    ap.add_argument("--title", default="cllm bench: time over the floor measured in the same run")
    ap.add_argument("runs", nargs="+", help="LABEL=FILE.json (a label given twice: rounds of one binary)")
    args = ap.parse_args()

    by_label = collections.OrderedDict()
    first = None
    for item in args.runs:
        label, path = item.rsplit("=", 1)  # the path has no "=", a label may
        run = json.load(open(path))
        first = first or run
        by_label.setdefault(label, []).append(ratios(run))
    steps = list(next(iter(by_label.values()))[0].keys())
    fig, ax = plt.subplots(figsize=(max(7.0, 1.3 * len(steps) + 2), 4.4))
    width = 0.8 / (len(by_label) + (1 if args.peer else 0))
    for k, (label, rounds) in enumerate(by_label.items()):
        xs = [i + k * width for i in range(len(steps))]
        means = [sum(r[s] for r in rounds) / len(rounds) for s in steps]
        ax.bar(xs, means, width, label=label)
        for x, m in zip(xs, means):
            ax.text(x, m, f"{m:.2f}", ha="center", va="bottom", fontsize=7)
        if len(rounds) > 1:
            for r in rounds:
                ax.plot(xs, [r[s] for s in steps], ".", color="black", markersize=3)
    if args.peer:
        peer = json.load(open(args.peer))
        name = [s for s in steps if s.startswith("prefill")]
        if name and peer.get("prefill_ms"):
            i = steps.index(name[0])
            x = i + len(by_label) * width
            value = peer["prefill_ms"] / first["prefill_floor_ms"]
            ax.bar([x], [value], width, label=f"{peer.get('peer', 'peer')} (prefill)", color="grey")
            ax.text(x, value, f"{value:.2f}", ha="center", va="bottom", fontsize=7)
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(steps))])
    ax.set_xticklabels(steps, fontsize=8)
    ax.set_ylabel("time / floor")
    ax.set_title(args.title, fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(args.out, dpi=120)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
