"""HTTP/1.1 on a raw socket, for what a client library would not send: a body over the limit (to
see the answer come back while the client still sends), a Content-Length that lies."""

from __future__ import annotations

import json
import select
import socket
from typing import Any
from urllib.parse import urlsplit


def grad_request_head(key: str) -> str:
    """The start of a ``POST /grad`` head with ``key``, JSON content; the caller adds the framing
    headers and the blank line. ``{host}`` is filled in by :func:`raw_request`."""
    return ("POST /grad HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer " + key + "\r\n"
            "Content-Type: application/json\r\n")


def raw_request(url: str, head: str, body_chunks: list[bytes], *, read_timeout: float = 30.0) -> tuple[bytes, int, bool]:
    """Send an HTTP/1.1 request head and then ``body_chunks`` on a raw socket, stopping as soon as
    the server answers. Returns (the answer, the body bytes sent, whether every chunk was sent)."""
    parts = urlsplit(url)
    sent = 0
    with socket.create_connection((parts.hostname, parts.port), timeout=read_timeout) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 65536)
        s.sendall(head.replace("{host}", parts.netloc).encode())
        sent_all = True
        for chunk in body_chunks:
            readable, _, _ = select.select([s], [], [], 0)
            if readable:
                sent_all = False
                break
            try:
                s.sendall(chunk)
            except (BrokenPipeError, ConnectionResetError):
                sent_all = False
                break
            sent += len(chunk)
        data = b""
        s.settimeout(read_timeout)
        try:
            while True:
                part = s.recv(65536)
                if not part:
                    break
                data += part
                if _complete(data):
                    break
        except (ConnectionResetError, TimeoutError):
            pass
        return data, sent, sent_all


def _complete(data: bytes) -> bool:
    head, sep, body = data.partition(b"\r\n\r\n")
    if not sep:
        return False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return len(body) >= int(value.strip())
    return False


def response_json(raw: bytes) -> tuple[int, dict[str, str], Any]:
    """Status, headers and JSON body of a raw HTTP/1.1 answer."""
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return status, headers, json.loads(body)
