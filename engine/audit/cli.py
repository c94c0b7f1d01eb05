"""`brokerguard audit verify` and `brokerguard sessions list|show`: the trail, read back.

Both read the sinks of a gateway's config that can be read (SQLite, JSON lines, the Kafka
audit topic); `--sink TYPE` picks one when there are several (default: the first readable).
"""

from __future__ import annotations

import argparse
import datetime as dt
import re
import time
from pathlib import Path
from typing import Any

import orjson

from brokerguard import config as gateway_config
from brokerguard import registry
from brokerguard.audit.chain import verify
from brokerguard.audit.sinks import AuditReader, SessionFilter, SinkContext
from brokerguard.errors import BrokerGuardError

_AGO = re.compile(r"(\d+)([smhd])\Z")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def add_parsers(subparsers: argparse._SubParsersAction) -> None:
    where = argparse.ArgumentParser(add_help=False)
    where.add_argument("--config", required=True, metavar="GATEWAY.yaml", help="the gateway's config")
    where.add_argument("--sink", metavar="TYPE", help="which configured sink to read (sqlite, jsonl, kafka...)")

    audit = subparsers.add_parser("audit", help="check the audit trail")
    audit_commands = audit.add_subparsers(dest="audit_command", required=True)
    check = audit_commands.add_parser(
        "verify", parents=[where], help="prove the stored events intact, or name the first one edited, "
                                        "removed or reordered (exit status 1)")
    check.add_argument("--format", choices=["text", "json"], default="text")
    check.set_defaults(handler=_verify)

    sessions = subparsers.add_parser("sessions", help="list and show recorded sessions")
    commands = sessions.add_subparsers(dest="sessions_command", required=True)
    listing = commands.add_parser("list", parents=[where], help="sessions, newest first")
    listing.add_argument("--identity", metavar="SUBJECT")
    listing.add_argument("--topic", metavar="TOPIC", help="sessions that touched this topic")
    listing.add_argument("--denied", action="store_true", help="only sessions with a denied request")
    listing.add_argument("--since", metavar="WHEN", help="ISO time (2026-12-01T10:00) or an age (30m, 2h, 7d)")
    listing.add_argument("--until", metavar="WHEN")
    listing.add_argument("--limit", type=int, default=100)
    listing.add_argument("--format", choices=["text", "json"], default="text")
    listing.set_defaults(handler=_list)
    show = commands.add_parser("show", parents=[where], help="one session as a timeline")
    show.add_argument("session", metavar="SESSION")
    show.add_argument("--format", choices=["text", "json"], default="text")
    show.set_defaults(handler=_show)
    replaying = commands.add_parser(
        "replay", parents=[where], help="publish the produce records a session captured to a sandbox topic, "
                                        "through the gateway and its rules")
    replaying.add_argument("session", metavar="SESSION")
    replaying.add_argument("--to", required=True, metavar="TOPIC", help="the target (sandbox) topic")
    replaying.add_argument("--bootstrap", metavar="HOST:PORT",
                           help="where to publish (default: the gateway's own listen address)")
    replaying.add_argument("--username", help="log in as (SASL); without it, no login")
    replaying.add_argument("--password-env", metavar="VAR", help="the environment variable holding the password")
    replaying.add_argument("--mechanism", default="SCRAM-SHA-512", choices=["SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN"])
    replaying.add_argument("--dry-run", action="store_true", help="only say what would be published")
    replaying.set_defaults(handler=_replay)


def open_reader(config_file: str, sink_type: str | None) -> tuple[AuditReader, bytes | None]:
    """The reader of a gateway's audit sinks, and the chain key (if configured)."""
    settings = gateway_config.load(config_file).audit
    context = SinkContext("cli", Path(settings.dir))
    readable = []
    for spec in settings.sinks:
        if sink_type is not None and spec["type"] != sink_type:
            continue
        plugin = registry.load("sinks", spec["type"])
        if not all(hasattr(plugin, name) for name in ("events", "sessions", "session_events")):
            continue  # a sink that cannot be read back (a webhook) is not even built
        options = {key: value for key, value in spec.items() if key not in ("type", "events")}
        sink = plugin.from_config(options, context)
        if isinstance(sink, AuditReader):
            readable.append(sink)
    if not readable:
        configured = ", ".join(spec["type"] for spec in settings.sinks) or "none"
        raise BrokerGuardError(f"no readable audit sink{f' of type {sink_type}' if sink_type else ''} in "
                               f"{config_file} (configured: {configured}; sqlite, jsonl, kafka and postgres can be read)")
    key = settings.chain_key()
    return readable[0], key.reveal().encode() if key is not None else None


def when(text: str | None) -> float | None:
    if text is None:
        return None
    ago = _AGO.match(text)
    if ago:
        return time.time() - int(ago.group(1)) * _UNITS[ago.group(2)]
    try:
        moment = dt.datetime.fromisoformat(text)
    except ValueError:
        raise BrokerGuardError(f"{text!r} is neither an ISO time (2026-12-01T10:00) nor an age (30m, 2h, 7d)") \
            from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.timezone.utc)
    return moment.timestamp()


