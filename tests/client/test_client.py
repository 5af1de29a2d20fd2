"""GradClient against the shared server: NumPy in, NumPy out, in every encoding."""

from __future__ import annotations

import numpy as np
import pytest

from gradserve_client import GradClient, GradServeError
from tests.support.api_contract import ENCODINGS, array, assert_close
from tests.support.servers import KEY_A, KEY_B


@pytest.fixture
def gs(live_server):
    with GradClient(live_server.url, api_key=KEY_A) as client:
        yield client


def _args(case):
    request = case["request"]
    kwargs = {k: request[k] for k in ("get_all", "get_by_list", "sens_param", "weights") if k in request}
    if "sens" in request:
        kwargs["sens"] = array(request["sens"])
    return request["network"], [array(t) for t in request["inputs"]], kwargs


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_tutorial_inline(gs, tutorial, encoding):
    for case in tutorial:
        network, inputs, kwargs = _args(case)
        result = gs.grad(network, inputs, encoding=encoding, **kwargs)
        assert_close(result.gradients, case["expected_gradients"])
        assert result.network_id.startswith("sha256:")
        assert set(result.timing_ms) == {"queue", "compile", "compute", "decode", "encode"}


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_register_then_grad_by_id(gs, tutorial, encoding):
    case = tutorial[3]  # get_all + get_by_list
    network, inputs, kwargs = _args(case)
    network = dict(network, parameters=[dict(p, value=array(p["value"])) for p in network["parameters"]])
    info = gs.register(network, encoding=encoding)
    assert info["inputs"][0]["name"] == "x"
    result = gs.grad(info["network_id"], {"x": inputs[0], "y": inputs[1]}, encoding=encoding,
                     return_value=True, **kwargs)
    assert_close(result.gradients, case["expected_gradients"])
    assert result.gradient_names == [["x", "y"], ["z"]]
    np.testing.assert_allclose(result.value[0], inputs[0] @ inputs[1], rtol=1e-5)
    assert info["network_id"] in [n["network_id"] for n in gs.networks()]
    assert gs.network(info["network_id"])["format"] == "gradnet/1"


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_dtypes_and_non_finite(gs, encoding):
    network = {"format": "gradnet/1", "inputs": [{"name": "x"}, {"name": "i"}],
               "nodes": [{"name": "y", "op": "Log", "inputs": ["x"]}], "outputs": ["y"]}
    x = np.array([[0.0, 1.0], [np.nan, np.inf]], np.float64)
    i = np.array([1, 2], np.int32)
    result = gs.grad(network, [x, i], get_all=True, encoding=encoding)
    gx, gi = result.gradients
    assert gx.dtype == np.float64 and gx.shape == (2, 2)
    np.testing.assert_array_equal(gx, [[np.inf, 1.0], [np.nan, 0.0]])
    assert gi.dtype == np.int32 and not gi.any()


def test_errors_are_raised(gs, live_server, tutorial):
    network, inputs, _ = _args(tutorial[0])
    with pytest.raises(GradServeError) as info:
        gs.grad(network, inputs[:1])
    assert info.value.status == 422 and info.value.code == "bad_argument" and info.value.path == "inputs"
    with pytest.raises(GradServeError) as info:
        gs.grad("sha256:" + "1" * 64, inputs)
    assert info.value.status == 404
    with GradClient(live_server.url, api_key="nope") as wrong, pytest.raises(GradServeError) as info:
        wrong.ops()
    assert info.value.status == 401 and info.value.code == "unauthorized"


def test_delete_ops_ready(gs, live_server, tutorial):
    network = dict(tutorial[0]["request"]["network"], name="client-delete")
    with GradClient(live_server.url, api_key=KEY_B) as other:
        nid = other.register(network)["network_id"]
        other.delete(nid)
        with pytest.raises(GradServeError) as info:
            other.delete(nid)
        assert info.value.status == 404
    assert "MatMul" in {op["name"] for op in gs.ops()}
    assert gs.ready()


def test_the_client_imports_no_jax() -> None:
    import subprocess
    import sys

    from tests.support import ROOT

    code = "import sys, gradserve_client; assert 'jax' not in sys.modules, 'the client imported JAX'"
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]


# -- the functional routes, through MindSpore's golden cases -------------------------------------

from tests.service.test_functional_golden import CASES, _compare  # noqa: E402

_VECTORS = {"/jvp": "tangents", "/vjp": "cotangents", "/hvp": "vectors"}
_ONE_OF_EACH = {}
for _case in CASES:
    _ONE_OF_EACH.setdefault((_case["route"], "batched" in _case["request"], "has_aux" in _case["request"]), _case)


def _nested(value):
    if isinstance(value, list):
        return [_nested(v) for v in value]
    return array(value)


def _as_wire(value):
    """The client's answer (arrays) back as wire tensors, to compare with the golden answer."""
    if isinstance(value, list):
        return [_as_wire(v) for v in value]
    if isinstance(value, (int, str)):
        return value
    arr = np.asarray(value)
    from engine.tensors import encode_tensor  # noqa: PLC0415

    return encode_tensor(arr, "b64")


@pytest.mark.parametrize("encoding", ENCODINGS)
@pytest.mark.parametrize("case", list(_ONE_OF_EACH.values()), ids=[c["id"] for c in _ONE_OF_EACH.values()])
def test_functional_routes(gs, case, encoding):
    request = dict(case["request"])
    network, inputs = request.pop("network"), [array(t) for t in request.pop("inputs")]
    route = case["route"]
    if route == "/grad":
        if "sens" in request:
            request["sens"] = _nested(request["sens"])
        answer = gs.grad(network, inputs, encoding=encoding, **request)
        fields = {k: getattr(answer, k) for k in case["expected"]}
    else:
        method = getattr(gs, route[1:])
        vectors = _VECTORS.get(route)
        args = (network, inputs) + ((_nested(request.pop(vectors)),) if vectors else ())
        fields = method(*args, encoding=encoding, **request).fields
    assert set(fields) == set(case["expected"])
    for name, expected in case["expected"].items():
        _compare(_as_wire(fields[name]), expected, case["rtol"], case["atol"], name)
