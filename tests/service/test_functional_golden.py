"""Every case of MindSpore 2.10's golden files for the functional routes
(tests/golden/mindspore/functional/*.json, written by tools/mindspore_functional_oracle.py) sent to
a live server: each answer field equals MindSpore's within the case's rtol/atol, with the same
nesting, dtypes and shapes, and no field MindSpore's answer lacks. Then the bad requests of each
route over HTTP: 422 with the field named."""

from __future__ import annotations

import json
from typing import Any

import httpx
import numpy as np
import pytest

import engine
from tests.support import ROOT

GOLDEN = sorted((ROOT / "tests" / "golden" / "mindspore" / "functional").glob("*.json"))
CASES = [case for path in GOLDEN for case in json.loads(path.read_text())["cases"]]
#: fields every answer has besides MindSpore's (API.md section 7), and /grad's names
OURS = {"network_id", "timing_ms", "gradient_names"}


def _compare(got: Any, expected: Any, rtol: float, atol: float, where: str) -> None:
    if isinstance(expected, dict) and "dtype" in expected:
        assert isinstance(got, dict) and "dtype" in got, f"{where}: expected a tensor, got {str(got)[:200]}"
        want, have = engine.decode_tensor(expected, where), engine.decode_tensor(got, where)
        assert (have.dtype, have.shape) == (want.dtype, want.shape), f"{where}: {have.dtype}{have.shape} != {want.dtype}{want.shape}"
        np.testing.assert_allclose(have, want, rtol=rtol, atol=atol, err_msg=where)
    elif isinstance(expected, list):
        assert isinstance(got, list) and len(got) == len(expected), f"{where}: expected a list of {len(expected)}, got {str(got)[:200]}"
        for i, (g, e) in enumerate(zip(got, expected)):
            _compare(g, e, rtol, atol, f"{where}[{i}]")
    else:
        assert got == expected, f"{where}: {got!r} != {expected!r}"


def test_there_are_golden_cases_for_every_route() -> None:
    assert {case["route"] for case in CASES} >= {"/grad", "/jvp", "/vjp", "/jacobian", "/hvp"}


@pytest.mark.parametrize("case", CASES, ids=[c["id"] for c in CASES])
def test_the_server_answers_as_mindspore(client: httpx.Client, case: dict[str, Any]) -> None:
    r = client.post(case["route"], json=case["request"])
    assert r.status_code == 200, r.text[:2000]
    body = r.json()
    assert set(body) - OURS == set(case["expected"]), f"fields {sorted(body)} vs MindSpore's {sorted(case['expected'])}"
    for field, expected in case["expected"].items():
        _compare(body[field], expected, case["rtol"], case["atol"], field)


NET = {
    "format": "gradnet/1", "name": "two-out", "inputs": [{"name": "x"}, {"name": "y"}],
    "parameters": [{"name": "w", "value": {"dtype": "float32", "shape": [3], "data": [1, 2, 3]}}],
    "nodes": [{"name": "xw", "op": "Mul", "inputs": ["x", "w"]}, {"name": "o0", "op": "Mul", "inputs": ["xw", "y"]},
              {"name": "o1", "op": "ReduceSum", "inputs": ["o0"], "attrs": {"axis": [1], "keep_dims": False}}],
    "outputs": ["o0", "o1"],
}
T = {"dtype": "float32", "shape": [2, 3], "data": [0.5] * 6}


def _t(*shape: int, dtype: str = "float32") -> dict[str, Any]:
    return {"dtype": dtype, "shape": list(shape), "data": [0.25] * int(np.prod(shape))}


@pytest.mark.parametrize(("route", "fields", "path"), [
    ("/grad", {"get_all": True, "grad_position": 0}, "get_all"),
    ("/grad", {"grad_position": 2}, "grad_position"),
    ("/grad", {"grad_position": 0, "per_example_axes": [0, 3]}, "per_example_axes[1]"),
    ("/jvp", {"tangents": [T]}, "tangents"),
    ("/jvp", {"tangents": [T, _t(3, 2)]}, "tangents[1]"),
    ("/jvp", {"tangents": [T, _t(2, 3, dtype="float64")]}, "tangents[1]"),
    ("/vjp", {"cotangents": [T, _t(3)]}, "cotangents[1]"),
    ("/vjp", {"cotangents": [_t(4, 2, 3), _t(5, 2)], "batched": True}, "cotangents[1]"),
    ("/hvp", {"vectors": T}, "network.outputs"),
    ("/jacobian", {"mode": "both"}, "mode"),
])
def test_bad_requests_are_422_naming_the_field(client: httpx.Client, route: str, fields: dict[str, Any],
                                               path: str) -> None:
    r = client.post(route, json={"network": NET, "inputs": [T, T], **fields})
    assert r.status_code == 422, r.text
    error = r.json()["error"]
    assert error["path"] == path, error
    assert error["message"]


def test_other_methods_on_a_transform_route_are_405(client: httpx.Client) -> None:
    r = client.get("/jvp")
    assert r.status_code == 405 and r.headers["allow"] == "POST"
