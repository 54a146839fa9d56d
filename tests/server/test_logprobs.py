# logprobs / top_logprobs in OpenAI's shapes (chat: choices[].logprobs.content[]; completions:
# tokens, token_logprobs, top_logprobs, text_offset), streamed and not; echo with the prompt's
# logprobs (max_tokens 0: what lm-evaluation-harness's loglikelihood sends); n choices.
import json
import math

import requests

from conftest import PrivateServer


def post(base_url, auth, path, **body):
    r = requests.post(f"{base_url}{path}", json=body, headers=auth, timeout=300)
    assert r.status_code == 200, r.text
    return r.json()


def sse(base_url, auth, path, **body):
    r = requests.post(f"{base_url}{path}", json=dict(body, stream=True), headers=auth, stream=True, timeout=300)
    assert r.status_code == 200, r.text
    events = []
    for line in r.iter_lines():
        if line.startswith(b"data: ") and line != b"data: [DONE]":
            events.append(json.loads(line[6:]))
    return events


PROMPT = "The first ten prime numbers are 2, 3, 5,"


def test_completion_logprobs_shape(base_url, auth):
    out = post(base_url, auth, "/v1/completions", prompt=PROMPT, max_tokens=12, logprobs=3)
    c = out["choices"][0]
    lp = c["logprobs"]
    n = out["usage"]["completion_tokens"]
    assert len(lp["tokens"]) == len(lp["token_logprobs"]) == len(lp["top_logprobs"]) == len(lp["text_offset"]) == n
    assert "".join(lp["tokens"]) == c["text"]
    assert lp["text_offset"][0] == len(PROMPT)  # offsets count from the prompt's start
    assert all(b - a == len(t) for a, b, t in zip(lp["text_offset"], lp["text_offset"][1:], lp["tokens"]))
    for tok, p, top in zip(lp["tokens"], lp["token_logprobs"], lp["top_logprobs"]):
        assert p <= 0 and len(top) == 3
        # Greedy: the emitted token is the most probable one.
        assert tok in top and math.isclose(top[tok], max(top.values()), abs_tol=1e-6) and p == top[tok]
    assert sum(math.exp(v) for v in lp["top_logprobs"][0].values()) <= 1 + 1e-5


def test_jacobi_logprobs_equal_ar(base_url, auth):
    body = dict(prompt="1, 2, 3, 4, 5, 6, 7,", max_tokens=24, logprobs=2, cllm_ignore_eos=True)
    jac = post(base_url, auth, "/v1/completions", cllm_block=16, **body)
    ar = post(base_url, auth, "/v1/completions", cllm_decode="ar", **body)
    assert jac["cllm"]["iterations"] < ar["cllm"]["iterations"], "Jacobi accepted one token per step: shows nothing"
    a, b = jac["choices"][0]["logprobs"], ar["choices"][0]["logprobs"]
    assert a["tokens"] == b["tokens"]
    for x, y in zip(a["token_logprobs"], b["token_logprobs"]):
        assert abs(x - y) < 1e-4, (a["token_logprobs"], b["token_logprobs"])


def test_echo_gives_the_prompts_logprobs(base_url, auth):
    gen = post(base_url, auth, "/v1/completions", prompt=PROMPT, max_tokens=5, logprobs=1)
    cont = gen["choices"][0]["text"]
    ids = post(base_url, auth, "/tokenize", prompt=PROMPT + cont)["tokens"]
    out = post(base_url, auth, "/v1/completions", prompt=PROMPT + cont, max_tokens=0, echo=True, logprobs=1)
    c = out["choices"][0]
    assert c["text"] == PROMPT + cont and out["usage"]["completion_tokens"] == 0
    lp = c["logprobs"]
    assert len(lp["tokens"]) == len(ids)
    assert lp["token_logprobs"][0] is None and lp["top_logprobs"][0] is None
    assert all(p is not None and p <= 0 for p in lp["token_logprobs"][1:])
    # The echoed continuation scores as it did when it was generated.
    gen_lp = gen["choices"][0]["logprobs"]["token_logprobs"]
    assert len(ids) == out["usage"]["prompt_tokens"]
    assert lp["tokens"][-len(gen_lp):] == gen["choices"][0]["logprobs"]["tokens"]
    for x, y in zip(lp["token_logprobs"][-len(gen_lp):], gen_lp):
        assert abs(x - y) < 1e-4, (lp["token_logprobs"], gen_lp)
    # As lm-evaluation-harness sends it: a batch of one id list, one token generated and echoed.
    batch = post(base_url, auth, "/v1/completions", prompt=[ids], max_tokens=1, echo=True, logprobs=1, temperature=0)
    blp = batch["choices"][0]["logprobs"]["token_logprobs"]
    assert len(blp) == len(ids) + 1
    assert all(abs(x - y) < 1e-4 for x, y in zip(blp[1:len(ids)], lp["token_logprobs"][1:]))


