"""What each Kafka request names, and how it is split when some of it is refused.

One handler per API: it asks for every (action, resource) the request names, in the order Kafka's
own authorizer asks (KafkaApis), refuses the whole request when a request-level resource (the
group of an OffsetCommit, the transactional id of a Produce, the cluster) is refused, and
otherwise keeps the allowed entries and answers the refused ones itself. docs/kafka-actions.md
is the same table for people.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any, NamedTuple

from brokerguard.operations import CLUSTER, Resource

from . import answers
from .answers import Mirror
from .split import (
    CLUSTER_AUTHORIZATION_FAILED,
    DELEGATION_TOKEN_AUTHORIZATION_FAILED,
    GROUP_AUTHORIZATION_FAILED,
    OPERATION_NOT_ATTEMPTED,
    TOPIC_AUTHORIZATION_FAILED,
    TRANSACTIONAL_ID_AUTHORIZATION_FAILED,
    ZERO_UUID,
    Call,
    Merge,
    Plan,
    Refusal,
    hide_authorized_operations,
)

TOPIC, GROUP, CLUSTER_ERR, TXN = (TOPIC_AUTHORIZATION_FAILED, GROUP_AUTHORIZATION_FAILED,
                                  CLUSTER_AUTHORIZATION_FAILED, TRANSACTIONAL_ID_AUTHORIZATION_FAILED)
UNKNOWN_TOPIC_OR_PARTITION = 3


class ApiRule(NamedTuple):
    """How one API is authorized.

    mirrors: how each response array answers a request array, for refused entries.
    top: top-level values of a whole refusal that differ from the spec defaults.
    merges_always: its responses are adjusted (filtered, hidden) even when all is allowed.
    """

    name: str
    handler: Callable[[Call], Plan]
    mirrors: tuple[tuple[str, Mirror], ...] = ()
    top: tuple[tuple[str, Any], ...] = ()
    merges_always: bool = False


def group(name: str | None) -> Resource:
    return Resource("group", name or "")


def transactional_id(name: str) -> Resource:
    return Resource("transactional_id", name)


def topic(name: str) -> Resource:
    return Resource("topic", name)


# -- shapes shared by several handlers --------------------------------------------------------


def _per_entry(c: Call, request_key: str, response_key: str, check: Callable[[Any], Refusal | None],
               *, always_forward: bool = False, merges: Iterable[Merge | None] = (),
               after: Callable[[list], Iterable[Merge | None]] | None = None) -> Plan:
    """The common shape: entries of one request array are decided one by one; the refused ones
    are answered in the mirrored response array. With nothing left, nothing is forwarded unless
    `always_forward` (a fetch session must see every request to keep its epoch)."""
    kept, refused = c.split(c.body.get(request_key), check)
    merges = [*merges, *(after(kept) if after else ())]
    if not refused:
        return c.finish(merges=merges)
    added = c.answers(response_key, refused)
    if not kept and not always_forward:
        return c.alone({response_key: added})
    return c.finish({request_key: kept}, {response_key: added}, merges)


def _keep(response_key: str, visible: Callable[[dict], bool]) -> Merge:
    """Drops the entries of a listing the identity may not see."""
    def keep(response: dict) -> None:
        listed = response.get(response_key)
        if listed:
            response[response_key] = [entry for entry in listed if visible(entry)]
    return keep


def _visible_topic(c: Call, name_key: str = "name") -> Callable[[dict], bool]:
    def visible(entry: dict) -> bool:
        name = c.topic_name(entry, name_key)
        return name is not None and c.allows("describe", topic(name))
    return visible


def _single_group(c: Call, action: str) -> Refusal | None:
    return c.refusal(action, group(c.body.get("group_id")), GROUP)


def _single_transaction(c: Call) -> Refusal | None:
    return c.refusal("transaction", transactional_id(c.body.get("transactional_id") or ""), TXN)


def _whole(*checks: Callable[[Call], Refusal | None]) -> Callable[[Call], Plan]:
    """A handler for requests that are allowed or refused as a whole, checked in order."""
    def handler(c: Call) -> Plan:
        for check in checks:
            if why := check(c):
                return c.refuse_all(why)
        return c.finish()
    return handler


def _cluster(action: str, error: int = CLUSTER_ERR) -> Callable[[Call], Plan]:
    return _whole(lambda c: c.refusal(action, CLUSTER, error))


def _group_whole(action: str) -> Callable[[Call], Plan]:
    return _whole(lambda c: _single_group(c, action))


def _topics_described(names: Callable[[dict], Iterable[str]]) -> Callable[[Call], Refusal | None]:
    """A request-level check: every topic the request names may be described (Kafka refuses a
    group heartbeat subscribing to a topic the member may not describe)."""
    def check(c: Call) -> Refusal | None:
        for name in names(c.body):
            if why := c.refusal("describe", topic(name), TOPIC):
                return why
        return None
    return check


# -- Produce, Fetch and the other per-topic data-path requests --------------------------------


def _produce(c: Call) -> Plan:
    txn = c.body.get("transactional_id")
    if txn is not None and (why := c.refusal("transaction", transactional_id(txn), TXN)):
        return c.refuse_all(why)
    return _per_entry(c, "topic_data", "responses", lambda t: c.topic(t, "produce"))


def _replica_id(c: Call) -> int:
    if "replica_state" in c.body:
        return (c.body["replica_state"] or {}).get("replica_id", -1)
    return c.body.get("replica_id", -1)


def _fetch(c: Call) -> Plan:
    if _replica_id(c) >= 0:  # a follower broker replicating: the cluster's business
        return _cluster("cluster_action")(c)
    in_session = c.body.get("session_id", 0) != 0
    return _per_entry(c, "topics", "responses", lambda t: c.topic(t, "consume", "topic"),
                      always_forward=in_session)


def _per_topic(action: str, request_key: str = "topics", response_key: str = "topics",
               name_key: str = "name") -> Callable[[Call], Plan]:
    def handler(c: Call) -> Plan:
        return _per_entry(c, request_key, response_key, lambda t: c.topic(t, action, name_key))
    return handler


# -- Metadata and DescribeTopicPartitions --------------------------------------------------------


def _metadata(c: Call) -> Plan:
    body, version = c.body, c.version
    topics = body.get("topics")
    if topics is None or (version == 0 and not topics):
        return c.finish(merges=[_keep("topics", _visible_topic(c)), hide_authorized_operations])
    fields = answers.field(answers.response_fields(c.api_key), "topics").fields
    # v0-3 cannot turn auto-creation off, so there a named topic must also be creatable
    auto_create = body.get("allow_auto_topic_creation", True)
    kept, added, not_creatable = [], [], set()
    no_name = None if version >= 12 else ""  # Kafka refuses by-id requests before v12 anyway
    for entry in topics:
        name, topic_id = entry.get("name"), entry.get("topic_id") or ZERO_UUID
        if name is None:
            name = c.names.name(topic_id) if topic_id != ZERO_UUID else None
            if name is None:
                why = c.unknown_topic_id(topic_id, "describe")
                added.append(answers.build(fields, version, {"name": no_name, "topic_id": topic_id}, why.error))
                continue
            shown = {"name": no_name, "topic_id": topic_id}  # asked by id: the name stays hidden
        else:
            shown = {"name": name, "topic_id": ZERO_UUID}
        why = c.refusal("describe", topic(name), TOPIC)
        if why is None and auto_create and version < 4:  # (no topic ids before v10)
            why = c.refusal("create", topic(name), TOPIC)
        if why is not None:
            added.append(answers.build(fields, version, shown, why.error))
            continue
        if auto_create and entry.get("name") is not None and not c.allows("create", topic(name)):
            not_creatable.add(name)
        kept.append(entry)
    changes: dict[str, Any] = {}
    if added:
        changes["topics"] = kept
    if not_creatable:
        changes["allow_auto_topic_creation"] = False
    merges = [_not_created(not_creatable) if not_creatable else None, hide_authorized_operations]
    if version == 0 and added and not kept:  # v0 reads an empty list as every topic: drop them all
        merges.insert(0, _keep("topics", lambda entry: False))
    return c.finish(changes, {"topics": added}, merges)


def _not_created(names: set[str]) -> Merge:
    """Topics the client wanted auto-created but may not create: Kafka says not authorized."""
    def merge(response: dict) -> None:
        for entry in response.get("topics") or ():
            if entry.get("error_code") == UNKNOWN_TOPIC_OR_PARTITION and entry.get("name") in names:
                entry["error_code"] = TOPIC
    return merge


def _describe_topic_partitions(c: Call) -> Plan:
    if not c.body.get("topics"):  # every topic, paged
        return c.finish(merges=[_keep("topics", _visible_topic(c)), hide_authorized_operations])
    kept, refused = c.split(c.body["topics"], lambda t: c.topic(t, "describe"))
    if not refused:
        return c.finish(merges=[hide_authorized_operations])
    # Kafka answers refused topics on every page from the cursor on, as it lists topics by name
    cursor = c.body.get("cursor")
    start = cursor["topic_name"] if cursor else ""
    added = c.answers("topics", [(t, why) for t, why in refused if t["name"] >= start])
    if not kept:  # an empty list would ask for every topic
        return c.alone({"topics": added})
    return c.finish({"topics": kept}, {"topics": added}, [hide_authorized_operations])


# -- offsets and groups ---------------------------------------------------------------------------


def _group_then_topics(group_action: str, topic_action: str, response_key: str = "topics",
                       name_key: str = "name", txn: bool = False) -> Callable[[Call], Plan]:
    """A request for one group (and transaction) about topics: refused as a whole when the group
    is, else per topic."""
    def handler(c: Call) -> Plan:
        if txn and (why := _single_transaction(c)):
            return c.refuse_all(why)
        if why := _single_group(c, group_action):
            return c.refuse_all(why)
        return _per_entry(c, "topics", response_key, lambda t: c.topic(t, topic_action, name_key))
    return handler


def _offset_fetch(c: Call) -> Plan:
    if c.version >= 8:
        return _groups_of_topics(c, "name", OFFSET_FETCH_GROUP_TOPICS)
    if why := _single_group(c, "describe"):
        return c.refuse_all(why)
    if c.body.get("topics") is None:
        return c.finish(merges=[_keep("topics", _visible_topic(c))])
    return _per_entry(c, "topics", "topics", lambda t: c.topic(t, "describe"))


def _groups_of_topics(c: Call, name_key: str, topic_mirror: Mirror) -> Plan:
    """Batched offset reads (OffsetFetch v8+, DescribeShareGroupOffsets): per group, then per
    topic inside each allowed group; a group asking for all its topics sees only visible ones."""
    kept_groups, refused_groups = [], []
    refused_topics: dict[str, list[dict]] = {}
    everything: set[str] = set()
    for entry in c.body.get("groups") or ():
        group_id = entry["group_id"]
        if why := c.refusal("describe", group(group_id), GROUP):
            refused_groups.append((entry, why))
            continue
        topics = entry.get("topics")
        if topics is None:
            everything.add(group_id)
            kept_groups.append(entry)
            continue
        kept, refused = c.split(topics, lambda t: c.topic(t, "describe", name_key))
        if refused:
            refused_topics.setdefault(group_id, []).extend(c.answers(("groups", "topics"), refused, topic_mirror))
            entry = {**entry, "topics": kept}
        kept_groups.append(entry)
    group_answers = c.answers("groups", refused_groups, Mirror("groups", (("group_id", "group_id"),)))
    if not kept_groups:
        return c.alone({"groups": group_answers})
    visible = _visible_topic(c, name_key)

    def merge(response: dict) -> None:
        for entry in response.get("groups") or ():
            group_id = entry.get("group_id")
            if group_id in everything and entry.get("topics"):
                entry["topics"] = [t for t in entry["topics"] if visible(t)]
            if group_id in refused_topics:
                entry["topics"] = [*(entry.get("topics") or ()), *refused_topics[group_id]]

    changed = bool(refused_groups or refused_topics)
    return c.finish({"groups": kept_groups} if changed else None, {"groups": group_answers},
                    [merge] if refused_topics or everything else [])


def _coordinator_check(c: Call, key: str) -> Refusal | None:
    key_type = c.body.get("key_type", 0)
    if key_type == 0:
        return c.refusal("describe", group(key), GROUP)
    if key_type == 1:
        return c.refusal("describe", transactional_id(key), TXN)
    # 2: the share-group state coordinator, which only brokers look up; others: unknown types
    return c.refusal("cluster_action" if key_type == 2 else "describe", CLUSTER, CLUSTER_ERR)


def _find_coordinator(c: Call) -> Plan:
    if c.version < 4:
        return _whole(lambda c: _coordinator_check(c, c.body.get("key", "")))(c)
    return _per_entry(c, "coordinator_keys", "coordinators", lambda key: _coordinator_check(c, key))


def _describe_groups(topic_names: Callable[[dict], Iterable[str]] | None = None,
                     request_key: str = "group_ids") -> Callable[[Call], Plan]:
    """Per group; with `topic_names`, a described group whose topics the identity may not all
    describe is answered with TOPIC_AUTHORIZATION_FAILED instead (Kafka, KAFKA-18813)."""
    def handler(c: Call) -> Plan:
        merges: list[Merge] = []
        if topic_names is not None:
            merges.append(_groups_hiding_topics(c, topic_names))
        if c.body.get("include_authorized_operations"):
            merges.append(hide_authorized_operations)
        return _per_entry(c, request_key, "groups", lambda g: c.refusal("describe", group(g), GROUP),
                          merges=merges)
    return handler


def _groups_hiding_topics(c: Call, topic_names: Callable[[dict], Iterable[str]]) -> Merge:
    fields = answers.field(answers.response_fields(c.api_key), "groups").fields

    def merge(response: dict) -> None:
        groups = response.get("groups") or []
        for i, entry in enumerate(groups):
            if entry.get("error_code"):
                continue
            if not all(c.allows("describe", topic(name)) for name in topic_names(entry)):
                message = f"brokerguard: group {entry.get('group_id')} uses topics you may not describe"
                groups[i] = answers.build(fields, c.version, {"group_id": entry.get("group_id")}, TOPIC, message)
    return merge


def _member_topics(group_entry: dict) -> Iterator[str]:
    for member in group_entry.get("members") or ():
        for key in ("assignment", "target_assignment"):
            for tp in (member.get(key) or {}).get("topic_partitions") or ():
                if tp.get("topic_name"):
                    yield tp["topic_name"]


def _topology_topics(topology: dict | None) -> Iterator[str]:
    for sub in (topology or {}).get("subtopologies") or ():
        yield from sub.get("source_topics") or ()
        yield from sub.get("repartition_sink_topics") or ()
        for key in ("state_changelog_topics", "repartition_source_topics"):
            for info in sub.get(key) or ():
                yield info["name"]


def _list_groups(c: Call) -> Plan:
    return c.finish(merges=[_keep("groups", lambda g: c.allows("describe", group(g.get("group_id"))))])


def _share_data(c: Call) -> Plan:
    """ShareFetch and ShareAcknowledge: the group, then each topic by id. The request is always
    forwarded while the group is allowed: it carries the share session's epoch."""
    if why := _single_group(c, "consume"):
        return c.refuse_all(why)
    kept, refused = c.split(c.body.get("topics"), lambda t: c.topic(t, "consume"))
    if not refused:
        return c.finish()
    added = c.answers("responses", refused)
    for entry, (asked, why) in zip(added, refused):  # acknowledgements piggybacked on a ShareFetch
        for answer, partition in zip(entry["partitions"], asked.get("partitions") or ()):
            if partition.get("acknowledgement_batches") and "acknowledge_error_code" in answer:
                answer["acknowledge_error_code"] = why.error
    return c.finish({"topics": kept}, {"responses": added})


