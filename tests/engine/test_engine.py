"""GradOperation semantics through :class:`engine.Engine`, beyond the tutorial's eight cases.

The main network is ``out = x * w + sin(y)`` (x, y: [2, 3]; w: [3]), whose gradients for a
cotangent ``S`` are known in closed form: ``dx = S * w``, ``dy = S * cos(y)``, ``dw = sum(S * x, 0)``.
"""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import time
from pathlib import Path

import jax
import ml_dtypes
import numpy as np
import pytest

from engine import (
    OPS,
    ArgumentError,
    DTypeError,
    Engine,
    GradnetError,
    SensError,
    ShapeError,
    TooLargeError,
    parse_network,
)

X = np.array([[0.5, -1.0, 2.0], [1.5, 0.25, -0.75]], np.float32)
Y = np.array([[0.1, 0.2, 0.3], [-0.4, 1.1, 2.2]], np.float32)
W = np.array([2.0, -3.0, 0.5], np.float32)
B = np.array([0.1, 0.2, 0.3], np.float32)
S = np.array([[1.0, 2.0, -1.0], [0.5, -2.0, 3.0]], np.float32)


def tensor(a) -> dict:
    a = np.asarray(a)
    return {"dtype": str(a.dtype), "shape": list(a.shape), "data": a.reshape(-1).tolist()}


def network(*, inputs=("x", "y"), params=(("w", W, True),), nodes=None, outputs=("out",), specs=None):
    nodes = nodes or [
        {"name": "xw", "op": "Mul", "inputs": ["x", "w"]},
        {"name": "s", "op": "Sin", "inputs": ["y"]},
        {"name": "out", "op": "Add", "inputs": ["xw", "s"]},
    ]
    return parse_network({
        "format": "gradnet/1",
        "inputs": specs or [{"name": n} for n in inputs],
        "parameters": [{"name": n, "value": tensor(v), "requires_grad": g} for n, v, g in params],
        "nodes": nodes,
        "outputs": list(outputs),
    })


def with_bias(trainable=True):
    return network(
        params=(("w", W, True), ("b", B, trainable)),
        nodes=[
            {"name": "xw", "op": "Mul", "inputs": ["x", "w"]},
            {"name": "s", "op": "Sin", "inputs": ["y"]},
            {"name": "h", "op": "Add", "inputs": ["xw", "s"]},
            {"name": "out", "op": "Add", "inputs": ["h", "b"]},
        ],
    )


TUTORIAL = {
    "format": "gradnet/1",
    "inputs": [{"name": "x"}, {"name": "y"}],
    "parameters": [{"name": "z", "value": {"dtype": "float32", "shape": [1], "data": [1.0]}}],
    "nodes": [
        {"name": "xz", "op": "Mul", "inputs": ["x", "z"]},
        {"name": "out", "op": "MatMul", "inputs": ["xz", "y"]},
    ],
    "outputs": ["out"],
}
TX = np.array([[0.8, 0.6, 0.2], [1.8, 1.3, 1.1]], np.float32)
TY = np.array([[0.11, 3.3, 1.1], [1.1, 0.2, 1.4], [1.1, 2.2, 0.3]], np.float32)


@pytest.fixture(scope="module")
def eng() -> Engine:
    return Engine()


def close(got, want, *, dtype=np.float32, rtol=1e-5, atol=1e-6):
    got = np.asarray(got)
    assert got.dtype == np.dtype(dtype), f"{got.dtype} != {np.dtype(dtype)}"
    assert got.shape == np.shape(want)
    np.testing.assert_allclose(got.astype(np.float64), np.asarray(want, np.float64), rtol=rtol, atol=atol)


def grad_error(cls, fn, *args, where, code=None, **kwargs) -> GradnetError:
    with pytest.raises(GradnetError) as info:
        fn(*args, **kwargs)
    err = info.value
    assert type(err) is cls, f"{type(err).__name__}: {err}"
    assert err.path == where, str(err)
    if code is not None:
        assert err.code == code
    return err


