"""What the gateway's worker processes share: revocations and reload requests, with a change feed.

Workers are separate processes, so a revocation made through one of them (or by the
`brokerguard identities` command) must reach every other one. Each worker keeps the revoked
subjects in memory for the hot path and polls the store's change feed for news (`StateWatcher`).

The feed is a sequence numbered in commit order: a reader that has seen change N and asks for
everything after N misses nothing and sees each change once, in the order it was made. Any store
behind `StateStore` must keep that promise; `SqliteStateStore` is the embedded default for one
machine. A fleet would put the same interface on a compacted Kafka topic or on PostgreSQL.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol, runtime_checkable

from brokerguard.errors import BrokerGuardError
from brokerguard.sqlitefile import wal_mode

log = logging.getLogger("brokerguard.state")

ChangeKind = Literal["revoke", "restore", "reload"]
CHANGE_KINDS: frozenset[str] = frozenset(("revoke", "restore", "reload"))
MAX_SUBJECT_LENGTH = 1024
MAX_REASON_LENGTH = 4096


class StateError(BrokerGuardError):
    """The state store cannot be read or written; the message names the store."""

    retriable = True


@dataclass(frozen=True, slots=True)
class Revocation:
    subject: str
    reason: str
    actor: str  # who revoked: an OS user, an admin API user
    at: float  # epoch seconds


@dataclass(frozen=True, slots=True)
class Change:
    seq: int  # position in the feed; increases in commit order
    kind: ChangeKind
    key: str  # the subject for revoke/restore, what to reload (e.g. "rules") for reload
    at: float  # epoch seconds


@runtime_checkable
class StateStore(Protocol):
    """Shared state behind one interface, so the store can change without the gateway noticing.

    Every method may block (a disk, a network): call them from a thread, never on the event loop.
    Failures raise `StateError`.
    """

    def revoke(self, subject: str, reason: str = "", actor: str = "") -> Revocation:
        """Revoke a subject (again, if already revoked: the reason is replaced)."""
        ...

    def restore(self, subject: str) -> bool:
        """Lift a revocation; False if the subject was not revoked."""
        ...

    def revocations(self) -> dict[str, Revocation]:
        ...

    def request_reload(self, what: str) -> Change:
        """Ask every worker to reload something, e.g. "rules"."""
        ...

    def changes(self, after: int, limit: int = 1000) -> tuple[int, list[Change]]:
        """Changes with seq > after, oldest first, and the cursor to pass next time."""
        ...

    def cursor(self) -> int:
        """The seq of the newest change, 0 when there is none."""
        ...

    def close(self) -> None:
        ...


def _check_subject(subject: str) -> None:
    if not isinstance(subject, str) or not subject:
        raise StateError("a subject must be a non-empty string")
    if len(subject) > MAX_SUBJECT_LENGTH:
        raise StateError(f"a subject is at most {MAX_SUBJECT_LENGTH} characters")


# --------------------------------------------------------------------------- SQLite

SCHEMA_VERSION = 1

# Each entry takes the schema from version i to i + 1; a new version appends one.
_MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        """CREATE TABLE revocations (
               subject TEXT PRIMARY KEY,
               reason  TEXT NOT NULL,
               actor   TEXT NOT NULL,
               at      REAL NOT NULL
           )""",
        # AUTOINCREMENT: a seq is never reused, even after the newest row is deleted.
        """CREATE TABLE changes (
               seq  INTEGER PRIMARY KEY AUTOINCREMENT,
               kind TEXT NOT NULL CHECK (kind IN ('revoke', 'restore', 'reload')),
               key  TEXT NOT NULL,
               at   REAL NOT NULL
           )""",
    ),
)

BUSY_TIMEOUT_MS = 5000


class SqliteStateStore:
    """The embedded store: one SQLite file in WAL mode shared by every worker on the machine.

    SQLite admits one writer at a time and each write takes its seq inside its own transaction,
    so seq order is commit order: the feed's promise holds across processes.

    One connection per store object, used under a lock, so threads may share the object. A
    process forked after opening gets a connection of its own on first use.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._pid = 0
        # Connections inherited through fork(): closing one in the child could drop the
        # parent's file locks, so they are kept open and never used.
        self._inherited: list[sqlite3.Connection] = []
        with self._lock:
            self._connection()

    def __repr__(self) -> str:
        return f"SqliteStateStore({str(self.path)!r})"

    def __enter__(self) -> SqliteStateStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- the interface

    def revoke(self, subject: str, reason: str = "", actor: str = "") -> Revocation:
        _check_subject(subject)
        if len(reason) > MAX_REASON_LENGTH:
            raise StateError(f"a reason is at most {MAX_REASON_LENGTH} characters")
        revocation = Revocation(subject, reason, actor, time.time())
        with self._write() as db:
            db.execute(
                "INSERT INTO revocations (subject, reason, actor, at) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (subject) DO UPDATE SET reason = excluded.reason, "
                "actor = excluded.actor, at = excluded.at",
                (subject, reason, actor, revocation.at))
            self._record(db, "revoke", subject, revocation.at)
        return revocation

    def restore(self, subject: str) -> bool:
        _check_subject(subject)
        with self._write() as db:
            if db.execute("DELETE FROM revocations WHERE subject = ?", (subject,)).rowcount == 0:
                return False
            self._record(db, "restore", subject, time.time())
        return True

    def revocations(self) -> dict[str, Revocation]:
        rows = self._read("SELECT subject, reason, actor, at FROM revocations ORDER BY subject")
        return {row[0]: Revocation(*row) for row in rows}

    def request_reload(self, what: str) -> Change:
        if not isinstance(what, str) or not what:
            raise StateError("say what to reload, e.g. \"rules\"")
        with self._write() as db:
            return self._record(db, "reload", what, time.time())

    def changes(self, after: int, limit: int = 1000) -> tuple[int, list[Change]]:
        rows = self._read("SELECT seq, kind, key, at FROM changes WHERE seq > ? ORDER BY seq LIMIT ?",
                          (after, limit))
        found = [Change(*row) for row in rows]
        return (found[-1].seq if found else after), found

    def cursor(self) -> int:
        return self._read("SELECT COALESCE(MAX(seq), 0) FROM changes")[0][0]

    def close(self) -> None:
        with self._lock:
            if self._conn is not None and self._pid == os.getpid():
                self._conn.close()
            self._conn = None

    # ---- SQLite

    @staticmethod
    def _record(db: sqlite3.Connection, kind: str, key: str, at: float) -> Change:
        cursor = db.execute("INSERT INTO changes (kind, key, at) VALUES (?, ?, ?)", (kind, key, at))
        return Change(cursor.lastrowid, kind, key, at)  # type: ignore[arg-type]

    def _read(self, sql: str, params: tuple[object, ...] = ()) -> list[tuple]:
        with self._lock:
            try:
                return self._connection().execute(sql, params).fetchall()
            except sqlite3.Error as err:
                raise StateError(f"state store {self.path}: {err}") from err

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        # BEGIN IMMEDIATE takes the write lock up front (waiting up to the busy timeout), so a
        # write never fails half-way because another process began writing first.
        with self._lock:
            try:
                db = self._connection()
                db.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as err:
                raise StateError(f"state store {self.path}: {err}") from err
            try:
                yield db
                db.execute("COMMIT")
            except BaseException as err:
                try:
                    db.execute("ROLLBACK")
                except sqlite3.Error:
                    pass  # the failed statement may have ended the transaction already
                if isinstance(err, sqlite3.Error):
                    raise StateError(f"state store {self.path}: {err}") from err
                raise

    def _connection(self) -> sqlite3.Connection:
        """The connection for this process, opened (schema and all) on first use; lock held."""
        if self._conn is not None and self._pid == os.getpid():
            return self._conn
        if self._conn is not None:
            self._inherited.append(self._conn)
            self._conn = None
        try:
            self._conn = self._open()
        except sqlite3.Error as err:
            raise StateError(f"state store {self.path}: {err}") from err
        self._pid = os.getpid()
        return self._conn

    def _open(self) -> sqlite3.Connection:
        self._create_file()
        # isolation_level=None: transactions are begun and ended explicitly, never implicitly.
        db = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None,
                             check_same_thread=False)
        try:
            db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            mode = wal_mode(db, BUSY_TIMEOUT_MS / 1000)
            if mode.lower() != "wal":
                raise StateError(f"state store {self.path}: cannot use WAL mode (got {mode}); "
                                 "put it on a local file system")
            # A revocation that was confirmed must survive a power cut.
            db.execute("PRAGMA synchronous = FULL")
            self._migrate(db)
        except BaseException:
            db.close()
            raise
        return db

    def _create_file(self) -> None:
        # Created here rather than by SQLite so the mode is 0600 from the first byte; SQLite
        # gives the -wal and -shm files the database file's mode.
        try:
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return
        except OSError as err:
            raise StateError(f"cannot create state store {self.path}: {err.strerror}") from err
        os.close(fd)

    def _migrate(self, db: sqlite3.Connection) -> None:
        db.execute("BEGIN IMMEDIATE")  # several workers may open a new file at once
        try:
            db.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
            row = db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
            version = int(row[0]) if row else 0
            if version > SCHEMA_VERSION:
                raise StateError(
                    f"state store {self.path} has schema version {version}; this brokerguard "
                    f"knows versions up to {SCHEMA_VERSION}: upgrade brokerguard")
            for statements in _MIGRATIONS[version:]:
                for statement in statements:
                    db.execute(statement)
            if version != SCHEMA_VERSION:
                db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('schema_version', ?)",
                           (str(SCHEMA_VERSION),))
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise


# --------------------------------------------------------------------------- watcher

POLL_PAGE = 1000  # changes fetched per query; a worker far behind catches up in several


class StateWatcher:
    """A worker's view of the shared state: the revoked subjects in memory, kept current by
    polling the store's change feed.

    `is_revoked` is a set lookup for the authentication hot path. Changes reach `on_change` in
    feed order, on the event loop, after the revoked set already reflects them. A store that
    fails is logged and polled again; a callback that raises is logged and the watcher goes on.
    """

    def __init__(self, store: StateStore, poll_interval_s: float,
                 on_change: Callable[[Change], None] | None = None) -> None:
        if poll_interval_s <= 0:
            raise ValueError("poll_interval_s must be positive")
        self.store = store
        self.poll_interval_s = poll_interval_s
        self.on_change = on_change
        self._revoked: set[str] | None = None
        self._cursor = 0
        self._task: asyncio.Task[None] | None = None
        self._polling = asyncio.Lock()
        self._failing = False

    @property
    def cursor(self) -> int:
        """The seq of the newest change applied."""
        return self._cursor

    @property
    def revoked(self) -> frozenset[str]:
        return frozenset(self._require_started())

    def is_revoked(self, subject: str) -> bool:
        return subject in self._require_started()

    def _require_started(self) -> set[str]:
        # Answering "not revoked" before the revocations are loaded would fail open.
        if self._revoked is None:
            raise StateError("the state watcher has not started")
        return self._revoked

    async def start(self) -> None:
        """Load the revocations, then poll in the background. A store that cannot be read
        here raises: a worker must not serve without knowing who is revoked."""
        if self._task is not None:
            raise RuntimeError("the state watcher is already running")
        # The cursor first: a change made between the two reads is then applied once more by
        # the first poll, which is harmless, instead of being missed.
        self._cursor = await asyncio.to_thread(self.store.cursor)
        self._revoked = set(await asyncio.to_thread(self.store.revocations))
        self._task = asyncio.create_task(self._run(), name="brokerguard-state-watcher")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass

    async def poll(self) -> list[Change]:
        """Fetch and apply what changed since the last poll; raises StateError if the store fails.
        The background task calls this every interval; call it to learn of a change at once."""
        self._require_started()
        async with self._polling:
            applied: list[Change] = []
            while True:
                cursor, changes = await asyncio.to_thread(self.store.changes, self._cursor, POLL_PAGE)
                for change in changes:
                    self._apply(change)
                applied += changes
                self._cursor = cursor
                if len(changes) < POLL_PAGE:
                    return applied

    def _apply(self, change: Change) -> None:
        revoked = self._require_started()
        if change.kind == "revoke":
            revoked.add(change.key)
        elif change.kind == "restore":
            revoked.discard(change.key)
        self._cursor = change.seq
        if self.on_change is None:
            return
        try:
            self.on_change(change)
        except Exception:
            log.exception("handling state change %d (%s %s) failed", change.seq, change.kind, change.key)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.poll_interval_s)
            try:
                await self.poll()
            except (StateError, sqlite3.Error, OSError) as err:
                # Logged once per outage, not every poll; revocations already known still hold.
                if not self._failing:
                    log.warning("cannot read the state store %s, retrying every %.2f s: %s",
                                self.store, self.poll_interval_s, err)
                self._failing = True
                continue
            if self._failing:
                log.info("state store %s readable again", self.store)
                self._failing = False