# -- topics: create, delete, alter ----------------------------------------------------------------


def _create_topics(c: Call) -> Plan:
    def after(kept: list) -> list[Merge]:
        if c.version < 5:
            return []
        hidden = {t["name"] for t in kept if not c.allows("describe_configs", topic(t["name"]))}
        return [_topic_configs_hidden(hidden)] if hidden else []
    return _per_entry(c, "topics", "topics", lambda t: c.refusal("create", topic(t["name"]), TOPIC),
                      after=after)


def _topic_configs_hidden(names: set[str]) -> Merge:
    """A created topic's configs are shown only to who may describe them (as Kafka does)."""
    def merge(response: dict) -> None:
        for entry in response.get("topics") or ():
            if entry.get("name") in names and not entry.get("error_code"):
                entry.update(configs=[], num_partitions=-1, replication_factor=-1, topic_config_error_code=TOPIC)
    return merge


def _delete_topics(c: Call) -> Plan:
    if "topics" not in c.body:
        return _per_entry(c, "topic_names", "responses", lambda name: c.refusal("delete", topic(name), TOPIC))
    kept, refused = c.split(c.body["topics"], lambda t: c.topic(t, "delete"))
    if not refused:
        return c.finish()
    added = c.answers("responses", refused)
    for entry, (request, why) in zip(added, refused):
        if request.get("name") is None:  # asked by id: the name only for who may describe it
            name = c.topic_name(request)
            entry["name"] = name if why.error == TOPIC and name and c.allows("describe", topic(name)) else None
    if not kept:
        return c.alone({"responses": added})
    return c.finish({"topics": kept}, {"responses": added})