# -- the flags -----------------------------------------------------------------------------------


@pytest.mark.parametrize("get_all, get_by_list, sens_param", list(itertools.product([False, True], repeat=3)))
def test_flag_combinations(eng, get_all, get_by_list, sens_param):
    cot = S if sens_param else np.ones_like(S)
    dx, dy, dw = cot * W, cot * np.cos(Y), (cot * X).sum(0)
    r = eng.grad(network(), [X, Y], get_all=get_all, get_by_list=get_by_list, sens_param=sens_param,
                 sens=S if sens_param else None)
    if get_all and get_by_list:
        assert r.gradient_names == [["x", "y"], ["w"]]
        (gx, gy), (gw,) = r.gradients
        close(gx, dx), close(gy, dy), close(gw, dw)
    elif get_all:
        assert r.gradient_names == ["x", "y"]
        assert isinstance(r.gradients, list) and len(r.gradients) == 2
        close(r.gradients[0], dx), close(r.gradients[1], dy)
    elif get_by_list:
        assert r.gradient_names == ["w"]
        assert isinstance(r.gradients, list) and len(r.gradients) == 1
        close(r.gradients[0], dw)
    else:
        assert r.gradient_names == "x"
        assert isinstance(r.gradients, np.ndarray)
        close(r.gradients, dx)
    assert r.value is None


def test_get_all_with_one_input_is_a_list_of_one(eng):
    net = network(inputs=("x",), nodes=[{"name": "out", "op": "Mul", "inputs": ["x", "w"]}])
    r = eng.grad(net, [X], get_all=True)
    assert r.gradient_names == ["x"] and len(r.gradients) == 1
    close(r.gradients[0], np.broadcast_to(W, X.shape))


def test_gradients_come_back_as_numpy(eng):
    r = eng.grad(network(), [X, Y], get_all=True, get_by_list=True)
    for g in [*r.gradients[0], *r.gradients[1]]:
        assert type(g) is np.ndarray


# -- weights -------------------------------------------------------------------------------------


def test_default_weights_are_trainable_params_in_declaration_order(eng):
    r = eng.grad(with_bias(), [X, Y], get_by_list=True)
    assert r.gradient_names == ["w", "b"]
    close(r.gradients[0], X.sum(0)), close(r.gradients[1], [2.0, 2.0, 2.0])


def test_explicit_weights_order(eng):
    r = eng.grad(with_bias(), [X, Y], get_by_list=True, weights=["b", "w"])
    assert r.gradient_names == ["b", "w"]
    close(r.gradients[0], [2.0, 2.0, 2.0]), close(r.gradients[1], X.sum(0))
    r = eng.grad(with_bias(), [X, Y], get_all=True, get_by_list=True, weights=["b"])
    assert r.gradient_names == [["x", "y"], ["b"]]
    close(r.gradients[1][0], [2.0, 2.0, 2.0])


def test_frozen_parameter_named_in_weights_gets_zeros(eng):
    net = with_bias(trainable=False)
    r = eng.grad(net, [X, Y], get_by_list=True)
    assert r.gradient_names == ["w"]
    r = eng.grad(net, [X, Y], get_by_list=True, weights=["w", "b"])
    assert r.gradient_names == ["w", "b"]
    close(r.gradients[0], X.sum(0)), close(r.gradients[1], np.zeros(3))


def test_no_trainable_params_with_get_by_list(eng):
    r = eng.grad(with_bias(trainable=False), [X, Y], get_by_list=True, weights=[])
    assert r.gradients == [] and r.gradient_names == []
    net = network(params=(("w", W, False),))
    r = eng.grad(net, [X, Y], get_by_list=True)
    assert r.gradients == [] and r.gradient_names == []
    r = eng.grad(net, [X, Y], get_all=True, get_by_list=True)
    assert r.gradient_names == [["x", "y"], []] and r.gradients[1] == []


