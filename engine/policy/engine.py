"""The policy engine: a `RuleSet` compiled into an index that answers `decide()` in microseconds.

Semantics (as OPA teaches): default deny; an explicit deny beats everything; require_approval
beats allow. Among rules of equal strength the first in file-name order, then in file order,
names the decision.

The index: one bucket per (resource kind, action), holding only the rules that can decide that
action on that kind, strongest first. Within a bucket, every name a rule spells out exactly has
its candidate list computed up front; any other name gets its list computed once, from the
globbed rules, and remembered. `decide()` then walks a short list checking identity, client and
time, and returns at the first rule that matches: since the list is ordered by strength, that
rule's verdict is the decision.

A decision is `cacheable` unless a time window was evaluated on the way to it: a rule whose
resource, identity and client matched but whose window was checked could turn out differently
at another time.

Obligations (mask, validate, limit) ride on allowed decisions: those of the allow rule that
decided, plus those of every `apply` rule that matches the same request. `apply` rules sit in
buckets of their own, walked only once an allow has been found.
"""

from __future__ import annotations

import functools
import ipaddress
import time
import zoneinfo
from collections.abc import Callable
from datetime import datetime
from typing import Any, NamedTuple

from brokerguard.audit.events import CAPTURES
from brokerguard.identity import Identity
from brokerguard.operations import AccessRequest, Client, Decision, Obligations, Verdict
from brokerguard.policy.globs import compile_glob
from brokerguard.policy.model import (
    DAYS,
    KIND_KEYS,
    KIND_WORDS,
    PRECEDENCE,
    ClientMatcher,
    IdentityMatcher,
    Names,
    Rule,
    RulesFile,
    RuleSet,
    TimeWindow,
)

DEFAULT_DENY = "default-deny"
# Names seen per bucket whose candidate lists are remembered; the memo is emptied when full.
MEMO_LIMIT = 4096

NameTest = Callable[[str], bool]
IdentityTest = Callable[[Identity], bool]
ClientTest = Callable[[Client], bool]
WindowTest = Callable[[float], bool]


class Explanation(NamedTuple):
    """One rule's part in a decision, for `rules eval --explain`."""

    file: str
    rule: str
    matched: bool
    why_not: str  # empty when matched


class _Parts:
    """One rule's compiled tests, shared by every bucket it is in and by `explain`."""

    __slots__ = ("rule", "file", "order", "resource", "who", "exempt", "client", "window")

    def __init__(self, rules_file: RulesFile, rule: Rule, order: tuple[int, int, int]) -> None:
        self.rule = rule
        self.file = rules_file
        self.order = order
        # Per kind: the file's test and the rule's narrowing test (None when it does not narrow).
        self.resource: dict[str, tuple[NameTest, NameTest | None]] = {}
        for kind, _ in rule.targets:
            governed = rules_file.resources.names_for(kind)
            assert governed is not None
            narrowed = rule.narrowing.names_for(kind) if rule.narrowing is not None else None
            self.resource[kind] = (names_test(governed), names_test(narrowed) if narrowed else None)
        self.who = identity_test(rule.who) if rule.who is not None else None
        self.exempt = identity_test(rule.exempt) if rule.exempt is not None else None
        self.client = client_test(rule.client) if rule.client is not None else None
        self.window = window_test(rule.when) if rule.when is not None else None

    def covers(self, kind: str, name: str) -> bool:
        governed, narrowed = self.resource[kind]
        return governed(name) and (narrowed is None or narrowed(name))

    def finite_names(self, kind: str) -> frozenset[str] | None:
        """Every name of `kind` this rule can apply to, when that is a finite list; else None."""
        governed = self.file.resources.names_for(kind)
        narrowed = self.rule.narrowing.names_for(kind) if self.rule.narrowing is not None else None
        for names in (governed, narrowed):
            if names is not None and not names.globs:
                return frozenset(name for name in names.exact if self.covers(kind, name))
        return None


