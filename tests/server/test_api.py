# The OpenAI surface: the official client for completions, chat and streaming; curl for raw SSE;
# stop strings, sampling, extensions, auth, and every bad-input case with its status.
import json
import os
import subprocess

import openai
import pytest
import requests


@pytest.fixture(scope="module")
def client(base_url, api_key):
    return openai.OpenAI(base_url=base_url + "/v1", api_key=api_key, max_retries=0, timeout=120)


def complete(base_url, auth, **body):
    r = requests.post(f"{base_url}/v1/completions", json=body, headers=auth, timeout=120)
    assert r.status_code == 200, r.text
    return r.json()


def test_health_and_models(base_url, auth, model_name):
    assert requests.get(f"{base_url}/health", timeout=5).json() == {"status": "ok"}
    models = requests.get(f"{base_url}/v1/models", headers=auth, timeout=5).json()
    assert models["object"] == "list" and models["data"][0]["id"] == model_name


def test_completion_with_openai_client(client, model_name):
    r = client.completions.create(model=model_name, prompt="The capital of France is", max_tokens=8)
    assert r.choices[0].finish_reason == "length"
    assert r.usage.completion_tokens == 8 and r.usage.prompt_tokens > 0
    assert "Paris" in r.choices[0].text
    extra = r.model_extra["cllm"]
    assert extra["iterations"] >= 1 and extra["tokens_per_iteration"] == pytest.approx(8 / extra["iterations"])


def test_chat_stream_equals_chat(client, model_name):
    msgs = [{"role": "user", "content": "Name a color."}]
    whole = client.chat.completions.create(model=model_name, messages=msgs, max_tokens=10)
    assert whole.choices[0].message.role == "assistant"
    parts, finish = [], None
    for chunk in client.chat.completions.create(model=model_name, messages=msgs, max_tokens=10, stream=True,
                                                stream_options={"include_usage": True}):
        for c in chunk.choices:
            parts.append(c.delta.content or "")
            finish = c.finish_reason or finish
        if chunk.usage:
            assert chunk.usage.completion_tokens == whole.usage.completion_tokens
    assert "".join(parts) == whole.choices[0].message.content
    assert finish == whole.choices[0].finish_reason


def test_raw_sse_with_curl(base_url, api_key):
    out = subprocess.run(
        ["curl", "-sN", f"{base_url}/v1/completions", "-H", f"Authorization: Bearer {api_key}",
         "-H", "Content-Type: application/json",
         "-d", json.dumps({"prompt": "One, two,", "max_tokens": 6, "stream": True})],
        capture_output=True, text=True, timeout=120, check=True).stdout
    events = [e for e in out.split("\n\n") if e]
    assert all(e.startswith("data: ") for e in events), out
    assert events[-1] == "data: [DONE]"
    chunks = [json.loads(e[6:]) for e in events[:-1]]
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"
    assert chunks[-1]["cllm"]["iterations"] >= 1
    text = "".join(c["choices"][0]["text"] for c in chunks)
    assert text == complete(base_url, {"Authorization": f"Bearer {api_key}"}, prompt="One, two,",
                            max_tokens=6)["choices"][0]["text"]


def test_jacobi_equals_greedy_ar(base_url, auth):
    prompt = "def fibonacci(n):"
    jac = complete(base_url, auth, prompt=prompt, max_tokens=12, cllm_block=8)
    ar = complete(base_url, auth, prompt=prompt, max_tokens=12, cllm_decode="ar")
    assert jac["choices"][0]["text"] == ar["choices"][0]["text"]
    assert ar["cllm"]["iterations"] == 12  # prefill + one token per iteration, the first from the prefill
    assert jac["cllm"]["iterations"] <= ar["cllm"]["iterations"]
    # Lookahead: n-grams of the pool verified beside the block, the output still AR's.
    la = complete(base_url, auth, prompt=prompt, max_tokens=12, cllm_block=4, cllm_candidates=4, cllm_ngram=4)
    assert la["choices"][0]["text"] == ar["choices"][0]["text"]
    # Multi-block: three blocks of 4 in flight, with candidates beside them.
    mb = complete(base_url, auth, prompt=prompt, max_tokens=12, cllm_block=4, cllm_blocks=3, cllm_candidates=2)
    assert mb["choices"][0]["text"] == ar["choices"][0]["text"]
    # The paper's blockwise window for this request alone.
    bw = complete(base_url, auth, prompt=prompt, max_tokens=12, cllm_block=4, cllm_window="blockwise")
    assert bw["choices"][0]["text"] == ar["choices"][0]["text"]


