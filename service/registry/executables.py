"""Where compiled programs are shared by workers, replicas and restarts (issue 17 point 5).

An entry is :mod:`engine.executables`' bytes (XLA's serialized executable and a JSON header; no
pickle) under a key that names the program and the environment it was compiled in. Two stores:

- a **directory** (one file per entry, written by rename, so a reader never sees half of one;
  its mtime is when it was last used): the workers of one machine, or many machines on a
  shared file system. A SQLite registry is one machine's, so ``executable_store = registry``
  with it means a directory beside the registry file.
- **PostgreSQL** (a table ``executables`` in the registry's database): every replica of a
  cluster with ``GRADSERVE_REGISTRY_URL`` set.

Both remember when an entry was last written or loaded; a starting worker preloads the most
recent ones (:meth:`recent`), so the networks a cluster is using come up warm on a replica the
autoscaler adds. A store that fails is never fatal: the engine compiles as it would without one.

The worker process uses a store (``settings_config`` turns the settings into the plain dict a
worker is started with, ``open_store`` opens it there); the server never reads one.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import orjson

log = logging.getLogger("gradserve.executables")

#: entries kept; past it the least recently used are removed
MAX_ENTRIES = 2048
_KEY = re.compile(r"^[0-9a-f]{64}$")
_SUFFIX = ".xla"


def settings_config(settings: Any) -> dict[str, Any] | None:
    """The store the settings choose, as plain data for a worker (None: no store)."""
    where = (getattr(settings, "executable_store", None) or "off").strip()
    if where == "off":
        return None
    url = getattr(settings, "registry_url", None)
    path = Path(settings.registry_path)
    # where the warming worker reads the documents of the networks it preloads (registry_documents)
    registry = {"kind": "postgres", "url": url} if url else {"kind": "sqlite", "path": str(path)}
    if where == "registry":
        if url:
            return {"kind": "postgres", "url": url, "registry": registry}
        return {"kind": "directory", "path": str(path.with_name(path.name + ".executables")), "registry": registry}
    return {"kind": "directory", "path": where, "registry": registry}


def registry_documents(config: dict[str, Any] | None, network_ids: list[str]) -> list[tuple[str, bytes]]:
    """The stored ``gradnet/1`` documents of those of ``network_ids`` that are still registered
    (in some namespace), read by a warming worker so that it parses the networks of the
    programs it preloads before its hello, and the pool's first job for them goes by reference
    instead of carrying the document. Read only: SQLite opened ``mode=ro`` (never checkpoints
    or writes the server's file), PostgreSQL one short connection. A network deleted meanwhile is
    simply absent; any failure returns what was read (the network is then sent with its job, as
    without a warm-up)."""
    where = (config or {}).get("registry")
    if not where or not network_ids:
        return []
    sql = ("SELECT d.network_id, d.document FROM documents d WHERE d.network_id = {p} AND EXISTS "
           "(SELECT 1 FROM registrations r WHERE r.network_id = d.network_id)")
    found: list[tuple[str, bytes]] = []
    try:
        if where["kind"] == "postgres":
            import psycopg  # noqa: PLC0415 - only with a PostgreSQL registry

            with psycopg.connect(where["url"], autocommit=True, connect_timeout=5) as db:
                for network_id in network_ids:
                    row = db.execute(sql.format(p="%s"), (network_id,)).fetchone()
                    if row is not None:
                        found.append((row[0], bytes(row[1])))
        else:
            import sqlite3  # noqa: PLC0415

            if not Path(where["path"]).exists():
                return []
            db = sqlite3.connect(f"{Path(where['path']).absolute().as_uri()}?mode=ro", uri=True, timeout=2.0)
            try:
                for network_id in network_ids:
                    row = db.execute(sql.format(p="?"), (network_id,)).fetchone()
                    if row is not None:
                        found.append((row[0], bytes(row[1])))
            finally:
                db.close()
    except Exception as exc:  # noqa: BLE001 - the networks then come with their first job
        log.warning("registry unreadable by the warming worker (%s: %s): networks not pre-parsed",
                    type(exc).__name__, exc)
    return found


def open_store(config: dict[str, Any] | None) -> Any:
    """The store of a :func:`settings_config` dict (None for None)."""
    if not config:
        return None
    if config["kind"] == "postgres":
        return PostgresStore(config["url"])
    return DirectoryStore(config["path"])


def warm_server(settings: Any, registry: Any, validator: Any) -> int:
    """The server's side of a warm start: the networks of the store's most recently used
    programs parsed into the registry's LRU (for every namespace that has them) and evaluated
    abstractly by the validator at the programs' input shapes, so that a restarted server's (or
    an added replica's) first call by id is not slowed by the parse and the server's first JAX
    trace. The worker preloads the programs themselves. Returns how many (network, namespace)
    pairs were warmed; a failure only leaves the rest cold."""
    import numpy as np  # noqa: PLC0415

    from engine.executables import EntryError, read_header  # noqa: PLC0415

    limit = int(getattr(settings, "warm_programs", 0) or 0)
    store = open_store(settings_config(settings)) if limit > 0 else None
    if store is None:
        return 0
    warmed, seen = 0, set()
    deadline = time.monotonic() + 30.0
    try:
        entries = store.recent(limit)
    except Exception as exc:  # noqa: BLE001
        log.warning("executable store unreadable, the server starts cold: %s", exc)
        return 0
    finally:
        closer = getattr(store, "close", None)
        if closer is not None:
            closer()
    for data in entries:
        if time.monotonic() > deadline:
            break
        try:
            program = read_header(data)[0]["program"]
            key = (program["network_id"], orjson.dumps(program["inputs"]))
            if key in seen:
                continue
            seen.add(key)
            shapes = [(tuple(shape), np.dtype(dtype)) for shape, dtype in program["inputs"]]
            for namespace in registry.namespaces_of(program["network_id"]):
                net = registry.get(namespace, program["network_id"])
                validator.engine.output_avals(net, [np.empty(shape, dtype) for shape, dtype in shapes])
                warmed += 1
        except (EntryError, KeyError, TypeError, ValueError) as exc:
            log.info("executable store entry not warmed: %s", exc)
        except Exception as exc:  # noqa: BLE001 - a registry error, a network that no longer parses
            log.warning("executable store entry not warmed: %s: %s", type(exc).__name__, exc)
    log.info("warm start: %d registered network(s) parsed and evaluated from the executable store", warmed)
    return warmed


class DirectoryStore:
    """One file per entry, ``<key>.xla``; the file's mtime is its last use."""

    def __init__(self, path: str | Path, max_entries: int = MAX_ENTRIES) -> None:
        self.path = Path(path)
        self.max_entries = max_entries
        self._puts = 0

    def _file(self, key: str) -> Path:
        if not _KEY.match(key):
            raise ValueError(f"not an entry key: {key!r}")
        return self.path / (key + _SUFFIX)

    def get(self, key: str) -> bytes | None:
        path = self._file(key)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        with contextlib.suppress(OSError):
            os.utime(path)  # used now: among the recent ones a new worker preloads
        return data

    def put(self, key: str, network_id: str, data: bytes) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path, prefix=".tmp-", suffix=_SUFFIX)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, self._file(key))
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        self._puts += 1
        if self._puts % 16 == 1:
            self._prune()

    def _entries(self) -> list[tuple[float, Path]]:
        found = []
        try:
            with os.scandir(self.path) as it:
                for entry in it:
                    if entry.name.endswith(_SUFFIX) and not entry.name.startswith("."):
                        with contextlib.suppress(OSError):
                            found.append((entry.stat().st_mtime, Path(entry.path)))
        except FileNotFoundError:
            return []
        found.sort(reverse=True)
        return found

    def _prune(self) -> None:
        for _, path in self._entries()[self.max_entries:]:
            with contextlib.suppress(OSError):
                path.unlink()

    def recent(self, limit: int) -> list[bytes]:
        out = []
        for _, path in self._entries()[:max(0, limit)]:
            with contextlib.suppress(OSError):
                out.append(path.read_bytes())
        return out