def test_unknown_weight(eng):
    err = grad_error(ArgumentError, eng.grad, network(), [X, Y], get_by_list=True, weights=["w", "q"],
                     where="weights[1]", code="bad_argument")
    assert "'q'" in err.message


def test_weights_without_get_by_list(eng):
    grad_error(ArgumentError, eng.grad, network(), [X, Y], weights=["w"], where="weights")


def test_no_flags_needs_an_input(eng):
    net = parse_network({
        "format": "gradnet/1", "inputs": [],
        "parameters": [{"name": "w", "value": tensor(W)}],
        "nodes": [{"name": "out", "op": "Square", "inputs": ["w"]}], "outputs": "out",
    })
    grad_error(ArgumentError, eng.grad, net, [], where="inputs")
    close(eng.grad(net, [], get_by_list=True).gradients[0], 2 * W)


# -- sens ----------------------------------------------------------------------------------------

S2 = np.array([[0.0, 1.0, 2.0], [3.0, -1.0, 0.5]], np.float32)


def two_outputs():
    return network(outputs=("xw", "s"))


def test_sens_with_tuple_outputs(eng):
    r = eng.grad(two_outputs(), [X, Y], get_all=True, get_by_list=True, sens_param=True, sens=[S, S2])
    (gx, gy), (gw,) = r.gradients
    close(gx, S * W), close(gy, S2 * np.cos(Y)), close(gw, (S * X).sum(0))
    r = eng.grad(two_outputs(), [X, Y], sens_param=True, sens=(S, S2))  # a tuple works as a list
    close(r.gradients, S * W)


def test_sens_as_a_list_of_one_for_a_single_output(eng):
    r = eng.grad(network(), [X, Y], sens_param=True, sens=[S])
    close(r.gradients, S * W)


def test_missing_sens(eng):
    grad_error(SensError, eng.grad, network(), [X, Y], sens_param=True, where="sens", code="bad_sens")


@pytest.mark.parametrize("sens", [[S], [S, S2, S], S])
def test_sens_of_the_wrong_count(eng, sens):
    err = grad_error(SensError, eng.grad, two_outputs(), [X, Y], sens_param=True, sens=sens, where="sens", code="bad_sens")
    assert "2 output" in err.message


def test_sens_of_the_wrong_shape(eng):
    err = grad_error(SensError, eng.grad, two_outputs(), [X, Y], sens_param=True, sens=[S, S2.T], where="sens[1]", code="bad_sens")
    assert "[2, 3]" in err.message and "[3, 2]" in err.message
    grad_error(SensError, eng.grad, network(), [X, Y], sens_param=True, sens=S[0], where="sens", code="bad_sens")
    grad_error(SensError, eng.grad, network(), [X, Y], sens_param=True, sens=[S[:1]], where="sens[0]", code="bad_sens")


def test_sens_of_the_wrong_dtype(eng):
    err = grad_error(SensError, eng.grad, two_outputs(), [X, Y], sens_param=True, sens=[S, S2.astype(np.float64)],
                     where="sens[1]", code="bad_sens")
    assert "float32" in err.message and "float64" in err.message
    grad_error(SensError, eng.grad, network(), [X, Y], sens_param=True, sens=S.astype(np.float16), where="sens", code="bad_sens")


def test_sens_without_sens_param(eng):
    grad_error(SensError, eng.grad, network(), [X, Y], sens=S, where="sens", code="bad_sens")


def test_tuple_output_without_sens_adds_up(eng):
    net = network(nodes=[
        {"name": "a", "op": "Mul", "inputs": ["x", "w"]},
        {"name": "b", "op": "Mul", "inputs": ["x", "x"]},
        {"name": "c", "op": "Mul", "inputs": ["x", "y"]},
    ], outputs=("a", "b", "c"))
    r = eng.grad(net, [X, Y], get_all=True, get_by_list=True)
    (gx, gy), (gw,) = r.gradients
    close(gx, W + 2 * X + Y), close(gy, X), close(gw, X.sum(0))


