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
    value: Any = None  # list[np.ndarray] (GradOperation), a tensor or a list (the mindspore.grad form)
    timing_ms: dict[str, float] = field(default_factory=dict)
    aux: list[np.ndarray] | None = None  # has_aux: the outputs after the first


@dataclass
class Answer:
    """The answer of /jvp, /vjp, /jacobian or /hvp: its fields (``value``, ``jvp``, ``gradients``,
    ``jacobian``, ``hvp``, ``aux``) as NumPy arrays nested as MindSpore nests them."""

    network_id: str
    fields: dict[str, Any]
    timing_ms: dict[str, float] = field(default_factory=dict)

    def __getitem__(self, name: str) -> Any:
        return self.fields[name]


_UNSET: Any = object()


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
    if isinstance(value, (int, str)):  # return_ids: a position or a parameter name beside its tensor
        return value
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
        grad_position: Any = _UNSET,
        has_aux: bool = False,
        return_ids: bool = False,
        per_example_axes: Sequence[int | None] | None = None,
    ) -> GradResult:
        """``POST /grad``: ``network`` is a network document (inline) or a registered id.

        GradOperation's form by default; giving ``grad_position`` (an int, a list of ints, or
        None with ``weights``) selects the ``mindspore.grad`` / ``value_and_grad`` form, with
        ``has_aux`` and ``return_ids``. ``per_example_axes`` (either form): one axis or None per
        input, per-example gradients stacked on a new leading axis.

        Inputs, parameters and sens are arrays (anything ``np.asarray`` takes), sent in
        ``encoding``; the gradients come back in the same encoding, as NumPy arrays nested as
        MindSpore returns them."""
        encoder = _Encoder(encoding)
        doc = self._call_doc(encoder, network, inputs, parameters)
        if grad_position is not _UNSET:
            doc["grad_position"] = list(grad_position) if isinstance(grad_position, (list, tuple)) else grad_position
        for flag, value in (("get_all", get_all), ("get_by_list", get_by_list), ("sens_param", sens_param),
                            ("return_value", return_value), ("has_aux", has_aux), ("return_ids", return_ids)):
            if value:
                doc[flag] = True
        if per_example_axes is not None:
            doc["per_example_axes"] = list(per_example_axes)
        if weights is not None:
            doc["weights"] = list(weights)
        if sens is not None:
            doc["sens"] = [encoder.tensor(s) for s in sens] if isinstance(sens, (list, tuple)) else encoder.tensor(sens)
        if timeout_ms is not None:
            doc["timeout_ms"] = timeout_ms
        doc["output_encoding"] = encoding
        body, headers = encoder.body(doc)
        return parse_grad_response(self._request("POST", "/grad", content=body, headers=headers))

    @staticmethod
    def _call_doc(encoder: _Encoder, network: Mapping[str, Any] | str, inputs: Sequence[Any] | Mapping[str, Any],
                  parameters: Mapping[str, Any] | None) -> dict[str, Any]:
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
        return doc

    def _transform(self, route: str, network: Mapping[str, Any] | str, inputs: Sequence[Any] | Mapping[str, Any],
                   vectors: tuple[str, Any] | None, options: dict[str, Any], *, parameters: Mapping[str, Any] | None,
                   timeout_ms: int | None, encoding: str) -> Answer:
        encoder = _Encoder(encoding)
        doc = self._call_doc(encoder, network, inputs, parameters)
        if vectors is not None:
            name, value = vectors
            doc[name] = [encoder.tensor(v) for v in value] if isinstance(value, (list, tuple)) else encoder.tensor(value)
        doc.update({k: v for k, v in options.items() if v is not None and v is not False})
        if timeout_ms is not None:
            doc["timeout_ms"] = timeout_ms
        doc["output_encoding"] = encoding
        body, headers = encoder.body(doc)
        fields = _parse_fields(self._request("POST", route, content=body, headers=headers))
        return Answer(fields.pop("network_id"), fields, fields.pop("timing_ms", {}))

    def jvp(self, network: Mapping[str, Any] | str, inputs: Sequence[Any], tangents: Sequence[Any], *,
            has_aux: bool = False, batched: bool = False, parameters: Mapping[str, Any] | None = None,
            timeout_ms: int | None = None, encoding: str = "json") -> Answer:
        """``POST /jvp`` (``mindspore.ops.jvp``): ``value`` and ``jvp`` (and ``aux``)."""
        return self._transform("/jvp", network, inputs, ("tangents", list(tangents)),
                               {"has_aux": has_aux, "batched": batched}, parameters=parameters,
                               timeout_ms=timeout_ms, encoding=encoding)

    def vjp(self, network: Mapping[str, Any] | str, inputs: Sequence[Any], cotangents: Any, *,
            weights: Sequence[str] | None = None, has_aux: bool = False, batched: bool = False,
            parameters: Mapping[str, Any] | None = None, timeout_ms: int | None = None,
            encoding: str = "json") -> Answer:
        """``POST /vjp`` (``mindspore.ops.vjp`` and ``vjp_fn(cotangents)``): ``value`` and ``gradients``."""
        return self._transform("/vjp", network, inputs, ("cotangents", cotangents),
                               {"weights": None if weights is None else list(weights), "has_aux": has_aux,
                                "batched": batched}, parameters=parameters, timeout_ms=timeout_ms, encoding=encoding)

    def jacobian(self, network: Mapping[str, Any] | str, inputs: Sequence[Any], *, grad_position: Any = 0,
                 mode: str = "reverse", parameters: Mapping[str, Any] | None = None, timeout_ms: int | None = None,
                 encoding: str = "json") -> Answer:
        """``POST /jacobian`` (``mindspore.jacrev`` / ``jacfwd``): ``jacobian`` and ``value``."""
        position = list(grad_position) if isinstance(grad_position, (list, tuple)) else grad_position
        return self._transform("/jacobian", network, inputs, None, {"grad_position": position, "mode": mode},
                               parameters=parameters, timeout_ms=timeout_ms, encoding=encoding)

    def hvp(self, network: Mapping[str, Any] | str, inputs: Sequence[Any], vectors: Any, *, grad_position: Any = 0,
            batched: bool = False, parameters: Mapping[str, Any] | None = None, timeout_ms: int | None = None,
            encoding: str = "json") -> Answer:
        """``POST /hvp``: ``hvp``, the Hessian of the first (scalar) output times ``vectors``."""
        position = list(grad_position) if isinstance(grad_position, (list, tuple)) else grad_position
        return self._transform("/hvp", network, inputs, ("vectors", vectors),
                               {"grad_position": position, "batched": batched}, parameters=parameters,
                               timeout_ms=timeout_ms, encoding=encoding)

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


