"""The committed schema (openapi/openapi.json, `make openapi`) is what the app serves, and what it
says holds: the routes of API.md, the error schema, and examples that a server accepts."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import engine
from service import models, openapi_export
from tests.support import ROOT
from tests.support.servers import KEY_FUZZ

COMMITTED = ROOT / "openapi" / "openapi.json"
ROUTES = {
    "/grad": {"post"},
    "/jvp": {"post"},
    "/vjp": {"post"},
    "/jacobian": {"post"},
    "/hvp": {"post"},
    "/networks": {"get", "post"},
    "/networks/{network_id}": {"get", "delete"},
    "/ops": {"get"},
    "/health/live": {"get"},
    "/health/ready": {"get"},
    "/metrics": {"get"},
    # UM-Bridge (API.md section 10)
    "/Info": {"get"},
    "/InputSizes": {"post"},
    "/OutputSizes": {"post"},
    "/ModelInfo": {"post"},
    "/Evaluate": {"post"},
    "/Gradient": {"post"},
    "/ApplyJacobian": {"post"},
    "/ApplyHessian": {"post"},
    # Open Inference Protocol v2 (API.md section 10)
    "/v2": {"get"},
    "/v2/health/live": {"get"},
    "/v2/health/ready": {"get"},
    "/v2/models/{model}": {"get"},
    "/v2/models/{model}/versions/{version}": {"get"},
    "/v2/models/{model}/ready": {"get"},
    "/v2/models/{model}/versions/{version}/ready": {"get"},
    "/v2/models/{model}/config": {"get"},
    "/v2/models/{model}/versions/{version}/config": {"get"},
    "/v2/models/{model}/infer": {"post"},
    "/v2/models/{model}/versions/{version}/infer": {"post"},
}
#: routes whose errors have another protocol's shape, not gradserve's ErrorResponse
OTHER_ERRORS = {p: "UmbridgeError" for p in ("/Info", "/InputSizes", "/OutputSizes", "/ModelInfo", "/Evaluate",
                                             "/Gradient", "/ApplyJacobian", "/ApplyHessian")}
OTHER_ERRORS.update({p: "OipError" for p in ROUTES if p.startswith("/v2")})


@pytest.fixture(scope="module")
def committed():
    return json.loads(COMMITTED.read_text())


def test_committed_schema_is_what_the_server_serves(client, committed):
    served = client.get("/openapi.json")
    assert served.status_code == 200
    assert served.json() == committed, "openapi/openapi.json is stale: run `make openapi`"


def test_export_reproduces_the_committed_file(tmp_path):
    out = tmp_path / "openapi.json"
    assert openapi_export.main([str(out)]) == 0
    assert out.read_text() == COMMITTED.read_text(), "openapi/openapi.json is stale: run `make openapi`"


def test_routes_and_errors_are_documented(committed):
    assert {p: set(ops) for p, ops in committed["paths"].items()} == ROUTES
    for path, operations in committed["paths"].items():
        for method, op in operations.items():
            for status, response in op["responses"].items():
                if int(status) >= 400:
                    schema = response["content"]["application/json"]["schema"]
                    shape = OTHER_ERRORS.get(path, "ErrorResponse")
                    assert schema == {"$ref": f"#/components/schemas/{shape}"}, (method, path, status)
            if not path.startswith("/health/"):
                assert {"bearerAuth": []} in op["security"]
    grad = committed["paths"]["/grad"]["post"]
    assert set(grad["responses"]) == {"200", "400", "401", "404", "413", "422", "500", "503", "504"}
    assert "Retry-After" in grad["responses"]["503"]["headers"]
    assert set(grad["requestBody"]["content"]) == {"application/json", "application/octet-stream"}
    for name in ("Tensor", "Network", "GradRequest", "GradResponse", "NetworkInfo", "ErrorResponse"):
        assert name in committed["components"]["schemas"], name


def test_tensor_examples_decode():
    for example in models.Tensor.model_config["json_schema_extra"]["examples"]:
        if "binary_data_size" in example:
            continue
        engine.decode_tensor(example)


def test_network_example_registers(client):
    (example,) = models.Network.model_config["json_schema_extra"]["examples"]
    r = client.post("/networks", json=example)
    assert r.status_code in (200, 201), r.text
    assert set(r.json()) >= set(models.NetworkInfo.model_fields)


def test_grad_request_examples_are_accepted(client):
    (network,) = models.Network.model_config["json_schema_extra"]["examples"]
    network_id = client.post("/networks", json=network).json()["network_id"]
    for example in models.GradRequest.model_config["json_schema_extra"]["examples"]:
        if "network_id" in example:
            example = dict(example, network_id=network_id)
        r = client.post("/grad", json=example)
        assert r.status_code == 200, r.text
        body = r.json()
        assert set(body) <= set(models.GradResponse.model_fields)
        models.GradResponse.model_validate(body)


@pytest.mark.parametrize(("route", "request_model", "response_model"), [
    ("/jvp", models.JvpRequest, models.JvpResponse),
    ("/vjp", models.VjpRequest, models.VjpResponse),
    ("/jacobian", models.JacobianRequest, models.JacobianResponse),
    ("/hvp", models.HvpRequest, models.HvpResponse),
])
def test_transform_request_examples_are_accepted(client, route, request_model, response_model):
    for example in request_model.model_config["json_schema_extra"]["examples"]:
        r = client.post(route, json=example)
        assert r.status_code == 200, r.text
        body = r.json()
        assert set(body) <= set(response_model.model_fields)
        response_model.model_validate(body)


def test_schemathesis(live_server, tmp_path):
    """Generated requests (schema examples, boundaries, fuzzing, stateful sequences): no 5xx, and
    every answer conforms to the schema (status, content type, headers, body, Allow, auth).
    ``positive_data_acceptance`` is left out: a schema cannot say that node names must resolve."""
    exe = shutil.which("schemathesis", path=str(Path(sys.executable).parent)) or shutil.which("schemathesis")
    if exe is None:
        pytest.skip("schemathesis is not installed")
    result = subprocess.run(
        [exe, "run", str(COMMITTED), "--url", live_server.url, "-H", f"Authorization: Bearer {KEY_FUZZ}",
         "--checks", "all", "--exclude-checks", "positive_data_acceptance", "--max-examples", "10",
         "--seed", "20240611", "--generation-database", "none", "--no-color"],
        capture_output=True, text=True, timeout=240, cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
