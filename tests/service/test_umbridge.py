"""UM-Bridge (API.md section 10) against a live server, through the ``umbridge`` client from PyPI:
``Info``, the sizes, ``ModelInfo``, ``Evaluate``, ``Gradient``, ``ApplyJacobian`` and
``ApplyHessian`` on a network with two inputs (one of them 2-D), a parameter and two outputs;
each answer equal to the one ``/vjp``, ``/grad``, ``/jvp`` or ``/hvp`` gives for the same call
(and ApplyHessian to its closed form too); API keys as HTTP Basic auth."""

from __future__ import annotations

import base64
import subprocess
import sys

import httpx
import numpy as np
import pytest
import requests
import umbridge

from tests.support import ROOT
from tests.support.readme_examples import run_readme_example
from tests.support.servers import KEY_A, KEY_B

X = np.array([[0.1, 0.2, 0.3], [0.4, 0.5, 0.6]], np.float32)
Y = np.array([1.0, 2.0, -3.0], np.float32)
Z = np.float32(1.5)

#: s = Sin(x * y * z) (float32[2, 3]) and t = ReduceSum(s, axis 1) (float32[2]); z a parameter
NET = {
    "format": "gradnet/1",
    "name": "umbridge-two-by-two",
    "inputs": [{"name": "x", "dtype": "float32", "shape": [2, 3]}, {"name": "y", "dtype": "float32", "shape": [3]}],
    "parameters": [{"name": "z", "value": {"dtype": "float32", "shape": [], "data": [float(Z)]}}],
    "nodes": [
        {"name": "xy", "op": "Mul", "inputs": ["x", "y"]},
        {"name": "u", "op": "Mul", "inputs": ["xy", "z"]},
        {"name": "s", "op": "Sin", "inputs": ["u"]},
        {"name": "t", "op": "ReduceSum", "inputs": ["s"], "attrs": {"axis": [1], "keep_dims": False}},
    ],
    "outputs": ["s", "t"],
}
#: the same without a declared shape: not a UM-Bridge model
UNSHAPED = {**NET, "name": "umbridge-unshaped", "inputs": [{"name": "x"}, {"name": "y", "dtype": "float32"}]}


def tensor(a: np.ndarray) -> dict:
    a = np.asarray(a, np.float32)
    return {"dtype": "float32", "shape": list(a.shape), "data": a.ravel().tolist()}


def data(t: dict) -> list[float]:
    return np.asarray(t["data"], np.float32).ravel().tolist()


def f32(values: list[float]) -> list[float]:
    """The client's numbers as float32 (orjson writes float32 answers as their shortest repr)."""
    return np.asarray(values, np.float32).tolist()


@pytest.fixture(scope="module")
def network_id(live_server) -> str:
    with live_server.client(KEY_A) as c:
        r = c.post("/networks", json=NET)
        assert r.status_code in (200, 201), r.text
        assert c.post("/networks", json=UNSHAPED).status_code in (200, 201)
        return r.json()["network_id"]


@pytest.fixture(scope="module")
def url(live_server) -> str:
    """The server's URL with KEY_A as the Basic auth password (what a UM-Bridge user writes)."""
    return live_server.url.replace("://", f"://anyone:{KEY_A}@")


@pytest.fixture(scope="module")
def model(url, network_id) -> umbridge.HTTPModel:
    return umbridge.HTTPModel(url, network_id.removeprefix("sha256:"))


INPUTS = [X.ravel().tolist(), Y.tolist()]


def test_info_lists_the_keys_models(url, network_id, live_server):
    info = requests.get(f"{url}/Info")
    assert info.status_code == 200
    assert info.json()["protocolVersion"] == 1.0 and isinstance(info.json()["protocolVersion"], float)
    names = umbridge.supported_models(url)
    assert network_id.removeprefix("sha256:") in names
    with live_server.client(KEY_A) as c:
        unshaped = c.post("/networks", json=UNSHAPED).json()["network_id"]
    assert unshaped.removeprefix("sha256:") not in names  # its inputs declare no shapes
    other = live_server.url.replace("://", f"://anyone:{KEY_B}@")
    assert network_id.removeprefix("sha256:") not in umbridge.supported_models(other)


def test_sizes_and_model_info(model):
    assert model.get_input_sizes() == [6, 3]
    assert model.get_output_sizes() == [6, 2]
    assert model.supports_evaluate() and model.supports_gradient()
    assert model.supports_apply_jacobian() and model.supports_apply_hessian()


def test_evaluate_equals_the_value_of_vjp(model, network_id, client):
    out = model(INPUTS)
    r = client.post("/vjp", json={"network_id": network_id, "inputs": [tensor(X), tensor(Y)],
                                  "cotangents": [tensor(np.zeros((2, 3))), tensor(np.zeros(2))]})
    assert r.status_code == 200, r.text
    assert [f32(o) for o in out] == [data(v) for v in r.json()["value"]]
    s = np.sin(X * Y * Z)
    np.testing.assert_allclose(out[0], s.ravel(), rtol=1e-6)
    np.testing.assert_allclose(out[1], s.sum(axis=1), rtol=1e-6)


