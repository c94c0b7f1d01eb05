"""What a request asks to do, and what the gateway decided about it. No protocol knowledge here:
adapters translate their wire requests into these, one (action, resource) pair at a time."""

from __future__ import annotations

import dataclasses
import enum
from typing import Any, NamedTuple

from brokerguard.identity import Identity

# The actions rules can name, by the kind of resource they act on. Adapters map every request
# they know to these (docs/kafka-actions.md has Kafka's table); anything else is denied.
ACTIONS: dict[str, frozenset[str]] = {
    "topic": frozenset({"produce", "consume", "describe", "create", "delete", "delete_records",
                        "alter", "describe_configs", "alter_configs"}),
    "group": frozenset({"consume", "describe", "delete", "describe_configs", "alter_configs"}),
    "transactional_id": frozenset({"transaction", "describe"}),
    "cluster": frozenset({"describe", "alter", "describe_configs", "alter_configs", "idempotent_write",
                          "describe_acls", "alter_acls", "describe_quotas", "alter_quotas",
                          "describe_credentials", "alter_credentials", "delegation_tokens",
                          "alter_features", "cluster_action"}),
}
ALL_ACTIONS: frozenset[str] = frozenset().union(*ACTIONS.values())
CLUSTER_NAME = "kafka-cluster"


class Resource(NamedTuple):
    kind: str  # "topic", "group", "transactional_id" or "cluster"
    name: str


CLUSTER = Resource("cluster", CLUSTER_NAME)


class Client(NamedTuple):
    """Where a request comes from, as far as the wire tells."""

    address: str  # IP address of the client, without the port
    client_id: str | None = None
    software: str | None = None  # e.g. "apache-kafka-java 4.0.0", from the client's ApiVersions


class AccessRequest(NamedTuple):
    """The input of one decision: who asks to do what to which resource, from where."""

    identity: Identity
    action: str
    resource: Resource
    client: Client


class Verdict(enum.Enum):
    ALLOW = "allow"
    DENY = "deny"
    APPROVAL_REQUIRED = "approval_required"


class Obligations(NamedTuple):
    """What an allowed request must go through, set by the rule that allowed it and by every
    `apply` rule that matched. The content objects come from brokerguard.content."""

    mask: Any = None  # one MaskProfile combining every mask asked for; None: no masking
    validations: tuple[Any, ...] = ()  # Validation objects, each applied
    limits: tuple[tuple[str, Any], ...] = ()  # (rule source, policy.model.Limit)
    sources: tuple[str, ...] = ()  # "file:rule" of each rule that set something
    masks: tuple[str, ...] = ()  # the names of the mask profiles in `mask`
    capture: str | None = None  # the audit trail keeps this much of the payload: digest, masked, full

    def describe(self) -> dict[str, object]:
        """For people and JSON: names, not compiled objects."""
        return {"mask": list(self.masks), "validate": [v.name for v in self.validations],
                **({"capture": self.capture} if self.capture else {}),
                "limits": [{"rule": source, **{k: v for k, v in dataclasses.asdict(limit).items() if v is not None}}
                           for source, limit in self.limits],
                "rules": list(self.sources)}


class Decision(NamedTuple):
    verdict: Verdict
    file: str  # the rules file that produced it ("" for the default deny)
    rule: str  # the rule's name in that file ("default-deny" when no rule matched)
    reason: str  # for people: shown to the client in the protocol's error message, and audited
    cacheable: bool = True  # False when a time window took part: it may change by itself
    obligations: Obligations | None = None  # only on allowed decisions that carry some

    @property
    def allowed(self) -> bool:
        return self.verdict is Verdict.ALLOW

    @property
    def source(self) -> str:
        return f"{self.file}:{self.rule}" if self.file else self.rule