def _configs(action: str, response_key: str) -> Callable[[Call], Plan]:
    """DescribeConfigs, AlterConfigs, IncrementalAlterConfigs: per resource, by its type."""
    def check(c: Call, resource: dict) -> Refusal | None:
        kind, name = resource.get("resource_type"), resource.get("resource_name", "")
        if kind == 2:
            return c.refusal(action, topic(name), TOPIC)
        if kind == 32:
            return c.refusal(action, group(name), GROUP)
        return c.refusal(action, CLUSTER, CLUSTER_ERR)  # brokers (4), broker loggers (8), client metrics (16)

    def handler(c: Call) -> Plan:
        return _per_entry(c, "resources", response_key, lambda r: check(c, r))
    return handler


# -- transactions ---------------------------------------------------------------------------------


def _init_producer_id(c: Call) -> Plan:
    txn = c.body.get("transactional_id")
    if txn is not None:
        why = c.refusal("transaction", transactional_id(txn), TXN)
    else:
        why = c.refusal("idempotent_write", CLUSTER, CLUSTER_ERR)
    return c.refuse_all(why) if why else c.finish()


def _add_partitions_to_txn(c: Call) -> Plan:
    if c.version >= 4:  # batched, sent by brokers verifying transactions
        return _cluster("cluster_action")(c)
    if why := c.refusal("transaction", transactional_id(c.body.get("v3_and_below_transactional_id", "")), TXN):
        return c.refuse_all(why)
    topics = c.body.get("v3_and_below_topics") or []
    verdicts = [(t, c.refusal("produce", topic(t["name"]), TOPIC)) for t in topics]
    if not any(why for _, why in verdicts):
        return c.finish()
    # a transaction takes all its partitions or none: the allowed ones are "not attempted"
    skipped = Refusal(OPERATION_NOT_ATTEMPTED, "")
    results = c.answers("results_by_topic_v3_and_below", [(t, why or skipped) for t, why in verdicts])
    return c.alone({"results_by_topic_v3_and_below": results})


