"""Per-resource enforcement of Kafka requests (plugins/kafka/authorize.py).

Every mapped API and version is planned three ways — everything denied, everything allowed, and
mixed (the topic "payments", the group "analytics" and the transactional id "tx-b" denied) — on a
plausible request built from the schema; every answer the gateway builds must encode for that
version and carry the right error for what was refused. Then the specific behaviours, and a
hypothesis test that the forwarded and the refused parts of a request partition it exactly.
"""
from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fuzzing import random_inputs

from brokerguard.operations import CLUSTER, Decision, Resource, Verdict
from brokerguard.plugins.kafka import authorize
from brokerguard.plugins.kafka.authorize import Plan, TopicNames, plan, topic_ids
from brokerguard.plugins.kafka.protocol import codec
from brokerguard.plugins.kafka.protocol.schema import FieldSpec
from brokerguard.plugins.kafka.resources import RULES

TOPICS = ["orders", "payments"]
GROUPS = ["billing", "analytics"]
TXNS = ["tx-a", "tx-b"]
IDS = {"orders": bytes([1] * 16), "payments": bytes([2] * 16), "ghost": bytes([9] * 16)}
DENIED = {"payments", "analytics", "tx-b"}
AUTH_ERRORS = {29, 30, 31, 53, 65, 100}
OPERATION_NOT_ATTEMPTED = 55
API = {name: spec.key for name, spec in codec.API_BY_NAME.items()}

ALLOW = Decision(Verdict.ALLOW, "test.yaml", "allow-all", "tests allow it")


def deny_decision(action: str, resource: Resource) -> Decision:
    return Decision(Verdict.DENY, "payments.yaml", "analysts-read-only", "analysts may not publish")


def allow_all(action: str, resource: Resource) -> Decision:
    return ALLOW


def deny_all(action: str, resource: Resource) -> Decision:
    return deny_decision(action, resource)


def mixed(action: str, resource: Resource) -> Decision:
    return deny_decision(action, resource) if resource.name in DENIED else ALLOW


def names() -> TopicNames:
    known = TopicNames()
    known.learn(API["Metadata"], {"topics": [
        {"name": "orders", "topic_id": IDS["orders"], "error_code": 0},
        {"name": "payments", "topic_id": IDS["payments"], "error_code": 0}]})
    return known


# --- plausible requests built from the schema ----------------------------------------------------

_TOPIC_STRINGS = {"topic_names", "subscribed_topic_names", "source_topics", "repartition_sink_topics"}
_GROUP_STRINGS = {"groups", "group_ids", "groups_names", "coordinator_keys"}
_PARTITION_KEYS = {"partition", "partition_index", "index", "partition_id"}


def _string(key: str, parent: str, i: int) -> str:
    if key in ("transactional_id", "v3_and_below_transactional_id"):
        return TXNS[i]
    if key in ("group_id", "key"):
        return GROUPS[i]
    if key in ("topic", "topic_name") or (key == "name" and "topic" in parent):
        return TOPICS[i]
    return f"{key}-{i}"


def _scalar(kind: str, f: FieldSpec, version: int, parent: str, i: int) -> Any:
    key = f.key
    if kind == "string":
        if f.is_array:
            return GROUPS[i] if key in _GROUP_STRINGS else TOPICS[i] if key in _TOPIC_STRINGS else \
                TXNS[i] if key == "transactional_ids" else f"{key}-{i}"
        return _string(key, parent, i)
    if kind == "uuid":
        return IDS[TOPICS[i]] if key == "topic_id" else bytes([7] * 16)
    if kind in ("bytes", "records"):
        return b""
    if kind == "bool":
        return bool(f.default) if f.default is not codec.MISSING and f.default is not None else False
    if kind == "float64":
        return 0.0
    if key in _PARTITION_KEYS or (f.is_array and "partition" in key):
        return i
    if key in ("replica_id",):
        return -1
    if f.default is not codec.MISSING and f.default is not None and not f.is_array:
        return int(f.default) if not isinstance(f.default, bool) else f.default
    return 0


def _value(f: FieldSpec, version: int, parent: str, i: int) -> Any:
    if f.is_array:
        if f.is_struct:
            return [_struct(f.fields, version, f.key, j) for j in range(2)]
        return [_scalar(f.element_type, f, version, parent, j) for j in range(2)]
    if f.is_struct:
        return None if f.key == "cursor" else _struct(f.fields, version, parent, i)
    return _scalar(f.type, f, version, parent, i)


def _struct(fields, version: int, parent: str, i: int) -> dict:
    return {f.key: _value(f, version, parent, i) for f in fields if f.present(version) and not f.tagged(version)}


_CONFIG_RESOURCES = [(2, "orders"), (2, "payments"), (32, "analytics"), (4, "1")]


def sample(api_key: int, version: int) -> dict:
    """A plausible request: two of everything, named from TOPICS/GROUPS/TXNS, through the codec."""
    spec = codec.API_KEYS[api_key]
    body = _struct(spec.request.fields, version, "", 0)
    name = spec.name
    if name in ("DescribeConfigs", "AlterConfigs", "IncrementalAlterConfigs"):
        template = body["resources"][0]
        body["resources"] = [{**template, "resource_type": t, "resource_name": n} for t, n in _CONFIG_RESOURCES]
    if name == "DeleteTopics" and version >= 6:
        body["topics"] = [{"name": "orders", "topic_id": bytes(16)}, {"name": None, "topic_id": IDS["payments"]}]
    if name == "Metadata" and version >= 12:
        body["topics"] = [{"name": "orders", "topic_id": bytes(16)}, {"name": None, "topic_id": IDS["payments"]}]
    return codec.decode_request(api_key, version, codec.encode_request(api_key, version, body))


