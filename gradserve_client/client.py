"""A Python client for gradserve: NumPy arrays in, NumPy arrays out.

>>> from gradserve_client import GradClient
>>> with GradClient("http://127.0.0.1:8000", api_key=None) as gs:
...     network_id = gs.register(network)["network_id"]
...     result = gs.grad(network_id, [x, y], get_all=True, encoding="binary")
...     dx, dy = result.gradients

Tensors are encoded and decoded by the engine's tensor codec (:mod:`engine.tensors`, the one
decoder of wire tensors; it imports no JAX), plus the binary framing here: a client machine
needs NumPy and httpx, not JAX.
``encoding`` picks how tensors travel both ways: ``"json"`` (numbers), ``"b64"`` (base64 in the
JSON) or ``"binary"`` (the Open Inference Protocol binary extension: raw bytes after the JSON).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
import numpy as np
import orjson

from engine.dtypes import DTYPES, dtype_name
from engine.errors import TensorError
from engine.tensors import decode_tensor as _decode_wire
from engine.tensors import encode_tensor

BINARY_HEADER = "Inference-Header-Content-Length"


class GradServeError(Exception):
    """An error answer: ``status`` (HTTP), ``code``, ``message``, ``path``, and ``retry_after``
    (seconds, on 503)."""

    def __init__(self, status: int, code: str, message: str, path: str | None = None,
                 retry_after: float | None = None) -> None:
        super().__init__(f"{status} {code}: {message}" + (f" (at {path})" if path else ""))
        self.status = status
        self.code = code
        self.message = message
        self.path = path
        self.retry_after = retry_after


@dataclass
class GradResult:
    network_id: str
    gradients: Any  # np.ndarray | list[np.ndarray] | list[list[np.ndarray]], as GradOperation returns
    gradient_names: Any
    value: list[np.ndarray] | None = None
    timing_ms: dict[str, float] = field(default_factory=dict)


# -- tensors ----------------------------------------------------------------------------------------


def _raw(arr: np.ndarray) -> bytes:
    return np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("<")).tobytes()


def _dtype_name(dtype: np.dtype) -> str:
    try:
        return dtype_name(dtype)
    except TensorError:
        raise TypeError(f"gradserve has no dtype for {dtype}: use one of {', '.join(DTYPES)}") from None


class _Encoder:
    """Turns arrays into wire tensors; for ``binary`` it collects their bytes in order."""

    def __init__(self, encoding: str) -> None:
        if encoding not in ("json", "b64", "binary"):
            raise ValueError(f"encoding must be 'json', 'b64' or 'binary', got {encoding!r}")
        self.encoding = encoding
        self.chunks: list[bytes] = []

    def tensor(self, value: Any) -> dict[str, Any]:
        arr = np.asarray(value)
        name = _dtype_name(arr.dtype)
        if self.encoding != "binary":
            return encode_tensor(arr, self.encoding)
        raw = _raw(arr)
        self.chunks.append(raw)
        return {"dtype": name, "shape": list(arr.shape), "binary_data_size": len(raw)}

    def body(self, doc: dict[str, Any]) -> tuple[bytes, dict[str, str]]:
        json_part = orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY)
        if self.encoding != "binary":
            return json_part, {"Content-Type": "application/json"}
        return b"".join([json_part, *self.chunks]), {
            "Content-Type": "application/octet-stream",
            BINARY_HEADER: str(len(json_part)),
        }


def decode_tensor(obj: Mapping[str, Any], binary: memoryview | bytes | None = None) -> np.ndarray:
    """A wire tensor (``data``, ``b64`` or binary bytes) as a NumPy array."""
    return _decode_wire(obj, binary=binary)


def _decode_nested(value: Any, decode: Any) -> Any:
    if isinstance(value, list):
        return [_decode_nested(v, decode) for v in value]
    return decode(value)


def _network_doc(network: Mapping[str, Any], encoder: _Encoder) -> dict[str, Any]:
    """A network document with its parameter values encoded (arrays may be given as NumPy)."""
    doc = dict(network)
    params = []
    for p in doc.get("parameters") or []:
        p = dict(p)
        value = p.get("value")
        if isinstance(value, np.ndarray) or (isinstance(value, Mapping) and encoder.encoding == "binary"
                                             and "data" in value):
            p["value"] = encoder.tensor(value if isinstance(value, np.ndarray) else decode_tensor(value))
        params.append(p)
    if "parameters" in doc:
        doc["parameters"] = params
    return doc


# -- the client -------------------------------------------------------------------------------------


class GradClient:
    """A gradserve client over one HTTP connection pool (``httpx.Client``)."""

    def __init__(self, base_url: str, *, api_key: str | None = None, timeout: float = 60.0,
                 client: httpx.Client | None = None) -> None:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.http = client or httpx.Client(base_url=base_url, timeout=timeout, headers=headers)

    def __enter__(self) -> GradClient:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        self.http.close()

    # -- plumbing ---------------------------------------------------------------------------------

    def _request(self, method: str, path: str, *, content: bytes | None = None,
                 headers: dict[str, str] | None = None) -> httpx.Response:
        response = self.http.request(method, path, content=content, headers=headers)
        if response.status_code >= 400:
            raise _error(response)
        return response

    # -- the API ----------------------------------------------------------------------------------

    def register(self, network: Mapping[str, Any], *, encoding: str = "b64") -> dict[str, Any]:
        """``POST /networks``: ``{"network_id", "name", "inputs", "parameters", "outputs"}``.

        Parameter values may be NumPy arrays; they are sent in ``encoding``."""
        encoder = _Encoder(encoding)
        body, headers = encoder.body(_network_doc(network, encoder))
        return orjson.loads(self._request("POST", "/networks", content=body, headers=headers).content)

    def grad(
        self,
        network: Mapping[str, Any] | str,
        inputs: Sequence[Any] | Mapping[str, Any],
        *,
        parameters: Mapping[str, Any] | None = None,
        get_all: bool = False,
        get_by_list: bool = False,
        sens_param: bool = False,
        weights: Sequence[str] | None = None,
        sens: Any = None,
        return_value: bool = False,
        timeout_ms: int | None = None,
        encoding: str = "json",
    ) -> GradResult:
        """``POST /grad``: ``network`` is a network document (inline) or a registered id.

        Inputs, parameters and sens are arrays (anything ``np.asarray`` takes), sent in
        ``encoding``; the gradients come back in the same encoding, as NumPy arrays nested as
        GradOperation returns them."""
        encoder = _Encoder(encoding)
        doc: dict[str, Any] = {}
        if isinstance(network, str):
            doc["network_id"] = network
        else:
            doc["network"] = _network_doc(network, encoder)
        if isinstance(inputs, Mapping):
            doc["inputs"] = {k: encoder.tensor(v) for k, v in inputs.items()}
        else:
            doc["inputs"] = [encoder.tensor(v) for v in inputs]
        if parameters:
            doc["parameters"] = {k: encoder.tensor(v) for k, v in parameters.items()}
        for flag, value in (("get_all", get_all), ("get_by_list", get_by_list), ("sens_param", sens_param),
                            ("return_value", return_value)):
            if value:
                doc[flag] = True
        if weights is not None:
            doc["weights"] = list(weights)
        if sens is not None:
            doc["sens"] = [encoder.tensor(s) for s in sens] if isinstance(sens, (list, tuple)) else encoder.tensor(sens)
        if timeout_ms is not None:
            doc["timeout_ms"] = timeout_ms
        doc["output_encoding"] = encoding
        body, headers = encoder.body(doc)
        return parse_grad_response(self._request("POST", "/grad", content=body, headers=headers))

    def networks(self) -> list[dict[str, Any]]:
        return orjson.loads(self._request("GET", "/networks").content)["networks"]

    def network(self, network_id: str) -> dict[str, Any]:
        return orjson.loads(self._request("GET", f"/networks/{network_id}").content)

    def delete(self, network_id: str) -> None:
        self._request("DELETE", f"/networks/{network_id}")

    def ops(self) -> list[dict[str, Any]]:
        return orjson.loads(self._request("GET", "/ops").content)["ops"]

    def ready(self) -> bool:
        return self.http.get("/health/ready").status_code == 200


def parse_grad_response(response: httpx.Response) -> GradResult:
    """A ``/grad`` answer (JSON, or the binary framing) as a :class:`GradResult`."""
    content = response.content
    header = response.headers.get(BINARY_HEADER)
    chunks: list[memoryview] = []
    if header is None:
        doc = orjson.loads(content)
    else:
        size = int(header)
        view = memoryview(content)
        doc = orjson.loads(view[:size])
        offset = size
        rest = [doc["gradients"], *([doc["value"]] if doc.get("value") is not None else [])]

        def collect(node: Any) -> None:
            nonlocal offset
            if isinstance(node, list):
                for item in node:
                    collect(item)
            else:
                n = node["binary_data_size"]
                chunks.append(view[offset:offset + n])
                offset += n

        for part in rest:
            collect(part)
    queue = iter(chunks)

    def decode(obj: Mapping[str, Any]) -> np.ndarray:
        return decode_tensor(obj, next(queue) if "binary_data_size" in obj else None)

    gradients = _decode_nested(doc["gradients"], decode)
    value = _decode_nested(doc["value"], decode) if doc.get("value") is not None else None
    return GradResult(doc["network_id"], gradients, doc["gradient_names"], value, doc.get("timing_ms", {}))


def _error(response: httpx.Response) -> GradServeError:
    retry = response.headers.get("Retry-After")
    try:
        err = orjson.loads(response.content)["error"]
        code, message, path = err["code"], err["message"], err.get("path")
    except (orjson.JSONDecodeError, KeyError, TypeError):
        code, message, path = "http_error", response.text[:500], None
    return GradServeError(response.status_code, code, message, path, float(retry) if retry else None)
