"""Request bodies in: reading them (with the size limit) and parsing them.

A request body is JSON (parsed by orjson) or the Open Inference Protocol binary tensor
extension: the JSON object, then the raw bytes of every tensor that says
``"binary_data_size": N`` in it, in the order those tensors appear in the JSON text; the header
``Inference-Header-Content-Length`` gives the JSON part's length. Tensors are decoded by the
engine's one decoder, :func:`engine.tensors.decode_tensor` (with ``binary=`` the tensor's slice
of the body, never a copy). Responses are :mod:`service.http.encode`'s.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import math
import time
import zlib
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import numpy as np
import orjson
from starlette.requests import Request
from starlette.types import Message, Receive

from engine.tensors import decode_tensor

from ..errors import (
    BadRequestError,
    MemoryBudgetError,
    PayloadTooLargeError,
    RequestTimeoutError,
    UnsupportedEncodingError,
)
from .bulk import comma_windows
from .bulk import loads as bulk_loads

BINARY_HEADER = "inference-header-content-length"


# -- reading ------------------------------------------------------------------------------------


def _check_declared(declared: str | None, limit: int) -> None:
    """Refuse a body whose Content-Length is over ``limit`` before reading any of it."""
    if declared is not None:
        try:
            size = int(declared)
        except ValueError:
            raise BadRequestError(f"Content-Length {declared!r} is not a number", "body") from None
        if size > limit:
            raise _too_large(size, limit)


async def read_body(request: Request, limit: int, timeout_s: float | None = None,
                    min_rate: float | None = None) -> bytes:
    """:func:`receive_body` for a Starlette request, decoded (:func:`decode_content`)."""
    body = await receive_body(request.receive, request.headers.get("content-length"), limit,
                              timeout_s=timeout_s, min_rate=min_rate)
    return decode_content(body, request.headers.get("content-encoding"), limit)


#: Content-Encoding -> zlib's wbits (31: a gzip member, 15: a zlib stream)
_ENCODINGS = {"gzip": 31, "x-gzip": 31, "deflate": 15}


def decode_content(body: bytes, encoding: str | None, limit: int) -> bytes:
    """The body as sent, decoded from its ``Content-Encoding`` (gzip or deflate), refused (413) as
    soon as the decoded bytes pass ``limit``: a small bomb never expands in memory. Another
    encoding is :class:`UnsupportedEncodingError` (415); bytes that are not what the header says,
    400."""
    if encoding is None:
        return body
    name = encoding.strip().lower()
    if name in ("", "identity"):
        return body
    wbits = _ENCODINGS.get(name)
    if wbits is None:
        raise UnsupportedEncodingError(
            f"Content-Encoding {encoding!r} is not supported: send the body as is, or gzip or deflate",
            "headers.content-encoding")
    inflater = zlib.decompressobj(wbits)
    try:
        out = inflater.decompress(body, limit + 1)
        if len(out) > limit:
            raise PayloadTooLargeError(
                f"the request body decompresses to more than {limit} bytes, over the limit (--max-body-bytes)",
                "body")
        if not inflater.eof or inflater.unused_data:
            raise BadRequestError(f"the body is not one complete {name} stream", "body")
    except zlib.error as exc:
        raise BadRequestError(f"the body is not valid {name} (Content-Encoding): {exc}", "body") from None
    return out


async def receive_body(receive: Receive, declared: str | None, limit: int, *, timeout_s: float | None = None,
                       min_rate: float | None = None) -> bytes:
    """The whole body, straight from ASGI ``receive`` (``declared``: the Content-Length header),
    refused as soon as it is known to be over ``limit`` bytes.

    ``Content-Length`` is checked before anything is read; a chunked (or lying) body is counted
    as it arrives and refused at the first chunk past the limit, so nothing over the limit is
    ever buffered.

    With ``timeout_s``, the body must have arrived within ``timeout_s + received / min_rate``
    seconds of the first read (:class:`RequestTimeoutError`, 408, otherwise): any body gets
    ``timeout_s``, a large one as long as it keeps up ``min_rate`` bytes per second on average.
    The deadline grows only with bytes that arrived, never with what Content-Length claims, so a
    client that trickles (or stalls) is cut off after about ``timeout_s`` whatever it declared.
    """
    _check_declared(declared, limit)
    chunks: list[bytes] = []
    received = 0
    if timeout_s is None:
        message = await receive()  # no deadline (unit tests, embedded use)
    else:
        rate = float(min_rate) if min_rate else math.inf
        start = time.monotonic()
        scope = asyncio.timeout_at(None)
        try:
            async with scope:
                while True:
                    scope.reschedule(start + timeout_s + received / rate)
                    message = await receive()
                    received = _take(message, chunks, received, limit)
                    if _last(message):
                        break
        except TimeoutError:
            raise RequestTimeoutError(
                f"the request body did not arrive in time: {received} bytes in {time.monotonic() - start:.1f} s "
                f"(a body may take --body-timeout-s {timeout_s:g} s plus one second per --min-body-rate "
                f"{min_rate} bytes)", "body") from None
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)
    while True:
        received = _take(message, chunks, received, limit)
        if _last(message):
            break
        message = await receive()
    if len(chunks) == 1:
        return chunks[0]
    return b"".join(chunks)


class BodyBudget:
    """The bytes of the request bodies in flight (``--max-inflight-bytes``): a body that would
    pass the budget is refused (503, :class:`MemoryBudgetError`) before it is read, when its
    Content-Length says how large it is, or as soon as it is read otherwise. A request alone
    always fits (the budget cannot make a body under ``--max-body-bytes`` impossible)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0

    def reserve(self, size: int) -> int:
        """Take ``size`` bytes of the budget (returned, for :meth:`release`) or raise."""
        if self.used and self.used + size > self.limit:
            raise MemoryBudgetError(
                f"the request bodies in flight hold {self.used} bytes; this one's {size} would pass the "
                f"budget of {self.limit} bytes (--max-inflight-bytes): retry later", "body", retry_after=1.0)
        self.used += size
        return size

    def reserve_declared(self, declared: str | None) -> int:
        if declared is None:
            return 0
        try:
            size = int(declared)
        except ValueError:
            return 0  # receive_body says what is wrong with it
        return self.reserve(max(0, size))

    def release(self, size: int) -> None:
        self.used -= size


