#!/usr/bin/env python3
"""Plot of lookahead runs (`cllm generate --prompts ... --decode both --block B --candidates G --ngram N`,
one log per setting, named la_bB_gG_nN.log as tests/gpu/run's lookahead step names them): tokens per
forward and decode rate over AR per setting, with whether every output equalled AR's.

usage: python3 docs/plot_lookahead.py OUT.png LOG [LOG ...]
"""
import os
import re
import sys


def parse(path):
    text = open(path).read()
    name = os.path.splitext(os.path.basename(path))[0]
    b, g, n = (int(x) for x in re.search(r"b(\d+)_g(\d+)_n(\d+)", name).groups())
    jacobi = re.search(r"^\[jacobi\].*\(([0-9.]+) tokens/iteration\)", text, re.M)
    speedup = re.search(r"^jacobi vs ar: decode speedup ([0-9.]+)x.*?(\d+)/(\d+) outputs identical", text, re.M)
    if not jacobi or not speedup:
        raise SystemExit(f"{path}: no jacobi summary lines")
    same, total = int(speedup.group(2)), int(speedup.group(3))
    return {"label": f"{b} + {g}x{n - 1}" if g else f"{b} (plain)", "rows": b + g * (n - 1),
            "tpf": float(jacobi.group(1)), "speedup": float(speedup.group(1)), "exact": same == total}


def main(argv):
    if len(argv) < 3:
        print(__doc__, file=sys.stderr)
        return 2
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    runs = sorted((parse(p) for p in argv[2:]), key=lambda r: (r["rows"], r["label"]))
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    x = range(len(runs))
    colors = ["tab:blue" if r["exact"] else "tab:red" for r in runs]
    axes[0].bar(x, [r["tpf"] for r in runs], color=colors)
    axes[0].set_ylabel("generated tokens per forward")
    axes[1].bar(x, [r["speedup"] for r in runs], color=colors)
    axes[1].axhline(1.0, color="gray", lw=0.8)
    axes[1].set_ylabel("decode rate / AR's")
    for ax in axes:
        ax.set_xticks(list(x))
        ax.set_xticklabels([f"{r['label']}\n{r['rows']} rows" for r in runs], fontsize=7)
        ax.set_xlabel("block + candidates x branch rows")
        ax.grid(alpha=0.3, axis="y")
    fig.suptitle("blue: every output equal to AR's; red: some differ (forward rows past the invariant limit)",
                 fontsize=9)
    fig.savefig(argv[1], dpi=120, bbox_inches="tight")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
