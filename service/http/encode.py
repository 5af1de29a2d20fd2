"""Response bodies out: the tensors of a result as JSON (``output_encoding`` ``json`` or
``b64``) or the Open Inference Protocol binary framing (``binary``), and the responses that
carry them. Floats that JSON cannot carry travel as ``"NaN"``, ``"Infinity"``, ``"-Infinity"``.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import numpy as np
import orjson
import pybase64
from starlette.responses import Response

from engine.dtypes import dtype_name
from engine.tensors import b64_bytes, encode_tensor

JSON_TYPE = "application/json"
BINARY_TYPE = "application/octet-stream"
ENCODINGS = ("json", "b64", "binary")
_DUMPS_OPTIONS = orjson.OPT_SERIALIZE_NUMPY


def dumps(obj: Any) -> bytes:
    return orjson.dumps(obj, option=_DUMPS_OPTIONS)


def nested_map(value: Any, fn: Callable[[Any], Any]) -> Any:
    """Apply ``fn`` to every tensor of a transform's result (a tensor, a list, a list of lists);
    an id beside a tensor (``return_ids``: an input position or a parameter name) stays as it is."""
    if isinstance(value, (list, tuple)):
        return [nested_map(v, fn) for v in value]
    if isinstance(value, (int, str)):
        return value
    return fn(value)


def json_response(obj: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> Response:
    return Response(dumps(obj), status_code=status, media_type=JSON_TYPE, headers=headers)


class B64Part:
    """The base64 text of one large array, written as it is sent: a few dozen KiB at a time from
    the array where it lies (no text of the whole array is ever made). On this VM each page of a
    fresh multi-MiB buffer costs a ~2.5 µs page fault (the mmap threshold is pinned, see
    service/cli.py), so the MLP's 3.6 MB b64 answer cost 6-8 ms as one text (b64, then str, then
    orjson's copy) against ~0.4 ms of actual encoding; chunks below the threshold come from the
    warm heap."""

    __slots__ = ("raw", "nbytes")

    #: raw bytes per chunk (a multiple of 3, so the chunks' texts join into the whole text)
    CHUNK = 3 * 16 * 1024

    def __init__(self, array: np.ndarray) -> None:
        arr = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<"))
        self.raw = memoryview(arr.reshape(-1).view(np.uint8))
        self.nbytes = 4 * ((self.raw.nbytes + 2) // 3)

    def chunks(self) -> Iterator[bytes]:
        raw, step = self.raw, self.CHUNK
        for i in range(0, raw.nbytes, step):
            yield pybase64.b64encode(raw[i:i + step])


class Streamed(list):  # type: ignore[type-arg]
    """A field's JSON text in parts: bytes and :class:`B64Part` objects (a ``b64`` answer with a
    large tensor), in order; sent by :class:`PartsResponse` without a join."""

    @property
    def nbytes(self) -> int:
        return sum(p.nbytes if isinstance(p, B64Part) else len(p) for p in self)


#: tensors whose raw bytes pass this are streamed as :class:`B64Part` objects in a ``b64`` answer
B64_STREAM_BYTES = 192 * 1024
# Stands in the JSON text for a streamed tensor's b64 string until the text is split around it;
# random per process, so no id or name in a result can be mistaken for it.
_MARK = "gs-b64-" + secrets.token_hex(12) + "-"


def _b64_fields(value: Any) -> bytes | Streamed:
    """A field's ``b64`` JSON text; a :class:`Streamed` one when it holds large tensors."""
    big: list[B64Part] = []

    def one(array: Any) -> dict[str, Any]:
        arr = np.asarray(array)
        head: dict[str, Any] = {"dtype": dtype_name(arr.dtype), "shape": list(arr.shape)}
        if arr.nbytes > B64_STREAM_BYTES:
            head["b64"] = f"{_MARK}{len(big)}"
            big.append(B64Part(arr))
        else:
            head["b64"] = orjson.Fragment(b'"' + b64_bytes(arr) + b'"')
        return head

    text = dumps(nested_map(value, one))
    if not big:
        return text
    out = Streamed()
    rest = text
    for i, part in enumerate(big):
        before, rest = rest.split(f'"{_MARK}{i}"'.encode(), 1)
        out += [before + b'"', part, b'"']
    out.append(rest)
    return out


def encoded_size(value: bytes | Streamed) -> int:
    """The length of one field's text from :func:`encode_fields`."""
    return value.nbytes if isinstance(value, Streamed) else len(value)