def _take(message: Message, chunks: list[bytes], received: int, limit: int) -> int:
    """Add an ASGI ``receive`` message's body bytes to ``chunks``; returns the bytes received."""
    kind = message["type"]
    if kind == "http.request":
        chunk = message.get("body", b"")
        if chunk:
            received += len(chunk)
            if received > limit:
                raise _too_large(received, limit, at_least=True)
            chunks.append(chunk)
    elif kind == "http.disconnect":
        raise BadRequestError(f"the client disconnected after sending {received} bytes of the body", "body")
    return received


def _last(message: Message) -> bool:
    return message["type"] == "http.request" and not message.get("more_body", False)


def _too_large(size: int, limit: int, at_least: bool = False) -> PayloadTooLargeError:
    what = f"more than {limit}" if at_least else str(size)
    return PayloadTooLargeError(
        f"the request body is {what} bytes, over the limit of {limit} bytes (--max-body-bytes); "
        "send large tensors to a server with a higher limit, or split the request",
        "body",
    )


# -- parsing ------------------------------------------------------------------------------------


class Body:
    """A parsed request body: the JSON ``doc`` and, for the binary framing, each binary tensor's
    bytes (keyed by the identity of its JSON object)."""

    __slots__ = ("binary", "doc", "max_elements")

    def __init__(self, doc: dict[str, Any], binary: dict[int, memoryview] | None = None,
                 max_elements: int | None = None) -> None:
        self.doc = doc
        self.binary = binary or {}
        self.max_elements = max_elements

    def tensor(self, obj: Any, path: str) -> np.ndarray:
        """Decode the wire tensor ``obj`` (found at ``path``), with its binary bytes if any."""
        raw = self.binary.get(id(obj)) if self.binary else None
        if raw is None and type(obj) is dict and "binary_data_size" in obj:
            raise BadRequestError(
                "this tensor says 'binary_data_size' but the request is not in the binary framing: "
                "send the header Inference-Header-Content-Length with the length of the JSON part",
                f"{path}.binary_data_size",
            )
        return decode_tensor(obj, path, max_elements=self.max_elements, binary=raw)

    def fingerprint(self, doc: Any) -> bytes:
        """A digest of ``doc`` as it was sent: its JSON text and, in order, the bytes of the binary
        tensors it holds (hashed where they lie: no b64 copy of a network's weights per request).
        The same network sent in two framings has two fingerprints."""
        digest = hashlib.sha256(orjson.dumps(doc))
        if self.binary:
            for _, tensor in _binary_tensors(doc, ""):
                digest.update(self.binary[id(tensor)])
        return digest.digest()

    def inline_binary(self, doc: Any, path: str = "") -> Any:
        """``doc`` (a network, at ``path``) with its binary tensors rewritten as ``b64`` tensors.

        ``engine.parse_network`` reads tensors itself and knows nothing of the framing; a network
        is parsed once (then cached or registered), so the copy is paid once. Without the
        framing, a tensor that says ``binary_data_size`` is refused (400) here."""
        if not self.binary:
            for where, _ in _binary_tensors(doc, path):
                raise BadRequestError(
                    "this tensor says 'binary_data_size' but the request is not in the binary framing: "
                    "send the header Inference-Header-Content-Length with the length of the JSON part",
                    f"{where}.binary_data_size",
                )
            return doc

        def rewrite(node: Any) -> Any:
            if isinstance(node, dict):
                raw = self.binary.get(id(node))
                if raw is not None:
                    out = {k: v for k, v in node.items() if k != "binary_data_size"}
                    out["b64"] = base64.b64encode(raw).decode()
                    return out
                return {k: rewrite(v) for k, v in node.items()}
            if isinstance(node, list):
                return [rewrite(v) for v in node]
            return node

        return rewrite(doc)


