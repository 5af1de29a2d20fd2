"""What the load generator sends: /grad request bodies, built once per (scenario, encoding, mode).

A *scenario* is a /grad request as a Python object (``tutorial``, ``mlp`` or any JSON file).
:func:`prepare` turns it into the exact bytes and headers that every virtual user then posts,
so the load generator (Locust or hey) spends nothing on encoding during the run:

- ``json``:   every tensor as ``{"dtype", "shape", "data"}``, ``"output_encoding": "json"``;
- ``b64``:    every tensor as ``{"dtype", "shape", "b64"}``, ``"output_encoding": "b64"``;
- ``binary``: the Open Inference Protocol binary tensor extension: the JSON part, whose tensors say
  ``"binary_data_size"``, followed by the raw little-endian bytes of each of those tensors in the
  order they appear in the JSON part; the header ``Inference-Header-Content-Length`` gives the JSON
  part's length; ``"output_encoding": "binary"``.

In *network-id* mode the network is registered once (``POST /networks``, JSON with b64
parameters) and the body carries ``"network_id"`` instead of ``"network"``.

A scenario's *protocol* says where the body goes: ``grad`` (``POST /grad``), or ``oip`` (the
``oip`` scenario: the same call as an Open Inference Protocol v2 infer request to
``/v2/models/{model}/infer``, always of a registered network; ``json`` or ``binary`` tensors,
OIP has no ``b64``), or ``umbridge`` (the ``umbridge`` scenario: the tutorial's gradient w.r.t.
``x`` as a UM-Bridge ``POST /Gradient`` of the registered network, its inputs' shapes declared;
``json`` only).

Tensors are decoded and encoded by the engine's one tensor codec (:mod:`engine.tensors`), which
imports no JAX: the load generator never loads JAX.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from engine.dtypes import OIP_DTYPES, dtype_name
from engine.tensors import decode_tensor, encode_tensor
from service.models import TUTORIAL_NETWORK

ENCODINGS = ("json", "b64", "binary")
BUILTIN_SCENARIOS = ("tutorial", "mlp", "oip", "umbridge")
#: where a scenario's body goes: gradserve's own /grad, or the Open Inference Protocol v2
PROTOCOLS = ("grad", "oip", "umbridge")
BINARY_HEADER = "Inference-Header-Content-Length"

# The repository root (``gradserve_loadtest/scenarios.py`` -> ``.``), where tests/fixtures is.
REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_MLP_FILE = "tests/fixtures/mlp.json"

# --------------------------------------------------------------------------------------------
# Tensors: the engine's one codec (engine.tensors imports no JAX), plus the raw bytes of the
# binary framing.
# --------------------------------------------------------------------------------------------


def is_wire_tensor(obj: Any) -> bool:
    return isinstance(obj, dict) and ("dtype" in obj or "datatype" in obj) and (
        "data" in obj or "b64" in obj
    )


def wire_tensor(array: np.ndarray, encoding: str) -> dict[str, Any]:
    """``array`` as a wire tensor in ``encoding`` (``json`` or ``b64``), plain JSON values only
    (a scenario is a Python object that ``json`` can write too)."""
    wire = encode_tensor(array, encoding)
    if isinstance(wire.get("data"), np.ndarray):
        wire["data"] = wire["data"].tolist()
    return wire


def to_wire(obj: dict[str, Any], encoding: str) -> dict[str, Any]:
    """A wire tensor (``data`` or ``b64``, ``dtype`` or OIP ``datatype``) again, in ``encoding``
    (``json`` or ``b64``), with the canonical dtype name."""
    return wire_tensor(decode_tensor(obj), encoding)


def raw_bytes(obj: dict[str, Any]) -> tuple[dict[str, Any], bytes]:
    """A wire tensor's head for the binary framing (``binary_data_size``) and its bytes."""
    array = decode_tensor(obj)
    raw = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).tobytes()
    return {"dtype": dtype_name(array.dtype), "shape": list(array.shape), "binary_data_size": len(raw)}, raw


# --------------------------------------------------------------------------------------------
# Scenario builders
# --------------------------------------------------------------------------------------------