def _describe_transactions(c: Call) -> Plan:
    visible = _visible_topic(c, "topic")

    def topics_hidden(response: dict) -> None:  # a transaction lists only topics one may describe
        for state in response.get("transaction_states") or ():
            if state.get("topics"):
                state["topics"] = [t for t in state["topics"] if visible(t)]
    return _per_entry(c, "transactional_ids", "transaction_states",
                      lambda txn: c.refusal("describe", transactional_id(txn), TXN), merges=[topics_hidden])


def _list_transactions(c: Call) -> Plan:
    return c.finish(merges=[_keep("transaction_states",
                                  lambda s: c.allows("describe", transactional_id(s.get("transactional_id"))))])


# -- cluster administration whose answers have no simple mirror --------------------------------


def _alter_replica_log_dirs(c: Call) -> Plan:
    if not (why := c.refusal("alter", CLUSTER, CLUSTER_ERR)):
        return c.finish()
    how = Mirror("", (("topic_name", "name"),), (("partitions", Mirror("partitions", (("partition_index", ""),))),))
    refused = [(t, why) for d in c.body.get("dirs") or () for t in d.get("topics") or ()]
    return c.alone({"results": c.answers("results", refused, how)})


def _alter_user_scram_credentials(c: Call) -> Plan:
    if not (why := c.refusal("alter_credentials", CLUSTER, CLUSTER_ERR)):
        return c.finish()
    users = dict.fromkeys(e["name"] for key in ("deletions", "upsertions") for e in c.body.get(key) or ())
    results = c.answers("results", [(user, why) for user in users], Mirror("", (("user", ""),)))
    return c.alone({"results": results})


