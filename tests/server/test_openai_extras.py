# What OpenAI clients and operators expect beyond generation: fresh sampling without a seed, the
# neutral top_logprobs, unique ids and X-Request-Id, /tokenize and /detokenize, /v1/models/ID,
# a case-insensitive Bearer scheme, every status counted, and metric sums at full precision.
import json

import requests


def post(base_url, auth, path, **body):
    return requests.post(f"{base_url}{path}", json=body, headers=auth, timeout=120)


def test_sampling_without_seed_differs(base_url, auth):
    body = dict(prompt="My favourite animal is", max_tokens=16, temperature=1.5, top_p=0.95)
    texts = {post(base_url, auth, "/v1/completions", **body).json()["choices"][0]["text"] for _ in range(3)}
    assert len(texts) > 1, texts


def test_top_logprobs_zero_is_accepted(base_url, auth):
    r = post(base_url, auth, "/v1/chat/completions", messages=[{"role": "user", "content": "Hi"}], max_tokens=2,
             top_logprobs=0)
    assert r.status_code == 200, r.text
    assert post(base_url, auth, "/v1/completions", prompt="Hi", max_tokens=2, top_logprobs=3).status_code == 400


def test_ids_are_unique_and_request_ids_echoed(base_url, auth):
    a = post(base_url, auth, "/v1/completions", prompt="Hi", max_tokens=1)
    b = post(base_url, auth, "/v1/completions", prompt="Hi", max_tokens=1)
    ida, idb = a.json()["id"], b.json()["id"]
    assert ida != idb and ida.startswith("cmpl-") and len(ida) >= len("cmpl-") + 16, (ida, idb)
    assert a.headers["X-Request-Id"] and a.headers["X-Request-Id"] != b.headers["X-Request-Id"]
    mine = requests.get(f"{base_url}/health", headers={"X-Request-Id": "trace-42"}, timeout=10)
    assert mine.headers["X-Request-Id"] == "trace-42"


def test_tokenize_and_detokenize(base_url, auth):
    t = post(base_url, auth, "/tokenize", prompt="Hello world").json()
    assert t["count"] == len(t["tokens"]) > 0 and t["max_model_len"] > 0
    assert post(base_url, auth, "/detokenize", tokens=t["tokens"]).json()["prompt"] == "Hello world"
    chat = post(base_url, auth, "/tokenize", messages=[{"role": "user", "content": "Say hi"}]).json()
    done = post(base_url, auth, "/v1/chat/completions", messages=[{"role": "user", "content": "Say hi"}],
                max_tokens=1).json()
    assert chat["count"] == done["usage"]["prompt_tokens"]
    assert post(base_url, auth, "/detokenize", tokens=[-1]).status_code == 400


def test_model_by_id_and_lowercase_bearer(base_url, auth, api_key, model_name):
    r = requests.get(f"{base_url}/v1/models/{model_name}", headers={"Authorization": f"bearer {api_key}"}, timeout=10)
    assert r.status_code == 200 and r.json()["id"] == model_name, r.text
    # The id percent-escaped, as the OpenAI SDK sends it (an "org/model" name escapes its "/").
    escaped = "".join(f"%{b:02X}" for b in model_name.encode())
    r = requests.get(f"{base_url}/v1/models/{escaped}", headers=auth, timeout=10)
    assert r.status_code == 200 and r.json()["id"] == model_name, r.text
    assert r.json()["created"] > 1_700_000_000, r.json()  # the server's start, not 1970
    r = requests.get(f"{base_url}/v1/models/other-model", headers=auth, timeout=10)
    assert r.status_code == 404 and r.json()["error"]["param"] == "model"


def metric(base_url, line_start):
    for line in requests.get(f"{base_url}/metrics", timeout=10).text.splitlines():
        if line.startswith(line_start + " "):
            return line.split()[1]
    return "0"


def test_every_status_is_counted(base_url, auth):
    key = 'cllm_requests_total{endpoint="%s",status="%d"}'
    cases = [("/v1/completions", 401, lambda: requests.post(f"{base_url}/v1/completions", json={}, timeout=10)),
             ("/v1/completions", 400, lambda: requests.post(f"{base_url}/v1/completions", data="{", headers=auth,
                                                            timeout=10)),
             ("/v1/completions", 413, lambda: requests.post(f"{base_url}/v1/completions", data=b"x" * ((1 << 20) + 1),
                                                            headers=auth, timeout=30)),
             ("other", 404, lambda: requests.get(f"{base_url}/nowhere", timeout=10))]
    for endpoint, status, call in cases:
        before = int(metric(base_url, key % (endpoint, status)))
        assert call().status_code == status
        assert int(metric(base_url, key % (endpoint, status))) == before + 1, (endpoint, status)


