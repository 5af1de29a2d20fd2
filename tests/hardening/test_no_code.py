"""No code from clients (issue item 6): a network is data. Pickles are bytes, op names are looked up
in the catalog (never resolved as Python), attrs are typed values (never evaluated), dtypes come
from a fixed list, names are opaque strings. Every attempt is a 4xx (or, for bytes that happen to
be numbers of the declared dtype, a normal 200) and no marker file is ever created."""

from __future__ import annotations

import base64
import os
import pickle
from pathlib import Path

import numpy as np
import orjson
import pytest
from hardening_helpers import HARD_KEY, assert_healthy, tutorial_request

from tests.support.api_contract import decode_response, error_of


class _Payload:
    """Unpickling this runs ``touch <marker>``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture
def marker(tmp_path: Path) -> Path:
    path = tmp_path / "pwned"
    # The payload works: unpickled here, it creates the marker (then it is removed again).
    pickle.loads(pickle.dumps(_Payload(path)))
    assert path.exists()
    path.unlink()
    return path


def _sum_network() -> dict:
    """x (any dtype) -> Cast float32 -> ReduceSum: accepts any bytes as uint8."""
    return {
        "format": "gradnet/1", "name": "bytes-sum", "inputs": [{"name": "x"}],
        "nodes": [{"name": "f", "op": "Cast", "inputs": ["x"], "attrs": {"dtype": "float32"}},
                  {"name": "s", "op": "ReduceSum", "inputs": ["f"]}],
        "outputs": ["s"],
    }


def test_a_pickle_is_only_bytes(hard, hard_server, marker):
    payload = pickle.dumps(_Payload(marker), protocol=pickle.HIGHEST_PROTOCOL)
    as_b64 = base64.b64encode(payload).decode()
    # as uint8 numbers: decoded and computed (an integer input gets a zero gradient)
    tensor = {"dtype": "uint8", "shape": [len(payload)], "b64": as_b64}
    r = hard.post("/grad", json={"network": _sum_network(), "inputs": [tensor], "return_value": True,
                                 "output_encoding": "b64"})
    assert r.status_code == 200, r.text
    answer = decode_response(r)
    assert answer["gradients"].dtype == np.uint8 and not answer["gradients"].any()
    assert float(answer["value"][0]) == float(sum(payload))
    # as float32 of a size that does not match: a size error, with its path
    err = error_of(hard.post("/grad", json={"network": _sum_network(), "inputs": [
        {"dtype": "float32", "shape": [3], "b64": as_b64}]}), 422, "invalid_tensor")
    assert err["path"] == "inputs[0].b64"
    # in the binary framing
    json_part = orjson.dumps({"network": _sum_network(), "inputs": [
        {"dtype": "uint8", "shape": [len(payload)], "binary_data_size": len(payload)}]})
    r = hard.post("/grad", content=json_part + payload,
                  headers={"Inference-Header-Content-Length": str(len(json_part)),
                           "Content-Type": "application/octet-stream"})
    assert r.status_code == 200, r.text
    # as a parameter of a registered network: stored as bytes, read back as the same bytes
    network = _sum_network()
    network["parameters"] = [{"name": "p", "value": tensor}]
    r = hard.post("/networks", json=network)
    assert r.status_code in (200, 201), r.text
    stored = hard.get(f"/networks/{r.json()['network_id']}").json()
    assert base64.b64decode(stored["parameters"][0]["value"]["b64"]) == payload
    # the raw pickle as the whole body, under any content type: not JSON, 400
    for content_type in ("application/python-pickle", "application/octet-stream", "application/json"):
        err = error_of(hard.post("/grad", content=payload, headers={"Content-Type": content_type}), 400,
                       "bad_request")
        assert err["path"] == "body"
    assert not marker.exists(), "a client's pickle was unpickled"
    assert_healthy(hard_server, HARD_KEY)


@pytest.mark.parametrize("op", [
    "__import__", "os.system", "eval", "exec", "builtins.eval", "getattr", "__class__", "Add.__class__",
    "jax.numpy.add", "numpy.load", "subprocess.Popen", "__builtins__", "", "MatMul\x00", "matmul",
])
def test_op_names_are_never_resolved_as_python(hard, hard_server, op):
    request = tutorial_request()
    request["network"]["nodes"][0]["op"] = op
    err = error_of(hard.post("/grad", json=request), 422, "unknown_op")
    assert err["path"] == "network.nodes[0].op"
    err = error_of(hard.post("/networks", json=request["network"]), 422, "unknown_op")
    assert err["path"] == "nodes[0].op"
    assert_healthy(hard_server, HARD_KEY)


@pytest.mark.parametrize(("op", "inputs", "attr"), [
    ("ReduceSum", ["out"], "axis"),
    ("Reshape", ["out"], "shape"),
    ("Cast", ["out"], "dtype"),
    ("Transpose", ["out"], "input_perm"),
    ("StridedSlice", ["out"], "begin"),
    ("Softmax", ["out"], "axis"),
    ("OneHot", ["out"], "depth"),
    ("MaxPool", ["out"], "pad_mode"),
    ("MatMul", ["xz", "y"], "transpose_a"),
])
def test_attrs_are_never_evaluated(hard, hard_server, marker, op, inputs, attr):
    expressions = [
        f"__import__('os').system('touch {marker}')",
        f"eval(\"__import__('os').system('touch {marker}')\")",
        f"{{0.__class__.__init__.__globals__}}; touch {marker}",
        f"$(touch {marker})",
        {"__reduce__": ["os.system", [f"touch {marker}"]]},
    ]
    for expression in expressions:
        request = tutorial_request()
        node = {"name": "evil", "op": op, "inputs": inputs, "attrs": {attr: expression}}
        request["network"]["nodes"].append(node)
        request["network"]["outputs"] = ["evil"]
        err = error_of(hard.post("/grad", json=request), 422, "bad_attr")
        assert err["path"] == f"network.nodes[2].attrs.{attr}", err
    assert not marker.exists(), "an attr was evaluated"
    assert_healthy(hard_server, HARD_KEY)


@pytest.mark.parametrize("dtype", ["object", "O", "|O", "<U8", "V8", "S4", "float32; import os", "np.float32",
                                   "numpy.float32", "complex64", "float128", "datetime64", "", None, 7, ["float32"]])
def test_dtypes_outside_the_list(hard, hard_server, dtype):
    request = tutorial_request()
    request["inputs"][0]["dtype"] = dtype
    err = error_of(hard.post("/grad", json=request), 422, "invalid_tensor")
    assert err["path"] in ("inputs[0].dtype", "inputs[0]"), err
    # as an input constraint of the network, and as Cast's dtype attr
    request = tutorial_request()
    request["network"]["inputs"][0]["dtype"] = dtype
    if dtype is not None:
        err = error_of(hard.post("/networks", json=request["network"]), 422)
        assert err["path"] == "inputs[0].dtype", err
    request = tutorial_request()
    request["network"]["nodes"].append({"name": "c", "op": "Cast", "inputs": ["out"], "attrs": {"dtype": dtype}})
    request["network"]["outputs"] = ["c"]
    err = error_of(hard.post("/grad", json=request), 422, "bad_attr")
    assert err["path"] == "network.nodes[2].attrs.dtype"
    assert_healthy(hard_server, HARD_KEY)


@pytest.mark.parametrize("name", [
    "{0.__class__.__init__.__globals__}", "{network_id}", "%s%s%s%n", "%(secret)s", "${jndi:ldap://x/a}",
    "{{7*7}}", "__import__('os').system('touch /tmp/gradserve-pwned')", "\u202egnp.exe", "a\nb\tc\x00d",
])
def test_names_with_format_strings_are_opaque_data(hard, hard_server, marker, name):
    """A name is a string the service stores and echoes, never formats or runs: the network
    registers (201/200), reads back and lists with the name byte for byte, and an error that
    names a node quotes it verbatim. Nothing here is an error, so nothing is a 5xx."""
    network = tutorial_request()["network"]
    network["name"] = name + f" {marker}"
    r = hard.post("/networks", json=network)
    assert r.status_code in (200, 201), r.text
    network_id = r.json()["network_id"]
    assert r.json()["name"] == network["name"]
    assert hard.get(f"/networks/{network_id}").json()["name"] == network["name"]
    assert network["name"] in [n["name"] for n in hard.get("/networks").json()["networks"]]
    # as a node name: computed like any other name; in an error message, quoted verbatim
    request = tutorial_request()
    request["network"]["nodes"][0]["name"] = name
    request["network"]["nodes"][1]["inputs"] = [name, "y"]
    assert hard.post("/grad", json=request).status_code == 200
    request["network"]["nodes"][0]["inputs"] = ["x", "out"]
    err = error_of(hard.post("/grad", json=request), 422, "cycle")
    assert repr(name)[1:-1] in err["message"] or name in err["message"], err
    assert hard.delete(f"/networks/{network_id}").status_code == 204
    assert not Path("/tmp/gradserve-pwned").exists() and not marker.exists()
    assert_healthy(hard_server, HARD_KEY)
