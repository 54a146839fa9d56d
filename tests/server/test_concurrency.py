# Iteration-level scheduling through HTTP: 32 concurrent streams, each equal to the same request
# served alone; cancellation by disconnect; and a bounded load run (its bounds below).
import json
import socket
import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlparse

import requests

PROMPTS = ["The sky is", "Water boils at", "My name is", "In 1492,"]


def stream_text(base_url, auth, prompt, max_tokens=8):
    r = requests.post(f"{base_url}/v1/completions", headers=auth, stream=True, timeout=600,
                      json={"prompt": prompt, "max_tokens": max_tokens, "stream": True})
    assert r.status_code == 200, r.text
    text, done = "", False
    for line in r.iter_lines():
        if not line:
            continue
        assert line.startswith(b"data: ")
        if line == b"data: [DONE]":
            done = True
            break
        text += json.loads(line[6:])["choices"][0]["text"]
    assert done
    return text


def gauge(base_url, name):
    for line in requests.get(f"{base_url}/metrics", timeout=10).text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(name + " missing")


def test_32_parallel_streams_equal_alone(base_url, auth):
    alone = {p: stream_text(base_url, auth, p) for p in PROMPTS}
    peak = [0.0]
    stop = threading.Event()

    def watch():
        while not stop.is_set():
            peak[0] = max(peak[0], gauge(base_url, "cllm_batch_size"))
            time.sleep(0.2)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        with ThreadPoolExecutor(32) as pool:
            jobs = [(p, pool.submit(stream_text, base_url, auth, p)) for p in PROMPTS * 8]
            results = [(p, f.result()) for p, f in jobs]
    finally:
        stop.set()
        watcher.join()
    for p, text in results:
        assert text == alone[p], p
    assert peak[0] >= 16, f"at most {peak[0]} sequences ran together"


def counter(base_url, status):
    key = f'cllm_requests_total{{endpoint="/v1/completions",status="{status}"}}'
    for line in requests.get(f"{base_url}/metrics", timeout=10).text.splitlines():
        if line.startswith(key):
            return int(line.split()[1])
    return 0


def test_disconnect_cancels(base_url, api_key, auth):
    before = counter(base_url, 499)
    u = urlparse(base_url)
    for stream in (True, False):
        # Counting goes on without an EOS, so the request is still decoding when the client leaves.
        body = json.dumps({"prompt": "1, 2, 3, 4, 5, 6, 7, 8,", "max_tokens": 1500, "stream": stream}).encode()
        s = socket.create_connection((u.hostname, u.port))
        s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  + f"Authorization: Bearer {api_key}\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body)
        if stream:
            assert s.recv(4096).startswith(b"HTTP/1.1 200")  # the stream has started
        time.sleep(1.5)
        assert gauge(base_url, "cllm_kv_rows_in_use") > 0
        s.close()
    deadline = time.time() + 60
    while counter(base_url, 499) < before + 2 and time.time() < deadline:
        time.sleep(0.2)
    assert counter(base_url, 499) == before + 2
    # Both slots are free again: nothing is left decoding.
    deadline = time.time() + 60
    while gauge(base_url, "cllm_kv_rows_in_use") > 0 and time.time() < deadline:
        time.sleep(0.2)
    assert gauge(base_url, "cllm_kv_rows_in_use") == 0


def counter_total(base_url, name):
    return gauge(base_url, name)  # an unlabelled counter reads like a gauge


def test_bounded_load(base_url, auth):
    """16 clients for 20 s against --max-batch 32 --max-queue 64. Bounds that hold whatever the
    machine's speed: every request is admitted and answered (no 429, no 5xx); each stops at its
    max_tokens and needs at most one forward iteration per token (Jacobi commits at least one token
    per iteration, the prefill's included); the server's counters equal what the clients received;
    the requests share forwards (more than one sequence per step on average, at most one block per
    client); and no KV row stays in use afterwards."""
    max_tokens = 4
    responses, errors = [], []
    lock = threading.Lock()
    before = {k: counter_total(base_url, k) for k in
              ("cllm_generated_tokens_total", "cllm_jacobi_iterations_total", "cllm_forward_steps_total")}
    ok_before = counter(base_url, 200)
    end = time.time() + 20

    def worker(i):
        while time.time() < end:
            t0 = time.time()
            r = requests.post(f"{base_url}/v1/completions", headers=auth, timeout=600,
                              json={"prompt": PROMPTS[i % 4], "max_tokens": max_tokens})
            with lock:
                if r.status_code != 200:
                    errors.append(r.text)
                else:
                    responses.append((time.time() - t0, r.json()))

    t0 = time.time()
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(worker, range(16)))
    wall = time.time() - t0
    assert not errors, errors[:3]
    assert responses
    tokens = sum(body["usage"]["completion_tokens"] for _, body in responses)
    iterations = sum(body["cllm"]["iterations"] for _, body in responses)
    for _, body in responses:
        assert 1 <= body["usage"]["completion_tokens"] <= max_tokens, body
        stopped = body["choices"][0]["finish_reason"] == "stop"  # the EOS took an iteration, not a token
        assert body["cllm"]["iterations"] <= body["usage"]["completion_tokens"] + stopped, body
    assert counter(base_url, 200) - ok_before == len(responses)
    assert counter_total(base_url, "cllm_generated_tokens_total") - before["cllm_generated_tokens_total"] == tokens
    served_iterations = counter_total(base_url, "cllm_jacobi_iterations_total") - before["cllm_jacobi_iterations_total"]
    assert served_iterations == iterations
    steps = counter_total(base_url, "cllm_forward_steps_total") - before["cllm_forward_steps_total"]
    assert 1 < iterations / steps <= 16, f"{iterations} iterations in {steps} steps"
    deadline = time.time() + 30
    while gauge(base_url, "cllm_kv_rows_in_use") > 0 and time.time() < deadline:
        time.sleep(0.2)
    assert gauge(base_url, "cllm_kv_rows_in_use") == 0
    latencies = [t for t, _ in responses]
    q = statistics.quantiles(latencies, n=100) if len(latencies) > 1 else latencies * 99
    print(f"\nload: 16 connections, {wall:.1f} s: {len(responses)} requests, p50 {q[49]:.2f} s, "
          f"p99 {q[98]:.2f} s, {tokens / wall:.1f} generated tokens/s, {iterations / steps:.1f} sequences per step")
