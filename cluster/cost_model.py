#!/usr/bin/env python3
"""Projects one Jacobi iteration of a tensor-parallel LLaMA across GPUs and nodes with an alpha-beta
communication model, calibrated from all-reduce latencies measured on H200s (docs/results) and from
documented InfiniBand figures. Multi-node figures in docs/benchmarks.md come from this script.

usage: python3 cluster/cost_model.py [--allreduce FILE] [--hbm-gbs 4420] [--compute-ratio 1.9]
                                     [--ns 1,16,32] [--json OUT.json] [--plot OUT.png]

Model of one iteration of n tokens at tensor-parallel size P = G GPUs per node x N nodes:

  t_iter = compute + (2 L + 2) * t_allreduce(n * hidden * 2 bytes)
  compute = compute_ratio * (weight bytes / P + KV bytes / P) / HBM bandwidth

2 all-reduces per layer (after o and after down) plus the embedding's and the LM head's argmax (a tiny
max-loc, counted as a full all-reduce: an upper bound). compute_ratio is the measured time of a
single-GPU forward over its bandwidth floor (docs/benchmarks.md: 1.7-2.3x at 7B today); it is an input,
not a prediction, and the same ratio is assumed for every shard size (optimistic for small shards,
whose kernels are launch-bound).

All-reduce of S bytes:
  inside a node (G GPUs, one-shot over NVLink peer memory): a_nvl + (G - 1) * S / b_nvl
     a_nvl, b_nvl fitted by least squares to the 2-GPU "IPC graph" column measured in a CUDA graph;
     every GPU reads the G - 1 peer buffers, so the bandwidth term grows with G.
  across N nodes (hierarchical: reduce inside the node, then each GPU all-reduces its S / G slice over
  its own NIC with a tree, then broadcast inside the node):
     2 * t_intra(S) + 2 * ceil(log2 N) * a_ib + 2 * (N - 1) / N * (S / G) / b_ib
  Assumptions (documented figures, not measured here): one 400 Gb/s NDR port per GPU (DGX H100/H200
  layout), about 88% of its 50 GB/s reachable by NCCL (b_ib = 44 GB/s); a_ib = 5 us per tree stage,
  which covers NIC + switch (about 1-2 us for RDMA over one Quantum-2 hop) and the NCCL proxy's
  network hand-off. Change them with --ib-alpha-us / --ib-gbs.
"""
import argparse
import json
import math
import os
import sys

SHAPES = {  # name: (layers, hidden, heads, kv_heads, ffn, vocab) -- LLaMA-2 shapes
    "7b": (32, 4096, 32, 32, 11008, 32000),
    "13b": (40, 5120, 40, 40, 13824, 32000),
    "70b": (80, 8192, 64, 8, 28672, 32000),
}
DEFAULT_ALLREDUCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "docs", "results",
                                 "2026-11-28c_h200x2_allreduce.txt")


def weight_bytes(shape, dtype_bytes=2):
    layers, d, heads, kv, ffn, vocab = shape
    hd = d // heads
    per_layer = d * (heads * hd) + 2 * d * (kv * hd) + (heads * hd) * d + 3 * d * ffn + 2 * d
    return dtype_bytes * (layers * per_layer + 2 * vocab * d + d)


