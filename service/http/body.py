"""The one body codec of the service: request bodies in, response bodies out.

A request body is JSON (parsed by orjson) or the Open Inference Protocol binary tensor
extension: the JSON object, then the raw bytes of every tensor that says
``"binary_data_size": N`` in it, in the order those tensors appear in the JSON text; the header
``Inference-Header-Content-Length`` gives the JSON part's length. Tensors are decoded by
:func:`engine.decode_tensor` (with ``binary=`` the tensor's slice of the body, never a copy).

A response is JSON (``output_encoding`` ``json`` or ``b64``) or the same binary framing
(``binary``). Floats that JSON cannot carry travel as ``"NaN"``, ``"Infinity"``, ``"-Infinity"``.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import numpy as np
import orjson
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.types import Receive

import engine
from engine.dtypes import dtype_name

from .errors import BadRequestError, PayloadTooLargeError

BINARY_HEADER = "inference-header-content-length"
JSON_TYPE = "application/json"
BINARY_TYPE = "application/octet-stream"
ENCODINGS = ("json", "b64", "binary")
_DUMPS_OPTIONS = orjson.OPT_SERIALIZE_NUMPY


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


async def read_body(request: Request, limit: int) -> bytes:
    """The whole body, refused with 413 as soon as it is known to be over ``limit`` bytes.

    ``Content-Length`` is checked before anything is read; a chunked (or lying) body is counted
    as it arrives and refused at the first chunk past the limit, so nothing over the limit is
    ever buffered.
    """
    _check_declared(request.headers.get("content-length"), limit)
    chunks: list[bytes] = []
    received = 0
    try:
        async for chunk in request.stream():
            received += len(chunk)
            if received > limit:
                raise _too_large(received, limit, at_least=True)
            chunks.append(chunk)
    except ClientDisconnect:
        raise BadRequestError(f"the client disconnected after sending {received} bytes of the body",
                              "body") from None
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


async def receive_body(receive: Receive, declared: str | None, limit: int) -> bytes:
    """:func:`read_body` straight from ASGI ``receive`` (``declared``: the Content-Length header)."""
    _check_declared(declared, limit)
    chunks: list[bytes] = []
    received = 0
    while True:
        message = await receive()
        kind = message["type"]
        if kind == "http.request":
            chunk = message.get("body", b"")
            if chunk:
                received += len(chunk)
                if received > limit:
                    raise _too_large(received, limit, at_least=True)
                chunks.append(chunk)
            if not message.get("more_body", False):
                break
        elif kind == "http.disconnect":
            raise BadRequestError(f"the client disconnected after sending {received} bytes of the body",
                                  "body")
    if len(chunks) == 1:
        return chunks[0]
    return b"".join(chunks)


def _too_large(size: int, limit: int, at_least: bool = False) -> PayloadTooLargeError:
    what = f"more than {limit}" if at_least else str(size)
    return PayloadTooLargeError(
        f"the request body is {what} bytes, over the limit of {limit} bytes (--max-body-bytes); "
        "send large tensors to a server with a higher limit, or split the request",
        "body",
    )


class Body:
    """A parsed request body: the JSON ``doc`` and, for the binary framing, each binary tensor's
    bytes (keyed by the identity of its JSON object)."""

    __slots__ = ("binary", "doc")

    def __init__(self, doc: dict[str, Any], binary: dict[int, memoryview] | None = None) -> None:
        self.doc = doc
        self.binary = binary or {}

    def tensor(self, obj: Any, path: str, max_elements: int | None) -> np.ndarray:
        """Decode the wire tensor ``obj`` (found at ``path``), with its binary bytes if any."""
        fast = _small_float_tensor(obj, max_elements)
        if fast is not None:
            return fast
        raw = self.binary.get(id(obj))
        if raw is None and isinstance(obj, Mapping) and "binary_data_size" in obj:
            raise BadRequestError(
                "this tensor says 'binary_data_size' but the request is not in the binary framing: "
                "send the header Inference-Header-Content-Length with the length of the JSON part",
                f"{path}.binary_data_size",
            )
        return engine.decode_tensor(obj, path, max_elements=max_elements, binary=raw)

    def tensors(self, raw: Any, path: str, max_elements: int | None, *, named: bool = True) -> Any:
        """A list of tensors, or (``named``) an object of named tensors."""
        if isinstance(raw, list):
            return [self.tensor(t, f"{path}[{i}]", max_elements) for i, t in enumerate(raw)]
        if named and isinstance(raw, Mapping):
            return {k: self.tensor(t, f"{path}.{k}", max_elements) for k, t in raw.items()}
        kind = "a list of tensors or an object of named tensors" if named else "a list of tensors"
        raise engine.ArgumentError(f"'{path}' must be {kind}", path)

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


_FAST_FLOATS = {"float32": np.dtype(np.float32), "float64": np.dtype(np.float64),
                "FP32": np.dtype(np.float32), "FP64": np.dtype(np.float64)}
_FAST_MAX = 4096


def _small_float_tensor(obj: Any, max_elements: int | None) -> np.ndarray | None:
    """The common small tensor, ``{"dtype": "float32", "shape": [...], "data": [flat finite
    numbers]}``, decoded exactly as :func:`engine.decode_tensor` decodes it, in a few
    microseconds instead of a few dozen; None for anything else (the engine decodes it, and says
    what is wrong)."""
    if type(obj) is not dict or len(obj) != 3:
        return None
    data = obj.get("data")
    shape = obj.get("shape")
    if type(data) is not list or type(shape) is not list or len(data) > _FAST_MAX:
        return None
    name = obj["dtype"] if "dtype" in obj else obj.get("datatype")
    if type(name) is not str:
        return None
    dtype = _FAST_FLOATS.get(name)
    if dtype is None:
        return None
    count = 1
    for d in shape:
        if type(d) is not int or d < 0:
            return None
        count *= d
    if count != len(data) or (max_elements is not None and count > max_elements):
        return None
    large = False
    for v in data:
        if type(v) is not float and type(v) is not int:
            return None
        if not -3.4e38 <= v <= 3.4e38:
            large = True
    try:
        wide = np.array(data, dtype=np.float64)  # orjson parses no NaN or infinity; a huge int raises
    except (OverflowError, ValueError, TypeError):
        return None
    if dtype == np.float64:
        return wide.reshape(shape)
    if not large:
        return wide.astype(dtype).reshape(shape)
    with np.errstate(over="ignore", invalid="ignore"):
        arr = wide.astype(dtype)
    if not np.isfinite(arr).all():
        return None  # over float32's range: an error, and the engine says which value
    return arr.reshape(shape)


def parse_body(body: bytes, headers: Mapping[str, str]) -> Body:
    """Parse a request body (400 if it is not JSON, or not the binary framing it claims)."""
    header = headers.get(BINARY_HEADER)
    if header is None:
        return Body(_loads(body, "the request body"))
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
    for path, tensor in _binary_tensors(doc, ""):
        size = tensor["binary_data_size"]
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
    return Body(doc, binary)


def _loads(data: bytes | memoryview, what: str) -> dict[str, Any]:
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise BadRequestError(f"{what} is not valid JSON: {exc}", "body") from None
    if not isinstance(doc, dict):
        raise BadRequestError(f"{what} must be a JSON object, got a JSON {type(doc).__name__}", "body")
    return doc


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


# -- writing ------------------------------------------------------------------------------------


def dumps(obj: Any) -> bytes:
    return orjson.dumps(obj, option=_DUMPS_OPTIONS)


def nested_map(value: Any, fn: Callable[[Any], Any]) -> Any:
    """Apply ``fn`` to every tensor of a GradOperation result (a tensor, a list, a list of lists)."""
    if isinstance(value, (list, tuple)):
        return [nested_map(v, fn) for v in value]
    return fn(value)


class Encoded:
    """An encoded response: ``body`` and its ``media_type`` and extra ``headers``."""

    __slots__ = ("body", "headers", "media_type")

    def __init__(self, body: bytes, media_type: str, headers: dict[str, str] | None = None) -> None:
        self.body = body
        self.media_type = media_type
        self.headers = headers or {}


def encode_fields(fields: dict[str, Any], encoding: str) -> tuple[dict[str, bytes], list[memoryview]]:
    """Serialize each field's tensors (nested lists of arrays) to JSON bytes (embed them in the
    response object with ``orjson.Fragment``).

    For ``binary``, also the raw bytes of the tensors, in the order their headers appear in those
    fields (the order of ``fields``): views of the arrays themselves, never copies."""
    chunks: list[memoryview] = []
    if encoding == "binary":

        def one(array: Any) -> dict[str, Any]:
            arr = np.asarray(array)
            arr = np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("<"))  # a no-op when it already is
            raw = memoryview(arr.reshape(-1).view(np.uint8))
            chunks.append(raw)
            return {"dtype": dtype_name(arr.dtype), "shape": list(arr.shape), "binary_data_size": raw.nbytes}

    else:

        def one(array: Any) -> dict[str, Any]:
            return engine.encode_tensor(array, encoding)

    out = {}
    for name, value in fields.items():
        fast = _json_fast(value) if encoding == "json" else None
        out[name] = fast if fast is not None else dumps(nested_map(value, one))
    return out, chunks


# -- a large JSON result, written by the worker and the server together ---------------------
#
# orjson writes ~30 ns per float: the 670k gradients of an MLP take ~15-20 ms, more than the
# gradients themselves. The worker sends the arrays, then writes the JSON text of the elements
# before a split point while the server writes the rest: two processes, two cores, half the time.
# The pieces are joined into exactly the bytes that encode_fields would have written.

#: results with fewer elements than this are written by the server alone
SPLIT_MIN_ELEMENTS = 65536


def flat_tensors(fields: dict[str, Any]) -> list[np.ndarray]:
    """The tensors of a result's fields, in the order their text appears in the response."""
    out: list[np.ndarray] = []
    for value in fields.values():
        nested_map(value, lambda a: out.append(np.asarray(a)))
    return out


