"""Fixtures of the service tests. The servers themselves (``live_server``, ``server_factory``) come
from the :mod:`tests.support.servers` plugin:

- ``client``: an httpx client of the shared ``live_server`` with ``KEY_A``;
- ``tutorial`` (session): the cases of the seed tutorial fixture.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.support import FIXTURES
from tests.support.servers import KEY_A, LiveServer


@pytest.fixture
def client(live_server: LiveServer) -> Iterator[httpx.Client]:
    with live_server.client(KEY_A) as c:
        yield c


@pytest.fixture(scope="session")
def tutorial() -> list[dict[str, Any]]:
    return json.loads((FIXTURES / "tutorial.json").read_text())["cases"]