#: answer fields that hold no tensors
_PLAIN = frozenset({"network_id", "timing_ms", "gradient_names"})


def _parse_fields(response: httpx.Response) -> dict[str, Any]:
    """Any transform's answer (JSON, or the binary framing): its fields, tensors as NumPy arrays.
    Binary tensors follow the JSON part in the order their headers appear in it."""
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

        def collect(node: Any) -> None:
            nonlocal offset
            if isinstance(node, list):
                for item in node:
                    collect(item)
            elif isinstance(node, dict):
                n = node["binary_data_size"]
                chunks.append(view[offset:offset + n])
                offset += n

        for key, part in doc.items():
            if key not in _PLAIN and part is not None:
                collect(part)
    queue = iter(chunks)

    def decode(obj: Mapping[str, Any]) -> np.ndarray:
        return decode_tensor(obj, next(queue) if "binary_data_size" in obj else None)

    return {k: v if k in _PLAIN or v is None else _decode_nested(v, decode) for k, v in doc.items()}


def parse_grad_response(response: httpx.Response) -> GradResult:
    """A ``/grad`` answer (JSON, or the binary framing) as a :class:`GradResult`."""
    doc = _parse_fields(response)
    return GradResult(doc["network_id"], doc["gradients"], doc["gradient_names"], doc.get("value"),
                      doc.get("timing_ms", {}), doc.get("aux"))


def _error(response: httpx.Response) -> GradServeError:
    retry = response.headers.get("Retry-After")
    try:
        err = orjson.loads(response.content)["error"]
        code, message, path = err["code"], err["message"], err.get("path")
    except (orjson.JSONDecodeError, KeyError, TypeError):
        code, message, path = "http_error", response.text[:500], None
    return GradServeError(response.status_code, code, message, path, float(retry) if retry else None)
