"""The client's tests use the service tests' fixtures (``client``, ``tutorial``): the same real
server, the same seed cases."""

from tests.service.conftest import client, tutorial  # noqa: F401
