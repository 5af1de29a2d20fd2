"""engine.transforms: jvp and hvp against float64 finite differences, Jacobians against stacked
VJPs and JVPs, batched vectors against one call per vector, per-example gradients against one
call per example, and every bad argument refused with its field."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import engine
from engine.transforms import Grad, GradOperation, Hvp, Jacobian, Jvp, Vjp, from_wire, to_wire

RNG = np.random.default_rng(13)
F64 = "float64"

# f(x, y) = (sin(x * y) * x + tanh(x @ w), sum(exp(x * y) * y)): two outputs, one weight
NET = engine.parse_network({
    "format": "gradnet/1", "name": "two-out", "inputs": [{"name": "x"}, {"name": "y"}],
    "parameters": [{"name": "w", "value": {"dtype": F64, "shape": [3, 3], "data": RNG.normal(size=9).tolist()}}],
    "nodes": [
        {"name": "xy", "op": "Mul", "inputs": ["x", "y"]},
        {"name": "s", "op": "Sin", "inputs": ["xy"]},
        {"name": "sx", "op": "Mul", "inputs": ["s", "x"]},
        {"name": "xw", "op": "MatMul", "inputs": ["x", "w"]},
        {"name": "t", "op": "Tanh", "inputs": ["xw"]},
        {"name": "o0", "op": "Add", "inputs": ["sx", "t"]},
        {"name": "e", "op": "Exp", "inputs": ["xy"]},
        {"name": "ey", "op": "Mul", "inputs": ["e", "y"]},
        {"name": "o1", "op": "ReduceSum", "inputs": ["ey"], "attrs": {"axis": [1], "keep_dims": False}},
    ],
    "outputs": ["o0", "o1"],
})
# a scalar first output for /hvp: sum(sin(x * y) * x) + sum(y * y * x)
SCALAR = engine.parse_network({
    "format": "gradnet/1", "name": "scalar", "inputs": [{"name": "x"}, {"name": "y"}],
    "nodes": [
        {"name": "xy", "op": "Mul", "inputs": ["x", "y"]},
        {"name": "s", "op": "Sin", "inputs": ["xy"]},
        {"name": "sx", "op": "Mul", "inputs": ["s", "x"]},
        {"name": "y2", "op": "Mul", "inputs": ["y", "y"]},
        {"name": "y2x", "op": "Mul", "inputs": ["y2", "x"]},
        {"name": "a", "op": "Add", "inputs": ["sx", "y2x"]},
        {"name": "f", "op": "ReduceSum", "inputs": ["a"], "attrs": {"axis": [], "keep_dims": False}},
    ],
    "outputs": ["f"],
})
X, Y = RNG.normal(size=(2, 3)), RNG.normal(size=(2, 3))
EPS = 1e-6


@pytest.fixture(scope="module")
def eng() -> engine.Engine:
    return engine.Engine()


def forward(eng: engine.Engine, net: engine.Network, xs: list[np.ndarray]) -> list[np.ndarray]:
    value = eng.run(net, Grad(positions=(0,), return_value=True), xs).value
    return value if isinstance(value, list) else [value]


def test_jvp_matches_central_finite_differences_in_float64(eng: engine.Engine) -> None:
    tx, ty = RNG.normal(size=X.shape), RNG.normal(size=Y.shape)
    out = eng.run(NET, Jvp(), [X, Y], extra=[tx, ty]).fields
    plus = forward(eng, NET, [X + EPS * tx, Y + EPS * ty])
    minus = forward(eng, NET, [X - EPS * tx, Y - EPS * ty])
    for k, (p, m) in enumerate(zip(plus, minus)):
        np.testing.assert_allclose(out["jvp"][k], (p - m) / (2 * EPS), rtol=1e-6, atol=1e-8, err_msg=f"output {k}")
    np.testing.assert_allclose(out["value"][0], forward(eng, NET, [X, Y])[0])


def test_hvp_matches_finite_differences_of_the_gradient_in_float64(eng: engine.Engine) -> None:
    vx, vy = RNG.normal(size=X.shape), RNG.normal(size=Y.shape)
    hvp = eng.run(SCALAR, Hvp(positions=(0, 1), bare=False), [X, Y], extra=[vx, vy]).fields["hvp"]
    spec = Grad(positions=(0, 1), bare=False)
    plus = eng.run(SCALAR, spec, [X + EPS * vx, Y + EPS * vy]).gradients
    minus = eng.run(SCALAR, spec, [X - EPS * vx, Y - EPS * vy]).gradients
    for k in range(2):
        np.testing.assert_allclose(hvp[k], (plus[k] - minus[k]) / (2 * EPS), rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("mode", ["reverse", "forward"])
def test_jacobians_equal_stacked_vjps_and_jvps(eng: engine.Engine, mode: str) -> None:
    jac = eng.run(NET, Jacobian(positions=(0, 1), bare=False, mode=mode), [X, Y]).fields["jacobian"]
    avals = [np.asarray(v) for v in forward(eng, NET, [X, Y])]
    for k, out in enumerate(avals):
        for pos, x in enumerate((X, Y)):
            assert jac[k][pos].shape == out.shape + x.shape
            # row by row: the VJP of the unit cotangent of each output element
            rows = []
            for flat in range(out.size):
                cts = [np.zeros_like(a) for a in avals]
                cts[k].reshape(-1)[flat] = 1.0
                rows.append(eng.run(NET, Vjp(), [X, Y], extra=cts).gradients[pos])
            np.testing.assert_allclose(jac[k][pos], np.stack(rows).reshape(out.shape + x.shape), rtol=1e-12, atol=1e-12)
            # column by column: the JVP of the unit tangent of each input element
            cols = []
            for flat in range(x.size):
                ts = [np.zeros_like(X), np.zeros_like(Y)]
                ts[pos].reshape(-1)[flat] = 1.0
                cols.append(eng.run(NET, Jvp(), [X, Y], extra=ts).fields["jvp"][k])
            by_col = np.moveaxis(np.stack(cols), 0, -1).reshape(out.shape + x.shape)
            np.testing.assert_allclose(jac[k][pos], by_col, rtol=1e-12, atol=1e-12)


def test_batched_vectors_equal_one_call_per_vector_with_one_compiled_program(eng: engine.Engine) -> None:
    k = 5
    tx, ty = RNG.normal(size=(k, *X.shape)), RNG.normal(size=(k, *Y.shape))
    before = eng.stats["misses"]
    jvp = eng.run(NET, Jvp(batched=True), [X, Y], extra=[tx, ty]).fields
    vjp = eng.run(NET, Vjp(weights=("w",), batched=True), [X, Y], extra=[tx, ty[:, :, 0]]).gradients
    hvp = eng.run(SCALAR, Hvp(positions=(0, 1), bare=False, batched=True), [X, Y], extra=[tx, ty]).fields["hvp"]
    assert eng.stats["misses"] - before == 3  # one program each, for all K vectors
    assert jvp["value"][0].shape == X.shape  # the value stays unbatched
    for i in range(k):
        one = eng.run(NET, Jvp(), [X, Y], extra=[tx[i], ty[i]]).fields["jvp"]
        for a, b in zip(jvp["jvp"], one):
            np.testing.assert_allclose(a[i], b, rtol=1e-12)
        one_vjp = eng.run(NET, Vjp(weights=("w",)), [X, Y], extra=[tx[i], ty[i, :, 0]]).gradients
        for a, b in zip(vjp[0] + vjp[1], one_vjp[0] + one_vjp[1]):
            np.testing.assert_allclose(a[i], b, rtol=1e-12)
        one_hvp = eng.run(SCALAR, Hvp(positions=(0, 1), bare=False), [X, Y], extra=[tx[i], ty[i]]).fields["hvp"]
        for a, b in zip(hvp, one_hvp):
            np.testing.assert_allclose(a[i], b, rtol=1e-10, atol=1e-12)


def test_per_example_gradients_equal_one_call_per_example(eng: engine.Engine) -> None:
    xs, ys = RNG.normal(size=(6, 2, 3)), RNG.normal(size=(2, 3))
    spec = Grad(positions=(0, 1), bare=False, weights=("w",), has_aux=False, per_example_axes=(0, None))
    out = eng.run(SCALAR if False else NET, spec, [xs, ys]).gradients
    assert out[0][0].shape == (6, 2, 3) and out[0][1].shape == (6, 2, 3) and out[1][0].shape == (6, 3, 3)
    for i in range(6):
        one = eng.run(NET, Grad(positions=(0, 1), bare=False, weights=("w",)), [xs[i], ys]).gradients
        np.testing.assert_allclose(out[0][0][i], one[0][0], rtol=1e-12)
        np.testing.assert_allclose(out[0][1][i], one[0][1], rtol=1e-12)
        np.testing.assert_allclose(out[1][0][i], one[1][0], rtol=1e-12)
    gradop = eng.run(NET, GradOperation(get_all=True, per_example_axes=(0, None)), [xs, ys]).gradients
    np.testing.assert_allclose(gradop[0], out[0][0], rtol=1e-12)


def test_specs_cross_the_wire_as_plain_data() -> None:
    for spec in (GradOperation(get_all=True, weights=("w",)), Grad(positions=None, weights=("w",), return_ids=True),
                 Jvp(batched=True), Vjp(weights=("w",), has_aux=True), Jacobian((0, 1), False, "forward"),
                 Hvp((1,), True, True)):
        wire = to_wire(spec)
        assert all(isinstance(v, (str, bool, tuple, type(None))) for v in wire)
        assert from_wire(wire) == spec and hash(from_wire(wire)) == hash(spec)


def _request(**fields: Any) -> dict[str, Any]:
    t = {"dtype": F64, "shape": [2, 3], "data": X.reshape(-1).tolist()}
    return {"inputs": [t, t], **fields}


T = {"dtype": F64, "shape": [2, 3], "data": [0.0] * 6}
T32 = {"dtype": "float32", "shape": [2, 3], "data": [0.0] * 6}
BAD_SHAPE = {"dtype": F64, "shape": [3, 2], "data": [0.0] * 6}


@pytest.mark.parametrize(("transform", "net", "fields", "path", "words"), [
    ("grad", NET, {"get_all": True, "grad_position": 0}, "get_all", "one form"),
    ("grad", NET, {"get_by_list": False, "grad_position": [0]}, "get_by_list", "one form"),
    ("grad", NET, {"has_aux": True}, "has_aux", "grad_position"),
    ("grad", NET, {"grad_position": 2}, "grad_position", "out of range"),
    ("grad", NET, {"grad_position": [0, 5]}, "grad_position[1]", "out of range"),
    ("grad", NET, {"grad_position": "0"}, "grad_position", "an int"),
    ("grad", NET, {"grad_position": None}, "grad_position", "nothing to differentiate"),
    ("grad", NET, {"grad_position": 0, "weights": ["v"]}, "weights[0]", "not a parameter"),
    ("grad", NET, {"grad_position": 0, "per_example_axes": [0, 2]}, "per_example_axes[1]", "not an axis"),
    ("grad", NET, {"get_all": True, "per_example_axes": [0]}, "per_example_axes", "one entry"),
    ("jvp", NET, {"tangents": [T]}, "tangents", "expected 2"),
    ("jvp", NET, {"tangents": [T, BAD_SHAPE]}, "tangents[1]", "shape [2, 3]"),
    ("jvp", NET, {"tangents": [T, T32]}, "tangents[1]", "float64"),
    ("jvp", NET, {"tangents": T}, "tangents", "a list"),
    ("jvp", NET, {}, "tangents", "required"),
    ("vjp", NET, {"cotangents": [T]}, "cotangents", "expected 2"),
    ("vjp", NET, {"cotangents": [T, {"dtype": F64, "shape": [3], "data": [0, 0, 0]}]}, "cotangents[1]", "shape [2]"),
    ("vjp", NET, {"cotangents": [{"dtype": F64, "shape": [4, 2, 3], "data": [0.0] * 24},
                                 {"dtype": F64, "shape": [3, 2], "data": [0.0] * 6}], "batched": True},
     "cotangents[1]", "share K"),
    ("hvp", NET, {"vectors": T}, "outputs", "scalar"),  # a network parsed without a path prefix
    ("hvp", SCALAR, {"vectors": [T]}, "vectors", "one tensor"),
    ("hvp", SCALAR, {"grad_position": [0, 1], "vectors": [T]}, "vectors", "expected 2"),
    ("hvp", SCALAR, {"grad_position": 3, "vectors": T}, "grad_position", "out of range"),
    ("jacobian", NET, {"mode": "sideways"}, "mode", "reverse"),
    ("jacobian", NET, {"grad_position": -1}, "grad_position", "out of range"),
    ("jvp", NET, {"tangents": [T, T], "bogus": 1}, "bogus", "unknown field"),
])
def test_bad_arguments_name_the_field_and_what_was_expected(eng: engine.Engine, transform: str, net: engine.Network,
                                                           fields: dict[str, Any], path: str, words: str) -> None:
    with pytest.raises(engine.GradnetError) as info:
        engine.run_request(_request(**fields), engine=eng, network=net, transform=transform)
    assert info.value.path == path, info.value.message
    assert words in info.value.message


def test_a_jacobian_over_the_element_limit_is_refused_before_it_is_built() -> None:
    small = engine.Engine(max_elements=30)
    with pytest.raises(engine.TooLargeError) as info:
        small.run(NET, Jacobian(), [X, Y])  # output 0 is [2, 3], input 0 is [2, 3]: 36 elements
    assert info.value.path == "grad_position" and "36 elements" in info.value.message


# SparseSoftmaxCrossEntropyWithLogits(is_grad=true) carries MindSpore's backward as a custom_vjp
# (it ignores the cotangent, which no tangent rule can express): forward mode through it is a
# request error that says which routes work, and reverse mode still answers.
IS_GRAD = engine.parse_network({
    "format": "gradnet/1", "name": "sparse-ce-is-grad", "inputs": [{"name": "logits"}, {"name": "labels"}],
    "nodes": [{"name": "g", "op": "SparseSoftmaxCrossEntropyWithLogits", "inputs": ["logits", "labels"],
               "attrs": {"is_grad": True}}],
    "outputs": ["g"],
})
LOGITS, LABELS = RNG.normal(size=(2, 3)).astype(np.float32), np.array([0, 2], np.int32)


@pytest.mark.parametrize("spec", [Jvp(), Jacobian(mode="forward")], ids=["jvp", "jacobian-forward"])
def test_forward_mode_through_a_backward_only_rule_is_a_request_error(eng: engine.Engine, spec: Any) -> None:
    extra = [np.ones_like(LOGITS), np.zeros_like(LABELS)] if isinstance(spec, Jvp) else None
    with pytest.raises(engine.ArgumentError) as info:
        eng.run(IS_GRAD, spec, [LOGITS, LABELS], extra=extra)
    assert info.value.path in ("network", "nodes[0]") and "/vjp" in info.value.message
    assert eng.run(IS_GRAD, Vjp(), [LOGITS, LABELS], extra=np.ones_like(LOGITS)).fields["gradients"] is not None


# A loss (one scalar output): batched cotangents differ by a factor only, so the engine runs one
# reverse pass and scales it (engine.transforms._scalable), where the vmap of the vjp runs K.
LOSS = engine.parse_network({
    "format": "gradnet/1", "name": "loss", "inputs": [{"name": "x"}, {"name": "y"}],
    "parameters": [{"name": "w", "value": {"dtype": F64, "shape": [3, 4], "data": RNG.normal(size=12).tolist()}}],
    "nodes": [
        {"name": "xw", "op": "MatMul", "inputs": ["x", "w"]},
        {"name": "t", "op": "Tanh", "inputs": ["xw"]},
        {"name": "ty", "op": "Mul", "inputs": ["t", "y"]},
        {"name": "f", "op": "ReduceSum", "inputs": ["ty"], "attrs": {"axis": [], "keep_dims": False}},
    ],
    "outputs": ["f"],
})


def test_batched_cotangents_of_a_scalar_output_equal_one_call_each_at_the_cost_of_one(eng: engine.Engine) -> None:
    import jax

    from engine.transforms import TRANSFORMS

    x, y = RNG.normal(size=(2, 3)), RNG.normal(size=(2, 4))
    cts = np.array([2.0, -3.0, 0.0, 0.5, 1e3, -1e-3, 7.0])
    got = eng.run(LOSS, Vjp(weights=("w",), batched=True), [x, y], extra=cts)
    (g_x, g_y), (g_w,) = got.gradients
    assert g_x.shape == (7, 2, 3) and g_w.shape == (7, 3, 4)
    assert np.shape(got.value) == ()  # the value stays unbatched
    for i, c in enumerate(cts):
        one = eng.run(LOSS, Vjp(weights=("w",)), [x, y], extra=np.float64(c)).gradients
        for a, b in zip((g_x, g_y, g_w), (*one[0], *one[1])):
            np.testing.assert_allclose(a[i], b, rtol=1e-13, atol=1e-300)
    (k1_x, _), (k1_w,) = eng.run(LOSS, Vjp(weights=("w",), batched=True), [x, y], extra=cts[:1]).gradients
    assert k1_x.shape == (1, 2, 3) and k1_w.shape == (1, 3, 4)  # K = 1 keeps its axis
    np.testing.assert_allclose(k1_w, g_w[:1], rtol=1e-13)

    # one reverse pass, not K: K = 64 costs the FLOPs of one pass and 64 scalings (~9x one
    # call's here; the vmap of the vjp costs 64x)
    fn = TRANSFORMS[Vjp].build(LOSS, Vjp(weights=("w",), batched=True), [x.dtype, y.dtype], None)
    params = {"w": LOSS.parameter("w").value}

    def flops(k: int) -> float:
        return jax.jit(fn).lower([x, y], params, (np.ones(k),)).compile().cost_analysis()["flops"]

    assert flops(64) < 16 * flops(1)


def test_batched_cotangents_through_a_backward_that_ignores_them_are_not_scaled(eng: engine.Engine) -> None:
    # MindSpore's bprop of SparseSoftmaxCrossEntropyWithLogits(is_grad=true) ignores the
    # cotangent: every cotangent gets the same gradient, which scaling one pass would not give.
    net = engine.parse_network({
        "format": "gradnet/1", "name": "is-grad-sum", "inputs": [{"name": "logits"}, {"name": "labels"}],
        "nodes": [{"name": "g", "op": "SparseSoftmaxCrossEntropyWithLogits", "inputs": ["logits", "labels"],
                   "attrs": {"is_grad": True}},
                  {"name": "s", "op": "ReduceSum", "inputs": ["g"], "attrs": {"axis": [], "keep_dims": False}}],
        "outputs": ["s"],
    })
    cts = np.array([2.0, -3.0, 0.5], np.float32)
    got = eng.run(net, Vjp(batched=True), [LOGITS, LABELS], extra=cts).gradients[0]
    for i, c in enumerate(cts):
        one = eng.run(net, Vjp(), [LOGITS, LABELS], extra=c).gradients[0]
        np.testing.assert_allclose(got[i], one, rtol=1e-6)
    np.testing.assert_allclose(got[0], got[1])  # the same whatever the cotangent
