"""docker-compose.yml: valid under the Compose Specification, with the CPU/GPU profiles we document.

The schema in compose-spec.json is the Compose Specification JSON schema as shipped, unmodified,
in the PyPI package docker-compose 1.29.2 (file compose/config/compose_spec.json, Apache-2.0).
It covers everything this file uses (profiles, deploy.resources.reservations.devices,
healthcheck, named volumes, extension fields). The stack itself is started with podman-compose
by deploy/container-test.sh; these are the checks that need no container engine.
"""

from __future__ import annotations

import copy
import json
import re

import jsonschema
import pytest
import yaml

from ._util import ROOT

COMPOSE = ROOT / "docker-compose.yml"
SCHEMA = ROOT / "tests" / "deploy" / "compose-spec.json"
DURATION = re.compile(r"^(\d+(\.\d+)?(us|ms|s|m|h))+$")
INTERPOLATION = re.compile(r"\$\{([^}]*)\}")


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


@pytest.fixture(scope="module")
def validator() -> jsonschema.protocols.Validator:
    schema = json.loads(SCHEMA.read_text())
    assert schema["title"] == "Compose Specification"
    jsonschema.Draft201909Validator.check_schema(schema)
    return jsonschema.Draft201909Validator(schema)


def test_valid_against_compose_spec(compose, validator):
    errors = sorted(validator.iter_errors(compose), key=lambda e: list(e.absolute_path))
    report = "\n".join(f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors)
    assert not errors, report


@pytest.mark.parametrize(
    "path, bad",
    [
        (
            (
                "services",
                "gradserve-gpu",
                "deploy",
                "resources",
                "reservations",
                "devices",
                0,
                "capabilities",
            ),
            "gpu",
        ),
        (("services", "gradserve-cpu", "healthcheck", "intervall"), "30s"),
        (("services", "gradserve-cpu", "profiles"), "cpu"),
        (("services", "gradserve-cpu", "volumes"), "gradserve-data:/data"),
    ],
)
def test_schema_is_not_vacuous(compose, validator, path, bad):
    broken = copy.deepcopy(compose)
    node = broken
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = bad
    assert list(validator.iter_errors(broken)), (
        f"schema accepted a broken {'/'.join(map(str, path))}"
    )


def test_services_and_profiles(compose):
    services = compose["services"]
    assert set(services) == {"gradserve-cpu", "gradserve-gpu"}
    assert services["gradserve-cpu"]["profiles"] == ["cpu"]
    assert services["gradserve-gpu"]["profiles"] == ["gpu"]


def test_gpu_service(compose):
    gpu = compose["services"]["gradserve-gpu"]
    assert gpu["build"]["args"]["VARIANT"] == "cuda"
    assert gpu["environment"]["GRADSERVE_DEVICE"] == "gpu"
    assert gpu["deploy"]["resources"]["reservations"]["devices"] == [
        {"driver": "nvidia", "count": "all", "capabilities": ["gpu"]}
    ]
    cpu = compose["services"]["gradserve-cpu"]
    assert cpu["build"]["args"]["VARIANT"] == "cpu"
    assert cpu["environment"]["GRADSERVE_DEVICE"] == "cpu"
    assert "deploy" not in cpu


def test_data_volume(compose):
    assert "gradserve-data" in compose["volumes"]
    for name, svc in compose["services"].items():
        assert "gradserve-data:/data" in svc["volumes"], name
        env = svc["environment"]
        assert env["GRADSERVE_REGISTRY_PATH"].startswith("/data/"), name
        assert env["GRADSERVE_COMPILE_CACHE_DIR"].startswith("/data/"), name


def test_healthchecks(compose):
    for name, svc in compose["services"].items():
        hc = svc["healthcheck"]
        test = hc["test"]
        assert test[0] == "CMD", name
        assert any("/health/live" in part for part in test), name
        code = test[test.index("-c") + 1]
        compile(code, f"<{name} healthcheck>", "exec")
        assert "$" not in code, "a $ would be interpolated by compose"
        for key in ("interval", "timeout", "start_period"):
            assert DURATION.match(hc[key]), (name, key, hc[key])
        assert isinstance(hc["retries"], int) and hc["retries"] > 0


def test_port_and_settings_come_from_the_environment(compose):
    for svc in compose["services"].values():
        (mapping,) = svc["ports"]
        assert mapping.endswith(":8000"), mapping
        assert "${GRADSERVE_PORT:-8000}" in mapping
        env = svc["environment"]
        assert env["GRADSERVE_HOST"] == "0.0.0.0"
        assert str(env["GRADSERVE_PORT"]) == "8000", (
            "the container port is fixed; GRADSERVE_PORT on the host picks the published one"
        )
        assert env["GRADSERVE_TIMEOUT_MS"] == "${GRADSERVE_TIMEOUT_MS:-30000}"
        # unset unless the shell sets it: the service's own default (one per GPU, else 1)
        assert "GRADSERVE_WORKERS" in env and env["GRADSERVE_WORKERS"] is None


def test_interpolations_are_well_formed():
    text = COMPOSE.read_text()
    exprs = INTERPOLATION.findall(text)
    assert exprs
    for expr in exprs:
        assert re.fullmatch(r"[A-Z_][A-Z0-9_]*(:?[-?+][^${}]*)?", expr), expr
    # no bare $VAR that would be interpolated by surprise
    assert not re.search(r"\$(?![{$])", text)