@pytest.mark.parametrize("out_wrt", [0, 1])
@pytest.mark.parametrize("in_wrt", [0, 1])
def test_gradient_equals_vjp_and_grad(model, network_id, client, out_wrt, in_wrt):
    sens = [[1.0, -2.0, 0.5, 3.0, 0.25, -1.0], [2.0, -0.5]][out_wrt]
    got = model.gradient(out_wrt, in_wrt, INPUTS, sens)
    shapes = [(2, 3), (2,)]
    cotangents = [tensor(np.reshape(sens, shapes[k]) if k == out_wrt else np.zeros(shapes[k])) for k in (0, 1)]
    vjp = client.post("/vjp", json={"network_id": network_id, "inputs": [tensor(X), tensor(Y)],
                                    "cotangents": cotangents})
    assert vjp.status_code == 200, vjp.text
    assert f32(got) == data(vjp.json()["gradients"][in_wrt])
    grad = client.post("/grad", json={"network_id": network_id, "inputs": [tensor(X), tensor(Y)],
                                      "get_all": True, "sens_param": True, "sens": cotangents})
    assert grad.status_code == 200, grad.text
    assert f32(got) == data(grad.json()["gradients"][in_wrt])
    assert len(got) == [6, 3][in_wrt]


@pytest.mark.parametrize("out_wrt", [0, 1])
@pytest.mark.parametrize("in_wrt", [0, 1])
def test_apply_jacobian_equals_jvp(model, network_id, client, out_wrt, in_wrt):
    vec = [[0.5, -1.0, 2.0, 0.0, 1.0, 3.0], [1.0, 0.0, -2.0]][in_wrt]
    got = model.apply_jacobian(out_wrt, in_wrt, INPUTS, vec)
    tangents = [tensor(np.reshape(vec, X.shape)) if in_wrt == 0 else tensor(np.zeros_like(X)),
                tensor(vec) if in_wrt == 1 else tensor(np.zeros_like(Y))]
    r = client.post("/jvp", json={"network_id": network_id, "inputs": [tensor(X), tensor(Y)], "tangents": tangents})
    assert r.status_code == 200, r.text
    assert f32(got) == data(r.json()["jvp"][out_wrt])
    assert len(got) == [6, 2][out_wrt]


def _hessian_closed_form(sens_t: np.ndarray, vec: np.ndarray, in1: int, in2: int) -> np.ndarray:
    """The Hessian of sens . t (t = sum_j sin(x_kj y_j z)) in (in1, in2), applied to vec."""
    x, y, z = X.astype(np.float64), Y.astype(np.float64), float(Z)
    u = x * y * z
    w = sens_t[:, None]  # d/dt_k of sens . t
    if (in1, in2) == (0, 0):  # d2/dx_kj dx_kj = -w y^2 z^2 sin(u): diagonal
        return (-w * (y * z) ** 2 * np.sin(u) * vec.reshape(2, 3)).ravel()
    if (in1, in2) == (1, 1):  # d2/dy_j dy_j = -sum_k w x^2 z^2 sin(u): diagonal
        return (-(w * (x * z) ** 2 * np.sin(u)).sum(axis=0)) * vec
    mixed = w * z * (np.cos(u) - u * np.sin(u))  # d2/dx_kj dy_j
    if (in1, in2) == (0, 1):
        return (mixed * vec[None, :]).ravel()
    return (mixed * vec.reshape(2, 3)).sum(axis=0)


@pytest.mark.parametrize(("in1", "in2"), [(0, 0), (0, 1), (1, 0), (1, 1)])
def test_apply_hessian_equals_hvp_and_its_closed_form(model, network_id, client, in1, in2):
    sens = [2.0, -0.5]
    vec = [[0.5, -1.0, 2.0, 0.0, 1.0, 3.0], [1.0, 0.5, -2.0]][in2]
    got = model.apply_hessian(1, in1, in2, INPUTS, sens, vec)
    assert len(got) == [6, 3][in1]
    np.testing.assert_allclose(got, _hessian_closed_form(np.array(sens), np.array(vec), in1, in2),
                               rtol=2e-5, atol=2e-6)
    # /hvp on the scalar sens . t written out as a network of its own (sens as an input)
    scalar = {**NET, "name": "umbridge-sens-dot-t",
              "inputs": [*NET["inputs"], {"name": "sens", "dtype": "float32", "shape": [2]}],
              "nodes": [*NET["nodes"], {"name": "w", "op": "Mul", "inputs": ["t", "sens"]},
                        {"name": "f", "op": "ReduceSum", "inputs": ["w"], "attrs": {"axis": [], "keep_dims": False}}],
              "outputs": ["f"]}
    shapes = [(2, 3), (3,)]
    if in1 == in2:  # an int position takes and answers one tensor
        positions, vectors = in1, tensor(np.reshape(vec, shapes[in2]))
    else:  # H[in1, in1] @ 0 + H[in1, in2] @ vec
        positions, vectors = [in1, in2], [tensor(np.zeros(shapes[in1])), tensor(np.reshape(vec, shapes[in2]))]
    r = client.post("/hvp", json={"network": scalar, "inputs": [tensor(X), tensor(Y), tensor(sens)],
                                  "grad_position": positions, "vectors": vectors})
    assert r.status_code == 200, r.text
    hvp = r.json()["hvp"]
    assert f32(got) == data(hvp if in1 == in2 else hvp[0])


