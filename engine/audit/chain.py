"""Tamper evidence: each worker's events form a hash chain, and any store of them can be verified.

Every worker writes one *stream* of events (its id is unique per process start). Event i of a
stream carries `stream`, `index` (0, 1, 2...), `prev` (event i-1's hash, "" for the first) and
`hash`: HMAC-SHA256 under the chain key (or plain SHA-256 without one) of `prev`, a newline,
and the event's canonical JSON (orjson, keys sorted, without `hash`). So:

- editing an event changes its hash, and the next event's `prev` no longer matches;
- removing one leaves a gap in `index`; reordering breaks `prev`;
- with a chain key kept away from the store, someone who can edit the store cannot compute the
  hashes that would hide the edit. Without one, the chain still catches edits made without
  recomputing every later hash, but not a careful forger: configure a key for evidence.
- Removing the *last* events of a stream is visible only as a stream without its `stream_end`
  event: `verify` names such streams (a worker that was killed leaves one too).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson

__all__ = ["Chain", "Problem", "Verification", "canonical", "verify"]

CHAINED = ("stream", "index", "prev")  # the fields sealing adds, besides `hash`


def canonical(event: dict[str, Any]) -> bytes:
    """The bytes an event's hash covers: its JSON with sorted keys, `hash` left out."""
    body = {key: value for key, value in event.items() if key != "hash"}
    return orjson.dumps(body, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS)


def _keyed(key: bytes | None) -> Any:
    """The hash object each event's hash starts from: HMAC-SHA256 with the key already taken in
    (copying it is about half the cost of keying a new one), or plain SHA-256."""
    return hashlib.sha256() if key is None else hmac.new(key, digestmod=hashlib.sha256)


def _digest(keyed: Any, prev: str, body: bytes) -> str:
    mac = keyed.copy()
    mac.update(b"%s\n%s" % (prev.encode(), body))
    return mac.hexdigest()


class Chain:
    """Seals the events of one stream, in order."""

    def __init__(self, stream: str, key: bytes | None) -> None:
        self.stream = stream
        self._keyed = _keyed(key)
        self._index = 0
        self._prev = ""

    def seal(self, event: dict[str, Any]) -> bytes:
        """Adds stream, index, prev and hash to event (in place); returns its JSON line (no newline)."""
        event["stream"] = self.stream
        event["index"] = self._index
        event["prev"] = self._prev
        event.pop("hash", None)
        body = orjson.dumps(event, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS)
        event["hash"] = self._prev = _digest(self._keyed, event["prev"], body)
        self._index += 1
        # The line is the canonical body with the hash added last (every event has a kind, so the
        # body is never `{}`).
        return body[:-1] + b',"hash":"' + event["hash"].encode() + b'"}'


@dataclass(frozen=True)
class Problem:
    stream: str
    index: int | None  # the event where the chain breaks (None: the stream as a whole)
    what: str

    def __str__(self) -> str:
        where = f"stream {self.stream}" + (f" event {self.index}" if self.index is not None else "")
        return f"{where}: {self.what}"


@dataclass
class Verification:
    events: int = 0
    streams: int = 0
    problems: list[Problem] = field(default_factory=list)  # tampering: the chain is broken
    open_streams: list[str] = field(default_factory=list)  # no stream_end: running, killed or cut

    @property
    def intact(self) -> bool:
        return not self.problems


def verify(events: Iterable[dict[str, Any]], key: bytes | None) -> Verification:
    """Check the chains of events as a store gives them back (any order across streams; within a
    stream in the order of `index`, or sorted here). The first break of each stream is reported:
    after it, nothing in that stream can be trusted."""
    by_stream: dict[str, list[dict[str, Any]]] = {}
    result = Verification()
    for event in events:
        result.events += 1
        stream = event.get("stream")
        if not isinstance(stream, str) or not isinstance(event.get("index"), int):
            result.problems.append(Problem(str(stream), None, "an event without stream and index: "
                                           f"{orjson.dumps(event)[:120].decode(errors='replace')}"))
            continue
        by_stream.setdefault(stream, []).append(event)
    result.streams = len(by_stream)
    for stream, chain in sorted(by_stream.items()):
        chain.sort(key=lambda e: e["index"])
        problem = _check_stream(stream, chain, key)
        if problem is not None:
            result.problems.append(problem)
        elif chain[-1].get("kind") != "stream_end":
            result.open_streams.append(stream)
    return result


def _check_stream(stream: str, chain: list[dict[str, Any]], key: bytes | None) -> Problem | None:
    prev = ""
    keyed = _keyed(key)
    for expected, event in enumerate(chain):
        index = event["index"]
        if index != expected:
            if index < expected:
                return Problem(stream, index, "appears twice (a copy was inserted)")
            missing = f"event {expected}" if index == expected + 1 else f"events {expected} to {index - 1}"
            return Problem(stream, expected, f"{missing} removed (the stream jumps to {index})")
        if event.get("prev") != prev:
            return Problem(stream, index, "does not follow the event before it (reordered, or the one "
                                          "before was replaced)")
        if event.get("hash") != _digest(keyed, prev, canonical(event)):
            return Problem(stream, index, "edited: its content does not match its hash")
        prev = event["hash"]
    return None