def _describe_cluster(c: Call) -> Plan:
    if why := c.refusal("describe", CLUSTER, CLUSTER_ERR):
        return c.refuse_all(why)
    return c.finish(merges=[hide_authorized_operations] if c.body.get("include_cluster_authorized_operations")
                    else [])


# -- the mirrors: how refused request entries become response entries -------------------------


def _m(request: str, *copy: str, children: tuple[tuple[str, Mirror], ...] = (),
       fill: dict[str, Any] | None = None) -> Mirror:
    """A Mirror whose copied keys are "response=request", or one key for both."""
    pairs = tuple(tuple(k.split("=")) if "=" in k else (k, k) for k in copy)
    return Mirror(request, pairs, children, tuple((fill or {}).items()))  # type: ignore[arg-type]


def _partitions(request: str = "partitions", key: str = "partition_index", response: str = "partitions",
                fill: dict[str, Any] | None = None) -> tuple[tuple[str, Mirror], ...]:
    """Partitions answered one by one; `key` "a=b" copies request key b, "a=" a plain number."""
    return ((response, _m(request, key, fill=fill)),)


TOPIC_IDS = ("name", "topic_id")
NO_LEADER = {"leader_id": -1, "leader_epoch": -1}
OFFSET_FETCH_PARTITIONS = _partitions("partition_indexes", "partition_index=", fill={"committed_offset": -1})
OFFSET_FETCH_GROUP_TOPICS = _m("topics", *TOPIC_IDS, children=OFFSET_FETCH_PARTITIONS)
SHARE_OFFSETS_GROUP_TOPICS = _m("topics", "topic_name", children=_partitions(
    "partitions", "partition_index=", fill={"start_offset": -1, "leader_epoch": -1}))
