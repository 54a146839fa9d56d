"""training/serve_speedup.py: its metrics on toy records, and against a real `cllm serve` on the tiny model."""
import json
import math
import os
import stat

import pytest

from training import serve_speedup

from .conftest import cllm_bin


def req(tokens, iterations, ttft, total, client, text="x"):
    return {"completion_tokens": tokens, "iterations": iterations, "server_ttft_s": ttft, "server_total_s": total,
            "client_seconds": client, "text": text}


def test_summary_rates_come_from_the_engine_decode_time():
    ar = [req(10, 10, 0.1, 1.1, 1.2, "a"), req(30, 30, 0.1, 2.1, 2.3, "b")]  # 40 tokens in 3 s of decoding
    jac = [req(10, 4, 0.1, 0.6, 0.7, "a"), req(30, 10, 0.2, 0.7, 0.8, "c")]  # 40 tokens in 1 s
    s = serve_speedup.summarize(ar, jac)
    assert s["ar_tokens_per_s"] == pytest.approx(40 / 3) and s["jacobi_tokens_per_s"] == pytest.approx(40)
    assert s["speedup"] == pytest.approx(3.0)
    assert s["tokens_per_iteration"] == pytest.approx(40 / 14)  # a ratio of sums, prefill counted by cllm
    assert s["ar_client_tokens_per_s"] == pytest.approx(40 / 3.5)
    assert s["jacobi_client_tokens_per_s"] == pytest.approx(40 / 1.5)
    assert s["identical"] == 0.5 and s["prompts"] == 2
    # Jacobi stopping at half the length in 0.6 of the time is slower per token, not faster.
    s = serve_speedup.summarize([req(128, 128, 0, 1.0, 1.0)], [req(64, 40, 0, 0.6, 0.6)])
    assert s["speedup"] == pytest.approx((64 / 0.6) / 128)
    assert math.isnan(serve_speedup.summarize(ar, [req(1, 1, 0.5, 0.5, 0.5)])["speedup"])


def test_prompts_files_as_cllm_reads_them(tmp_path):
    chat = tmp_path / "c.jsonl"
    chat.write_text('{"messages": [{"role": "user", "content": "hi"}]}\n\n{"prompt": "The sea"}\n{"prompt": "x"}\n')
    assert serve_speedup.read_prompts(str(chat), 2) == [
        ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}]}),
        ("/v1/completions", {"prompt": "The sea"})]
    text = tmp_path / "t.txt"
    text.write_text("Far away\n\nIn the\n")
    assert serve_speedup.read_prompts(str(text)) == [("/v1/completions", {"prompt": "Far away"}),
                                                     ("/v1/completions", {"prompt": "In the"})]


def test_against_cllm_serve_on_the_tiny_model(tiny_model, tmp_path):
    prompts = tmp_path / "p.jsonl"
    prompts.write_text('{"messages": [{"role": "user", "content": "The sea is"}]}\n'
                       '{"messages": [{"role": "user", "content": "Once upon a time"}]}\n'
                       '{"messages": [{"role": "user", "content": "never sent"}]}\n')
    out = tmp_path / "serve"
    res = serve_speedup.main(["--base", tiny_model, "--cllm", tiny_model, "--prompts", str(prompts), "--out", str(out),
                              "--n", "2", "--max-tokens", "12", "--block", "4", "--windows", "blockwise,sliding",
                              "--chat-template", "chatml", "--cllm-bin", cllm_bin()])
    saved = json.loads((out / "serve.json").read_text())
    assert saved["models"] == json.loads(json.dumps(res["models"]))
    for name in ("base", "cllm"):
        for window in ("blockwise", "sliding"):
            s = res["models"][name][window]
            assert s["prompts"] == 2 and s["identical"] == 1.0  # CPU: Jacobi reproduces AR exactly
            assert 1.0 <= s["tokens_per_iteration"] <= 12
            for k in ("ar_tokens_per_s", "jacobi_tokens_per_s", "speedup", "ar_client_tokens_per_s",
                      "jacobi_client_tokens_per_s"):
                assert math.isfinite(s[k]) and s[k] > 0, (name, window, k, s[k])
            assert res["servers"][f"{name}_{window}"]["exit_code"] == 0  # stopped by SIGTERM, drained, exit 0
    # AR only on the first window's server: 2 models x 2 prompts x (AR + 2 windows of Jacobi).
    reqs = res["requests"]
    assert len(reqs) == 12 and sum(r["decode"] == "ar" for r in reqs) == 4
    assert {r["window"] for r in reqs if r["decode"] == "ar"} == {"blockwise"}
    for r in reqs:
        assert 1 <= r["completion_tokens"] <= 12 and r["iterations"] >= 1 and r["prompt_tokens"] > 5
        assert 0 <= r["server_ttft_s"] <= r["server_total_s"] <= r["client_seconds"] + 1e-3
        assert r["finish_reason"] in ("length", "stop")
        if r["decode"] == "ar":  # one token per iteration, the prefill's included
            assert r["iterations"] == r["completion_tokens"] + (r["finish_reason"] == "stop")
    assert "| cllm | sliding |" in (out / "serve.md").read_text()
    assert "cllm serve: stopped" in (out / "serve_base_blockwise.log").read_text()


def test_a_server_that_does_not_start_is_reported_with_its_log(tiny_model, tmp_path):
    prompts = tmp_path / "p.txt"
    prompts.write_text("The sea is\n")
    args = ["--cllm", tiny_model, "--prompts", str(prompts), "--out", str(tmp_path / "o"), "--n", "1"]
    # A model that does not load: the server exits, and its last words are in the error.
    with pytest.raises(serve_speedup.ServerError, match=r"(?s)exited with .*before it was ready.*no_such_model"):
        serve_speedup.main(["--base", str(tmp_path / "no_such_model"), "--cllm-bin", cllm_bin(), *args])
    # A server that never listens: a timeout, with its output.
    fake = tmp_path / "fake_cllm"
    fake.write_text("#!/bin/sh\necho 'fake server warming up' >&2\nexec sleep 30\n")
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    with pytest.raises(serve_speedup.ServerError, match=r"(?s)not ready after 1 s.*fake server warming up"):
        serve_speedup.main(["--base", tiny_model, "--cllm-bin", str(fake), "--startup-timeout", "1", *args])
    assert os.path.exists(tmp_path / "o" / "serve_base_blockwise.log")