# -- inputs that get zeros -----------------------------------------------------------------------


def test_unused_input_gets_zeros(eng):
    u = np.arange(4, dtype=np.float64).reshape(2, 2)
    r = eng.grad(network(inputs=("x", "y", "u")), [X, Y, u], get_all=True)
    assert r.gradient_names == ["x", "y", "u"]
    close(r.gradients[2], np.zeros((2, 2)), dtype=np.float64)


def test_unused_first_input_without_flags(eng):
    net = network(nodes=[{"name": "out", "op": "Sin", "inputs": ["y"]}])
    close(eng.grad(net, [X, Y]).gradients, np.zeros_like(X))


def int_bool_network():
    return parse_network({
        "format": "gradnet/1",
        "inputs": [{"name": "n"}, {"name": "x"}, {"name": "m"}],
        "nodes": [
            {"name": "c", "op": "Cast", "inputs": ["n"], "attrs": {"dtype": "float32"}},
            {"name": "p", "op": "Mul", "inputs": ["x", "c"]},
            {"name": "out", "op": "Select", "inputs": ["m", "p", "x"]},
        ],
        "outputs": ["out"],
    })


def test_int_and_bool_inputs_get_zeros_of_their_dtype(eng):
    n = np.array([3, -2, 7], np.int32)
    x = np.array([1.0, 2.0, 3.0], np.float32)
    m = np.array([True, False, True])
    r = eng.grad(int_bool_network(), [n, x, m], get_all=True)
    gn, gx, gm = r.gradients
    assert gn.dtype == np.int32 and gn.shape == (3,) and not gn.any()
    assert gm.dtype == np.bool_ and gm.shape == (3,) and not gm.any()
    close(gx, [3.0, 1.0, 7.0])
    g = eng.grad(int_bool_network(), [n, x, m]).gradients  # no flags: the first input, an int
    assert g.dtype == np.int32 and g.shape == (3,) and not g.any()


def test_int_output_carries_no_gradient(eng):
    net = network(nodes=[{"name": "out", "op": "Greater", "inputs": ["x", "y"]}], outputs=("out",))
    r = eng.grad(net, [X, Y], get_all=True, return_value=True)
    close(r.gradients[0], np.zeros_like(X)), close(r.gradients[1], np.zeros_like(Y))
    assert r.value[0].dtype == np.bool_


# -- dtypes ----------------------------------------------------------------------------------------

FLOAT_DTYPES = {"float16": (np.float16, 2e-3), "bfloat16": (ml_dtypes.bfloat16, 2e-2),
                "float32": (np.float32, 1e-6), "float64": (np.float64, 1e-12)}


@pytest.mark.parametrize("name", list(FLOAT_DTYPES))
def test_gradients_keep_dtype_and_shape(eng, name):
    dt, tol = FLOAT_DTYPES[name]
    x, y, w = X.astype(dt), Y.astype(dt), W.astype(dt)
    net = parse_network({
        "format": "gradnet/1", "inputs": [{"name": "x"}, {"name": "y"}],
        "parameters": [{"name": "w", "value": {"dtype": name, "shape": [3], "data": w.astype(np.float64).tolist()}}],
        "nodes": [
            {"name": "xw", "op": "Mul", "inputs": ["x", "w"]},
            {"name": "s", "op": "Sin", "inputs": ["y"]},
            {"name": "out", "op": "Add", "inputs": ["xw", "s"]},
        ],
        "outputs": "out",
    })
    r = eng.grad(net, [x, y], get_all=True, get_by_list=True, return_value=True)
    (gx, gy), (gw,) = r.gradients
    wide = lambda a: np.asarray(a, np.float64)  # noqa: E731
    close(gx, np.broadcast_to(wide(w), X.shape), dtype=dt, rtol=tol, atol=tol)
    close(gy, np.cos(wide(y)), dtype=dt, rtol=4 * tol, atol=4 * tol)
    close(gw, wide(x).sum(0), dtype=dt, rtol=4 * tol, atol=4 * tol)
    assert r.value[0].dtype == dt


