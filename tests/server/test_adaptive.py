# A private server with --block auto (the load-adaptive policy): greedy output equals AR's and a
# pinned block's, /metrics counts the blocks it ran, and bench_serve.py's comparison of AR, a fixed
# block of 16 and the policy runs end to end (a tiny smoke run, not a timing test).
import json
import os
import subprocess
import sys

import requests

from conftest import ROOT, PrivateServer

RANKS = int(os.environ.get("CLLM_SERVE_RANKS", "1"))
PROMPT = "List the first ten prime numbers:"


def blocks(url):
    """cllm_decode_blocks_total as {block: count}."""
    out = {}
    for line in requests.get(url + "/metrics", timeout=10).text.splitlines():
        if line.startswith("cllm_decode_blocks_total{"):
            name, value = line.split()
            out[int(name.split('"')[1])] = float(value)
    return out


def complete(url, **extra):
    r = requests.post(url + "/v1/completions", timeout=300,
                      json={"prompt": PROMPT, "max_tokens": 24, "cllm_ignore_eos": True, **extra})
    assert r.status_code == 200, r.text
    return r.json()


def test_adaptive_server_outputs_and_metrics():
    srv = PrivateServer("--block", "auto", "--max-block", "16", "--max-batch", "4", ranks=RANKS)
    try:
        assert "step cost (--block auto)" in srv.text()
        before = blocks(srv.url)
        auto = complete(srv.url)
        after_auto = blocks(srv.url)
        ar = complete(srv.url, cllm_decode="ar")
        after_ar = blocks(srv.url)
        pinned = complete(srv.url, cllm_block=8)
        after_pinned = blocks(srv.url)
        assert auto["choices"][0]["text"] == ar["choices"][0]["text"] == pinned["choices"][0]["text"]
        ran = {n: after_auto.get(n, 0) - before.get(n, 0) for n in after_auto}
        assert sum(ran.values()) > 0 and max(n for n, c in ran.items() if c) <= 16, ran
        # cllm_decode "ar" runs blocks of 1 only; cllm_block 8 pins 8 (the last block may be cut to
        # the tokens still wanted).
        ar_ran = {n: after_ar.get(n, 0) - after_auto.get(n, 0) for n in after_ar}
        assert {n for n, c in ar_ran.items() if c} == {1}, ar_ran
        assert ar_ran[1] == 23  # 24 tokens, the first from the prefill
        pinned_ran = {n: after_pinned.get(n, 0) - after_ar.get(n, 0) for n in after_pinned}
        assert pinned_ran.get(8, 0) >= 1 and max(n for n, c in pinned_ran.items() if c) == 8, pinned_ran
    finally:
        srv.close()


def test_bench_serve_compares_ar_fixed_and_adaptive(tmp_path):
    srv = PrivateServer("--max-batch", "4", ranks=RANKS)  # --block auto is the default
    try:
        out = tmp_path / "bench.json"
        r = subprocess.run([sys.executable, os.path.join(ROOT, "tests", "server", "bench_serve.py"), "--url", srv.url,
                            "--compare-adaptive", "--concurrency", "1,2", "--requests", "1", "--max-tokens", "4",
                            "--warmup", "0", "--json", str(out)],
                           capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, r.stdout + r.stderr
        results = json.loads(out.read_text())["results"]
        assert [(x["mode"], x["concurrency"]) for x in results] == [
            (m, c) for m in ("ar", "jacobi16", "auto") for c in (1, 2)]
        for x in results:
            assert x["error_count"] == 0 and x["generated_tokens"] == 4 * x["concurrency"], x
        ar = next(x for x in results if x["mode"] == "ar")
        fixed = next(x for x in results if x["mode"] == "jacobi16")
        assert set(ar["decode_blocks"]) == {"1"}, ar  # JSON keys: the block sizes as text
        assert set(fixed["decode_blocks"]) == {"16"}, fixed
        assert "aggregate tok/s over AR's" in r.stdout
    finally:
        srv.close()
