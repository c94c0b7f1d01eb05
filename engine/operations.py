"""What a request asks to do, and what the gateway decided about it. No protocol knowledge here:
adapters translate their wire requests into these."""

from __future__ import annotations

import enum
from typing import NamedTuple


class Resource(NamedTuple):
    kind: str  # "topic", "group", "transactional_id", "cluster", ...
    name: str


class Operation(NamedTuple):
    api: str  # the protocol's own name for the request, e.g. "Produce"
    action: str  # "produce", "consume", "describe", "create", "delete", "alter", "admin", ...
    resources: tuple[Resource, ...] = ()


class Verdict(enum.Enum):
    ALLOW = "allow"
    DENY = "deny"
    APPROVAL_REQUIRED = "approval_required"


class Decision(NamedTuple):
    verdict: Verdict
    rule: str  # "file:rule" that produced it
    reason: str

    @property
    def allowed(self) -> bool:
        return self.verdict is Verdict.ALLOW
