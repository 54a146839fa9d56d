"""Base vs CLLM served by `cllm serve` (OpenAI API): python3 -m training.serve_speedup --base DIR --cllm DIR
--prompts FILE --out DIR

For each model and window, starts `cllm serve --model DIR --port 0 --window W --block B --max-batch M`
(the port it picked is read from its "listening on http://HOST:PORT" line; ready when GET /health
answers 200), sends the first N prompts one at a time, non-streaming, greedy (temperature 0,
max_tokens T, cllm_ignore_eos false): each prompt with cllm_decode "ar" (first window only: the
window does not change AR) and "jacobi". Chat prompts ({"messages": [...]}) go to
/v1/chat/completions, plain ones ({"prompt": ...} or text lines) to /v1/completions. Each window's
server is stopped with SIGTERM and waited for.

Per request: completion tokens, the client's wall time (HTTP included) and the engine's own timings
from the response's `cllm` object (iterations with the prefill counted, server_ttft_s,
server_total_s). Per model and window:
  - decode tokens/s: completion tokens / (server_total_s - server_ttft_s), summed over the prompts
    (the engine's time after the first token, queueing and prefill excluded; as in evaluate.py, a
    ratio of sums over all tokens);
  - speedup: Jacobi decode tokens/s / AR decode tokens/s (evaluate.py's definition);
  - Jacobi tokens/iteration: completion tokens / iterations (cllm's count);
  - client tokens/s: completion tokens / client wall time (HTTP, queueing and prefill included);
  - Jacobi == AR: fraction of prompts with the same text.
Writes serve.json (summary and every request) and serve.md (table) into --out, and each server's
log as serve_<model>_<window>.log. Only the standard library: it runs with any python3."""
import argparse
import gzip
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request

from .report import write_report

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python3 -m training.serve_speedup", description=__doc__.split("\n")[0])
    p.add_argument("--base", required=True, help="the base model (anything cllm serve loads)")
    p.add_argument("--cllm", required=True, help="the trained model")
    p.add_argument("--prompts", required=True, help="JSONL ({\"messages\": [...]} or {\"prompt\": ...}) or text, "
                                                    "one prompt per line; .gz allowed")
    p.add_argument("--out", required=True, help="output dir")
    p.add_argument("--n", type=int, default=30, help="the first N prompts (0: all)")
    p.add_argument("--max-tokens", type=int, default=128, help="max_tokens of every request")
    p.add_argument("--windows", default="blockwise", help="comma-separated server windows: blockwise and/or sliding")
    p.add_argument("--block", type=int, default=16)
    p.add_argument("--max-batch", type=int, default=4, help="the server's KV slots")
    p.add_argument("--device", default="cpu", help="cpu | cuda")
    p.add_argument("--chat-template", default="", help="the server's --chat-template (default: the checkpoint's)")
    p.add_argument("--warmup", type=int, default=1, help="untimed requests per decoding before the measured ones")
    p.add_argument("--startup-timeout", type=float, default=300, help="seconds for a server to answer /health")
    p.add_argument("--request-timeout", type=float, default=600, help="seconds for one request")
    p.add_argument("--cllm-bin", default=os.environ.get("CLLM_BIN", os.path.join(REPO, "build", "cllm")))
    return p.parse_args(argv)


# ---- prompts and metrics (pure; tested in training/tests/test_serve_speedup.py) ----

def read_prompts(path, n=0):
    """[(endpoint, body fields)] for the first n prompts (0: all), as cllm reads a prompts file:
    JSONL when the first non-empty line starts with '{', else one plain prompt per line."""
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as f:
        lines = [line.rstrip("\n") for line in f if line.strip()]
    if n > 0:
        lines = lines[:n]
    jsonl = bool(lines) and lines[0].lstrip().startswith("{")
    out = []
    for i, line in enumerate(lines):
        if not jsonl:
            out.append(("/v1/completions", {"prompt": line}))
            continue
        obj = json.loads(line)
        if "messages" in obj:
            out.append(("/v1/chat/completions", {"messages": obj["messages"]}))
        elif "prompt" in obj:
            out.append(("/v1/completions", {"prompt": obj["prompt"]}))
        else:
            raise ValueError(f"{path}:{i + 1}: neither messages nor prompt")
    return out