def realistic(api_key: int, version: int, request: dict) -> dict:
    """A broker's successful answer to `request`: its entries mirrored with error 0."""
    from brokerguard.plugins.kafka import answers

    rule = next(r for r in RULES if r.name == codec.API_KEYS[api_key].name)
    body = answers.refuse_everything(api_key, version, request, rule.mirrors, 0, None)
    if api_key == API["Metadata"]:
        fields = answers.field(answers.response_fields(api_key), "topics").fields
        body["topics"] = [answers.build(fields, version, {"name": t.get("name"), "topic_id": IDS[t["name"]]})
                          for t in request.get("topics") or () if t.get("name")]
    return body


CASES = [(key, version) for key in sorted(authorize.SUPPORTED)
         for version in range(codec.API_KEYS[key].min_version, codec.API_KEYS[key].max_version + 1)]


def case_id(case) -> str:
    return f"{codec.API_KEYS[case[0]].name}-v{case[1]}"


# --- walking bodies ------------------------------------------------------------------------------

def errors_in(value: Any, top: bool = True) -> Iterator[tuple[bool, int]]:
    """(is top level, code) for every error-code field."""
    if isinstance(value, dict):
        for key, inner in value.items():
            if key in ("error_code", "partition_error_code"):
                yield top, inner
            elif isinstance(inner, (list, dict)):
                yield from errors_in(inner, False)
    elif isinstance(value, list):
        for item in value:
            yield from errors_in(item, False)


def strings_in(value: Any, skip: frozenset = frozenset()) -> Iterator[Any]:
    if isinstance(value, dict):
        for key, inner in value.items():
            if key not in skip:
                yield from strings_in(inner, skip)
    elif isinstance(value, list):
        for item in value:
            yield from strings_in(item, skip)
    elif isinstance(value, (str, bytes)):
        yield value


def dicts_naming(value: Any, name: str) -> Iterator[dict]:
    if isinstance(value, dict):
        wanted = {name, IDS[name]} if name in IDS else {name}
        if any(isinstance(v, (str, bytes)) and v in wanted for v in value.values()):
            yield value
        for inner in value.values():
            yield from dicts_naming(inner, name)
    elif isinstance(value, list):
        for item in value:
            yield from dicts_naming(item, name)


def messages_in(value: Any) -> Iterator[str]:
    if isinstance(value, dict):
        for key, inner in value.items():
            if key == "error_message" and inner:
                yield inner
            elif isinstance(inner, (list, dict)):
                yield from messages_in(inner)
    elif isinstance(value, list):
        for item in value:
            yield from messages_in(item)


def round_trip_response(api_key: int, version: int, body: dict) -> dict:
    data = codec.encode_response(api_key, version, body)
    back = codec.decode_response(api_key, version, data)
    assert codec.encode_response(api_key, version, back) == data
    return back


def answer_of(p: Plan, api_key: int, version: int) -> dict:
    """What the client gets: the gateway's own answer, or the broker's with the merge applied."""
    if p.forward is None:
        assert p.response is not None and p.merge is None
        return round_trip_response(api_key, version, p.response)
    codec.encode_request(api_key, version, p.forward)
    broker = realistic(api_key, version, p.forward)
    if p.merge is not None:
        p.merge(broker)
    return round_trip_response(api_key, version, broker)


# --- every API, every version ------------------------------------------------------------------

@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_allow_all_forwards_the_original_bytes(case):
    key, version = case
    body = sample(key, version)
    p = plan(key, version, body, allow_all, names())
    assert p.forward is body and not p.changed and p.response is None and p.denied == ()
    if key not in authorize.MERGES_ALWAYS:
        assert p.merge is None
    answer_of(p, key, version)


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_deny_all_answers_every_named_resource_with_its_error(case):
    key, version = case
    body = sample(key, version)
    p = plan(key, version, body, deny_all, names())
    answer = answer_of(p, key, version)
    codes = list(errors_in(answer))
    if key not in (API["ListGroups"], API["ListTransactions"]):
        assert p.denied and all(d.verdict is Verdict.DENY for _, _, d in p.denied)
        # DescribeLogDirs before v3 has nowhere to put an error: Kafka answers no directories
        if not (key == API["DescribeLogDirs"] and version < 3):
            assert any(code in AUTH_ERRORS for _, code in codes), answer
    for top, code in codes:
        assert code in AUTH_ERRORS or (top and code == 0), (code, answer)
    for message in messages_in(answer):
        assert message.startswith("brokerguard: ") and "payments.yaml:analysts-read-only" in message


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_mixed_forwards_only_the_allowed_part(case):
    key, version = case
    body = sample(key, version)
    original = copy.deepcopy(body)
    p = plan(key, version, body, mixed, names())
    if p.forward is not None:
        assert p.changed or not p.denied
        forwarded = set(strings_in(p.forward, frozenset({"forgotten_topics_data", "topic_partitions"})))
        refused = {r.name for _, r, _ in p.denied} | {IDS[r.name] for _, r, _ in p.denied if r.name in IDS}
        assert not forwarded & refused, p.forward
    answer = answer_of(p, key, version)
    assert body == original  # the client's request is never changed in place
    for _, resource, _ in p.denied:
        if p.forward is not None and resource.kind != "cluster":  # split: the refused part is answered
            assert list(dicts_naming(answer, resource.name)), (resource, answer)
        for entry in dicts_naming(answer, resource.name):
            assert any(code in AUTH_ERRORS | {OPERATION_NOT_ATTEMPTED} for _, code in errors_in(entry)), entry


# --- specific behaviours -------------------------------------------------------------------------

def denying(*refused: str, verdict: Verdict = Verdict.DENY, calls: list | None = None):
    """A decide that refuses the named resources (any action) or (action, name) pairs."""
    def decide(action: str, resource: Resource) -> Decision:
        if calls is not None:
            calls.append((action, resource))
        if resource.name in refused or f"{action}:{resource.name}" in refused:
            return Decision(verdict, "payments.yaml", "analysts-read-only", "analysts may not publish")
        return ALLOW
    return decide


