"""Transactions and consumer groups through the gateway, with aiokafka, kafka-python and confluent-kafka.

These run on the coordinator APIs (InitProducerId, AddPartitionsToTxn, EndTxn, TxnOffsetCommit,
FindCoordinator, JoinGroup/SyncGroup/Heartbeat/LeaveGroup, ConsumerGroupHeartbeat, OffsetCommit,
OffsetFetch), which the gateway authorizes, relays and, for FindCoordinator, rewrites. Every client
logs in to the gateway (SASL SCRAM, as `harness.auth` configures each library).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterable

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition as AioTP
from confluent_kafka import (Consumer as CfConsumer, ConsumerGroupTopicPartitions, Producer as CfProducer,
                             TopicPartition as CfTP)
from confluent_kafka.admin import AdminClient as CfAdmin, NewTopic as CfNewTopic
from kafka import KafkaConsumer, KafkaProducer, TopicPartition as KpTP
from kafka.structs import OffsetAndMetadata as KpOffset

from harness import auth

pytestmark = pytest.mark.kafka

TIMEOUT = 30.0
CLIENTS = ("aiokafka", "kafka-python", "confluent")


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def create_topic(gateway, topic: str, partitions: int = 1) -> None:
    admin = CfAdmin({"bootstrap.servers": gateway.bootstrap, **auth("confluent")})
    admin.create_topics([CfNewTopic(topic, partitions, 1)], operation_timeout=TIMEOUT)[topic].result(TIMEOUT)


def committed_offsets(gateway, group: str) -> dict[tuple[str, int], int]:
    """The group's committed offsets, asked of the broker through the gateway by a second library."""
    admin = CfAdmin({"bootstrap.servers": gateway.bootstrap, **auth("confluent")})
    [future] = admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(group)],
                                                 request_timeout=TIMEOUT).values()
    return {(tp.topic, tp.partition): tp.offset for tp in future.result(TIMEOUT).topic_partitions}


