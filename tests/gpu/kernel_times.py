#!/usr/bin/env python3
"""Where a GPU step's time goes: per-kernel durations of `cllm bench` under Nsight Compute.

    python3 tests/gpu/kernel_times.py --cllm build-gpu/cllm --model random:7b --n 1 [--context 512]
        [--skip 3000] [--count 400] [--out DIR]

Runs `cllm bench --cuda-graphs off` (so every kernel is a launch ncu can see) under
`ncu --metrics gpu__time_duration.sum`, skips the first --skip kernels (loading and warm-up), records
the next --count, and prints one row per kernel and grid: how many, the mean duration in
microseconds, and the total. Each kernel runs alone under ncu (no launch overlap, clocks left as
they are), so the sum is more than the step takes with overlapped launches: the table says which
kernels matter, the bench says how long the step is. Raw CSV in --out when given.
"""
import argparse
import collections
import csv
import io
import os
import shutil
import subprocess
import sys


def parse_rows(text):
    """(kernel name without template arguments, grid, microseconds) per profiled launch."""
    lines = [line for line in text.splitlines() if line.startswith('"')]
    if not lines:
        return []
    reader = csv.reader(io.StringIO("\n".join(lines)))
    header = next(reader)
    name_i, value_i = header.index("Kernel Name"), header.index("Metric Value")
    unit_i = header.index("Metric Unit") if "Metric Unit" in header else None
    grid_i = header.index("Grid Size") if "Grid Size" in header else None
    scale = {"nsecond": 1e-3, "ns": 1e-3, "usecond": 1.0, "us": 1.0, "msecond": 1e3, "ms": 1e3}
    rows = []
    for r in reader:
        name = r[name_i].replace("(anonymous namespace)::", "").replace("void ", "")
        name = name.split("<")[0].split("(")[0].split("::")[-1]
        unit = r[unit_i] if unit_i is not None else "nsecond"
        us = float(r[value_i].replace(",", "")) * scale.get(unit, 1e-3)
        rows.append((name, r[grid_i] if grid_i is not None else "", us))
    return rows


def table(rows):
    total = collections.defaultdict(float)
    count = collections.Counter()
    for name, grid, us in rows:
        total[(name, grid)] += us
        count[(name, grid)] += 1
    out = [f"{len(rows)} kernels, {sum(total.values()):.1f} us (each kernel alone, serialised)",
           f"{'kernel':34s} {'grid':16s} {'count':>5s} {'mean us':>9s} {'total us':>10s}"]
    for key in sorted(total, key=lambda k: -total[k]):
        out.append(f"{key[0][:34]:34s} {key[1][:16]:16s} {count[key]:5d} {total[key] / count[key]:9.2f} "
                   f"{total[key]:10.1f}")
    return "\n".join(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cllm", required=True, help="the cllm binary of a CUDA build")
    ap.add_argument("--model", default="random:7b", help="as `cllm bench --model` (default random:7b)")
    ap.add_argument("--n", type=int, default=1, help="tokens per forward (default 1)")
    ap.add_argument("--context", type=int, default=512, help="context before the block (default 512)")
    ap.add_argument("--skip", type=int, default=3000, help="kernels skipped first: loading, warm-up")
    ap.add_argument("--count", type=int, default=400, help="kernels profiled")
    ap.add_argument("--ncu", default="ncu", help="the Nsight Compute CLI (default: ncu on PATH)")
    ap.add_argument("--out", help="folder for the raw CSV")
    args = ap.parse_args()
    if shutil.which(args.ncu) is None:
        sys.exit(f"kernel_times: '{args.ncu}' not found: Nsight Compute is needed")
    if not os.access(args.cllm, os.X_OK):
        sys.exit(f"kernel_times: '{args.cllm}' is not an executable")
    # Enough forwards that --skip + --count kernels are reached whatever the model's kernel count.
    cmd = [args.ncu, "--clock-control", "none", "--metrics", "gpu__time_duration.sum", "--csv",
           "--launch-skip", str(args.skip), "--launch-count", str(args.count),
           args.cllm, "bench", "--device", "cuda", "--model", args.model, "--ns", str(args.n),
           "--contexts", str(args.context), "--reps", "40", "--tokens", "4", "--cuda-graphs", "off"]
    print("$ " + " ".join(cmd), file=sys.stderr)
    run = subprocess.run(cmd, capture_output=True, text=True)
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        tag = f"{args.model.replace(':', '_').replace('/', '_')}_n{args.n}_c{args.context}"
        with open(os.path.join(args.out, f"kernel_times_{tag}.csv"), "w") as f:
            f.write(run.stdout)
    rows = parse_rows(run.stdout)
    if run.returncode != 0 or not rows:
        sys.stderr.write(run.stderr[-2000:])
        sys.exit(f"kernel_times: ncu exited {run.returncode} with {len(rows)} kernel rows")
    print(f"{args.model}, n={args.n}, context {args.context}: " + table(rows))


if __name__ == "__main__":
    main()
