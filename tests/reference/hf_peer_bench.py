#!/usr/bin/env python3
"""The peer for `cllm bench --device cuda`: HF transformers eager, same LLaMA shape, same n and context.

usage: python3 tests/reference/hf_peer_bench.py --shape 7b --ns 1,2,4,8,16,32,64 --contexts 128,512,2048,4096 \
           --json OUT.json [--prefill 2048]

Random bf16 weights of the named shape (the cost of a forward does not depend on the values).
For each context c: prefill c tokens into a DynamicCache, then time one forward of n new tokens
over that cache (the cache is cropped back to c after every timed call), median of --reps runs,
with torch.cuda.synchronize() around each. Also reports the HBM read bandwidth measured by a
torch reduction over 4 GiB, so the floor can be computed from the same run.
"""
import argparse
import json
import statistics
import time

import torch
from transformers import LlamaConfig, LlamaForCausalLM
from transformers.cache_utils import DynamicCache

SHAPES = {
    "7b": dict(vocab_size=32000, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
               num_attention_heads=32, num_key_value_heads=32),
    "13b": dict(vocab_size=32000, hidden_size=5120, intermediate_size=13824, num_hidden_layers=40,
                num_attention_heads=40, num_key_value_heads=40),
    "135m": dict(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                 num_attention_heads=9, num_key_value_heads=3, tie_word_embeddings=True),
}


def read_bandwidth_gbs(gib=4, reps=10):
    x = torch.empty(gib * (1 << 30) // 2, dtype=torch.bfloat16, device="cuda").uniform_()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        x.sum(dtype=torch.float32)
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return x.numel() * 2 / min(times) / 1e9


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", default="7b", choices=sorted(SHAPES))
    ap.add_argument("--ns", default="1,2,4,8,16,32,64")
    ap.add_argument("--contexts", default="128,512,2048,4096")
    ap.add_argument("--prefill", type=int, default=2048)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--json", required=True)
    args = ap.parse_args()
    ns = [int(v) for v in args.ns.split(",")]
    contexts = [int(v) for v in args.contexts.split(",")]

    torch.manual_seed(0)
    cfg = LlamaConfig(**SHAPES[args.shape], max_position_embeddings=8192)
    cfg._attn_implementation = "eager"
    # Built directly on the GPU in bf16: a CPU fp32 init of 7B takes minutes and 28 GB.
    torch.set_default_dtype(torch.bfloat16)
    with torch.device("cuda"):
        model = LlamaForCausalLM(cfg).eval()
    bw = read_bandwidth_gbs()
    print(f"HF peer: {args.shape}, torch {torch.__version__}, read bandwidth {bw:.0f} GB/s", flush=True)

    rows = []
    with torch.inference_mode():
        for c in contexts:
            ids = torch.randint(0, cfg.vocab_size, (1, c + max(ns)), device="cuda")
            cache = DynamicCache()
            model(ids[:, :c], past_key_values=cache, use_cache=True)
            for n in ns:
                times = []
                for r in range(args.reps + 1):
                    torch.cuda.synchronize()
                    t0 = time.perf_counter()
                    model(ids[:, c:c + n], past_key_values=cache, use_cache=True)
                    torch.cuda.synchronize()
                    if r > 0:  # the first call warms up kernels for this shape
                        times.append(time.perf_counter() - t0)
                    cache.crop(c)
                ms = statistics.median(times) * 1e3
                rows.append({"context": c, "n": n, "forward_ms": ms})
                print(f"  context {c:5d} n {n:3d}: {ms:8.2f} ms", flush=True)
        ids = torch.randint(0, cfg.vocab_size, (1, args.prefill), device="cuda")
        times = []
        for r in range(3):
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            model(ids, use_cache=False)
            torch.cuda.synchronize()
            if r > 0:
                times.append(time.perf_counter() - t0)
        prefill_ms = statistics.median(times) * 1e3
        print(f"  prefill {args.prefill}: {prefill_ms:.1f} ms", flush=True)

    with open(args.json, "w") as f:
        json.dump({"peer": "hf-transformers-eager", "torch": torch.__version__, "shape": args.shape,
                   "read_gbs": bw, "forward": rows, "prefill_tokens": args.prefill, "prefill_ms": prefill_ms}, f, indent=2)


if __name__ == "__main__":
    main()
