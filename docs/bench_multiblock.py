#!/usr/bin/env python3
"""Multi-block Jacobi on the CPU: tokens per forward and decode rate against AR for K blocks in flight.

Each run is one `cllm generate --decode both` over the same prompts (AR, then Jacobi with the setting,
in one process), so its speedup is a ratio measured in one run. Settings run in turn, round after
round (a shared machine drifts; alternating spreads the drift over them all), and the JSON keeps every
run so the report can give medians and spreads.

usage: python3 docs/bench_multiblock.py --prompts P.jsonl --out RESULTS.json [--rounds 3] [--only TEXT --append]
       python3 docs/bench_multiblock.py --plot RESULTS.json --png docs/img/cpu_multiblock.png
"""
import argparse
import json
import re
import statistics
import subprocess
import time

TOTAL = re.compile(r"^\[(ar|jacobi)\] \d+ prompts: (\d+) tokens, (\d+) iterations .* \(([\d.]+) tokens/s\)")
SOURCES = re.compile(r"^\[jacobi\] accepted .*: block (\d+), later blocks (\d+), pool (\d+), recycled (\d+)")
VERSUS = re.compile(r"^jacobi vs ar: decode speedup ([\d.]+)x .*, (\d+)/(\d+) outputs identical")

LOOKAHEAD = ["--candidates", "4", "--ngram", "4"]
# (label, flags): the blockwise window (the CLLM paper's mode) and the sliding one, each without and
# with lookahead candidates, for K = 1, 2, 3 blocks of 4 guesses; and, for the same rows, one
# blockwise block of 4K guesses with the candidates.
SETTINGS = [
    (f"{window} n=4 K={k}{' +4x4' if cand else ''}",
     ["--window", window, "--block", "4", "--blocks", str(k)] + (LOOKAHEAD if cand else []))
    for window in ("blockwise", "sliding") for cand in (False, True) for k in (1, 2, 3)
] + [(f"blockwise n={4 * k} K=1 +4x4", ["--window", "blockwise", "--block", str(4 * k)] + LOOKAHEAD) for k in (2, 3)]


def run(binary, model, prompts, max_new, flags):
    cmd = [binary, "generate", "--model", model, "--prompts", prompts, "--decode", "both", "--max-new-tokens",
           str(max_new), "--quiet"] + flags
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({out.returncode}):\n{out.stdout}\n{out.stderr}")
    r = {"command": " ".join(cmd)}
    for line in out.stdout.splitlines():
        if m := TOTAL.match(line):
            r[m[1]] = {"tokens": int(m[2]), "forwards": int(m[3]), "tokens_per_second": float(m[4])}
        elif m := SOURCES.match(line):
            r["accepted"] = dict(zip(("block", "later", "pool", "recycled"), map(int, m.groups())))
        elif m := VERSUS.match(line):
            r["speedup"], r["identical"], r["prompts"] = float(m[1]), int(m[2]), int(m[3])
    return r


def measure(args):
    results = {"date": time.strftime("%Y-%m-%d"), "machine": "2-core x86-64 CPU", "commit": args.commit,
               "prompts": args.prompts, "max_new_tokens": args.max_new_tokens, "runs": {}}
    if args.append:  # more runs into an earlier file (its date and commit stay)
        results = json.load(open(args.out))
    for rnd in range(args.rounds):
        for label, flags in SETTINGS:
            if args.only and args.only not in label:
                continue
            r = run(args.binary, args.model, args.prompts, args.max_new_tokens, flags)
            results["runs"].setdefault(label, []).append(r)
            print(f"round {rnd + 1} {label}: {r['jacobi']['tokens'] / r['jacobi']['forwards']:.2f} tokens/forward, "
                  f"{r['speedup']:.2f}x AR, {r['identical']}/{r['prompts']} identical, accepted {r['accepted']}",
                  flush=True)
            with open(args.out, "w") as f:
                json.dump(results, f, indent=1)


def summary(results):
    rows = []
    for label, runs in results["runs"].items():
        j = runs[0]["jacobi"]
        rows.append(dict(label=label, tpf=j["tokens"] / j["forwards"],
                         ar_tpf=runs[0]["ar"]["tokens"] / runs[0]["ar"]["forwards"],
                         speedups=[r["speedup"] for r in runs], median=statistics.median(r["speedup"] for r in runs),
                         accepted=runs[0]["accepted"], identical=all(r["identical"] == r["prompts"] for r in runs)))
    return rows


def plot(args):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    results = json.load(open(args.plot))
    rows = summary(results)
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4.2))
    groups = {}
    for r in rows:
        name, k = r["label"].rsplit(" K=", 1)
        k, extra = (k.split(" ", 1) + [""])[:2]
        window, n = name.split(" n=")
        if n != "4":  # one block of 4K guesses: plotted at the K whose rows it matches
            name, k = f"{window} one block of 4K", int(n) // 4
        groups.setdefault(f"{name} {extra}".strip(), []).append((int(k), r))
    for name, pts in groups.items():
        pts.sort(key=lambda p: p[0])
        ks = [p[0] for p in pts]
        a1.plot(ks, [p[1]["tpf"] for p in pts], marker="o", label=name)
        line, = a2.plot(ks, [p[1]["median"] for p in pts], marker="o", label=name)
        for k, r in pts:
            a2.scatter([k] * len(r["speedups"]), r["speedups"], s=8, alpha=0.35, color=line.get_color())
    a1.set_title("tokens per forward (prefill counted)")
    a2.set_title("decode rate / AR's (median, dots: runs)")
    a2.axhline(1.0, color="gray", lw=0.8)
    for a in (a1, a2):
        a.set_xlabel("blocks in flight K (4 guesses each)")
        a.set_xticks([1, 2, 3])
        a.grid(alpha=0.3)
    a1.legend(fontsize=8)
    fig.suptitle(f"base SmolLM2-135M on a 2-core CPU, {results['date']}, commit {results['commit']}", fontsize=10)
    fig.tight_layout()
    fig.savefig(args.png, dpi=120)
    for r in rows:
        print(f"| {r['label']} | {r['tpf']:.2f} | {', '.join(f'{s:.2f}' for s in r['speedups'])}; "
              f"**{r['median']:.2f}x** | {r['accepted']['block']} / {r['accepted']['later']} / "
              f"{r['accepted']['pool']} / {r['accepted']['recycled']} | {'yes' if r['identical'] else 'NO'} |")
    print(f"wrote {args.png}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--binary", default="build/cllm")
    ap.add_argument("--model", default="models/SmolLM2-135M-Instruct.Q4_1.gguf")
    ap.add_argument("--prompts")
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--append", action="store_true", help="add the runs to --out's earlier ones")
    ap.add_argument("--only", help="run only the settings whose label contains this")
    ap.add_argument("--commit", default="")
    ap.add_argument("--out")
    ap.add_argument("--plot", help="a RESULTS.json to plot and tabulate")
    ap.add_argument("--png")
    args = ap.parse_args()
    if args.plot:
        plot(args)
    else:
        measure(args)


if __name__ == "__main__":
    main()
