# Private servers: admission control (429 + Retry-After with one slot and a queue of one) and the
# SIGTERM drain (in-flight requests finish, intake stops, every rank exits 0).
import os
import signal
import threading
import time

import requests

from conftest import PrivateServer

RANKS = int(os.environ.get("CLLM_SERVE_RANKS", "1"))


def post(url, **body):
    return requests.post(url + "/v1/completions", json=body, timeout=300)


def test_full_queue_answers_429_then_sigterm_drains():
    srv = PrivateServer("--max-batch", "1", "--max-queue", "1", ranks=RANKS)
    try:
        results = {}

        def run(name, tokens):
            results[name] = post(srv.url, prompt="Count: 1, 2, 3,", max_tokens=tokens)

        a = threading.Thread(target=run, args=("a", 40))
        a.start()
        time.sleep(0.5)
        b = threading.Thread(target=run, args=("b", 6))
        b.start()
        time.sleep(0.5)
        r = post(srv.url, prompt="x", max_tokens=2)
        assert r.status_code == 429, r.text
        assert r.headers["Retry-After"] == "1" and r.json()["error"]["type"] == "rate_limit_error"

        os.kill(srv.pid, signal.SIGTERM)  # rank 0 (mpirun would kill the job, not drain it)
        time.sleep(0.5)
        try:
            refused = post(srv.url, prompt="x", max_tokens=2).status_code in (503,)
        except requests.ConnectionError:
            refused = True  # the listener is closed
        assert refused
        a.join()
        b.join()
        assert results["a"].status_code == 200 and results["a"].json()["usage"]["completion_tokens"] == 40
        assert results["b"].status_code == 200
        assert srv.proc.wait(timeout=60) == 0, srv.text()
        assert "SIGTERM: draining" in srv.text()
    finally:
        srv.close()


def test_grace_period_cancels_the_rest():
    srv = PrivateServer("--grace", "1", ranks=RANKS)
    try:
        box = {}
        t = threading.Thread(target=lambda: box.update(r=post(srv.url, prompt="A long tale:", max_tokens=1500)))
        t.start()
        time.sleep(1.5)
        os.kill(srv.pid, signal.SIGTERM)
        t.join(timeout=60)
        assert box["r"].status_code == 503
        assert srv.proc.wait(timeout=60) == 0, srv.text()
    finally:
        srv.close()
