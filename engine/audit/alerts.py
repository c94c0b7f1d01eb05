"""Alerts: the moments that need a person, raised as `alert` events into the same audit trail.

`Alerter` observes the audit bus (`AuditBus(observers=[alerter])`, with the bus's `emit` as its
`emit`): it sees every event as it is emitted and raises an alert for a denied operation,
records refused as invalid, a throttled request, an operation waiting for approval, a revoked
identity (its session cut, or its login refused) and repeated failed logins from one address.
Sinks configured for alerts only (a SIEM, a pager) receive just these.

Guarantees:

- Nothing is dropped silently. Within a window (`window_s`, opened by the first alert after a
  quiet spell), the first alert for an (alert, identity, resource, rule) is emitted at once;
  its repeats are counted and emitted as one summary (`count` repeats, from `first_time` to
  `time`) when the window closes. Past `max_per_window` alerts in a window, the rest are
  counted and reported by one `suppressed` alert. So every violation is an alert of its own or
  is counted in a later one.
- Bounded: per window at most `max_per_window` alerts, a summary for each of them at most, and
  one `suppressed` alert; memory is bounded alike.
- Windows close lazily, on the next event or a `flush()`; `flush(final=True)` at shutdown
  closes the current window whatever its age, so its counts reach the trail.
- No loops: `alert` events are never looked at. And calling the alerter never raises, since it
  runs inside `emit` on the data path: an event it cannot read is logged and skipped.
"""

from __future__ import annotations

import collections
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from brokerguard.audit.events import (
    ALERT_APPROVAL,
    ALERT_AUTH_FAILURES,
    ALERT_DENIED,
    ALERT_INVALID,
    ALERT_REVOKED,
    ALERT_SUPPRESSED,
    ALERT_THROTTLED,
    alert,
)
from brokerguard.errors import ConfigError

__all__ = ["Alerter"]

log = logging.getLogger("brokerguard.audit.alerts")

MAX_TRACKED_ADDRESSES = 100_000  # failed-login counters kept at once; the stalest go first
_PARTITION = re.compile(r"\[\d+\]$")  # "topic:orders[3]" in `errors` is the resource "topic:orders"

AlertKey = tuple[str, str | None, str | None, str | None]  # alert, identity, resource, rule


@dataclass
class _Repeats:
    count: int = 0
    first: dict[str, Any] | None = None  # the first repeat: the summary is made from it
    last_time: Any = None


@dataclass
class _Suppressed:
    count: int = 0
    first_time: Any = None
    last_time: Any = None
    by_alert: collections.Counter[str] = field(default_factory=collections.Counter)


