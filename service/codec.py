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
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import numpy as np
import orjson
from starlette.requests import ClientDisconnect, Request

import engine
from engine.dtypes import dtype_name

from .errors import BadRequestError, PayloadTooLargeError

BINARY_HEADER = "inference-header-content-length"
JSON_TYPE = "application/json"
BINARY_TYPE = "application/octet-stream"
ENCODINGS = ("json", "b64", "binary")
_DUMPS_OPTIONS = orjson.OPT_SERIALIZE_NUMPY


# -- reading ------------------------------------------------------------------------------------


async def read_body(request: Request, limit: int) -> bytes:
    """The whole body, refused with 413 as soon as it is known to be over ``limit`` bytes.

    ``Content-Length`` is checked before anything is read; a chunked (or lying) body is counted
    as it arrives and refused at the first chunk past the limit, so nothing over the limit is
    ever buffered.
    """
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            size = int(declared)
        except ValueError:
            raise BadRequestError(f"Content-Length {declared!r} is not a number", "body") from None
        if size > limit:
            raise _too_large(size, limit)
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


def encode_tensors(fields: dict[str, Any], encoding: str) -> tuple[dict[str, bytes], list[bytes]]:
    """Serialize each field's tensors (nested lists of arrays) to JSON bytes.

    Returns the JSON of each field, and for ``binary`` the raw bytes of the tensors in the
    order their headers appear in those fields (the order of ``fields``)."""
    chunks: list[bytes] = []
    if encoding == "binary":

        def one(array: Any) -> dict[str, Any]:
            arr = np.asarray(array)
            raw = np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("<")).tobytes()
            chunks.append(raw)
            return {"dtype": dtype_name(arr.dtype), "shape": list(arr.shape), "binary_data_size": len(raw)}

    else:

        def one(array: Any) -> dict[str, Any]:
            return engine.encode_tensor(array, encoding)

    return {name: dumps(nested_map(value, one)) for name, value in fields.items()}, chunks


def splice(fields: list[tuple[str, bytes]]) -> bytes:
    """A JSON object from already-serialized member values (in order)."""
    return b"{" + b",".join(orjson.dumps(key) + b":" + value for key, value in fields) + b"}"


def frame(json_part: bytes, chunks: list[bytes], encoding: str) -> Encoded:
    """The response body: JSON, or JSON followed by the binary tensors (OIP binary extension)."""
    if encoding != "binary":
        return Encoded(json_part, JSON_TYPE)
    return Encoded(
        b"".join([json_part, *chunks]),
        BINARY_TYPE,
        {"Inference-Header-Content-Length": str(len(json_part))},
    )