def summarize(ar, jacobi):
    """ar, jacobi: request records (completion_tokens, iterations, server_ttft_s, server_total_s,
    client_seconds, text) of the same prompts. Returns the table's numbers."""
    def rate(recs, seconds_of):  # completion tokens per second, summed over the requests
        seconds = sum(seconds_of(r) for r in recs)
        return sum(r["completion_tokens"] for r in recs) / seconds if seconds > 0 else float("nan")

    def decode_rate(recs):  # the engine's decode time: total minus time to first token
        return rate(recs, lambda r: max(0.0, r["server_total_s"] - r["server_ttft_s"]))

    def client_rate(recs):
        return rate(recs, lambda r: r["client_seconds"])

    ar_rate, jac_rate = decode_rate(ar), decode_rate(jacobi)
    iters = sum(r["iterations"] for r in jacobi)
    return {
        "prompts": len(jacobi),
        "ar_tokens": sum(r["completion_tokens"] for r in ar),
        "jacobi_tokens": sum(r["completion_tokens"] for r in jacobi),
        "ar_tokens_per_s": ar_rate,
        "jacobi_tokens_per_s": jac_rate,
        "speedup": jac_rate / ar_rate if ar_rate > 0 else float("nan"),
        "tokens_per_iteration": sum(r["completion_tokens"] for r in jacobi) / max(1, iters),
        "ar_client_tokens_per_s": client_rate(ar),
        "jacobi_client_tokens_per_s": client_rate(jacobi),
        "ar_mean_ttft_s": sum(r["server_ttft_s"] for r in ar) / max(1, len(ar)),
        "jacobi_mean_ttft_s": sum(r["server_ttft_s"] for r in jacobi) / max(1, len(jacobi)),
        "identical": sum(a["text"] == j["text"] for a, j in zip(ar, jacobi)) / max(1, len(jacobi)),
    }


def markdown(results):
    lines = [f"Served by `cllm serve` (OpenAI API, non-streaming, one request at a time, --max-batch "
             f"{results['max_batch']}): the first {results['n']} prompts of {results['prompts']}, max_tokens "
             f"{results['max_tokens']}, block {results['block']}, device {results['device']}. Decode tokens/s from "
             "the engine's timings (server_total_s - server_ttft_s); client tokens/s include HTTP, queueing and "
             "the prefill.", "",
             "| model (served) | window | tokens/iteration | AR decode tokens/s | Jacobi decode tokens/s | speedup | "
             "AR client tokens/s | Jacobi client tokens/s | Jacobi == AR |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for m, per in results["models"].items():
        for w, r in per.items():
            lines.append(f"| {m} | {w} | {r['tokens_per_iteration']:.3f} | {r['ar_tokens_per_s']:.1f} | "
                         f"{r['jacobi_tokens_per_s']:.1f} | {r['speedup']:.2f}x | {r['ar_client_tokens_per_s']:.1f} | "
                         f"{r['jacobi_client_tokens_per_s']:.1f} | {r['identical']:.0%} |")
    return "\n".join(lines) + "\n"


# ---- the server ----

class ServerError(RuntimeError):
    pass


def tail(path, lines=20):
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-lines:])
    except OSError:
        return ""


