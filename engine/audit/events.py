"""The audit trail's events: plain JSON objects, one kind per moment worth recording.

Every event has `kind` and `time` (epoch seconds, float); sealing adds `stream`, `index`,
`prev` and `hash` (chain.py). Fields that do not apply are left out. docs/audit.md is the
reference for each field; in short:

    stream_start   gateway, pid, version                    a worker begins writing
    stream_end     gateway, events                          ...and stops cleanly
    session_start  session, adapter, peer, listener         a client connected
    login          session, identity, auth, ok, reason, peer  it authenticated (or failed to)
    request        session, seq, identity, client_id, software, api, api_version,
                   correlation_id, operations, decision, rule, reason, outcome, errors,
                   latency_ms, payload
    session_end    session, identity, reason, requests, bytes_in, bytes_out, duration_s
    alert          alert, session, identity, rule, reason, resource, payload, count, first_time

`operations` lists each (action, resource) the request asked for with its decision:
{"action", "resource": "topic:orders", "decision": "allow"|"deny"|"approval_required", "rule",
"reason"} ("hidden": denied, but the request was served without it, e.g. a topic left out of a
listing). `decision` sums them up: "allow", "deny" or "partial". `outcome` is "ok", "error"
(the broker or the gateway answered with an error code; `errors` maps "topic:orders[3]" or
"request" to the error's name), "refused" (the gateway answered without the broker), or
"no_response" (acks=0), "unanswered" (the connection closed first) or "unreadable_response".
`throttle_ms` is set when a rate limit held the response. `payload` holds what the rules' capture level keeps:
{"capture": "digest"|"masked"|"full", "partitions": [{"topic", "partition", "records",
"bytes", "blake3"|"sha256" (audit.digest), "records_data": [{"offset_delta", "timestamp", "key",
"value", "headers"}]}]} with keys and values base64-encoded (`records_data` only for masked and
full).
"""

from __future__ import annotations

import time
from typing import Any, Literal

__all__ = ["ALERTS", "ALERT_APPROVAL", "ALERT_AUTH_FAILURES", "ALERT_DENIED", "ALERT_INVALID", "ALERT_REVOKED",
           "ALERT_SUPPRESSED", "ALERT_THROTTLED", "CAPTURES", "Capture", "alert", "login", "session_end",
           "session_start", "stream_end", "stream_start"]

Capture = Literal["none", "digest", "masked", "full"]
CAPTURES: tuple[str, ...] = ("none", "digest", "masked", "full")

# Alert kinds: what makes a request or a login an alert.
ALERT_DENIED = "denied"  # a request (or part of it) denied by the rules
ALERT_INVALID = "invalid"  # records refused or dead-lettered by a validation
ALERT_THROTTLED = "throttled"  # a rate limit held the response
ALERT_REVOKED = "revoked"  # a revoked identity's session was cut, or it tried to log in
ALERT_AUTH_FAILURES = "auth_failures"  # failed logins from one address, beyond a few
ALERT_APPROVAL = "approval_needed"  # a request waits for a human
ALERT_SUPPRESSED = "suppressed"  # alerts beyond the per-window limit, counted in one
ALERTS = (ALERT_DENIED, ALERT_INVALID, ALERT_THROTTLED, ALERT_REVOKED, ALERT_AUTH_FAILURES, ALERT_APPROVAL,
          ALERT_SUPPRESSED)


def stream_start(gateway: str, pid: int, version: str) -> dict[str, Any]:
    return {"kind": "stream_start", "time": time.time(), "gateway": gateway, "pid": pid, "version": version}


def stream_end(gateway: str, events: int) -> dict[str, Any]:
    return {"kind": "stream_end", "time": time.time(), "gateway": gateway, "events": events}


def session_start(session: str, adapter: str, peer: str, listener: str, started: float) -> dict[str, Any]:
    return {"kind": "session_start", "time": started, "session": session, "adapter": adapter, "peer": peer,
            "listener": listener}


def login(session: str, identity: str | None, auth: str, ok: bool, reason: str | None = None,
          peer: str | None = None) -> dict[str, Any]:
    event = {"kind": "login", "time": time.time(), "session": session, "identity": identity, "auth": auth, "ok": ok,
             "peer": peer}
    if reason:
        event["reason"] = reason
    return event


def session_end(session: str, identity: str | None, reason: str, requests: int, bytes_in: int, bytes_out: int,
                started: float) -> dict[str, Any]:
    now = time.time()
    return {"kind": "session_end", "time": now, "session": session, "identity": identity, "reason": reason,
            "requests": requests, "bytes_in": bytes_in, "bytes_out": bytes_out,
            "duration_s": round(now - started, 3)}


def alert(kind: str, event: dict[str, Any], *, resource: str | None = None, reason: str | None = None,
          rule: str | None = None) -> dict[str, Any]:
    """An alert about `event` (a request or login event): who, which session, and the payload."""
    out = {"kind": "alert", "time": event.get("time", time.time()), "alert": kind,
           "session": event.get("session"), "identity": event.get("identity"),
           "rule": rule if rule is not None else event.get("rule"),
           "reason": reason if reason is not None else event.get("reason")}
    if resource is not None:
        out["resource"] = resource
    for name in ("api", "client_id", "peer", "payload", "errors"):
        if event.get(name) is not None:
            out[name] = event[name]
    return out
