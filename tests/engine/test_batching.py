"""engine.batching and Engine.run_batch: a batch of calls computed by one vmapped program gives
each call what Engine.run gives it alone, for every transform (float32 within 1e-6 relative, as
a norm: ||batched - alone|| <= 1e-6 ||alone||); padding rows are computed and dropped; batch
sizes are rounded up to the buckets; the batched programs live in the engine's one cache."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import engine
from engine import batching
from engine.transforms import Grad, GradOperation, Hvp, Jacobian, Jvp, Vjp
from tests.support.networks import SCALAR_SIN

RNG = np.random.default_rng(14)
F32 = "float32"


def _param(shape: tuple[int, ...]) -> dict[str, Any]:
    return {"dtype": F32, "shape": list(shape), "data": RNG.normal(size=shape).astype(F32).ravel().tolist()}


# f(x, y) = (tanh(x @ w + b) * y, sum(exp(x * y))): two outputs, two weights (b frozen)
NET = engine.parse_network({
    "format": "gradnet/1", "name": "two-out", "inputs": [{"name": "x"}, {"name": "y"}],
    "parameters": [{"name": "w", "value": _param((4, 4))},
                   {"name": "b", "value": _param((4,)), "requires_grad": False}],
    "nodes": [
        {"name": "xw", "op": "MatMul", "inputs": ["x", "w"]},
        {"name": "xwb", "op": "BiasAdd", "inputs": ["xw", "b"]},
        {"name": "t", "op": "Tanh", "inputs": ["xwb"]},
        {"name": "o0", "op": "Mul", "inputs": ["t", "y"]},
        {"name": "xy", "op": "Mul", "inputs": ["x", "y"]},
        {"name": "e", "op": "Exp", "inputs": ["xy"]},
        {"name": "o1", "op": "ReduceSum", "inputs": ["e"], "attrs": {"axis": [], "keep_dims": False}},
    ],
    "outputs": ["o0", "o1"],
})
# a scalar output for /hvp: sum(sin(x * y) * x)
SCALAR = engine.parse_network(SCALAR_SIN)
# an int input (labels as indices) beside a float one: stacked like any other
MIXED = engine.parse_network({
    "format": "gradnet/1", "name": "mixed", "inputs": [{"name": "x"}, {"name": "k"}],
    "nodes": [
        {"name": "kf", "op": "Cast", "inputs": ["k"], "attrs": {"dtype": F32}},
        {"name": "m", "op": "Mul", "inputs": ["x", "kf"]},
        {"name": "f", "op": "ReduceSum", "inputs": ["m"], "attrs": {"axis": [], "keep_dims": False}},
    ],
    "outputs": ["f"],
})


def f32(*shape: int) -> np.ndarray:
    return RNG.normal(size=shape).astype(F32)


@pytest.fixture(scope="module")
def eng() -> engine.Engine:
    return engine.Engine()


def leaves(value: Any) -> list[np.ndarray]:
    """Every tensor of an answer's fields, in order (names and ids left out)."""
    if isinstance(value, dict):
        return [a for k in value for a in leaves(value[k]) if k != "gradient_names"]
    if isinstance(value, (list, tuple)):
        return [a for v in value for a in leaves(v)]
    if isinstance(value, np.ndarray) or np.isscalar(value):
        return [np.asarray(value)]
    return []


def assert_same(batched: dict[str, Any], alone: dict[str, Any]) -> None:
    assert batched.keys() == alone.keys()
    assert batched.get("gradient_names") == alone.get("gradient_names")
    got, want = leaves(batched), leaves(alone)
    assert len(got) == len(want) > 0
    for g, w in zip(got, want):
        assert g.shape == w.shape and g.dtype == w.dtype
        scale = float(np.linalg.norm(w.astype(np.float64)))
        err = float(np.linalg.norm(g.astype(np.float64) - w.astype(np.float64)))
        assert err <= 1e-6 * scale + 1e-30, (err, scale)