def test_ignore_eos_runs_to_max_tokens(base_url, auth):
    def chat(**extra):
        r = requests.post(f"{base_url}/v1/chat/completions", headers=auth, timeout=120,
                          json={"messages": [{"role": "user", "content": "Is the sky blue? Answer yes or no."}],
                                "max_tokens": 48, **extra})
        assert r.status_code == 200, r.text
        return r.json()
    short = chat()
    assert short["choices"][0]["finish_reason"] == "stop"  # EOS well before 48 tokens
    full = chat(cllm_ignore_eos=True)
    assert full["choices"][0]["finish_reason"] == "length" and full["usage"]["completion_tokens"] == 48


def test_stop_string_across_tokens(base_url, auth):
    prompt = "Once upon a time"
    free = complete(base_url, auth, prompt=prompt, max_tokens=20)["choices"][0]["text"]
    # The last letter of a word, the space and the next letter: two tokens at least.
    i = free.index(" ", 5)
    stop = free[i - 1:i + 2]
    r = complete(base_url, auth, prompt=prompt, max_tokens=20, stop=[stop, "zzzz-never"])
    assert r["choices"][0]["finish_reason"] == "stop"
    assert r["choices"][0]["text"] == free[:free.index(stop)]


def test_sampling_is_seeded(base_url, auth):
    body = dict(prompt="My favourite animal is", max_tokens=16, temperature=1.5, top_p=0.95)
    a = complete(base_url, auth, seed=1, **body)["choices"][0]["text"]
    assert complete(base_url, auth, seed=1, **body)["choices"][0]["text"] == a
    assert complete(base_url, auth, seed=2, **body)["choices"][0]["text"] != a


# (body, status, the field that error.param names; None: the body as a whole)
BAD = [
    ("{bad json", 400, None),
    ("[1, 2]", 400, None),
    ('{"prompt": 5}', 400, "prompt"),
    ('{"prompt": ""}', 400, "prompt"),
    ('{"prompt": "x", "max_tokens": 0}', 400, "max_tokens"),
    ('{"prompt": "x", "max_tokens": -3}', 400, "max_tokens"),
    ('{"prompt": "x", "max_tokens": 1000000}', 400, "max_tokens"),
    ('{"prompt": "x", "max_tokens": "8"}', 400, "max_tokens"),
    ('{"prompt": "x", "temperature": "hot"}', 400, "temperature"),
    ('{"prompt": "x", "temperature": 7}', 400, "temperature"),
    ('{"prompt": "x", "stop": 3}', 400, "stop"),
    ('{"prompt": "x", "stream": "yes"}', 400, "stream"),
    ('{"prompt": "x", "n": 17}', 400, "n"),
    ('{"prompt": "x", "logprobs": 21}', 400, "logprobs"),
    ('{"prompt": "x", "max_tokens": 0}', 400, "max_tokens"),
    ('{"prompt": "x", "frobnicate": 1}', 400, "frobnicate"),
    ('{"prompt": "x", "cllm_block": 65}', 400, "cllm_block"),
    ('{"prompt": "x", "cllm_ngram": 1}', 400, "cllm_ngram"),
    ('{"prompt": "x", "cllm_block": 16, "cllm_candidates": 20, "cllm_ngram": 4}', 400, "cllm_candidates"),
    ('{"prompt": "x", "cllm_blocks": 0}', 400, "cllm_blocks"),
    ('{"prompt": "x", "cllm_blocks": 9}', 400, "cllm_blocks"),  # 9 blocks of the server's 8: over 64 rows
    ('{"prompt": "x", "cllm_window": "diagonal"}', 400, "cllm_window"),
    ('{"prompt": "x", "cllm_ignore_eos": 1}', 400, "cllm_ignore_eos"),
    ('{"prompt": "x", "cllm_decode": "jacobi", "temperature": 0.5}', 400, "cllm_decode"),
    ('{"prompt": [999999999]}', 400, "prompt"),
    ('{"prompt": "x", "model": "no-such-model"}', 404, "model"),
    ('{"prompt": "' + "word " * 3000 + '"}', 400, "prompt"),  # longer than the context
]


