"""The network registry: content-addressed ``gradnet/1`` documents in SQLite, per namespace.

A network is stored once, under its canonical id (``engine.Network.id``), as the document
``Network.to_json("b64")`` with its signature; a namespace (one per API key, see
:mod:`service.auth`) sees only the networks registered under it. Registering is idempotent.
Parsed :class:`engine.Network` objects are kept in an in-memory LRU, so a ``/grad`` by id costs
no I/O once the network is warm.

The database is opened in WAL mode. Every method here blocks (SQLite, parsing): the app calls
them through ``run_in_threadpool`` except for :meth:`cached`, which only reads the LRU.

If the file is deleted, replaced or corrupted under a running server, every call that needs it
raises :class:`RegistryUnavailableError` (503, and ``/health/ready`` turns 503), never a crash;
a restart opens a fresh registry (a corrupted file is moved aside first, never overwritten).
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import orjson

import engine
from engine.cache import LRUCache

from .auth import PUBLIC
from .errors import NotFoundError, RegistryUnavailableError

log = logging.getLogger("gradserve.registry")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS documents (
    network_id TEXT PRIMARY KEY,
    signature  BLOB NOT NULL,
    document   BLOB NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS registrations (
    namespace  TEXT NOT NULL,
    network_id TEXT NOT NULL REFERENCES documents(network_id),
    created_at REAL NOT NULL,
    PRIMARY KEY (namespace, network_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS registrations_by_id ON registrations(network_id);
"""


_SQLITE_HEADER = b"SQLite format 3\x00"


