#!/usr/bin/env python3
"""Plots `cllm bench --json` results: forward time per block size n against the bandwidth floor.

usage: python3 docs/plot_bench.py RESULT.json [RESULT2.json ...] --out docs/img/bench.png [--labels A,B,...]
Each JSON file becomes one line (labelled by its model and device, or by --labels); the dashed
line of the same colour is that run's floor (bytes one step reads / read bandwidth measured in the
same run).
"""
import argparse
import json
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("results", nargs="+")
    ap.add_argument("--out", required=True)
    ap.add_argument("--peer", help="hf_peer_bench.py JSON from the same run, drawn dotted per context")
    ap.add_argument("--contexts", help="comma-separated contexts to draw (default: all)")
    ap.add_argument("--labels", help="comma-separated line labels, one per result file (default: model (device))")
    ap.add_argument("--title", default="cllm: one forward over n tokens vs the memory-bandwidth floor")
    args = ap.parse_args()

    labels = args.labels.split(",") if args.labels else None
    if labels and len(labels) != len(args.results):
        ap.error(f"--labels has {len(labels)} labels for {len(args.results)} result files")
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for i, path in enumerate(args.results):
        with open(path) as f:
            r = json.load(f)
        by_ctx = {}
        for row in r["forward"]:
            by_ctx.setdefault(row.get("context", 0), []).append(row)
        name = labels[i] if labels else f'{os.path.basename(r["model"].rstrip("/"))} ({r["device"]})'
        for ctx, rows in sorted(by_ctx.items()):
            if args.contexts and str(ctx) not in args.contexts.split(","):
                continue
            ns = [row["n"] for row in rows]
            line, = ax.plot(ns, [row["forward_ms"] for row in rows], "o-", label=f"{name}, context {ctx}")
            ax.plot(ns, [row["floor_ms"] for row in rows], "--", color=line.get_color(),
                    label=f'floor (read {r["read_gbs"]:.1f} GB/s)')
    if args.peer:
        with open(args.peer) as f:
            peer = json.load(f)
        by_ctx = {}
        for row in peer["forward"]:
            by_ctx.setdefault(row["context"], []).append(row)
        for ctx, rows in sorted(by_ctx.items()):
            if args.contexts and str(ctx) not in args.contexts.split(","):
                continue
            ax.plot([r["n"] for r in rows], [r["forward_ms"] for r in rows], ":x",
                    label=f'HF transformers eager (torch {peer["torch"]}), context {ctx}')
    ax.set_xscale("log", base=2)
    ax.set_xlabel("tokens per forward (n)")
    ax.set_ylabel("forward time (ms)")
    ax.set_title(args.title, fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    fig.tight_layout()
    fig.savefig(args.out, dpi=120)
    print("wrote", args.out)


if __name__ == "__main__":
    main()