def split_point(arrays: list[np.ndarray], share: float = 0.5) -> int | None:
    """The element index (over the flattened tensors, in order) before which the worker writes
    the text, or None when the result is small or has other than native dtypes (then the general
    path writes it, as it always did). Each side checks that its floats are finite."""
    total = 0
    for arr in arrays:
        if _NATIVE.get(arr.dtype) is None:
            return None
        total += arr.size
    if total < SPLIT_MIN_ELEMENTS:
        return None
    return int(total * share)


def _shares(arrays: list[np.ndarray], split: int) -> Iterator[tuple[np.ndarray, int]]:
    """Each tensor's flat data and the local index where the split falls in it, clamped to
    [0, size]: all of a tensor before the split is the worker's, all after it the server's."""
    start = 0
    for arr in arrays:
        flat = np.ascontiguousarray(arr).reshape(-1)
        yield flat, min(max(split - start, 0), flat.size)
        start += flat.size


def write_share(arrays: list[np.ndarray], split: int, worker: bool) -> list[bytes] | None:
    """The JSON text of one side's share: per tensor that has elements on that side (in order),
    its data array (or the part of it on that side) as orjson writes it. None if a float in it
    is not finite: encode_fields spells those out (and the whole tensor differently), so the
    result is then written by the general path."""
    slices = []
    for flat, k in _shares(arrays, split):
        whole_worker = k == flat.size
        if worker:
            if k > 0 or whole_worker:
                slices.append(flat if whole_worker else flat[:k])
        elif not whole_worker:
            slices.append(flat if k == 0 else flat[k:])
    if any(part.dtype.kind == "f" and not np.isfinite(part).all() for part in slices):
        return None
    return [dumps(part) for part in slices]


