"""Audit events to an HTTP endpoint: a SIEM's collector (Splunk HEC) or any webhook.

Every batch is first stored in an on-disk outbox (SQLite, WAL, synchronous=FULL), one row per
event keyed by (stream, index), and then POSTed from there, oldest first; a row is deleted only
after a 2xx answer. Hence:

- `write` succeeds once the batch is on disk. A receiver that is down, slow or answering errors
  does not fail the bus: the events wait in the outbox, across a gateway restart too, and are
  retried by a background task with backoff (0.5 s doubling up to 60 s).
- `write` raises only when the batch could not be stored: the outbox already holds
  `max_outbox_events`, or the disk failed. The bus then keeps the batch in memory and retries
  it, and fail-closed auditing stops reading requests until the receiver catches up.
- Delivery is at least once and in order. Every attempt of one POST carries the same
  `Idempotency-Key`; a receiver that wants exactly once also drops events whose
  (stream, index) it already has.
- The workers of a gateway share the outbox file. A file lock lets one of them deliver at a
  time, so no event is POSTed by two workers at once.

Signing (`secret_env`): each POST carries `X-Brokerguard-Timestamp` (unix seconds) and
`X-Brokerguard-Signature: sha256=<hex>`, the HMAC-SHA256 under the secret of the timestamp, a
dot, and the exact body bytes. `verify_signature` checks one.

Tokens, secrets and credentials in the URL never appear in `name`, in logs or in errors.
"""

from __future__ import annotations

import asyncio
import base64
import fcntl
import hashlib
import hmac
import http.client
import logging
import os
import re
import sqlite3
import ssl
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import unquote, urlsplit

import orjson

from brokerguard import __version__
from brokerguard.audit.sinks import Sealed, SinkContext, check_options, option
from brokerguard.errors import BrokerGuardError, ConfigError
from brokerguard.sqlitefile import wal_mode

__all__ = ["OutboxError", "OutboxFull", "WebhookSink", "verify_signature"]

log = logging.getLogger("brokerguard.audit.webhook")

OPTIONS = ("url", "format", "token_env", "secret_env", "outbox", "timeout_s", "batch_max", "max_outbox_events")
FORMATS = ("json", "splunk_hec")
RETRY_FIRST_S = 0.5
RETRY_MAX_S = 60.0
SCHEMA_VERSION = 1
BUSY_TIMEOUT_S = 5.0
MARKS_KEPT_S = 30 * 86400  # how long a delivered stream's high-water mark is kept
MAX_ANSWER_BYTES = 65536  # read of a receiver's answer; a longer one only costs the connection
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

TIMESTAMP_HEADER = "X-Brokerguard-Timestamp"
SIGNATURE_HEADER = "X-Brokerguard-Signature"
DELIVERY_HEADER = "X-Brokerguard-Delivery"

_SCHEMA = (
    # id is the delivery order: rows are only ever deleted oldest first, so ids stay dense.
    """CREATE TABLE IF NOT EXISTS outbox (
        id INTEGER PRIMARY KEY,
        stream TEXT NOT NULL,
        idx INTEGER NOT NULL,
        time REAL,
        host TEXT NOT NULL,
        line BLOB NOT NULL,
        UNIQUE (stream, idx))""",
    # The last index delivered per stream, so a batch the bus writes again after its events
    # were delivered is not stored (and sent) a second time.
    """CREATE TABLE IF NOT EXISTS delivered (
        stream TEXT PRIMARY KEY,
        last_index INTEGER NOT NULL,
        at REAL NOT NULL)""",
)


class OutboxError(BrokerGuardError):
    """The outbox could not store a batch; the bus keeps it and tries again."""

    retriable = True


class OutboxFull(OutboxError):
    """The outbox holds `max_outbox_events`: the receiver has not taken events for a while."""


class _Refused(Exception):
    """The receiver answered, but not with 2xx."""


class _Row(NamedTuple):
    id: int
    stream: str
    index: int
    time: float | None
    host: str
    line: bytes