def wait_until(condition, what: str, timeout: float = TIMEOUT, step=None):
    """Poll `condition` (calling `step` between tries, e.g. a client's poll) until it holds."""
    deadline = time.monotonic() + timeout
    while not (result := condition()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        step() if step else time.sleep(0.05)
    return result


class Loop:
    """A private event loop, so aiokafka can be driven step by step like the synchronous clients."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()

    def run(self, awaitable):
        return self.loop.run_until_complete(awaitable)

    def close(self) -> None:
        self.loop.close()


# --------------------------------------------------------------------------- per-client wrappers

class TxnProducer:
    """One transactional producer with the same five verbs for every library, logged in to the
    gateway at `bootstrap`."""

    def __init__(self, client: str, bootstrap: str, transactional_id: str, loop: Loop | None = None) -> None:
        self.client = client
        self.own_loop = loop is None
        login = auth(client)
        if client == "aiokafka":
            self.loop = loop or Loop()

            async def make():
                producer = AIOKafkaProducer(bootstrap_servers=bootstrap, transactional_id=transactional_id, **login)
                await producer.start()  # InitProducerId
                return producer
            self.producer = self.loop.run(make())
        elif client == "kafka-python":
            self.producer = KafkaProducer(bootstrap_servers=bootstrap, transactional_id=transactional_id, **login)
            self.producer.init_transactions()
        else:
            self.producer = CfProducer({"bootstrap.servers": bootstrap, "transactional.id": transactional_id, **login})
            self.producer.init_transactions(TIMEOUT)

    def begin(self) -> None:
        if self.client == "aiokafka":
            self.loop.run(self.producer.begin_transaction())
        else:
            self.producer.begin_transaction()

    def send(self, topic: str, values: list[bytes], partition: int = 0) -> None:
        """Send and wait for every acknowledgement (within the open transaction)."""
        if self.client == "aiokafka":
            for value in values:
                self.loop.run(self.producer.send_and_wait(topic, value, partition=partition))
        elif self.client == "kafka-python":
            for future in [self.producer.send(topic, value, partition=partition) for value in values]:
                future.get(TIMEOUT)
        else:
            errors = []
            for value in values:
                self.producer.produce(topic, value, partition=partition, on_delivery=lambda err, _: errors.append(err))
            assert self.producer.flush(TIMEOUT) == 0
            assert errors == [None] * len(values)

    def send_offsets(self, consumer, offsets: dict[tuple[str, int], int], group: str) -> None:
        if self.client == "aiokafka":
            self.loop.run(self.producer.send_offsets_to_transaction(
                {AioTP(t, p): o for (t, p), o in offsets.items()}, group))
        elif self.client == "kafka-python":
            self.producer.send_offsets_to_transaction(
                {KpTP(t, p): KpOffset(o, "", -1) for (t, p), o in offsets.items()}, consumer.consumer.group_metadata())
        else:
            self.producer.send_offsets_to_transaction(
                [CfTP(t, p, o) for (t, p), o in offsets.items()], consumer.consumer.consumer_group_metadata(), TIMEOUT)

    def commit(self) -> None:
        if self.client == "aiokafka":
            self.loop.run(self.producer.commit_transaction())
        elif self.client == "kafka-python":
            self.producer.commit_transaction()
        else:
            self.producer.commit_transaction(TIMEOUT)

    def abort(self) -> None:
        if self.client == "aiokafka":
            self.loop.run(self.producer.abort_transaction())
        elif self.client == "kafka-python":
            self.producer.abort_transaction()
        else:
            self.producer.abort_transaction(TIMEOUT)

    def close(self) -> None:
        if self.client == "aiokafka":
            self.loop.run(self.producer.stop())
            if self.own_loop:
                self.loop.close()
        elif self.client == "kafka-python":
            self.producer.close(TIMEOUT)
        else:
            assert self.producer.flush(TIMEOUT) == 0


class Reader:
    """A consumer of one library: assigned partitions (group=None) or a group subscription; logged
    in to the gateway at `bootstrap`."""

    def __init__(self, client: str, bootstrap: str, *, isolation: str = "read_uncommitted",
                 group: str | None = None, topic: str | None = None, assign: Iterable[tuple[str, int]] = (),
                 group_protocol: str = "classic", loop: Loop | None = None) -> None:
        self.client = client
        self.own_loop = loop is None
        common = {"enable_auto_commit": False, "auto_offset_reset": "earliest", "isolation_level": isolation,
                  **auth(client)}
        if client == "aiokafka":
            # Members of one group share a loop: aiokafka heartbeats only while its loop runs.
            self.loop = loop or Loop()

            async def make():
                consumer = AIOKafkaConsumer(*([topic] if group else []), bootstrap_servers=bootstrap,
                                            group_id=group, heartbeat_interval_ms=300, **common)
                await consumer.start()
                if assign:
                    consumer.assign([AioTP(t, p) for t, p in assign])
                return consumer
            self.consumer = self.loop.run(make())
        elif client == "kafka-python":
            self.consumer = KafkaConsumer(*([topic] if group else []), bootstrap_servers=bootstrap, group_id=group,
                                          heartbeat_interval_ms=300, **common)
            if assign:
                self.consumer.assign([KpTP(t, p) for t, p in assign])
        else:
            config = {"bootstrap.servers": bootstrap, "group.id": group or unique("assign-only"),
                      "enable.auto.commit": False, "auto.offset.reset": "earliest", "isolation.level": isolation,
                      "group.protocol": group_protocol, **auth("confluent")}
            if group_protocol == "classic":
                config["heartbeat.interval.ms"] = 300
            self.consumer = CfConsumer(config)
            if group:
                self.consumer.subscribe([topic])
            else:
                self.consumer.assign([CfTP(t, p, 0) for t, p in assign])

    def poll(self, timeout: float = 0.2) -> list[tuple[str, int, int, bytes]]:
        """(topic, partition, offset, value) of what one poll returned."""
        if self.client == "aiokafka":
            batches = self.loop.run(self.consumer.getmany(timeout_ms=int(timeout * 1000)))
            return [(r.topic, r.partition, r.offset, r.value) for batch in batches.values() for r in batch]
        if self.client == "kafka-python":
            batches = self.consumer.poll(timeout_ms=int(timeout * 1000))
            return [(r.topic, r.partition, r.offset, r.value) for batch in batches.values() for r in batch]
        out = []
        for msg in self.consumer.consume(100, timeout=timeout):
            assert msg.error() is None, msg.error()
            out.append((msg.topic(), msg.partition(), msg.offset(), msg.value()))
        return out

    def read_until(self, last: bytes) -> list[bytes]:
        """Values up to and including `last`."""
        values: list[bytes] = []
        wait_until(lambda: last in values, f"{last!r}", step=lambda: values.extend(r[3] for r in self.poll()))
        return values

    def assignment(self) -> set[tuple[str, int]]:
        return {(tp.topic, tp.partition) for tp in self.consumer.assignment()}

    def commit(self) -> None:
        if self.client == "aiokafka":
            self.loop.run(self.consumer.commit())
        elif self.client == "kafka-python":
            self.consumer.commit()
        else:
            self.consumer.commit(asynchronous=False)

    def close(self) -> None:
        if self.client == "aiokafka":
            self.loop.run(self.consumer.stop())
            if self.own_loop:
                self.loop.close()
        else:
            self.consumer.close()


# --------------------------------------------------------------------------- 5. transactions

@pytest.mark.parametrize("client", CLIENTS)
def test_commit_and_abort(gateway, client):
    topic = unique(f"txn-{client}")
    create_topic(gateway, topic)
    producer = TxnProducer(client, gateway.bootstrap, unique("tx"))
    try:
        producer.begin()
        producer.send(topic, [b"c1", b"c2"])
        producer.commit()
        producer.begin()
        producer.send(topic, [b"a1", b"a2"])
        producer.abort()
        # A committed record after the aborted ones, so read_committed must skip, not stop.
        producer.begin()
        producer.send(topic, [b"c3"])
        producer.commit()
    finally:
        producer.close()

    for isolation, expected in (("read_committed", [b"c1", b"c2", b"c3"]),
                                ("read_uncommitted", [b"c1", b"c2", b"a1", b"a2", b"c3"])):
        reader = Reader(client, gateway.bootstrap, isolation=isolation, assign=[(topic, 0)])
        try:
            assert reader.read_until(b"c3") == expected, isolation
        finally:
            reader.close()


@pytest.mark.parametrize("client", CLIENTS)
def test_consume_transform_produce(gateway, client):
    source, sink, group = unique(f"ctp-in-{client}"), unique(f"ctp-out-{client}"), unique(f"ctp-{client}")
    create_topic(gateway, source)
    create_topic(gateway, sink)
    inputs = [b"one", b"two", b"three"]
    seed = CfProducer({"bootstrap.servers": gateway.bootstrap, **auth("confluent")})
    for value in inputs:
        seed.produce(source, value, partition=0)
    assert seed.flush(TIMEOUT) == 0

    loop = Loop()
    consumer = Reader(client, gateway.bootstrap, isolation="read_committed", group=group, topic=source, loop=loop)
    producer = TxnProducer(client, gateway.bootstrap, unique("tx"), loop=loop)
    try:
        consumed: list[tuple] = []
        wait_until(lambda: len(consumed) >= len(inputs), "the input records",
                   step=lambda: consumed.extend(consumer.poll()))
        assert [r[3] for r in consumed] == inputs
        producer.begin()
        producer.send(sink, [value.upper() for _, _, _, value in consumed])
        producer.send_offsets(consumer, {(source, 0): consumed[-1][2] + 1}, group)
        producer.commit()
    finally:
        producer.close()
        consumer.close()
        loop.close()

    assert committed_offsets(gateway, group) == {(source, 0): len(inputs)}
    reader = Reader(client, gateway.bootstrap, isolation="read_committed", assign=[(sink, 0)])
    try:
        assert reader.read_until(b"THREE") == [b"ONE", b"TWO", b"THREE"]
    finally:
        reader.close()


# --------------------------------------------------------------------------- 6. a group of two

PARTITIONS = 4


def _produce(gateway, topic: str, values: list[bytes]) -> None:
    producer = CfProducer({"bootstrap.servers": gateway.bootstrap, **auth("confluent")})
    for i, value in enumerate(values):
        producer.produce(topic, value, partition=i % PARTITIONS)
    assert producer.flush(TIMEOUT) == 0


def _drain(members: list[Reader], want: int) -> list[list[tuple]]:
    """Poll every member in turn until `want` records arrived in total; what each one got."""
    got: list[list[tuple]] = [[] for _ in members]

    def step():
        for member, bucket in zip(members, got):
            bucket.extend(member.poll(0.1))
    wait_until(lambda: sum(map(len, got)) >= want, f"{want} records", step=step)
    # A little longer: anything delivered twice would show up now.
    for _ in range(3):
        step()
    return got


@pytest.mark.parametrize("client,group_protocol", [
    ("aiokafka", "classic"), ("confluent", "classic"),
    # KIP-848: ConsumerGroupHeartbeat instead of JoinGroup/SyncGroup (paced by the broker's 5 s heartbeat).
    ("confluent", "consumer")])
def test_group_of_two_rebalances_and_resumes(gateway, client, group_protocol):
    topic, group = unique(f"grp-{client}"), unique(f"grp-{client}-{group_protocol}")
    create_topic(gateway, topic, partitions=PARTITIONS)
    everything = {(topic, p) for p in range(PARTITIONS)}
    loop = Loop()
    try:
        _group_of_two(gateway, topic, group, everything,
                      lambda: Reader(client, gateway.bootstrap, group=group, topic=topic,
                                     group_protocol=group_protocol, loop=loop))
    finally:
        loop.close()


def _group_of_two(gateway, topic, group, everything, member) -> None:
    first, second = member(), member()
    members = [first, second]

    def poll_all():
        for m in members:
            m.poll(0.1)

    try:
        # Both members hold partitions, and together all of them, once each.
        wait_until(lambda: first.assignment() and second.assignment()
                   and first.assignment() | second.assignment() == everything
                   and not first.assignment() & second.assignment(), "both members assigned", step=poll_all)

        batch1 = [f"b1-{i}".encode() for i in range(16)]
        _produce(gateway, topic, batch1)
        got = _drain(members, len(batch1))
        assert all(got), "a member received nothing"
        assert sorted(r[3] for bucket in got for r in bucket) == sorted(batch1)
        for m, bucket in zip(members, got):
            assert {(r[0], r[1]) for r in bucket} <= m.assignment()
        first.commit()
        second.commit()
        assert committed_offsets(gateway, group) == {tp: len(batch1) // PARTITIONS for tp in everything}

        # The second leaves; the first takes over everything from the committed offsets.
        second.close()
        members = [first]
        wait_until(lambda: first.assignment() == everything, "the rebalance", step=poll_all)
        batch2 = [f"b2-{i}".encode() for i in range(8)]
        _produce(gateway, topic, batch2)
        [got] = _drain(members, len(batch2))
        assert sorted(r[3] for r in got) == sorted(batch2), "re-delivered or lost records"
        first.commit()
    finally:
        for m in members:
            m.close()

    expected_offsets = {tp: (len(batch1) + len(batch2)) // PARTITIONS for tp in everything}
    assert committed_offsets(gateway, group) == expected_offsets
    # A new member resumes where the group left off: only what comes next.
    newcomer = member()
    try:
        batch3 = [f"b3-{i}".encode() for i in range(4)]
        _produce(gateway, topic, batch3)
        [got] = _drain([newcomer], len(batch3))
        assert sorted(r[3] for r in got) == sorted(batch3), "re-delivered or lost records"
        assert {r[2] for r in got} == {expected_offsets[(topic, 0)]}
    finally:
        newcomer.close()
