"""Where audit events go: the interface every sink plugin implements.

A sink is registered under the entry point group `brokerguard.sinks`; the name is the `type` of
a sink in the config's `audit.sinks` list, and the object registered is a class with
`from_config(options, context)`. The built-ins (plugins/sinks/) are registered exactly so.

The audit bus hands a sink sealed events in batches, in stream order, from its own task: a
sink may block in `write` (it runs in a thread unless it is a coroutine) and may raise, and
the bus retries the same batch with backoff. A batch is written at least once; a sink that
stores events keyed by (stream, index) stores each exactly once.

A sink that can also read events back (SQLite, JSON lines, the Kafka topic) implements
`AuditReader`, which `brokerguard audit verify` and `brokerguard sessions` use.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from brokerguard.errors import ConfigError

__all__ = ["AuditReader", "Sealed", "SessionFilter", "Sink", "SinkContext", "check_options", "option"]


@dataclass(frozen=True, slots=True)
class Sealed:
    """One event after sealing: the dict (with stream, index, prev, hash) and its JSON line."""

    event: dict[str, Any]
    line: bytes


@dataclass(frozen=True)
class SinkContext:
    """What a sink may need from the gateway besides its own options."""

    gateway: str  # this gateway's name (host:pid of the worker), for sinks that tag their writes
    state_dir: Path  # where a sink keeps local files (an outbox) unless its options say otherwise


class Sink(Protocol):
    name: str  # for logs: "sqlite .brokerguard/audit.db"

    async def start(self) -> None: ...

    def write(self, batch: Sequence[Sealed]) -> Any:
        """Store the batch (or, for a coroutine function, await it); raise if it was not stored."""

    async def close(self) -> None: ...


@dataclass(frozen=True)
class SessionFilter:
    identity: str | None = None  # subject, exactly
    topic: str | None = None  # sessions that touched this topic
    decision: str | None = None  # "deny": sessions with at least one denied request
    since: float | None = None  # epoch seconds
    until: float | None = None
    limit: int = 100


@runtime_checkable
class AuditReader(Protocol):
    def events(self) -> Iterator[dict[str, Any]]:
        """Every stored event, each stream in index order."""

    def sessions(self, where: SessionFilter) -> list[dict[str, Any]]:
        """Session summaries, newest first: the session_start fields, plus `ended`, `end_reason`,
        `requests`, `denied`, `topics`."""

    def session_events(self, session: str) -> list[dict[str, Any]]:
        """Every event of one session in order (empty if unknown)."""


def option(options: Mapping[str, Any], name: str, kind: type | tuple[type, ...], default: Any = ..., *,
           sink: str) -> Any:
    """A sink option, checked: ConfigError names the sink, the option and what it must be."""
    if name not in options:
        if default is ...:
            raise ConfigError(f"audit sink {sink}: `{name}` is required")
        return default
    value = options[name]
    if isinstance(value, bool) and bool not in (kind if isinstance(kind, tuple) else (kind,)):
        raise ConfigError(f"audit sink {sink}: `{name}` must be {_kind_name(kind)}, not {value!r}")
    if not isinstance(value, kind):
        raise ConfigError(f"audit sink {sink}: `{name}` must be {_kind_name(kind)}, not {value!r}")
    return value


def check_options(options: Mapping[str, Any], known: Sequence[str], *, sink: str) -> None:
    unknown = sorted(set(options) - set(known) - {"type"})
    if unknown:
        raise ConfigError(f"audit sink {sink}: unknown option{'s' if len(unknown) > 1 else ''} "
                          f"{', '.join(unknown)} (it takes {', '.join(known)})")


def _kind_name(kind: type | tuple[type, ...]) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    names = {str: "text", int: "a whole number", float: "a number", bool: "true or false", list: "a list",
             dict: "a mapping"}
    return " or ".join(names.get(k, k.__name__) for k in kinds)
