"""The API contract as the tests read it: wire-format helpers written from shared/API.md (not from
the service's own codec, so the tests check the service against the contract), the error shape,
the metrics text, and networks that are slow to compile."""

from __future__ import annotations

import base64
import copy
import time
from typing import Any

import httpx
import numpy as np
import orjson

RTOL, ATOL = 1e-5, 1e-6
ENCODINGS = ("json", "b64", "binary")
BINARY_HEADER = "Inference-Header-Content-Length"


def array(t: dict[str, Any]) -> np.ndarray:
    """A JSON wire tensor (``data``) as an array."""
    values = [{"NaN": np.nan, "Infinity": np.inf, "-Infinity": -np.inf}.get(v, v) if isinstance(v, str) else v
              for v in np.ravel(np.asarray(t["data"], dtype=object))]
    return np.asarray(values, dtype=t["dtype"]).reshape(t["shape"])


def _is_tensor(node: Any) -> bool:
    return isinstance(node, dict) and "dtype" in node and ("data" in node or "b64" in node)


def _tensors_in_order(doc: Any) -> list[dict[str, Any]]:
    """The tensors of a request in JSON text order (what the binary framing follows)."""
    found: list[dict[str, Any]] = []

    def walk(node: Any) -> None:
        if _is_tensor(node):
            found.append(node)
        elif isinstance(node, dict):
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(doc)
    return found


def encode_request(request: dict[str, Any], encoding: str) -> tuple[bytes, dict[str, str]]:
    """A /grad (or /networks) body with every tensor in ``encoding``, asking for the same encoding
    back (for /grad)."""
    doc = copy.deepcopy(request)
    chunks: list[bytes] = []
    for t in _tensors_in_order(doc) if encoding != "json" else []:
        if "data" not in t:
            continue
        raw = array(t).astype(np.dtype(t["dtype"]).newbyteorder("<")).tobytes()
        del t["data"]
        if encoding == "b64":
            t["b64"] = base64.b64encode(raw).decode()
        elif encoding == "binary":
            t["binary_data_size"] = len(raw)
            chunks.append(raw)
    if "network" in doc or "network_id" in doc:  # a /grad request (not a network)
        doc["output_encoding"] = encoding
    json_part = orjson.dumps(doc)
    if encoding != "binary":
        return json_part, {"Content-Type": "application/json"}
    return json_part + b"".join(chunks), {"Content-Type": "application/octet-stream",
                                           BINARY_HEADER: str(len(json_part))}


def decode_response(response: httpx.Response) -> dict[str, Any]:
    """A /grad answer with every tensor (``gradients``, ``value``) turned into an array."""
    header = response.headers.get(BINARY_HEADER)
    content = response.content
    if header is None:
        assert response.headers["content-type"].startswith("application/json")
        doc = orjson.loads(content)
        rest = b""
    else:
        assert response.headers["content-type"] == "application/octet-stream"
        doc = orjson.loads(content[: int(header)])
        rest = content[int(header):]
    offset = 0

    def tensor(t: dict[str, Any]) -> np.ndarray:
        nonlocal offset
        dtype = np.dtype(t["dtype"])
        if "data" in t:
            assert set(t) == {"dtype", "shape", "data"}
            return array(t)
        if "b64" in t:
            raw = base64.b64decode(t["b64"])
        else:
            raw = rest[offset: offset + t["binary_data_size"]]
            offset += t["binary_data_size"]
        return np.frombuffer(raw, dtype=dtype.newbyteorder("<")).astype(dtype).reshape(t["shape"])

    def nested(v: Any) -> Any:
        return [nested(x) for x in v] if isinstance(v, list) else tensor(v)

    doc["gradients"] = nested(doc["gradients"])
    if "value" in doc:
        doc["value"] = nested(doc["value"])
    if header is not None:
        assert offset == len(rest), "binary part longer than its tensors"
    return doc


def assert_close(got: Any, expected: Any) -> None:
    """``got`` (arrays) against ``expected`` (JSON wire tensors), nested alike."""
    if isinstance(expected, list):
        assert isinstance(got, list) and len(got) == len(expected), (got, expected)
        for g, e in zip(got, expected):
            assert_close(g, e)
        return
    want = array(expected)
    assert got.dtype == want.dtype and got.shape == want.shape, (got.dtype, got.shape, want.dtype, want.shape)
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)


def error_of(response: httpx.Response, status: int, code: str | None = None) -> dict[str, Any]:
    """The ``error`` object of a response, after checking its status, shape and code."""
    assert response.status_code == status, (response.status_code, response.text[:2000])
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error"}, body
    err = body["error"]
    assert set(err) == {"code", "message", "path"}, err
    assert isinstance(err["message"], str) and err["message"]
    if code is not None:
        assert err["code"] == code, err
    return err


def chain_network(n: int, salt: float = 0.0) -> dict[str, Any]:
    """An n-node network whose gradient takes a second or two to compile on a CPU. ``salt``
    changes a parameter value, hence the network id, hence the compile-cache key."""
    ops = ("Sin", "Tanh", "Cos", "Sigmoid")
    nodes, prev = [], "x"
    for i in range(n):
        if i % 5 == 4:
            nodes.append({"name": f"n{i}", "op": "Mul", "inputs": [prev, "w"]})
        elif i % 7 == 3:
            nodes.append({"name": f"n{i}", "op": "MatMul", "inputs": [prev, "m"]})
        else:
            nodes.append({"name": f"n{i}", "op": ops[i % 4], "inputs": [prev]})
        prev = f"n{i}"
    return {
        "format": "gradnet/1",
        "name": f"chain-{n}",
        "inputs": [{"name": "x"}],
        "parameters": [
            {"name": "w", "value": {"dtype": "float32", "shape": [1], "data": [1.0 + salt]}},
            {"name": "m", "value": {"dtype": "float32", "shape": [4, 4], "data": [0.1] * 16}},
        ],
        "nodes": nodes,
        "outputs": [prev],
    }


def chain_request(n: int = 300, salt: float | None = None, **extra: Any) -> dict[str, Any]:
    salt = time.time_ns() % 1_000_000 / 1e7 if salt is None else salt
    x = {"dtype": "float32", "shape": [4, 4], "data": [0.5] * 16}
    return {"network": chain_network(n, salt), "inputs": [x], **extra}


def metric(text: str, name: str, **labels: str) -> float | None:
    """One sample of a Prometheus text page (None if absent)."""
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        head, _, value = line.rpartition(" ")
        if head == name or head == f"{name}{{{want}}}":
            return float(value)
    return None
