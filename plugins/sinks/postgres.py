"""The PostgreSQL audit sink: one database for a fleet of gateways, asked questions in SQL.

The same tables and meaning as the SQLite sink (sqlite.py), in a schema of their own:

    events          each sealed event as the exact JSON line that was hashed, keyed by
                    (stream, idx): a retried batch is stored once
    sessions        one summary row per session, for `brokerguard sessions`
    session_topics  (session, topic): the topics each session touched

`sessions` and `session_topics` are an index kept up to date in the same transaction as the
events, and only for events that transaction actually inserted; they are not part of the
chain (verify the events, the listing is a convenience).

The line is TEXT, not JSONB: JSONB rewrites what it stores (numbers such as 1e300 or -0.0
come back as other values, `\\u0000` is refused, keys are reordered, duplicates dropped), and
`verify` must be given back the event that was hashed.

Many gateways and workers write at once (each its own stream). Every write takes its row
locks in one global order (events by (stream, idx), then sessions by id, then session topics),
and adds to the counters with `ON CONFLICT DO UPDATE ... requests = requests + n`, which
updates the newest committed row: concurrent writers neither deadlock nor lose counts.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import re
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import orjson
import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from brokerguard.audit.sinks import Sealed, SessionFilter, SinkContext, check_options, option
from brokerguard.errors import BrokerGuardError, ConfigError

__all__ = ["AuditDatabaseError", "PostgresSink"]

log = logging.getLogger("brokerguard.audit")

OPTIONS = ("dsn", "password_env", "schema", "connect_timeout_s")
_SCHEMA = re.compile(r"[a-z_][a-z0-9_]{0,62}")
CHUNK_BYTES = 32 * 1024 * 1024  # lines per INSERT: a parameter of PostgreSQL's must stay below 1 GiB
READ_ROWS = 2000  # rows a reading cursor fetches at a time
# What the dsn does not set itself. A write stuck behind a lock or on a dead link fails (and is
# retried) instead of holding the bus's thread, and the gateway's shutdown, for ever.
CONNECTION_DEFAULTS = {"application_name": "brokerguard-audit", "options": "-c statement_timeout=60000",
                       "keepalives": "1", "keepalives_idle": "30", "keepalives_interval": "10",
                       "keepalives_count": "3", "tcp_user_timeout": "60000"}
SUMMARY_COLUMNS = ("session", "started", "adapter", "peer", "listener", "gateway", "identity", "auth",
                   "client_id", "software", "ended", "end_reason", "requests", "denied")

# "C" collation on the keys: byte order, the order Python sorts in, on any database's locale.
SCHEMA = """
CREATE SCHEMA IF NOT EXISTS {schema};
CREATE TABLE IF NOT EXISTS {schema}.events (
    stream TEXT COLLATE "C" NOT NULL,
    idx BIGINT NOT NULL,
    time DOUBLE PRECISION NOT NULL,
    kind TEXT NOT NULL,
    session TEXT,
    line TEXT NOT NULL,
    PRIMARY KEY (stream, idx)
);
CREATE INDEX IF NOT EXISTS events_by_session ON {schema}.events (session, time);
CREATE TABLE IF NOT EXISTS {schema}.sessions (
    session TEXT PRIMARY KEY,
    started DOUBLE PRECISION,
    adapter TEXT,
    peer TEXT,
    listener TEXT,
    gateway TEXT,
    identity TEXT,
    auth TEXT,
    client_id TEXT,
    software TEXT,
    ended DOUBLE PRECISION,
    end_reason TEXT,
    requests BIGINT NOT NULL DEFAULT 0,
    denied BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS sessions_by_start ON {schema}.sessions (started);
CREATE INDEX IF NOT EXISTS sessions_by_identity ON {schema}.sessions (identity, started);
CREATE TABLE IF NOT EXISTS {schema}.session_topics (
    session TEXT NOT NULL,
    topic TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (session, topic)
);
CREATE INDEX IF NOT EXISTS session_topics_by_topic ON {schema}.session_topics (topic);
"""

INSERT_EVENTS = """
INSERT INTO {schema}.events (stream, idx, time, kind, session, line)
SELECT * FROM unnest(%s::text[], %s::bigint[], %s::float8[], %s::text[], %s::text[], %s::text[])
ON CONFLICT (stream, idx) DO NOTHING
RETURNING stream, idx
"""

# One row per session and batch, the batch's events folded in (see _fold); the flags say which
# columns this batch has news for.
UPSERT_SESSION = """
INSERT INTO {schema}.sessions AS s (session, started, adapter, peer, listener, gateway, identity, auth,
                                    client_id, software, ended, end_reason, requests, denied)
VALUES (%(session)s, %(started)s, %(adapter)s, %(peer)s, %(listener)s, %(gateway)s,
        coalesce(%(identity)s::text, %(end_identity)s::text), %(auth)s, %(client_id)s, %(software)s,
        %(ended)s, %(end_reason)s, %(requests)s, %(denied)s)
ON CONFLICT (session) DO UPDATE SET
    started = CASE WHEN %(has_start)s THEN excluded.started ELSE s.started END,
    adapter = CASE WHEN %(has_start)s THEN excluded.adapter ELSE s.adapter END,
    peer = CASE WHEN %(has_start)s THEN excluded.peer ELSE s.peer END,
    listener = CASE WHEN %(has_start)s THEN excluded.listener ELSE s.listener END,
    gateway = CASE WHEN %(has_start)s THEN excluded.gateway ELSE s.gateway END,
    identity = coalesce(CASE WHEN %(has_login)s THEN %(identity)s::text ELSE s.identity END,
                        %(end_identity)s::text),
    auth = CASE WHEN %(has_login)s THEN excluded.auth ELSE s.auth END,
    client_id = coalesce(excluded.client_id, s.client_id),
    software = coalesce(excluded.software, s.software),
    ended = CASE WHEN %(has_end)s THEN excluded.ended ELSE s.ended END,
    end_reason = CASE WHEN %(has_end)s THEN excluded.end_reason ELSE s.end_reason END,
    requests = s.requests + excluded.requests,
    denied = s.denied + excluded.denied
"""

INSERT_TOPICS = """
INSERT INTO {schema}.session_topics (session, topic)
SELECT * FROM unnest(%s::text[], %s::text[])
ON CONFLICT (session, topic) DO NOTHING
"""

READ_EVENTS = "SELECT stream, idx, line FROM {schema}.events ORDER BY stream, idx"
READ_SESSION = "SELECT stream, idx, line FROM {schema}.events WHERE session = %s ORDER BY time, stream, idx"
READ_SESSIONS = """
SELECT {columns}, coalesce((SELECT array_agg(t.topic ORDER BY t.topic) FROM {schema}.session_topics t
                            WHERE t.session = s.session), '{{}}') AS topics
FROM {schema}.sessions s {where}
ORDER BY s.started DESC NULLS LAST, s.session
LIMIT %s
"""


class AuditDatabaseError(BrokerGuardError):
    """The audit database could not be reached, written or read; a failed write is retried."""

    retriable = True

    def __init__(self, peer: str, message: str) -> None:
        super().__init__(f"audit sink postgres at {peer}: {message}")
        self.peer = peer


class PostgresSink:
    """Writes sealed events to PostgreSQL; reads them and the session index back with SQL.

    Options: `dsn` (libpq, without the password), `password_env`, `schema` (default
    brokerguard), `connect_timeout_s` (default 10).
    """

    def __init__(self, dsn: str, *, password: str | None = None, schema: str = "brokerguard",
                 connect_timeout_s: int = 10) -> None:
        params = self._params = conninfo_to_dict(dsn)
        self.dsn = dsn
        self._password = password  # only ever handed to libpq
        self.schema = schema
        self.connect_timeout_s = connect_timeout_s
        host = params.get("host") or params.get("hostaddr") or "localhost"
        self.peer = f"{host}:{params.get('port') or 5432}"
        self.database = params.get("dbname") or params.get("user") or "(default database)"
        self.name = f"postgres {self.database}.{schema} at {self.peer}"
        self._conn: psycopg.Connection | None = None
        self._lock = threading.Lock()
        self._gateways: dict[str, str] = {}  # stream -> gateway, from its stream_start
        self._sql = {name: sql.SQL(text).format(schema=sql.Identifier(schema))
                     for name, text in (("insert_events", INSERT_EVENTS), ("upsert_session", UPSERT_SESSION),
                                        ("insert_topics", INSERT_TOPICS), ("read_events", READ_EVENTS),
                                        ("read_session", READ_SESSION))}

    def __repr__(self) -> str:
        return f"<PostgresSink {self.name}>"

    @classmethod
    def from_config(cls, options: Mapping[str, Any], context: SinkContext) -> PostgresSink:
        check_options(options, OPTIONS, sink="postgres")
        dsn = option(options, "dsn", str, sink="postgres")
        if not dsn.strip():
            raise ConfigError("audit sink postgres: `dsn` cannot be empty (e.g. `host=db port=5432 dbname=audit "
                              "user=gateway`)")
        try:
            params = conninfo_to_dict(dsn)
        except psycopg.ProgrammingError as err:
            # libpq's message quotes the string: not when it may hold a password.
            detail = "" if "password" in dsn.lower() or "@" in dsn else f": {err}"
            raise ConfigError(f"audit sink postgres: `dsn` is not a libpq connection string{detail} (e.g. "
                              "`host=db port=5432 dbname=audit user=gateway`)") from None
        if "password" in params:  # password=..., or a URI's user:password@host
            raise ConfigError("audit sink postgres: `dsn` must not hold the password: name an environment "
                              "variable that holds it in `password_env`")
        password_env = option(options, "password_env", str, None, sink="postgres")
        password = None
        if password_env is not None:
            password = os.environ.get(password_env)
            if password is None:
                raise ConfigError(f"audit sink postgres: environment variable {password_env} (`password_env`) "
                                  "is not set")
        schema = option(options, "schema", str, "brokerguard", sink="postgres")
        if not _SCHEMA.fullmatch(schema):
            raise ConfigError(f"audit sink postgres: `schema` {schema!r} must be a plain name: lower-case letters, "
                              "digits and `_`, not starting with a digit, at most 63")
        timeout = option(options, "connect_timeout_s", int, 10, sink="postgres")
        if timeout < 1:
            raise ConfigError(f"audit sink postgres: `connect_timeout_s` must be at least 1, not {timeout}")
        return cls(dsn, password=password, schema=schema, connect_timeout_s=timeout)

    # -- connections ---------------------------------------------------------------------------

    def _connect(self) -> psycopg.Connection:
        extra = {key: value for key, value in CONNECTION_DEFAULTS.items() if key not in self._params}
        extra["connect_timeout"] = self.connect_timeout_s
        if self._password is not None:
            extra["password"] = self._password
        try:
            return psycopg.connect(self.dsn, autocommit=True, **extra)
        except psycopg.Error as err:
            raise self._failure(f"cannot connect to database {self.database}", err) from err

    def _failure(self, doing: str, err: psycopg.Error) -> AuditDatabaseError:
        reason = " ".join(str(err).split()) or type(err).__name__
        if self._password:
            reason = reason.replace(self._password, "***")  # libpq never quotes it; make sure
        if isinstance(err, psycopg.errors.UndefinedTable):
            reason = (f"no audit tables in schema {self.schema} (no gateway has written there yet, or `schema` "
                      f"names another): {reason}")
        elif isinstance(err, psycopg.errors.InsufficientPrivilege):
            reason += (f" (the role needs CREATE on the database to make schema {self.schema}, or the tables "
                       "made for it; see docs/audit-sinks.md)")
        return AuditDatabaseError(self.peer, f"{doing}: {reason}")

    def _writer(self) -> psycopg.Connection:
        if self._conn is None or self._conn.closed:
            self._conn = self._connect()
        return self._conn

    def _drop_if_broken(self) -> None:
        conn = self._conn
        if conn is not None and (conn.broken or conn.closed):
            conn.close()
            self._conn = None  # the next write (the bus's retry) connects afresh

    @contextmanager
    def _reader(self, doing: str) -> Iterator[psycopg.Connection]:
        """A connection of its own for one read: a reader never waits for, or holds up, writes."""
        conn = self._connect()
        try:
            yield conn
        except psycopg.Error as err:
            raise self._failure(doing, err) from err
        finally:
            conn.close()

    # -- writing -------------------------------------------------------------------------------

    async def start(self) -> None:
        await asyncio.to_thread(self._start)

    def _start(self) -> None:
        with self._lock:
            conn = self._writer()
            try:
                self._prepare(conn)
            except psycopg.Error as err:
                self._drop_if_broken()
                raise self._failure(f"cannot prepare schema {self.schema}", err) from err

    def _prepare(self, conn: psycopg.Connection) -> None:
        encoding = conn.execute("SHOW server_encoding").fetchone()[0]
        if encoding != "UTF8":
            raise AuditDatabaseError(self.peer, f"database {self.database} has encoding {encoding}; the audit "
                                                "lines are UTF-8 (create the database with ENCODING 'UTF8')")
        tables = [f"{self.schema}.{table}" for table in ("events", "sessions", "session_topics")]
        found = conn.execute("SELECT " + ", ".join(["to_regclass(%s)"] * 3), tables).fetchone()
        if all(found):
            return  # made already (perhaps by an administrator: the role then needs no CREATE)
        with conn.transaction():
            # Gateways starting together would race on CREATE ... IF NOT EXISTS (unique violations
            # in the catalog): one at a time.
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_lock_key(self.schema),))
            for statement in SCHEMA.strip().split(";\n"):
                conn.execute(sql.SQL(statement).format(schema=sql.Identifier(self.schema)))
        log.info("audit sink %s: tables ready", self.name)

    def write(self, batch: Sequence[Sealed]) -> None:
        if not batch:
            return
        with self._lock:
            conn = self._writer()
            try:
                with conn.transaction():
                    self._store(conn, batch)
            except psycopg.Error as err:
                self._drop_if_broken()
                raise self._failure(f"{len(batch)} events not stored", err) from err

    def _store(self, conn: psycopg.Connection, batch: Sequence[Sealed]) -> None:
        for sealed in batch:
            event = sealed.event
            if event["kind"] == "stream_start":  # stored or not: a retry must still know the gateway
                self._gateways[event["stream"]] = event.get("gateway")
        ordered = sorted(batch, key=lambda sealed: (sealed.event["stream"], sealed.event["index"]))
        inserted: set[tuple[str, int]] = set()
        for chunk in _chunks(ordered):
            columns: tuple[list[Any], ...] = ([], [], [], [], [], [])
            for sealed in chunk:
                event = sealed.event
                for column, value in zip(columns, (event["stream"], event["index"], float(event["time"]),
                                                   _text(event["kind"]), _text(event.get("session")),
                                                   sealed.line.decode())):
                    column.append(value)
            cursor = conn.execute(self._sql["insert_events"], columns)
            inserted.update((stream, idx) for stream, idx in cursor.fetchall())
        stored = [sealed.event for sealed in batch if (sealed.event["stream"], sealed.event["index"]) in inserted]
        summaries = _fold(stored, self._gateways)
        if not summaries:
            return
        with conn.cursor() as cursor:
            cursor.executemany(self._sql["upsert_session"], [summaries[session] for session in sorted(summaries)])
        topics = sorted((session, topic) for session in summaries for topic in summaries[session]["topics"])
        if topics:
            conn.execute(self._sql["insert_topics"], ([s for s, _ in topics], [t for _, t in topics]))

    async def close(self) -> None:
        await asyncio.to_thread(self._close)  # waits for a write still running in its thread

    def _close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    # -- reading (AuditReader) -----------------------------------------------------------------

    def events(self) -> Iterator[dict[str, Any]]:
        with self._reader(f"cannot read schema {self.schema}") as conn, conn.transaction():
            # A server-side cursor: the trail is read in pieces, never held whole in memory.
            with conn.cursor(name="brokerguard_audit_events") as cursor:
                cursor.itersize = READ_ROWS
                cursor.execute(self._sql["read_events"])
                for stream, idx, line in cursor:
                    yield _event(stream, idx, line)

    def sessions(self, where: SessionFilter) -> list[dict[str, Any]]:
        clauses, params = [], []
        if where.identity is not None:
            clauses.append(sql.SQL("s.identity = %s"))
            params.append(where.identity)
        if where.topic is not None:
            clauses.append(sql.SQL("s.session IN (SELECT session FROM {schema}.session_topics WHERE topic = %s)")
                           .format(schema=sql.Identifier(self.schema)))
            params.append(where.topic)
        if where.decision == "deny":
            clauses.append(sql.SQL("s.denied > 0"))
        if where.since is not None:
            clauses.append(sql.SQL("s.started >= %s"))
            params.append(where.since)
        if where.until is not None:
            clauses.append(sql.SQL("s.started <= %s"))
            params.append(where.until)
        query = sql.SQL(READ_SESSIONS).format(
            columns=sql.SQL(", ").join(sql.SQL("s.{}").format(sql.Identifier(c)) for c in SUMMARY_COLUMNS),
            schema=sql.Identifier(self.schema),
            where=sql.SQL("WHERE ") + sql.SQL(" AND ").join(clauses) if clauses else sql.SQL(""))
        with self._reader(f"cannot read the sessions in schema {self.schema}") as conn:
            rows = conn.execute(query, (*params, where.limit)).fetchall()
        return [{**dict(zip(SUMMARY_COLUMNS, row)), "topics": list(row[-1])} for row in rows]

    def session_events(self, session: str) -> list[dict[str, Any]]:
        with self._reader(f"cannot read session {session} in schema {self.schema}") as conn:
            rows = conn.execute(self._sql["read_session"], (session,)).fetchall()
        return [_event(stream, idx, line) for stream, idx, line in rows]


def _lock_key(schema: str) -> int:
    """The advisory lock that serializes creating one schema's tables."""
    digest = hashlib.sha256(f"brokerguard audit tables {schema}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def _text(value: Any) -> str | None:
    """A value for a TEXT column. PostgreSQL refuses NUL in text, and a client id or topic with
    one would fail every retry of the batch; the line keeps the value exactly (JSON escapes it)."""
    if value is None:
        return None
    return (value if isinstance(value, str) else str(value)).replace("\x00", "\ufffd")


def _chunks(batch: list[Sealed]) -> Iterator[list[Sealed]]:
    chunk: list[Sealed] = []
    size = 0
    for sealed in batch:
        if chunk and size + len(sealed.line) > CHUNK_BYTES:
            yield chunk
            chunk, size = [], 0
        chunk.append(sealed)
        size += len(sealed.line)
    if chunk:
        yield chunk


def _fold(events: list[dict[str, Any]], gateways: Mapping[str, str]) -> dict[str, dict[str, Any]]:
    """Each session's news in these events (in stream order), one row of UPSERT_SESSION each:
    what event by event updates would have done, so each session row is locked once."""
    out: dict[str, dict[str, Any]] = {}
    for event in events:
        session = _text(event.get("session"))
        kind = event["kind"]
        if session is None or kind == "stream_start":
            continue
        row = out.get(session)
        if row is None:
            row = out[session] = {
                "session": session, "started": float(event["time"]), "adapter": None, "peer": None,
                "listener": None, "gateway": None, "identity": None, "auth": None, "client_id": None, "software": None,
                "ended": None, "end_reason": None, "end_identity": None, "requests": 0, "denied": 0,
                "has_start": False, "has_login": False, "has_end": False, "topics": set()}
        if kind == "session_start":
            row.update(has_start=True, started=float(event["time"]), adapter=_text(event.get("adapter")),
                       peer=_text(event.get("peer")), listener=_text(event.get("listener")),
                       gateway=_text(gateways.get(event["stream"])))
        elif kind == "login" and event.get("ok"):
            row.update(has_login=True, identity=_text(event.get("identity")), auth=_text(event.get("auth")))
        elif kind == "request":
            row["requests"] += 1
            row["denied"] += event.get("decision") in ("deny", "partial")
            for name in ("client_id", "software"):
                if event.get(name) is not None:
                    row[name] = _text(event[name])
            for operation in event.get("operations") or ():
                resource = operation.get("resource", "")
                if isinstance(resource, str) and resource.startswith("topic:"):
                    row["topics"].add(_text(resource[6:]))
        elif kind == "session_end":
            row.update(has_end=True, ended=float(event["time"]), end_reason=_text(event.get("reason")),
                       end_identity=_text(event.get("identity")))
    return out


def _event(stream: str, idx: int, line: str) -> dict[str, Any]:
    try:
        event = orjson.loads(line)
    except orjson.JSONDecodeError:
        event = None
    if isinstance(event, dict):
        return event
    # Handed to verify in its place, which then names where the chain breaks.
    log.warning("audit event %s/%d in the database is not a JSON object", stream, idx)
    return {"stream": stream, "index": idx, "unreadable": line[:200]}