def _stamp(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return dt.datetime.fromtimestamp(seconds, dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + "Z"


def _verify(args: argparse.Namespace) -> int:
    reader, key = open_reader(args.config, args.sink)
    result = verify(reader.events(), key)
    if args.format == "json":
        print(orjson.dumps({"intact": result.intact, "events": result.events, "streams": result.streams,
                            "problems": [str(p) for p in result.problems],
                            "open_streams": result.open_streams, "keyed": key is not None}).decode())
    else:
        for problem in result.problems:
            print(f"TAMPERED {problem}")
        for stream in result.open_streams:
            print(f"open     stream {stream}: no stream_end (still running, killed, or its last events removed)")
        state = "intact" if result.intact else "NOT intact"
        print(f"{state}: {result.events} events in {result.streams} streams"
              f"{'' if key is not None else ' (no chain key configured: a careful forger could rewrite the chain)'}")
    return 0 if result.intact else 1


def _list(args: argparse.Namespace) -> int:
    reader, _ = open_reader(args.config, args.sink)
    where = SessionFilter(identity=args.identity, topic=args.topic, decision="deny" if args.denied else None,
                          since=when(args.since), until=when(args.until), limit=args.limit)
    found = reader.sessions(where)
    if args.format == "json":
        print(orjson.dumps(found).decode())
        return 0
    print(f"{'SESSION':<18} {'STARTED':<24} {'IDENTITY':<20} {'PEER':<22} {'REQ':>6} {'DENIED':>6}  TOPICS / END")
    for s in found:
        end = f"ended: {s['end_reason']}" if s["ended"] else "live or cut off"
        topics = ",".join(s["topics"][:5]) + ("…" if len(s["topics"]) > 5 else "")
        print(f"{s['session']:<18} {_stamp(s['started']):<24} {str(s['identity'] or '-'):<20} "
              f"{str(s['peer'] or '-'):<22} {s['requests']:>6} {s['denied']:>6}  {topics or '-'}  ({end})")
    return 0


def _timeline(args: argparse.Namespace) -> list[dict]:
    """The events of the session `args` names, in order; an error if the store has none."""
    reader, _ = open_reader(args.config, args.sink)
    timeline = reader.session_events(args.session)
    if not timeline:
        raise BrokerGuardError(f"no events of session {args.session}")
    return timeline


def _show(args: argparse.Namespace) -> int:
    timeline = _timeline(args)
    if args.format == "json":
        print(orjson.dumps(timeline).decode())
        return 0
    for event in timeline:
        print(f"{_stamp(event.get('time'))}  {_line(event)}")
    return 0


def _replay(args: argparse.Namespace) -> int:
    import asyncio
    import os

    from brokerguard.audit.replay import Replayed, captured_records, replay

    timeline = _timeline(args)
    if args.dry_run:
        skipped: list[str] = []
        records = list(captured_records(timeline, skipped))
        result = Replayed(records=len(records), requests=len({r.request for r in records}), skipped=skipped)
    else:
        listen = gateway_config.load(args.config).kafka.listen  # type: ignore[union-attr]
        producer: dict[str, Any] = {"bootstrap_servers": args.bootstrap or f"{listen.public_host}:{listen.port}"}
        if args.username:
            if not args.password_env or not os.environ.get(args.password_env):
                raise BrokerGuardError("--username needs --password-env naming a set environment variable")
            producer.update(security_protocol="SASL_PLAINTEXT", sasl_mechanism=args.mechanism,
                            sasl_plain_username=args.username, sasl_plain_password=os.environ[args.password_env])
        try:
            result = asyncio.run(replay(timeline, args.to, producer))
        except Exception as err:  # the client's own words: not authorized, unknown topic...
            raise BrokerGuardError(f"replay to {args.to} failed: {type(err).__name__}: {err}") from None
    for reason in result.skipped:
        print(f"skipped  {reason}")
    verb = "would publish" if args.dry_run else "published"
    print(f"{verb} {result.records} records of {result.requests} produce requests of session {args.session} "
          f"to {args.to}")
    return 0


def _line(event: dict[str, Any]) -> str:
    kind = event.get("kind")
    if kind == "session_start":
        return f"connected from {event.get('peer')} to {event.get('listener')} ({event.get('adapter')})"
    if kind == "login":
        if event.get("ok"):
            return f"logged in as {event.get('identity')} ({event.get('auth')})"
        return f"login FAILED: {event.get('reason')}"
    if kind == "session_end":
        return (f"ended: {event.get('reason')} ({event.get('requests')} requests, {event.get('bytes_in')} B in, "
                f"{event.get('bytes_out')} B out, {event.get('duration_s')} s)")
    if kind == "alert":
        return f"ALERT {event.get('alert')}: {event.get('reason')}"
    if kind != "request":
        return str(kind)
    operations = ", ".join(f"{op['action']} {op['resource']} {op['decision'].upper()}"
                           for op in event.get("operations") or ()) or "no decision needed"
    line = (f"#{event.get('seq')} {event.get('api')} v{event.get('api_version')}: {operations} -> "
            f"{event.get('outcome')} in {event.get('latency_ms', 0)} ms")
    if event.get("decision") != "allow":
        line += f"  [{event.get('rule')}: {event.get('reason')}]"
    if event.get("errors"):
        line += "  errors: " + "; ".join(f"{where} {name}" for where, name in event["errors"].items())
    if event.get("throttle_ms"):
        line += f"  throttled {event['throttle_ms']} ms"
    payload = event.get("payload")
    if payload:
        line += f"  payload ({payload['capture']}): " + ", ".join(
            f"{p['topic']}[{p['partition']}] {p['bytes']} B {_digest(p)}" for p in payload["partitions"])
    return line


def _digest(partition: dict[str, Any]) -> str:
    """A captured partition's digest, shortened, with the name of its hash."""
    for name in ("blake3", "sha256"):
        if name in partition:
            return f"{name}:{partition[name][:12]}"
    return "no digest"
