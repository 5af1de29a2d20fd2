"""gradserve_client.Graph: a network written the way a MindSpore Cell reads gives the gradnet/1
document by hand, and the same network id through a real server."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

from gradserve_client import GradClient, Graph
from tests.service.test_readme import BLOCKS, _after, _run
from tests.support import ROOT
from tests.support.api_contract import array, assert_close
from tests.support.servers import KEY_A


@pytest.fixture
def gs(live_server):
    with GradClient(live_server.url, api_key=KEY_A) as client:
        yield client


def tutorial_net() -> dict:
    g = Graph("tutorial-net")
    x, y = g.input("x"), g.input("y")
    z = g.parameter("z", np.array([1.0], np.float32))
    g.output(g.MatMul(g.Mul(x, z, name="xz"), y, name="out"))
    return g.build()


def test_builds_exactly_the_tutorial_network(tutorial):
    assert tutorial_net() == tutorial[0]["request"]["network"]
    assert json.loads(json.dumps(tutorial_net())) == tutorial_net()  # plain JSON, no NumPy inside


def test_the_tutorial_network_has_the_tutorial_id_on_a_server(gs, tutorial):
    by_hand = gs.register(tutorial[0]["request"]["network"])
    built = gs.register(tutorial_net())
    assert built["network_id"] == by_hand["network_id"]
    built_b64 = gs.register(tutorial_net_b64())
    assert built_b64["network_id"] == by_hand["network_id"]  # the id ignores the tensor encoding
    same = [case for case in tutorial if case["request"]["network"] == tutorial[0]["request"]["network"]]
    assert len(same) == 5
    for case in same:
        request = case["request"]
        kwargs = {k: request[k] for k in ("get_all", "get_by_list", "sens_param", "weights") if k in request}
        if "sens" in request:
            kwargs["sens"] = array(request["sens"])
        result = gs.grad(built["network_id"], [array(t) for t in request["inputs"]], **kwargs)
        assert_close(result.gradients, case["expected_gradients"])


def tutorial_net_b64() -> dict:  # noqa: N802 - the tutorial net, parameters in base64
    g = Graph("tutorial-net")
    x, y = g.inputs("x", "y")
    g.output(g.MatMul(g.Mul(x, g.parameter("z", np.array([1.0], np.float32)), name="xz"), y, name="out"))
    return g.build(encoding="b64")


def multi_output_net() -> dict:
    """construct(x) returns (x[0] * w * 2, sum(x[1] ** 2) + b): Split, operators, constants, attrs."""
    g = Graph("two-heads")
    x = g.input("x", dtype="float32", shape=[2, None])
    w = g.parameter("w", np.array([0.5, -1.0, 2.0], np.float32))
    b = g.parameter("b", np.float32(3.0), requires_grad=False)
    parts = g.Split(x, axis=0, output_num=2, name="split")
    head = parts[0] * w * 2.0
    tail = g.ReduceSum(parts[1] ** 2, axis=[], keep_dims=False) + b
    g.output(head, tail)
    return g.build()


def test_a_multi_output_network(gs):
    doc = multi_output_net()
    assert doc["outputs"] == ["Mul_1", "Add_0"]
    assert doc["nodes"][0] == {"name": "split", "op": "Split", "inputs": ["x"], "attrs": {"axis": 0, "output_num": 2}}
    assert doc["nodes"][1]["inputs"] == ["split:0", "w"] and doc["nodes"][2]["inputs"] == ["Mul_0", 2.0]
    assert doc["parameters"][1] == {"name": "b", "value": {"dtype": "float32", "shape": [], "data": [3.0]},
                                    "requires_grad": False}
    network_id = gs.register(doc)["network_id"]
    x = np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]], np.float32)
    result = gs.grad(network_id, [x], get_all=True, get_by_list=True, return_value=True)
    w = np.array([0.5, -1.0, 2.0], np.float32)
    np.testing.assert_allclose(result.value[0], x[:1] * w * 2.0, rtol=1e-6)
    np.testing.assert_allclose(result.value[1], np.sum(x[1] ** 2) + 3.0, rtol=1e-6)
    (dx,), (dw,) = result.gradients  # ones for both outputs: the two heads' gradients add up
    np.testing.assert_allclose(dx, np.stack([w * 2.0, 2 * x[1]]), rtol=1e-6)
    np.testing.assert_allclose(dw, x[0] * 2.0, rtol=1e-6)
    assert result.gradient_names == [["x"], ["w"]]


def test_constants_and_operators():
    g = Graph("ops")
    x = g.input("x")
    y = 1.0 - x / np.array([2.0, 4.0], np.float32) @ x + (-x)
    g.output(y)
    nodes = {n["name"]: n for n in g.build()["nodes"]}
    assert [n["op"] for n in nodes.values()] == ["RealDiv", "MatMul", "Sub", "Neg", "Add"]
    assert nodes["RealDiv_0"]["inputs"] == ["x", {"const": {"dtype": "float32", "shape": [2], "data": [2.0, 4.0]}}]
    assert nodes["Sub_0"]["inputs"] == [1.0, "MatMul_0"]


def test_mistakes_are_refused_where_they_are_made():
    g = Graph("bad")
    x = g.input("x")
    with pytest.raises(ValueError, match="already the name"):
        g.parameter("x", np.zeros(1, np.float32))
    with pytest.raises(ValueError, match="reserved"):
        g.input("a:0")
    with pytest.raises(ValueError, match="primitive name"):
        g.op("matmul", x, x)
    with pytest.raises(AttributeError):
        g.matmul  # noqa: B018 - lower case is not a primitive
    with pytest.raises(TypeError, match="not a node output that can be indexed"):
        x[0]  # noqa: B018
    other = Graph("other").input("y")
    with pytest.raises(ValueError, match="another graph"):
        g.Add(x, other)
    with pytest.raises(TypeError, match="graph value"):
        g.Add(x, "x")  # a name string is not a value: it would be read as a reference
    with pytest.raises(ValueError, match="no outputs"):
        g.build()


def test_readme_builder_snippet_is_the_example_and_prints_as_shown(live_server):
    (snippet,) = [text for lang, text in BLOCKS if lang == "python" and text.startswith('g = Graph("tutorial-net")')]
    assert len(snippet.strip().splitlines()) == 5
    assert snippet in (ROOT / "examples" / "graph_builder.py").read_text()
    (shown,) = _after(".venv/bin/python examples/graph_builder.py")
    assert _run([sys.executable, "examples/graph_builder.py"], live_server.url) == shown