def test_metric_sums_keep_their_precision(base_url, auth):
    # A sum of measured seconds printed in full has more than 6 significant digits, except when its
    # nanoseconds happen to end in zeros (a millisecond-long sum does one time in ten): a few more
    # requests tell that apart from a sum printed to 6 digits, which never has more.
    for _ in range(5):
        post(base_url, auth, "/v1/completions", prompt="Hello", max_tokens=3)
        s = metric(base_url, "cllm_time_to_first_token_seconds_sum")
        digits = s.replace(".", "").replace("-", "").split("e")[0].lstrip("0").rstrip("0")
        if len(digits) > 6:
            break
    assert len(digits) > 6, s


def test_max_model_len_is_what_a_request_may_use(base_url, auth):
    # A prompt of max_model_len - 1 tokens and one new token is accepted; one token more is refused.
    n = post(base_url, auth, "/tokenize", prompt="x").json()["max_model_len"]
    ids = post(base_url, auth, "/tokenize", prompt="hello " * n).json()["tokens"]
    ok = post(base_url, auth, "/v1/completions", prompt=ids[:n - 1], max_tokens=1)
    assert ok.status_code == 200, ok.text
    over = post(base_url, auth, "/v1/completions", prompt=ids[:n], max_tokens=1)
    assert over.status_code == 400 and over.json()["error"]["param"] == "prompt", over.text


def test_text_cut_inside_a_character_ends_before_it(base_url, auth):
    # Emoji take several tokens each: a max_tokens that ends inside one leaves no U+FFFD in the
    # text (the unfinished character is dropped, as vLLM does), streamed or not.
    body = {"messages": [{"role": "user", "content": "Reply with emoji only: 😀🎉👨‍👩‍👧🌍🚀"}]}
    cut = 0
    for max_tokens in range(1, 13):
        r = requests.post(f"{base_url}/v1/chat/completions", json=dict(body, max_tokens=max_tokens), headers=auth, timeout=60)
        assert r.status_code == 200, r.text
        text = r.json()["choices"][0]["message"]["content"]
        assert "\ufffd" not in text, (max_tokens, text)
        cut += r.json()["usage"]["completion_tokens"] == max_tokens
        s = requests.post(f"{base_url}/v1/chat/completions", json=dict(body, max_tokens=max_tokens, stream=True),
                          headers=auth, stream=True, timeout=60)
        streamed = "".join(json.loads(line[6:])["choices"][0]["delta"].get("content", "")
                           for line in s.iter_lines() if line.startswith(b"data: {") and b'"choices":[{' in line)
        assert streamed == text, (max_tokens, streamed, text)
    assert cut > 0


def test_batched_completion_prompts(base_url, auth):
    # A batch of prompts (as lm-evaluation-harness sends them): one choice per prompt and n, numbered
    # prompt * n + j as OpenAI does, each the same as that prompt asked alone; usage counts every
    # prompt once. Token-id batches too, and streamed.
    prompts = ["The capital of France is", "def add(a, b):", "Once upon a time"]
    alone = [requests.post(f"{base_url}/v1/completions", json={"prompt": p, "max_tokens": 6}, headers=auth,
                           timeout=60).json() for p in prompts]
    r = requests.post(f"{base_url}/v1/completions", json={"prompt": prompts, "max_tokens": 6, "n": 2}, headers=auth,
                      timeout=60)
    assert r.status_code == 200, r.text
    out = r.json()
    assert [c["index"] for c in out["choices"]] == list(range(6)), out
    for p in range(3):
        for j in range(2):
            assert out["choices"][p * 2 + j]["text"] == alone[p]["choices"][0]["text"], (p, j, out)
    assert out["usage"]["prompt_tokens"] == sum(a["usage"]["prompt_tokens"] for a in alone), out["usage"]
    ids = [requests.post(f"{base_url}/tokenize", json={"prompt": p}, headers=auth, timeout=60).json()["tokens"]
           for p in prompts[:2]]
    by_ids = requests.post(f"{base_url}/v1/completions", json={"prompt": ids, "max_tokens": 6}, headers=auth,
                           timeout=60).json()
    assert [c["text"] for c in by_ids["choices"]] == [a["choices"][0]["text"] for a in alone[:2]], by_ids
    s = requests.post(f"{base_url}/v1/completions", json={"prompt": prompts, "max_tokens": 6, "stream": True},
                      headers=auth, stream=True, timeout=60)
    texts = ["", "", ""]
    for line in s.iter_lines():
        if line.startswith(b"data: {"):
            for c in json.loads(line[6:])["choices"]:
                texts[c["index"]] += c["text"]
    assert texts == [a["choices"][0]["text"] for a in alone], texts
