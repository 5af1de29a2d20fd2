"""Memory (issue 12, finding 5): a budget of request-body bytes in flight, and refused bodies that
are freed at once.

Before the fix: no budget (64 bodies of 200 MB could be admitted together), and an invalid JSON
body stayed in memory until the garbage collector ran (its decode error held the whole text)."""

from __future__ import annotations

import gc
import socket
import time
from urllib.parse import urlsplit

import orjson
import pytest
from hardening_helpers import assert_healthy, mib, rss_bytes, tutorial_request

from service.errors import BadRequestError
from service.http import body as codec
from tests.support.api_contract import error_of

BUDGET = 10 * 2**20


def test_bodies_past_the_inflight_budget_get_503(server_factory):
    server = server_factory(workers=1, max_inflight_bytes=BUDGET, body_timeout_s=30)
    parts = urlsplit(server.url)
    held = socket.create_connection((parts.hostname, parts.port))
    try:  # a body of 8 MiB being read holds 8 MiB of the budget
        held.sendall(b"POST /grad HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: %d\r\n\r\n{" % (8 * 2**20))
        time.sleep(0.3)
        with server.client() as c:
            assert c.post("/grad", json=tutorial_request()).status_code == 200  # small: fits
            r = c.post("/grad", content=b"x" * (4 * 2**20), headers={"Content-Type": "application/json"})
            err = error_of(r, 503, "memory_budget")
            assert int(r.headers["retry-after"]) >= 1 and "--max-inflight-bytes" in err["message"]
    finally:
        held.close()
    with server.client() as c:  # released when the held request ends
        r = c.post("/grad", content=b"x" * (4 * 2**20), headers={"Content-Type": "application/json"})
        error_of(r, 400, "bad_request")
    assert_healthy(server)


def test_a_refused_json_body_does_not_outlive_its_answer():
    """In process: the 400 for invalid JSON keeps no reference to the text (no __context__ that
    holds the decode error and its copy of the document)."""
    text = b'{"network": "' + b"a" * 1000
    try:
        codec.parse_body(text, {})
    except BadRequestError as exc:
        assert exc.__context__ is None and exc.__cause__ is None


def test_invalid_json_bodies_are_freed_at_once(hard, hard_server, figures):
    gc.collect()
    pid = hard_server.serving_pid()  # in the in-process design a child of the supervisor
    baseline = rss_bytes(pid)
    peaks = []
    for _ in range(4):
        body = b'{"network": "' + b"a" * (48 * 2**20)  # 48 MiB, never closed: not JSON
        error_of(hard.post("/grad", content=body, headers={"Content-Type": "application/json"}), 400, "bad_request")
        del body
        peaks.append(rss_bytes(pid))
    after = rss_bytes(pid)
    figures["invalid_json_48mib_x4_rss_mib"] = {"baseline": mib(baseline), "after_each": [mib(p) for p in peaks]}
    # before: each kept its ~96 MiB (the bytes and the decode error's str) until a GC, +380 MiB after four
    assert after < baseline + 120 * 2**20, figures["invalid_json_48mib_x4_rss_mib"]


def _hwm_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


@pytest.mark.parametrize("route", ["grad", "oip"])
def test_a_large_json_body_peaks_under_four_times_its_size(server_factory, figures, route):
    """Issue 12.4's goal: peak RSS for a JSON body at most 4x its size. A 64 MiB body of 6.7
    million float32 numbers (the server alone, not its worker). Before the bulk decoder
    (service/http/bulk.py), orjson's Python float per number made it 7.6x
    (benchmarks/json_rss.py, 200 MiB). The same numbers as an OIP infer body's input (7.7x
    before OIP's parse used the bulk decoder)."""
    server = server_factory(workers=1, max_body_bytes=128 * 2**20, max_tensor_elements=2**24, timeout_ms=300_000)
    number = b"0.1234567,"
    n = 64 * 2**20 // len(number)
    network = {"format": "gradnet/1", "inputs": [{"name": "x"}], "nodes": [{"name": "s", "op": "ReduceSum",
                                                                         "inputs": ["x"]}], "outputs": ["s"]}
    data = number * (n - 1) + b"0.1234567]"
    with server.client(timeout=300) as c:
        assert c.post("/grad", json=tutorial_request()).status_code == 200
        if route == "grad":
            path = "/grad"
            body = b'{"network": %s, "inputs": [{"dtype": "float32", "shape": [%d], "data": [' % (
                orjson.dumps(network), n) + data + b"}]}"
        else:
            model = c.post("/networks", json=network).json()["network_id"].removeprefix("sha256:")
            path = f"/v2/models/{model}/infer"
            body = b'{"inputs": [{"name": "x", "datatype": "FP32", "shape": [%d], "data": [' % n + data + b"}]}"
        pid = server.serving_pid()  # the process that reads the body (not the supervisor)
        before = _hwm_bytes(pid)
        r = c.post(path, content=body, headers={"Content-Type": "application/json"})
        assert r.status_code == 200, r.text[:300]
        answer = r.json()
        assert (answer["gradients"] if route == "grad" else answer["outputs"][0])["shape"] == [n]
        peak = _hwm_bytes(pid)
    ratio = (peak - before) / len(body)
    figures["memory_64_mib_json_body" if route == "grad" else "memory_64_mib_oip_json_body"] = {
        "body_mib": round(mib(len(body)), 1), "peak_over_body": round(ratio, 2),
        "hwm_before_mib": round(mib(before)), "hwm_after_mib": round(mib(peak))}
    assert ratio <= 4, f"peak RSS grew by {ratio:.1f}x the body"
