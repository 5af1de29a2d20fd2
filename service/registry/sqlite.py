"""The SQLite backend: one file in WAL mode, shared by the servers of one machine; deletions
logged for the others' LRUs, a damaged file refused at start."""

from __future__ import annotations

import math
import os
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

from ..errors import RegistryUnavailableError
from .base import Registry, RegistryDamagedError, log

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

#: deletions kept in SQLite's log; a server that missed more than this clears its whole LRU
_DELETIONS_KEPT = 1000

_SQLITE_HEADER = b"SQLite format 3\x00"
#: a /grad by id notices a deleted, replaced or overwritten registry file within this many seconds
#: (every other operation at once)
FILE_CHECK_S = 0.1
#: bytes of the WAL index header (two copies of the 48-byte WalIndexHdr; the first is enough)
_WAL_INDEX_HEADER = 48


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
        self._header_fd: int | None = None
        # the WAL index (the -shm file every connection of every process maps) and its header as
        # _fresh last saw it: see _wal_header_now
        self._shm_fd: int | None = None
        self._wal_header: bytes | None = None
        self._file_checked_at = -math.inf  # time.monotonic() of check()'s last look at the file
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
        # kept open for check()'s header read: a pread is a quarter of an open, read and close
        # (the stat by path still sees a replaced file)
        self._close_fds()
        self._header_fd = os.open(self.path, os.O_RDONLY)
        try:  # there once the watch connection has read in WAL mode
            self._shm_fd = os.open(f"{self.path}-shm", os.O_RDONLY)
        except OSError as exc:
            log.warning("registry %s: no WAL index to watch (%s): its version is queried on every call",
                        self.path, exc)
        self._wal_header = None
        self._broken = None

    def _close_fds(self) -> None:
        for name in ("_header_fd", "_shm_fd"):
            fd = getattr(self, name)
            setattr(self, name, None)
            if fd is not None:
                try:
                    os.close(fd)
                except OSError:
                    pass

    def close(self) -> None:
        with self._lock, self._watch_lock:
            self._close_fds()
            for name in ("_db", "_watch"):
                conn = getattr(self, name)
                if conn is not None:
                    try:
                        conn.close()
                    except sqlite3.Error:
                        pass
                    setattr(self, name, None)

    # -- health ---------------------------------------------------------------------------------

    def check(self, *, hot: bool = False) -> None:
        """Raise :class:`RegistryUnavailableError` if the file is gone, replaced or unreadable.
        ``hot`` (a ``/grad`` by id): the file itself is looked at every :data:`FILE_CHECK_S` at most
        (its stat and header read were ~6 % of the app's time for the tutorial call, issue 14);
        every other operation, and /health/ready, looks at once."""
        if self._broken is not None:
            raise self._unavailable(self._broken)
        if self._db is None:
            raise self._unavailable("the registry is not open")
        now = time.monotonic()
        if hot and now < self._file_checked_at + FILE_CHECK_S:
            return
        self._file_checked_at = now
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
            fd = self._header_fd
            if fd is None:
                raise OSError("closed")
            header = os.pread(fd, len(_SQLITE_HEADER), 0)
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

    def _wal_header_now(self) -> bytes | None:
        """The WAL index header: the first 48 bytes of the ``-shm`` file, which SQLite shares
        between every connection of every process (https://www.sqlite.org/walformat.html, "The
        WAL-Index Header"). Every commit, by any connection, changes it (its change counter, last
        valid frame, salts), so while it reads the same nothing was committed and the version
        query is not needed: one pread instead of a query on every request by id (~5 % of the
        app's time for the tutorial call, issue 14). A torn read only costs the query."""
        fd = self._shm_fd
        if fd is None:
            return None
        try:
            header = os.pread(fd, _WAL_INDEX_HEADER, 0)
        except OSError:
            return None
        return header if len(header) == _WAL_INDEX_HEADER else None

    def _fresh(self) -> bool:
        with self._watch_lock:
            watch = self._watch
            if watch is None:
                return False
            header = self._wal_header_now()  # read before the query: a commit in between is seen next time
            if header is not None and header == self._wal_header:
                return True
            try:
                version = watch.execute("PRAGMA data_version").fetchone()[0]
                if version == self._data_version:
                    self._wal_header = header
                    return True
                rows = watch.execute("SELECT seq, namespace, network_id FROM deletions WHERE seq > ? "
                                     "ORDER BY seq", (self._last_deletion,)).fetchall()
            except sqlite3.DatabaseError as exc:
                log.error("registry %s: cannot read its version (%s)", self.path, exc)
                return False
            self._data_version = version
            self._wal_header = header
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