@pytest.mark.parametrize("body,status,param", BAD)
def test_bad_completion_inputs(base_url, auth, body, status, param):
    r = requests.post(f"{base_url}/v1/completions", data=body.encode(), headers=auth, timeout=30)
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert error["message"] and error["param"] == param, error


def test_ignored_and_neutral_fields(base_url, auth):
    r = complete(base_url, auth, prompt="Hi", max_tokens=2, user="u1", n=1, presence_penalty=0)
    assert r["usage"]["completion_tokens"] == 2


def test_bad_chat_inputs(base_url, auth):
    for body in ['{"messages": []}', '{"messages": [{"role": "robot", "content": "x"}]}',
                 '{"messages": [{"role": "user"}]}', '{"messages": [{"role": "user", "content": 3}]}', '{}']:
        r = requests.post(f"{base_url}/v1/chat/completions", data=body, headers=auth, timeout=30)
        assert r.status_code == 400, body


def test_invalid_utf8_and_big_body(base_url, auth):
    r = requests.post(f"{base_url}/v1/completions", data=b'{"prompt": "\xff\xfe"}', headers=auth, timeout=30)
    assert r.status_code == 400
    r = requests.post(f"{base_url}/v1/completions", data=b"x" * ((1 << 20) + 1), headers=auth, timeout=30)
    assert r.status_code == 413


def test_routes_and_methods(base_url, auth):
    assert requests.get(f"{base_url}/v1/nothing", headers=auth, timeout=5).status_code == 404
    assert requests.get(f"{base_url}/v1/completions", headers=auth, timeout=5).status_code == 405
    assert requests.delete(f"{base_url}/health", timeout=5).status_code == 405


def test_api_key(base_url, model_name):
    body = {"prompt": "x", "max_tokens": 1}
    assert requests.post(f"{base_url}/v1/completions", json=body, timeout=10).status_code == 401
    r = requests.post(f"{base_url}/v1/completions", json=body, headers={"Authorization": "Bearer wrong"}, timeout=10)
    assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=base_url + "/v1", api_key="wrong", max_retries=0).models.list()


def test_metrics(base_url, auth):
    complete(base_url, auth, prompt="Hello", max_tokens=3)
    text = requests.get(f"{base_url}/metrics", timeout=5).text
    for name in ["cllm_requests_total{endpoint=\"/v1/completions\",status=\"200\"}", "cllm_prompt_tokens_total",
                 "cllm_generated_tokens_total", "cllm_jacobi_iterations_total", "cllm_tokens_per_iteration_bucket",
                 "cllm_time_to_first_token_seconds_bucket", "cllm_inter_token_latency_seconds_bucket",
                 "cllm_queue_depth", "cllm_batch_size", "cllm_kv_usage_ratio",
                 "cllm_accepted_tokens_total{source=\"block\"}", "cllm_accepted_tokens_total{source=\"later\"}",
                 "cllm_accepted_tokens_total{source=\"pool\"}",
                 "cllm_accepted_tokens_total{source=\"recycled\"}"]:
        assert name in text, name
    generated = [l for l in text.splitlines() if l.startswith("cllm_generated_tokens_total ")]
    assert int(generated[0].split()[1]) >= 3


def test_chat_prompt_is_the_models_template(base_url, auth):
    # transformers' apply_chat_template(tokenize=True) on the model's own template
    # (tests/fixtures/tokenizer/chat_ids.json): no system message means the template's default one.
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    with open(os.path.join(root, "tests", "fixtures", "tokenizer", "chat_ids.json")) as f:
        cases = [c for c in json.load(f)["cases"] if c["tokenizer"] == "smollm2"]
    for c in cases:
        r = requests.post(f"{base_url}/v1/chat/completions", headers=auth, timeout=120,
                          json={"messages": c["messages"], "max_tokens": 1})
        assert r.status_code == 200, r.text
        assert r.json()["usage"]["prompt_tokens"] == len(c["ids"]), c["messages"]
    # The same prompt as ids through /v1/completions gives the same greedy text.
    say_hi = [c for c in cases if c["messages"][0]["content"] == "Say hi"][0]
    chat = requests.post(f"{base_url}/v1/chat/completions", headers=auth, timeout=120,
                         json={"messages": say_hi["messages"], "max_tokens": 8}).json()
    ids = complete(base_url, auth, prompt=say_hi["ids"], max_tokens=8)
    assert chat["choices"][0]["message"]["content"] == ids["choices"][0]["text"]


