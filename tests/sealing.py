"""Sealed audit events for the sink tests, as the audit bus would hand them over."""

from __future__ import annotations

import uuid

from brokerguard.audit import Chain, Sealed
from brokerguard.audit import events

KEY = b"chain-key-for-tests"


class Stream:
    """One worker's chain, sealing events into batches as the bus does. `start` names this
    run of the worker (a fresh one by default, so tests sharing a store never collide)."""

    def __init__(self, gateway: str, start: str | None = None) -> None:
        self.gateway = gateway
        self.chain = Chain(f"{gateway}:{start or '18f:' + uuid.uuid4().hex[:6]}", KEY)
        self.sealed = 0

    def seal(self, batch: list[dict]) -> list[Sealed]:
        self.sealed += len(batch)
        return [Sealed(event, self.chain.seal(event)) for event in batch]

    def start(self) -> list[Sealed]:
        return self.seal([events.stream_start(self.gateway, 1, "0.1.0")])

    def end(self) -> list[Sealed]:
        return self.seal([events.stream_end(self.gateway, self.sealed + 1)])