def test_chat_logprobs_streamed_equal_whole(base_url, auth):
    body = dict(messages=[{"role": "user", "content": "Name three colours."}], max_tokens=16, logprobs=True,
                top_logprobs=4)
    whole = post(base_url, auth, "/v1/chat/completions", **body)
    content = whole["choices"][0]["logprobs"]["content"]
    text = whole["choices"][0]["message"]["content"]
    assert "".join(t["token"] for t in content) == text
    for t in content:
        assert set(t) == {"token", "logprob", "bytes", "top_logprobs"}
        assert bytes(t["bytes"]).decode("utf-8", "replace") == t["token"]
        assert len(t["top_logprobs"]) == 4 and t["top_logprobs"][0]["logprob"] >= t["top_logprobs"][-1]["logprob"]
        assert t["top_logprobs"][0]["token"] == t["token"] and t["top_logprobs"][0]["logprob"] == t["logprob"]
    streamed = []
    for ev in sse(base_url, auth, "/v1/chat/completions", **body):
        for ch in ev["choices"]:
            if ch.get("logprobs"):
                streamed += ch["logprobs"]["content"]
    assert [t["token"] for t in streamed] == [t["token"] for t in content]
    assert all(abs(a["logprob"] - b["logprob"]) < 1e-6 for a, b in zip(streamed, content))
    # Without logprobs the field is null.
    plain = post(base_url, auth, "/v1/chat/completions", messages=body["messages"], max_tokens=2)
    assert plain["choices"][0]["logprobs"] is None


def test_completion_logprobs_streamed(base_url, auth):
    whole = post(base_url, auth, "/v1/completions", prompt=PROMPT, max_tokens=10, logprobs=2)["choices"][0]
    tokens, offsets = [], []
    for ev in sse(base_url, auth, "/v1/completions", prompt=PROMPT, max_tokens=10, logprobs=2):
        for ch in ev["choices"]:
            if ch["logprobs"]:
                tokens += ch["logprobs"]["tokens"]
                offsets += ch["logprobs"]["text_offset"]
    assert tokens == whole["logprobs"]["tokens"] and offsets == whole["logprobs"]["text_offset"]


def test_n_choices(base_url, auth):
    greedy = post(base_url, auth, "/v1/completions", prompt=PROMPT, max_tokens=8, n=3, cllm_ignore_eos=True)
    assert [c["index"] for c in greedy["choices"]] == [0, 1, 2]
    assert len({c["text"] for c in greedy["choices"]}) == 1  # temperature 0: all equal
    assert greedy["usage"]["completion_tokens"] == 3 * 8
    body = dict(prompt="My favourite animal is", max_tokens=12, n=3, temperature=1.5, seed=7)
    a = post(base_url, auth, "/v1/completions", **body)
    b = post(base_url, auth, "/v1/completions", **body)
    texts = [c["text"] for c in a["choices"]]
    assert texts == [c["text"] for c in b["choices"]]  # seeded: deterministic per choice
    assert len(set(texts)) > 1, texts  # and the choices are independent draws
    # Streamed: every chunk names its choice, and each choice ends with its own finish_reason.
    parts, finished = {}, set()
    for ev in sse(base_url, auth, "/v1/chat/completions", messages=[{"role": "user", "content": "Hi"}],
                  max_tokens=6, n=2, temperature=1.5, seed=7):
        for ch in ev["choices"]:
            parts[ch["index"]] = parts.get(ch["index"], "") + (ch["delta"].get("content") or "")
            if ch["finish_reason"]:
                finished.add(ch["index"])
    assert set(parts) == finished == {0, 1}
    whole = post(base_url, auth, "/v1/chat/completions", messages=[{"role": "user", "content": "Hi"}], max_tokens=6,
                 n=2, temperature=1.5, seed=7)
    assert [parts[0], parts[1]] == [c["message"]["content"] for c in whole["choices"]]


def test_tokenizer_info_and_special_tokens(base_url, auth):
    info = requests.get(f"{base_url}/tokenizer_info", headers=auth, timeout=10).json()
    assert info["eos_token"] and info["model_max_length"] > 0
    eos = post(base_url, auth, "/tokenize", prompt=info["eos_token"], add_special_tokens=False)["tokens"]
    assert len(eos) == 1
    r = requests.post(f"{base_url}/tokenize", json={"prompt": "x", "add_special_tokens": 1}, headers=auth, timeout=10)
    assert r.status_code == 400 and r.json()["error"]["param"] == "add_special_tokens"


def text_offsets_point_into_the_text(choice):
    """Every token's text_offset is where its text starts in the answer; a special token that adds
    no text (a BOS) takes no room."""
    text, lp = choice["text"], choice["logprobs"]
    for tok, off in zip(lp["tokens"], lp["text_offset"]):
        assert text[off:off + len(tok)] == tok or tok in ("<s>", "</s>", "<|endoftext|>"), (tok, off, text)


