"""Connection hygiene (issue 12, findings 1 and 2): slow headers, slow bodies, idle connections,
huge headers and too many connections cost the other clients nothing.

On the code before the fix, the slow bodies held every queue place (the normal requests got 503
``queue_full``) and nothing was ever cut off. Timings here are only deadlines for behaviour; the
latency figure is ``benchmarks/slow_clients.py``'s (docs/reliability.md)."""

from __future__ import annotations

import json
import socket
import time
from urllib.parse import urlsplit

import pytest
from hardening_helpers import assert_healthy, tutorial_request

QUEUE = 4
SETTINGS = {"queue_size": QUEUE, "header_timeout_s": 2, "idle_timeout_s": 1, "body_timeout_s": 2,
            "min_body_rate": 1000, "max_header_bytes": 8192, "max_connections": 96}


@pytest.fixture(scope="module")
def server(server_factory):
    return server_factory(**SETTINGS)


def _connect(server) -> socket.socket:
    parts = urlsplit(server.url)
    s = socket.create_connection((parts.hostname, parts.port), timeout=10)
    return s


def _read_all(s: socket.socket, timeout: float) -> bytes:
    """What the server sends until it closes the connection (or ``timeout``)."""
    s.settimeout(timeout)
    data = b""
    try:
        while True:
            part = s.recv(65536)
            if not part:
                break
            data += part
    except (TimeoutError, ConnectionResetError):
        pass
    return data


def _error(answer: bytes) -> tuple[int, dict]:
    head, _, body = answer.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    assert b"application/json" in head.lower(), answer[:300]
    return status, json.loads(body)["error"]


def _slow_body(server) -> socket.socket:
    body = json.dumps(tutorial_request()).encode()
    s = _connect(server)
    s.sendall(b"POST /grad HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
              b"Content-Length: %d\r\n\r\n" % len(body) + body[:1])
    return s


def _slow_header(server) -> socket.socket:
    s = _connect(server)
    s.sendall(b"POST /grad HTTP/1.1\r\nHost: x\r\nX-Slow: ")
    return s


def test_slow_bodies_and_headers_hold_no_queue_place_and_are_cut_off(server):
    headers = [_slow_header(server) for _ in range(20)]
    bodies = [_slow_body(server) for _ in range(4 * QUEUE)]
    try:
        time.sleep(0.3)  # let the server read every head
        with server.client() as c:
            statuses = [c.post("/grad", json=tutorial_request()).status_code for _ in range(20)]
        assert statuses == [200] * 20, statuses
        cut = time.monotonic()
        for s in bodies:
            status, err = _error(_read_all(s, 10))
            assert (status, err["code"], err["path"]) == (408, "request_timeout", "body"), err
        for s in headers:
            status, err = _error(_read_all(s, 10))
            assert (status, err["code"]) == (408, "request_timeout"), err
        assert time.monotonic() - cut < 8
    finally:
        for s in headers + bodies:
            s.close()
    assert_healthy(server)


def test_a_connection_that_sends_nothing_is_closed(server):
    s = _connect(server)
    try:
        t0 = time.monotonic()
        assert _read_all(s, 10) == b""  # closed, silently: nothing was asked
        assert time.monotonic() - t0 < 8, "the silent connection was not closed"
    finally:
        s.close()


def test_an_idle_keep_alive_connection_is_closed(server):
    s = _connect(server)
    try:
        s.sendall(b"GET /health/live HTTP/1.1\r\nHost: x\r\n\r\n")
        t0 = time.monotonic()
        answer = _read_all(s, 8)  # the answer, then the close after idle_timeout_s
        assert answer.startswith(b"HTTP/1.1 200"), answer[:200]
        assert time.monotonic() - t0 < 5, "the idle connection was not closed"
    finally:
        s.close()


def test_headers_over_the_limit_are_431_json(server):
    s = _connect(server)
    try:
        s.sendall(b"GET /health/live HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20000 + b"\r\n\r\n")
        status, err = _error(_read_all(s, 10))
        assert (status, err["code"]) == (431, "headers_too_large")
        assert "8192" in err["message"]
    except (BrokenPipeError, ConnectionResetError):
        pytest.fail("the server reset the connection instead of answering 431")
    finally:
        s.close()


def test_one_connection_over_the_limit_is_refused_with_json_503(server):
    held = [_connect(server) for _ in range(SETTINGS["max_connections"])]
    try:
        time.sleep(0.2)
        extra = _connect(server)
        status, err = _error(_read_all(extra, 5))
        extra.close()
        assert (status, err["code"]) == (503, "too_many_connections")
    finally:
        for s in held:
            s.close()
    assert_healthy(server)


def test_bad_http_is_a_json_400(server):
    s = _connect(server)
    try:
        s.sendall(b"THIS IS NOT HTTP\r\n\r\n")
        status, err = _error(_read_all(s, 5))
        assert status == 400 and err["code"] == "bad_request"
    finally:
        s.close()
