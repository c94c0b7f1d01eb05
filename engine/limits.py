"""Rate limits as Kafka enforces its quotas: never by refusing, always by delay.

A request is let through and charged to its buckets; when a bucket runs into debt, the answer
is how long the client must wait for its rate to fall back under the limit. The adapter puts
that in the response's throttle time and holds the response (and the client's next requests)
that long, so clients that honour the throttle time and clients that ignore it are both slowed.

One bucket per (rule, identity) or (rule, identity, resource), per rate. Each holds at most one
second's worth of allowance, so a burst after a quiet spell is bounded by the rate itself.
Buckets live in the worker's memory: with N workers a client spread over all of them gets up to
N times the rate (docs/content.md).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

# A bucket not charged for this long is forgotten; a full one would be refilled by then anyway.
IDLE_S = 60.0
# Never hold a client longer than this for one request, whatever its debt (Kafka's default cap).
MAX_THROTTLE_S = 30.0
RATES = ("requests_per_s", "records_per_s", "bytes_per_s")


class _Bucket:
    __slots__ = ("rate", "tokens", "at")

    def __init__(self, rate: float, now: float) -> None:
        self.rate = rate
        self.tokens = rate  # one second's allowance
        self.at = now

    def charge(self, amount: float, now: float) -> float:
        """Take `amount`; the seconds until the debt is paid off (0 when there is none)."""
        self.tokens = min(self.rate, self.tokens + (now - self.at) * self.rate) - amount
        self.at = now
        return -self.tokens / self.rate if self.tokens < 0 else 0.0


class RateLimiter:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._buckets: dict[tuple, _Bucket] = {}
        self._swept = clock()

    def charge(self, subject: str, resource: str, limits: Iterable[tuple[str, Any]],
               requests: int = 0, records: int = 0, size: int = 0) -> float:
        """Charge one request's use of `resource` to every limit; the throttle in seconds."""
        now = self._clock()
        amounts = (requests, records, size)
        throttle = 0.0
        for source, limit in limits:
            scope = (source, subject) if limit.per == "identity" else (source, subject, resource)
            for rate_name, amount in zip(RATES, amounts):
                rate = getattr(limit, rate_name)
                if rate is None or not amount:
                    continue
                key = (*scope, rate_name)
                bucket = self._buckets.get(key)
                if bucket is None or bucket.rate != rate:  # a reload may change a rate
                    bucket = self._buckets[key] = _Bucket(rate, now)
                throttle = max(throttle, bucket.charge(amount, now))
        if now - self._swept > IDLE_S:
            self._sweep(now)
        return min(throttle, MAX_THROTTLE_S)

    def _sweep(self, now: float) -> None:
        self._swept = now
        for key in [key for key, bucket in self._buckets.items() if now - bucket.at > IDLE_S]:
            del self._buckets[key]

    def __len__(self) -> int:
        return len(self._buckets)