def test_mixed_precision_gradients_have_their_inputs_dtypes(eng):
    x16 = X.astype(np.float16)
    r = eng.grad(network(), [x16, Y.astype(np.float64)], get_all=True, get_by_list=True)
    (gx, gy), (gw,) = r.gradients
    assert (gx.dtype, gy.dtype, gw.dtype) == (np.float16, np.float64, np.float32)
    close(gx, np.broadcast_to(W, X.shape), dtype=np.float16, rtol=1e-3)


def test_importing_the_engine_configures_nothing_and_an_unconfigured_engine_refuses():
    code = ("import jax, engine; assert not jax.config.jax_enable_x64\n"
            "try:\n    engine.Engine()\nexcept RuntimeError as exc:\n    assert 'configure_jax' in str(exc)\n"
            "else:\n    raise SystemExit('an engine started without x64')\n"
            "engine.configure_jax(); assert jax.config.jax_enable_x64; engine.Engine()\n")
    root = str(Path(__file__).resolve().parents[2])
    proc = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": root})
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_float32_stays_float32_with_x64_enabled(eng):
    assert jax.config.jax_enable_x64
    r = eng.grad(network(), [X, Y], get_all=True, get_by_list=True, return_value=True)
    assert all(g.dtype == np.float32 for g in [*r.gradients[0], *r.gradients[1]])
    assert r.value[0].dtype == np.float32
    r = eng.grad(parse_network(TUTORIAL), [TX, TY], get_all=True, return_value=True)
    assert r.value[0].dtype == np.float32 and r.gradients[1].dtype == np.float32
    x64 = X.astype(np.float64)
    assert eng.grad(network(), [x64, Y]).gradients.dtype == np.float64


def test_nan_inputs_give_nan_gradients(eng):
    x = X.copy()
    x[0, 1] = np.nan
    r = eng.grad(network(), [x, Y], get_all=True, get_by_list=True, return_value=True)
    (gx, gy), (gw,) = r.gradients
    assert np.isnan(gw[1]) and not np.isnan(gw[[0, 2]]).any()
    assert not np.isnan(gx).any()  # d(x*w)/dx = w does not depend on x
    assert np.isnan(r.value[0][0, 1])
    y = Y.copy()
    y[1, 2] = np.nan
    gy = eng.grad(network(), [X, y], get_all=True).gradients[1]
    assert np.isnan(gy[1, 2]) and np.isfinite(np.delete(gy.reshape(-1), 5)).all()


# -- parameters per call ---------------------------------------------------------------------------


def test_parameter_overrides_change_the_result_without_recompiling():
    engine = Engine()
    net = parse_network(TUTORIAL)
    first = engine.grad(net, [TX, TY], get_all=True, get_by_list=True)
    assert engine.stats["misses"] == 1
    z = np.array([2.5], np.float32)
    over = engine.grad(net, [TX, TY], get_all=True, get_by_list=True, parameters={"z": z})
    assert over.cache_hit and engine.stats["misses"] == 1 and engine.stats["hits"] == 1
    close(over.gradients[0][0], 2.5 * np.asarray(first.gradients[0][0]), rtol=1e-5)
    close(over.gradients[0][1], 2.5 * np.asarray(first.gradients[0][1]), rtol=1e-5)
    close(over.gradients[1][0], first.gradients[1][0], rtol=1e-5)  # d/dz of (x z) y is x-only
    again = engine.grad(net, [TX, TY], get_all=True, get_by_list=True)  # the stored value is untouched
    close(again.gradients[0][0], first.gradients[0][0])
    assert engine.stats["misses"] == 1
    np.testing.assert_array_equal(net.parameter("z").value, [1.0])


def test_parameter_override_of_a_frozen_parameter(eng):
    r = eng.grad(with_bias(trainable=False), [X, Y], get_all=True, return_value=True, parameters={"b": B * 10})
    close(r.value[0], X * W + np.sin(Y) + B * 10)