def request(name: str, version: int, body: dict) -> dict:
    key = API[name]
    return codec.decode_request(key, version, codec.encode_request(key, version, body))


def produce_body(*topics: str, acks: int = -1, transactional_id: str | None = None) -> dict:
    return {"transactional_id": transactional_id, "acks": acks, "timeout_ms": 1000, "topic_data": [
        {"name": t, "partition_data": [{"index": 0, "records": b"r"}, {"index": 1, "records": b"r"}]}
        for t in topics]}


def test_refusal_message_names_the_action_resource_rule_and_reason():
    decision = Decision(Verdict.DENY, "payments.yaml", "analysts-read-only", "analysts may not publish")
    assert authorize.refusal_message("produce", Resource("topic", "payments.cards"), decision) == (
        "brokerguard: produce on topic payments.cards denied by payments.yaml:analysts-read-only: "
        "analysts may not publish")
    default = Decision(Verdict.DENY, "", "default-deny", "no rule allows consume on topic x for alice")
    assert authorize.refusal_message("consume", Resource("topic", "x"), default) == (
        "brokerguard: consume on topic x denied by default-deny: no rule allows consume on topic x for alice")
    held = Decision(Verdict.APPROVAL_REQUIRED, "ops.yaml", "office-hours-config", "changes need a second pair of eyes")
    text = authorize.refusal_message("alter_configs", Resource("transactional_id", "t"), held)
    assert text.startswith("brokerguard: alter_configs on transactional id t requires approval by "
                           "ops.yaml:office-hours-config: changes need a second pair of eyes")
    assert "cannot be granted yet" in text


def test_produce_to_two_topics_forwards_the_allowed_one_and_answers_the_other():
    body = request("Produce", 9, produce_body("orders", "payments"))
    p = plan(API["Produce"], 9, body, denying("payments"), names())
    assert p.changed and [t["name"] for t in p.forward["topic_data"]] == ["orders"]
    assert p.forward["acks"] == -1 and p.forward["topic_data"][0] == body["topic_data"][0]
    assert [(a, r) for a, r, _ in p.denied] == [("produce", Resource("topic", "payments"))]
    broker = {"throttle_time_ms": 0, "responses": [{"name": "orders", "partition_responses": [
        {"index": 0, "error_code": 0, "base_offset": 42}, {"index": 1, "error_code": 0, "base_offset": 7}]}]}
    p.merge(broker)
    answer = round_trip_response(API["Produce"], 9, broker)
    by_topic = {t["name"]: t["partition_responses"] for t in answer["responses"]}
    assert [p_["base_offset"] for p_ in by_topic["orders"]] == [42, 7]
    refused = by_topic["payments"]
    assert [(r["index"], r["error_code"], r["base_offset"]) for r in refused] == [(0, 29, -1), (1, 29, -1)]
    assert refused[0]["error_message"].startswith("brokerguard: produce on topic payments denied by payments.yaml")


def test_produce_with_every_topic_refused_forwards_nothing_even_with_acks_0():
    for acks in (-1, 0):
        body = request("Produce", 9, produce_body("payments", acks=acks))
        p = plan(API["Produce"], 9, body, denying("payments"), names())
        assert p.forward is None and p.response["responses"][0]["name"] == "payments"


def test_produce_with_a_refused_transactional_id_is_refused_whole():
    body = request("Produce", 9, produce_body("orders", "payments", transactional_id="tx-b"))
    p = plan(API["Produce"], 9, body, denying("tx-b"), names())
    assert p.forward is None
    codes = [r["error_code"] for t in p.response["responses"] for r in t["partition_responses"]]
    assert codes == [53] * 4
    assert [(a, r) for a, r, _ in p.denied] == [("transaction", Resource("transactional_id", "tx-b"))]


def test_produce_v13_decides_topic_ids_by_name_and_refuses_unknown_ids():
    body = request("Produce", 13, {"acks": -1, "timeout_ms": 1, "topic_data": [
        {"topic_id": IDS[t], "partition_data": [{"index": 0, "records": b""}]} for t in ("orders", "ghost")]})
    p = plan(API["Produce"], 13, body, allow_all, names())
    assert [t["topic_id"] for t in p.forward["topic_data"]] == [IDS["orders"]]
    broker = {"responses": []}
    p.merge(broker)
    (refused,) = broker["responses"]
    assert refused["topic_id"] == IDS["ghost"] and refused["partition_responses"][0]["error_code"] == 100
    assert p.denied[0][2].rule == "unknown-topic-id"


def fetch_body(version: int, *topics: str, session_id: int = 0, epoch: int = -1) -> dict:
    key = "topic_id" if version >= 13 else "topic"
    return request("Fetch", version, {
        "replica_id": -1, "max_wait_ms": 500, "min_bytes": 1, "session_id": session_id, "session_epoch": epoch,
        "topics": [{key: IDS[t] if version >= 13 else t, "partitions": [
            {"partition": 0, "fetch_offset": 5, "partition_max_bytes": 1024}]} for t in topics],
        "forgotten_topics_data": [], "rack_id": ""})


@pytest.mark.parametrize("version", [12, 15])
def test_fetch_by_name_and_by_id_forwards_only_the_allowed_topics(version):
    body = fetch_body(version, "orders", "payments")
    p = plan(API["Fetch"], version, body, denying("payments"), names())
    key = "topic_id" if version >= 13 else "topic"
    assert [t[key] for t in p.forward["topics"]] == [IDS["orders"] if version >= 13 else "orders"]
    broker = {"throttle_time_ms": 0, "error_code": 0, "session_id": 0, "responses": [
        {key: p.forward["topics"][0][key], "partitions": [
            {"partition_index": 0, "error_code": 0, "high_watermark": 10, "records": b"batch"}]}]}
    p.merge(broker)
    answer = round_trip_response(API["Fetch"], version, broker)
    refused = answer["responses"][1]
    assert refused[key] == (IDS["payments"] if version >= 13 else "payments")
    expected = {"partition_index": 0, "error_code": 29, "high_watermark": -1, "last_stable_offset": -1,
                "log_start_offset": -1, "preferred_read_replica": -1, "records": b""}
    assert {k: refused["partitions"][0][k] for k in expected} == expected
    assert answer["responses"][0]["partitions"][0]["records"] == b"batch"