def parse_body(body: bytes, headers: Mapping[str, str], max_elements: int | None = None,
               binary_tensors: Callable[[dict[str, Any]], Iterator[tuple[str, Any, Any]]] | None = None, *,
               bulk: bool = False) -> Body:
    """Parse a request body (:class:`BadRequestError` if it is not JSON, or not the binary
    framing it claims); its tensors are decoded later, each checked against ``max_elements``.

    ``binary_tensors(doc)`` yields ``(path, tensor, binary_data_size)`` for the tensors that carry
    binary bytes, in order: by default the tensors that say ``"binary_data_size"`` themselves; an
    OIP infer request's inputs say it in their ``parameters`` (:mod:`service.http.oip`)."""
    header = headers.get(BINARY_HEADER)
    if header is None:
        # bulk: a large JSON body's call tensors keep their numbers and base64 in bulk
        # (service/http/bulk.py; the transform routes, whose tensors only the engine decodes)
        return Body(_loads(body, "the request body", bulk), None, max_elements)
    try:
        json_size = int(header)
    except ValueError:
        json_size = -1
    if not 0 <= json_size <= len(body):
        raise BadRequestError(
            f"Inference-Header-Content-Length is {header!r}, but it must be the length of the JSON part "
            f"of the body (0 to {len(body)} bytes)",
            "body",
        )
    view = memoryview(body)
    doc = _loads(view[:json_size], "the JSON part of the binary request")
    binary: dict[int, memoryview] = {}
    offset = json_size
    for path, tensor, size in (binary_tensors or _sized_tensors)(doc):
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise BadRequestError(f"'binary_data_size' must be a non-negative integer, got {size!r}",
                                  f"{path}.binary_data_size")
        if offset + size > len(body):
            raise BadRequestError(
                f"the binary tensors need more bytes than the body has: {path} ends at byte {offset + size} "
                f"of the binary part's {len(body) - json_size}",
                f"{path}.binary_data_size",
            )
        binary[id(tensor)] = view[offset:offset + size]
        offset += size
    if offset != len(body):
        raise BadRequestError(
            f"the body has {len(body) - offset} bytes after the last binary tensor: the JSON part's "
            "'binary_data_size' values must add up to the length of the binary part",
            "body",
        )
    return Body(doc, binary, max_elements)


def _loads(data: bytes | memoryview, what: str, bulk: bool = False) -> dict[str, Any]:
    why = None
    try:
        doc = bulk_loads(data) if bulk else orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        # Raised outside this block: the decode error holds the whole document (its ``doc``, a str
        # as large as the body), and as the new error's __context__ it would live as long as the
        # answer's traceback (until the garbage collector: +381 MB per 200 MB body, issue 12).
        why = f"{what} is not valid JSON: {exc}"
        del exc
    if why is not None:
        raise BadRequestError(why, "body")
    if not isinstance(doc, dict):
        raise BadRequestError(f"{what} must be a JSON object, got a JSON {type(doc).__name__}", "body")
    return doc


def _sized_tensors(doc: Any) -> Iterator[tuple[str, dict[str, Any], Any]]:
    for path, tensor in _binary_tensors(doc, ""):
        yield path, tensor, tensor["binary_data_size"]


def _binary_tensors(node: Any, path: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """The tensors that carry ``binary_data_size``, in the order of the JSON text (orjson keeps
    key order). Tensor objects are not descended into, so ``data`` lists are never walked."""
    if isinstance(node, dict):
        if "binary_data_size" in node:
            yield path or "body", node
            return
        if "dtype" in node or "datatype" in node:
            return
        for key, value in node.items():
            yield from _binary_tensors(value, f"{path}.{key}" if path else key)
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _binary_tensors(value, f"{path}[{i}]")


def mostly_strings(body: bytes, json_size: int) -> bool:
    """Whether the JSON part of a large body (its first ``json_size`` bytes) looks like a few long
    strings (base64 tensors) rather than numbers: no comma in any of four samples spread over it
    (:func:`service.http.bulk.comma_windows`). It decides whether parsing is worth the thread pool."""
    return json_size >= 4 * 64 and not any(comma_windows(body, json_size, windows=4))