def join_shares(fields: dict[str, Any], split: int, worker: list[Any], server: list[Any]) -> dict[str, list[Any]]:
    """Each field's JSON text as a list of pieces (bytes and views of the worker's buffers):
    byte for byte what encode_fields writes for it."""
    arrays = flat_tensors(fields)
    data: list[list[Any]] = []
    w = iter(worker)
    sv = iter(server)
    for flat, k in _shares(arrays, split):
        if k == flat.size:
            data.append([next(w)])
        elif k == 0:
            data.append([next(sv)])
        else:  # "[a,...,b]" + "[c,...]" -> "[a,...,b,c,...]"
            data.append([memoryview(next(w))[:-1], b",", memoryview(next(sv))[1:]])
    pieces = iter(data)
    out: dict[str, list[Any]] = {}
    for name, value in fields.items():
        parts: list[Any] = []
        _field_pieces(value, pieces, parts)
        out[name] = parts
    return out


def _field_pieces(value: Any, data: Iterator[list[Any]], parts: list[Any]) -> None:
    if isinstance(value, (list, tuple)):
        parts.append(b"[")
        for i, v in enumerate(value):
            if i:
                parts.append(b",")
            _field_pieces(v, data, parts)
        parts.append(b"]")
        return
    arr = np.asarray(value)
    parts.append(b'{"dtype":' + dumps(_NATIVE[arr.dtype]) + b',"shape":' + dumps(list(arr.shape)) + b',"data":')
    parts.extend(next(data))
    parts.append(b"}")


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


def encode_tensors(fields: dict[str, Any], encoding: str) -> tuple[dict[str, bytes], list[bytes]]:
    """:func:`encode_fields` with the chunks as bytes."""
    encoded, chunks = encode_fields(fields, encoding)
    return encoded, [bytes(c) for c in chunks]


def splice(fields: list[tuple[str, bytes]]) -> bytes:
    """A JSON object from already-serialized member values (in order)."""
    return b"{" + b",".join(orjson.dumps(key) + b":" + value for key, value in fields) + b"}"


def frame(json_part: bytes, chunks: list[Any], encoding: str) -> Encoded:
    """The response body: JSON, or JSON followed by the binary tensors (OIP binary extension)."""
    if encoding != "binary":
        return Encoded(json_part, JSON_TYPE)
    return Encoded(
        b"".join([json_part, *chunks]),
        BINARY_TYPE,
        {"Inference-Header-Content-Length": str(len(json_part))},
    )


#: binary tensors up to this size in all are joined into the body; beyond it they are streamed
STREAM_BYTES = 256 * 1024


def response(json_part: bytes, chunks: list[Any], encoding: str) -> Response:
    """The HTTP response: JSON, or JSON followed by the binary tensors. Large binary tensors are
    sent as they are (no join: the socket copies them once)."""
    if encoding == "binary" and sum(memoryview(c).nbytes for c in chunks) > STREAM_BYTES:
        return PartsResponse([json_part, *chunks], BINARY_TYPE,
                             {"Inference-Header-Content-Length": str(len(json_part))})
    out = frame(json_part, chunks, encoding)
    return Response(out.body, media_type=out.media_type, headers=out.headers)


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
        self.body = merged[0] if merged else b""
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
            await send({"type": "http.response.body", "body": part, "more_body": i < last})