def test_fetch_in_a_session_is_forwarded_even_when_every_topic_is_refused():
    alone = plan(API["Fetch"], 12, fetch_body(12, "payments"), denying("payments"), names())
    assert alone.forward is None and alone.response["session_id"] == 0
    in_session = plan(API["Fetch"], 12, fetch_body(12, "payments", session_id=77, epoch=3), denying("payments"),
                      names())
    assert in_session.forward["topics"] == [] and in_session.forward["session_id"] == 77
    broker = {"session_id": 77, "responses": []}
    in_session.merge(broker)
    assert broker["responses"][0]["partitions"][0]["error_code"] == 29


def test_fetch_from_a_replica_needs_cluster_action():
    body = fetch_body(12, "orders")
    body["replica_id"] = 3
    p = plan(API["Fetch"], 12, body, denying("cluster_action:kafka-cluster"), names())
    assert p.forward is None and p.response["error_code"] == 31
    assert p.response["responses"][0]["partitions"][0]["error_code"] == 31
    assert [(a, r) for a, r, _ in p.denied] == [("cluster_action", CLUSTER)]
    body15 = fetch_body(15, "orders")
    body15["replica_state"] = {"replica_id": 2, "replica_epoch": 1}
    assert plan(API["Fetch"], 15, body15, allow_all, names()).changed is False


def metadata_response(version: int, *topics: str, error: int = 0) -> dict:
    return {"brokers": [{"node_id": 1, "host": "b1", "port": 9092, "rack": None}], "cluster_id": "c",
            "controller_id": 1, "topics": [
                {"error_code": error, "name": t, "topic_id": IDS.get(t, bytes(16)), "is_internal": False,
                 "partitions": [], "topic_authorized_operations": 0x1FF} for t in topics],
            "cluster_authorized_operations": 0x1FF}


def test_metadata_for_all_topics_hides_what_the_identity_may_not_describe():
    for version, topics in ((0, []), (1, None), (12, None)):
        body = request("Metadata", version, {"topics": topics, "allow_auto_topic_creation": True})
        p = plan(API["Metadata"], version, body, denying("payments"), names())
        assert p.forward is body and not p.changed and p.denied == ()
        response = metadata_response(version, "orders", "payments", "__consumer_offsets")
        p.merge(response)
        assert [t["name"] for t in response["topics"]] == ["orders", "__consumer_offsets"]


def test_metadata_naming_topics_answers_the_refused_ones():
    body = request("Metadata", 12, {"topics": [{"name": "orders"}, {"name": "payments"},
                                               {"name": None, "topic_id": IDS["payments"]},
                                               {"name": None, "topic_id": IDS["ghost"]}],
                                    "allow_auto_topic_creation": False, "include_topic_authorized_operations": True})
    p = plan(API["Metadata"], 12, body, denying("payments"), names())
    assert [t["name"] for t in p.forward["topics"]] == ["orders"]
    response = metadata_response(12, "orders")
    p.merge(response)
    answer = round_trip_response(API["Metadata"], 12, response)
    assert [(t["name"], t["topic_id"], t["error_code"]) for t in answer["topics"]] == [
        ("orders", IDS["orders"], 0), ("payments", bytes(16), 29),
        (None, IDS["payments"], 29), (None, IDS["ghost"], 100)]
    assert {t["topic_authorized_operations"] for t in answer["topics"]} == {-2147483648}


def test_metadata_turns_auto_creation_off_when_a_topic_may_be_described_but_not_created():
    body = request("Metadata", 9, {"topics": [{"name": "orders"}, {"name": "new-topic"}],
                                   "allow_auto_topic_creation": True})
    p = plan(API["Metadata"], 9, body, denying("create:new-topic"), names())
    assert p.changed and p.forward["allow_auto_topic_creation"] is False
    assert [t["name"] for t in p.forward["topics"]] == ["orders", "new-topic"]
    assert p.denied == ()  # nothing refused yet: the topic may exist
    response = metadata_response(9, "orders")
    response["topics"].append({"error_code": 3, "name": "new-topic", "topic_id": bytes(16), "partitions": []})
    p.merge(response)
    assert [t["error_code"] for t in response["topics"]] == [0, 29]
    creatable = plan(API["Metadata"], 9, body, allow_all, names())
    assert not creatable.changed


def test_metadata_v3_cannot_turn_auto_creation_off_so_a_named_topic_must_be_creatable():
    body = request("Metadata", 3, {"topics": [{"name": "orders"}, {"name": "new-topic"}]})
    p = plan(API["Metadata"], 3, body, denying("create:new-topic"), names())
    assert [t["name"] for t in p.forward["topics"]] == ["orders"]
    response = metadata_response(3, "orders")
    p.merge(response)
    assert [(t["name"], t["error_code"]) for t in response["topics"]] == [("orders", 0), ("new-topic", 29)]


@pytest.mark.parametrize("version", [0, 1])
def test_metadata_with_every_named_topic_refused_still_asks_for_the_brokers(version):
    body = request("Metadata", version, {"topics": [{"name": "payments"}]})
    p = plan(API["Metadata"], version, body, denying("payments"), names())
    assert p.forward["topics"] == []  # v1+: no topics; v0: every topic, dropped from the answer
    response = metadata_response(version, *(["orders", "payments"] if version == 0 else []))
    p.merge(response)
    assert [(t["name"], t["error_code"]) for t in response["topics"]] == [("payments", 29)]
    assert response["brokers"]