@pytest.mark.parametrize("value", [np.zeros((2,), np.float32), np.zeros((1, 1), np.float32), np.float32(1.0),
                                   np.zeros((1,), np.float64), np.zeros((1,), np.int32)])
def test_wrong_override(eng, value):
    err = grad_error(ShapeError, eng.grad, parse_network(TUTORIAL), [TX, TY], parameters={"z": value}, where="parameters.z")
    assert "float32[1]" in err.message


def test_override_of_an_unknown_parameter(eng):
    grad_error(ArgumentError, eng.grad, parse_network(TUTORIAL), [TX, TY], parameters={"q": np.zeros(1, np.float32)},
               where="parameters.q", code="bad_argument")


# -- inputs ------------------------------------------------------------------------------------------


def test_dict_inputs_by_name(eng):
    by_list = eng.grad(network(), [X, Y], get_all=True)
    by_name = eng.grad(network(), {"y": Y, "x": X}, get_all=True)
    for a, b in zip(by_list.gradients, by_name.gradients):
        np.testing.assert_array_equal(a, b)


def test_dict_inputs_unknown_and_missing(eng):
    grad_error(ArgumentError, eng.grad, network(), {"x": X, "y": Y, "q": X}, where="inputs.q", code="bad_argument")
    grad_error(ArgumentError, eng.grad, network(), {"x": X}, where="inputs", code="bad_argument")


@pytest.mark.parametrize("count", [0, 1, 3])
def test_wrong_input_count(eng, count):
    err = grad_error(ArgumentError, eng.grad, network(), [X] * count, where="inputs", code="bad_argument")
    assert "2 input" in err.message


def test_plain_lists_are_accepted_as_inputs(eng):
    r = eng.grad(network(), [X.tolist(), Y.tolist()], get_all=True)
    assert r.gradients[0].dtype == np.float64  # a Python float list is float64, as in NumPy


def constrained():
    return network(specs=[{"name": "x", "dtype": "float32", "shape": [None, 3]}, {"name": "y", "shape": [2, 3]}])


def test_declared_input_constraints(eng):
    close(eng.grad(constrained(), [X, Y]).gradients, np.broadcast_to(W, X.shape))
    grad_error(DTypeError, eng.grad, constrained(), [X.astype(np.float64), Y], where="inputs[0]", code="dtype_mismatch")
    grad_error(ShapeError, eng.grad, constrained(), [X[:, :2], Y], where="inputs[0]", code="shape_mismatch")
    grad_error(ShapeError, eng.grad, constrained(), [X[None], Y], where="inputs[0]", code="shape_mismatch")
    grad_error(ShapeError, eng.grad, constrained(), [X, Y[:1]], where="inputs[1]", code="shape_mismatch")
    x5 = np.ones((5, 3), np.float32)  # None is any size; y broadcasts against it? no: Sin(y) + x*w is [2,3] vs [5,3]
    grad_error(ShapeError, eng.grad, constrained(), [x5, Y], where="nodes[2]")


# -- return_value, errors at trace time --------------------------------------------------------------


def test_return_value(eng):
    r = eng.grad(two_outputs(), [X, Y], get_all=True, return_value=True)
    assert len(r.value) == 2
    close(r.value[0], X * W), close(r.value[1], np.sin(Y))
    r = eng.grad(network(), [X, Y], return_value=True)
    assert len(r.value) == 1
    close(r.value[0], X * W + np.sin(Y))


def test_shape_mismatch_names_the_node(eng):
    doc = dict(TUTORIAL, nodes=list(reversed(TUTORIAL["nodes"])))  # "out" is nodes[0] here
    err = grad_error(ShapeError, eng.grad, parse_network(doc), [TX, np.ones((4, 5), np.float32)], where="nodes[0]",
                     code="shape_mismatch")
    assert "'out'" in err.message and "MatMul" in err.message
    assert "float32[2, 3]" in err.message and "float32[4, 5]" in err.message


