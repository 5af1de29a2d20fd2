"""The HTTP floor of the MLP benchmark: a bare ASGI app that reads a request body and answers
canned bytes, with nothing else.

Served like gradserve (uvicorn, uvloop, httptools) and driven with the MLP's request bodies, its
p50 is what moving those bytes over HTTP costs on the machine, before any engine work. With
``GRADSERVE_FLOOR_DIR`` set (benchmarks/bench_service.py does), ``POST /<encoding>`` answers the
file ``<encoding>`` of that directory: gradserve's own answer to the MLP request in that encoding
(binary, b64, json), byte for byte. Without it, every path answers 2.7 MB of zeros (the size of
the MLP's 669,706 float32 gradients and a JSON header):

    .venv/bin/python -m uvicorn benchmarks.transport_floor_app:app --port 8100 --no-access-log
    wrk -t1 -c1 -d5s --latency -s <the MLP binary POST script> http://127.0.0.1:8100/
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

DEFAULT = bytes(669_706 * 4 + 300)  # the gradients plus a JSON header's worth
_DIR = os.environ.get("GRADSERVE_FLOOR_DIR")
ANSWERS: dict[str, tuple[bytes, bytes]] = {}  # path -> (content type, body)
if _DIR:
    for path in Path(_DIR).iterdir():
        kind = b"application/octet-stream" if path.name == "binary" else b"application/json"
        ANSWERS["/" + path.name] = (kind, path.read_bytes())


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    more = True
    while more:
        message = await receive()
        more = message.get("more_body", False)
    kind, body = ANSWERS.get(scope["path"], (b"application/octet-stream", DEFAULT))
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", kind), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
