"""Decisions remembered per (identity, client, action, resource), so a repeated request costs one dict
lookup on the data path.

The caller builds the key: a hashable tuple naming everything a rule can look at except time,
e.g. `(identity.key, client, action, resource)`. Only decisions marked cacheable are kept (a
time window can change the others by itself). The cache is emptied wholesale when it is full,
when the rules are reloaded (`reload`) and when an identity is revoked (`clear`): correctness
never waits for an entry to age out.
"""

from __future__ import annotations

from collections.abc import Hashable

from brokerguard.operations import AccessRequest, Decision
from brokerguard.policy.engine import PolicyEngine


class DecisionCache:
    __slots__ = ("_engine", "_entries", "max_entries")

    def __init__(self, engine: PolicyEngine, max_entries: int = 100_000) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self._engine = engine
        self._entries: dict[Hashable, Decision] = {}
        self.max_entries = max_entries

    @property
    def engine(self) -> PolicyEngine:
        return self._engine

    def get(self, key: Hashable) -> Decision | None:
        """The cached decision, if any: lets a caller skip building the request on a hit."""
        return self._entries.get(key)

    def decide(self, key: Hashable, request: AccessRequest) -> Decision:
        decision = self._entries.get(key)
        if decision is not None:
            return decision
        decision = self._engine.decide(request)
        if decision.cacheable:
            if len(self._entries) >= self.max_entries:
                self._entries.clear()
            self._entries[key] = decision
        return decision

    def clear(self) -> None:
        """Forget every decision (an identity was revoked, or anything else changed)."""
        self._entries.clear()

    def reload(self, engine: PolicyEngine) -> None:
        """Answer from a newly loaded rule set from now on; nothing decided by the old one survives."""
        self._engine = engine
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)
