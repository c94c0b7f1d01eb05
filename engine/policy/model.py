"""A rules directory as data: files, their rules and the matchers in them, all frozen.

The loader builds these from YAML after checking every key; the engine compiles them into its
index. Nothing here evaluates a request.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from ipaddress import IPv4Network, IPv6Network
from typing import Any

from brokerguard.operations import Verdict
from brokerguard.policy.globs import is_glob
from brokerguard.policy.problems import Problem

# The keys under `resources:` (and a rule's narrowing) and the resource kind each names.
RESOURCE_KEYS: dict[str, str] = {
    "topics": "topic",
    "groups": "group",
    "transactional_ids": "transactional_id",
    "cluster": "cluster",
}
KIND_KEYS: dict[str, str] = {kind: key for key, kind in RESOURCE_KEYS.items()}
# How a kind reads in messages meant for people.
KIND_WORDS: dict[str, str] = {
    "topic": "topic",
    "group": "group",
    "transactional_id": "transactional id",
    "cluster": "cluster",
}
DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
# The effect keys of a rule, strongest first: deny beats require_approval beats allow.
EFFECTS: dict[str, Verdict] = {
    "deny": Verdict.DENY,
    "require_approval": Verdict.APPROVAL_REQUIRED,
    "allow": Verdict.ALLOW,
}
PRECEDENCE: dict[Verdict, int] = {Verdict.DENY: 0, Verdict.APPROVAL_REQUIRED: 1, Verdict.ALLOW: 2}
# The effect of a rule that grants nothing: it only adds its obligations to what other rules allow.
APPLY = "apply"
LIMIT_PER = ("resource", "identity")


@dataclass(frozen=True, slots=True)
class Names:
    """Names and globs, as written; a name matches if it equals one or matches a glob."""

    patterns: tuple[str, ...]

    @property
    def exact(self) -> frozenset[str]:
        return frozenset(pattern for pattern in self.patterns if not is_glob(pattern))

    @property
    def globs(self) -> tuple[str, ...]:
        return tuple(pattern for pattern in self.patterns if is_glob(pattern))

    def __str__(self) -> str:
        return ", ".join(self.patterns)


ANY_NAME = Names(("*",))


@dataclass(frozen=True, slots=True)
class Resources:
    """What a file governs, or what a rule narrows itself to within its file."""

    topics: Names | None = None
    groups: Names | None = None
    transactional_ids: Names | None = None
    cluster: bool = False

    def names_for(self, kind: str) -> Names | None:
        """The names of `kind` covered; None when the kind is not covered at all."""
        if kind == "cluster":
            return ANY_NAME if self.cluster else None
        return getattr(self, KIND_KEYS[kind])

    @property
    def kinds(self) -> tuple[str, ...]:
        return tuple(kind for kind in KIND_KEYS if self.names_for(kind) is not None)


@dataclass(frozen=True, slots=True)
class IdentityMatcher:
    """Matches an identity when every part given matches (each part: any of its values)."""

    subjects: Names | None = None
    groups: Names | None = None
    claims: tuple[tuple[str, tuple[Any, ...]], ...] = ()  # (claim, accepted values)
    mechanisms: frozenset[str] | None = None


@dataclass(frozen=True, slots=True)
class ClientMatcher:
    """Matches a client when every part given matches (each part: any of its values)."""

    addresses: tuple[IPv4Network | IPv6Network, ...] | None = None
    client_ids: Names | None = None
    software: Names | None = None


@dataclass(frozen=True, slots=True)
class TimeWindow:
    """When a rule applies, in local time of `timezone`.

    Minutes count from local midnight; `end_minute` is exclusive and may be 1440. An end before
    the start wraps past midnight, and then the part after midnight belongs to the day the window
    started on (`days: [fri], hours: 22:00-06:00` is Friday night until Saturday 06:00).
    """

    days: frozenset[int] | None = None  # 0 is Monday; None is every day
    start_minute: int | None = None  # None with end_minute None: the whole day
    end_minute: int | None = None
    timezone: str = "UTC"


@dataclass(frozen=True, slots=True)
class Limit:
    """A rate an identity may not exceed, enforced the way Kafka quotas are: by delaying it.

    `per` is "resource": one allowance per identity and topic; "identity": one allowance per
    identity shared by every resource the rule covers."""

    bytes_per_s: float | None = None
    records_per_s: float | None = None
    requests_per_s: float | None = None
    per: str = "resource"


@dataclass(frozen=True, slots=True)
class ContentSpec:
    """A named mask profile or validation, as written in a rules file, and compiled."""

    name: str
    file: str
    line: int
    spec: Any  # the YAML as plain data
    compiled: Any  # brokerguard.content MaskProfile or Validation


@dataclass(frozen=True, slots=True)
class Rule:
    file: str  # basename of the file it is in, e.g. "payments.yaml"
    name: str
    verdict: Verdict | None  # None: an `apply` rule, which only adds obligations
    actions: tuple[str, ...]  # as written; "*" is every action of the kinds it applies to
    # The (kind, actions) pairs this rule can decide: its kinds (the file's, or those it narrows
    # to) with the actions that exist for each.
    targets: tuple[tuple[str, frozenset[str]], ...]
    narrowing: Resources | None = None
    who: IdentityMatcher | None = None  # None: any authenticated identity
    exempt: IdentityMatcher | None = None  # the rule's `except`
    client: ClientMatcher | None = None
    when: TimeWindow | None = None
    reason: str | None = None  # None: a reason is built from the decision
    line: int = 0
    col: int = 0
    # Obligations on what the rule allows (or, for `apply`, on what others allow).
    mask: tuple[str, ...] = ()  # mask profile names
    validate: tuple[str, ...] = ()  # validation names
    limit: Limit | None = None
    capture: str | None = None  # how much of the payload the audit trail keeps

    @property
    def has_obligations(self) -> bool:
        return bool(self.mask or self.validate or self.limit or self.capture)

    @property
    def source(self) -> str:
        return f"{self.file}:{self.name}"


@dataclass(frozen=True, slots=True)
class RulesFile:
    path: str  # as found, e.g. "rules/payments.yaml"
    name: str  # basename, the name decisions give
    description: str
    resources: Resources
    rules: tuple[Rule, ...]


@dataclass(frozen=True, slots=True)
class RuleSet:
    directory: str
    files: tuple[RulesFile, ...]  # in file-name order, the order ties between rules are settled in
    warnings: tuple[Problem, ...] = ()
    masks: tuple[ContentSpec, ...] = ()  # named mask profiles, from any file of the set
    validations: tuple[ContentSpec, ...] = ()

    def rules(self) -> Iterator[tuple[RulesFile, Rule]]:
        for rules_file in self.files:
            for rule in rules_file.rules:
                yield rules_file, rule

    def file(self, name: str) -> RulesFile | None:
        return next((rules_file for rules_file in self.files if rules_file.name == name), None)
