"""Access control (issue item 5): API keys from GRADSERVE_API_KEYS and from a keys file; every route
but /health/* needs ``Authorization: Bearer <key>``; each key sees only its own networks; keys are
compared in constant time."""

from __future__ import annotations

import ast
import inspect
import json
import textwrap

import httpx
import pytest
from hardening_helpers import assert_healthy, tutorial_request

from service import auth
from service.http import umbridge
from tests.support import ROOT
from tests.support.api_contract import error_of

ROUTES = [(method.upper(), path) for path, ops in json.loads((ROOT / "openapi" / "openapi.json").read_text())["paths"].items()
          for method in ops]
SAMPLE = {"/networks/{network_id}": "/networks/sha256:" + "0" * 64}


@pytest.fixture(scope="module")
def env_keys_server(server_factory):
    """Keys from the environment, as a deployment would set them."""
    return server_factory(env={"GRADSERVE_API_KEYS": "k1,k2"})


@pytest.fixture(scope="module")
def file_keys_server(server_factory, tmp_path_factory):
    keys = tmp_path_factory.mktemp("keys") / "api-keys"
    keys.write_text("# gradserve API keys, one a line\nfile-key-1\n\n  file-key-2  \n# retired-key\n")
    keys.chmod(0o600)
    return server_factory(api_keys_file=keys)


def _refused(r: httpx.Response, path: str) -> None:
    """A 401 in the route's protocol's error shape (UM-Bridge's on its routes: API.md section 10)."""
    if path in umbridge.PATHS:
        assert r.status_code == 401, (path, r.text)
        assert r.json() == {"error": {"type": "Unauthorized", "message": r.json()["error"]["message"]}}
        assert r.headers["www-authenticate"].startswith("Basic")
        return
    if path.startswith("/v2"):  # OIP's own error body, {"error": "<message>"} (API.md section 10)
        assert r.status_code == 401 and set(r.json()) == {"error"} and isinstance(r.json()["error"], str), r.text
        return
    err = error_of(r, 401, "unauthorized")
    assert err["path"] == "headers.authorization"


def _call(c: httpx.Client, method: str, path: str) -> httpx.Response:
    url = SAMPLE.get(path, path)
    if method == "POST":
        body = tutorial_request() if path == "/grad" else tutorial_request()["network"]
        return c.request(method, url, json=body)
    return c.request(method, url)


@pytest.mark.parametrize("keys", ["env", "file"])
def test_every_route_but_health_needs_a_key(request, keys):
    server = request.getfixturevalue(f"{keys}_keys_server")
    good, other = ("k1", "k2") if keys == "env" else ("file-key-1", "file-key-2")
    wrong = ["Bearer nope", f"Bearer {good}x", f"Bearer {good[:-1]}", f"Basic {good}", good, f"Bearer  {good} extra",
             "Bearer", "Bearer retired-key", "Bearer # retired-key", "Bearer k1,k2"]
    routes = ROUTES + [("GET", "/docs"), ("GET", "/openapi.json"), ("GET", "/no/such/route"), ("PUT", "/grad")]
    with httpx.Client(base_url=server.url, timeout=30) as anonymous:
        for method, path in routes:
            r = _call(anonymous, method, path)
            if path.startswith(("/health/", "/v2/health/")):  # open (OIP health as /health/*)
                assert r.status_code == 200, (method, path, r.text)
                continue
            _refused(r, path)
            if path not in umbridge.PATHS:
                assert r.headers["www-authenticate"].startswith("Bearer")
            for header in wrong:
                with httpx.Client(base_url=server.url, headers={"Authorization": header}, timeout=30) as bad:
                    _refused(_call(bad, method, path), path)
    for key in (good, other):
        with server.client(key) as c:
            for method, path in routes:
                r = _call(c, method, path)
                assert r.status_code != 401, (method, path, r.text)
                assert r.status_code < 500, (method, path, r.text)
    assert_healthy(server, good)


def test_networks_are_per_key(env_keys_server):
    network = {**tutorial_request()["network"], "name": "per-key"}
    with env_keys_server.client("k1") as k1, env_keys_server.client("k2") as k2:
        r = k1.post("/networks", json=network)
        assert r.status_code == 201, r.text
        network_id = r.json()["network_id"]
        grad_by_id = {"network_id": network_id, "inputs": tutorial_request()["inputs"]}
        assert network_id in [n["network_id"] for n in k1.get("/networks").json()["networks"]]
        # invisible to k2: not listed, not readable, not deletable, not usable by id
        assert network_id not in [n["network_id"] for n in k2.get("/networks").json()["networks"]]
        assert error_of(k2.get(f"/networks/{network_id}"), 404, "not_found")["path"] == "network_id"
        assert error_of(k2.delete(f"/networks/{network_id}"), 404, "not_found")["path"] == "network_id"
        assert error_of(k2.post("/grad", json=grad_by_id), 404, "not_found")["path"] == "network_id"
        # still k1's, untouched
        assert k1.get(f"/networks/{network_id}").status_code == 200
        assert k1.post("/grad", json=grad_by_id).status_code == 200
        # k2 registering the same network gets its own registration (201, not "already there")...
        assert k2.post("/networks", json=network).status_code == 201
        # ...and deleting it leaves k1's in place
        assert k2.delete(f"/networks/{network_id}").status_code == 204
        assert error_of(k2.get(f"/networks/{network_id}"), 404, "not_found")
        assert k1.post("/grad", json=grad_by_id).status_code == 200
        assert k1.delete(f"/networks/{network_id}").status_code == 204
        assert error_of(k1.post("/grad", json=grad_by_id), 404, "not_found")


def test_a_commented_key_in_the_file_is_not_a_key(file_keys_server):
    with file_keys_server.client("retired-key") as c:
        error_of(c.get("/networks"), 401, "unauthorized")
    with file_keys_server.client("file-key-2") as c:  # surrounding spaces on its line are not part of it
        assert c.get("/networks").status_code == 200


def test_keys_are_compared_in_constant_time():
    """A source check: the token is compared with hmac.compare_digest, against every key, with no
    early exit and no ==/in on the token or a key."""
    source = textwrap.dedent(inspect.getsource(auth.Authenticator.namespace))
    tree = ast.parse(source)
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)
             and n.func.attr == "compare_digest"]
    assert calls, "Authenticator.namespace does not use hmac.compare_digest"
    assert "import hmac" in inspect.getsource(auth)
    loops = [n for n in ast.walk(tree) if isinstance(n, ast.For)]
    assert loops and any(c in ast.walk(loop) for loop in loops for c in calls), "compare_digest is not in the loop over keys"
    for loop in loops:
        assert not [n for n in ast.walk(loop) if isinstance(n, (ast.Break, ast.Return))], "the loop over keys exits early"
    secret_names = {"token", "key", "authorization"}
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare) and any(isinstance(op, (ast.Eq, ast.NotEq, ast.In, ast.NotIn)) for op in node.ops):
            names = {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}
            assert not names & secret_names, f"a non-constant-time comparison: {ast.unparse(node)}"
    # and it behaves: every configured key matches, nothing else does
    a = auth.Authenticator(["k1", "k2"])
    assert a.namespace(b"Bearer k1") == auth.namespace_of("k1") != a.namespace(b"Bearer k2")
    assert a.namespace(b"Bearer k3") is None and a.namespace(None) is None and a.namespace(b"k1") is None
