"""Content-Encoding and JSON errors everywhere (issue 12, finding 9).

Before the fix: a gzip body was read as JSON text ("not valid JSON: ... utf-8"), and the drain
timeout cut a request short with uvicorn's plain-text ``500 Internal Server Error``."""

from __future__ import annotations

import gzip
import json
import signal
import time
import zlib

import httpx
import pytest
from hardening_helpers import Background, assert_healthy, poll, slow_request, tutorial_request

from tests.support.api_contract import decode_response, error_of


def _post(c: httpx.Client, body: bytes, encoding: str, path: str = "/grad") -> httpx.Response:
    return c.post(path, content=body, headers={"Content-Type": "application/json", "Content-Encoding": encoding})


@pytest.mark.parametrize("encoding, pack", [("gzip", gzip.compress), ("deflate", zlib.compress)])
def test_compressed_bodies_are_decoded(hard, hard_server, encoding, pack):
    r = _post(hard, pack(json.dumps(tutorial_request()).encode()), encoding)
    assert r.status_code == 200, r.text
    assert decode_response(r)["gradients"].shape == (2, 3)
    net = tutorial_request()["network"]
    net["name"] = f"gzipped-{encoding}"
    r = _post(hard, pack(json.dumps(net).encode()), encoding, "/networks")
    assert r.status_code in (200, 201), r.text


def test_a_gzip_bomb_is_413_without_expanding(hard, hard_server):
    limit = hard_server.settings["max_body_bytes"]
    bomb = gzip.compress(b" " * (limit + 2**20), compresslevel=9)  # ~65 KiB that expand past the limit
    assert len(bomb) < 2**20
    error_of(_post(hard, bomb, "gzip"), 413, "too_large")
    assert_healthy(hard_server, "hardening-key")


def test_an_unknown_encoding_is_415_and_bad_gzip_400(hard, hard_server):
    body = json.dumps(tutorial_request()).encode()
    err = error_of(_post(hard, body, "br"), 415, "unsupported_encoding")
    assert err["path"] == "headers.content-encoding"
    err = error_of(_post(hard, body, "gzip"), 400, "bad_request")
    assert "gzip" in err["message"] and "utf-8" not in err["message"].lower()
    error_of(_post(hard, gzip.compress(body)[:-9], "gzip"), 400, "bad_request")


def test_the_drain_timeout_cuts_requests_with_a_json_answer(server_factory):
    server = server_factory(workers=1, drain_timeout_s=0.5)
    with server.client(timeout=120) as c:
        held = Background(lambda: httpx.post(server.url + "/grad", json=slow_request(depth=200, name="cut"), timeout=120))
        poll(lambda: c.get("/metrics").text, lambda t: 'gradserve_worker_queue_depth{worker="0"} 1' in t,
             timeout=30, what="the slow request to reach the worker")
    time.sleep(0.2)
    server.process.send_signal(signal.SIGTERM)
    r = held.result(90)
    assert r.status_code >= 500, r.text[:300]
    assert r.headers["content-type"].startswith("application/json"), (r.status_code, r.headers, r.text)
    assert r.json()["error"]["code"], r.text
    server.process.wait(60)
