"""The network registry: content-addressed ``gradnet/1`` documents, per namespace, in SQLite (one
server, or several sharing one file) or PostgreSQL (many servers, many nodes).

A network is stored once, under its canonical id (``engine.Network.id``), as the document
``Network.to_json("b64")`` with its signature; a namespace (one per API key, see
:mod:`service.auth`) sees only the networks registered under it. Registering is idempotent.
Parsed :class:`engine.Network` objects are kept in an in-memory LRU, so a ``/grad`` by id costs
no I/O to the database once the network is warm.

**No stale cache.** Several servers (or Ray Serve replicas) may share one registry. A delete
through one is seen by every other at once:

- SQLite: every delete is also written to a ``deletions`` log in the same transaction; before
  :meth:`Registry.cached` answers from the LRU it asks a second connection for
  ``PRAGMA data_version`` (a read of SQLite's shared memory: no disk I/O), which changes whenever
  another connection committed; then the deletions since the last one seen are dropped from the LRU.
- PostgreSQL: a ``/grad`` by id confirms the registration with one indexed ``SELECT`` (the LRU
  saves the parse, not the round trip): NOTIFY alone arrives a moment after the commit, and a
  client can be faster. A delete also sends ``NOTIFY gradserve_registry`` in its transaction; a
  listener thread per server drops the id from the LRU, and while it is not connected the LRU is
  bypassed and the registry reported unavailable if the database is gone.

**No silent data loss.** A damaged SQLite file makes :meth:`SQLiteRegistry.open` refuse with
:class:`RegistryDamagedError`, naming the file and how to recover; only ``start_empty=True``
(``--registry-start-empty true``) moves it aside (never overwritten) and starts empty. If the
file is deleted, replaced or corrupted under a running server, every call that needs it, the
LRU included, raises :class:`RegistryUnavailableError` (503, ``/health/ready`` 503): one answer
per id on every route.

Every method here except :meth:`Registry.cached` and :meth:`Registry.check` blocks (database,
parsing): the app calls them through ``run_in_threadpool``.
"""

from __future__ import annotations

from typing import Any

from ..errors import RegistryUnavailableError
from .base import Registry, RegistryDamagedError
from .postgres import CHANNEL, PostgresRegistry
from .sqlite import NetworkRegistry, SQLiteRegistry

__all__ = ["CHANNEL", "NetworkRegistry", "PostgresRegistry", "Registry", "RegistryDamagedError",
           "RegistryUnavailableError", "SQLiteRegistry", "registry_from_settings"]


def registry_from_settings(settings: Any) -> Registry:
    """The backend the settings choose: PostgreSQL for ``registry_url``, else the SQLite file."""
    common = {"cache_size": settings.network_cache_size, "max_nodes": settings.max_nodes,
              "max_elements": settings.max_tensor_elements}
    url = getattr(settings, "registry_url", None)
    if url:
        if not url.startswith(("postgresql://", "postgres://")):
            raise ValueError(f"registry_url must be a postgresql:// URL, not {url.split(':', 1)[0]}://…")
        return PostgresRegistry(url, **common)
    return SQLiteRegistry(settings.registry_path, start_empty=getattr(settings, "registry_start_empty", False),
                          **common)