def test_shape_mismatch_with_sens_param(eng):
    grad_error(ShapeError, eng.grad, parse_network(TUTORIAL), [TX, np.ones((4, 5), np.float32)], sens_param=True,
               sens=np.ones((2, 5), np.float32), where="nodes[1]")


def test_node_errors_carry_the_prefix_the_network_was_parsed_with(eng):
    """API.md section 5: ``path`` points into the request. An inline network is at ``network.``, so
    a shape error found per call at its node is ``network.nodes[i]``, like its parse errors; a
    registered network (parsed with no prefix) has ``nodes[i]``."""
    from engine import run_request

    bad_y = np.ones((4, 5), np.float32)
    inline = parse_network(TUTORIAL, path="network.")
    registered = parse_network(TUTORIAL)
    assert (inline.path, registered.path) == ("network.", "")
    assert inline.id == registered.id  # the prefix is not part of the network's identity
    grad_error(ShapeError, eng.grad, inline, [TX, bad_y], where="network.nodes[1]")
    grad_error(ShapeError, eng.grad, registered, [TX, bad_y], where="nodes[1]")
    grad_error(ShapeError, eng.grad, inline, [TX, bad_y], sens_param=True, sens=np.ones((2, 5), np.float32),
               where="network.nodes[1]")
    # the same network under another prefix: same id, same compiled code, that prefix in errors
    assert inline.with_path("").path == "" and inline.with_path("").id == inline.id
    assert inline.with_path("network.") is inline
    grad_error(ShapeError, eng.grad, inline.with_path(""), [TX, bad_y], where="nodes[1]")
    grad_error(ShapeError, eng.grad, registered.with_path("network."), [TX, bad_y], where="network.nodes[1]")
    close(eng.grad(inline.with_path(""), [TX, TY]).gradients, eng.grad(inline, [TX, TY]).gradients)
    # a whole request with its network inline
    request = {"network": TUTORIAL, "inputs": [tensor(TX), tensor(bad_y)]}
    grad_error(ShapeError, run_request, request, engine=eng, where="network.nodes[1]", code="shape_mismatch")
    grad_error(TooLargeError, run_request, {
        "network": {"format": "gradnet/1", "inputs": [{"name": "x"}],
                    "nodes": [{"name": "b", "op": "BroadcastTo", "inputs": ["x"], "attrs": {"shape": [2000, 1000]}}],
                    "outputs": ["b"]},
        "inputs": [tensor(np.ones(1, np.float32))],
    }, engine=Engine(max_elements=10**6), where="network.nodes[0]", code="too_large")


@pytest.mark.parametrize("sens_param", [False, True])
def test_huge_intermediate_is_refused_before_compiling(sens_param):
    engine = Engine(max_elements=10**6)
    net = parse_network({
        "format": "gradnet/1", "inputs": [{"name": "a"}, {"name": "b"}],
        "nodes": [{"name": "outer", "op": "MatMul", "inputs": ["a", "b"]},
                  {"name": "out", "op": "ReduceSum", "inputs": ["outer"]}],
        "outputs": "out",
    })
    n = 100_000
    a, b = np.ones((n, 1), np.float32), np.ones((1, n), np.float32)
    t0 = time.perf_counter()
    err = grad_error(TooLargeError, engine.grad, net, [a, b], sens_param=sens_param,
                     sens=np.float32(1) if sens_param else None, where="nodes[0]", code="too_large")
    assert time.perf_counter() - t0 < 10
    assert err.code == "too_large" and str(n * n) in err.message and "'outer'" in err.message
    assert engine.stats["size"] == 0 and engine.stats["compile_seconds"] == 0
    small = engine.grad(net, [a[:1000], b[:, :1000]], get_all=True)  # 10**6 elements: at the limit
    close(small.gradients[0], np.full((1000, 1), 1000.0))