PER_TOPIC_PARTITIONS = (("topics", _m("topics", *TOPIC_IDS, children=_partitions())),)


def _rule(name: str, handler: Callable[[Call], Plan], *mirrors: tuple[str, Mirror],
          top: dict[str, Any] | None = None, merges_always: bool = False) -> ApiRule:
    return ApiRule(name, handler, tuple(mirrors), tuple((top or {}).items()), merges_always)


RULES: tuple[ApiRule, ...] = (
    _rule("Produce", _produce, ("responses", _m("topic_data", *TOPIC_IDS, children=_partitions(
        "partition_data", "index", "partition_responses", fill={"base_offset": -1})))),
    _rule("Fetch", _fetch, ("responses", _m("topics", "topic", "topic_id", children=_partitions(
        "partitions", "partition_index=partition", fill={
            "high_watermark": -1, "last_stable_offset": -1, "log_start_offset": -1,
            "aborted_transactions": None, "preferred_read_replica": -1, "records": b""})))),
    _rule("ListOffsets", _per_topic("describe"), *PER_TOPIC_PARTITIONS),
    _rule("Metadata", _metadata, merges_always=True),
    _rule("OffsetCommit", _group_then_topics("consume", "consume"), *PER_TOPIC_PARTITIONS),
    _rule("OffsetFetch", _offset_fetch, ("topics", _m("topics", "name", children=OFFSET_FETCH_PARTITIONS)),
          ("groups", _m("groups", "group_id", children=(("topics", OFFSET_FETCH_GROUP_TOPICS),)))),
    _rule("FindCoordinator", _find_coordinator,
          ("coordinators", _m("coordinator_keys", "key=", fill={"node_id": -1, "port": -1})),
          top={"node_id": -1, "port": -1}),
    _rule("JoinGroup", _group_whole("consume")),
    _rule("Heartbeat", _group_whole("consume")),
    _rule("LeaveGroup", _group_whole("consume")),
    _rule("SyncGroup", _group_whole("consume")),
    _rule("DescribeGroups", _describe_groups(request_key="groups"), ("groups", _m("groups", "group_id="))),
    _rule("ListGroups", _list_groups, merges_always=True),
    _rule("CreateTopics", _create_topics, ("topics", _m("topics", "name"))),
    _rule("DeleteTopics", _delete_topics, ("responses", _m("topic_names", "name=")),
          ("responses", _m("topics", *TOPIC_IDS))),
    _rule("DeleteRecords", _per_topic("delete_records"), ("topics", _m("topics", "name", children=_partitions(
        fill={"low_watermark": -1})))),
    _rule("InitProducerId", _init_producer_id, top={"producer_epoch": -1}),
    _rule("OffsetForLeaderEpoch", _per_topic("describe", name_key="topic"),
          ("topics", _m("topics", "topic", children=_partitions(key="partition")))),
    _rule("AddPartitionsToTxn", _add_partitions_to_txn,
          ("results_by_topic_v3_and_below", _m("v3_and_below_topics", "name", children=_partitions(
              key="partition_index=", response="results_by_partition"))),
          ("results_by_transaction", _m("transactions", "transactional_id", children=(
              ("topic_results", _m("topics", "name", children=_partitions(
                  key="partition_index=", response="results_by_partition"))),)))),
    _rule("AddOffsetsToTxn", _whole(_single_transaction, lambda c: _single_group(c, "consume"))),
    _rule("EndTxn", _whole(_single_transaction)),
    _rule("TxnOffsetCommit", _group_then_topics("consume", "consume", txn=True), *PER_TOPIC_PARTITIONS),
    _rule("DescribeAcls", _cluster("describe_acls")),
    _rule("CreateAcls", _cluster("alter_acls"), ("results", _m("creations"))),
    _rule("DeleteAcls", _cluster("alter_acls"), ("filter_results", _m("filters"))),
    _rule("DescribeConfigs", _configs("describe_configs", "results"),
          ("results", _m("resources", "resource_type", "resource_name"))),
    _rule("AlterConfigs", _configs("alter_configs", "responses"),
          ("responses", _m("resources", "resource_type", "resource_name"))),
    _rule("AlterReplicaLogDirs", _alter_replica_log_dirs),
    _rule("DescribeLogDirs", _cluster("describe")),
    _rule("CreatePartitions", _per_topic("alter", response_key="results"), ("results", _m("topics", "name"))),
    _rule("CreateDelegationToken", _cluster("delegation_tokens", DELEGATION_TOKEN_AUTHORIZATION_FAILED)),
    _rule("RenewDelegationToken", _cluster("delegation_tokens", DELEGATION_TOKEN_AUTHORIZATION_FAILED)),
    _rule("ExpireDelegationToken", _cluster("delegation_tokens", DELEGATION_TOKEN_AUTHORIZATION_FAILED)),
    _rule("DescribeDelegationToken", _cluster("delegation_tokens", DELEGATION_TOKEN_AUTHORIZATION_FAILED)),
    _rule("DeleteGroups", lambda c: _per_entry(c, "groups_names", "results",
                                               lambda g: c.refusal("delete", group(g), GROUP)),
          ("results", _m("groups_names", "group_id="))),
    _rule("ElectLeaders", _cluster("alter"), ("replica_election_results", _m(
        "topic_partitions", "topic", children=_partitions(key="partition_id=", response="partition_result")))),
    _rule("IncrementalAlterConfigs", _configs("alter_configs", "responses"),
          ("responses", _m("resources", "resource_type", "resource_name"))),
    _rule("AlterPartitionReassignments", _cluster("alter"),
          ("responses", _m("topics", "name", children=_partitions()))),
    _rule("ListPartitionReassignments", _cluster("describe")),
    _rule("OffsetDelete", _group_then_topics("delete", "consume"), *PER_TOPIC_PARTITIONS),
    _rule("DescribeClientQuotas", _cluster("describe_quotas")),
    _rule("AlterClientQuotas", _cluster("alter_quotas"), ("entries", _m("entries", children=(
        ("entity", _m("entity", "entity_type", "entity_name")),)))),
    _rule("DescribeUserScramCredentials", _cluster("describe_credentials")),
    _rule("AlterUserScramCredentials", _alter_user_scram_credentials),
    _rule("DescribeQuorum", _cluster("describe"), ("topics", _m("topics", "topic_name", children=_partitions(
        fill={**NO_LEADER, "high_watermark": -1})))),
    _rule("UpdateFeatures", _cluster("alter_features"), ("results", _m("feature_updates", "feature"))),
    _rule("DescribeCluster", _describe_cluster),
    _rule("DescribeProducers", _per_topic("describe"), ("topics", _m("topics", "name", children=_partitions(
        "partition_indexes", "partition_index=")))),
    _rule("DescribeTransactions", _describe_transactions,
          ("transaction_states", _m("transactional_ids", "transactional_id=")), merges_always=True),
    _rule("ListTransactions", _list_transactions, merges_always=True),
    _rule("ConsumerGroupHeartbeat", _whole(lambda c: _single_group(c, "consume"),
                                           _topics_described(lambda b: b.get("subscribed_topic_names") or ()))),
    _rule("ConsumerGroupDescribe", _describe_groups(_member_topics), ("groups", _m("group_ids", "group_id=")),
          merges_always=True),
    _rule("ListConfigResources", _cluster("describe_configs")),
    _rule("DescribeTopicPartitions", _describe_topic_partitions, ("topics", _m("topics", "name")),
          merges_always=True),
    _rule("ShareGroupHeartbeat", _whole(lambda c: _single_group(c, "consume"),
                                        _topics_described(lambda b: b.get("subscribed_topic_names") or ()))),
    _rule("ShareGroupDescribe", _describe_groups(_member_topics), ("groups", _m("group_ids", "group_id=")),
          merges_always=True),
    _rule("ShareFetch", _share_data, ("responses", _m("topics", "topic_id", children=_partitions(
        fill={"current_leader": NO_LEADER})))),
    _rule("ShareAcknowledge", _share_data, ("responses", _m("topics", "topic_id", children=_partitions(
        fill={"current_leader": NO_LEADER})))),
    _rule("StreamsGroupHeartbeat", _whole(lambda c: _single_group(c, "consume"),
                                          _topics_described(lambda b: _topology_topics(b.get("topology"))))),
    _rule("StreamsGroupDescribe", _describe_groups(lambda g: _topology_topics(g.get("topology"))),
          ("groups", _m("group_ids", "group_id=")), merges_always=True),
    _rule("DescribeShareGroupOffsets", lambda c: _groups_of_topics(c, "topic_name", SHARE_OFFSETS_GROUP_TOPICS),
          ("groups", _m("groups", "group_id", children=(("topics", SHARE_OFFSETS_GROUP_TOPICS),)))),
    _rule("AlterShareGroupOffsets", _group_then_topics("consume", "consume", "responses", "topic_name"),
          ("responses", _m("topics", "topic_name", children=_partitions()))),
    _rule("DeleteShareGroupOffsets", _group_then_topics("delete", "consume", "responses", "topic_name"),
          ("responses", _m("topics", "topic_name"))),
    _rule("StreamsGroupTopologyDescriptionUpdate", _group_whole("consume")),
)
