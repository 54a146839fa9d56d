#!/usr/bin/env python3
"""Forward time vs block size n for several `cllm bench --json` files (one line per file and context):
how each change to the CUDA step moved a small model's Jacobi iteration cost relative to AR's.

usage: python3 docs/plot_step_cost.py --out PNG LABEL=FILE.json [LABEL=FILE.json ...]
"""
import argparse
import json

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--context", type=int, default=512, help="the context whose rows are plotted")
    ap.add_argument("series", nargs="+", help="LABEL=FILE.json")
    args = ap.parse_args()
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for item in args.series:
        label, path = item.rsplit("=", 1)  # the path has no "=", a label may
        rows = [r for r in json.load(open(path))["forward"] if r["context"] == args.context]
        rows.sort(key=lambda r: r["n"])
        ax.plot([r["n"] for r in rows], [r["forward_ms"] for r in rows], marker="o", label=label)
    ax.set_xlabel("block size n (tokens per forward)")
    ax.set_ylabel(f"forward ms (context {args.context})")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title("SmolLM2-135M shape on one H200: one forward, by block size")
    fig.tight_layout()
    fig.savefig(args.out, dpi=120)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