TUTORIAL_X = [[0.8, 0.6, 0.2], [1.8, 1.3, 1.1]]
TUTORIAL_Y = [[0.11, 3.3, 1.1], [1.1, 0.2, 1.4], [1.1, 2.2, 0.3]]


def tutorial_request() -> dict[str, Any]:
    """The seed tutorial net with ``get_all`` (gradients w.r.t. x and y)."""
    return {
        "network": copy.deepcopy(TUTORIAL_NETWORK),
        "inputs": [
            wire_tensor(np.asarray(TUTORIAL_X, np.float32), "json"),
            wire_tensor(np.asarray(TUTORIAL_Y, np.float32), "json"),
        ],
        "get_all": True,
    }


def find_file(path: str | Path) -> Path | None:
    """``path`` as given (relative to the working directory), else relative to the repo root."""
    p = Path(path).expanduser()
    if p.is_file():
        return p
    if not p.is_absolute() and (REPO_ROOT / p).is_file():
        return REPO_ROOT / p
    return None


def mlp_request(path: str | Path = DEFAULT_MLP_FILE) -> tuple[dict[str, Any], str]:
    """The MLP /grad body (``get_by_list``, written by tools/make_mlp_fixture.py) and its file."""
    found = find_file(path)
    if found is None:
        raise FileNotFoundError(f"the mlp scenario's request file {str(path)!r} is not there: pass --mlp-file, "
                                f"or write it with `python tools/make_mlp_fixture.py` in a gradserve checkout")
    return load_request(found), str(found)


def load_request(path: str | Path) -> dict[str, Any]:
    """Any /grad body from a JSON file. A fixture file with ``{"cases": [{"request": …}]}`` (like
    ``tests/fixtures/tutorial.json``) gives its first case."""
    found = find_file(path)
    if found is None:
        raise FileNotFoundError(f"request file not found: {path}")
    doc = json.loads(found.read_text())
    if isinstance(doc, dict) and "cases" in doc and "network" not in doc:
        doc = doc["cases"][0]["request"]
    if isinstance(doc, dict) and "request" in doc and "network" not in doc and "network_id" not in doc:
        doc = doc["request"]
    if not isinstance(doc, dict) or not ("network" in doc or "network_id" in doc):
        raise ValueError(f"{found}: not a /grad request (needs 'network' or 'network_id')")
    return doc


@dataclass
class Scenario:
    name: str
    request: dict[str, Any]
    source: str = "builtin"
    protocol: str = "grad"  # one of PROTOCOLS


def build_scenario(spec: str, mlp_file: str | Path = DEFAULT_MLP_FILE) -> Scenario:
    """``tutorial``, ``mlp`` or the path of a JSON /grad body."""
    if spec == "tutorial":
        return Scenario("tutorial", tutorial_request(), "builtin (seed tutorial, get_all)")
    if spec == "oip":
        return Scenario("oip", tutorial_request(), "builtin (seed tutorial, get_all, as OIP v2 infer)", "oip")
    if spec == "umbridge":
        return Scenario("umbridge", umbridge_request(), "builtin (seed tutorial, d(sum out)/dx, as UM-Bridge Gradient)",
                        "umbridge")
    if spec == "mlp":
        req, source = mlp_request(mlp_file)
        return Scenario("mlp", req, source)
    path = find_file(spec)
    if path is None:
        raise ValueError(f"unknown scenario {spec!r}: use tutorial, mlp, oip, umbridge or the path of a JSON /grad body")
    return Scenario(path.stem, load_request(path), str(path))


# --------------------------------------------------------------------------------------------
# Bodies
# --------------------------------------------------------------------------------------------


@dataclass
class PreparedRequest:
    """Exactly what every virtual user posts."""

    body: bytes
    headers: dict[str, str]
    path: str = "/grad"
    method: str = "POST"
    meta: dict[str, Any] = field(default_factory=dict)


