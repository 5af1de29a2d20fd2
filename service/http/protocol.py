"""The HTTP/1.1 connection: uvicorn's httptools protocol with the limits one slow or careless
client must not get past (docs/reliability.md, "Connection hygiene").

- **Header timeout** (``--header-timeout-s``): a request's line and headers must arrive within it,
  counted from the connection's start (or from the first byte after a keep-alive pause). A
  connection that sent part of a request gets 408 and is closed; one that sent nothing is closed.
- **Idle timeout** (``--idle-timeout-s``): uvicorn's keep-alive timeout, between requests.
- **Header size** (``--max-header-bytes``): the request line and headers together; past it, 431
  and the connection is closed (httptools itself has no limit).
- **Connections** (``--max-connections``): one more is answered 503 and closed at once, so that
  the server keeps file descriptors for its own work (and /health/live keeps answering).

The body's deadline and minimum rate are the app's (:func:`service.http.body.receive_body`): only
the handler knows when it wants a body. Every answer written here is JSON, like the app's.
uvicorn's own last-resort 500 (an exception escaped the app, e.g. a task cancelled at shutdown)
is JSON too, and a response's head leaves in one send with its first body part: :class:`_Cycle`.
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from uvicorn.protocols.http import httptools_impl
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

from ..settings import Settings

_REASONS = {400: b"Bad Request", 408: b"Request Timeout", 431: b"Request Header Fields Too Large",
            500: b"Internal Server Error", 503: b"Service Unavailable"}


def error_bytes(status: int, code: str, message: str, path: str | None = None,
                headers: dict[str, str] | None = None) -> bytes:
    """A whole HTTP/1.1 error answer, ``{"error": {code, message, path}}``, that closes the connection."""
    body = orjson.dumps({"error": {"code": code, "message": message, "path": path}})
    head = [b"HTTP/1.1 %d %s\r\n" % (status, _REASONS.get(status, b"Error")),
            b"content-type: application/json\r\n",
            b"content-length: %d\r\n" % len(body), b"connection: close\r\n"]
    for name, value in (headers or {}).items():
        head.append(f"{name}: {value}\r\n".encode("latin-1"))
    return b"".join(head) + b"\r\n" + body


class _HeadersTooLarge(Exception):
    """Raised in a parser callback to stop parsing (httptools turns it into HttpParserCallbackError,
    which uvicorn answers through ``send_400_response``)."""


#: a response's first body part up to this size leaves in one write with its head (beyond it a
#: join would copy more than the second send costs)
JOIN_BYTES = 64 * 1024


class _HeldHead:
    """The cycle's transport from a response's start to its first body part: uvicorn writes the
    status line and headers at ``http.response.start`` and the body at ``http.response.body``,
    two sends, two TCP segments and two wake-ups of the client for every small answer. Here the
    first write (the head) is held and leaves with the next one (joined when that is small); then
    writes pass. Every other call goes to the transport; closing first writes what is held."""

    __slots__ = ("transport", "_head", "_holding")

    def __init__(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        self._head: bytes | None = None
        self._holding = True

    def write(self, data: bytes) -> None:
        if self._holding:
            self._holding = False
            self._head = data
            return
        head, self._head = self._head, None
        if head is None:
            self.transport.write(data)
        elif len(data) <= JOIN_BYTES:
            self.transport.write(head + data)
        else:
            self.transport.write(head)
            self.transport.write(data)

    def flush(self) -> None:
        self._holding = False
        head, self._head = self._head, None
        if head is not None:
            self.transport.write(head)

    def close(self) -> None:
        self.flush()
        self.transport.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.transport, name)


class _Cycle(RequestResponseCycle):
    """uvicorn's request cycle with the response's head sent together with its first body part
    (:class:`_HeldHead`), and its last-resort 500 in JSON."""

    async def send(self, message: Any) -> None:
        held = self.transport
        if type(held) is _HeldHead:  # the first body part after a held head (or a stray message)
            try:
                await super().send(message)
            finally:
                self.transport = held.transport
                held.flush()
            return
        if message["type"] != "http.response.start" or self.response_started:
            await super().send(message)
            return
        held = _HeldHead(self.transport)
        self.transport = held  # type: ignore[assignment]
        try:
            await super().send(message)
        except BaseException:
            self.transport = held.transport
            held.flush()
            raise

    async def send_500_response(self) -> None:
        body = orjson.dumps({"error": {"code": "internal_error", "message": "internal server error: the request "
                                       "was cut short (the server is shutting down, or a bug; it has been logged)",
                                       "path": None}})
        await self.send({"type": "http.response.start", "status": 500,
                         "headers": [(b"content-type", b"application/json"),
                                     (b"content-length", str(len(body)).encode()), (b"connection", b"close")]})
        await self.send({"type": "http.response.body", "body": body, "more_body": False})


# uvicorn builds each request's cycle from this module global: ours holds the head for the body
# and answers its 500s in JSON.
httptools_impl.RequestResponseCycle = _Cycle  # type: ignore[misc]


def protocol_class(settings: Settings) -> type[asyncio.Protocol]:
    """The protocol class for uvicorn's ``Config(http=...)``, with ``settings``' limits."""
    header_timeout = settings.header_timeout_s
    max_header = settings.max_header_bytes
    max_connections = settings.max_connections

    class GuardedProtocol(HttpToolsProtocol):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._header_timer: asyncio.TimerHandle | None = None
            self._header_bytes = 0
            self._started = False  # bytes of a request arrived since the last answer
            self._refused: int | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            if len(self.connections) >= max_connections:
                self._refused = 503
                transport.write(error_bytes(
                    503, "too_many_connections",
                    f"the server has {len(self.connections)} connections open (--max-connections "
                    f"{max_connections}): retry later", None, {"retry-after": "1"}))
                transport.close()
                self.transport = transport
                return
            super().connection_made(transport)
            self._arm()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            if self._refused == 503:
                self.connections.discard(self)
                return
            super().connection_lost(exc)

        def data_received(self, data: bytes) -> None:
            if self._refused is not None:
                return
            if self._header_timer is None and (self.cycle is None or self.cycle.response_complete):
                self._arm()  # the first byte of a request after a keep-alive pause
            self._started = True
            super().data_received(data)

        def _arm(self) -> None:
            self._disarm()
            self._header_timer = self.loop.call_later(header_timeout, self._headers_late)

        def _disarm(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def _headers_late(self) -> None:
            self._header_timer = None
            if self.transport.is_closing():
                return
            if self._started:
                self.transport.write(error_bytes(
                    408, "request_timeout", f"the request line and headers did not arrive within "
                    f"{header_timeout:g} s (--header-timeout-s)", "headers"))
            self.transport.close()

        def on_message_begin(self) -> None:
            self._header_bytes = 0
            super().on_message_begin()

        def on_url(self, url: bytes) -> None:
            self._count(len(url))
            super().on_url(url)

        def on_header(self, name: bytes, value: bytes) -> None:
            self._count(len(name) + len(value) + 4)
            super().on_header(name, value)

        def _count(self, n: int) -> None:
            self._header_bytes += n
            if self._header_bytes > max_header:
                self._refused = 431
                raise _HeadersTooLarge

        def on_headers_complete(self) -> None:
            self._disarm()
            super().on_headers_complete()

        def on_response_complete(self) -> None:
            self._started = False
            super().on_response_complete()

        def send_400_response(self, msg: str) -> None:
            self._disarm()
            if self._refused == 431:
                answer = error_bytes(431, "headers_too_large", f"the request line and headers are over "
                                     f"{max_header} bytes (--max-header-bytes)", "headers")
            else:
                answer = error_bytes(400, "bad_request", f"{msg} (not HTTP/1.1 as the server can read it)", None)
            self.transport.write(answer)
            self.transport.close()

    return GuardedProtocol