def check(eng: engine.Engine, net: engine.Network, spec: Any, calls: list[tuple[list[np.ndarray], Any]],
          size: int | None = None) -> list[engine.GradResult]:
    """Run ``calls`` alone and as one batch of ``size`` rows; each batched answer is its own."""
    alone = [eng.run(net, spec, xs, extra=extra).fields for xs, extra in calls]
    prepared = [eng.prepare(net, spec, xs, extra=extra) for xs, extra in calls]
    assert len({c.key for c in prepared}) == 1
    results = eng.run_batch(net, prepared, size or batching.bucket(len(calls), 64))
    assert len(results) == len(calls)
    for result, want in zip(results, alone):
        assert_same(result.fields, want)
    return results


def test_buckets() -> None:
    assert batching.buckets(1) == (1,)
    assert batching.buckets(8) == (1, 2, 4, 8)
    assert batching.buckets(48) == (1, 2, 4, 8, 16, 32, 48)
    assert [batching.bucket(n, 48) for n in (1, 2, 3, 5, 9, 17, 33, 48)] == [1, 2, 4, 8, 16, 32, 48, 48]
    with pytest.raises(ValueError):
        batching.bucket(49, 48)
    with pytest.raises(ValueError):
        batching.buckets(0)


def test_stack_pads_with_the_first_row() -> None:
    a, b = np.arange(3.0), np.arange(3.0) + 10
    out = batching.stack([a, b], 4)
    assert out.shape == (4, 3)
    np.testing.assert_array_equal(out, [a, b, a, a])


@pytest.mark.parametrize("spec", [
    GradOperation(),
    GradOperation(get_all=True),
    GradOperation(get_by_list=True),
    GradOperation(get_all=True, get_by_list=True, weights=("w", "b"), return_value=True),
    Grad(positions=(0, 1), bare=False, weights=("w",), return_value=True),
    Grad(positions=(1,), has_aux=True),
], ids=["plain", "get_all", "weights", "all+weights+value", "grad", "aux"])
def test_gradients(eng: engine.Engine, spec: Any) -> None:
    check(eng, NET, spec, [([f32(2, 4), f32(2, 4)], None) for _ in range(5)])


def test_gradients_with_sens(eng: engine.Engine) -> None:
    spec = GradOperation(get_all=True, sens_param=True)
    check(eng, NET, spec, [([f32(3, 4), f32(3, 4)], [f32(3, 4), f32()]) for _ in range(3)])


def test_per_example_gradients(eng: engine.Engine) -> None:
    spec = Grad(positions=(0,), per_example_axes=(0, None))
    check(eng, NET, spec, [([f32(5, 4), f32(1, 4)], None) for _ in range(3)])


@pytest.mark.parametrize("batched", [False, True])
def test_jvp(eng: engine.Engine, batched: bool) -> None:
    k = (3,) if batched else ()
    check(eng, NET, Jvp(batched=batched),
          [([f32(2, 4), f32(2, 4)], [f32(*k, 2, 4), f32(*k, 2, 4)]) for _ in range(4)])


@pytest.mark.parametrize("batched", [False, True])
def test_vjp(eng: engine.Engine, batched: bool) -> None:
    k = (2,) if batched else ()
    check(eng, NET, Vjp(weights=("w",), batched=batched),
          [([f32(2, 4), f32(2, 4)], [f32(*k, 2, 4), f32(*k)]) for _ in range(3)])


@pytest.mark.parametrize("mode", ["reverse", "forward"])
def test_jacobian(eng: engine.Engine, mode: str) -> None:
    check(eng, NET, Jacobian(positions=(0, 1), bare=False, mode=mode),
          [([f32(2, 4), f32(2, 4)], None) for _ in range(2)])


def test_hvp(eng: engine.Engine) -> None:
    check(eng, SCALAR, Hvp(positions=(0,)), [([f32(3, 2), f32(3, 2)], f32(3, 2)) for _ in range(6)])
    check(eng, SCALAR, Hvp(positions=(0, 1), bare=False, batched=True),
          [([f32(3, 2), f32(3, 2)], [f32(2, 3, 2), f32(2, 3, 2)]) for _ in range(2)])