@pytest.mark.parametrize("op, attrs", [("Tile", {"multiples": [100_000, 100_000]}),
                                       ("BroadcastTo", {"shape": [100_000, 100_000]})])
def test_huge_tile_or_broadcast_is_refused_before_compiling(op, attrs):
    if op not in OPS:
        pytest.skip(f"{op} is not in the catalog yet")
    engine = Engine(max_elements=10**6)
    net = parse_network({
        "format": "gradnet/1", "inputs": [{"name": "x"}],
        "nodes": [{"name": "sum", "op": "ReduceSum", "inputs": ["big"]},
                  {"name": "big", "op": op, "inputs": ["x"], "attrs": attrs}],
        "outputs": "sum",
    })
    err = grad_error(TooLargeError, engine.grad, net, [np.ones((1, 1), np.float32)], where="nodes[1]", code="too_large")
    assert "'big'" in err.message and str(10**10) in err.message
    assert engine.stats["size"] == 0


def test_timings_and_cache_flag():
    engine = Engine()
    first = engine.grad(network(), [X, Y])
    second = engine.grad(network(), [X, Y])
    assert not first.cache_hit and second.cache_hit
    assert first.timing_ms["compile"] > 0 and second.timing_ms["compile"] == 0
    assert second.timing_ms["compute"] >= 0


def test_int_parameter_named_in_weights_gets_int_zeros(eng):
    net = network(
        params=(("w", W, True), ("k", np.array([1, 2, 3], np.int32), True)),
        nodes=[
            {"name": "kf", "op": "Cast", "inputs": ["k"], "attrs": {"dtype": "float32"}},
            {"name": "xk", "op": "Mul", "inputs": ["x", "kf"]},
            {"name": "out", "op": "Mul", "inputs": ["xk", "w"]},
        ],
    )
    r = eng.grad(net, [X, Y], get_by_list=True)
    assert r.gradient_names == ["w", "k"]
    close(r.gradients[0], (X * [1, 2, 3]).sum(0))
    gk = r.gradients[1]
    assert gk.dtype == np.int32 and gk.shape == (3,) and not gk.any()


# -- Engine.check: grad's errors without compiling or a device -----------------------------------


CHECK_FAILURES = [
    # (call kwargs, error class, path): one of each kind grad() refuses
    (dict(inputs=[X]), ArgumentError, "inputs"),
    (dict(inputs=[X, Y], weights=["w"]), ArgumentError, "weights"),
    (dict(inputs=[X, Y], get_by_list=True, weights=["nope"]), ArgumentError, "weights[0]"),
    (dict(inputs=[X, Y], parameters={"w": np.ones(4, np.float32)}), ShapeError, "parameters.w"),
    (dict(inputs=[X, Y], sens_param=True), SensError, "sens"),
    (dict(inputs=[X, Y], sens=S), SensError, "sens"),
    (dict(inputs=[X, Y], sens_param=True, sens=S.T), SensError, "sens"),
    (dict(inputs=[X, np.ones((4, 5), np.float32)]), ShapeError, "nodes[2]"),
]


@pytest.mark.parametrize("call, cls, where", CHECK_FAILURES)
def test_check_raises_what_grad_raises(eng, call, cls, where):
    call = dict(call)
    inputs = call.pop("inputs")
    from_check = grad_error(cls, Engine(device="no device").check, network(), inputs, where=where, **call)
    from_grad = grad_error(cls, eng.grad, network(), inputs, where=where, **call)
    assert (from_check.code, from_check.message) == (from_grad.code, from_grad.message)


def test_check_compiles_nothing_and_returns_the_bound_inputs():
    checker = Engine(device="no device")  # check() must never ask JAX for a device
    xs = checker.check(network(), {"y": Y, "x": X}, get_all=True, sens_param=True, sens=S)
    assert [x.shape for x in xs] == [(2, 3), (2, 3)]
    np.testing.assert_array_equal(xs[1], Y)
    assert checker.stats["misses"] == 0 and checker.stats["size"] == 0
