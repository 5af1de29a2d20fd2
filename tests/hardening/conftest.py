"""Fixtures of the hardening tests: real servers (``server_factory`` of the
:mod:`tests.support.servers` plugin), and a record of the figures the tests measure (written to
``var/hardening-figures.json`` and printed at the end of the session; ``docs/reliability.md``
quotes them).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hardening_helpers import FUZZ_KEY, HARD_KEY, HARD_LIMITS

HERE = Path(__file__).resolve().parent


@pytest.fixture(scope="session")
def hard_server(server_factory: Any) -> Any:
    """The server that the hostile-input, no-code and fuzz tests share (none of them kills it):
    one CPU worker, API keys on, the limits of ``HARD_LIMITS``."""
    return server_factory(api_keys=f"{HARD_KEY},{FUZZ_KEY}", **HARD_LIMITS)


@pytest.fixture
def hard(hard_server: Any) -> Iterator[Any]:
    """An httpx client of the shared server, with ``HARD_KEY``."""
    with hard_server.client(HARD_KEY) as c:
        yield c


_FIGURES: dict[str, Any] = {}
FIGURES_PATH = HERE.parents[1] / "var" / "hardening-figures.json"


@pytest.fixture(scope="session")
def figures() -> Iterator[dict[str, Any]]:
    """``figures[name] = value``: a measured number for docs/reliability.md."""
    yield _FIGURES


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if not _FIGURES:
        return
    FIGURES_PATH.parent.mkdir(parents=True, exist_ok=True)
    previous: dict[str, Any] = {}
    if FIGURES_PATH.exists():
        try:
            previous = json.loads(FIGURES_PATH.read_text())
        except ValueError:
            previous = {}
    previous.update(_FIGURES)
    FIGURES_PATH.write_text(json.dumps(previous, indent=2, sort_keys=True) + "\n")


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if _FIGURES:
        terminalreporter.section("hardening figures")
        for key in sorted(_FIGURES):
            terminalreporter.write_line(f"{key}: {_FIGURES[key]}")