def test_apply_hessian_of_a_2d_output(model):
    """outWrt 0 (s, of x's shape): sens weights every element; only the diagonal of x's Hessian."""
    sens = [1.0, -2.0, 0.5, 3.0, 0.25, -1.0]
    vec = [0.5, -1.0, 2.0, 0.0, 1.0, 3.0]
    got = model.apply_hessian(0, 0, 0, INPUTS, sens, vec)
    expected = -np.array(sens) * (np.tile(Y, 2) * float(Z)) ** 2 * np.sin(X * Y * Z).ravel() * np.array(vec)
    np.testing.assert_allclose(got, expected, rtol=2e-5, atol=2e-6)


# -- API keys -------------------------------------------------------------------------------------


def _basic(key: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"user:{key}".encode()).decode()}


def test_basic_auth_and_its_refusals(live_server, network_id):
    name = network_id.removeprefix("sha256:")
    base = live_server.url
    bare = httpx.post(f"{base}/InputSizes", json={"name": name})
    assert bare.status_code == 401
    assert bare.json()["error"]["type"] == "Unauthorized" and set(bare.json()["error"]) == {"type", "message"}
    assert bare.headers["www-authenticate"].startswith("Basic")
    assert httpx.get(f"{base}/Info").status_code == 401
    wrong = httpx.post(f"{base}/InputSizes", json={"name": name}, headers=_basic("nope"))
    assert wrong.status_code == 401 and wrong.json()["error"]["type"] == "Unauthorized"
    ok = httpx.post(f"{base}/InputSizes", json={"name": name}, headers=_basic(KEY_A))
    assert ok.status_code == 200 and ok.json() == {"inputSizes": [6, 3]}
    bearer = httpx.post(f"{base}/InputSizes", json={"name": name}, headers={"Authorization": f"Bearer {KEY_A}"})
    assert bearer.status_code == 200 and bearer.json() == {"inputSizes": [6, 3]}
    # another key's namespace has no such model
    other = httpx.post(f"{base}/InputSizes", json={"name": name}, headers=_basic(KEY_B))
    assert other.status_code == 400 and other.json()["error"]["type"] == "ModelNotFound"
    # Basic is for the UM-Bridge routes only: gradserve's own routes stay Bearer
    assert httpx.get(f"{base}/networks", headers=_basic(KEY_A)).status_code == 401


def test_the_client_without_the_key_is_refused(live_server, network_id):
    with pytest.raises(Exception):  # noqa: B017 - the client's GET /Info answer has no protocolVersion
        umbridge.HTTPModel(live_server.url, network_id.removeprefix("sha256:"))


def test_shared_memory_is_declined_and_the_client_falls_back(url, network_id, capsys):
    m = umbridge.HTTPModel(url, network_id.removeprefix("sha256:"), use_shmem=True)
    assert "Using HTTP instead" in capsys.readouterr().out
    assert m.supports_shmem() is False
    assert len(m(INPUTS)[1]) == 2


# -- the README's example -------------------------------------------------------------------------


def test_readme_umbridge_example_prints_as_shown(live_server):
    stdout = run_readme_example("umbridge_client.py", live_server.url, KEY_A)  # the snippet is the script's
    assert "Gradient: [4.5099998, 2.7, 3.6000001," in stdout  # the tutorial's gradient, as /grad gives it


# -- UM-Bridge's own protocol tests ---------------------------------------------------------------

CONFORMITY = ROOT / "tests" / "support" / "umbridge_conformity"


@pytest.mark.parametrize("input_value", ["0.0", "0.5"])
def test_umbridges_own_protocol_tests_pass(server_factory, tmp_path, input_value):
    """testing/protocol_conformity_1.0 of the umbridge repository (vendored, unchanged), run as its
    Dockerfile runs it (pytest, --model_url), on a server of its own (the suite tests the first
    model /Info lists), API key in the URL as UM-Bridge users give it."""
    server = server_factory(api_keys="umbridge-conformity")
    with server.client("umbridge-conformity") as c:
        assert c.post("/networks", json=NET).status_code == 201
    (tmp_path / "test_model_schema.py").write_text((CONFORMITY / "suite.py").read_text())
    (tmp_path / "conftest.py").write_text((CONFORMITY / "conftest_suite.py").read_text())
    url = server.url.replace("://", "://user:umbridge-conformity@")
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_model_schema.py",
                           f"--model_url={url}", f"--input_value={input_value}"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert "22 passed" in done.stdout, done.stdout[-2000:]
