#!/usr/bin/env python3
"""Serving load benchmark for a running `cllm serve` (python3 standard library only).

For each decode mode and each concurrency C, C clients each send --requests
streaming /v1/completions requests one after another (a closed loop: C requests in flight at any
time), every one generating exactly --max-tokens tokens (cllm_ignore_eos). Reported per run:

  aggregate tok/s   generated tokens of all requests / wall time of the run
  stream tok/s      per request, tokens after its first chunk / time from the first chunk to the
                    last: its decode rate (median over requests)
  TTFT p50/p99      request sent -> first text chunk, seen by the client
  ITL p50/p99       inter-token latency: the gap between successive text chunks of a request,
                    divided among the tokens the later chunk carries (every chunk says how many
                    tokens the request has so far, cllm.completion_tokens; a Jacobi iteration
                    can make several final at once, and they then share one gap)
  TPOT p50          1 / stream tok/s per request: mean time per output token after the first
  steps, rows/step, seqs/step   from /metrics deltas: how many batched forwards the run took and
                    how much work shared each one (cllm_forward_steps_total, cllm_step_rows,
                    cllm_step_sequences)

Decode modes (--modes, comma-separated):
  ar        cllm_decode "ar": greedy AR, one row per sequence per step
  jacobiN   a fixed Jacobi block of N (cllm_block N), e.g. jacobi16
  jacobi    Jacobi with --block as cllm_block (0: whatever the server's --block is)
  auto      Jacobi with no cllm_block: the server's --block, which must be `auto` (the default), so
            the load-adaptive policy picks the blocks (a run where every step used one block > 1
            is flagged: the server is probably pinned)
--compare-adaptive is --modes ar,jacobi16,auto (with the default --concurrency 1,4,16,64): AR, a
fixed block of 16 and the adaptive policy (start the server with its default --block auto). Each
run also reports the mean block the server ran (from cllm_decode_blocks_total).

Server overhead, two ways:
  1. per request, in the same run: the server times each request inside its engine, from
     admission (after the HTTP parse and tokenization) to the first token and to the end, and
     returns it in the final chunk's `cllm` object (server_ttft_s, server_total_s). The client's
     TTFT minus server_ttft_s is the request path (HTTP, JSON, tokenizer) plus first-chunk
     delivery; client total minus server_total_s adds the final delivery. Reported as
     "overhead ms" p50 (TTFT side and total side).
  2. the engine without a server: with --generate-bin, `cllm generate` decodes the same prompt
     with the same model flags (--generate-args) and the script compares its decode tokens/s
     with the server's single-stream (C=1) decode rate. This includes the engine loop's own
     costs (batch assembly, detokenizing, metrics) that (1) cannot see.

Examples (a GPU server; random LLaMA-2-7B weights, no checkpoint file):
  build-gpu/cllm serve --model random:7b --device cuda --max-batch 64 --max-context 1024 --port 8000 &
  python3 tests/server/bench_serve.py --url http://127.0.0.1:8000 --concurrency 1,4,16,64 \\
      --requests 4 --max-tokens 128 --modes ar,jacobi --block 16 --json bench_serve_7b.json \\
      --generate-bin build-gpu/cllm --generate-args "--model random:7b --device cuda"
  python3 tests/server/bench_serve.py --compare-adaptive --requests 4 --max-tokens 128 --json adaptive.json
A quick smoke run on a CPU: --compare-adaptive --concurrency 1,2 --requests 1 --max-tokens 4 --warmup 0
"""
import argparse
import http.client
import json
import os
import statistics
import subprocess
import tempfile
import threading
import time
import urllib.parse

DEFAULT_PROMPT = ("Continuous batching lets many requests share each forward pass of a language model, "
                  "so the weights are read once per step for all of them. ")


def pct(values, q):
    """The q-th percentile (0..100) by linear interpolation; None for no values."""
    if not values:
        return None
    v = sorted(values)
    k = (len(v) - 1) * q / 100.0
    lo = int(k)
    hi = min(lo + 1, len(v) - 1)
    return v[lo] + (v[hi] - v[lo]) * (k - lo)