def verify_signature(secret: bytes, timestamp: str, body: bytes, signature: str, *,
                     max_age_s: float | None = None) -> bool:
    """True if `signature` (the X-Brokerguard-Signature header, "sha256=<hex>") is the HMAC of
    `timestamp` (the X-Brokerguard-Timestamp header) and `body` under `secret`. With max_age_s,
    a timestamp further than that from now is refused too, so a captured POST cannot be
    replayed later."""
    if max_age_s is not None:
        try:
            if abs(time.time() - int(timestamp)) > max_age_s:
                return False
        except ValueError:
            return False
    return hmac.compare_digest(_sign(secret, timestamp, body).encode(), signature.encode())


def _sign(secret: bytes, timestamp: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


class _Endpoint(NamedTuple):
    https: bool
    host: str
    port: int | None
    target: str  # path and query, as sent in the request line
    shown: str  # the URL without credentials or query, for names and logs
    basic: str | None  # an Authorization header from credentials in the URL


def _endpoint(url: str) -> _Endpoint:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        # Only the scheme is repeated: the rest of a URL may hold credentials.
        given = f" (it starts with {parts.scheme}:)" if parts.scheme else ""
        raise ConfigError(f"audit sink webhook: `url` must start with http:// or https://{given}")
    if not parts.hostname:
        raise ConfigError("audit sink webhook: `url` has no host")
    try:
        port = parts.port
    except ValueError:
        raise ConfigError("audit sink webhook: `url` has a port that is not a number from 0 to 65535") from None
    host = parts.hostname
    netloc = (f"[{host}]" if ":" in host else host) + (f":{port}" if port is not None else "")
    path = parts.path or "/"
    basic = None
    if parts.username is not None or parts.password is not None:
        pair = f"{unquote(parts.username or '')}:{unquote(parts.password or '')}"
        basic = "Basic " + base64.b64encode(pair.encode()).decode()
    return _Endpoint(parts.scheme == "https", host, port, path + (f"?{parts.query}" if parts.query else ""),
                     f"{parts.scheme}://{netloc}{path}", basic)


class WebhookSink:
    """POSTs audit events to `url` through an on-disk outbox (see the module's docstring)."""

    def __init__(self, url: str, *, gateway: str, outbox: str | os.PathLike[str], format: str = "json",
                 token: str | None = None, secret: bytes | None = None, timeout_s: float = 10.0,
                 batch_max: int = 500, max_outbox_events: int = 1_000_000,
                 retry_first_s: float = RETRY_FIRST_S, retry_max_s: float = RETRY_MAX_S) -> None:
        """token: for `json` a bearer token, for `splunk_hec` the HEC token (required there)."""
        if format not in FORMATS:
            raise ConfigError(f"audit sink webhook: `format` must be one of {', '.join(FORMATS)}, not {format!r}")
        self._endpoint = _endpoint(url)
        if format == "splunk_hec" and not token:
            raise ConfigError("audit sink webhook: the splunk_hec format needs the HEC token: set `token_env` to "
                              "the environment variable that holds it")
        if token and self._endpoint.basic:
            raise ConfigError("audit sink webhook: give credentials either in `url` or through `token_env`, "
                              "not both")
        self.name = f"webhook {self._endpoint.shown}"
        self.gateway = gateway
        self.outbox = Path(outbox)
        self.format = format
        self.timeout_s = float(timeout_s)
        self.batch_max = batch_max
        self.max_outbox_events = max_outbox_events
        self.retry_first_s = retry_first_s
        self.retry_max_s = retry_max_s
        self._secret = secret
        self._authorization = self._endpoint.basic
        if token:
            self._authorization = f"{'Splunk' if format == 'splunk_hec' else 'Bearer'} {token}"
        password = urlsplit(url).password
        hidden = [token, secret.decode(errors="replace") if secret else None, password,
                  unquote(password) if password else None]
        self._hidden = [value for value in hidden if value]  # never in a log line, whatever an error says
        self._ssl = ssl.create_default_context() if self._endpoint.https else None

        self._db: sqlite3.Connection | None = None
        self._db_lock = threading.Lock()  # one statement or transaction at a time on the connection
        self._delivering = threading.Lock()  # one delivery at a time in this process...
        self._lock_file: int | None = None  # ...and, flocked, across the workers sharing the outbox
        self._unacked_last: int | None = None  # a POST that failed: the next attempt sends the same rows
        self._failing = False
        self._delay = retry_first_s
        self._retry_at = 0.0  # time.monotonic() before which only the background task delivers
        self._loop: asyncio.AbstractEventLoop | None = None
        self._retrier: asyncio.Task | None = None
        self._closing = False

    @classmethod
    def from_config(cls, options: Mapping[str, Any], context: SinkContext, *,
                    retry_first_s: float = RETRY_FIRST_S, retry_max_s: float = RETRY_MAX_S) -> WebhookSink:
        sink = "webhook"
        check_options(options, OPTIONS, sink=sink)
        url = option(options, "url", str, sink=sink)
        format = option(options, "format", str, "json", sink=sink)
        token = _from_environment(options, "token_env", sink)
        secret = _from_environment(options, "secret_env", sink)
        timeout_s = option(options, "timeout_s", (int, float), 10, sink=sink)
        if not timeout_s > 0:
            raise ConfigError(f"audit sink {sink}: `timeout_s` must be above 0, not {timeout_s!r}")
        batch_max = option(options, "batch_max", int, 500, sink=sink)
        if batch_max < 1:
            raise ConfigError(f"audit sink {sink}: `batch_max` must be at least 1, not {batch_max!r}")
        max_outbox_events = option(options, "max_outbox_events", int, 1_000_000, sink=sink)
        if max_outbox_events < 1:
            raise ConfigError(f"audit sink {sink}: `max_outbox_events` must be at least 1, not "
                              f"{max_outbox_events!r}")
        endpoint = _endpoint(url)
        outbox = option(options, "outbox", str, None, sink=sink)
        if outbox is None:
            # Named after the URL without its credentials, so rotating them keeps the outbox.
            where = hashlib.sha256(f"{endpoint.shown}?{urlsplit(url).query}".encode()).hexdigest()[:12]
            path = context.state_dir / f"webhook-outbox-{where}.db"
        else:
            path = Path(outbox).expanduser()
        return cls(url, gateway=context.gateway, outbox=path, format=format, token=token,
                   secret=secret.encode() if secret else None, timeout_s=timeout_s, batch_max=batch_max,
                   max_outbox_events=max_outbox_events, retry_first_s=retry_first_s, retry_max_s=retry_max_s)

    # -- the bus's side ------------------------------------------------------------------------

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        await asyncio.to_thread(self._open)
        if await asyncio.to_thread(self.backlog):
            self._retry_at = 0.0  # what a previous run left goes out now
            self._ensure_retrying()

    def write(self, batch: Sequence[Sealed]) -> None:
        """Store the batch in the outbox (or raise), then deliver unless delivery is backing off."""
        if not batch:
            return
        if self._due() and self.backlog() >= self.max_outbox_events:
            self._deliver()
        self._append(batch)
        if self._due():
            self._deliver()
        if self._failing or self.backlog():
            self._retry_soon()

    async def close(self) -> None:
        """One last delivery (bounded by timeout_s), then the outbox is closed; what is left is
        delivered by the next sink to open it."""
        self._closing = True
        if self._retrier is not None:
            self._retrier.cancel()
            try:
                await self._retrier
            except asyncio.CancelledError:
                pass
        if self._db is not None:
            await asyncio.to_thread(self._last_attempt)

    def backlog(self) -> int:
        """Events in the outbox, waiting for the receiver."""
        with self._db_lock:
            # Rows leave oldest first, so ids are dense and this costs no scan.
            return self._connection().execute("SELECT COALESCE(MAX(id) - MIN(id) + 1, 0) FROM outbox").fetchone()[0]

    # -- the outbox ----------------------------------------------------------------------------

    def _connection(self) -> sqlite3.Connection:
        if self._db is None:
            raise RuntimeError(f"{self.name} is not started, or closed")
        return self._db

    def _open(self) -> None:
        try:
            self.outbox.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            # Created here rather than by SQLite so the mode is 0600 from the first byte (the
            # events hold payloads); SQLite gives the -wal and -shm files the same mode.
            os.close(os.open(self.outbox, os.O_WRONLY | os.O_CREAT, 0o600))
            db = sqlite3.connect(self.outbox, timeout=BUSY_TIMEOUT_S, isolation_level=None,
                                 check_same_thread=False)
        except (OSError, sqlite3.Error) as err:
            raise ConfigError(f"audit sink {self.name}: cannot open the outbox {self.outbox}: {err}") from err
        try:
            mode = wal_mode(db, BUSY_TIMEOUT_S)
            if mode.lower() != "wal":
                raise ConfigError(f"audit sink {self.name}: the outbox {self.outbox} cannot use WAL mode (got "
                                  f"{mode}); put it on a local file system")
            db.execute("PRAGMA synchronous = FULL")  # a stored batch survives a power cut
            db.execute("BEGIN IMMEDIATE")  # several workers may create the file at once
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise ConfigError(f"audit sink {self.name}: the outbox {self.outbox} was written by a newer "
                                  "brokerguard: upgrade brokerguard, or point `outbox` elsewhere")
            for statement in _SCHEMA:
                db.execute(statement)
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            db.execute("DELETE FROM delivered WHERE at < ?", (time.time() - MARKS_KEPT_S,))
            db.execute("COMMIT")
            self._lock_file = os.open(f"{self.outbox}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        except (OSError, sqlite3.Error) as err:
            db.close()
            raise ConfigError(f"audit sink {self.name}: cannot open the outbox {self.outbox}: {err}") from err
        except BaseException:
            db.close()
            raise
        self._db = db

    def _append(self, batch: Sequence[Sealed]) -> None:
        rows = [(sealed.event["stream"], sealed.event["index"], sealed.event.get("time"), self.gateway, sealed.line)
                for sealed in batch]
        with self._db_lock:
            db = self._connection()
            try:
                stored = db.execute("SELECT COALESCE(MAX(id) - MIN(id) + 1, 0) FROM outbox").fetchone()[0]
                if stored >= self.max_outbox_events:
                    raise OutboxFull(f"{self.name}: the outbox {self.outbox} holds {stored} events, its "
                                     "max_outbox_events; the receiver has not taken any for a while")
                db.execute("BEGIN IMMEDIATE")
                try:
                    marks = {stream: _last_delivered(db, stream) for stream in {row[0] for row in rows}}
                    db.executemany("INSERT OR IGNORE INTO outbox (stream, idx, time, host, line) "
                                   "VALUES (?, ?, ?, ?, ?)", [row for row in rows if row[1] > marks[row[0]]])
                    db.execute("COMMIT")
                except BaseException:
                    if db.in_transaction:
                        db.execute("ROLLBACK")
                    raise
            except sqlite3.Error as err:
                raise OutboxError(f"{self.name}: cannot store events in the outbox {self.outbox}: {err}") from err

    def _oldest(self) -> list[_Row]:
        with self._db_lock:
            db = self._connection()
            query = "SELECT id, stream, idx, time, host, line FROM outbox {} ORDER BY id LIMIT ?"
            if self._unacked_last is not None:
                rows = db.execute(query.format("WHERE id <= ?"), (self._unacked_last, self.batch_max)).fetchall()
                if rows:
                    return [_Row(*row) for row in rows]
                self._unacked_last = None  # another worker delivered them
            return [_Row(*row) for row in db.execute(query.format(""), (self.batch_max,)).fetchall()]

    def _remove(self, rows: list[_Row]) -> None:
        marks: dict[str, int] = {}
        for row in rows:
            marks[row.stream] = max(marks.get(row.stream, -1), row.index)
        now = time.time()
        with self._db_lock:
            db = self._connection()
            db.execute("BEGIN IMMEDIATE")
            try:
                db.execute("DELETE FROM outbox WHERE id BETWEEN ? AND ?", (rows[0].id, rows[-1].id))
                db.executemany("INSERT INTO delivered (stream, last_index, at) VALUES (?, ?, ?) "
                               "ON CONFLICT (stream) DO UPDATE SET last_index = MAX(last_index, excluded.last_index), "
                               "at = excluded.at", [(stream, index, now) for stream, index in marks.items()])
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise
        self._unacked_last = None

    # -- delivery ------------------------------------------------------------------------------

    def _due(self) -> bool:
        return time.monotonic() >= self._retry_at

    def _deliver(self) -> bool:
        """POST everything the outbox holds; True when it is empty. Waits for a delivery under way."""
        with self._delivering:
            return self._deliver_held(deadline=None)

    def _deliver_held(self, deadline: float | None) -> bool:
        """The delivery loop; `_delivering` is held. With a deadline, neither waiting for the file
        lock nor starting a POST goes past it."""
        with self._workers_excluded(deadline) as excluded:
            if not excluded:
                return False
            connection: http.client.HTTPConnection | None = None
            try:
                while True:
                    rows = self._oldest()
                    if not rows:
                        self._succeeded()
                        return True
                    if deadline is not None and time.monotonic() >= deadline:
                        return False
                    if connection is None:
                        connection = self._connect()
                    if not self._post(connection, rows):
                        connection.close()
                        connection = None
                    self._remove(rows)
            except Exception as err:  # whatever went wrong, the events stay and delivery is retried
                self._failed(err)
                return False
            finally:
                if connection is not None:
                    connection.close()

    @contextmanager
    def _workers_excluded(self, deadline: float | None) -> Iterator[bool]:
        """The outbox's file lock: held by the one worker delivering (flock excludes processes;
        `_delivering` excludes this process's threads)."""
        if self._lock_file is None:
            yield False
            return
        if deadline is None:
            fcntl.flock(self._lock_file, fcntl.LOCK_EX)
        else:
            while True:
                try:
                    fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        yield False
                        return
                    time.sleep(0.02)
        try:
            yield True
        finally:
            fcntl.flock(self._lock_file, fcntl.LOCK_UN)

    def _connect(self) -> http.client.HTTPConnection:
        # No proxy from the environment and no redirects: events go where the config says or
        # nowhere (a redirected POST would arrive as a GET without its body).
        if self._endpoint.https:
            return http.client.HTTPSConnection(self._endpoint.host, self._endpoint.port, timeout=self.timeout_s,
                                               context=self._ssl)
        return http.client.HTTPConnection(self._endpoint.host, self._endpoint.port, timeout=self.timeout_s)

    def _post(self, connection: http.client.HTTPConnection, rows: list[_Row]) -> bool:
        """POST rows; raise unless the answer is 2xx. False: the connection cannot be reused."""
        body = self._body(rows)
        delivery = f"{rows[0].stream}:{rows[0].index}-{rows[-1].stream}:{rows[-1].index}"
        headers = {"Content-Type": "application/json", "User-Agent": f"brokerguard/{__version__}",
                   DELIVERY_HEADER: delivery, "Idempotency-Key": delivery}
        if self._authorization:
            headers["Authorization"] = self._authorization
        if self._secret is not None:
            timestamp = str(int(time.time()))
            headers[TIMESTAMP_HEADER] = timestamp
            headers[SIGNATURE_HEADER] = _sign(self._secret, timestamp, body)
        self._unacked_last = rows[-1].id
        connection.request("POST", self._endpoint.target, body=body, headers=headers)
        answer = connection.getresponse()
        answer.read(MAX_ANSWER_BYTES)
        if not 200 <= answer.status < 300:
            raise _Refused(f"HTTP {answer.status} {answer.reason}".strip())
        return answer.isclosed()  # else an unread answer is left on it

    def _body(self, rows: list[_Row]) -> bytes:
        if self.format == "json":
            return b"[" + b",".join(row.line for row in rows) + b"]"
        return b"\n".join(orjson.dumps({"time": row.time, "host": row.host, "source": "brokerguard",
                                        "sourcetype": "brokerguard:audit", "event": orjson.Fragment(row.line)})
                          for row in rows)

    def _failed(self, err: Exception) -> None:
        self._retry_at = time.monotonic() + self._delay
        reason = self._redact(str(err) or type(err).__name__)
        if not self._failing:
            log.error("audit sink %s: delivery failed (%s); the events wait in the outbox %s and delivery is "
                      "retried with backoff", self.name, reason, self.outbox)
            self._failing = True
        else:
            log.debug("audit sink %s: delivery failed again (%s), next try in %.1f s", self.name, reason,
                      self._delay)
        self._delay = min(self._delay * 2, self.retry_max_s)

    def _succeeded(self) -> None:
        if self._failing:
            log.warning("audit sink %s: delivering again, the outbox is empty", self.name)
            self._failing = False
        self._delay = self.retry_first_s
        self._retry_at = 0.0

    def _redact(self, text: str) -> str:
        for value in self._hidden:
            text = text.replace(value, "***")
        return text

    # -- the background task -------------------------------------------------------------------

    def _retry_soon(self) -> None:
        """From a bus thread: make sure the background task is there to retry."""
        if self._loop is None or self._closing:
            return
        try:
            self._loop.call_soon_threadsafe(self._ensure_retrying)
        except RuntimeError:
            pass  # the loop is closed: the next start delivers what is left

    def _ensure_retrying(self) -> None:
        if self._closing or self._loop is None:
            return
        if self._retrier is None or self._retrier.done():
            self._retrier = self._loop.create_task(self._retry(), name=f"retry {self.name}")

    async def _retry(self) -> None:
        while not self._closing:
            await asyncio.sleep(max(0.0, self._retry_at - time.monotonic()))
            if await asyncio.to_thread(self._deliver):
                return

    def _last_attempt(self) -> None:
        deadline = time.monotonic() + self.timeout_s
        # A delivery the cancelled task started may still run in its thread; wait for it, but
        # not forever, and never close the outbox under it.
        if not self._delivering.acquire(timeout=self.timeout_s):
            log.error("audit sink %s: a delivery is still under way at shutdown; the outbox %s keeps what it "
                      "does not deliver", self.name, self.outbox)
            return
        try:
            self._retry_at = 0.0
            self._deliver_held(deadline)
            left = self.backlog()
            if left:
                log.warning("audit sink %s: %d events stay in the outbox %s; they are delivered when the gateway "
                            "starts again", self.name, left, self.outbox)
            with self._db_lock:
                assert self._db is not None
                self._db.close()
                self._db = None
            if self._lock_file is not None:
                os.close(self._lock_file)
                self._lock_file = None
        finally:
            self._delivering.release()


def _from_environment(options: Mapping[str, Any], name: str, sink: str) -> str | None:
    variable = option(options, name, str, None, sink=sink)
    if variable is None:
        return None
    if not ENV_NAME.fullmatch(variable):
        # Not echoed: a token pasted here by mistake must not end up in a log.
        raise ConfigError(f"audit sink {sink}: `{name}` must be the name of an environment variable (letters, "
                          "digits and _), not the value itself")
    value = os.environ.get(variable)
    if not value:
        raise ConfigError(f"audit sink {sink}: `{name}` names the environment variable {variable}, which is not "
                          "set or empty")
    return value


def _last_delivered(db: sqlite3.Connection, stream: str) -> int:
    row = db.execute("SELECT last_index FROM delivered WHERE stream = ?", (stream,)).fetchone()
    return row[0] if row else -1