class _Candidate:
    """A rule as a bucket holds it: the tests `decide()` runs and the decisions it returns."""

    __slots__ = ("parts", "who", "exempt", "client", "window", "fixed", "fixed_timed", "verdict",
                 "file", "name", "obligations")

    def __init__(self, parts: _Parts, obligations: Obligations | None = None) -> None:
        rule = parts.rule
        self.parts = parts
        self.who = parts.who
        self.exempt = parts.exempt
        self.client = parts.client
        self.window = parts.window
        self.verdict = rule.verdict
        self.file = rule.file
        self.name = rule.name
        self.obligations = obligations
        # With a written reason the decision is the same every time: build it once.
        self.fixed = self.fixed_timed = None
        if rule.reason is not None and rule.verdict is not None:
            self.fixed = Decision(rule.verdict, rule.file, rule.name, rule.reason, True, obligations)
            self.fixed_timed = Decision(rule.verdict, rule.file, rule.name, rule.reason, False, obligations)

    def matches(self, request: AccessRequest, now: float | None) -> tuple[bool, bool, float | None]:
        """Whether identity, client and time window match (the resource already does); whether
        the window was evaluated (the answer may change by itself); the clock reading."""
        test = self.who
        if test is not None and not test(request.identity):
            return False, False, now
        test = self.exempt
        if test is not None and test(request.identity):
            return False, False, now
        client = self.client
        if client is not None and not client(request.client):
            return False, False, now
        window = self.window
        if window is not None:
            if now is None:
                now = time.time()
            return window(now), True, now
        return True, False, now

    def decision(self, request: AccessRequest, timed: bool) -> Decision:
        if self.fixed is not None:
            return self.fixed_timed if timed else self.fixed  # type: ignore[return-value]
        assert self.verdict is not None
        return Decision(self.verdict, self.file, self.name, default_reason(self.verdict, self.file, self.name,
                                                                           request), not timed, self.obligations)


class _Bucket:
    """The candidates for one (kind, action), strongest first."""

    __slots__ = ("kind", "by_name", "globbed", "memo")

    def __init__(self, kind: str, candidates: list[_Candidate]) -> None:
        self.kind = kind
        finite: set[str] = set()
        globbed = []
        for candidate in candidates:
            names = candidate.parts.finite_names(kind)
            if names is None:
                globbed.append(candidate)
            else:
                finite |= names
        self.by_name: dict[str, tuple[_Candidate, ...]] = {
            name: tuple(candidate for candidate in candidates if candidate.parts.covers(kind, name))
            for name in finite
        }
        self.globbed = tuple(globbed)
        self.memo: dict[str, tuple[_Candidate, ...]] = {}

    def candidates(self, name: str) -> tuple[_Candidate, ...]:
        found = self.by_name.get(name)
        if found is not None:
            return found
        found = self.memo.get(name)
        if found is None:
            found = tuple(candidate for candidate in self.globbed if candidate.parts.covers(self.kind, name))
            if len(self.memo) >= MEMO_LIMIT:
                self.memo.clear()
            self.memo[name] = found
        return found