def http_json(url, body=None, timeout=60.0):
    """(status, parsed JSON or text) of a GET (body None) or a JSON POST; HTTP errors are returned."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"} if data else {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            status, raw = r.status, r.read()
    except urllib.error.HTTPError as e:
        status, raw = e.code, e.read()
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw.decode(errors="replace")


class Server:
    """`cllm serve` on a free port; use as a context manager (it is stopped with SIGTERM on exit)."""

    def __init__(self, cmd, log_path, startup_timeout=300.0):
        self.cmd, self.log_path, self.startup_timeout = cmd, log_path, startup_timeout
        self.proc, self.url, self.exit_code = None, None, None

    def __enter__(self):
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen(self.cmd, stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self):
        t0 = time.time()
        while time.time() - t0 < self.startup_timeout:
            if self.proc.poll() is not None:
                raise ServerError(f"{' '.join(self.cmd)} exited with {self.proc.returncode} before it was ready; "
                                  f"its log ({self.log_path}) ends:\n{tail(self.log_path)}")
            if self.url is None:
                with open(self.log_path, errors="replace") as f:
                    m = re.search(r"listening on (http://[^\s:]+:(\d+))", f.read())
                if m:
                    self.url = m.group(1)
            if self.url is not None:
                try:
                    status, _ = http_json(self.url + "/health", timeout=5)
                    if status == 200:
                        return
                except (urllib.error.URLError, OSError):
                    pass
            time.sleep(0.1)
        raise ServerError(f"{' '.join(self.cmd)} was not ready after {self.startup_timeout:.0f} s "
                          f"({'no listening line' if self.url is None else 'GET /health never answered 200'}); "
                          f"its log ({self.log_path}) ends:\n{tail(self.log_path)}")

    def stop(self, timeout=90.0):
        """SIGTERM (the server drains and exits 0), then wait; SIGKILL after timeout seconds."""
        if self.proc is None or self.exit_code is not None:
            return self.exit_code
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                print(f"serve_speedup: {self.cmd[0]} ignored SIGTERM for {timeout:.0f} s: killed", file=sys.stderr)
        self.exit_code = self.proc.returncode
        self.log.close()
        return self.exit_code

    def __exit__(self, *exc):
        self.stop()
        return False

    def complete(self, endpoint, fields, decode, max_tokens, timeout):
        """One greedy non-streaming request; returns its record."""
        body = dict(fields, temperature=0, max_tokens=max_tokens, cllm_decode=decode, cllm_ignore_eos=False,
                    stream=False)
        t0 = time.perf_counter()
        status, resp = http_json(self.url + endpoint, body, timeout=timeout)
        client_s = time.perf_counter() - t0
        if status != 200 or not isinstance(resp, dict) or "cllm" not in resp:
            raise ServerError(f"POST {endpoint} ({decode}) answered {status}: {str(resp)[:2000]}\n"
                              f"server log ends:\n{tail(self.log_path)}")
        choice = resp["choices"][0]
        c = resp["cllm"]
        return {"decode": decode, "completion_tokens": resp["usage"]["completion_tokens"],
                "prompt_tokens": resp["usage"]["prompt_tokens"], "iterations": c["iterations"],
                "server_ttft_s": c["server_ttft_s"], "server_total_s": c["server_total_s"],
                "client_seconds": client_s, "finish_reason": choice.get("finish_reason"),
                "text": choice["message"]["content"] if "message" in choice else choice.get("text", "")}


def serve_cmd(args, model, window):
    cmd = [args.cllm_bin, "serve", "--model", model, "--host", "127.0.0.1", "--port", "0", "--device", args.device,
           "--window", window, "--block", str(args.block), "--max-batch", str(args.max_batch)]
    if args.chat_template:
        cmd += ["--chat-template", args.chat_template]
    return cmd


def measure(args, prompts, name, model, window, with_ar):
    """Starts the server of one model and window and sends every prompt; returns (ar, jacobi, info)."""
    log_path = os.path.join(args.out, f"serve_{name}_{window}.log")
    t0 = time.time()
    print(f"serve_speedup: {name}, {window}: starting cllm serve ...", file=sys.stderr, flush=True)
    modes = ["ar", "jacobi"] if with_ar else ["jacobi"]
    ar, jacobi = [], []
    with Server(serve_cmd(args, model, window), log_path, args.startup_timeout) as server:
        ready_s = time.time() - t0
        for mode in modes:
            for _ in range(args.warmup):
                server.complete(*prompts[0], mode, args.max_tokens, args.request_timeout)
        for i, prompt in enumerate(prompts):
            for mode in modes:  # AR and Jacobi of one prompt back to back: the same conditions
                rec = server.complete(*prompt, mode, args.max_tokens, args.request_timeout)
                rec.update(model=name, window=window, prompt_index=i)
                (ar if mode == "ar" else jacobi).append(rec)
    info = {"ready_seconds": ready_s, "seconds": time.time() - t0, "exit_code": server.exit_code}
    if server.exit_code != 0:
        raise ServerError(f"cllm serve ({name}, {window}) exited with {server.exit_code} after SIGTERM; "
                          f"its log ends:\n{tail(log_path)}")
    print(f"serve_speedup: {name}, {window}: {len(prompts)} prompts in {info['seconds']:.1f} s "
          f"(ready after {ready_s:.1f} s)", file=sys.stderr, flush=True)
    return ar, jacobi, info


def main(argv=None):
    args = parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    if not os.access(args.cllm_bin, os.X_OK):
        raise SystemExit(f"serve_speedup: {args.cllm_bin} is missing (build cllm or pass --cllm-bin)")
    windows = [w for w in args.windows.split(",") if w]
    for w in windows:
        if w not in ("blockwise", "sliding"):
            raise SystemExit(f"serve_speedup: unknown window {w!r} (blockwise, sliding)")
    prompts = read_prompts(args.prompts, args.n)
    if not prompts:
        raise SystemExit(f"serve_speedup: no prompts in {args.prompts}")
    results = {"prompts": args.prompts, "n": len(prompts), "max_tokens": args.max_tokens, "block": args.block,
               "max_batch": args.max_batch, "device": args.device, "windows": windows, "models": {}, "servers": {},
               "requests": []}
    for name, model in (("base", args.base), ("cllm", args.cllm)):
        per, ar = {}, None
        for w, window in enumerate(windows):
            ar_w, jacobi, info = measure(args, prompts, name, model, window, with_ar=w == 0)
            ar = ar if ar is not None else ar_w  # AR from the first window's server
            per[window] = summarize(ar, jacobi)
            results["servers"][f"{name}_{window}"] = info
            results["requests"] += ar_w + jacobi
        results["models"][name] = per
    table = markdown(results)
    write_report(args.out, "serve", results, table)
    print(table)
    return results


if __name__ == "__main__":
    try:
        main()
    except ServerError as e:
        raise SystemExit(f"serve_speedup: {e}")
