# The HTTP layer against clients that misbehave or are merely old, on a private one-rank server with
# short timeouts: stalled and idle sockets are dropped, a flood of idle sockets does not lock out
# /health, half-closed and HTTP/1.0 clients get their answer, Expect: 100-continue is honoured,
# every request leaves one access-log line, a drain answers 503 JSON on kept-alive connections,
# and the protocol's framing rules hold (HEAD, Allow, 501, 411, Transfer-Encoding, Host).
import json
import re
import signal
import socket
import threading
import time
from urllib.parse import urlparse

import pytest
import requests

from conftest import PrivateServer

TIMEOUT = 4  # --header-timeout and --idle-timeout of the private server


@pytest.fixture(scope="module")
def srv():
    s = PrivateServer("--header-timeout", str(TIMEOUT), "--idle-timeout", str(TIMEOUT), "--grace", "60")
    yield s
    s.close()


def connect(url):
    u = urlparse(url)
    s = socket.create_connection((u.hostname, u.port), timeout=30)
    return s


def request_bytes(method, path, body=None, version="1.1", headers=()):
    data = json.dumps(body).encode() if body is not None else b""
    head = [f"{method} {path} HTTP/{version}", "Host: x"] + list(headers)
    if body is not None:
        head += ["Content-Type: application/json", f"Content-Length: {len(data)}"]
    return ("\r\n".join(head) + "\r\n\r\n").encode(), data


def read_until_closed(s):
    out = b""
    while True:
        part = s.recv(65536)
        if not part:
            return out
        out += part


def parse(raw):
    """(status, headers lower-cased, body with chunked encoding undone) of one response."""
    head, _, rest = raw.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.lower(): v.strip() for k, v in (l.split(":", 1) for l in lines[1:])}
    if headers.get("transfer-encoding") == "chunked":
        body = b""
        while True:
            size, _, rest = rest.partition(b"\r\n")
            n = int(size, 16)
            if n == 0:
                break
            body, rest = body + rest[:n], rest[n + 2:]
        rest = body
    return status, headers, rest


def one_exchange(srv, raw):
    s = connect(srv.url)
    s.sendall(raw)
    return parse(read_until_closed(s))