def test_int_inputs_stack(eng: engine.Engine) -> None:
    calls = [([f32(4), RNG.integers(0, 5, size=4).astype(np.int32)], None) for _ in range(3)]
    results = check(eng, MIXED, GradOperation(get_all=True), calls)
    assert results[0].fields["gradients"][1].dtype == np.int32  # an int input's gradient: zeros of its dtype


def test_the_mlp_per_example(eng: engine.Engine) -> None:
    """The benchmark's call: one example of the MLP fixture, the gradient w.r.t. its input."""
    import json  # noqa: PLC0415

    from tests.support import FIXTURES  # noqa: PLC0415

    net = engine.parse_network(json.loads((FIXTURES / "mlp.json").read_text())["network"])
    calls = [([f32(1, 784), np.eye(10, dtype=F32)[[k]]], None) for k in range(7)]
    check(eng, net, GradOperation(), calls, size=8)


def test_padding_rows_are_dropped(eng: engine.Engine) -> None:
    """3 calls in the program of 8 rows: three answers, each its own (the padding repeats the
    first call and changes nothing)."""
    calls = [([f32(2, 4), f32(2, 4)], None) for _ in range(3)]
    results = check(eng, NET, GradOperation(get_all=True), calls, size=8)
    first = eng.run(NET, GradOperation(get_all=True), calls[0][0]).fields
    assert_same(results[0].fields, first)


def test_nan_in_one_row_stays_in_that_row(eng: engine.Engine) -> None:
    xs = [[f32(2, 4), f32(2, 4)] for _ in range(4)]
    xs[1][0][0, 0] = np.nan
    prepared = [eng.prepare(NET, GradOperation(), x) for x in xs]
    results = eng.run_batch(NET, prepared, 4)
    assert np.isnan(results[1].gradients).any()
    for i in (0, 2, 3):
        assert_same(results[i].fields, eng.run(NET, GradOperation(), xs[i]).fields)


def test_batched_programs_are_cached_per_bucket(eng: engine.Engine) -> None:
    e = engine.Engine(cache_size=8)
    spec = GradOperation(get_all=True)
    calls = [e.prepare(NET, spec, [f32(2, 4), f32(2, 4)]) for _ in range(5)]
    assert not e.batch_compiled(calls[0], 8)
    took = e.compile_batch(NET, calls[0], 8)
    assert took > 0 and e.batch_compiled(calls[0], 8)
    assert e.compile_batch(NET, calls[0], 8) == 0.0  # cached: not compiled again
    misses, hits = e.stats["misses"], e.stats["hits"]
    first = e.run_batch(NET, calls[:5], 8)
    second = e.run_batch(NET, calls[:3], 8)  # 3 calls: the same bucket's program
    assert e.stats["misses"] == misses and first[0].cache_hit and second[0].cache_hit
    assert e.stats["hits"] == hits + 5 + 3  # counted per call, as run counts them
    e.run_batch(NET, calls[:2], 2)  # another bucket: one more program
    assert e.stats["misses"] == misses + 1
    assert e.batch_compiled(calls[0], 2) and not e.batch_compiled(calls[0], 4)
    e.forget(NET.id)  # a deleted network takes its batched programs with it
    assert not e.batch_compiled(calls[0], 8)


def test_prepare_checks_each_call(eng: engine.Engine) -> None:
    with pytest.raises(engine.ArgumentError):
        eng.prepare(NET, GradOperation(), [f32(2, 4)])  # one input of two
    with pytest.raises(engine.SensError):
        eng.prepare(NET, GradOperation(sens_param=True), [f32(2, 4), f32(2, 4)], extra=[f32(2, 3), f32()])
    a = eng.prepare(NET, GradOperation(), [f32(2, 4), f32(2, 4)])
    b = eng.prepare(NET, GradOperation(), [f32(3, 4), f32(3, 4)])
    assert a.key != b.key  # other shapes: another program
    with pytest.raises(ValueError):
        eng.run_batch(NET, [a, b], 2)
    with pytest.raises(ValueError):
        eng.run_batch(NET, [a, a, a], 2)