def encode_fields(fields: dict[str, Any], encoding: str) -> tuple[dict[str, Any], list[memoryview]]:
    """Serialize each field's tensors (nested lists of arrays) to JSON bytes (embed them in the
    response object with ``orjson.Fragment``); a ``b64`` field with large tensors is a
    :class:`Streamed` list of parts instead (its text is written as it is sent).

    For ``binary``, also the raw bytes of the tensors, in the order their headers appear in those
    fields (the order of ``fields``): views of the arrays themselves, never copies."""
    chunks: list[memoryview] = []
    if encoding == "b64":
        return {name: _b64_fields(value) for name, value in fields.items()}, chunks
    if encoding == "binary":

        def one(array: Any) -> dict[str, Any]:
            arr = np.asarray(array)
            shape = list(arr.shape)  # before ascontiguousarray, which makes a scalar 1-d
            arr = np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("<"))  # a no-op when it already is
            raw = memoryview(arr.reshape(-1).view(np.uint8))
            chunks.append(raw)
            return {"dtype": dtype_name(arr.dtype), "shape": shape, "binary_data_size": raw.nbytes}

    else:

        def one(array: Any) -> dict[str, Any]:
            return encode_tensor(array, encoding)

    out = {}
    for name, value in fields.items():
        fast = _json_fast(value) if encoding == "json" else None
        out[name] = fast if fast is not None else dumps(nested_map(value, one))
    return out, chunks


# The dtypes whose "data" engine.encode_tensor leaves as the array itself when it is finite, and
# orjson writes natively: the same bytes, without the per-tensor checks.
_NATIVE = {np.dtype(t): dtype_name(np.dtype(t)) for t in (
    np.float32, np.float64, np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32, np.uint64, np.bool_,
)}


class _NotNative(Exception):
    pass


def _json_fast(value: Any) -> bytes | None:
    """``json`` encoding of a field's tensors in one orjson call: byte for byte what the general
    path writes when every tensor has a native dtype and every float is finite (orjson writes a
    NaN or an infinity as ``null``, which no number contains: then None, and the general path
    spells them out)."""
    floats: list[np.ndarray] = []

    def one(array: Any) -> dict[str, Any]:
        arr = np.asarray(array)
        name = _NATIVE.get(arr.dtype)
        if name is None:
            raise _NotNative
        if arr.dtype.kind == "f":
            floats.append(arr)
        return {"dtype": name, "shape": list(arr.shape), "data": np.ascontiguousarray(arr).reshape(-1)}

    try:
        out = dumps(nested_map(value, one))
    except (_NotNative, orjson.JSONEncodeError):
        return None
    if floats:
        # A small text is searched (faster than a NumPy call per tensor); a large one is not
        # (searching megabytes is slower than checking the floats).
        finite = b"null" not in out if len(out) <= 256 * 1024 else all(np.isfinite(a).all() for a in floats)
        if not finite:
            return None
    return out


#: binary tensors up to this size in all are joined into the body; beyond it they are streamed
STREAM_BYTES = 256 * 1024


def response(json_part: bytes, chunks: list[Any], encoding: str) -> Response:
    """The HTTP response: JSON, or JSON followed by the binary tensors. Large binary tensors are
    sent as they are (no join: the socket copies them once)."""
    if encoding == "binary" and sum(memoryview(c).nbytes for c in chunks) > STREAM_BYTES:
        return PartsResponse([json_part, *chunks], BINARY_TYPE,
                             {"Inference-Header-Content-Length": str(len(json_part))})
    if encoding != "binary":
        return Response(json_part, media_type=JSON_TYPE)
    return Response(b"".join([json_part, *chunks]), media_type=BINARY_TYPE,
                    headers={"Inference-Header-Content-Length": str(len(json_part))})


class PartsResponse(Response):
    """A response whose body is sent as it lies, in parts (bytes, views of result arrays or of
    the worker's shared memory, which stay alive until the server has written them): no join,
    the socket copies each part once. Adjacent small parts are joined into one message."""

    def __init__(self, parts: list[Any], media_type: str, headers: dict[str, str] | None = None) -> None:
        self.status_code = 200
        self.background = None
        self.media_type = media_type
        merged: list[Any] = []
        small: list[Any] = []
        size = 0
        for part in parts:
            if isinstance(part, B64Part):  # written as it is sent
                size += part.nbytes
                if small:
                    merged.append(b"".join(small))
                    small = []
                merged.append(part)
                continue
            view = memoryview(part).cast("B")
            size += view.nbytes
            if view.nbytes < 64 * 1024:
                small.append(view)
                continue
            if small:
                merged.append(b"".join(small))
                small = []
            merged.append(view)
        if small:
            merged.append(b"".join(small))
        self.parts = merged
        self.body = merged[0] if merged and not isinstance(merged[0], B64Part) else b""
        self.raw_headers = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in (headers or {}).items()]
        self.raw_headers += [(b"content-length", str(size).encode("latin-1")),
                             (b"content-type", media_type.encode("latin-1"))]

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        parts, self.parts = self.parts, []  # the arrays' memory goes back as soon as it is sent
        last = len(parts) - 1
        if last < 0:
            await send({"type": "http.response.body", "body": b""})
        for i, part in enumerate(parts):
            if isinstance(part, B64Part):
                for chunk in part.chunks():
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
                if i == last:
                    await send({"type": "http.response.body", "body": b""})
                continue
            await send({"type": "http.response.body", "body": part, "more_body": i < last})


def element_count(fields: dict[str, Any]) -> int:
    """How many elements the tensors of a result's fields hold in all."""
    total = 0

    def count(array: Any) -> None:
        nonlocal total
        total += np.asarray(array).size

    for value in fields.values():
        nested_map(value, count)
    return total
