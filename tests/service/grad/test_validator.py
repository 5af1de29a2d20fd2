"""service.grad.validator: the engine's checks in the server, and its memory of calls that passed."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import engine
from service.grad.call import GradCall
from service.grad.validator import Validator

NET = engine.parse_network({
    "format": "gradnet/1", "name": "mm", "inputs": [{"name": "x"}, {"name": "y"}],
    "parameters": [{"name": "w", "value": {"dtype": "float32", "shape": [3], "data": [1, 2, 3]}}],
    "nodes": [{"name": "xw", "op": "Mul", "inputs": ["x", "w"]}, {"name": "out", "op": "MatMul", "inputs": ["xw", "y"]}],
    "outputs": ["out"],
})
X, Y = np.ones((2, 3), np.float32), np.ones((3, 4), np.float32)


def call(*, sens: Any = None, parameters: Any = None, weights: Any = None, **flags: Any) -> GradCall:
    spec = engine.GradOperation(**flags, weights=None if weights is None else tuple(weights))
    return GradCall(spec, "json", 1.0, parameters=parameters, extra=sens)


@pytest.fixture
def validator(monkeypatch: pytest.MonkeyPatch) -> Validator:
    v = Validator(max_elements=1000, cache_size=4)
    v.checks = 0  # type: ignore[attr-defined]
    check = v.engine.check_run

    def counted(*args: Any, **kwargs: Any) -> Any:
        v.checks += 1  # type: ignore[attr-defined]
        return check(*args, **kwargs)

    monkeypatch.setattr(v.engine, "check_run", counted)
    return v


def test_a_valid_call_is_checked_once(validator: Validator) -> None:
    xs = validator.bind_inputs(NET, [X, Y])
    assert not validator.knows(NET, xs)
    for _ in range(3):
        validator.validate(NET, xs, call(get_all=True))
    assert validator.knows(NET, xs) and validator.checks == 1  # type: ignore[attr-defined]
    validator.validate(NET, xs, call(get_by_list=True, weights=["w"]))  # other flags: checked again
    assert validator.checks == 2  # type: ignore[attr-defined]


def test_calls_with_sens_or_parameters_are_always_checked(validator: Validator) -> None:
    xs = validator.bind_inputs(NET, [X, Y])
    sens = np.ones((2, 4), np.float32)
    for _ in range(2):
        validator.validate(NET, xs, call(sens_param=True, sens=sens))
    assert validator.checks == 2  # type: ignore[attr-defined]
    with pytest.raises(engine.SensError):
        validator.validate(NET, xs, call(sens_param=True, sens=np.ones((4, 2), np.float32)))
    with pytest.raises(engine.ShapeError) as info:
        validator.validate(NET, xs, call(parameters={"w": np.ones(4, np.float32)}))
    assert info.value.path == "parameters.w"


@pytest.mark.parametrize(("inputs", "flags", "error", "path"), [
    ([X, np.ones((4, 4), np.float32)], {}, engine.ShapeError, "nodes[1]"),
    ([X, Y], {"weights": ["w"]}, engine.ArgumentError, "weights"),
    ([X, Y], {"get_by_list": True, "weights": ["v"]}, engine.ArgumentError, "weights[0]"),
    ([np.ones((40, 3), np.float32), np.ones((3, 40), np.float32)], {}, engine.TooLargeError, "nodes[1]"),
])
def test_what_a_worker_would_refuse_is_refused_here(validator: Validator, inputs: list[np.ndarray],
                                                    flags: dict[str, Any], error: type, path: str | None) -> None:
    xs = validator.bind_inputs(NET, inputs)
    with pytest.raises(error) as info:
        validator.validate(NET, xs, call(**flags))
    if path is not None:
        assert info.value.path == path


def test_inputs_are_bound_by_name_and_checked(validator: Validator) -> None:
    assert [a.shape for a in validator.bind_inputs(NET, {"y": Y, "x": X})] == [(2, 3), (3, 4)]
    with pytest.raises(engine.ArgumentError):
        validator.bind_inputs(NET, [X])


def test_a_large_network_is_not_evaluated_in_the_server(validator: Validator, monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 12.2: tracing a 3,000-node network held the server's GIL 1.75 s, stalling every warm
    request. From CHECK_NODES nodes on, the server binds the inputs and checks the parameters only;
    the worker's check thread runs the abstract evaluation (tests/hardening/test_compile_budget.py)."""
    from service.worker.main import CHECK_NODES

    nodes = [{"name": f"t{i}", "op": "Tanh", "inputs": [f"t{i - 1}" if i else "x"]} for i in range(CHECK_NODES)]
    big = engine.parse_network({
        "format": "gradnet/1", "name": "big", "inputs": [{"name": "x"}],
        "parameters": [{"name": "w", "value": {"dtype": "float32", "shape": [3], "data": [1, 2, 3]}}],
        "nodes": nodes, "outputs": [f"t{CHECK_NODES - 1}"],
    })
    small = engine.parse_network({**{"format": "gradnet/1", "name": "small", "inputs": [{"name": "x"}]},
                                  "nodes": nodes[:CHECK_NODES - 1], "outputs": [f"t{CHECK_NODES - 2}"]})
    evaluated: list[str] = []
    evaluate = validator.engine.output_avals
    monkeypatch.setattr(validator.engine, "output_avals",
                        lambda net, xs: evaluated.append(net.name) or evaluate(net, xs))
    x = [np.ones(3, np.float32)]
    assert validator.knows(big, x) and not validator.knows(small, x)
    validator.validate(big, x, call())
    validator.validate(big, x, call(sens=np.ones(2, np.float32)))  # a bad sens: the worker says so
    validator.validate(small, x, call())
    assert evaluated == ["small"]
    # the cheap checks stay here
    with pytest.raises(engine.GradnetError):
        validator.validate(big, x, call(parameters={"w": np.ones(4, np.float32)}))
    with pytest.raises(engine.GradnetError):
        validator.validate(big, x, call(parameters={"nope": np.ones(3, np.float32)}))
