#!/usr/bin/env python3
"""Plot of tests/server/bench_serve.py results: aggregate tokens/s and inter-token latency against the
number of concurrent streams, one line per mode (ar, jacobi, jacobiN, auto) and JSON file (e.g. one per
TP size).

usage: python3 docs/plot_serving.py OUT.png RESULT.json [RESULT.json ...]
"""
import json
import os
import sys


def main(argv):
    if len(argv) < 3:
        print(__doc__, file=sys.stderr)
        return 2
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for path in argv[2:]:
        label = os.path.splitext(os.path.basename(path))[0]
        results = json.load(open(path))["results"]
        modes = list(dict.fromkeys(r["mode"] for r in results))  # in the order the bench ran them
        for mode, style in zip(modes, ("o-", "s--", "^-.", "d:", "v-")):
            rows = sorted((r for r in results if r["mode"] == mode), key=lambda r: r["concurrency"])
            c = [r["concurrency"] for r in rows]
            axes[0].plot(c, [r["aggregate_tok_s"] for r in rows], style, label=f"{label} {mode}")
            axes[1].plot(c, [r["itl_ms_p50"] for r in rows], style, label=f"{label} {mode} p50")
    axes[0].set_ylabel("aggregate generated tokens/s")
    axes[1].set_ylabel("inter-token latency, ms")
    for ax in axes:
        ax.set_xscale("log", base=2)
        ax.set_xlabel("concurrent streams")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.savefig(argv[1], dpi=120, bbox_inches="tight")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
