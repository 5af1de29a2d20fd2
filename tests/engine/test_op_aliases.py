"""MindSpore's renamed primitives (engine.ops.catalog.OP_ALIASES): accepted in a node's ``op``,
listed in the catalog under their target, and canonicalized to the catalog name, so the same
network has one id whichever name it was written with."""

from __future__ import annotations

import numpy as np
import pytest

import engine
from engine.ops.catalog import OP_ALIASES


def _net(op: str, inputs: list[str], n_in: int, **attrs) -> dict:
    node = {"name": "out", "op": op, "inputs": inputs}
    if attrs:
        node["attrs"] = attrs
    return {"format": "gradnet/1", "name": "alias", "inputs": [{"name": f"x{i}"} for i in range(n_in)],
            "nodes": [node], "outputs": ["out"]}


def _t(a) -> dict:
    a = np.asarray(a, np.float32)
    return {"dtype": "float32", "shape": list(a.shape), "data": a.reshape(-1).tolist()}


CASES = {
    "TensorAdd": (["x0", "x1"], 2, {}),
    "Gelu": (["x0"], 1, {}),
    "Pack": (["x0", "x1"], 2, {"axis": 1}),
    "GatherV2": (["x0", "x1"], 2, {"axis": 1}),
}


def test_every_alias_has_a_case_and_a_target():
    assert set(CASES) == set(OP_ALIASES)
    for alias, target in OP_ALIASES.items():
        assert target in engine.OPS and alias not in engine.OPS


def test_catalog_lists_aliases_under_their_target():
    by_name = {op["name"]: op for op in engine.catalog()}
    assert all(isinstance(op["aliases"], list) for op in by_name.values())
    for alias, target in OP_ALIASES.items():
        assert alias in by_name[target]["aliases"]
        assert alias not in by_name
    assert by_name["Mul"]["aliases"] == []


@pytest.mark.parametrize("alias", sorted(OP_ALIASES))
def test_alias_is_the_same_network(alias):
    inputs, n_in, attrs = CASES[alias]
    target = OP_ALIASES[alias]
    a = engine.parse_network(_net(alias, inputs, n_in, **attrs))
    b = engine.parse_network(_net(target, inputs, n_in, **attrs))
    assert a.id == b.id
    assert [n.op.name for n in a.nodes] == [target]
    assert a.to_json()["nodes"][0]["op"] == target  # GET /networks/{id} reads back the catalog name


@pytest.mark.parametrize("alias", sorted(OP_ALIASES))
def test_alias_gives_the_target_gradients(alias):
    inputs, n_in, attrs = CASES[alias]
    rng = np.random.default_rng(0)
    xs = [_t(rng.uniform(-2, 2, (2, 3)))]
    if n_in == 2:
        xs.append({"dtype": "int32", "shape": [2], "data": [2, 0]} if alias == "GatherV2"
                  else _t(rng.uniform(-2, 2, (2, 3))))
    results = []
    for op in (alias, OP_ALIASES[alias]):
        r = engine.run_request({"network": _net(op, inputs, n_in, **attrs), "inputs": xs, "get_all": True},
                               return_value=True)
        results.append(r)
    for ga, gb in zip(results[0].gradients, results[1].gradients):
        np.testing.assert_array_equal(np.asarray(ga), np.asarray(gb))
    np.testing.assert_array_equal(np.asarray(results[0].value[0]), np.asarray(results[1].value[0]))


def test_unknown_op_hint_names_aliases_too():
    with pytest.raises(engine.UnknownOpError) as e:
        engine.parse_network(_net("TensorAd", ["x0", "x1"], 2))
    assert "TensorAdd" in str(e.value)
