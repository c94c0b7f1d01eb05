"""The admin API as a Starlette app: sessions, replay and verification of the audit trail.

Every read of the audit store blocks (SQLite, files, or a whole Kafka topic read), so it runs
in a worker thread, one at a time: the SQLite reader shares one connection between threads.
"""

from __future__ import annotations

import logging
import ssl
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import orjson
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from brokerguard.admin.auth import BearerAuth
from brokerguard.admin.responses import error, json_response
from brokerguard.audit.chain import verify
from brokerguard.audit.cli import open_reader, when
from brokerguard.audit.replay import replay
from brokerguard.audit.sinks import AuditReader, SessionFilter
from brokerguard.config import Config
from brokerguard.errors import BrokerGuardError
from brokerguard.secret import Secret

__all__ = ["create_app", "producer_config"]

log = logging.getLogger("brokerguard.admin")

T = TypeVar("T")
MAX_BODY_BYTES = 64 * 1024  # the largest request body is a replay's {"to": ...}
MAX_LIMIT = 10_000
SESSION_PARAMETERS = frozenset({"identity", "topic", "denied", "since", "until", "limit"})


class AuditStore:
    """The first readable sink of the gateway's config, the same one `brokerguard sessions` reads."""

    def __init__(self, config_file: str) -> None:
        self._lock = threading.Lock()
        self._reader: AuditReader | None = None
        self.key: bytes | None = None
        self.unavailable: str | None = None  # why there is nothing to read: answered as 409
        try:
            self._reader, self.key = open_reader(config_file, None)
        except BrokerGuardError as err:
            self.unavailable = str(err)

    async def read(self, query: Callable[[AuditReader], T]) -> T:
        def locked() -> T:
            assert self._reader is not None
            with self._lock:
                return query(self._reader)

        return await run_in_threadpool(locked)


def create_app(config: Config, config_file: str) -> Starlette:
    """The admin app for a gateway's config; `config_file` is where its audit sinks are read from."""
    assert config.admin is not None and config.kafka is not None
    admin = config.admin
    store = AuditStore(config_file)

    def store_missing() -> Response | None:
        return error(409, store.unavailable) if store.unavailable is not None else None

    async def health(request: Request) -> Response:
        return json_response({"ok": True})

    async def list_sessions(request: Request) -> Response:
        params = request.query_params
        unknown = sorted(set(params) - SESSION_PARAMETERS)
        if unknown:
            known = ", ".join(sorted(SESSION_PARAMETERS))
            return error(400, f"unknown parameter {', '.join(unknown)} (known: {known})")
        denied = params.get("denied", "false").lower()
        if denied not in ("true", "false", "1", "0"):
            return error(400, f"`denied` is true or false, not {params['denied']!r}")
        limit = params.get("limit", "100")
        if not (limit.isascii() and limit.isdigit()) or not 1 <= int(limit) <= MAX_LIMIT:
            return error(400, f"`limit` is a whole number from 1 to {MAX_LIMIT}, not {limit!r}")
        times: dict[str, float | None] = {}
        for name in ("since", "until"):
            try:
                times[name] = when(params.get(name) or None)
            except BrokerGuardError as err:
                return error(400, f"`{name}`: {err}")
        where = SessionFilter(identity=params.get("identity") or None, topic=params.get("topic") or None,
                              decision="deny" if denied in ("true", "1") else None,
                              since=times["since"], until=times["until"], limit=int(limit))
        if missing := store_missing():
            return missing
        return json_response(await store.read(lambda reader: reader.sessions(where)))

    async def show_session(request: Request) -> Response:
        session = request.path_params["session"]
        if missing := store_missing():
            return missing
        events = await store.read(lambda reader: reader.session_events(session))
        if not events:
            return error(404, f"no events of session {session}")
        return json_response({"session": session, "events": events})

    async def replay_session(request: Request) -> Response:
        session = request.path_params["session"]
        password = admin.replay_password()
        if admin.replay_username is None or password is None:
            return error(409, "replay is not configured: set `admin.replay_username` and "
                              "`admin.replay_password_env` in the gateway config")
        try:
            body = orjson.loads(await request.body())
        except orjson.JSONDecodeError:
            return error(400, 'the body must be JSON: {"to": "<topic>"}')
        target = body.get("to") if isinstance(body, dict) else None
        if not isinstance(target, str) or not target:
            return error(400, 'name the target topic: {"to": "<topic>"}')
        if missing := store_missing():
            return missing
        events = await store.read(lambda reader: reader.session_events(session))
        if not events:
            return error(404, f"no events of session {session}")
        producer = producer_config(config, admin.replay_username, password)
        try:
            result = await replay(events, target, producer)
        except Exception as err:  # the client's own words: not authorized, unknown topic...
            log.warning("replay of session %s to %s for %s failed: %s: %s", session, target,
                        _client(request), type(err).__name__, err)
            return error(502, f"replay to {target} failed: {type(err).__name__}: {err}")
        log.info("replayed %d records of session %s to %s for %s", result.records, session, target, _client(request))
        return json_response({"records": result.records, "requests": result.requests, "skipped": result.skipped})

    async def verify_trail(request: Request) -> Response:
        if missing := store_missing():
            return missing
        result = await store.read(lambda reader: verify(reader.events(), store.key))
        return json_response({"intact": result.intact, "events": result.events, "streams": result.streams,
                              "problems": [str(p) for p in result.problems], "open_streams": result.open_streams,
                              "keyed": store.key is not None})

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        return error(exc.status_code, exc.detail, exc.headers)

    async def server_error(request: Request, exc: Exception) -> Response:
        return error(500, f"internal error: {type(exc).__name__} (the gateway log has the details)")

    return Starlette(
        routes=[
            Route("/api/health", health),
            Route("/api/sessions", list_sessions),
            Route("/api/sessions/{session}", show_session),
            Route("/api/sessions/{session}/replay", replay_session, methods=["POST"]),
            Route("/api/audit/verify", verify_trail),
        ],
        middleware=[Middleware(BearerAuth, token=admin.token())],
        exception_handlers={HTTPException: http_error, Exception: server_error},
        max_body_size=MAX_BODY_BYTES,
    )


def producer_config(config: Config, username: str, password: Secret) -> dict[str, Any]:
    """Replays are an ordinary client of the gateway's own listener, so its rules decide."""
    assert config.kafka is not None and config.admin is not None
    listen = config.kafka.listen
    producer: dict[str, Any] = {
        "bootstrap_servers": f"{listen.public_host}:{listen.port}",
        "security_protocol": "SASL_SSL" if listen.tls is not None else "SASL_PLAINTEXT",
        "sasl_mechanism": config.admin.replay_mechanism,
        "sasl_plain_username": username,
        "sasl_plain_password": password.reveal(),
    }
    if listen.tls is not None:
        producer["ssl_context"] = ssl.create_default_context()  # the gateway's certificate, as clients check it
    return producer


def _client(request: Request) -> str:
    return f"{request.client.host}:{request.client.port}" if request.client else "unknown client"