def test_metadata_v10_by_id_refusal_encodes_without_a_null_name():
    body = request("Metadata", 10, {"topics": [{"name": None, "topic_id": IDS["ghost"]}]})
    p = plan(API["Metadata"], 10, body, allow_all, names())
    response = metadata_response(10)
    p.merge(response)
    answer = round_trip_response(API["Metadata"], 10, response)
    assert [(t["name"], t["error_code"]) for t in answer["topics"]] == [("", 100)]


def offset_commit_body(version: int = 8, group_id: str = "billing") -> dict:
    return request("OffsetCommit", version, {"group_id": group_id, "member_id": "m", "topics": [
        {"name": t, "partitions": [{"partition_index": i, "committed_offset": 10, "committed_metadata": ""}
                                   for i in (0, 1)]} for t in ("orders", "payments")]})


def test_offset_commit_for_a_refused_group_is_refused_whole():
    p = plan(API["OffsetCommit"], 8, offset_commit_body(group_id="analytics"), denying("analytics"), names())
    assert p.forward is None
    answer = round_trip_response(API["OffsetCommit"], 8, p.response)
    assert [(t["name"], [(x["partition_index"], x["error_code"]) for x in t["partitions"]])
            for t in answer["topics"]] == [("orders", [(0, 30), (1, 30)]), ("payments", [(0, 30), (1, 30)])]
    assert [(a, r) for a, r, _ in p.denied] == [("consume", Resource("group", "analytics"))]


def test_offset_commit_refuses_topics_one_by_one():
    p = plan(API["OffsetCommit"], 8, offset_commit_body(), denying("payments"), names())
    assert [t["name"] for t in p.forward["topics"]] == ["orders"]


def test_txn_offset_commit_with_a_refused_transactional_id_is_refused_whole():
    partitions = [{"partition_index": 0, "committed_offset": 1, "committed_metadata": ""}]
    body = request("TxnOffsetCommit", 3, {"transactional_id": "tx-b", "group_id": "billing", "producer_id": 1,
                                          "producer_epoch": 0,
                                          "topics": [{"name": "orders", "partitions": partitions}]})
    calls: list = []
    p = plan(API["TxnOffsetCommit"], 3, body, denying("tx-b", "billing", calls=calls), names())
    assert p.forward is None
    assert p.response["topics"][0]["partitions"][0]["error_code"] == 53
    assert calls == [("transaction", Resource("transactional_id", "tx-b"))]  # Kafka's order: nothing else asked
    group_refused = plan(API["TxnOffsetCommit"], 3, body, denying("billing"), names())
    assert group_refused.response["topics"][0]["partitions"][0]["error_code"] == 30


def test_find_coordinator_v4_batches_are_split_per_key():
    body = request("FindCoordinator", 4, {"key_type": 0, "coordinator_keys": ["billing", "analytics", "ops"]})
    p = plan(API["FindCoordinator"], 4, body, denying("analytics"), names())
    assert p.forward["coordinator_keys"] == ["billing", "ops"]
    broker = {"throttle_time_ms": 0, "coordinators": [
        {"key": k, "node_id": 1, "host": "b1", "port": 9092, "error_code": 0, "error_message": None}
        for k in ("billing", "ops")]}
    p.merge(broker)
    answer = round_trip_response(API["FindCoordinator"], 4, broker)
    refused = answer["coordinators"][2]
    assert (refused["key"], refused["error_code"], refused["node_id"], refused["host"], refused["port"]) == (
        "analytics", 30, -1, "", -1)
    assert refused["error_message"].startswith("brokerguard: describe on group analytics")
    txn = request("FindCoordinator", 4, {"key_type": 1, "coordinator_keys": ["tx-a", "tx-b"]})
    p = plan(API["FindCoordinator"], 4, txn, denying("tx-b"), names())
    assert p.forward["coordinator_keys"] == ["tx-a"]
    assert p.denied[0][1] == Resource("transactional_id", "tx-b")
    v3 = request("FindCoordinator", 3, {"key": "analytics", "key_type": 0})
    p = plan(API["FindCoordinator"], 3, v3, denying("analytics"), names())
    assert (p.response["error_code"], p.response["node_id"], p.response["port"]) == (30, -1, -1)


def test_list_groups_shows_only_groups_the_identity_may_describe():
    body = request("ListGroups", 5, {"states_filter": [], "types_filter": []})
    p = plan(API["ListGroups"], 5, body, denying("analytics"), names())
    assert p.forward is body and not p.changed and p.merge is not None
    broker = {"error_code": 0, "groups": [{"group_id": g, "protocol_type": "consumer", "group_state": "Stable",
                                           "group_type": "classic"} for g in ("billing", "analytics", "ops")]}
    p.merge(broker)
    assert [g["group_id"] for g in broker["groups"]] == ["billing", "ops"]


def test_list_transactions_shows_only_transactional_ids_the_identity_may_describe():
    body = request("ListTransactions", 1, {"state_filters": [], "producer_id_filters": []})
    p = plan(API["ListTransactions"], 1, body, denying("tx-b"), names())
    broker = {"error_code": 0, "unknown_state_filters": [], "transaction_states": [
        {"transactional_id": t, "producer_id": 1, "transaction_state": "Ongoing"} for t in TXNS]}
    p.merge(broker)
    assert [t["transactional_id"] for t in broker["transaction_states"]] == ["tx-a"]


@pytest.mark.parametrize("version", [1, 5, 6])
def test_delete_topics_refused_with_the_rules_message(version):
    if version >= 6:
        body = request("DeleteTopics", 6, {"timeout_ms": 1, "topics": [
            {"name": "payments"}, {"name": None, "topic_id": IDS["payments"]}]})
    else:
        body = request("DeleteTopics", version, {"topic_names": ["payments"], "timeout_ms": 1})
    p = plan(API["DeleteTopics"], version, body, denying("delete:payments"), names())
    assert p.forward is None
    answer = round_trip_response(API["DeleteTopics"], version, p.response)
    for entry in answer["responses"]:
        assert entry["error_code"] == 29
        if version >= 5:
            assert entry["error_message"] == ("brokerguard: delete on topic payments denied by "
                                              "payments.yaml:analysts-read-only: analysts may not publish")
    if version >= 6:  # asked by id and the identity may describe the topic: its name is shown
        assert [e["name"] for e in answer["responses"]] == ["payments", "payments"]
        hidden = plan(API["DeleteTopics"], 6, body, denying("payments"), names()).response
        assert [e["name"] for e in hidden["responses"]] == ["payments", None]