def _map_tensors(obj: dict[str, Any], fn) -> dict[str, Any]:
    """A copy of a /grad body with ``fn`` applied to each tensor, visiting them in the order they
    are serialised (dict insertion order): network parameter values, inputs, parameters, sens."""
    out: dict[str, Any] = {}
    for key, value in obj.items():
        if key == "network" and isinstance(value, dict):
            net = dict(value)
            if isinstance(net.get("parameters"), list):
                net["parameters"] = [
                    {**p, "value": fn(p["value"])} if isinstance(p, dict) and is_wire_tensor(p.get("value")) else p
                    for p in net["parameters"]
                ]
            out[key] = net
        elif key in ("inputs", "sens") and isinstance(value, list):
            out[key] = [fn(t) if is_wire_tensor(t) else t for t in value]
        elif key in ("inputs", "parameters") and isinstance(value, dict):
            out[key] = {k: fn(t) if is_wire_tensor(t) else t for k, t in value.items()}
        elif key == "sens" and is_wire_tensor(value):
            out[key] = fn(value)
        else:
            out[key] = value
    return out


def _dumps(obj: Any) -> bytes:
    return orjson.dumps(obj)


def encode_request(request: dict[str, Any], encoding: str) -> PreparedRequest:
    """Serialise a /grad body in ``encoding`` (see the module docstring)."""
    if encoding not in ENCODINGS:
        raise ValueError(f"unknown encoding {encoding!r}: one of {', '.join(ENCODINGS)}")
    req = dict(request)
    req["output_encoding"] = encoding
    if encoding in ("json", "b64"):
        doc = _map_tensors(req, lambda t: to_wire(t, encoding))
        body = _dumps(doc)
        return PreparedRequest(body, {"Content-Type": "application/json"},
                               meta={"encoding": encoding, "bytes": len(body)})
    chunks: list[bytes] = []

    def to_binary(t: dict[str, Any]) -> dict[str, Any]:
        head, raw = raw_bytes(t)
        chunks.append(raw)
        return head

    doc = _map_tensors(req, to_binary)
    head = _dumps(doc)
    body = head + b"".join(chunks)
    return PreparedRequest(
        body,
        {"Content-Type": "application/octet-stream", BINARY_HEADER: str(len(head))},
        meta={"encoding": encoding, "bytes": len(body), "json_bytes": len(head)},
    )


def registration_body(request: dict[str, Any]) -> bytes:
    """The ``POST /networks`` body for a request's inline network (tensors as b64)."""
    if "network" not in request:
        raise ValueError("the request has no inline 'network' to register")
    net = _map_tensors({"network": request["network"]}, lambda t: to_wire(t, "b64"))
    return _dumps(net["network"])


def with_network_id(request: dict[str, Any], network_id: str) -> dict[str, Any]:
    """The same request referring to a registered network instead of carrying it."""
    out = {}
    for key, value in request.items():
        if key == "network":
            out["network_id"] = network_id
        elif key != "network_id":
            out[key] = value
    if "network_id" not in out:
        out = {"network_id": network_id, **out}
    return out


def prepare(request: dict[str, Any], encoding: str, network_id: str | None = None,
            protocol: str = "grad") -> PreparedRequest:
    """The body every user sends: inline network, or ``network_id`` when one is given."""
    if protocol == "oip":
        return oip_infer(request, encoding, network_id)
    if protocol == "umbridge":
        return umbridge_gradient(request, encoding, network_id)
    if network_id is not None:
        request = with_network_id(request, network_id)
    return encode_request(request, encoding)


# --------------------------------------------------------------------------------------------
# The Open Inference Protocol v2 (API.md section 10)
# --------------------------------------------------------------------------------------------

_OIP_NAMES = {ours: oip for oip, ours in OIP_DTYPES.items()}
OIP_ROUTE = "/v2/models/{model}/infer"  # the route label of the server's metrics


