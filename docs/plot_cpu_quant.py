#!/usr/bin/env python3
"""cllm (native quantized weights) against llama.cpp on the CPU, from the JSON files that
tests/reference/llamacpp_peer_bench.py writes: decode tokens/s per alternated rep (left) and the
medians with cllm's read floor (right).

usage: python3 docs/plot_cpu_quant.py --out PNG LABEL=FILE.json [LABEL=FILE.json ...]
"""
import argparse
import json

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("series", nargs="+", help="LABEL=FILE.json (one peer-bench run each)")
    args = ap.parse_args()
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    labels, cllm, llama, floor = [], [], [], []
    for item in args.series:
        label, path = item.rsplit("=", 1)
        d = json.load(open(path))
        reps = range(len(d["runs"]))
        ax1.plot(reps, [r["cllm_tps"] for r in d["runs"]], marker="o", label=f"cllm ({label})")
        ax1.plot(reps, [r["llama_tps_eval"] for r in d["runs"]], marker="s", ls="--", label=f"llama.cpp ({label})")
        labels.append(label)
        cllm.append(d["medians"]["cllm_tps"])
        llama.append(d["medians"]["llama_tps_eval"])
        floor.append(1e3 / d["bench"]["floor_ms"])
    ax1.set_xlabel("rep (cllm and llama.cpp alternated)")
    ax1.set_ylabel("decode tokens/s")
    ax1.set_ylim(bottom=0)
    ax1.legend(fontsize=8)
    xs = range(len(labels))
    w = 0.27
    ax2.bar([x - w for x in xs], cllm, w, label="cllm AR decode")
    ax2.bar(list(xs), llama, w, label="llama.cpp decode")
    ax2.bar([x + w for x in xs], [0.7 * f for f in floor], w, label="70% of cllm's read floor")
    ax2.set_xticks(list(xs), labels)
    ax2.set_ylabel("tokens/s (median)")
    ax2.legend(fontsize=8)
    fig.suptitle("SmolLM2-135M-Instruct.Q4_1.gguf, greedy, same prompt and threads")
    fig.tight_layout()
    fig.savefig(args.out, dpi=120)


if __name__ == "__main__":
    main()