def test_add_partitions_to_txn_is_all_or_nothing():
    body = request("AddPartitionsToTxn", 3, {"v3_and_below_transactional_id": "tx-a", "v3_and_below_producer_id": 1,
                                             "v3_and_below_producer_epoch": 0, "v3_and_below_topics": [
                                                 {"name": "orders", "partitions": [0]},
                                                 {"name": "payments", "partitions": [0, 1]}]})
    p = plan(API["AddPartitionsToTxn"], 3, body, denying("payments"), names())
    assert p.forward is None
    assert [(t["name"], [r["partition_error_code"] for r in t["results_by_partition"]])
            for t in p.response["results_by_topic_v3_and_below"]] == [("orders", [55]), ("payments", [29, 29])]
    batched = sample(API["AddPartitionsToTxn"], 5)
    p = plan(API["AddPartitionsToTxn"], 5, batched, denying("kafka-cluster"), names())
    assert p.response["error_code"] == 31 and p.denied[0][:2] == ("cluster_action", CLUSTER)


def test_approval_required_counts_as_refused():
    body = request("Produce", 9, produce_body("payments"))
    p = plan(API["Produce"], 9, body, denying("payments", verdict=Verdict.APPROVAL_REQUIRED), names())
    message = p.response["responses"][0]["partition_responses"][0]["error_message"]
    assert p.forward is None and "requires approval" in message


def test_each_distinct_decision_is_asked_once():
    calls: list = []
    body = request("Produce", 9, produce_body("orders", "orders", "payments", "payments"))
    p = plan(API["Produce"], 9, body, denying("payments", calls=calls), names())
    assert calls == [("produce", Resource("topic", "orders")), ("produce", Resource("topic", "payments"))]
    assert len(p.denied) == 1 and len(p.forward["topic_data"]) == 2


def test_create_topics_hides_configs_from_who_may_not_describe_them():
    body = request("CreateTopics", 7, {"topics": [{"name": "orders", "num_partitions": 1, "replication_factor": 1,
                                                   "assignments": [], "configs": []}], "timeout_ms": 1})
    p = plan(API["CreateTopics"], 7, body, denying("describe_configs:orders"), names())
    assert not p.changed and p.denied == ()
    broker = {"topics": [{"name": "orders", "topic_id": IDS["orders"], "error_code": 0, "num_partitions": 1,
                          "replication_factor": 1, "configs": [{"name": "retention.ms", "value": "1",
                                                                "read_only": False, "is_sensitive": False}]}]}
    p.merge(broker)
    answer = round_trip_response(API["CreateTopics"], 7, broker)["topics"][0]
    assert (answer["configs"], answer["num_partitions"], answer["topic_config_error_code"]) == ([], -1, 29)


def test_consumer_group_describe_refuses_a_group_using_topics_one_may_not_describe():
    body = request("ConsumerGroupDescribe", 1, {"group_ids": ["billing", "ops"], "include_authorized_operations": True})
    p = plan(API["ConsumerGroupDescribe"], 1, body, denying("payments"), names())
    assert not p.changed

    def described(group_id: str, topic: str) -> dict:
        assignment = {"topic_partitions": [{"topic_id": IDS[topic], "topic_name": topic, "partitions": [0]}]}
        return {"group_id": group_id, "error_code": 0, "group_state": "Stable", "authorized_operations": 0x1FF,
                "members": [{"member_id": "m", "client_id": "c", "client_host": "h", "subscribed_topic_names": [topic],
                             "assignment": assignment, "target_assignment": assignment}]}
    broker = {"groups": [described("billing", "orders"), described("ops", "payments")]}
    p.merge(broker)
    answer = round_trip_response(API["ConsumerGroupDescribe"], 1, broker)
    assert [(g["group_id"], g["error_code"], len(g["members"])) for g in answer["groups"]] == [
        ("billing", 0, 1), ("ops", 29, 0)]
    assert {g["authorized_operations"] for g in answer["groups"]} == {-2147483648}


def test_consumer_group_heartbeat_needs_every_subscribed_topic_described():
    body = request("ConsumerGroupHeartbeat", 1, {"group_id": "billing", "member_id": "m", "member_epoch": 0,
                                                 "subscribed_topic_names": ["orders", "payments"]})
    p = plan(API["ConsumerGroupHeartbeat"], 1, body, denying("payments"), names())
    assert p.forward is None and p.response["error_code"] == 29
    assert "describe on topic payments" in p.response["error_message"]


def test_describe_transactions_hides_topics_one_may_not_describe():
    body = request("DescribeTransactions", 0, {"transactional_ids": ["tx-a", "tx-b"]})
    p = plan(API["DescribeTransactions"], 0, body, denying("tx-b", "payments"), names())
    assert p.forward["transactional_ids"] == ["tx-a"]
    broker = {"transaction_states": [{"transactional_id": "tx-a", "error_code": 0, "transaction_state": "Ongoing",
                                      "topics": [{"topic": "orders", "partitions": [0]},
                                                 {"topic": "payments", "partitions": [0]}]}]}
    p.merge(broker)
    assert [t["topic"] for t in broker["transaction_states"][0]["topics"]] == ["orders"]
    assert broker["transaction_states"][1]["error_code"] == 53