def oip_infer(request: dict[str, Any], encoding: str, network_id: str | None) -> PreparedRequest:
    """A /grad body (its inline network gives the names) as an OIP v2 infer request of the
    registered network ``network_id``: inputs named after the network's, ``sens`` as
    ``sens/<output>`` inputs, the flags as ``parameters`` (``weights`` comma-separated);
    ``binary``: every tensor in the binary extension both ways (``binary_data_output``)."""
    if network_id is None:
        raise ValueError("an OIP request is for a registered network: register it first (network_id)")
    if encoding not in ("json", "binary"):
        raise ValueError(f"OIP tensors are json or binary, not {encoding!r}")
    net = request.get("network") or {}
    names = [i["name"] for i in net.get("inputs", [])]
    raw_inputs = request.get("inputs", [])
    named = list(raw_inputs.items()) if isinstance(raw_inputs, dict) else list(zip(names, raw_inputs, strict=True))
    if request.get("sens_param"):
        outputs = net.get("outputs", [])
        outputs = [outputs] if isinstance(outputs, str) else outputs
        sens = request["sens"] if isinstance(request["sens"], list) else [request["sens"]]
        named += [(f"sens/{o}", t) for o, t in zip(outputs, sens, strict=True)]
    chunks: list[bytes] = []
    inputs = []
    for name, obj in named:
        array = decode_tensor(obj)
        head: dict[str, Any] = {"name": name, "datatype": _OIP_NAMES[dtype_name(array.dtype)],
                                "shape": list(array.shape)}
        if encoding == "binary":
            raw = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).tobytes()
            head["parameters"] = {"binary_data_size": len(raw)}
            chunks.append(raw)
        else:
            head["data"] = wire_tensor(array, "json")["data"]
        inputs.append(head)
    parameters: dict[str, Any] = {k: request[k] for k in ("get_all", "get_by_list", "return_value") if request.get(k)}
    if request.get("weights") is not None:
        parameters["weights"] = ",".join(request["weights"])
    parameters["binary_data_output"] = encoding == "binary"
    head_bytes = _dumps({"inputs": inputs, "parameters": parameters})
    headers = {"Content-Type": "application/json"}
    if chunks:
        headers = {"Content-Type": "application/octet-stream", BINARY_HEADER: str(len(head_bytes))}
    body = head_bytes + b"".join(chunks)
    return PreparedRequest(body, headers, path=f"/v2/models/{network_id.removeprefix('sha256:')}/infer",
                           meta={"encoding": encoding, "bytes": len(body), "protocol": "oip", "route": OIP_ROUTE})


# --------------------------------------------------------------------------------------------
# UM-Bridge (API.md section 10)
# --------------------------------------------------------------------------------------------

UMBRIDGE_ROUTE = "/Gradient"  # the route label of the server's metrics


def umbridge_request() -> dict[str, Any]:
    """The seed tutorial with its inputs' shapes declared (a UM-Bridge model must declare them) and
    ``sens`` (ones) as the cotangent of its output: ``/grad`` with these gives what the UM-Bridge
    ``Gradient(0, 0, input, sens)`` gives."""
    req = tutorial_request()
    req["get_all"] = False
    for spec, tensor in zip(req["network"]["inputs"], req["inputs"]):
        spec.update(dtype=tensor["dtype"], shape=tensor["shape"])
    req["sens_param"] = True
    req["sens"] = wire_tensor(np.ones((2, 3), np.float32), "json")
    return req


def umbridge_gradient(request: dict[str, Any], encoding: str, network_id: str | None) -> PreparedRequest:
    """A /grad body with ``sens`` as a UM-Bridge ``POST /Gradient`` (outWrt 0, inWrt 0, the inputs
    and the first ``sens`` flattened row-major) of the registered network ``network_id``."""
    if network_id is None:
        raise ValueError("a UM-Bridge model is a registered network: register it first (network_id)")
    if encoding != "json":
        raise ValueError(f"UM-Bridge vectors are JSON numbers only, not {encoding!r}")
    if request.get("sens") is None:
        raise ValueError("the UM-Bridge scenario needs 'sens': the cotangent of output 0")
    sens = request["sens"][0] if isinstance(request["sens"], list) else request["sens"]
    raw_inputs = request.get("inputs", [])
    inputs = list(raw_inputs.values()) if isinstance(raw_inputs, dict) else list(raw_inputs)
    vectors = [np.ravel(decode_tensor(t)).astype(np.float64).tolist() for t in inputs]
    body = _dumps({"name": network_id.removeprefix("sha256:"), "input": vectors, "outWrt": 0, "inWrt": 0,
                   "sens": np.ravel(decode_tensor(sens)).astype(np.float64).tolist(), "config": {}})
    return PreparedRequest(body, {"Content-Type": "application/json"}, path=UMBRIDGE_ROUTE,
                           meta={"encoding": encoding, "bytes": len(body), "protocol": "umbridge",
                                 "route": UMBRIDGE_ROUTE})
