# When the engine fails (here a worker rank stalls, so the coordinator's collective deadline
# fires), every open request still gets an answer: an SSE error event on a stream, a 5xx JSON body
# otherwise; then the server exits non-zero. Needs the tensor-parallel group (CLLM_SERVE_RANKS > 1).
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


@pytest.mark.skipif(RANKS < 2, reason="needs the tensor-parallel group (CLLM_SERVE_RANKS > 1)")
def test_engine_failure_reaches_every_open_request():
    srv = PrivateServer("--comm-deadline", "3", ranks=RANKS)
    stopped = []
    try:
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
        deadline = time.time() + 60
        while "\ncllm_batch_size 2\n" not in requests.get(srv.url + "/metrics", timeout=10).text:
            assert time.time() < deadline, "the two requests never ran together"
            time.sleep(0.05)
        workers = [p for p in children(srv.proc.pid) if p != srv.pid]
        assert workers, "no worker rank found"
        os.kill(workers[0], signal.SIGSTOP)
        stopped.append(workers[0])
        for t in threads:
            t.join(60)
        assert results["plain"].status_code >= 500, results["plain"].text
        assert results["plain"].json()["error"]["message"]
        last = results["events"][-1]
        assert last.startswith(b"data: ") and "error" in json.loads(last[6:]), results["events"][-3:]
        assert srv.proc.wait(60) != 0
    finally:
        for p in stopped:
            try:
                os.kill(p, signal.SIGKILL)
                os.kill(p, signal.SIGCONT)
            except ProcessLookupError:
                pass
        srv.close()