def test_describe_topic_partitions_answers_refused_topics_from_the_cursor_on():
    body = request("DescribeTopicPartitions", 0, {"topics": [{"name": "a-denied"}, {"name": "orders"},
                                                             {"name": "z-denied"}],
                                                  "cursor": {"topic_name": "orders", "partition_index": 3}})
    p = plan(API["DescribeTopicPartitions"], 0, body, denying("a-denied", "z-denied"), names())
    assert [t["name"] for t in p.forward["topics"]] == ["orders"]
    broker = {"topics": [{"name": "orders", "error_code": 0, "topic_id": IDS["orders"], "partitions": [],
                          "topic_authorized_operations": 0x1FF}], "next_cursor": None}
    p.merge(broker)
    assert [(t["name"], t["error_code"]) for t in broker["topics"]] == [("orders", 0), ("z-denied", 29)]
    assert broker["topics"][0]["topic_authorized_operations"] == -2147483648
    every = request("DescribeTopicPartitions", 0, {"topics": [{"name": "payments"}]})
    alone = plan(API["DescribeTopicPartitions"], 0, every, denying("payments"), names())
    assert alone.forward is None  # forwarding an empty list would ask for every topic


def test_offset_fetch_for_all_topics_hides_topics():
    body = request("OffsetFetch", 7, {"group_id": "billing", "topics": None})
    p = plan(API["OffsetFetch"], 7, body, denying("payments"), names())
    assert not p.changed
    broker = {"error_code": 0, "topics": [{"name": t, "partitions": []} for t in TOPICS]}
    p.merge(broker)
    assert [t["name"] for t in broker["topics"]] == ["orders"]
    batched = request("OffsetFetch", 10, {"groups": [{"group_id": "billing", "topics": None}]})
    p = plan(API["OffsetFetch"], 10, batched, denying("payments"), names())
    broker = {"groups": [{"group_id": "billing", "error_code": 0, "topics": [
        {"topic_id": IDS[t], "partitions": []} for t in ("orders", "payments", "ghost")]}]}
    p.merge(broker)
    assert [t["topic_id"] for t in broker["groups"][0]["topics"]] == [IDS["orders"]]


def test_configs_are_decided_by_resource_type():
    body = sample(API["DescribeConfigs"], 4)  # topics orders and payments, group analytics, broker 1
    p = plan(API["DescribeConfigs"], 4, body, denying("payments", "analytics", "kafka-cluster"), names())
    assert [(a, r) for a, r, _ in p.denied] == [
        ("describe_configs", Resource("topic", "payments")), ("describe_configs", Resource("group", "analytics")),
        ("describe_configs", CLUSTER)]
    assert [r["resource_name"] for r in p.forward["resources"]] == ["orders"]
    broker = {"results": []}
    p.merge(broker)
    assert [(r["resource_name"], r["error_code"]) for r in broker["results"]] == [
        ("payments", 29), ("analytics", 30), ("1", 31)]


def test_share_fetch_refuses_the_acknowledgements_of_a_refused_topic():
    body = request("ShareFetch", 2, {"group_id": "billing", "member_id": "m", "share_session_epoch": 4, "topics": [
        {"topic_id": IDS[t], "partitions": [{"partition_index": 0, "acknowledgement_batches": [
            {"first_offset": 0, "last_offset": 3, "acknowledge_types": [1]}]}]} for t in ("orders", "payments")]})
    p = plan(API["ShareFetch"], 2, body, denying("payments"), names())
    assert [t["topic_id"] for t in p.forward["topics"]] == [IDS["orders"]]
    broker = {"responses": []}
    p.merge(broker)
    (refused,) = broker["responses"][0]["partitions"]
    assert (refused["error_code"], refused["acknowledge_error_code"]) == (29, 29)
    assert refused["current_leader"] == {"leader_id": -1, "leader_epoch": -1}
    everything = plan(API["ShareFetch"], 2, body, denying("payments", "orders"), names())
    assert everything.forward["topics"] == []  # the share session still sees the request


UNSUPPORTED = [(key, version) for key, spec in sorted(codec.API_KEYS.items())
               if key not in authorize.SUPPORTED and key not in (API["ApiVersions"], API["SaslHandshake"],
                                                                 API["SaslAuthenticate"])
               for version in range(spec.min_version, spec.max_version + 1)]


@pytest.mark.parametrize("case", UNSUPPORTED, ids=case_id)
def test_unsupported_apis_are_refused_on_the_cluster(case):
    key, version = case
    body = sample(key, version)
    p = plan(key, version, body, allow_all, names())
    assert p.forward is None and p.merge is None
    ((action, resource, decision),) = p.denied
    assert resource == CLUSTER and decision.rule == "unsupported-api" and decision.verdict is Verdict.DENY
    answer = round_trip_response(key, version, p.response)
    codes = [code for _, code in errors_in(answer)]
    assert codes and set(codes) == {31}, answer


def test_telemetry_and_broker_apis_are_not_supported():
    for name in ("GetTelemetrySubscriptions", "PushTelemetry", "WriteTxnMarkers", "Vote", "BrokerHeartbeat",
                 "ApiVersions", "SaslHandshake", "SaslAuthenticate"):
        assert API[name] not in authorize.SUPPORTED
    unknown = plan(999, 0, {}, allow_all, names())  # no schema: nothing to answer with
    assert (unknown.forward, unknown.response, unknown.denied[0][2].rule) == (None, None, "unsupported-api")


def test_topic_names_are_learned_from_responses():
    known = TopicNames()
    known.learn(API["Metadata"], {"topics": [
        {"name": "orders", "topic_id": IDS["orders"], "error_code": 0},
        {"name": "payments", "topic_id": IDS["payments"], "error_code": 29},
        {"name": "zero", "topic_id": bytes(16), "error_code": 0}]})
    known.learn(API["CreateTopics"], {"topics": [{"name": "new", "topic_id": IDS["ghost"], "error_code": 0}]})
    known.learn(API["Produce"], {"topics": [{"name": "x", "topic_id": IDS["payments"], "error_code": 0}]})
    assert known.name(IDS["orders"]) == "orders" and known.name(IDS["ghost"]) == "new"
    assert known.name(IDS["payments"]) is None and len(known) == 2