def test_head_is_get_without_a_body_and_405_says_what_is_allowed(srv):
    status, headers, body = one_exchange(srv, b"HEAD /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert status == 200 and int(headers["content-length"]) == len(b'{"status":"ok"}') and body == b"", (headers, body)
    status, headers, body = one_exchange(srv, b"DELETE /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert status == 405 and headers["allow"] == "GET, HEAD", headers
    status, headers, _ = one_exchange(srv, b"GET /v1/completions HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert status == 405 and headers["allow"] == "POST", headers
    status, _, body = one_exchange(srv, b"BREW /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert status == 501 and b"BREW" in body, body


def test_bodies_the_server_cannot_frame_are_refused_and_the_connection_closed(srv):
    # A transfer coding other than chunked, alone or before chunked: 501 (RFC 9112 6.1).
    status, _, body = one_exchange(srv, b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\nabc")
    assert status == 501 and b"Transfer-Encoding 'gzip'" in body, body
    status, _, body = one_exchange(srv, b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: foo, chunked\r\n\r\n"
                                        b"1e\r\n{\"prompt\":\"Hi\",\"max_tokens\":2}\r\n0\r\n\r\n")
    assert status == 501 and b"'foo, chunked'" in body, body
    # A POST with neither Content-Length nor chunked: 411, not a "body is not valid JSON".
    status, _, body = one_exchange(srv, b"POST /v1/completions HTTP/1.1\r\nHost: x\r\n\r\n")
    assert status == 411 and b"Content-Length" in body, body
    # HTTP/1.1 without Host (RFC 9112 3.2); HTTP/1.0 needs none.
    status, _, body = one_exchange(srv, b"GET /health HTTP/1.1\r\nConnection: close\r\n\r\n")
    assert status == 400 and b"Host" in body, body
    status, _, _ = one_exchange(srv, b"GET /health HTTP/1.0\r\n\r\n")
    assert status == 200


def test_a_client_still_sending_a_too_large_body_reads_the_413(srv):
    # Python's http.client sends the whole body before it reads: the server answers 413 early and
    # must drain what follows before closing, or the client gets a reset instead of the answer.
    import http.client
    u = urlparse(srv.url)
    c = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
    c.request("POST", "/v1/completions", body=json.dumps({"prompt": "x" * (3 << 20)}).encode(),
              headers={"Content-Type": "application/json"})
    r = c.getresponse()
    assert r.status == 413 and b"exceeds" in r.read()


def test_targets_are_percent_decoded_and_may_be_absolute(srv):
    # RFC 3986 2.1 and RFC 9112 3.2.2: "/%68ealth" is "/health"; so is "http://host/health".
    for target in (b"/%68ealth", b"http://127.0.0.1/health", b"/health?x=%zz"):
        status, _, body = one_exchange(srv, b"GET " + target + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert status == 200, (target, status, body)
    status, _, body = one_exchange(srv, b"GET /heal%zzth HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert status == 400 and b"percent" in body, body


def test_stalled_and_idle_sockets_are_dropped(srv):
    silent = connect(srv.url)
    partial = connect(srv.url)
    partial.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")
    idle = connect(srv.url)
    idle.sendall(request_bytes("GET", "/health")[0])
    t0 = time.time()
    assert read_until_closed(silent) == b""
    status, _, body = parse(read_until_closed(partial))
    assert status == 408 and json.loads(body)["error"]["message"]
    first = idle.recv(65536)  # the /health answer, then the keep-alive connection idles out
    assert first.startswith(b"HTTP/1.1 200")
    read_until_closed(idle)
    assert time.time() - t0 < TIMEOUT + 5


def test_idle_flood_does_not_lock_out_health(srv):
    # More half-open sockets than the connection cap (512): the longest waiting ones make room.
    flood = []
    t0 = time.time()
    try:
        for i in range(520):
            s = connect(srv.url)
            if i % 2:
                s.sendall(b"GET /health HTTP/1.1\r\n")  # a header that never ends
            flood.append(s)
        assert requests.get(srv.url + "/health", timeout=10).status_code == 200
        r = requests.post(srv.url + "/v1/completions", json={"prompt": "Hi", "max_tokens": 2}, timeout=60)
        assert r.status_code == 200, r.text
        assert time.time() - t0 < TIMEOUT, "served only because the flood timed out"
    finally:
        for s in flood:
            s.close()


def test_half_closed_client_is_answered(srv):
    for stream in (False, True):
        s = connect(srv.url)
        head, body = request_bytes("POST", "/v1/completions", {"prompt": "Hi", "max_tokens": 4, "stream": stream})
        s.sendall(head + body)
        s.shutdown(socket.SHUT_WR)
        status, _, payload = parse(read_until_closed(s))
        assert status == 200, payload
        if stream:
            assert payload.rstrip().endswith(b"data: [DONE]"), payload
        else:
            assert json.loads(payload)["usage"]["completion_tokens"] == 4


def test_http10_gets_no_chunked_encoding(srv):
    s = connect(srv.url)
    head, body = request_bytes("POST", "/v1/completions", {"prompt": "Hi", "max_tokens": 4, "stream": True}, "1.0")
    s.sendall(head + body)
    status, headers, payload = parse(read_until_closed(s))
    assert status == 200 and "transfer-encoding" not in headers, headers
    assert payload.startswith(b"data: {") and payload.rstrip().endswith(b"data: [DONE]"), payload


def test_expect_100_continue(srv):
    s = connect(srv.url)
    head, body = request_bytes("POST", "/v1/completions", {"prompt": "Hi", "max_tokens": 2},
                               headers=["Expect: 100-continue"])
    s.sendall(head)
    s.settimeout(5)
    assert s.recv(65536).startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
    s.sendall(body)
    s.settimeout(60)
    raw = b""
    while b"}" not in raw:
        raw += s.recv(65536)
    assert raw.startswith(b"HTTP/1.1 200"), raw
    s.close()


def test_an_expectation_other_than_100_continue_gets_417(srv):
    head, body = request_bytes("POST", "/v1/completions", {"prompt": "Hi", "max_tokens": 2},
                               headers=["Expect: something-else", "Connection: close"])
    status, _, answer = one_exchange(srv, head + body)
    assert status == 417 and b"100-continue" in answer, answer


def test_empty_lines_before_the_request_line_are_ignored(srv):
    # RFC 9112 2.2: a CRLF a client sends after a POST body, or before its first request.
    s = connect(srv.url)
    head, body = request_bytes("POST", "/v1/completions", {"prompt": "Hi", "max_tokens": 2})
    s.sendall(b"\r\n" + head + body + b"\r\n")
    s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    raw = read_until_closed(s)
    first, _, rest = raw.partition(b"HTTP/1.1 200 OK\r\n")
    assert first == b"" and rest.count(b"HTTP/1.1 200 OK\r\n") == 1 and rest.endswith(b'{"status":"ok"}'), raw
    # Past a few empty lines it is not a request: refused as malformed, not waited on.
    status, _, _ = one_exchange(srv, b"\r\n" * 64 + b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
    assert status == 400


def test_bare_lf_line_endings_are_refused_saying_so(srv):
    # HTTP/1.1 lines end with CRLF; a client that sends bare LFs learns that, not "bad version".
    status, _, payload = one_exchange(srv, b"GET /health HTTP/1.1\nHost: x\nConnection: close\n\n")
    assert status == 400 and "CRLF" in json.loads(payload)["error"]["message"], payload


def test_access_log_has_one_line_per_request(srv):
    r = requests.get(srv.url + "/health", headers={"X-Request-Id": "access-log-probe"}, timeout=10)
    assert r.status_code == 200
    deadline = time.time() + 5
    while "access-log-probe" not in srv.text() and time.time() < deadline:
        time.sleep(0.05)
    lines = [l for l in srv.text().splitlines() if "access-log-probe" in l]
    assert len(lines) == 1 and re.search(r"GET /health 200 \d+ [\d.]+s access-log-probe$", lines[0]), lines


def test_oversized_header_fields_get_431(srv):
    # RFC 6585 5: header fields too large for the server (past 64 KiB) get 431, and the server lives on.
    big = b"X-Big: " + b"a" * (80 * 1024) + b"\r\n"
    status, _, body = one_exchange(srv, b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n" + big + b"\r\n")
    assert status == 431 and b"64 KiB" in body, (status, body)
    status, _, _ = one_exchange(srv, b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert status == 200


def test_cors_preflight_and_origin(srv):
    # A browser front end on another origin: the preflight is answered (no API key needed, as the
    # browser sends none), and every answer to a request with an Origin may be read by it.
    status, headers, _ = one_exchange(srv, b"OPTIONS /v1/chat/completions HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                                           b"Origin: http://localhost:3000\r\nAccess-Control-Request-Method: POST\r\n"
                                           b"Access-Control-Request-Headers: authorization, content-type\r\n\r\n")
    assert status == 204, (status, headers)
    assert headers["access-control-allow-origin"] == "*", headers
    assert "POST" in headers["access-control-allow-methods"], headers
    assert headers["access-control-allow-headers"] == "authorization, content-type", headers
    status, headers, _ = one_exchange(srv, b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\nOrigin: http://a\r\n\r\n")
    assert status == 200 and headers["access-control-allow-origin"] == "*", headers
    status, headers, _ = one_exchange(srv, b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert "access-control-allow-origin" not in headers, headers


def test_drain_answers_503_json_on_kept_alive_connections(srv):
    # Last in this module: it stops the server. A long request keeps the drain open meanwhile.
    kept = connect(srv.url)
    kept.sendall(request_bytes("GET", "/health")[0])
    assert kept.recv(65536).startswith(b"HTTP/1.1 200")
    long = threading.Thread(target=requests.post, args=(srv.url + "/v1/completions",),
                            kwargs=dict(json={"prompt": "1, 2,", "max_tokens": 200, "cllm_ignore_eos": True},
                                        timeout=300))
    long.start()
    deadline = time.time() + 60
    while "\ncllm_kv_rows_in_use 0\n" in requests.get(srv.url + "/metrics", timeout=10).text:
        assert time.time() < deadline
        time.sleep(0.05)
    srv.proc.send_signal(signal.SIGTERM)
    while "draining" not in srv.text():
        assert time.time() < deadline
        time.sleep(0.05)
    head, body = request_bytes("POST", "/v1/completions", {"prompt": "Hi", "max_tokens": 2})
    kept.sendall(head + body)
    status, headers, payload = parse(read_until_closed(kept))
    assert status == 503 and json.loads(payload)["error"]["type"] == "service_unavailable", payload
    assert headers.get("connection", "").lower() == "close"
    long.join()
