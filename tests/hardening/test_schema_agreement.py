"""The OpenAPI document and the server accept the same requests (issue 12, findings 6 and 8), and
names have a length cap in both (engine.network.MAX_NAME_CHARS).

Before the fix: a node, input or parameter named ``""`` was valid for the schema and a 422 for the
server; a tensor saying ``binary_data_size`` in an application/json body was valid for the schema
and a 400; names had no cap (100 MB names sat in the caches and the registry)."""

from __future__ import annotations

import copy

import pytest
from hardening_helpers import tutorial_request
from jsonschema import Draft202012Validator

from engine.network import MAX_NAME_CHARS


@pytest.fixture(scope="module")
def served_schema(hard_server):
    with hard_server.client("hardening-key") as c:
        return c.get("/openapi.json").json()


def _valid(schema: dict, path: str, body: dict) -> bool:
    """Whether ``body`` is valid for the application/json request body of ``POST path``."""
    root = {"components": schema["components"],
            **schema["paths"][path]["post"]["requestBody"]["content"]["application/json"]["schema"]}
    return Draft202012Validator(root).is_valid(body)


def _network(name_of: str, name: str) -> dict:
    net = copy.deepcopy(tutorial_request()["network"])
    if name_of == "network":
        net["name"] = name
    elif name_of == "input":
        old = net["inputs"][0]["name"]
        net["inputs"][0]["name"] = name
        for node in net["nodes"]:
            node["inputs"] = [name if i == old else i for i in node["inputs"]]
    elif name_of == "parameter":
        old = net["parameters"][0]["name"]
        net["parameters"][0]["name"] = name
        for node in net["nodes"]:
            node["inputs"] = [name if i == old else i for i in node["inputs"]]
    else:
        old = net["nodes"][0]["name"]
        net["nodes"][0]["name"] = name
        for node in net["nodes"]:
            node["inputs"] = [name if i == old else i for i in node["inputs"]]
        net["outputs"] = name if net["outputs"] == old else net["outputs"]
    return net


@pytest.mark.parametrize("name_of", ["network", "input", "parameter", "node"])
@pytest.mark.parametrize("length", [0, 1, MAX_NAME_CHARS, MAX_NAME_CHARS + 1, 100_000])
def test_names_schema_and_server_agree(hard, served_schema, name_of, length):
    net = _network(name_of, "n" * length)
    in_schema = _valid(served_schema, "/networks", net)
    r = hard.post("/networks", json=net)
    assert in_schema == (r.status_code in (200, 201)), (in_schema, r.status_code, r.text[:300])
    if length > MAX_NAME_CHARS:
        assert r.status_code == 422 and r.json()["error"]["path"].endswith("name"), r.text[:300]
        assert str(MAX_NAME_CHARS) in r.json()["error"]["message"]
    body = {"network": net, "inputs": tutorial_request()["inputs"]}
    g = hard.post("/grad", json=body)
    assert _valid(served_schema, "/grad", body) == (g.status_code == 200), (g.status_code, g.text[:300])


def test_an_unnamed_network_is_valid_for_both(hard, served_schema):
    net = _network("network", "")
    assert _valid(served_schema, "/networks", net)
    assert hard.post("/networks", json=net).status_code in (200, 201)


def test_binary_data_size_in_a_json_body_is_refused_by_both(hard, served_schema):
    body = tutorial_request()
    body["inputs"][0] = {"dtype": "float32", "shape": [2, 3], "binary_data_size": 24}
    assert not _valid(served_schema, "/grad", body)
    assert hard.post("/grad", json=body).status_code == 400
    net = tutorial_request()["network"]
    net["parameters"][0]["value"] = {"dtype": "float32", "shape": [3, 3], "binary_data_size": 36}
    assert not _valid(served_schema, "/networks", net)
    assert hard.post("/networks", json=net).status_code == 400
    # and the binary framing still documents it
    framed = served_schema["paths"]["/grad"]["post"]["requestBody"]["content"]
    assert "application/octet-stream" in framed
    assert "binary_data_size" in served_schema["components"]["schemas"]["Tensor"]["properties"]