def test_topic_ids_lists_the_ids_a_request_is_decided_by():
    body = fetch_body(15, "orders", "payments")
    body["forgotten_topics_data"] = [{"topic_id": IDS["ghost"], "partitions": [0]}]
    assert topic_ids(API["Fetch"], 15, body) == {IDS["orders"], IDS["payments"]}
    deletion = request("DeleteTopics", 6, {"topics": [{"name": "orders"}, {"name": None, "topic_id": IDS["ghost"]}],
                                           "timeout_ms": 1})
    assert topic_ids(API["DeleteTopics"], 6, deletion) == {IDS["ghost"]}
    assert topic_ids(API["Fetch"], 12, fetch_body(12, "orders")) == set()


# --- the forwarded and the refused part partition the request --------------------------------------

POOL = ["orders", "payments", "audit", "clicks", "ghost"]
POOL_IDS = {name: bytes([i + 1] * 16) for i, name in enumerate(POOL)}


def pool_names() -> TopicNames:
    known = TopicNames()
    known.learn(API["Metadata"], {"topics": [{"name": n, "topic_id": i, "error_code": 0} for n, i in POOL_IDS.items()]})
    return known


def _topics_by(key: str, version_uses_ids: bool, entries: list) -> list:
    return [{key: POOL_IDS[name] if version_uses_ids else name, **rest} for name, rest in entries]


def _parts(name_of, entries, partitions_key, index_key) -> list[tuple[str, int]]:
    return [(name_of(t), p[index_key] if isinstance(p, dict) else p) for t in entries for p in t[partitions_key]]


REQUESTS = {
    # api: (versions, topics key, request topic name key, partitions key, partition index key,
    #       response array, response name key, response partitions key, response index key)
    "Produce": (range(3, 14), "topic_data", "name", "partition_data", "index",
                "responses", "name", "partition_responses", "index"),
    "Fetch": (range(4, 19), "topics", "topic", "partitions", "partition",
              "responses", "topic", "partitions", "partition_index"),
    "ListOffsets": (range(1, 12), "topics", "name", "partitions", "partition_index",
                    "topics", "name", "partitions", "partition_index"),
}


@random_inputs(150)
@given(api=st.sampled_from([*REQUESTS, "DeleteTopics"]), data=st.data())
def test_forwarded_and_refused_parts_partition_the_request(api, data):
    refused = data.draw(st.sets(st.sampled_from(POOL)), label="refused")
    chosen = data.draw(st.lists(st.tuples(st.sampled_from(POOL), st.lists(st.integers(0, 5), max_size=3)),
                                min_size=1, max_size=6), label="topics")
    decide = denying(*refused)
    key = API[api]
    if api == "DeleteTopics":
        version = data.draw(st.integers(1, 6), label="version")
        if version >= 6:
            by_id = data.draw(st.lists(st.booleans(), min_size=len(chosen), max_size=len(chosen)))
            body = request(api, version, {"timeout_ms": 1, "topics": [
                {"name": None, "topic_id": POOL_IDS[n]} if i else {"name": n} for (n, _), i in zip(chosen, by_id)]})
        else:
            body = request(api, version, {"timeout_ms": 1, "topic_names": [n for n, _ in chosen]})
        asked = sorted(n for n, _ in chosen)
        p = plan(key, version, body, decide, pool_names())
        kept = (p.forward or {}).get("topics", (p.forward or {}).get("topic_names", []))
        forwarded = [t if isinstance(t, str) else pool_names().name(t["topic_id"]) if t["name"] is None else t["name"]
                     for t in kept]
        answer = p.response if p.forward is None else {"responses": []}
        if p.merge:
            p.merge(answer)
        by_id_name = {v: k for k, v in POOL_IDS.items()}
        answered = [e["name"] or by_id_name[e["topic_id"]] for e in answer["responses"] if e["error_code"]]
        assert sorted(forwarded + answered) == asked
        assert not set(forwarded) & refused and set(answered) <= refused
        return
    versions, topics_key, name_key, parts_key, index_key, resp_key, resp_name, resp_parts, resp_index = REQUESTS[api]
    version = data.draw(st.sampled_from(list(versions)), label="version")
    uses_ids = api in ("Produce", "Fetch") and version >= 13
    name_field = "topic_id" if uses_ids else name_key
    template = sample(key, version)
    part_template = template[topics_key][0][parts_key][0]
    topics = [{**{k: v for k, v in template[topics_key][0].items() if k not in (name_key, "topic_id", parts_key)},
               name_field: POOL_IDS[n] if uses_ids else n,
               parts_key: [{**part_template, index_key: i} for i in parts]} for n, parts in chosen]
    body = request(api, version, {**template, topics_key: topics})
    p = plan(key, version, body, decide, pool_names())
    by_id_name = {v: k for k, v in POOL_IDS.items()}

    def name_of(entry: dict, field: str) -> str:
        return by_id_name[entry["topic_id"]] if uses_ids else entry[field]

    asked = sorted(_parts(lambda t: name_of(t, name_key), body[topics_key], parts_key, index_key))
    forwarded = _parts(lambda t: name_of(t, name_key), p.forward[topics_key], parts_key, index_key) if p.forward else []
    answer = p.response if p.forward is None else {resp_key: []}
    if p.merge:
        p.merge(answer)
    answered = [(name_of(t, resp_name), x[resp_index]) for t in answer[resp_key] for x in t[resp_parts]
                if x["error_code"]]
    assert sorted(forwarded + answered) == asked
    assert not {n for n, _ in forwarded} & refused and {n for n, _ in answered} <= refused
    assert {x["error_code"] for t in answer[resp_key] for x in t[resp_parts]} <= {0, 29}
