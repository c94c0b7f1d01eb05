"""Per-resource enforcement for Kafka requests: which (action, resource) pairs a request names,
what to forward, and what the gateway answers itself.

`plan(api_key, api_version, body, decide, names)` is a pure function over the decoded request
body. Its `Plan` says: forward the client's bytes untouched (the common case), forward a smaller
body and merge the refused entries into the broker's response, or answer alone. The per-API
table is resources.py; docs/kafka-actions.md is the same table for people.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from brokerguard.operations import CLUSTER, Decision, Verdict

from . import answers, resources
from .protocol import codec
from .protocol.schema import snake_case
from .split import (
    CLUSTER_AUTHORIZATION_FAILED,
    ZERO_UUID,
    Call,
    Decide,
    Plan,
    Refusal,
    refusal_message,
)

__all__ = ["SUPPORTED", "MERGES_ALWAYS", "Decide", "Plan", "TopicNames", "plan", "refusal_message",
           "topic_ids"]

_RULES = {codec.API_BY_NAME[rule.name].key: rule for rule in resources.RULES}

# API keys this module maps; the gateway offers only these (plus ApiVersions and the SASL
# requests, which the adapter handles itself). Everything else is refused on the cluster.
SUPPORTED: frozenset[int] = frozenset(_RULES)
# APIs whose responses are filtered or adjusted even when every decision allows.
MERGES_ALWAYS: frozenset[int] = frozenset(key for key, rule in _RULES.items() if rule.merges_always)

_LEARN_FROM = frozenset(codec.API_BY_NAME[name].key for name in ("Metadata", "DescribeTopicPartitions",
                                                                  "CreateTopics"))
# Arrays whose topic ids are not decided on (a fetch session forgetting a topic, partitions a
# group member already owns), so they need not be resolved first.
_UNDECIDED = frozenset({"forgotten_topics_data", "topic_partitions"})


class TopicNames:
    """Topic id (16 bytes) -> name, learned from the responses that pass through.

    Requests that name topics by id only are decided by name through this map. An id is never
    forgotten: a deleted topic's id keeps its old name, which is still the right name for it.
    """

    def __init__(self) -> None:
        self._names: dict[bytes, str] = {}

    def learn(self, api_key: int, body: dict) -> None:
        """Metadata, DescribeTopicPartitions and CreateTopics responses; others are ignored."""
        if api_key not in _LEARN_FROM:
            return
        for entry in body.get("topics") or ():
            name, topic_id = entry.get("name"), entry.get("topic_id")
            if name and topic_id and topic_id != ZERO_UUID and not entry.get("error_code"):
                self._names[bytes(topic_id)] = name

    def name(self, topic_id: bytes) -> str | None:
        return self._names.get(bytes(topic_id))

    def __len__(self) -> int:
        return len(self._names)


def topic_ids(api_key: int, api_version: int, body: dict) -> set[bytes]:
    """The topic ids a request names and `plan` will decide on (the zero uuid excluded), so the
    caller can resolve the unknown ones before planning."""
    if api_key not in _RULES:
        return set()
    return set(_ids(body))


def _ids(value: Any) -> Iterator[bytes]:
    if isinstance(value, dict):
        for key, inner in value.items():
            if key == "topic_id":
                if inner and inner != ZERO_UUID:
                    yield bytes(inner)
            elif key not in _UNDECIDED and isinstance(inner, (list, dict)):
                yield from _ids(inner)
    elif isinstance(value, list):
        for item in value:
            if isinstance(item, (dict, list)):
                yield from _ids(item)


def plan(api_key: int, api_version: int, body: dict, decide: Decide, names: TopicNames) -> Plan:
    """Decide every resource the request names and split it accordingly (see `Plan`).

    `decide(action, resource)` is asked once per distinct pair. An API outside SUPPORTED is
    refused with CLUSTER_AUTHORIZATION_FAILED; an API key the codec does not know at all cannot
    be answered (forward and response are both None): the connection should be closed.
    """
    rule = _RULES.get(api_key)
    if rule is None:
        return _unsupported(api_key, api_version, body)
    call = Call(api_key, api_version, body, decide, names, rule.mirrors, dict(rule.top))
    return rule.handler(call)


def _unsupported(api_key: int, version: int, body: dict) -> Plan:
    spec = codec.API_KEYS.get(api_key)
    name = spec.name if spec else f"API key {api_key}"
    action = snake_case(spec.name) if spec else f"api_{api_key}"
    decision = Decision(Verdict.DENY, "", "unsupported-api", f"the gateway does not relay {name} requests")
    denied = ((action, CLUSTER, decision),)
    if spec is None:
        return Plan(None, False, None, None, denied)
    why = Refusal(CLUSTER_AUTHORIZATION_FAILED, refusal_message(action, CLUSTER, decision))
    fields = answers.response_fields(api_key)
    has_top_error = any(f.key == "error_code" and f.present(version) for f in fields)
    mirrors = () if has_top_error else answers.guess_mirrors(api_key, version)
    response = answers.refuse_everything(api_key, version, body, mirrors, why.error, why.message)
    return Plan(None, False, response, None, denied)
