#!/usr/bin/env python3
"""The CPU peer for `cllm generate --decode ar`: llama.cpp (llama-cpp-python) on the same GGUF file.

usage: python3 tests/reference/llamacpp_peer_bench.py --cllm build/cllm --model FILE.gguf \
           [--prompt TEXT] [--max-new-tokens 128] [--threads 2] [--reps 5] [--weights native] [--json OUT.json]

Runs cllm and llama.cpp alternately --reps times each (the machine may be shared: alternating
spreads other load over both), same file, same prompt, greedy, same threads, and reports decode
tokens/s only (prompt processing excluded) as medians:
  cllm:      `cllm generate --prompts P --json-out J`: (tokens - 1) / decode_seconds (the first token
             comes from the prompt's forward, timed as prefill);
  llama.cpp: the prompt evaluated once, then one Llama.eval (llama_decode) per token with the argmax
             of the last logits fed back. Two rates: the time inside eval only (the forwards and the
             logits copy) and the wall clock of the whole loop (+ the numpy argmax). The eval-only
             rate, the faster of the two, is the one cllm is compared with (cllm's decode time
             includes its argmax).
llama.cpp decodes as many tokens as cllm did in the same rep (cllm stops at EOS), so both run over
the same context lengths. Also runs `cllm bench` once for the bytes per step and the read floor.
llama-cpp-python must be importable (a venv built from PyPI's sdist with the CPU's features);
--no-extra-bufts keeps llama.cpp on its AVX/VNNI dot products where its AMX path faults.
"""
import argparse
import json
import os
import re
import statistics
import subprocess
import tempfile
import time

import numpy as np


def cllm_run(args, prompts_path, tmp):
    out = os.path.join(tmp, "cllm.jsonl")
    cmd = [args.cllm, "generate", "--model", args.model, "--weights", args.weights, "--threads", str(args.threads),
           "--decode", "ar", "--max-new-tokens", str(args.max_new_tokens), "--prompts", prompts_path,
           "--json-out", out]
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    with open(out) as f:
        line = json.loads(f.readline())
    ar = line["ar"]
    return {"tokens": ar["tokens"], "decode_tps": (ar["tokens"] - 1) / ar["decode_seconds"], "ids": ar["ids"],
            "prompt_ids": line["prompt_ids"]}


def last_logits_argmax(llm):
    import llama_cpp.llama_cpp as lc  # Llama.scores stays zero without logits_all: read the context's row
    return int(np.argmax(np.ctypeslib.as_array(lc.llama_get_logits_ith(llm.ctx, -1), shape=(llm.n_vocab(),))))


def llama_run(llm, prompt_ids, n_tokens):
    llm.reset()
    llm.eval(prompt_ids)
    ids = [last_logits_argmax(llm)]
    in_eval = 0.0
    t0 = time.perf_counter()
    while len(ids) < n_tokens:
        t = time.perf_counter()
        llm.eval([ids[-1]])
        in_eval += time.perf_counter() - t
        ids.append(last_logits_argmax(llm))
    wall = time.perf_counter() - t0
    return {"tokens": len(ids), "ids": ids, "decode_tps_eval": (len(ids) - 1) / in_eval,
            "decode_tps_wall": (len(ids) - 1) / wall}