class PolicyEngine:
    """Answers access requests from a rule set. Build one per load; it never changes after."""

    def __init__(self, rules: RuleSet) -> None:
        self.rules = rules
        self._parts: list[_Parts] = []
        masks = {spec.name: spec.compiled for spec in rules.masks}
        validations = {spec.name: spec.compiled for spec in rules.validations}
        grouped: dict[tuple[str, str], list[_Candidate]] = {}
        applying: dict[tuple[str, str], list[_Candidate]] = {}
        for file_index, rules_file in enumerate(rules.files):
            for rule_index, rule in enumerate(rules_file.rules):
                strength = PRECEDENCE[rule.verdict] if rule.verdict is not None else len(PRECEDENCE)
                parts = _Parts(rules_file, rule, (strength, file_index, rule_index))
                self._parts.append(parts)
                candidate = _Candidate(parts, _obligations(rule, masks, validations))
                into = grouped if rule.verdict is not None else applying
                for kind, actions in rule.targets:
                    for action in actions:
                        into.setdefault((kind, action), []).append(candidate)
        self._buckets = _buckets(grouped)
        self._applying = _buckets(applying)
        self._combined: dict[tuple[Obligations, ...], Obligations] = {}

    def decide(self, request: AccessRequest, now: float | None = None) -> Decision:
        """The decision for one request; `now` (epoch seconds) defaults to the clock, read only if a
        time window must be checked."""
        resource = request.resource
        bucket = self._buckets.get((resource.kind, request.action))
        if bucket is None:
            return default_deny(request, False)
        timed = False
        for candidate in bucket.candidates(resource.name):
            matched, windowed, now = candidate.matches(request, now)
            timed = timed or windowed
            if not matched:
                continue
            decision = candidate.decision(request, timed)
            applying = self._applying.get((resource.kind, request.action))
            if applying is not None and decision.verdict is Verdict.ALLOW:
                decision = self._apply(decision, applying.candidates(resource.name), request, now)
            return decision
        return default_deny(request, timed)

    def _apply(self, decision: Decision, candidates: tuple[_Candidate, ...], request: AccessRequest,
               now: float | None) -> Decision:
        """`decision` with the obligations of every matching `apply` rule added."""
        found = [decision.obligations] if decision.obligations is not None else []
        timed = not decision.cacheable
        for candidate in candidates:
            matched, windowed, now = candidate.matches(request, now)
            timed = timed or windowed
            if matched and candidate.obligations is not None:
                found.append(candidate.obligations)
        if not found:
            return decision._replace(cacheable=not timed)
        key = tuple(found)
        combined = self._combined.get(key)
        if combined is None:
            combined = self._combined[key] = _combine(found)
        return decision._replace(obligations=combined, cacheable=not timed)

    def explain(self, request: AccessRequest, now: float | None = None) -> list[Explanation]:
        """Every rule of every file, in file order, with whether it matched the request and if not,
        why not. Slow and thorough: for people, not for the data path."""
        if now is None:
            now = time.time()
        out = []
        for parts in self._parts:
            why = _why_not(parts, request, now)
            out.append(Explanation(parts.rule.file, parts.rule.name, not why, why))
        return out

    def rule(self, file: str, name: str) -> Rule | None:
        for parts in self._parts:
            if parts.rule.file == file and parts.rule.name == name:
                return parts.rule
        return None


def _buckets(grouped: dict[tuple[str, str], list[_Candidate]]) -> dict[tuple[str, str], _Bucket]:
    buckets = {}
    for (kind, action), candidates in grouped.items():
        candidates.sort(key=lambda candidate: candidate.parts.order)
        buckets[(kind, action)] = _Bucket(kind, candidates)
    return buckets


def _obligations(rule: Rule, masks: dict[str, Any], validations: dict[str, Any]) -> Obligations | None:
    if not rule.has_obligations:
        return None
    profiles = [masks[name] for name in rule.mask]
    mask = None
    if len(profiles) == 1:
        mask = profiles[0]
    elif profiles:
        from brokerguard.content import combine

        mask = combine(profiles)
    limits = ((rule.source, rule.limit),) if rule.limit is not None else ()
    return Obligations(mask, tuple(validations[name] for name in rule.validate), limits, (rule.source,), rule.mask,
                       rule.capture)


def _combine(found: list[Obligations]) -> Obligations:
    if len(found) == 1:
        return found[0]
    from brokerguard.content import combine

    masks = [o.mask for o in found if o.mask is not None]
    mask = masks[0] if len(masks) == 1 else combine(masks) if masks else None
    validations = tuple(dict.fromkeys(v for o in found for v in o.validations))
    captures = [o.capture for o in found if o.capture]
    return Obligations(mask, validations, tuple(l for o in found for l in o.limits),
                       tuple(s for o in found for s in o.sources),
                       tuple(dict.fromkeys(name for o in found for name in o.masks)),
                       max(captures, key=CAPTURES.index) if captures else None)


# -- decisions -------------------------------------------------------------------------------


def resource_words(kind: str, name: str) -> str:
    return f"{KIND_WORDS.get(kind, kind)} {name}"


def default_deny(request: AccessRequest, timed: bool) -> Decision:
    resource = request.resource
    reason = (f"no rule allows {request.action} on {resource_words(resource.kind, resource.name)} "
              f"for {request.identity.subject}")
    return Decision(Verdict.DENY, "", DEFAULT_DENY, reason, not timed)