class Alerter:
    def __init__(self, emit: Callable[[dict[str, Any]], None], *, window_s: float = 60.0,
                 max_per_window: int = 20, auth_failure_threshold: int = 5,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if not window_s > 0:
            raise ConfigError(f"audit alerts: `window_s` must be above 0, not {window_s!r}")
        if max_per_window < 1:
            raise ConfigError(f"audit alerts: `max_per_window` must be at least 1, not {max_per_window!r}")
        if auth_failure_threshold < 1:
            raise ConfigError(f"audit alerts: `auth_failure_threshold` must be at least 1, not "
                              f"{auth_failure_threshold!r}")
        self.window_s = window_s
        self.max_per_window = max_per_window
        self.auth_failure_threshold = auth_failure_threshold
        self._emit = emit
        self._clock = clock
        self._window_end: float | None = None  # None: no window open
        self._emitted = 0
        self._repeats: dict[AlertKey, _Repeats] = {}  # the keys emitted in this window
        self._suppressed = _Suppressed()
        self._failures: dict[str, collections.deque[float]] = {}  # address -> failed logins' clock times

    def __call__(self, event: dict[str, Any]) -> None:
        if event.get("kind") == "alert":
            return
        try:
            now = self._clock()
            if self._window_end is not None and now >= self._window_end:
                self._close_window()
            for raised in self.violations(event):
                self._raise(raised, now)
        except Exception:
            log.exception("alerts: a %s event could not be checked; it is in the audit trail but raised no alert",
                          event.get("kind"))

    def flush(self, *, final: bool = False) -> None:
        """Close the window if its time is up (or, final, whatever its age): emit its summaries."""
        try:
            if self._window_end is not None and (final or self._clock() >= self._window_end):
                self._close_window()
        except Exception:
            log.exception("alerts: the window's summaries could not be emitted")

    def violations(self, event: dict[str, Any]) -> list[dict[str, Any]]:
        """The alerts event raises, before merging and limits (failed logins are counted here)."""
        kind = event.get("kind")
        if kind == "request":
            return _request_alerts(event)
        if kind == "login" and event.get("ok") is False:
            raised = []
            if "revoked" in str(event.get("reason") or "").lower():
                raised.append(alert(ALERT_REVOKED, event))
            too_many = self._count_failure(event)
            if too_many is not None:
                raised.append(too_many)
            return raised
        if kind == "session_end" and "revoked" in str(event.get("reason") or "").lower():
            return [alert(ALERT_REVOKED, event)]
        return []

    # -- merging and limits --------------------------------------------------------------------

    def _raise(self, raised: dict[str, Any], now: float) -> None:
        # State changes before emit: emit passes the alert back to us through the bus.
        if self._window_end is None:
            self._window_end = now + self.window_s
        key: AlertKey = (raised["alert"], *(_text(raised.get(name)) for name in ("identity", "resource", "rule")))
        repeats = self._repeats.get(key)
        if repeats is not None:
            repeats.count += 1
            if repeats.first is None:
                repeats.first = raised
            repeats.last_time = raised.get("time")
            return
        if self._emitted >= self.max_per_window:
            suppressed = self._suppressed
            suppressed.count += 1
            suppressed.by_alert[raised["alert"]] += 1
            if suppressed.first_time is None:
                suppressed.first_time = raised.get("time")
            suppressed.last_time = raised.get("time")
            return
        self._repeats[key] = _Repeats()
        self._emitted += 1
        self._emit(raised)

    def _close_window(self) -> None:
        repeats, suppressed = self._repeats, self._suppressed
        self._window_end = None
        self._emitted = 0
        self._repeats = {}
        self._suppressed = _Suppressed()
        self._forget_failures(self._clock())
        for counted in repeats.values():
            if counted.count and counted.first is not None:
                summary = dict(counted.first)
                summary.update(count=counted.count, first_time=counted.first.get("time"), time=counted.last_time)
                self._emit(summary)
        if suppressed.count:
            kinds = ", ".join(f"{name} {count}" for name, count in suppressed.by_alert.most_common())
            summary = alert(ALERT_SUPPRESSED, {"time": suppressed.last_time},
                            reason=f"{suppressed.count} alerts over the limit of {self.max_per_window} per "
                                   f"{self.window_s:g} s ({kinds})")
            summary.update(count=suppressed.count, first_time=suppressed.first_time)
            self._emit(summary)

    # -- failed logins -------------------------------------------------------------------------

    def _count_failure(self, event: dict[str, Any]) -> dict[str, Any] | None:
        peer = event.get("peer")
        where = f"peer:{_address(str(peer))}" if peer else f"identity:{event.get('identity')}"
        now = self._clock()
        times = self._failures.pop(where, None) or collections.deque()
        self._failures[where] = times  # re-inserted: the dict's order is least recently failed first
        while times and now - times[0] >= self.window_s:
            times.popleft()
        times.append(now)
        if len(self._failures) > MAX_TRACKED_ADDRESSES:
            self._forget_failures(now)
            while len(self._failures) > MAX_TRACKED_ADDRESSES:
                del self._failures[next(iter(self._failures))]
        if len(times) < self.auth_failure_threshold:
            return None
        times.clear()  # the next alert needs as many failures again
        return alert(ALERT_AUTH_FAILURES, event, resource=where,
                     reason=f"{self.auth_failure_threshold} failed logins from {where} within {self.window_s:g} s")

    def _forget_failures(self, now: float) -> None:
        stale = [where for where, times in self._failures.items() if not times or now - times[-1] >= self.window_s]
        for where in stale:
            del self._failures[where]


def _request_alerts(event: dict[str, Any]) -> list[dict[str, Any]]:
    raised = []
    denied = False
    for operation in event.get("operations") or ():
        if not isinstance(operation, dict):
            continue
        decision = operation.get("decision")
        if decision in ("deny", "approval_required"):
            denied = denied or decision == "deny"
            raised.append(alert(ALERT_DENIED if decision == "deny" else ALERT_APPROVAL, event,
                                resource=operation.get("resource"), rule=operation.get("rule"),
                                reason=operation.get("reason")))
    if event.get("decision") == "deny" and not denied:  # refused as a whole, no operation named
        raised.append(alert(ALERT_DENIED, event))
    errors = event.get("errors")
    if isinstance(errors, dict):
        invalid: dict[str | None, str] = {}
        for where, error in errors.items():
            if "INVALID_RECORD" in str(error):
                invalid.setdefault(None if where == "request" else _PARTITION.sub("", str(where)), str(error))
        for resource, error in invalid.items():
            raised.append(alert(ALERT_INVALID, event, resource=resource,
                                reason=event.get("reason") or f"records refused: {error}"))
    throttle_ms = event.get("throttle_ms")
    if isinstance(throttle_ms, (int, float)) and not isinstance(throttle_ms, bool) and throttle_ms > 0:
        raised.append(alert(ALERT_THROTTLED, event, reason=f"held {throttle_ms:g} ms by a rate limit"))
    return raised


def _address(peer: str) -> str:
    """The address of a peer without its port: failed logins come from ever new ports."""
    if peer.startswith("["):
        end = peer.find("]")
        return peer[1:end] if end > 0 else peer
    host, colon, port = peer.rpartition(":")
    if colon and ":" not in host and port.isdigit():
        return host
    return peer


def _text(value: Any) -> str | None:
    return value if value is None or isinstance(value, str) else str(value)