class Server:
    def __init__(self, url, api_key):
        u = urllib.parse.urlparse(url)
        self.host, self.port = u.hostname, u.port or 80
        self.headers = {"Content-Type": "application/json"}
        if api_key:
            self.headers["Authorization"] = f"Bearer {api_key}"

    def get(self, path):
        c = http.client.HTTPConnection(self.host, self.port, timeout=60)
        c.request("GET", path, headers=self.headers)
        r = c.getresponse()
        body = r.read().decode()
        c.close()
        if r.status != 200:
            raise RuntimeError(f"GET {path}: {r.status} {body[:200]}")
        return body

    def metrics(self):
        """Counters and histogram sums/counts of /metrics as {name: value} (unlabelled lines), and
        the decode iterations per block size as {"block:N": count}."""
        out = {}
        for line in self.get("/metrics").splitlines():
            if line.startswith("cllm_decode_blocks_total{"):
                name, value = line.split()
                out["block:" + name.split('"')[1]] = float(value)
            elif line and not line.startswith("#") and "{" not in line:
                name, value = line.split()
                out[name] = float(value)
        return out

    def stream(self, body):
        """One streaming completion; returns the client-side timeline of its text chunks."""
        c = http.client.HTTPConnection(self.host, self.port, timeout=3600)
        payload = json.dumps(body)
        t0 = time.perf_counter()
        c.request("POST", "/v1/completions", body=payload, headers=self.headers)
        r = c.getresponse()
        if r.status != 200:
            raise RuntimeError(f"POST /v1/completions: {r.status} {r.read()[:300]!r}")
        chunks, usage, cllm = [], None, None
        while True:
            line = r.readline()
            if not line:
                break
            line = line.strip()
            if not line.startswith(b"data: "):
                continue
            data = line[6:]
            if data == b"[DONE]":
                break
            t = time.perf_counter()
            j = json.loads(data)
            if "error" in j:
                raise RuntimeError(f"stream error: {j['error']}")
            if j.get("choices") and j["choices"][0].get("text"):
                # (arrival time, tokens generated so far): the server counts them in every chunk.
                chunks.append((t, (j.get("cllm") or {}).get("completion_tokens")))
            usage = j.get("usage") or usage
            cllm = j.get("cllm") or cllm
        t_end = time.perf_counter()
        c.close()
        return {"t0": t0, "chunks": chunks, "end": t_end, "tokens": (usage or {}).get("completion_tokens", 0),
                "cllm": cllm or {}}


def mode_block(mode, args):
    """(cllm_decode, cllm_block or None) of a --modes entry."""
    if mode == "ar":
        return "ar", None
    if mode == "auto":
        return "jacobi", None
    if mode == "jacobi":
        return "jacobi", args.block or None
    if mode.startswith("jacobi") and mode[6:].isdigit():
        return "jacobi", int(mode[6:])
    raise SystemExit(f"--modes: unknown mode '{mode}' (ar, auto, jacobi or jacobiN)")