def default_reason(verdict: Verdict, file: str, rule: str, request: AccessRequest) -> str:
    what = f"{request.action} on {resource_words(request.resource.kind, request.resource.name)}"
    if verdict is Verdict.ALLOW:
        return f"{file}:{rule} allows {what}"
    if verdict is Verdict.DENY:
        return f"{what} is denied by {file}:{rule}"
    return f"{what} needs approval ({file}:{rule})"


# -- compiling matchers ----------------------------------------------------------------------


def _anything(_: object) -> bool:
    return True


def names_test(names: Names) -> NameTest:
    """One predicate for a list of names and globs: a set lookup first, globs after."""
    if "*" in names.patterns:
        return _anything
    exact = names.exact
    tests = tuple(compile_glob(pattern) for pattern in names.globs)
    if not tests:
        return exact.__contains__
    if not exact and len(tests) == 1:
        return tests[0]
    return lambda name: name in exact or any(test(name) for test in tests)


def identity_test(matcher: IdentityMatcher) -> IdentityTest:
    parts: list[IdentityTest] = []
    if matcher.subjects is not None:
        subject = names_test(matcher.subjects)
        parts.append(lambda identity: subject(identity.subject))
    if matcher.groups is not None:
        exact_groups = matcher.groups.exact
        if not matcher.groups.globs:
            parts.append(lambda identity: not exact_groups.isdisjoint(identity.groups))
        else:
            group = names_test(matcher.groups)
            parts.append(lambda identity: any(group(name) for name in identity.groups))
    for claim, values in matcher.claims:
        parts.append(_claim_test(claim, frozenset(values)))
    if matcher.mechanisms is not None:
        mechanisms = matcher.mechanisms
        parts.append(lambda identity: identity.mechanism in mechanisms)
    if len(parts) == 1:
        return parts[0]
    every = tuple(parts)
    return lambda identity: all(part(identity) for part in every)


_MISSING = object()


def _claim_test(claim: str, accepted: frozenset[Any]) -> IdentityTest:
    def test(identity: Identity) -> bool:
        value = identity.claims.get(claim, _MISSING)
        if value is _MISSING:
            return False
        # A list claim (roles, scopes) matches when any of its members is accepted.
        values = value if isinstance(value, (list, tuple, set, frozenset)) else (value,)
        for item in values:
            try:
                if item in accepted:
                    return True
            except TypeError:  # an unhashable member (a nested object) is never accepted
                continue
        return False

    return test


@functools.lru_cache(maxsize=4096)
def parse_address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """A client's address as an IP (IPv4-mapped IPv6 as IPv4), or None if it is not one."""
    try:
        address = ipaddress.ip_address(text.strip("[]"))
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def client_test(matcher: ClientMatcher) -> ClientTest:
    parts: list[ClientTest] = []
    if matcher.addresses is not None:
        networks = matcher.addresses

        def address_test(client: Client) -> bool:
            address = parse_address(client.address) if isinstance(client.address, str) else None
            return address is not None and any(address in network for network in networks)

        parts.append(address_test)
    if matcher.client_ids is not None:
        client_id = names_test(matcher.client_ids)
        parts.append(lambda client: client.client_id is not None and client_id(client.client_id))
    if matcher.software is not None:
        software = names_test(matcher.software)
        parts.append(lambda client: client.software is not None and software(client.software))
    if len(parts) == 1:
        return parts[0]
    every = tuple(parts)
    return lambda client: all(part(client) for part in every)


def window_test(window: TimeWindow) -> WindowTest:
    zone = zoneinfo.ZoneInfo(window.timezone)
    days = window.days
    start, end = window.start_minute, window.end_minute

    def test(now: float) -> bool:
        local = datetime.fromtimestamp(now, zone)
        day = local.weekday()
        if start is not None and end is not None:
            minute = local.hour * 60 + local.minute
            if start < end:
                if not start <= minute < end:
                    return False
            elif minute >= start:
                pass
            elif minute < end:
                day = (day - 1) % 7  # the early hours belong to the night that began the day before
            else:
                return False
        return days is None or day in days

    return test


