"""Sessions as the audit trail tells them: summaries built from a stream of events.

Stores that can only be scanned (JSON lines, the Kafka topic) answer `AuditReader.sessions`
and `session_events` with these; SQLite answers the same questions with its indexes.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from brokerguard.audit.sinks import SessionFilter

__all__ = ["in_stream_order", "matches", "session_events", "summarize"]


def _new_summary(event: dict[str, Any]) -> dict[str, Any]:
    return {"session": event["session"], "started": event.get("time"), "adapter": event.get("adapter"),
            "peer": event.get("peer"), "listener": event.get("listener"), "gateway": None,
            "identity": None, "auth": None, "client_id": None, "software": None, "ended": None,
            "end_reason": None, "requests": 0, "denied": 0, "topics": []}


def summarize(events: Iterable[dict[str, Any]], where: SessionFilter) -> list[dict[str, Any]]:
    """Session summaries (see AuditReader.sessions) of the sessions in events, newest first."""
    found: dict[str, dict[str, Any]] = {}
    topics: dict[str, set[str]] = {}
    gateways: dict[str, str] = {}  # stream -> gateway, from stream_start
    for event in events:
        kind = event.get("kind")
        if kind == "stream_start":
            gateways[event.get("stream", "")] = event.get("gateway")
            continue
        session = event.get("session")
        if session is None:
            continue
        summary = found.get(session)
        if summary is None:
            summary = found[session] = _new_summary(event)
            topics[session] = set()
        if kind == "session_start":
            summary.update(started=event.get("time"), adapter=event.get("adapter"), peer=event.get("peer"),
                           listener=event.get("listener"), gateway=gateways.get(event.get("stream", "")))
        elif kind == "login":
            if event.get("ok"):
                summary.update(identity=event.get("identity"), auth=event.get("auth"))
        elif kind == "request":
            summary["requests"] += 1
            if event.get("decision") in ("deny", "partial"):
                summary["denied"] += 1
            for name in ("client_id", "software"):
                if event.get(name):
                    summary[name] = event[name]
            for operation in event.get("operations") or ():
                resource = operation.get("resource", "")
                if resource.startswith("topic:"):
                    topics[session].add(resource[6:])
        elif kind == "session_end":
            summary.update(ended=event.get("time"), end_reason=event.get("reason"))
            if summary["identity"] is None:
                summary["identity"] = event.get("identity")
    out = []
    for session, summary in found.items():
        summary["topics"] = sorted(topics[session])
        if matches(summary, where):
            out.append(summary)
    out.sort(key=lambda s: s["started"] or 0, reverse=True)
    return out[: where.limit]


def matches(summary: dict[str, Any], where: SessionFilter) -> bool:
    if where.identity is not None and summary["identity"] != where.identity:
        return False
    if where.topic is not None and where.topic not in summary["topics"]:
        return False
    if where.decision == "deny" and not summary["denied"]:
        return False
    started = summary["started"] or 0
    if where.since is not None and started < where.since:
        return False
    return where.until is None or started <= where.until


def session_events(events: Iterable[dict[str, Any]], session: str) -> list[dict[str, Any]]:
    """The events of one session, in time order (stream order within a worker)."""
    out = [event for event in events if event.get("session") == session]
    out.sort(key=lambda e: (e.get("time") or 0, e.get("index") or 0))
    return out


def in_stream_order(events: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Events as AuditReader.events gives them: each stream in index order, a (stream, index)
    stored twice with the same content once (a retried write).

    Two *different* events under one (stream, index) are both kept, the one read first first:
    picking either would hide from `verify` that the store holds a forgery, which it then
    reports as an event that "appears twice". Events without a stream and an index (not
    written by a gateway) come last, for `verify` to name.
    """
    streams: dict[str, dict[int, list[dict[str, Any]]]] = {}
    strays = []
    for event in events:
        stream, index = event.get("stream"), event.get("index")
        if not isinstance(stream, str) or not isinstance(index, int) or isinstance(index, bool):
            strays.append(event)
            continue
        copies = streams.setdefault(stream, {}).setdefault(index, [])
        if event not in copies:
            copies.append(event)
    out = []
    for stream in sorted(streams):
        for index in sorted(streams[stream]):
            out.extend(streams[stream][index])
    return out + strays
