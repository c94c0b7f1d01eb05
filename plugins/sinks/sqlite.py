"""The embedded default audit sink: one SQLite file (WAL), shared by the workers of one machine.

`events` holds each sealed event as the exact JSON line that was hashed, keyed by (stream,
index), so a retried batch is stored once and `brokerguard audit verify` checks what is really
on disk. `sessions` and `session_topics` are an index for listing, kept up to date in the same
transaction; they are not part of the chain (verify the events; the listing is a convenience).
"""

from __future__ import annotations

import functools
import sqlite3
import threading
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import orjson

from brokerguard.audit.sinks import Sealed, SessionFilter, SinkContext, check_options, option
from brokerguard.errors import ConfigError
from brokerguard.sqlitefile import wal_mode

BUSY_TIMEOUT_S = 30.0
ROWS_PER_INSERT = 150  # 6 parameters a row: within the 999 of the oldest SQLite builds

SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    stream TEXT NOT NULL,
    idx INTEGER NOT NULL,
    time REAL NOT NULL,
    kind TEXT NOT NULL,
    session TEXT,
    line TEXT NOT NULL,
    PRIMARY KEY (stream, idx)
);
CREATE INDEX IF NOT EXISTS events_by_session ON events (session, time);
CREATE TABLE IF NOT EXISTS sessions (
    session TEXT PRIMARY KEY,
    started REAL,
    adapter TEXT,
    peer TEXT,
    listener TEXT,
    gateway TEXT,
    identity TEXT,
    auth TEXT,
    client_id TEXT,
    software TEXT,
    ended REAL,
    end_reason TEXT,
    requests INTEGER NOT NULL DEFAULT 0,
    denied INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS sessions_by_start ON sessions (started);
CREATE INDEX IF NOT EXISTS sessions_by_identity ON sessions (identity, started);
CREATE TABLE IF NOT EXISTS session_topics (
    session TEXT NOT NULL,
    topic TEXT NOT NULL,
    PRIMARY KEY (session, topic)
);
CREATE INDEX IF NOT EXISTS session_topics_by_topic ON session_topics (topic);
"""


@functools.cache  # at most ROWS_PER_INSERT statements
def _insert_events(rows: int) -> str:
    return "INSERT INTO events (stream, idx, time, kind, session, line) VALUES " + ", ".join(
        ["(?, ?, ?, ?, ?, ?)"] * rows)


SUMMARY_COLUMNS = ("session", "started", "adapter", "peer", "listener", "gateway", "identity", "auth",
                   "client_id", "software", "ended", "end_reason", "requests", "denied")


class SqliteSink:
    """Options: `path` (default <state dir>/audit.db)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.name = f"sqlite {path}"
        self._db: sqlite3.Connection | None = None
        self._lock = threading.Lock()
        self._gateways: dict[str, str] = {}

    @classmethod
    def from_config(cls, options: Mapping[str, Any], context: SinkContext) -> SqliteSink:
        check_options(options, ("path",), sink="sqlite")
        path = option(options, "path", str, str(context.state_dir / "audit.db"), sink="sqlite")
        if not path:
            raise ConfigError("audit sink sqlite: `path` cannot be empty")
        return cls(Path(path))

    @classmethod
    def open(cls, path: str | Path) -> SqliteSink:
        """A sink opened for reading (and writing) outside the bus: the CLI, tests."""
        sink = cls(Path(path))
        sink._connect()
        return sink

    def _connect(self) -> sqlite3.Connection:
        if self._db is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, check_same_thread=False, isolation_level=None)
            wal_mode(db, BUSY_TIMEOUT_S)  # the workers of a gateway open it at once
            db.execute("PRAGMA synchronous=NORMAL")  # WAL: a crash loses at most the last commit
            db.executescript(SCHEMA)
            self._db = db
        return self._db

    async def start(self) -> None:
        self._connect()

    async def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    def write(self, batch: Sequence[Sealed]) -> None:
        with self._lock:
            db = self._connect()
            db.execute("BEGIN IMMEDIATE")
            try:
                self._store(db, batch)
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

    def _store(self, db: sqlite3.Connection, batch: Sequence[Sealed]) -> None:
        """The batch's new events (a retried batch's are in already), many rows a statement; the
        session index from them, request events summed per session (they are most of it)."""
        new = self._new(db, batch)
        # Not executemany: it steps each row with the GIL released, and with the event loop busy
        # every one of those steps costs a handoff of the GIL both ways.
        for at in range(0, len(new), ROWS_PER_INSERT):
            chunk = new[at : at + ROWS_PER_INSERT]
            db.execute(_insert_events(len(chunk)),
                       [value for sealed in chunk for e in (sealed.event,)
                        for value in (e["stream"], e["index"], e["time"], e["kind"], e.get("session"),
                                      sealed.line.decode())])
        requests: dict[str, list] = {}  # session -> [first time, requests, denied, client_id, software, topics]
        for sealed in new:
            event = sealed.event
            kind, session = event["kind"], event.get("session")
            if kind == "stream_start":
                self._gateways[event["stream"]] = event.get("gateway")
            elif kind == "request" and session is not None:
                summary = requests.setdefault(session, [event["time"], 0, 0, None, None, set()])
                summary[1] += 1
                summary[2] += event.get("decision") in ("deny", "partial")
                summary[3] = event.get("client_id") or summary[3]
                summary[4] = event.get("software") or summary[4]
                summary[5].update(op["resource"][6:] for op in event.get("operations") or ()
                                  if op.get("resource", "").startswith("topic:"))
            elif session is not None:
                self._index(db, kind, session, event)
        for session, (first, count, denied, client_id, software, topics) in requests.items():
            db.execute("INSERT OR IGNORE INTO sessions (session, started) VALUES (?, ?)", (session, first))
            db.execute("UPDATE sessions SET requests = requests + ?, denied = denied + ?, "
                       "client_id = coalesce(?, client_id), software = coalesce(?, software) WHERE session = ?",
                       (count, denied, client_id, software, session))
            db.executemany("INSERT OR IGNORE INTO session_topics (session, topic) VALUES (?, ?)",
                           [(session, topic) for topic in topics])

    @staticmethod
    def _new(db: sqlite3.Connection, batch: Sequence[Sealed]) -> list[Sealed]:
        """The events of batch not stored yet (a batch is retried whole after a failed write)."""
        stored: set[tuple[str, int]] = set()
        for stream in {sealed.event["stream"] for sealed in batch}:
            indexes = [sealed.event["index"] for sealed in batch if sealed.event["stream"] == stream]
            stored.update((stream, idx) for (idx,) in db.execute(
                "SELECT idx FROM events WHERE stream = ? AND idx BETWEEN ? AND ?", (stream, min(indexes), max(indexes))))
        if not stored:
            return list(batch)
        return [sealed for sealed in batch if (sealed.event["stream"], sealed.event["index"]) not in stored]

    def _index(self, db: sqlite3.Connection, kind: str, session: str, event: dict[str, Any]) -> None:
        """What a session's start, login and end add to its row."""
        if kind == "session_start":
            db.execute("INSERT INTO sessions (session, started, adapter, peer, listener, gateway) "
                       "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (session) DO UPDATE SET started = excluded.started, "
                       "adapter = excluded.adapter, peer = excluded.peer, listener = excluded.listener, "
                       "gateway = excluded.gateway",
                       (session, event["time"], event.get("adapter"), event.get("peer"), event.get("listener"),
                        self._gateways.get(event["stream"])))
            return
        db.execute("INSERT OR IGNORE INTO sessions (session, started) VALUES (?, ?)", (session, event["time"]))
        if kind == "login" and event.get("ok"):
            db.execute("UPDATE sessions SET identity = ?, auth = ? WHERE session = ?",
                       (event.get("identity"), event.get("auth"), session))
        elif kind == "session_end":
            db.execute("UPDATE sessions SET ended = ?, end_reason = ?, identity = coalesce(identity, ?) "
                       "WHERE session = ?", (event["time"], event.get("reason"), event.get("identity"), session))

    # -- AuditReader ---------------------------------------------------------------------------

    def events(self) -> Iterator[dict[str, Any]]:
        db = self._connect()
        for (line,) in db.execute("SELECT line FROM events ORDER BY stream, idx"):
            yield orjson.loads(line)

    def sessions(self, where: SessionFilter) -> list[dict[str, Any]]:
        clauses, params = [], []
        if where.identity is not None:
            clauses.append("identity = ?")
            params.append(where.identity)
        if where.topic is not None:
            clauses.append("session IN (SELECT session FROM session_topics WHERE topic = ?)")
            params.append(where.topic)
        if where.decision == "deny":
            clauses.append("denied > 0")
        if where.since is not None:
            clauses.append("started >= ?")
            params.append(where.since)
        if where.until is not None:
            clauses.append("started <= ?")
            params.append(where.until)
        sql = f"SELECT {', '.join(SUMMARY_COLUMNS)} FROM sessions"
        if clauses:
            sql += " WHERE " + " AND ".join(clauses)
        sql += " ORDER BY started DESC LIMIT ?"
        db = self._connect()
        out = []
        for row in db.execute(sql, (*params, where.limit)).fetchall():
            summary = dict(zip(SUMMARY_COLUMNS, row))
            summary["topics"] = [topic for (topic,) in db.execute(
                "SELECT topic FROM session_topics WHERE session = ? ORDER BY topic", (summary["session"],))]
            out.append(summary)
        return out

    def session_events(self, session: str) -> list[dict[str, Any]]:
        db = self._connect()
        rows = db.execute("SELECT line FROM events WHERE session = ? ORDER BY time, stream, idx", (session,))
        return [orjson.loads(line) for (line,) in rows]