# -- explaining ------------------------------------------------------------------------------


def _why_not(parts: _Parts, request: AccessRequest, now: float) -> str:
    """Why this rule does not match the request, or "" when it does."""
    rule, rules_file = parts.rule, parts.file
    kind, name = request.resource
    targets = dict(rule.targets)
    plural = KIND_KEYS.get(kind, kind)
    if kind not in targets:
        if kind not in KIND_KEYS:
            return f"rules know no resources of kind {kind}"
        if rules_file.resources.names_for(kind) is None:
            return f"{rules_file.name} governs no {plural}"
        applies = " and ".join(KIND_KEYS[target] for target in targets)
        return f"the rule applies to {applies} only"
    if request.action not in targets[kind]:
        return f"{request.action} is not among its actions on {plural} ({', '.join(sorted(targets[kind]))})"
    governed, narrowed = parts.resource[kind]
    if not governed(name):
        governed_names = rules_file.resources.names_for(kind)
        return f"{resource_words(kind, name)} is not governed by {rules_file.name} ({plural}: {governed_names})"
    if narrowed is not None and not narrowed(name):
        assert rule.narrowing is not None
        return f"{resource_words(kind, name)} is outside the rule's {plural} ({rule.narrowing.names_for(kind)})"
    identity = request.identity
    if parts.who is not None and not parts.who(identity):
        return "who: " + _identity_mismatch(rule.who, identity)  # type: ignore[arg-type]
    if parts.exempt is not None and parts.exempt(identity):
        return f"except: {identity.subject} is exempt"
    if parts.client is not None and not parts.client(request.client):
        return "client: " + _client_mismatch(rule.client, request.client)  # type: ignore[arg-type]
    if parts.window is not None and not parts.window(now):
        return "when: " + _window_mismatch(rule.when, now)  # type: ignore[arg-type]
    return ""


def _identity_mismatch(matcher: IdentityMatcher, identity: Identity) -> str:
    if matcher.subjects is not None and not names_test(matcher.subjects)(identity.subject):
        return f"subject {identity.subject} is not one of {matcher.subjects}"
    if matcher.groups is not None:
        group = names_test(matcher.groups)
        if not any(group(name) for name in identity.groups):
            held = ", ".join(sorted(identity.groups)) or "none"
            return f"groups ({held}) include none of {matcher.groups}"
    for claim, values in matcher.claims:
        if not _claim_test(claim, frozenset(values))(identity):
            shown = identity.claims.get(claim, "absent")
            return f"claim {claim} ({shown}) is not one of {', '.join(map(str, values))}"
    if matcher.mechanisms is not None and identity.mechanism not in matcher.mechanisms:
        return f"mechanism {identity.mechanism} is not one of {', '.join(sorted(matcher.mechanisms))}"
    return "the identity does not match"


def _client_mismatch(matcher: ClientMatcher, client: Client) -> str:
    if matcher.addresses is not None and not client_test(ClientMatcher(addresses=matcher.addresses))(client):
        return f"address {client.address} is not in {', '.join(map(str, matcher.addresses))}"
    if matcher.client_ids is not None and not client_test(ClientMatcher(client_ids=matcher.client_ids))(client):
        return f"client id {client.client_id or '(none)'} is not one of {matcher.client_ids}"
    if matcher.software is not None:
        return f"software {client.software or '(unknown)'} is not one of {matcher.software}"
    return "the client does not match"


def _window_mismatch(window: TimeWindow, now: float) -> str:
    local = datetime.fromtimestamp(now, zoneinfo.ZoneInfo(window.timezone))
    parts = []
    if window.days is not None:
        parts.append(",".join(DAYS[day] for day in sorted(window.days)))
    if window.start_minute is not None and window.end_minute is not None:
        parts.append(f"{_clock(window.start_minute)}-{_clock(window.end_minute)}")
    return (f"it is {DAYS[local.weekday()]} {local:%H:%M} in {window.timezone}, outside "
            f"{' '.join(parts)}")


def _clock(minute: int) -> str:
    return f"{minute // 60:02d}:{minute % 60:02d}"