def kv_bytes(shape, context, dtype_bytes=2):
    layers, d, heads, kv, _, _ = shape
    return dtype_bytes * 2 * layers * context * kv * (d // heads)


def read_allreduce_table(path, column="IPC graph"):
    """(bytes, microseconds) pairs from the measured table (tests/gpu_mpi bench output)."""
    rows, header = [], None
    with open(path) as f:
        for line in f:
            if "bytes" in line and "elems" in line:
                header = line.split()
                continue
            parts = line.split()
            if header and len(parts) == 6 and parts[0].isdigit():
                # Columns: bytes elems "NCCL eager" "IPC eager" "NCCL graph" "IPC graph".
                index = {"NCCL eager": 2, "IPC eager": 3, "NCCL graph": 4, "IPC graph": 5}[column]
                rows.append((int(parts[0]), float(parts[index])))
    if not rows:
        raise SystemExit(f"{path}: no all-reduce rows found (expected the cllm_bench_allreduce table)")
    return rows


def fit_alpha_beta(rows, max_bytes=None):
    """Least squares t = alpha + S / beta over (bytes, us) rows; returns (alpha_us, beta_GBps)."""
    pts = [(s, t) for s, t in rows if max_bytes is None or s <= max_bytes]
    n = len(pts)
    mx = sum(s for s, _ in pts) / n
    my = sum(t for _, t in pts) / n
    sxx = sum((s - mx) ** 2 for s, _ in pts)
    slope = sum((s - mx) * (t - my) for s, t in pts) / sxx  # us per byte
    alpha = my - slope * mx
    return alpha, 1e-3 / slope  # bytes/us = MB/s; 1 / (us per byte) / 1e3 = GB/s


class Network:
    def __init__(self, nvl_alpha_us, nvl_gbs, ib_alpha_us, ib_gbs):
        self.nvl_alpha_us, self.nvl_gbs, self.ib_alpha_us, self.ib_gbs = nvl_alpha_us, nvl_gbs, ib_alpha_us, ib_gbs

    def intra_us(self, size_bytes, gpus):
        if gpus <= 1:
            return 0.0
        return self.nvl_alpha_us + (gpus - 1) * size_bytes / (self.nvl_gbs * 1e3)

    def allreduce_us(self, size_bytes, gpus_per_node, nodes):
        if nodes <= 1:
            return self.intra_us(size_bytes, gpus_per_node)
        inter = (2 * math.ceil(math.log2(nodes)) * self.ib_alpha_us +
                 2 * (nodes - 1) / nodes * (size_bytes / gpus_per_node) / (self.ib_gbs * 1e3))
        return 2 * self.intra_us(size_bytes, gpus_per_node) + inter


def project(shape_name, gpus_per_node, nodes, n, context, net, hbm_gbs, compute_ratio):
    shape = SHAPES[shape_name]
    layers, d = shape[0], shape[1]
    p = gpus_per_node * nodes
    rank_bytes = (weight_bytes(shape) + kv_bytes(shape, context)) / p
    floor_ms = rank_bytes / (hbm_gbs * 1e9) * 1e3
    compute_ms = compute_ratio * floor_ms
    calls = 2 * layers + 2 if p > 1 else 0
    ar_ms = calls * net.allreduce_us(n * d * 2, gpus_per_node, nodes) / 1e3 if p > 1 else 0.0
    total = compute_ms + ar_ms
    return {"model": shape_name, "gpus_per_node": gpus_per_node, "nodes": nodes, "tp": p, "n": n,
            "context": context, "floor_ms": floor_ms, "compute_ms": compute_ms, "allreduce_ms": ar_ms,
            "allreduce_calls": calls, "iteration_ms": total, "allreduce_share": ar_ms / total,
            "vs_floor": total / floor_ms}


def configurations():
    """Single-node TP 1..8 for every shape, then 70B across 2 and 4 nodes of 8 GPUs."""
    for name in SHAPES:
        for g in (1, 2, 4, 8):
            yield name, g, 1
    for nodes in (2, 4):
        yield "70b", 8, nodes
        yield "70b", 4, nodes


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--allreduce", default=DEFAULT_ALLREDUCE, help="measured all-reduce table (cllm_bench_allreduce)")
    ap.add_argument("--column", default="IPC graph", help="which measured column calibrates NVLink")
    ap.add_argument("--hbm-gbs", type=float, default=4420.0, help="measured HBM read bandwidth, GB/s (docs/benchmarks.md)")
    ap.add_argument("--compute-ratio", type=float, default=1.9,
                    help="measured single-GPU forward time over its bandwidth floor (docs/benchmarks.md)")
    ap.add_argument("--ib-alpha-us", type=float, default=5.0, help="latency per inter-node tree stage, us (assumed)")
    ap.add_argument("--ib-gbs", type=float, default=44.0, help="reachable bandwidth per GPU's NIC, GB/s (assumed)")
    ap.add_argument("--ns", default="1,16,32", help="tokens per iteration")
    ap.add_argument("--context", type=int, default=512)
    ap.add_argument("--json", help="write the projections here")
    ap.add_argument("--plot", help="write a plot here (needs matplotlib)")
    args = ap.parse_args(argv)

    rows = read_allreduce_table(args.allreduce, args.column)
    alpha, beta = fit_alpha_beta(rows, max_bytes=1 << 20)  # decode sizes: n * hidden * 2 <= 1 MiB
    net = Network(alpha, beta, args.ib_alpha_us, args.ib_gbs)
    print(f"NVLink one-shot all-reduce, fitted to {len(rows)} measured sizes ({args.column}): "
          f"alpha {alpha:.2f} us, beta {beta:.0f} GB/s; InfiniBand (assumed): alpha {args.ib_alpha_us} us/stage, "
          f"{args.ib_gbs} GB/s per GPU")
    for s, t in rows:
        print(f"  check: {s:>8} B measured {t:7.2f} us, model {net.intra_us(s, 2):7.2f} us")
    ns = [int(x) for x in args.ns.split(",")]
    out = [project(m, g, nodes, n, args.context, net, args.hbm_gbs, args.compute_ratio)
           for m, g, nodes in configurations() for n in ns]
    print(f"\n{'model':>5} {'nodes':>5} {'GPUs/node':>9} {'TP':>3} {'n':>3} {'floor ms':>9} {'iter ms':>8} "
          f"{'all-reduce':>10} {'x floor':>8}")
    for r in out:
        print(f"{r['model']:>5} {r['nodes']:>5} {r['gpus_per_node']:>9} {r['tp']:>3} {r['n']:>3} {r['floor_ms']:9.3f} "
              f"{r['iteration_ms']:8.3f} {100 * r['allreduce_share']:9.1f}% {r['vs_floor']:8.2f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"network": vars(net), "hbm_gbs": args.hbm_gbs, "compute_ratio": args.compute_ratio,
                       "context": args.context, "projections": out}, f, indent=2)
    if args.plot:
        plot(out, args.plot)
    return 0


def plot(out, path):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("--plot: matplotlib is not installed", file=sys.stderr)
        return
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for n, style in ((1, "o-"), (16, "s-"), (32, "^-")):
        pts = [r for r in out if r["model"] == "70b" and r["n"] == n and r["gpus_per_node"] == 8]
        pts.sort(key=lambda r: r["tp"])
        axes[0].plot([r["tp"] for r in pts], [r["iteration_ms"] for r in pts], style, label=f"70B n={n}")
        axes[1].plot([r["tp"] for r in pts], [100 * r["allreduce_share"] for r in pts], style, label=f"70B n={n}")
    axes[0].set_xscale("log", base=2)
    axes[1].set_xscale("log", base=2)
    axes[0].set_xlabel("TP (8 GPUs per node; 16 and 32 span 2 and 4 nodes)")
    axes[1].set_xlabel("TP")
    axes[0].set_ylabel("projected ms per iteration")
    axes[1].set_ylabel("all-reduce share of the iteration, %")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle("alpha-beta projection, calibrated on 2x H200 measurements (cluster/cost_model.py)")
    fig.savefig(path, dpi=120, bbox_inches="tight")


if __name__ == "__main__":
    sys.exit(main())
