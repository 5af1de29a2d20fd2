"""What every registry backend shares: the namespaces' semantics, the LRU of parsed networks and
its invalidation, and the errors (the package docstring says how backends stay fresh)."""

from __future__ import annotations

import logging
import time
from typing import Any

import orjson

import engine
from engine.cache import LRUCache

from ..auth import PUBLIC
from ..errors import NotFoundError

log = logging.getLogger("gradserve.registry")


class RegistryDamagedError(RuntimeError):
    """The registry file cannot be read at start: the server refuses to start (no silent loss)."""


class Registry:
    """What every backend shares: the namespaces' semantics, the LRU and its invalidation.

    A backend implements ``open``, ``close``, ``check``, ``_transaction(fn)`` (run ``fn(execute)``
    as one transaction; ``execute(sql, params)`` returns a cursor) and ``_fresh()`` (drop from the
    LRU what others deleted; False if the LRU cannot be trusted now)."""

    #: SQL placeholders and the "insert, ignoring a duplicate" form differ between backends
    _p = "?"
    _insert_ignore = "INSERT OR IGNORE INTO"
    _ignore_tail = ""

    def __init__(self, *, cache_size: int = 128, max_nodes: int | None = None,
                 max_elements: int | None = None) -> None:
        self.cache_size = cache_size
        self.max_nodes = max_nodes
        self.max_elements = max_elements
        # parsed networks by (namespace, id); its lock is never held across I/O: the loop reads it
        self._cache: LRUCache[engine.Network] = LRUCache(cache_size)
        # bumped by every invalidation: a read that raced with one does not fill the LRU
        self._generation = 0

    # -- the interface of a backend -------------------------------------------------------------

    def open(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def check(self, *, hot: bool = False) -> None:
        """Raise :class:`RegistryUnavailableError` if the registry cannot be used now (no blocking I/O).
        ``hot``: asked on every ``/grad`` by id (:meth:`cached`): a backend may look at its storage
        less often there, as long as every other operation looks each time."""
        raise NotImplementedError

    def describe(self) -> str:
        raise NotImplementedError

    def _transaction(self, fn: Any) -> Any:
        raise NotImplementedError

    def _fresh(self) -> bool:
        raise NotImplementedError

    def _announce_delete(self, execute: Any, namespace: str, network_id: str) -> None:
        """Tell the other servers, inside the delete's transaction."""
        raise NotImplementedError

    # -- the cache ------------------------------------------------------------------------------

    def _invalidate(self, keys: Any = None) -> None:
        self._generation += 1
        if keys is None:
            self._cache.discard_where(lambda _key: True)
        else:
            for key in keys:
                self._cache.pop(key)

    def cached(self, namespace: str, network_id: str) -> engine.Network | None:
        """The parsed network if it is in the LRU and still registered (safe on the event loop:
        no disk I/O). Raises :class:`RegistryUnavailableError` like every other route would."""
        self.check(hot=True)
        if not self._fresh():
            return None
        return self._cache.get((namespace, network_id))

    def _remember(self, namespace: str, net: engine.Network, generation: int) -> None:
        if generation == self._generation:
            self._cache.put((namespace, net.id), net)

    # -- the operations (blocking) --------------------------------------------------------------

    def put(self, namespace: str, net: engine.Network) -> tuple[dict[str, Any], bool]:
        """Register ``net`` under ``namespace``: its signature, and whether it was new there."""
        signature = net.signature()
        p = self._p
        generation = self._generation

        def put(execute: Any) -> bool:
            execute(f"{self._insert_ignore} documents (network_id, signature, document) VALUES ({p}, {p}, {p})"
                    f"{self._ignore_tail}",
                    (net.id, orjson.dumps(signature), orjson.dumps(net.to_json("b64"))))
            cur = execute(f"{self._insert_ignore} registrations (namespace, network_id, created_at) "
                          f"VALUES ({p}, {p}, {p}){self._ignore_tail}", (namespace, net.id, time.time()))
            return cur.rowcount == 1

        created = self._transaction(put)
        self._remember(namespace, net, generation)
        return signature, created

    def get(self, namespace: str, network_id: str) -> engine.Network:
        """The parsed network (404 if this namespace has no such network)."""
        net = self.cached(namespace, network_id)
        if net is not None:
            return net
        generation = self._generation
        net = engine.parse_network(orjson.loads(self.document(namespace, network_id)),
                                   max_nodes=self.max_nodes, max_elements=self.max_elements)
        self._remember(namespace, net, generation)
        return net

    def document(self, namespace: str, network_id: str) -> bytes:
        """The stored ``gradnet/1`` document, as JSON bytes (404 if not visible here)."""
        p = self._p
        row = self._transaction(lambda execute: execute(
            "SELECT d.document FROM registrations r JOIN documents d USING (network_id) "
            f"WHERE r.namespace = {p} AND r.network_id = {p}",
            (namespace, network_id),
        ).fetchone())
        if row is None:
            raise _not_found(namespace, network_id)
        return bytes(row[0])

    def namespaces_of(self, network_id: str) -> list[str]:
        """The namespaces that have this network registered (the server's warm-up, which knows
        ids from the executable store but not who registered them)."""
        rows = self._transaction(lambda execute: execute(
            f"SELECT namespace FROM registrations WHERE network_id = {self._p} ORDER BY namespace",
            (network_id,)).fetchall())
        return [row[0] for row in rows]

    def list(self, namespace: str) -> list[dict[str, Any]]:
        """The signatures of this namespace's networks, oldest first."""
        rows = self._transaction(lambda execute: execute(
            "SELECT d.signature FROM registrations r JOIN documents d USING (network_id) "
            f"WHERE r.namespace = {self._p} ORDER BY r.created_at, r.network_id",
            (namespace,),
        ).fetchall())
        return [orjson.loads(bytes(row[0])) for row in rows]

    def delete(self, namespace: str, network_id: str) -> bool:
        """Remove the network from ``namespace`` (404 if not there). Returns whether any namespace
        still has it (if none, its document is deleted too)."""
        p = self._p

        def delete(execute: Any) -> bool:
            cur = execute(f"DELETE FROM registrations WHERE namespace = {p} AND network_id = {p}",
                          (namespace, network_id))
            if cur.rowcount == 0:
                raise _not_found(namespace, network_id)
            others = execute(f"SELECT 1 FROM registrations WHERE network_id = {p} LIMIT 1",
                             (network_id,)).fetchone()
            if others is None:
                execute(f"DELETE FROM documents WHERE network_id = {p}", (network_id,))
            self._announce_delete(execute, namespace, network_id)
            return others is not None

        still_used = self._transaction(delete)
        self._invalidate([(namespace, network_id)])
        return still_used


def _not_found(namespace: str, network_id: str) -> NotFoundError:
    # Without API keys there is one namespace for everybody: no key to speak of.
    where = "" if namespace == PUBLIC else " with this API key"
    return NotFoundError(
        f"no network {network_id!r} is registered{where}: register it with POST /networks "
        "(GET /networks lists yours)",
        "network_id",
    )