def run(server, args, mode, concurrency):
    decode, block = mode_block(mode, args)
    body = {"max_tokens": args.max_tokens, "stream": True, "stream_options": {"include_usage": True},
            "cllm_ignore_eos": True, "cllm_decode": decode}
    if block:
        body["cllm_block"] = block
    results, errors = [], []
    lock = threading.Lock()

    def client(c):
        for i in range(args.requests):
            b = dict(body, prompt=f"Request {c}.{i}. " + args.prompt)
            try:
                res = server.stream(b)
            except Exception as e:  # noqa: BLE001 -- reported, not fatal to the other clients
                with lock:
                    errors.append(str(e))
                continue
            with lock:
                results.append(res)

    before = server.metrics()
    threads = [threading.Thread(target=client, args=(c,)) for c in range(concurrency)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    after = server.metrics()
    delta = {k: after.get(k, 0) - before.get(k, 0) for k in after}

    ttft, itl, tpot, rates, over_first, over_total, tpi = [], [], [], [], [], [], []
    tokens = 0
    for r in results:
        tokens += r["tokens"]
        if not r["chunks"]:
            continue
        (first, first_count), (last, last_count) = r["chunks"][0], r["chunks"][-1]
        ttft.append(first - r["t0"])
        counted = all(n is not None for _, n in r["chunks"])
        for (a, na), (b, nb) in zip(r["chunks"], r["chunks"][1:]):
            k = nb - na if counted else 1  # tokens that arrived together share the gap
            itl += [(b - a) / max(k, 1)] * max(k, 1)
        # Tokens after the first chunk over the time after it (the first chunk may hold several).
        after_first = (last_count - first_count) if counted else r["tokens"] - 1
        if after_first > 0 and last > first:
            tpot.append((last - first) / after_first)
            rates.append(after_first / (last - first))
        if r["cllm"].get("server_ttft_s"):
            over_first.append(first - r["t0"] - r["cllm"]["server_ttft_s"])
        if r["cllm"].get("server_total_s"):
            over_total.append(r["end"] - r["t0"] - r["cllm"]["server_total_s"])
        if r["cllm"].get("tokens_per_iteration"):
            tpi.append(r["cllm"]["tokens_per_iteration"])
    steps = delta.get("cllm_forward_steps_total", 0)
    blocks = {int(k[6:]): v for k, v in delta.items() if k.startswith("block:") and v > 0}
    decode_its = sum(blocks.values())
    ms = lambda v: None if v is None else v * 1e3  # noqa: E731
    return {
        "mode": mode, "concurrency": concurrency, "requests": len(results), "errors": errors[:5],
        "error_count": len(errors), "wall_s": wall, "generated_tokens": tokens,
        "aggregate_tok_s": tokens / wall if wall > 0 else 0,
        "stream_tok_s_p50": pct(rates, 50), "stream_tok_s_mean": statistics.mean(rates) if rates else None,
        "ttft_ms_p50": ms(pct(ttft, 50)), "ttft_ms_p99": ms(pct(ttft, 99)),
        "itl_ms_p50": ms(pct(itl, 50)), "itl_ms_p99": ms(pct(itl, 99)), "tpot_ms_p50": ms(pct(tpot, 50)),
        "tokens_per_iteration": statistics.mean(tpi) if tpi else None,
        "overhead_first_ms_p50": ms(pct(over_first, 50)), "overhead_total_ms_p50": ms(pct(over_total, 50)),
        "server_steps": steps,
        "rows_per_step": delta.get("cllm_step_rows_sum", 0) / steps if steps else None,
        "seqs_per_step": delta.get("cllm_step_sequences_sum", 0) / steps if steps else None,
        "decode_blocks": blocks,
        "mean_block": sum(n * c for n, c in blocks.items()) / decode_its if decode_its else None,
    }


def engine_alone(args, mode):
    """Decode tokens/s of `cllm generate` on the same prompt (the engine with no server), or None.
    Batch mode (--prompts) warms the model up untimed first (CUDA graphs are captured then) and
    writes exact timings (--json-out): decode_seconds covers every token after the first."""
    with tempfile.TemporaryDirectory() as tmp:
        prompts, out = os.path.join(tmp, "prompts.jsonl"), os.path.join(tmp, "out.jsonl")
        with open(prompts, "w") as f:
            f.write(json.dumps({"prompt": "Request 0.0. " + args.prompt}) + "\n")
        decode, block = mode_block(mode, args)
        cmd = [args.generate_bin, "generate", *args.generate_args.split(), "--prompts", prompts, "--json-out", out,
               "--decode", decode, "--max-new-tokens", str(args.max_tokens), "--quiet"]
        if block:
            cmd += ["--block", str(block)]
        try:
            subprocess.run(cmd, capture_output=True, text=True, timeout=3600, check=True)
            with open(out) as f:
                r = json.loads(f.readline())[decode]
        except (OSError, subprocess.SubprocessError, ValueError, KeyError) as e:
            print(f"engine alone ({mode}): `{' '.join(cmd)}` failed: {e}")
            return None
    n, decode = r["tokens"], r["decode_seconds"]
    return {"tokens": n, "decode_s": decode, "decode_tok_s": (n - 1) / decode if decode > 0 and n > 1 else None,
            "prefill_ms": r["prefill_seconds"] * 1e3, "tokens_per_iteration": r.get("tokens_per_iteration")}


def fmt(v, spec=".1f"):
    return "-" if v is None else format(v, spec)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--url", default="http://127.0.0.1:8000")
    p.add_argument("--api-key", default="")
    p.add_argument("--concurrency", default="1,4,16,64", help="comma-separated client counts")
    p.add_argument("--requests", type=int, default=4, help="requests per client (sequential)")
    p.add_argument("--max-tokens", type=int, default=128)
    p.add_argument("--modes", default="ar,jacobi", help="comma-separated: ar, auto, jacobi, jacobiN (see above)")
    p.add_argument("--block", type=int, default=0, help="the block of mode jacobi (cllm_block); 0: the server's --block")
    p.add_argument("--compare-adaptive", action="store_true",
                   help="--modes ar,jacobi16,auto: AR, a fixed block of 16 and the adaptive policy")
    p.add_argument("--prompt", default=DEFAULT_PROMPT, help="prompt text (each request prefixes its own id)")
    p.add_argument("--prompt-repeat", type=int, default=1, help="repeat the prompt text this many times")
    p.add_argument("--warmup", type=int, default=2, help="requests sent once before measuring")
    p.add_argument("--json", help="write every result to this file")
    p.add_argument("--generate-bin", help="cllm binary: also time `cllm generate` on the same prompt")
    p.add_argument("--generate-args", default="", help="model flags for cllm generate, e.g. '--model random:7b --device cuda'")
    args = p.parse_args()
    if args.compare_adaptive:
        args.modes = "ar,jacobi16,auto"
    args.prompt = args.prompt * args.prompt_repeat
    server = Server(args.url, args.api_key)
    server.get("/health")
    modes = [m for m in args.modes.split(",") if m]
    for m in modes:
        mode_block(m, args)
    for i in range(args.warmup):
        server.stream({"prompt": "warm up " + args.prompt, "max_tokens": 8, "stream": True, "cllm_ignore_eos": True})

    results = []
    header = (f"{'mode':>8} {'C':>4} {'reqs':>5} {'agg tok/s':>10} {'stream tok/s':>12} {'TTFT p50':>9} {'TTFT p99':>9} "
              f"{'ITL p50':>8} {'ITL p99':>8} {'TPOT p50':>9} {'tok/it':>6} {'rows/step':>9} {'seqs/step':>9} "
              f"{'ovh ms':>7} {'block':>5} {'err':>4}")
    print(header)
    for mode in modes:
        for c in [int(x) for x in args.concurrency.split(",") if x]:
            r = run(server, args, mode, c)
            results.append(r)
            print(f"{mode:>8} {c:>4} {r['requests']:>5} {fmt(r['aggregate_tok_s']):>10} {fmt(r['stream_tok_s_p50']):>12} "
                  f"{fmt(r['ttft_ms_p50']):>9} {fmt(r['ttft_ms_p99']):>9} {fmt(r['itl_ms_p50'], '.2f'):>8} "
                  f"{fmt(r['itl_ms_p99'], '.2f'):>8} {fmt(r['tpot_ms_p50'], '.2f'):>9} "
                  f"{fmt(r['tokens_per_iteration'], '.2f'):>6} {fmt(r['rows_per_step']):>9} {fmt(r['seqs_per_step']):>9} "
                  f"{fmt(r['overhead_total_ms_p50'], '.2f'):>7} {fmt(r['mean_block'], '.2f'):>5} "
                  f"{r['error_count']:>4}", flush=True)
            if mode == "auto" and r["decode_blocks"] and set(r["decode_blocks"]) == {max(r["decode_blocks"])} \
                    and max(r["decode_blocks"]) > 1:
                print(f"  (auto: every decode step ran a block of {max(r['decode_blocks'])}: is the server's --block auto?)")
    print("ovh ms: client-observed request time minus the engine's own time for it (p50), see --help; "
          "block: mean decode block the server ran")
    by = {(r["mode"], r["concurrency"]): r["aggregate_tok_s"] for r in results}
    if "ar" in modes and len(modes) > 1:
        for c in sorted({r["concurrency"] for r in results}):
            if by.get(("ar", c)):
                print(f"C={c}: aggregate tok/s over AR's: " +
                      ", ".join(f"{m} {by[(m, c)] / by[('ar', c)]:.2f}x" for m in modes if m != "ar" and (m, c) in by))

    alone = {}
    if args.generate_bin:
        for mode in modes:
            alone[mode] = engine_alone(args, mode)
            one = next((r for r in results if r["mode"] == mode and r["concurrency"] == 1), None)
            if alone[mode] and alone[mode]["decode_tok_s"] and one and one["stream_tok_s_p50"]:
                a, s = alone[mode]["decode_tok_s"], one["stream_tok_s_p50"]
                print(f"engine alone ({mode}): {a:.1f} tok/s decode (cllm generate); server at C=1: "
                      f"{s:.1f} tok/s; server / engine = {s / a:.2f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "results": results, "engine_alone": alone,
                       "date": time.strftime("%Y-%m-%d %H:%M:%S")}, f, indent=2)
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