def test_echo_text_offsets_with_a_bos_token():
    # random:tiny adds a BOS (shown as "<s>", no text of its own); SmolLM2 adds none.
    srv = PrivateServer("--model", "random:tiny", "--max-batch", "2")
    try:
        out = requests.post(f"{srv.url}/v1/completions", json=dict(prompt="hello", max_tokens=3, echo=True, logprobs=0,
                                                                   temperature=0), timeout=60).json()
        c = out["choices"][0]
        assert c["logprobs"]["tokens"][0] == "<s>" and c["text"].startswith("hello")
        assert c["logprobs"]["text_offset"][:2] == [0, 0]
        text_offsets_point_into_the_text(c)
    finally:
        srv.close()


def test_completion_text_offsets_point_into_the_text(base_url, auth):
    out = post(base_url, auth, "/v1/completions", prompt=PROMPT, max_tokens=6, echo=True, logprobs=0)
    text_offsets_point_into_the_text(out["choices"][0])


def test_echo_text_offsets_with_special_tokens_in_the_prompt(base_url, auth):
    # A special token written in the prompt stands in the echoed text as written (and is named so
    # in tokens); its offset and every later one point at their own text.
    for prompt in ("a<|im_start|>b c", "x<|endoftext|>yz", "<|im_start|>"):
        out = post(base_url, auth, "/v1/completions", prompt=prompt, max_tokens=2, echo=True, logprobs=0)
        c = out["choices"][0]
        assert c["text"].startswith(prompt)
        lp = c["logprobs"]
        assert "<|im_start|>" in lp["tokens"] or "<|endoftext|>" in lp["tokens"], lp["tokens"]
        for tok, off in zip(lp["tokens"], lp["text_offset"]):
            assert c["text"][off:off + len(tok)] == tok, (prompt, tok, off, c["text"])


def test_a_stop_string_inside_a_token_keeps_that_tokens_logprob(base_url, auth):
    # The logprobs cover the returned text: the token in which a stop string begins keeps its
    # logprob whether the stop string starts at its first byte or inside it, and even when part of
    # its text was already streamed before the stop string completed; later tokens are dropped.
    prose = "Once upon a time, in a small village by the sea,"
    full = post(base_url, auth, "/v1/completions", prompt=prose, max_tokens=16, logprobs=0)["choices"][0]
    tokens = full["logprobs"]["tokens"]
    starts = [sum(len(t) for t in tokens[:i]) for i in range(len(tokens))]
    cases = 0
    for i in range(2, len(tokens) - 1):
        if len(tokens[i]) < 2 or not tokens[i + 1]:
            continue
        for k in (starts[i], starts[i] + 1):  # at the token's first byte, then inside it
            stop = full["text"][k:starts[i + 1] + len(tokens[i + 1])]
            if full["text"].find(stop) != k:
                continue
            for stream in (False, True):
                if stream:
                    events = sse(base_url, auth, "/v1/completions", prompt=prose, max_tokens=16, logprobs=0, stop=stop)
                    text = "".join(e["choices"][0]["text"] for e in events if e["choices"])
                    got = [t for e in events if e["choices"] and e["choices"][0].get("logprobs")
                           for t in e["choices"][0]["logprobs"]["tokens"]]
                else:
                    c = post(base_url, auth, "/v1/completions", prompt=prose, max_tokens=16, logprobs=0, stop=stop)["choices"][0]
                    text, got = c["text"], c["logprobs"]["tokens"]
                assert text == full["text"][:k], (stop, text)
                assert got == tokens[:i + 1] if k > starts[i] else got == tokens[:i], (stop, k, starts[i], got)
                cases += 1
    assert cases >= 4


def test_text_offsets_count_characters_not_bytes(base_url, auth):
    # As OpenAI's: offsets index the decoded text, so a client can slice it (18 bytes, 6 characters).
    prompt = "日本の首都は"
    plain = post(base_url, auth, "/v1/completions", prompt=prompt, max_tokens=4, logprobs=0)
    assert plain["choices"][0]["logprobs"]["text_offset"][0] == len(prompt)
    echoed = post(base_url, auth, "/v1/completions", prompt=prompt, max_tokens=4, echo=True, logprobs=0)
    c = echoed["choices"][0]
    offsets = c["logprobs"]["text_offset"]
    assert offsets == sorted(offsets) and offsets[-1] <= len(c["text"])
    for tok, off in zip(c["logprobs"]["tokens"], offsets):
        # A token holding part of a character shows as U+FFFD; special tokens add no text.
        if "\ufffd" not in tok and tok not in ("<s>", "</s>", "<|endoftext|>", "<|im_end|>"):
            assert c["text"][off:off + len(tok)] == tok, (tok, off, c["text"])
