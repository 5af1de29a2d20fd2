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
CREATE TABLE IF NOT EXISTS deletions (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    namespace  TEXT NOT NULL,
    network_id TEXT NOT NULL
);
"""

_PG_SCHEMA = """
CREATE TABLE IF NOT EXISTS documents (
    network_id TEXT PRIMARY KEY,
    signature  BYTEA NOT NULL,
    document   BYTEA NOT NULL
);
CREATE TABLE IF NOT EXISTS registrations (
    namespace  TEXT NOT NULL,
    network_id TEXT NOT NULL REFERENCES documents(network_id),
    created_at DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (namespace, network_id)
);
CREATE INDEX IF NOT EXISTS registrations_by_id ON registrations(network_id);
"""

#: the PostgreSQL channel deletes are announced on (payload: JSON [namespace, network_id])
CHANNEL = "gradserve_registry"
#: deletions kept in SQLite's log; a server that missed more than this clears its whole LRU
_DELETIONS_KEPT = 1000

_SQLITE_HEADER = b"SQLite format 3\x00"


_SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE = 1006


def _no_checkpoint_on_close(conn: sqlite3.Connection) -> bool:
    """Stop SQLite from checkpointing the WAL into the file when ``conn`` closes.

    A file damaged under a running server must stay as the damage left it, with its WAL beside it
    for whoever recovers it: a checkpoint on close would write the WAL's pages over the garbage and
    make a half-valid database that the next start could take for a sound one. Python 3.12 has
    ``Connection.setconfig``; before it, the C struct's first field after the object header is the
    ``sqlite3*`` handle (CPython 3.11's Modules/_sqlite/connection.h)."""
    setconfig = getattr(conn, "setconfig", None)
    if setconfig is not None:
        try:
            setconfig(_SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, True)
            return True
        except Exception:  # noqa: BLE001 - fall through to the C call
            pass
    try:
        import _sqlite3  # noqa: PLC0415
        import ctypes  # noqa: PLC0415
        import sys  # noqa: PLC0415

        if sys.implementation.name != "cpython":
            return False
        lib = ctypes.CDLL(_sqlite3.__file__)
        handle = ctypes.c_void_p.from_address(id(conn) + 2 * ctypes.sizeof(ctypes.c_void_p)).value
        if not handle:
            return False
        out = ctypes.c_int(-1)
        rc = lib.sqlite3_db_config(ctypes.c_void_p(handle), ctypes.c_int(_SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE),
                                   ctypes.c_int(1), ctypes.byref(out))
        return rc == 0 and out.value == 1
    except Exception:  # noqa: BLE001 - best effort
        return False


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

    def check(self) -> None:
        """Raise :class:`RegistryUnavailableError` if the registry cannot be used now (no blocking I/O)."""
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
        self.check()
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


class SQLiteRegistry(Registry):
    """One SQLite file (WAL mode); several servers on one machine may share it."""

    def __init__(self, path: Path | str, *, start_empty: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.path = Path(path)
        self.start_empty = start_empty
        self._lock = threading.Lock()  # the connection
        self._db: sqlite3.Connection | None = None
        # a second connection, only for PRAGMA data_version and the deletions log (its own lock:
        # the main one may wait seconds for another server's write lock)
        self._watch: sqlite3.Connection | None = None
        self._watch_lock = threading.Lock()
        self._data_version: int | None = None
        self._last_deletion = 0
        self._identity: tuple[int, int] | None = None
        self._broken: str | None = None

    def describe(self) -> str:
        return str(self.path)

    # -- lifecycle ------------------------------------------------------------------------------

    def open(self) -> None:
        """Open (or create) the database. A damaged file raises :class:`RegistryDamagedError`
        unless ``start_empty``: then it is moved aside and a fresh registry started."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if not self.path.exists():
            # A -wal/-shm left without its database would be replayed into the new file.
            for suffix in ("-wal", "-shm"):
                Path(f"{self.path}{suffix}").unlink(missing_ok=True)
        try:
            # SQLite would read page 1 from a WAL beside an overwritten file and call it sound
            with open(self.path, "rb") as f:
                header = f.read(len(_SQLITE_HEADER))
            if header and header != _SQLITE_HEADER:
                raise sqlite3.DatabaseError("it does not start with SQLite's header: overwritten")
            self._connect()
            return
        except FileNotFoundError:
            self._connect()
            return
        except sqlite3.DatabaseError as exc:
            self.close()
            damage = exc
        aside = self.path.with_name(f"{self.path.name}.corrupt-{time.strftime('%Y%m%dT%H%M%S')}")
        if not self.start_empty:
            message = (
                f"the registry file {self.path} is damaged ({damage}); the server will not start on it, so "
                f"that no registered network is silently lost. To recover: stop every server using it, "
                f"restore {self.path} from a backup, or salvage what SQLite can read with "
                f"`sqlite3 {self.path} .recover | sqlite3 {self.path}.recovered` and move the result in "
                f"its place. To start anyway with an EMPTY registry, set --registry-start-empty true "
                f"(GRADSERVE_REGISTRY_START_EMPTY=true): the damaged file is then moved to {aside.name} "
                "(never deleted)")
            log.error("%s", message)
            raise RegistryDamagedError(message)
        log.error("registry %s is unreadable (%s): --registry-start-empty is set, so it was moved to %s "
                  "and an empty registry started", self.path, damage, aside)
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
        watch = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=10)
        self._watch = watch
        self._data_version = watch.execute("PRAGMA data_version").fetchone()[0]
        self._last_deletion = watch.execute("SELECT COALESCE(MAX(seq), 0) FROM deletions").fetchone()[0]
        st = os.stat(self.path)
        self._identity = (st.st_dev, st.st_ino)
        self._broken = None

    def close(self) -> None:
        with self._lock, self._watch_lock:
            for name in ("_db", "_watch"):
                conn = getattr(self, name)
                if conn is not None:
                    try:
                        conn.close()
                    except sqlite3.Error:
                        pass
                    setattr(self, name, None)

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
        if self._broken is None:
            for conn in (self._db, self._watch):
                if conn is not None and not _no_checkpoint_on_close(conn):
                    log.warning("registry %s: could not turn off the checkpoint on close", self.path)
        self._broken = why
        self._invalidate()
        log.error("registry unavailable: %s", why)
        raise self._unavailable(why)

    @staticmethod
    def _unavailable(why: str) -> RegistryUnavailableError:
        return RegistryUnavailableError(
            f"the network registry is unavailable: {why}. Networks cannot be registered or read by id until "
            "the file is restored and the service restarted; inline networks still work",
            "registry",
            retry_after=30,
        )

    # -- freshness ------------------------------------------------------------------------------

    def _fresh(self) -> bool:
        with self._watch_lock:
            watch = self._watch
            if watch is None:
                return False
            try:
                version = watch.execute("PRAGMA data_version").fetchone()[0]
                if version == self._data_version:
                    return True
                rows = watch.execute("SELECT seq, namespace, network_id FROM deletions WHERE seq > ? "
                                     "ORDER BY seq", (self._last_deletion,)).fetchall()
            except sqlite3.DatabaseError as exc:
                log.error("registry %s: cannot read its version (%s)", self.path, exc)
                return False
            self._data_version = version
            if not rows:
                return True
            if rows[0][0] != self._last_deletion + 1:
                self._invalidate()  # more deletions than the log keeps: forget everything
            else:
                self._invalidate([(ns, nid) for _, ns, nid in rows])
            self._last_deletion = rows[-1][0]
            return True

    def _announce_delete(self, execute: Any, namespace: str, network_id: str) -> None:
        cur = execute("INSERT INTO deletions (namespace, network_id) VALUES (?, ?)", (namespace, network_id))
        execute("DELETE FROM deletions WHERE seq <= ?", (cur.lastrowid - _DELETIONS_KEPT,))

    def _transaction(self, fn: Any) -> Any:
        """Run ``fn(execute)`` under the lock, as one transaction, mapping SQLite failures to 503."""
        with self._lock:
            self.check()
            assert self._db is not None
            db = self._db
            try:
                db.execute("BEGIN IMMEDIATE")
                try:
                    result = fn(db.execute)
                except BaseException:
                    db.execute("ROLLBACK")
                    raise
                db.execute("COMMIT")
                return result
            except sqlite3.OperationalError as exc:  # locked, I/O error: maybe transient
                log.error("registry %s: %s", self.path, exc)
                raise self._unavailable(f"the registry file {self.path} could not be used ({exc})") from None
            except sqlite3.DatabaseError as exc:  # not a database, malformed: corrupted
                self._fail(f"the registry file {self.path} is corrupted ({exc})")


#: the name the registry had when SQLite was its only backend
NetworkRegistry = SQLiteRegistry


class PostgresRegistry(Registry):
    """A PostgreSQL database shared by many servers on many nodes (``postgresql://…``).

    One connection for the operations (under a lock), one for ``LISTEN`` in a thread of its own.
    A lost connection is a 503 for the call that met it and is opened again by the next one."""

    _p = "%s"
    _insert_ignore = "INSERT INTO"
    _ignore_tail = " ON CONFLICT DO NOTHING"

    def __init__(self, url: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.url = url
        self._lock = threading.Lock()
        self._conn: Any = None
        self._listening = threading.Event()
        self._stop = threading.Event()
        self._listener: threading.Thread | None = None
        self._error: str | None = None

    def describe(self) -> str:
        try:
            from psycopg.conninfo import conninfo_to_dict  # noqa: PLC0415

            info = conninfo_to_dict(self.url)
            return f"postgresql://{info.get('host', '')}:{info.get('port', '')}/{info.get('dbname', '')}"
        except Exception:  # noqa: BLE001 - only for the log line: never show the password
            return "postgresql"

    def _connect(self, autocommit: bool = False) -> Any:
        try:
            import psycopg  # noqa: PLC0415 - only with a PostgreSQL registry
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise RuntimeError("GRADSERVE_REGISTRY_URL is a PostgreSQL URL but psycopg is not installed: "
                               "pip install 'gradserve[postgres]'") from exc
        return psycopg.connect(self.url, autocommit=autocommit, connect_timeout=10)

    def open(self) -> None:
        conn = self._connect()
        with conn.transaction():
            # one schema creation at a time across servers starting together
            conn.execute("SELECT pg_advisory_xact_lock(7317)")
            conn.execute(_PG_SCHEMA)
        self._conn = conn
        self._stop.clear()
        self._listener = threading.Thread(target=self._listen, name="registry-listen", daemon=True)
        self._listener.start()
        if not self._listening.wait(15):
            log.warning("registry %s: the listener is not connected yet (the LRU is bypassed meanwhile)",
                        self.describe())

    def close(self) -> None:
        self._stop.set()
        if self._listener is not None:
            self._listener.join(5)
            self._listener = None
        with self._lock:
            if self._conn is not None:
                try:
                    self._conn.close()
                except Exception:  # noqa: BLE001 - closing a broken connection
                    pass
                self._conn = None

    def _listen(self) -> None:
        backoff = 0.1
        while not self._stop.is_set():
            try:
                conn = self._connect(autocommit=True)
            except Exception as exc:  # noqa: BLE001 - retried until closed
                self._error = f"cannot connect to {self.describe()} ({exc})"
                log.error("registry listener: %s", self._error)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            try:
                conn.execute(f"LISTEN {CHANNEL}")
                # whatever was deleted while we were not listening is unknown: forget it all
                self._invalidate()
                self._error = None
                self._listening.set()
                backoff = 0.1
                while not self._stop.is_set():
                    for note in conn.notifies(timeout=0.5):
                        namespace, network_id = orjson.loads(note.payload)
                        self._invalidate([(namespace, network_id)])
            except Exception as exc:  # noqa: BLE001 - the connection was lost: reconnect
                self._error = f"lost the connection to {self.describe()} ({exc})"
                log.error("registry listener: %s", self._error)
            finally:
                self._listening.clear()
                self._invalidate()
                try:
                    conn.close()
                except Exception:  # noqa: BLE001
                    pass

    def check(self) -> None:
        if self._conn is None:
            raise self._unavailable("the registry is not open")
        if not self._listening.is_set() and self._error is not None:
            raise self._unavailable(self._error)

    def _fresh(self) -> bool:
        return self._listening.is_set()

    def cached(self, namespace: str, network_id: str) -> engine.Network | None:
        """Never from memory alone: a NOTIFY reaches the other servers a moment after the delete's
        commit, and a client told 204 by one server can ask another within that moment (the
        two-server test saw it). :meth:`get` confirms the registration with one indexed SELECT
        and parses only on a miss."""
        self.check()
        return None

    def get(self, namespace: str, network_id: str) -> engine.Network:
        key = (namespace, network_id)
        net = self._cache.get(key) if self._fresh() else None
        if net is None:
            return super().get(namespace, network_id)
        row = self._transaction(lambda execute: execute(
            "SELECT 1 FROM registrations WHERE namespace = %s AND network_id = %s", key).fetchone())
        if row is None:
            self._invalidate([key])
            raise _not_found(namespace, network_id)
        return net

    def _unavailable(self, why: str) -> RegistryUnavailableError:
        return RegistryUnavailableError(
            f"the network registry is unavailable: {why}. Networks cannot be registered or read by id until "
            "the database answers again (no restart needed); inline networks still work",
            "registry", retry_after=5)

    def _announce_delete(self, execute: Any, namespace: str, network_id: str) -> None:
        execute("SELECT pg_notify(%s, %s)", (CHANNEL, orjson.dumps([namespace, network_id]).decode()))

    def _transaction(self, fn: Any) -> Any:
        import psycopg  # noqa: PLC0415

        with self._lock:
            if self._conn is None or self._conn.closed:
                try:
                    self._conn = self._connect()
                except psycopg.Error as exc:
                    raise self._unavailable(f"cannot connect to {self.describe()} ({exc})") from None
            conn = self._conn
            try:
                with conn.transaction():
                    return fn(conn.execute)
            except psycopg.OperationalError as exc:
                log.error("registry %s: %s", self.describe(), exc)
                try:
                    conn.close()
                except Exception:  # noqa: BLE001
                    pass
                raise self._unavailable(f"{self.describe()} could not be used ({exc})") from None


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


def _not_found(namespace: str, network_id: str) -> NotFoundError:
    # Without API keys there is one namespace for everybody: no key to speak of.
    where = "" if namespace == PUBLIC else " with this API key"
    return NotFoundError(
        f"no network {network_id!r} is registered{where}: register it with POST /networks "
        "(GET /networks lists yours)",
        "network_id",
    )