_PG_SCHEMA = """
CREATE TABLE IF NOT EXISTS executables (
    key        TEXT PRIMARY KEY,
    network_id TEXT NOT NULL,
    data       BYTEA NOT NULL,
    used_at    DOUBLE PRECISION NOT NULL
);
CREATE INDEX IF NOT EXISTS executables_by_use ON executables(used_at);
"""


class PostgresStore:
    """A table of the registry's PostgreSQL database; one connection per worker, opened on first use."""

    def __init__(self, url: str, max_entries: int = MAX_ENTRIES) -> None:
        self.url = url
        self.max_entries = max_entries
        self._conn: Any = None
        self._lock = threading.Lock()  # the worker's main and compile threads share the connection

    def _db(self) -> Any:
        if self._conn is None or self._conn.closed:
            import psycopg  # noqa: PLC0415 - only with a PostgreSQL registry

            conn = psycopg.connect(self.url, autocommit=True, connect_timeout=5)
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(7318)")  # one schema creation at a time
                conn.execute(_PG_SCHEMA)
            self._conn = conn
        return self._conn

    def _run(self, fn: Any) -> Any:
        with self._lock:
            try:
                return fn(self._db())
            except Exception:
                conn, self._conn = self._conn, None  # reconnect next time
                if conn is not None:
                    with contextlib.suppress(Exception):
                        conn.close()
                raise

    def get(self, key: str) -> bytes | None:
        def get(db: Any) -> bytes | None:
            row = db.execute("UPDATE executables SET used_at = %s WHERE key = %s RETURNING data",
                             (time.time(), key)).fetchone()
            return None if row is None else bytes(row[0])

        return self._run(get)

    def put(self, key: str, network_id: str, data: bytes) -> None:
        def put(db: Any) -> None:
            db.execute("INSERT INTO executables (key, network_id, data, used_at) VALUES (%s, %s, %s, %s) "
                       "ON CONFLICT (key) DO UPDATE SET data = EXCLUDED.data, used_at = EXCLUDED.used_at",
                       (key, network_id, data, time.time()))
            db.execute("DELETE FROM executables WHERE key IN (SELECT key FROM executables "
                       "ORDER BY used_at DESC OFFSET %s)", (self.max_entries,))

        self._run(put)

    def recent(self, limit: int) -> list[bytes]:
        # only networks still registered somewhere: a deleted one is not worth a warm-up
        def recent(db: Any) -> list[bytes]:
            rows = db.execute("SELECT e.data FROM executables e WHERE EXISTS (SELECT 1 FROM registrations r "
                              "WHERE r.network_id = e.network_id) ORDER BY e.used_at DESC LIMIT %s",
                              (max(0, limit),)).fetchall()
            return [bytes(row[0]) for row in rows]

        return self._run(recent)

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                with contextlib.suppress(Exception):
                    self._conn.close()
                self._conn = None
