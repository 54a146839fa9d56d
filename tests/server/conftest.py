# Shared fixtures: the server that run.sh started (CLLM_SERVER_URL, CLLM_API_KEY), and a helper
# that starts a private server for tests that must stop or saturate one (tests/server/run.sh).
import os
import re
import subprocess
import time

import pytest
import requests

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="session")
def base_url():
    return os.environ["CLLM_SERVER_URL"]


@pytest.fixture(scope="session")
def api_key():
    return os.environ["CLLM_API_KEY"]


@pytest.fixture(scope="session")
def auth(api_key):
    return {"Authorization": f"Bearer {api_key}"}


@pytest.fixture(scope="session")
def model_name(base_url, auth):
    return requests.get(f"{base_url}/v1/models", headers=auth, timeout=10).json()["data"][0]["id"]


class PrivateServer:
    """A `cllm serve` on a free port, under `mpirun -np N` when ranks > 1."""

    def __init__(self, *flags, ranks=1, env=None):
        binary = os.environ.get("CLLM_BIN", os.path.join(ROOT, "build", "cllm"))
        cmd = [binary, "serve", "--port", "0", *flags]
        if ranks > 1:
            cmd = ["mpirun", "-np", str(ranks), "--oversubscribe"] + cmd
        self.log = open(os.path.join(os.environ.get("CLLM_TEST_TMP", "/tmp"), f"private_server_{time.time_ns()}.log"), "w+")
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, cwd=ROOT,
                                     env=dict(os.environ, **(env or {})))
        deadline = time.time() + 120
        self.pid = self.url = None
        while time.time() < deadline and self.proc.poll() is None:
            m = re.search(r"pid (\d+) listening on (http://\S+)", self.text())
            if m:
                self.pid, self.url = int(m.group(1)), m.group(2)
                try:
                    if requests.get(self.url + "/health", timeout=2).status_code == 200:
                        return
                except requests.RequestException:
                    pass
            time.sleep(0.3)
        self.close()
        raise RuntimeError("private server did not become ready:\n" + self.text())

    def text(self):
        self.log.flush()
        with open(self.log.name) as f:
            return f.read()

    def close(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