def test_context_errors_name_the_field_that_overflows(base_url, auth):
    # The server's slots hold 2048 KV rows (run.sh's default --max-context): a short prompt with
    # max_tokens near it overflows by max_tokens, a prompt longer than it by the prompt.
    r = requests.post(f"{base_url}/v1/completions", json={"prompt": "Hello", "max_tokens": 2045}, headers=auth, timeout=60)
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["param"] == "max_tokens" and err["code"] == "context_length_exceeded", err
    assert "max_tokens (2045)" in err["message"] and "max_new_tokens" not in err["message"], err
    r = requests.post(f"{base_url}/v1/completions", json={"prompt": "word " * 2100, "max_tokens": 1}, headers=auth,
                      timeout=60)
    assert r.status_code == 400 and r.json()["error"]["param"] == "prompt", r.text
    # The limit a client can act on comes first, in tokens (max_model_len of /tokenize).
    limit = requests.post(f"{base_url}/tokenize", json={"prompt": "x"}, headers=auth, timeout=60).json()["max_model_len"]
    assert r.json()["error"]["message"].startswith(f"This model's maximum context length is {limit} tokens"), r.text
    # Chat without max_tokens: the messages are blamed, and no max_tokens the client never sent.
    r = requests.post(f"{base_url}/v1/chat/completions", json={"messages": [{"role": "user", "content": "hello " * 2100}]},
                      headers=auth, timeout=60)
    assert r.status_code == 400 and r.json()["error"]["param"] == "messages", r.text
    assert "the messages are" in r.json()["error"]["message"], r.text
    assert "max_tokens" not in r.json()["error"]["message"], r.text


def test_completion_without_max_tokens_near_the_limit_gets_what_fits(base_url, auth):
    # OpenAI's default completion length (16) cut to the room the prompt leaves, as chat's default
    # is: a prompt 5 tokens short of the model's length is answered, not refused.
    limit = requests.post(f"{base_url}/tokenize", json={"prompt": "x"}, headers=auth, timeout=60).json()["max_model_len"]
    r = requests.post(f"{base_url}/v1/completions", json={"prompt": [42] * (limit - 5), "cllm_ignore_eos": True},
                      headers=auth, timeout=120)
    assert r.status_code == 200, r.text
    assert r.json()["usage"]["completion_tokens"] == 5 and r.json()["choices"][0]["finish_reason"] == "length", r.text
    # With room to spare the default stays 16.
    r = requests.post(f"{base_url}/v1/completions", json={"prompt": "Hello", "cllm_ignore_eos": True}, headers=auth,
                      timeout=120)
    assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] == 16, r.text


def test_prompt_past_the_model_positions_names_the_kv_capacity(base_url, auth):
    # A prompt longer than the model's positions (8192) is still refused against the smaller limit
    # the server holds (its KV rows per sequence), the one a request can meet.
    r = requests.post(f"{base_url}/v1/completions", json={"prompt": "word " * 9000, "max_tokens": 1}, headers=auth,
                      timeout=60)
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["param"] == "prompt" and "KV capacity of 2048" in err["message"], err


def test_stream_usage_is_null_in_every_chunk_but_the_last(base_url, api_key):
    # OpenAI's shape with stream_options.include_usage: "usage": null in each chunk, the totals in a
    # last chunk with no choices; without include_usage, no usage key at all.
    for include in (True, False):
        body = {"prompt": "One, two,", "max_tokens": 4, "stream": True}
        if include:
            body["stream_options"] = {"include_usage": True}
        out = subprocess.run(["curl", "-sN", f"{base_url}/v1/completions", "-H", f"Authorization: Bearer {api_key}",
                              "-H", "Content-Type: application/json", "-d", json.dumps(body)],
                             capture_output=True, text=True, timeout=120, check=True).stdout
        chunks = [json.loads(e[6:]) for e in out.split("\n\n") if e and e != "data: [DONE]"]
        if include:
            assert all("usage" in c and c["usage"] is None for c in chunks[:-1]), chunks
            assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 4
        else:
            assert all("usage" not in c for c in chunks), chunks