def cllm_bench(args):
    cmd = [args.cllm, "bench", "--model", args.model, "--weights", args.weights, "--threads", str(args.threads),
           "--ns", "1,16", "--contexts", "128"]
    text = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    m = re.search(r"AR decode: ([\d.]+) tokens/s .*floor ([\d.]+) ms/token \(([\d.]+) MB/step\): (\d+)%", text)
    rows = re.findall(r"^\s+128\s+(\d+)\s+([\d.]+)", text, re.M)
    fwd = {int(n): float(ms) for n, ms in rows}
    return {"ar_tps": float(m.group(1)), "floor_ms": float(m.group(2)), "mb_per_step": float(m.group(3)),
            "of_floor": int(m.group(4)) / 100, "forward_ms": fwd, "text": text}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cllm", default="build/cllm")
    ap.add_argument("--model", default="models/SmolLM2-135M-Instruct.Q4_1.gguf")
    ap.add_argument("--prompt", default="def fibonacci(n):")
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--weights", default="native")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--no-extra-bufts", action="store_true",
                    help="llama.cpp without its extra weight buffer types (AMX tiles, repacking): for a build "
                         "whose AMX path the CPU or hypervisor does not run")
    ap.add_argument("--json")
    args = ap.parse_args()

    import llama_cpp
    import llama_cpp.llama_cpp
    if args.no_extra_bufts:
        default_params = llama_cpp.llama_cpp.llama_model_default_params

        def params_without_extra_bufts():
            p = default_params()
            p.use_extra_bufts = False
            return p

        llama_cpp.llama_cpp.llama_model_default_params = params_without_extra_bufts
    llm = llama_cpp.Llama(model_path=args.model, n_ctx=1024, n_threads=args.threads, n_threads_batch=args.threads,
                          n_batch=512, logits_all=False, verbose=False, no_perf=False)
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        prompts_path = os.path.join(tmp, "prompts.txt")
        with open(prompts_path, "w") as f:
            f.write(args.prompt + "\n")
        cllm_run(args, prompts_path, tmp)  # warm-up: page cache, CPU frequency
        for rep in range(args.reps):
            c = cllm_run(args, prompts_path, tmp)
            l = llama_run(llm, c["prompt_ids"], c["tokens"])
            same = sum(1 for _ in zip(c["ids"], l["ids"]) if _[0] == _[1])
            prefix = next((i for i, (a, b) in enumerate(zip(c["ids"], l["ids"])) if a != b), min(c["tokens"], l["tokens"]))
            runs.append({"cllm_tps": c["decode_tps"], "llama_tps_eval": l["decode_tps_eval"],
                         "llama_tps_wall": l["decode_tps_wall"], "tokens": c["tokens"], "same_prefix": prefix})
            print(f"rep {rep}: cllm {c['decode_tps']:.1f} tokens/s | llama.cpp {l['decode_tps_eval']:.1f} "
                  f"(eval), {l['decode_tps_wall']:.1f} (wall) | {c['tokens']} tokens, outputs agree for the first "
                  f"{prefix} ({same} positions equal)", flush=True)
    bench = cllm_bench(args)
    med = {k: statistics.median(r[k] for r in runs) for k in ("cllm_tps", "llama_tps_eval", "llama_tps_wall")}
    ratio = med["cllm_tps"] / med["llama_tps_eval"]
    of_floor = bench["floor_ms"] * med["cllm_tps"] / 1e3
    n16 = bench["forward_ms"].get(16, float("nan")) / bench["forward_ms"].get(1, float("nan"))
    print(f"medians over {args.reps} alternated reps: cllm {med['cllm_tps']:.1f} tokens/s, llama.cpp "
          f"{med['llama_tps_eval']:.1f} (eval) / {med['llama_tps_wall']:.1f} (wall): cllm {ratio:.2f}x llama.cpp")
    print(f"cllm reads {bench['mb_per_step']:.1f} MB per step; floor {bench['floor_ms']:.2f} ms/token: "
          f"generate's median decode is {100 * of_floor:.0f}% of the floor (bench's AR: {bench['ar_tps']:.1f} tokens/s, "
          f"{100 * bench['of_floor']:.0f}%); n=16 forward / n=1 forward = {n16:.2f}x")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "runs": runs, "medians": med, "cllm_over_llamacpp": ratio,
                       "of_floor": of_floor, "n16_over_n1": n16, "bench": bench,
                       "llama_cpp_version": llama_cpp.__version__, "nproc": os.cpu_count()}, f, indent=1)


if __name__ == "__main__":
    main()
