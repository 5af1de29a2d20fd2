"""API.md section 6: constants as node inputs (a JSON number takes the dtype of the node's tensor
operand; {"const": tensor} has its own), no gradient, part of the network's id."""

from __future__ import annotations

import numpy as np
import pytest

import engine


def _net(*inputs, op="Mul"):
    return {"format": "gradnet/1", "name": "c", "inputs": [{"name": "x"}],
            "nodes": [{"name": "out", "op": op, "inputs": list(inputs)}], "outputs": ["out"]}


@pytest.fixture(scope="module")
def eng() -> engine.Engine:
    return engine.Engine()


def test_a_number_takes_the_tensor_operands_dtype(eng: engine.Engine) -> None:
    x = np.array([1.0, 2.0], np.float32)
    result = eng.grad(engine.parse_network(_net("x", 2.5)), [x], return_value=True)
    assert result.value[0].dtype == np.float32
    np.testing.assert_array_equal(result.value[0], [2.5, 5.0])
    np.testing.assert_array_equal(result.gradients, [2.5, 2.5])
    left = eng.grad(engine.parse_network(_net(3, "x", op="Sub")), [x], return_value=True)
    np.testing.assert_array_equal(left.value[0], [2.0, 1.0])
    np.testing.assert_array_equal(left.gradients, [-1.0, -1.0])


def test_a_const_tensor_keeps_its_dtype_and_shape(eng: engine.Engine) -> None:
    c = {"const": {"dtype": "float64", "shape": [2], "data": [1.0, -1.0]}}
    result = eng.grad(engine.parse_network(_net("x", c)), [np.ones(2, np.float64)], return_value=True)
    np.testing.assert_array_equal(result.gradients, [1.0, -1.0])


def test_constants_are_part_of_the_id_whatever_their_encoding() -> None:
    two, three = engine.parse_network(_net("x", 2.0)), engine.parse_network(_net("x", 3.0))
    assert two.id != three.id
    as_json = engine.parse_network(_net("x", {"const": {"dtype": "float32", "shape": [1], "data": [2.0]}}))
    as_b64 = engine.parse_network(_net("x", {"const": engine.encode_tensor(np.array([2.0], np.float32), "b64")}))
    assert as_json.id == as_b64.id != two.id
    again = engine.parse_network(as_json.to_json("b64"))  # read back, parsed again: the same network
    assert again.id == as_json.id


@pytest.mark.parametrize(("bad", "words"), [
    (True, "a number"),
    ({"const": {"dtype": "float32", "shape": [1], "data": [1.0]}, "extra": 1}, "nothing else"),
    ({"value": 1}, "nothing else"),
])
def test_bad_constants_are_refused_with_their_path(bad, words) -> None:
    with pytest.raises(engine.NetworkError) as info:
        engine.parse_network(_net("x", bad))
    assert info.value.path == "nodes[0].inputs[1]" and words in info.value.message
