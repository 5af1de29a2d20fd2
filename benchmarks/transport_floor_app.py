"""The HTTP floor of the MLP benchmark: a bare ASGI app that reads a request body and answers
2.7 MB of bytes (the size of the MLP's 669,706 float32 gradients), with nothing else.

Served like gradserve (uvicorn, uvloop, httptools) and driven with the MLP's binary request body,
its p50 is what moving those bytes over HTTP costs on the machine, before any engine work:

    .venv/bin/python -m uvicorn benchmarks.transport_floor_app:app --port 8100 --no-access-log
    wrk -t1 -c1 -d5s --latency -s <the MLP binary POST script> http://127.0.0.1:8100/
"""

from __future__ import annotations

from typing import Any

BODY = bytes(669_706 * 4 + 300)  # the gradients plus a JSON header's worth


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    more = True
    while more:
        message = await receive()
        more = message.get("more_body", False)
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/octet-stream"), (b"content-length", str(len(BODY)).encode())]})
    await send({"type": "http.response.body", "body": BODY})
