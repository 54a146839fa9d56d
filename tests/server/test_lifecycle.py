# Private servers: admission control (429 + Retry-After with one slot and a queue of one) and the
# SIGTERM drain (in-flight requests finish, intake stops, every rank exits 0). Each step waits for
# the server state it needs (read from /metrics and /health), not for a guessed time.
import os
import signal
import threading
import time

import requests

from conftest import PrivateServer

RANKS = int(os.environ.get("CLLM_SERVE_RANKS", "1"))


def post(url, **body):
    return requests.post(url + "/v1/completions", json=body, timeout=300)


def gauge(url, name):
    for line in requests.get(url + "/metrics", timeout=10).text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(name + " missing")


def wait_for(what, condition, timeout=120):
    """Polls condition() until it holds: each step of a test waits for the state it needs."""
    deadline = time.time() + timeout
    while not condition():
        assert time.time() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def intake_closed(url):
    try:
        return requests.get(url + "/health", timeout=10).status_code == 503  # draining
    except requests.ConnectionError:
        return True  # the listener is closed


def test_full_queue_answers_429_then_sigterm_drains():
    # a runs long enough (100 tokens, no EOS) to hold the one slot while b waits in the queue.
    srv = PrivateServer("--max-batch", "1", "--max-queue", "1", "--grace", "300", ranks=RANKS)
    try:
        results = {}

        def run(name, **body):
            results[name] = post(srv.url, prompt="Count: 1, 2, 3,", **body)

        a = threading.Thread(target=run, args=("a",), kwargs=dict(max_tokens=100, cllm_ignore_eos=True))
        a.start()
        wait_for("a to hold the slot", lambda: gauge(srv.url, "cllm_kv_rows_in_use") > 0)
        b = threading.Thread(target=run, args=("b",), kwargs=dict(max_tokens=6))
        b.start()
        wait_for("b to wait in the queue", lambda: gauge(srv.url, "cllm_queue_depth") == 1)
        r = post(srv.url, prompt="x", max_tokens=2)
        assert r.status_code == 429, r.text
        assert r.headers["Retry-After"] == "1" and r.json()["error"]["type"] == "rate_limit_error"
        assert "a" not in results, "a finished before the queue was full"

        os.kill(srv.pid, signal.SIGTERM)  # rank 0 (SIGTERM to mpirun: test_failures.py)
        wait_for("the drain to close intake", lambda: intake_closed(srv.url))
        try:
            refused = post(srv.url, prompt="x", max_tokens=2).status_code == 503
        except requests.ConnectionError:
            refused = True  # the listener is closed
        assert refused
        a.join()
        b.join()
        assert results["a"].status_code == 200 and results["a"].json()["usage"]["completion_tokens"] == 100
        assert results["b"].status_code == 200
        assert srv.proc.wait(timeout=60) == 0, srv.text()
        assert "SIGTERM: draining" in srv.text()
    finally:
        srv.close()


def test_grace_period_cancels_the_rest():
    srv = PrivateServer("--grace", "1", ranks=RANKS)
    try:
        box = {}
        t = threading.Thread(target=lambda: box.update(
            r=post(srv.url, prompt="A long tale:", max_tokens=1500, cllm_ignore_eos=True)))
        t.start()
        wait_for("the request to decode", lambda: gauge(srv.url, "cllm_kv_rows_in_use") > 0)
        os.kill(srv.pid, signal.SIGTERM)
        t.join(timeout=60)
        assert box["r"].status_code == 503
        assert srv.proc.wait(timeout=60) == 0, srv.text()
    finally:
        srv.close()


def test_more_choices_than_the_server_holds_is_a_400_naming_n():
    # n beyond --max-batch + --max-queue would get 429 however long a client retries.
    srv = PrivateServer("--max-batch", "2", "--max-queue", "1", ranks=RANKS)
    try:
        r = post(srv.url, prompt="hello", max_tokens=2, n=4)
        assert r.status_code == 400, r.text
        assert r.json()["error"]["param"] == "n" and "--max-batch + --max-queue" in r.json()["error"]["message"]
        assert post(srv.url, prompt="hello", max_tokens=2, n=3).status_code == 200  # what it holds is served
    finally:
        srv.close()
