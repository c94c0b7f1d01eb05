"""Splitting one Kafka request into the part to forward and the part the gateway answers.

A `Call` holds one decoded request while resources.py walks it: each resource it names is
decided once (`refusal`), entries are sorted into kept and refused (`split`), refused entries
become response entries (`answers`), and `finish` turns that into a `Plan`: forward the client's
bytes untouched, forward a smaller body and merge the refused entries into the broker's answer,
or answer alone.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, NamedTuple

from brokerguard.operations import Decision, Resource, Verdict

from . import answers
from .answers import Mirror

if TYPE_CHECKING:
    from .authorize import TopicNames

Decide = Callable[[str, Resource], Decision]
Merge = Callable[[dict], None]

# Kafka's error codes for refusals
TOPIC_AUTHORIZATION_FAILED = 29
GROUP_AUTHORIZATION_FAILED = 30
CLUSTER_AUTHORIZATION_FAILED = 31
TRANSACTIONAL_ID_AUTHORIZATION_FAILED = 53
OPERATION_NOT_ATTEMPTED = 55
DELEGATION_TOKEN_AUTHORIZATION_FAILED = 65
UNKNOWN_TOPIC_ID = 100

ZERO_UUID = bytes(16)
NOT_REQUESTED = -2147483648  # Kafka's "authorized operations were not asked for"
AUTHORIZED_OPERATIONS = frozenset({"topic_authorized_operations", "cluster_authorized_operations",
                                   "authorized_operations"})


class Plan(NamedTuple):
    """What to do with one request.

    forward: the body to send upstream; None when nothing is forwarded.
    changed: True when `forward` differs from the client's body (encode it); False means forward
        the client's original bytes (always False when `forward` is None).
    response: when `forward` is None, the whole response body the gateway answers with.
    merge: applied in place to the decoded broker response: adds refused entries, hides what the
        identity may not see.
    denied: each (action, resource, decision) that was refused, once, in the order decided.
    """

    forward: dict | None
    changed: bool
    response: dict | None
    merge: Merge | None
    denied: tuple[tuple[str, Resource, Decision], ...]


class Refusal(NamedTuple):
    error: int
    message: str


def refusal_message(action: str, resource: Resource, decision: Decision) -> str:
    """The error message a client sees: what was refused, by which rule, and why."""
    what = f"{action} on {resource.kind.replace('_', ' ')} {resource.name}"
    reason = f": {decision.reason}" if decision.reason else ""
    if decision.verdict is Verdict.APPROVAL_REQUIRED:
        return (f"brokerguard: {what} requires approval by {decision.source}{reason} "
                "(approvals cannot be granted yet, so it is refused)")
    return f"brokerguard: {what} denied by {decision.source}{reason}"


def uuid_text(topic_id: bytes) -> str:
    """Kafka's own spelling of a uuid: URL-safe base64 without padding."""
    return base64.urlsafe_b64encode(topic_id).decode().rstrip("=")


