# When the engine fails (here a worker rank stalls, so the coordinator's collective deadline
# fires), every open request still gets an answer: an SSE error event on a stream, a 5xx JSON body
# otherwise; then the server exits non-zero: a stalled rank (the collective deadline), a killed
# one (mpirun stops the job). SIGTERM to mpirun drains. Needs the tensor-parallel group (CLLM_SERVE_RANKS > 1).
import json
import os
import signal
import threading
import time

import pytest
import requests

from conftest import PrivateServer

RANKS = int(os.environ.get("CLLM_SERVE_RANKS", "1"))


def children(pid):
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                        out.append(int(entry))
            except (OSError, ValueError, IndexError):
                pass
    return out


def failure_reaches_open_requests(srv, sig, stopped):
    """Runs a plain and a streamed request together, sends `sig` to a worker rank, and checks that
    both get an error answer (5xx JSON; an SSE error event last) and that the server exits non-zero."""
    body = {"prompt": "1, 2, 3,", "max_tokens": 1000, "cllm_ignore_eos": True}
    results = {}

    def plain():
        results["plain"] = requests.post(srv.url + "/v1/completions", json=body, timeout=120)

    def stream():
        r = requests.post(srv.url + "/v1/completions", json=dict(body, stream=True), stream=True, timeout=120)
        results["events"] = [line for line in r.iter_lines() if line]

    threads = [threading.Thread(target=plain), threading.Thread(target=stream)]
    for t in threads:
        t.start()
    wait_for_batch(srv, 2)
    workers = [p for p in children(srv.proc.pid) if p != srv.pid]
    assert workers, "no worker rank found"
    os.kill(workers[0], sig)
    stopped.append(workers[0])
    for t in threads:
        t.join(60)
    assert results["plain"].status_code >= 500, results["plain"].text
    assert results["plain"].json()["error"]["message"]
    last = results["events"][-1]
    assert last.startswith(b"data: ") and "error" in json.loads(last[6:]), results["events"][-3:]
    assert srv.proc.wait(60) != 0


@pytest.mark.skipif(RANKS < 2, reason="needs the tensor-parallel group (CLLM_SERVE_RANKS > 1)")
def test_engine_failure_reaches_every_open_request():
    srv = PrivateServer("--comm-deadline", "3", ranks=RANKS)
    stopped = []
    try:
        failure_reaches_open_requests(srv, signal.SIGSTOP, stopped)
    finally:
        for p in stopped:
            try:
                os.kill(p, signal.SIGKILL)
                os.kill(p, signal.SIGCONT)
            except ProcessLookupError:
                pass
        srv.close()


def intake_closed(url):
    try:
        return requests.get(url + "/health", timeout=10).status_code == 503  # draining
    except requests.ConnectionError:
        return True  # the listener is closed


def wait_for_batch(srv, n):
    deadline = time.time() + 60
    while f"\ncllm_batch_size {n}\n" not in requests.get(srv.url + "/metrics", timeout=10).text:
        assert time.time() < deadline, f"the {n} requests never ran together"
        time.sleep(0.05)


@pytest.mark.skipif(RANKS < 2, reason="needs the tensor-parallel group (CLLM_SERVE_RANKS > 1)")
def test_killed_rank_mid_stream_answers_with_error():
    # kill -9 of a worker: mpirun sends SIGTERM to the other ranks and SIGKILL a second later, while
    # rank 0 sits in a collective with the dead rank. The clients still get an error, not a cut stream.
    srv = PrivateServer(ranks=RANKS)
    try:
        failure_reaches_open_requests(srv, signal.SIGKILL, [])
    finally:
        srv.close()


@pytest.mark.skipif(RANKS < 2, reason="needs the tensor-parallel group (CLLM_SERVE_RANKS > 1)")
def test_sigterm_to_mpirun_drains():
    # mpirun passes SIGTERM on odls_base_sigkill_timeout (T) seconds after it gets it and sends
    # SIGKILL T seconds later: with T >= --grace the drain fits, as with SIGTERM to rank 0. Three
    # requests run together, sized (from a probe of the same shape) to end at about 1.0, 1.25 and
    # 1.5 T: at least one is in flight when the drain starts, and every one must finish.
    T = 10
    srv = PrivateServer("--grace", str(T), ranks=RANKS, env={"OMPI_MCA_odls_base_sigkill_timeout": str(T)})
    try:
        assert "warning: SIGTERM to mpirun" not in srv.text()

        def run_together(lengths, box):
            def one(i, n):
                box[i] = requests.post(srv.url + "/v1/completions", json={
                    "prompt": "1, 2,", "max_tokens": n, "cllm_ignore_eos": True, "cllm_decode": "ar"}, timeout=120)
            threads = [threading.Thread(target=one, args=(i, n)) for i, n in enumerate(lengths)]
            for t in threads:
                t.start()
            return threads

        for _ in range(2):  # the second probe runs warm
            t0 = time.time()
            for t in run_together([40] * 3, {}):
                t.join()
            per_token = (time.time() - t0) / 40
        lengths = [max(10, int(f * T / per_token)) for f in (1.0, 1.25, 1.5)]
        box = {}
        threads = run_together(lengths, box)
        wait_for_batch(srv, 3)
        os.kill(srv.proc.pid, signal.SIGTERM)  # mpirun, as Slurm, systemd and container runtimes do
        deadline = time.time() + 3 * T
        while not intake_closed(srv.url):  # rank 0 got the SIGTERM
            assert time.time() < deadline, "rank 0 never got the SIGTERM"
            time.sleep(0.05)
        in_flight = sum(t.is_alive() for t in threads)
        assert in_flight, f"every request ({lengths} tokens) ended before the drain began: the test shows nothing"
        for t in threads:
            t.join(3 * T)
        for i, n in enumerate(lengths):
            assert box[i].status_code == 200 and box[i].json()["usage"]["completion_tokens"] == n, box[i].text
        srv.proc.wait(4 * T)
        log = srv.text()
        assert "SIGTERM: draining" in log
        for rank in range(RANKS):
            assert f"cllm serve: rank {rank} stopped" in log, log[-3000:]
        print(f"drain under mpirun: {lengths} tokens, {in_flight} in flight at the drain, T = {T} s")
    finally:
        srv.close()


@pytest.mark.skipif(RANKS < 2, reason="needs the tensor-parallel group (CLLM_SERVE_RANKS > 1)")
def test_short_mpirun_kill_timeout_is_warned():
    srv = PrivateServer("--grace", "30", ranks=RANKS, env={"OMPI_MCA_odls_base_sigkill_timeout": "1"})
    try:
        assert "--mca odls_base_sigkill_timeout 30" in srv.text()
    finally:
        srv.close()
