# A client nobody here wrote: lm-evaluation-harness drives the server through its local-completions
# backend (tokenizing through /tokenizer_info and /tokenize, scoring through echo + logprobs) on a
# task over files in tests/server/lm_eval, with the network shut off. Its loglikelihoods must agree
# with transformers on the same GGUF (tests/fixtures/lm_eval, made by
# tests/reference/make_lm_eval_fixture.py) within TOLERANCE nats per request. The server is a
# private one with --weights f32, whatever the shared server runs: the fixture is transformers'
# float32 arithmetic, which native Q4_1 weights (int8 activations, the one-rank default) do not
# reproduce to 1e-3.
import json
import os
import socket

import pytest
import requests

from conftest import ROOT, PrivateServer

TASK_DIR = os.path.join(ROOT, "tests", "server", "lm_eval")
FIXTURE = os.path.join(ROOT, "tests", "fixtures", "lm_eval", "tiny_mc_smollm2_q4_1.json")
# cllm computes in float32 on the Q4_1 blocks, transformers on the float32 it dequantizes: a
# request's summed log-probability (1-3 tokens) differs by rounding only (measured: 2.2e-5 at most).
TOLERANCE = 1e-3


@pytest.fixture(scope="module")
def f32_server():
    srv = PrivateServer("--weights", "f32", "--api-key", "lm-eval-key", "--max-batch", "4")
    yield srv
    srv.close()


def test_lm_eval_loglikelihoods_match_transformers(f32_server, monkeypatch, tmp_path):
    base_url, api_key = f32_server.url, "lm-eval-key"
    model_name = requests.get(f"{base_url}/v1/models", headers={"Authorization": f"Bearer {api_key}"},
                              timeout=10).json()["data"][0]["id"]
    with open(FIXTURE) as f:
        ref = json.load(f)
    assert model_name + ".gguf" == ref["model"], "the fixture is for another model"
    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.setenv(var, "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # nothing cached: the JSONL itself is read
    monkeypatch.setenv("OPENAI_API_KEY", api_key)
    monkeypatch.chdir(ROOT)  # the task's data_files are relative to the repository root
    # Any connection beyond loopback fails the test: lm-eval must need no download.
    remote = []
    connect = socket.socket.connect

    def loopback_only(sock, address):
        if sock.family in (socket.AF_INET, socket.AF_INET6) and address[0] not in ("127.0.0.1", "::1", "localhost"):
            remote.append(address)
            raise OSError(f"network access to {address} in an offline test")
        return connect(sock, address)

    monkeypatch.setattr(socket.socket, "connect", loopback_only)

    import lm_eval
    from lm_eval.tasks import TaskManager

    out = lm_eval.simple_evaluate(
        model="local-completions",
        model_args={"base_url": f"{base_url}/v1/completions", "model": model_name, "tokenizer_backend": "remote",
                    "auth_token": api_key, "num_concurrent": 1, "max_retries": 1, "timeout": 120},
        tasks=["cllm_tiny_mc"], task_manager=TaskManager(include_path=TASK_DIR), log_samples=True)
    assert not remote, remote
    samples = out["samples"]["cllm_tiny_mc"]
    got = {}
    for s in samples:
        for args, resp in zip(s["arguments"], s["resps"]):
            context, continuation = args if isinstance(args, (list, tuple)) else (args["arg_0"], args["arg_1"])
            got[(context, continuation)] = resp[0]
    assert len(got) == len(ref["requests"]), (len(got), len(ref["requests"]))
    worst = 0.0
    for r in ref["requests"]:
        ll, greedy = got[(r["context"], r["continuation"])]
        worst = max(worst, abs(ll - r["loglikelihood"]))
        assert abs(ll - r["loglikelihood"]) < TOLERANCE, (r["context"], r["continuation"], ll, r["loglikelihood"])
        assert bool(greedy) == r["is_greedy"], (r["continuation"], greedy)
    print(f"lm-eval vs transformers: {len(got)} loglikelihoods, largest difference {worst:.2e} nats; "
          f"acc {out['results']['cllm_tiny_mc']['acc,none']}")
