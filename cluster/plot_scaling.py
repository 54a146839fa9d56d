#!/usr/bin/env python3
"""Tables and a plot from cluster/scaling_study.sh's JSON files (one `cllm bench --json` per model and TP).

usage: python3 cluster/plot_scaling.py DIR   -> DIR/scaling.md, DIR/scaling.png (if matplotlib exists)

Per (model, TP, n): ms per iteration (one forward of n tokens at the study's context), the ratio to
the per-rank floor measured in the same run, and the scaling efficiency t(TP=1) / (TP * t(TP)), the
fraction of a perfect TP-fold speedup (only when the TP=1 run of that model exists).
"""
import glob
import json
import os
import re
import sys


def load(directory):
    runs = {}
    for path in sorted(glob.glob(os.path.join(directory, "*_tp*.json"))):
        m = re.match(r"(.+)_tp(\d+)\.json$", os.path.basename(path))
        if not m:
            continue
        with open(path) as f:
            runs[(m.group(1), int(m.group(2)))] = json.load(f)
    return runs


def rows(runs):
    out = []
    for (model, tp), r in sorted(runs.items()):
        base = runs.get((model, 1))
        for fw in r["forward"]:
            t1 = None
            if base:
                t1 = next((b["forward_ms"] for b in base["forward"] if b["n"] == fw["n"] and b["context"] == fw["context"]), None)
            out.append({"model": model, "tp": tp, "n": fw["n"], "context": fw["context"], "ms": fw["forward_ms"],
                        "floor_ms": fw["floor_ms"], "vs_floor": fw["forward_ms"] / fw["floor_ms"],
                        "efficiency": (t1 / (tp * fw["forward_ms"])) if t1 else None,
                        "load_s": r.get("load_seconds"), "read_gbs": r.get("read_gbs")})
    return out


def markdown(table):
    lines = ["| model | TP | n | ms / iteration | per-rank floor ms | x floor | scaling efficiency | load s |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in table:
        eff = f"{100 * r['efficiency']:.0f}%" if r["efficiency"] is not None else "-"
        load = f"{r['load_s']:.1f}" if r["load_s"] is not None else "-"
        lines.append(f"| {r['model']} | {r['tp']} | {r['n']} | {r['ms']:.2f} | {r['floor_ms']:.2f} | "
                     f"{r['vs_floor']:.2f} | {eff} | {load} |")
    return "\n".join(lines) + "\n"


def plot(table, path):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("plot_scaling.py: matplotlib is not installed; table only", file=sys.stderr)
        return
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for model in sorted({r["model"] for r in table}):
        for n in sorted({r["n"] for r in table}):
            pts = sorted((r for r in table if r["model"] == model and r["n"] == n), key=lambda r: r["tp"])
            axes[0].plot([r["tp"] for r in pts], [r["ms"] for r in pts], "o-", label=f"{model} n={n}")
            axes[1].plot([r["tp"] for r in pts], [r["vs_floor"] for r in pts], "o-", label=f"{model} n={n}")
    axes[0].set_ylabel("ms per iteration")
    axes[1].set_ylabel("x per-rank floor")
    for ax in axes:
        ax.set_xlabel("tensor-parallel ranks")
        ax.set_xscale("log", base=2)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.savefig(path, dpi=120, bbox_inches="tight")


def main(argv):
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    runs = load(argv[1])
    if not runs:
        print(f"plot_scaling.py: no *_tpN.json files in {argv[1]}", file=sys.stderr)
        return 1
    table = rows(runs)
    text = markdown(table)
    with open(os.path.join(argv[1], "scaling.md"), "w") as f:
        f.write(text)
    print(text)
    plot(table, os.path.join(argv[1], "scaling.png"))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