class NetworkRegistry:
    def __init__(self, path: Path | str, *, cache_size: int = 128, max_nodes: int | None = None,
                 max_elements: int | None = None) -> None:
        self.path = Path(path)
        self.cache_size = cache_size
        self.max_nodes = max_nodes
        self.max_elements = max_elements
        self._lock = threading.Lock()  # the connection
        # parsed networks by (namespace, id); its lock is never held across I/O: the loop reads it
        self._cache: LRUCache[engine.Network] = LRUCache(cache_size)
        self._db: sqlite3.Connection | None = None
        self._identity: tuple[int, int] | None = None
        self._broken: str | None = None

    # -- lifecycle ------------------------------------------------------------------------------

    def open(self) -> None:
        """Open (or create) the database; move a corrupted file aside and start a fresh one."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if not self.path.exists():
            # A -wal/-shm left without its database would be replayed into the new file.
            for suffix in ("-wal", "-shm"):
                Path(f"{self.path}{suffix}").unlink(missing_ok=True)
        try:
            self._connect()
        except sqlite3.DatabaseError as exc:
            aside = self.path.with_name(f"{self.path.name}.corrupt-{time.strftime('%Y%m%dT%H%M%S')}")
            log.error("registry %s is unreadable (%s): moved it to %s and started a fresh registry",
                      self.path, exc, aside)
            self.close()
            os.replace(self.path, aside)
            wal = Path(f"{self.path}-wal")
            if wal.exists():  # it belongs to the moved file (and may hold most of its data)
                os.replace(wal, f"{aside}-wal")
            Path(f"{self.path}-shm").unlink(missing_ok=True)
            self._connect()

    def _connect(self) -> None:
        db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=10)
        self._db = db
        mode = db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if mode.lower() != "wal":
            log.warning("registry %s: journal_mode is %s, not WAL", self.path, mode)
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute("PRAGMA foreign_keys=ON")
        check = db.execute("PRAGMA quick_check").fetchone()[0]
        if check != "ok":
            raise sqlite3.DatabaseError(f"quick_check: {check}")
        db.executescript(_SCHEMA)
        st = os.stat(self.path)
        self._identity = (st.st_dev, st.st_ino)
        self._broken = None

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                try:
                    self._db.close()
                except sqlite3.Error:
                    pass
                self._db = None

    # -- health ---------------------------------------------------------------------------------

    def check(self) -> None:
        """Raise :class:`RegistryUnavailableError` if the file is gone, replaced or unreadable."""
        if self._broken is not None:
            raise self._unavailable(self._broken)
        if self._db is None:
            raise self._unavailable("the registry is not open")
        try:
            st = os.stat(self.path)
        except OSError:
            self._fail(f"the registry file {self.path} was deleted while the service was running")
        if (st.st_dev, st.st_ino) != self._identity:
            self._fail(f"the registry file {self.path} was replaced while the service was running")
        # Overwritten in place (same inode): SQLite would go on serving its page cache and WAL, and
        # later checkpoint into the garbage. Every SQLite file starts with this header (written
        # when the database was opened in WAL mode), so a 16-byte read tells.
        try:
            with open(self.path, "rb") as f:
                header = f.read(len(_SQLITE_HEADER))
        except OSError as exc:
            self._fail(f"the registry file {self.path} cannot be read ({exc})")
        if header != _SQLITE_HEADER:
            self._fail(f"the registry file {self.path} is corrupted (overwritten: it is no longer an SQLite "
                       "database)")

    def _fail(self, why: str) -> None:
        self._broken = why
        log.error("registry unavailable: %s", why)
        raise self._unavailable(why)

    @staticmethod
    def _unavailable(why: str) -> RegistryUnavailableError:
        return RegistryUnavailableError(
            f"the network registry is unavailable: {why}. Networks cannot be registered or read until "
            "the service is restarted (a restart opens a fresh registry); inline networks still work",
            "registry",
            retry_after=30,
        )

    def _run(self, fn: Any) -> Any:
        """Run ``fn(db)`` under the lock, as one transaction, mapping SQLite failures to 503."""
        with self._lock:
            self.check()
            assert self._db is not None
            try:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    result = fn(self._db)
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
                self._db.execute("COMMIT")
                return result
            except sqlite3.OperationalError as exc:  # locked, I/O error: maybe transient
                log.error("registry %s: %s", self.path, exc)
                raise self._unavailable(f"the registry file {self.path} could not be used ({exc})") from None
            except sqlite3.DatabaseError as exc:  # not a database, malformed: corrupted
                self._fail(f"the registry file {self.path} is corrupted ({exc})")

    # -- the cache ------------------------------------------------------------------------------

    def cached(self, namespace: str, network_id: str) -> engine.Network | None:
        """The parsed network if it is in the LRU (no I/O: safe on the event loop)."""
        return self._cache.get((namespace, network_id))

    def _remember(self, namespace: str, net: engine.Network) -> None:
        self._cache.put((namespace, net.id), net)

    # -- the operations (blocking) --------------------------------------------------------------

    def put(self, namespace: str, net: engine.Network) -> tuple[dict[str, Any], bool]:
        """Register ``net`` under ``namespace``: its signature, and whether it was new there."""
        signature = net.signature()

        def put(db: sqlite3.Connection) -> bool:
            known = db.execute("SELECT 1 FROM documents WHERE network_id = ?", (net.id,)).fetchone()
            if known is None:
                db.execute(
                    "INSERT INTO documents (network_id, signature, document) VALUES (?, ?, ?)",
                    (net.id, orjson.dumps(signature), orjson.dumps(net.to_json("b64"))),
                )
            cur = db.execute(
                "INSERT OR IGNORE INTO registrations (namespace, network_id, created_at) VALUES (?, ?, ?)",
                (namespace, net.id, time.time()),
            )
            return cur.rowcount == 1

        created = self._run(put)
        self._remember(namespace, net)
        return signature, created

    def get(self, namespace: str, network_id: str) -> engine.Network:
        """The parsed network (404 if this namespace has no such network)."""
        net = self.cached(namespace, network_id)
        if net is not None:
            return net
        net = engine.parse_network(orjson.loads(self.document(namespace, network_id)),
                                   max_nodes=self.max_nodes, max_elements=self.max_elements)
        self._remember(namespace, net)
        return net

    def document(self, namespace: str, network_id: str) -> bytes:
        """The stored ``gradnet/1`` document, as JSON bytes (404 if not visible here)."""
        row = self._run(lambda db: db.execute(
            "SELECT d.document FROM registrations r JOIN documents d USING (network_id) "
            "WHERE r.namespace = ? AND r.network_id = ?",
            (namespace, network_id),
        ).fetchone())
        if row is None:
            raise _not_found(namespace, network_id)
        return bytes(row[0])

    def list(self, namespace: str) -> list[dict[str, Any]]:
        """The signatures of this namespace's networks, oldest first."""
        rows = self._run(lambda db: db.execute(
            "SELECT d.signature FROM registrations r JOIN documents d USING (network_id) "
            "WHERE r.namespace = ? ORDER BY r.created_at, r.network_id",
            (namespace,),
        ).fetchall())
        return [orjson.loads(row[0]) for row in rows]

    def delete(self, namespace: str, network_id: str) -> bool:
        """Remove the network from ``namespace`` (404 if not there). Returns whether any namespace
        still has it (if none, its document is deleted too)."""

        def delete(db: sqlite3.Connection) -> bool:
            cur = db.execute("DELETE FROM registrations WHERE namespace = ? AND network_id = ?",
                             (namespace, network_id))
            if cur.rowcount == 0:
                raise _not_found(namespace, network_id)
            others = db.execute("SELECT 1 FROM registrations WHERE network_id = ? LIMIT 1",
                                (network_id,)).fetchone()
            if others is None:
                db.execute("DELETE FROM documents WHERE network_id = ?", (network_id,))
            return others is not None

        still_used = self._run(delete)
        self._cache.pop((namespace, network_id))
        return still_used


def _not_found(namespace: str, network_id: str) -> NotFoundError:
    # Without API keys there is one namespace for everybody: no key to speak of.
    where = "" if namespace == PUBLIC else " with this API key"
    return NotFoundError(
        f"no network {network_id!r} is registered{where}: register it with POST /networks "
        "(GET /networks lists yours)",
        "network_id",
    )
