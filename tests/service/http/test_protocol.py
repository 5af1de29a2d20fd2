"""service/http/protocol.py's request cycle: a response's head leaves in one write with its first
body part (uvicorn writes them apart), a large first part and a body-less answer still go out
whole and in order, and closing writes what is held. Driven with a recording transport."""

from __future__ import annotations

import asyncio
import functools
import logging

import pytest
from uvicorn.protocols.http import httptools_impl
from uvicorn.protocols.http.flow_control import FlowControl

from service.http import protocol


class RecordingTransport:
    """The asyncio transport calls the cycle makes, recorded."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        assert not self.closed, "a write after close"
        self.writes.append(bytes(data))

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def get_extra_info(self, name: str, default=None):
        return default


def in_loop(test):
    """Run an ``async def`` test in a fresh event loop (the suite has no asyncio plugin)."""
    return functools.wraps(test)(lambda *args, **kwargs: asyncio.run(test(*args, **kwargs)))


def _cycle(transport: RecordingTransport, method: str = "POST") -> protocol._Cycle:
    scope = {"type": "http", "method": method, "path": "/grad", "headers": [], "http_version": "1.1"}
    log = logging.getLogger("test")
    return protocol._Cycle(scope, transport, FlowControl(transport), log, log, False, [], asyncio.Event(),
                           False, True, lambda: None)


def _start(status: int = 200, length: int | None = None) -> dict:
    headers = [(b"content-type", b"application/json")]
    if length is not None:
        headers.append((b"content-length", str(length).encode()))
    return {"type": "http.response.start", "status": status, "headers": headers}


def test_uvicorn_builds_our_cycle():
    assert httptools_impl.RequestResponseCycle is protocol._Cycle


@in_loop
async def test_a_small_answer_is_one_write():
    t = RecordingTransport()
    cycle = _cycle(t)
    await cycle.send(_start(length=7))
    assert t.writes == []  # held for the body
    await cycle.send({"type": "http.response.body", "body": b'{"a":1}'})
    assert len(t.writes) == 1
    assert t.writes[0].startswith(b"HTTP/1.1 200 OK\r\n") and t.writes[0].endswith(b'\r\n\r\n{"a":1}')
    assert cycle.transport is t and cycle.response_complete


@in_loop
async def test_a_large_first_part_is_written_after_the_head_and_later_parts_pass():
    t = RecordingTransport()
    cycle = _cycle(t)
    big = b"x" * (protocol.JOIN_BYTES + 1)
    await cycle.send(_start(length=len(big) + 3))
    await cycle.send({"type": "http.response.body", "body": big, "more_body": True})
    await cycle.send({"type": "http.response.body", "body": b"end", "more_body": False})
    assert len(t.writes) == 3 and t.writes[0].startswith(b"HTTP/1.1 200") and t.writes[1:] == [big, b"end"]


@in_loop
async def test_a_streamed_answer_keeps_its_order():
    t = RecordingTransport()
    cycle = _cycle(t)
    await cycle.send(_start())  # no length: chunked
    for part in (b"HTTP/ looks like a head", b"b"):
        await cycle.send({"type": "http.response.body", "body": part, "more_body": True})
    await cycle.send({"type": "http.response.body", "body": b"", "more_body": False})
    out = b"".join(t.writes)
    assert out.index(b"transfer-encoding: chunked") < out.index(b"HTTP/ looks like a head") < out.index(b"\r\nb\r\n")
    assert out.endswith(b"0\r\n\r\n") and len(t.writes) == 3  # head with the first part, then each part


@pytest.mark.parametrize("method, status", [("HEAD", 200), ("POST", 204)])
@in_loop
async def test_an_answer_without_a_body_still_sends_its_head(method, status):
    t = RecordingTransport()
    cycle = _cycle(t, method)
    await cycle.send(_start(status, length=0 if status != 204 else None))
    await cycle.send({"type": "http.response.body", "body": b""})
    assert len(t.writes) == 1 and t.writes[0].startswith(b"HTTP/1.1 %d" % status)


@in_loop
async def test_closing_after_the_start_writes_the_held_head_first():
    """An app that fails after its response's start: uvicorn closes the cycle's transport."""
    t = RecordingTransport()
    cycle = _cycle(t)
    await cycle.send(_start(length=5))
    cycle.transport.close()
    assert t.closed and len(t.writes) == 1 and t.writes[0].startswith(b"HTTP/1.1 200")