class Call:
    """One request being planned: its body, the decisions taken for it, and what was refused."""

    def __init__(self, api_key: int, version: int, body: dict, decide: Decide, names: TopicNames,
                 mirrors: tuple[tuple[str, Mirror], ...] = (), top: Mapping[str, Any] = {}) -> None:
        self.api_key = api_key
        self.version = version
        self.body = body
        self.names = names
        self.mirrors = mirrors  # how each response array answers a request array
        self.top = top  # top-level values of a whole refusal that differ from the spec defaults
        self._decide = decide
        self._decided: dict[tuple[str, Resource], Decision] = {}
        self._refused: dict[tuple[str, Resource], tuple[str, Resource, Decision]] = {}

    @property
    def denied(self) -> tuple[tuple[str, Resource, Decision], ...]:
        """Each refused (action, resource, decision), once, in the order they were refused."""
        return tuple(self._refused.values())

    # -- decisions ---------------------------------------------------------------------------

    def decision(self, action: str, resource: Resource) -> Decision:
        """Asked of the pipeline once per distinct pair and request."""
        key = (action, resource)
        decision = self._decided.get(key)
        if decision is None:
            decision = self._decided[key] = self._decide(action, resource)
        return decision

    def refusal(self, action: str, resource: Resource, error: int) -> Refusal | None:
        """None when allowed; else the error and message to answer with (and it is recorded)."""
        decision = self.decision(action, resource)
        if decision.allowed:
            return None
        self._refused.setdefault((action, resource), (action, resource, decision))
        return Refusal(error, refusal_message(action, resource, decision))

    def allows(self, action: str, resource: Resource) -> bool:
        """A decision that hides or adjusts rather than refuses: not recorded as denied."""
        return self.decision(action, resource).allowed

    def topic_name(self, entry: Mapping[str, Any], name_key: str = "name") -> str | None:
        """The topic an entry names: by name, or by id through the learned id -> name map."""
        name = entry.get(name_key)
        if name is not None:
            return name
        topic_id = entry.get("topic_id")
        if topic_id is None or topic_id == ZERO_UUID:
            return None
        return self.names.name(topic_id)

    def topic(self, entry: Mapping[str, Any], action: str, name_key: str = "name") -> Refusal | None:
        """The refusal for a topic entry named by name or id; an unknown id is refused too."""
        name = self.topic_name(entry, name_key)
        if name is None:
            return self.unknown_topic_id(entry.get("topic_id") or ZERO_UUID, action)
        return self.refusal(action, Resource("topic", name), TOPIC_AUTHORIZATION_FAILED)

    def unknown_topic_id(self, topic_id: bytes, action: str) -> Refusal:
        """An id the gateway cannot name cannot be decided: refused like Kafka's unknown id."""
        text = uuid_text(topic_id)
        resource = Resource("topic", f"<unknown topic id {text}>")
        decision = Decision(Verdict.DENY, "", "unknown-topic-id", f"topic id {text} is not known to the gateway")
        self._refused.setdefault((action, resource), (action, resource, decision))
        return Refusal(UNKNOWN_TOPIC_ID, f"brokerguard: topic id {text} is unknown")

    @staticmethod
    def split(items: Iterable[Any] | None,
              check: Callable[[Any], Refusal | None]) -> tuple[list, list[tuple[Any, Refusal]]]:
        """Entries sorted into those allowed (kept in order) and those refused, with why."""
        kept, refused = [], []
        for item in items or ():
            why = check(item)
            if why is None:
                kept.append(item)
            else:
                refused.append((item, why))
        return kept, refused

    # -- answers -----------------------------------------------------------------------------

    def mirror(self, response_key: str) -> Mirror:
        for key, how in self.mirrors:
            if key == response_key and how.request in self.body:
                return how
        for key, how in self.mirrors:
            if key == response_key:
                return how
        raise KeyError(response_key)

    def answers(self, response_key: str | tuple[str, ...], refused: Iterable[tuple[Any, Refusal]],
                how: Mirror | None = None) -> list[dict]:
        """Response entries for refused request entries: of the top-level array `response_key`
        (mirrored as the table says), or of a nested array at a key path (mirrored by `how`)."""
        how = how or self.mirror(response_key)  # type: ignore[arg-type]
        field = answers.field(answers.response_fields(self.api_key), response_key)
        return [answers.mirror(field.fields, self.version, how, entry, why.error, why.message)
                for entry, why in refused]

    def refuse_all(self, why: Refusal) -> Plan:
        """The whole request refused: its error at the top level and in every entry."""
        body = answers.refuse_everything(self.api_key, self.version, self.body, self.mirrors,
                                         why.error, why.message, self.top)
        return Plan(None, False, body, None, self.denied)

    def alone(self, values: Mapping[str, Any], merge: Merge | None = None) -> Plan:
        """Nothing forwarded: the gateway's own answer with `values` (e.g. refused entries)."""
        body = answers.answer(self.api_key, self.version, values)
        if merge is not None:
            merge(body)
        return Plan(None, False, body, None, self.denied)

    def finish(self, changes: Mapping[str, Any] | None = None,
               added: Mapping[str, list[dict]] | None = None,
               merges: Iterable[Merge | None] = ()) -> Plan:
        """Forward the body with `changes`; run `merges` on the broker's answer (they see only
        the broker's entries), then add the `added` entries. With no changes, additions or
        merges: forward the original bytes."""
        steps = [m for m in merges if m is not None]
        if added := {k: v for k, v in (added or {}).items() if v}:
            steps.append(_adder(added))
        merge = chain(steps)
        if changes:
            return Plan({**self.body, **changes}, True, None, merge, self.denied)
        return Plan(self.body, False, None, merge, self.denied)


def _adder(added: Mapping[str, list[dict]]) -> Merge:
    def add(response: dict) -> None:
        for key, extra in added.items():
            response[key] = [*(response.get(key) or ()), *extra]
    return add


def chain(steps: Iterable[Merge | None]) -> Merge | None:
    """One merge that runs `steps` in order (None ones left out); None when there are none."""
    steps = [step for step in steps if step is not None]
    if len(steps) <= 1:
        return steps[0] if steps else None

    def run(response: dict) -> None:
        for step in steps:
            step(response)
    return run


def hide_authorized_operations(response: dict) -> None:
    """Authorized-operations fields describe the broker's view of the gateway's own account,
    not the client's: answer as if they were not asked for. They live at the top level and in
    the entries of top-level arrays (topics, groups)."""
    for key, value in response.items():
        if key in AUTHORIZED_OPERATIONS:
            response[key] = NOT_REQUESTED
        elif isinstance(value, list):
            for item in value:
                if isinstance(item, dict):
                    for inner in AUTHORIZED_OPERATIONS.intersection(item):
                        item[inner] = NOT_REQUESTED
