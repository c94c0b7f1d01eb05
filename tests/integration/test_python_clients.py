"""aiokafka, kafka-python and confluent-kafka (librdkafka) through the gateway.

Every client is given only `gateway.bootstrap` and logs in to the gateway (SASL SCRAM, as
`harness.auth` configures each library). What it writes is read back twice, through the gateway
and straight from the broker's PLAINTEXT listener (without logging in), and the two must be
identical to what was produced: the gateway relays records byte for byte and must only ever hand
out its own addresses.
"""

from __future__ import annotations

import asyncio
import os
import random
import socket
import time
import uuid
import zlib

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition as AioTP
from aiokafka.admin import AIOKafkaAdminClient, NewTopic as AioNewTopic
from aiokafka.admin.config_resource import ConfigResource as AioConfigResource, ConfigResourceType as AioResType
from confluent_kafka import Consumer as CfConsumer, Producer as CfProducer, TopicCollection, TopicPartition as CfTP
from confluent_kafka.admin import AdminClient as CfAdmin, ConfigResource as CfConfigResource, NewTopic as CfNewTopic
from kafka import KafkaConsumer, KafkaProducer, TopicPartition as KpTP
from kafka.admin import ConfigResource as KpConfigResource, ConfigResourceType as KpResType, KafkaAdminClient

from brokerguard.plugins.kafka.protocol import codec
from devstack.processes import recv_exactly
from harness import auth

pytestmark = pytest.mark.kafka

CLIENTS = ("aiokafka", "kafka-python", "confluent")
CODECS = ("none", "gzip", "snappy", "lz4", "zstd")
CODEC_IDS = {"none": 0, "gzip": 1, "snappy": 2, "lz4": 3, "zstd": 4}
TIMEOUT = 30.0


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def split(address: str) -> tuple[str, int]:
    host, port = address.rsplit(":", 1)
    return host, int(port)


# --------------------------------------------------------------------------- records

def sample_records(seed: int) -> list[tuple]:
    """(key, value, headers, timestamp_ms): null, empty, binary and large keys and values; repeated and
    empty headers; explicit timestamps."""
    rnd = random.Random(seed)
    # Recent but fixed in the past and out of order, so a broker or gateway timestamp would show.
    base = int(time.time() * 1000) - 600_000
    headers = [("trace", b"t-1"), ("dup", b"first"), ("dup", b"second"), ("empty", b""),
               ("bin", bytes([0, 0xFF, 0xFE, 0x80])), ("ключ", "значение".encode())]
    return [
        (b"k-text", b"hello gateway", headers, base + 5),
        (b"k-empty-value", b"", [("only", b"one")], base + 1),
        (b"k-binary", bytes([0xFF, 0xFE, 0x00, 0xC3, 0x28, 0xA0, 0xA1]), [], base + 9),
        (b"", b"empty key", [("empty", b""), ("empty", b"")], base + 2),
        # Binary and compressible, so no client falls back to sending it uncompressed.
        (bytes([0x80, 0x81, 0x00]), rnd.randbytes(1024) * 100, headers, base + 7),
        (b"k-repeat", b"A" * 5000, [("dup", b"x")] * 3, base + 3),
        (b"k-utf8", "ünïcödé ✓".encode(), [("h", "é".encode())], base + 8),
        (None, b"null key", [], base + 4),
        (b"tombstone", None, [("why", b"null value")], base + 6),
    ]


def normalize(key, value, headers, timestamp) -> tuple:
    # confluent returns None for no headers, the others an empty sequence.
    return (key, value, [(k, v) for k, v in (headers or [])], timestamp)


# --------------------------------------------------------------------------- raw broker view

def raw_batches(kafka, topic: str, partition: int = 0) -> list[dict]:
    """Each record batch on the broker: compression codec, producer id, transactional bit, count.

    Read with a plain Fetch v4 to the broker itself, so the check depends on no client library.
    """
    request = {"replica_id": -1, "max_wait_ms": 0, "min_bytes": 0, "max_bytes": 8 << 20, "isolation_level": 0,
               "topics": [{"topic": topic, "partitions": [
                   {"partition": partition, "fetch_offset": 0, "partition_max_bytes": 8 << 20}]}]}
    payload = codec.encode_request_header(1, 4, 7, "raw-check") + codec.encode_request(1, 4, request)
    with socket.create_connection(split(kafka.bootstrap), timeout=10) as sock:
        sock.sendall(len(payload).to_bytes(4, "big") + payload)
        size = int.from_bytes(recv_exactly(sock, 4), "big")
        data = recv_exactly(sock, size)
    _, offset = codec.decode_response_header(data, 0, codec.response_header_version(1, 4))
    body = codec.decode_response(1, 4, data, offset)
    [part] = body["responses"][0]["partitions"]
    assert part["error_code"] == 0, part
    records, batches, pos = part["records"] or b"", [], 0
    while pos + 61 <= len(records):
        length = int.from_bytes(records[pos + 8:pos + 12], "big")
        attributes = int.from_bytes(records[pos + 21:pos + 23], "big")
        batches.append({
            "codec": attributes & 0x7,
            "transactional": bool(attributes & 0x10),
            "control": bool(attributes & 0x20),
            "producer_id": int.from_bytes(records[pos + 43:pos + 51], "big", signed=True),
            "count": int.from_bytes(records[pos + 57:pos + 61], "big"),
        })
        pos += 12 + length
    return batches


def tcp_connections() -> dict[str, tuple[str, int]]:
    """Socket inode -> remote (host, port) of every TCP connection this process holds, any thread."""
    inodes = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    connections = {}
    with open("/proc/self/net/tcp") as f:  # the clients resolve 127.0.0.1: IPv4 only
        next(f)
        for line in f:
            fields = line.split()
            if fields[9] in inodes and fields[3] != "0A":  # 0A: listening
                address, port = fields[2].split(":")
                connections[fields[9]] = (socket.inet_ntoa(bytes.fromhex(address)[::-1]), int(port, 16))
    return connections


def assert_gateway_address(gateway, kafka, host: str, port: int, where: str) -> None:
    assert port in gateway.gateway_ports(), f"{where}: {host}:{port} is not a gateway port"
    assert port not in kafka.ports.values(), f"{where}: {host}:{port} is the broker itself"
    assert host == "127.0.0.1", f"{where}: host {host!r}"


# --------------------------------------------------------------------------- per-client produce/consume

# Few batches, so most records share one compressed batch.
LINGER_MS = 50
BATCH_BYTES = 1 << 20


def produce(client: str, bootstrap: str, topic: str, records, **options) -> int:
    """Produce to partition 0 in order; returns the number of records the broker acknowledged."""
    if client == "aiokafka":
        return asyncio.run(_aio_produce(bootstrap, topic, records, **options))
    if client == "kafka-python":
        producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=LINGER_MS, batch_size=BATCH_BYTES,
                                 max_in_flight_requests_per_connection=1, **options)
        try:
            futures = [producer.send(topic, key=k, value=v, headers=h, timestamp_ms=ts, partition=0)
                       for k, v, h, ts in records]
            producer.flush(TIMEOUT)
            return sum(1 for f in futures if f.get(TIMEOUT).offset >= 0)
        finally:
            producer.close(TIMEOUT)
    acked = []
    producer = CfProducer({"bootstrap.servers": bootstrap, "linger.ms": LINGER_MS, "batch.size": BATCH_BYTES,
                           **options})
    for k, v, h, ts in records:
        producer.produce(topic, key=k, value=v, headers=h, timestamp=ts, partition=0,
                         on_delivery=lambda err, msg: acked.append(err is None and msg.offset() >= 0))
    assert producer.flush(TIMEOUT) == 0, "records still queued"
    return sum(acked)


async def _aio_produce(bootstrap, topic, records, **options) -> int:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=LINGER_MS, max_batch_size=BATCH_BYTES,
                                **options)
    await producer.start()
    try:
        futures = [await producer.send(topic, key=k, value=v, headers=h, timestamp_ms=ts, partition=0)
                   for k, v, h, ts in records]
        results = await asyncio.gather(*futures)
        return sum(1 for r in results if r.offset >= 0)
    finally:
        await producer.stop()


def consume(client: str, bootstrap: str, topic: str, count: int, partition: int = 0, **options) -> list[tuple]:
    """The first `count` records of one partition, read with no group, normalized."""
    deadline = time.monotonic() + TIMEOUT
    if client == "aiokafka":
        return asyncio.run(_aio_consume(bootstrap, topic, count, partition, deadline, **options))
    out = []
    if client == "kafka-python":
        consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None,
                                 auto_offset_reset="earliest", **options)
        try:
            consumer.assign([KpTP(topic, partition)])
            while len(out) < count and time.monotonic() < deadline:
                for batch in consumer.poll(timeout_ms=500).values():
                    out += [normalize(r.key, r.value, r.headers, r.timestamp) for r in batch]
        finally:
            consumer.close()
        return out
    consumer = CfConsumer({"bootstrap.servers": bootstrap, "group.id": unique("assign-only"),
                           "enable.auto.commit": False, "auto.offset.reset": "earliest", **options})
    try:
        consumer.assign([CfTP(topic, partition, 0)])
        while len(out) < count and time.monotonic() < deadline:
            for msg in consumer.consume(count - len(out), timeout=0.5):
                assert msg.error() is None, msg.error()
                out.append(normalize(msg.key(), msg.value(), msg.headers(), msg.timestamp()[1]))
    finally:
        consumer.close()
    return out


async def _aio_consume(bootstrap, topic, count, partition, deadline, **options) -> list[tuple]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest",
                                **options)
    await consumer.start()
    out = []
    try:
        consumer.assign([AioTP(topic, partition)])
        while len(out) < count and time.monotonic() < deadline:
            for batch in (await consumer.getmany(timeout_ms=500)).values():
                out += [normalize(r.key, r.value, r.headers, r.timestamp) for r in batch]
    finally:
        await consumer.stop()
    return out


def codec_option(client: str, name: str) -> dict:
    if client == "confluent":
        return {"compression.type": name}
    return {"compression_type": None if name == "none" else name}


def create_topic(gateway, topic: str, partitions: int = 1, config: dict | None = None) -> None:
    admin = CfAdmin({"bootstrap.servers": gateway.bootstrap, **auth("confluent")})
    futures = admin.create_topics([CfNewTopic(topic, partitions, 1, config=config or {})], operation_timeout=TIMEOUT)
    futures[topic].result(TIMEOUT)


# --------------------------------------------------------------------------- 1. admin

TOPIC_CONFIG = {"retention.ms": "3600000", "max.message.bytes": "2097152"}


def _eventually(check, what: str, timeout: float = TIMEOUT):
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result or time.monotonic() > deadline:
            assert result, what
            return result
        time.sleep(0.1)


def test_admin_aiokafka(gateway):
    async def run():
        names = [unique("adm-aio"), unique("adm-aio")]
        admin = AIOKafkaAdminClient(bootstrap_servers=gateway.bootstrap, **auth("aiokafka"))
        await admin.start()
        try:
            created = await admin.create_topics(
                [AioNewTopic(n, 3, 1, topic_configs=TOPIC_CONFIG) for n in names], timeout_ms=30000)
            assert [e[1] for e in created.topic_errors] == [0, 0], created
            described = {t["topic"]: t for t in await admin.describe_topics(names)}
            brokers = {b["node_id"] for b in (await admin.describe_cluster())["brokers"]}
            for name in names:
                assert described[name]["error_code"] == 0
                partitions = described[name]["partitions"]
                assert sorted(p["partition"] for p in partitions) == [0, 1, 2]
                assert all(p["leader"] in brokers for p in partitions)
            [configs] = await admin.describe_configs([AioConfigResource(AioResType.TOPIC, names[0])])
            values = {c[0]: c[1] for c in configs.resources[0][4]}
            assert {k: values[k] for k in TOPIC_CONFIG} == TOPIC_CONFIG
            assert set(names) <= set(await admin.list_topics())
            deleted = await admin.delete_topics([names[0]], timeout_ms=30000)
            assert [e[1] for e in deleted.topic_error_codes] == [0], deleted
            deadline = time.monotonic() + TIMEOUT
            while names[0] in (listed := await admin.list_topics()) and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
            assert names[0] not in listed and names[1] in listed
            await admin.delete_topics([names[1]], timeout_ms=30000)
        finally:
            await admin.close()

    asyncio.run(run())


def test_admin_kafka_python(gateway):
    names = [unique("adm-kp"), unique("adm-kp")]
    admin = KafkaAdminClient(bootstrap_servers=gateway.bootstrap, **auth())
    try:
        created = admin.create_topics(
            {n: {"num_partitions": 3, "replication_factor": 1, "configs": TOPIC_CONFIG} for n in names},
            timeout_ms=30000, wait_for_metadata=True)
        assert [t["error_code"] for t in created["topics"]] == [0, 0], created
        described = {t["name"]: t for t in admin.describe_topics(names)}
        brokers = {b["broker_id"] for b in admin.describe_cluster()["brokers"]}
        for name in names:
            assert described[name]["error_code"] == 0
            partitions = described[name]["partitions"]
            assert sorted(p["partition_index"] for p in partitions) == [0, 1, 2]
            assert all(p["leader_id"] in brokers for p in partitions)
        configs = admin.describe_configs([KpConfigResource(KpResType.TOPIC, names[0])])
        values = configs["topic"][names[0]]
        assert {k: values[k]["value"] for k in TOPIC_CONFIG} == TOPIC_CONFIG
        assert set(names) <= set(admin.list_topics())
        admin.delete_topics([names[0]], timeout_ms=30000)
        listed = _eventually(lambda: (lambda t: t if names[0] not in t else None)(admin.list_topics()),
                             "deleted topic still listed")
        assert names[1] in listed
        admin.delete_topics([names[1]], timeout_ms=30000)
    finally:
        admin.close()


def test_admin_confluent(gateway, kafka):
    names = [unique("adm-cf"), unique("adm-cf")]
    admin = CfAdmin({"bootstrap.servers": gateway.bootstrap, **auth("confluent")})
    futures = admin.create_topics([CfNewTopic(n, 3, 1, config=TOPIC_CONFIG) for n in names], operation_timeout=TIMEOUT)
    for future in futures.values():
        assert future.result(TIMEOUT) is None
    described = admin.describe_topics(TopicCollection(names), request_timeout=TIMEOUT)
    for name in names:
        topic = described[name].result(TIMEOUT)
        assert sorted(p.id for p in topic.partitions) == [0, 1, 2]
        for p in topic.partitions:
            # Leaders come with their address: it must be the gateway's.
            assert_gateway_address(gateway, kafka, p.leader.host, p.leader.port, f"{name}[{p.id}] leader")
            assert [r.id for r in p.isr] == [p.leader.id]
    resource = CfConfigResource("TOPIC", names[0])
    values = admin.describe_configs([resource], request_timeout=TIMEOUT)[resource].result(TIMEOUT)
    assert {k: values[k].value for k in TOPIC_CONFIG} == TOPIC_CONFIG
    assert set(names) <= set(admin.list_topics(timeout=TIMEOUT).topics)
    admin.delete_topics([names[0]], operation_timeout=TIMEOUT)[names[0]].result(TIMEOUT)
    listed = _eventually(lambda: (lambda t: t if names[0] not in t else None)(admin.list_topics(timeout=TIMEOUT).topics),
                         "deleted topic still listed")
    assert names[1] in listed
    admin.delete_topics([names[1]], operation_timeout=TIMEOUT)[names[1]].result(TIMEOUT)


# --------------------------------------------------------------------------- 2. records, every codec

@pytest.mark.parametrize("compression", CODECS)
@pytest.mark.parametrize("client", CLIENTS)
def test_records_survive_the_gateway(gateway, kafka, client, compression):
    topic = unique(f"rec-{client}-{compression}")
    create_topic(gateway, topic)
    records = sample_records(seed=zlib.crc32(f"{client}-{compression}".encode()))
    expected = [normalize(*r) for r in records]

    acked = produce(client, gateway.bootstrap, topic, records, **auth(client), **codec_option(client, compression))
    through_gateway = consume(client, gateway.bootstrap, topic, len(records), **auth(client))
    direct = consume(client, kafka.bootstrap, topic, len(records))

    assert acked == len(records) == len(through_gateway)
    assert through_gateway == expected
    assert direct == expected
    # The codec really was used. kafka-python and librdkafka send a batch that compression would
    # not shrink (a lone small record) uncompressed, so "none" may sit beside it.
    batches = raw_batches(kafka, topic)
    codecs = {b["codec"] for b in batches}
    assert CODEC_IDS[compression] in codecs and codecs <= {CODEC_IDS[compression], 0}, batches
    assert sum(b["count"] for b in batches) == len(records)


# --------------------------------------------------------------------------- 3. only gateway addresses

def test_aiokafka_learns_only_gateway_addresses(gateway, kafka):
    topic, group = unique("addr-aio"), unique("addr-aio-g")
    before = tcp_connections()  # sockets of anything else in this process

    async def run():
        login = auth("aiokafka")
        admin = AIOKafkaAdminClient(bootstrap_servers=gateway.bootstrap, **login)
        producer = AIOKafkaProducer(bootstrap_servers=gateway.bootstrap, **login)
        consumer = AIOKafkaConsumer(topic, bootstrap_servers=gateway.bootstrap, group_id=group,
                                    auto_offset_reset="earliest", enable_auto_commit=False, **login)
        await admin.start()
        await producer.start()
        try:
            await producer.send_and_wait(topic, b"v")
            await consumer.start()
            records = await consumer.getmany(timeout_ms=int(TIMEOUT * 1000), max_records=1)
            assert sum(map(len, records.values())) == 1
            await consumer.commit()  # through the coordinator that FindCoordinator named
            for source, brokers in (("producer", producer.client.cluster.brokers()),
                                    ("consumer", consumer._client.cluster.brokers())):
                assert brokers
                for b in brokers:
                    assert_gateway_address(gateway, kafka, b.host, b.port, source)
            cluster = await admin.describe_cluster()
            assert cluster["brokers"]
            for b in cluster["brokers"]:
                assert_gateway_address(gateway, kafka, b["host"], b["port"], "describe_cluster")
            # aiokafka reaches the coordinator by node id through Metadata; its socket is checked here.
            assert_only_gateway_connections(gateway, kafka, before)
        finally:
            await consumer.stop()
            await producer.stop()
            await admin.close()

    asyncio.run(run())


def test_kafka_python_learns_only_gateway_addresses(gateway, kafka):
    topic, group = unique("addr-kp"), unique("addr-kp-g")
    before = tcp_connections()  # sockets of anything else in this process
    admin = KafkaAdminClient(bootstrap_servers=gateway.bootstrap, **auth())
    producer = KafkaProducer(bootstrap_servers=gateway.bootstrap, **auth())
    consumer = KafkaConsumer(topic, bootstrap_servers=gateway.bootstrap, group_id=group,
                             auto_offset_reset="earliest", enable_auto_commit=False, **auth())
    try:
        producer.send(topic, b"v").get(TIMEOUT)
        got = _eventually(lambda: sum(map(len, consumer.poll(timeout_ms=500).values())), "nothing consumed")
        assert got == 1
        consumer.commit()
        cluster = admin.describe_cluster()
        assert cluster["brokers"]
        for b in cluster["brokers"]:
            assert_gateway_address(gateway, kafka, b["host"], b["port"], "describe_cluster")
        for source, metadata in (("producer", producer._metadata), ("consumer", consumer._client.cluster)):
            assert metadata.brokers()
            for b in metadata.brokers():
                assert_gateway_address(gateway, kafka, b.host, b.port, source)
        assert_only_gateway_connections(gateway, kafka, before)
    finally:
        consumer.close()
        producer.close(TIMEOUT)
        admin.close()


def test_confluent_learns_only_gateway_addresses(gateway, kafka):
    topic, group = unique("addr-cf"), unique("addr-cf-g")
    before = tcp_connections()  # sockets of anything else in this process
    login = auth("confluent")
    admin = CfAdmin({"bootstrap.servers": gateway.bootstrap, **login})
    producer = CfProducer({"bootstrap.servers": gateway.bootstrap, **login})
    consumer = CfConsumer({"bootstrap.servers": gateway.bootstrap, "group.id": group,
                           "auto.offset.reset": "earliest", "enable.auto.commit": False, **login})
    try:
        producer.produce(topic, b"v")
        assert producer.flush(TIMEOUT) == 0
        consumer.subscribe([topic])
        msg = _eventually(lambda: consumer.poll(0.5), "nothing consumed")
        assert msg.error() is None and msg.value() == b"v"
        consumer.commit(msg, asynchronous=False)

        for source, metadata in (("admin", admin.list_topics(timeout=TIMEOUT)),
                                 ("producer", producer.list_topics(timeout=TIMEOUT)),
                                 ("consumer", consumer.list_topics(timeout=TIMEOUT))):
            assert metadata.brokers
            for b in metadata.brokers.values():
                assert_gateway_address(gateway, kafka, b.host, b.port, source)
        cluster = admin.describe_cluster(request_timeout=TIMEOUT).result(TIMEOUT)
        assert cluster.nodes
        for node in cluster.nodes:
            assert_gateway_address(gateway, kafka, node.host, node.port, "describe_cluster")
        assert_gateway_address(gateway, kafka, cluster.controller.host, cluster.controller.port, "controller")
        [described] = admin.describe_consumer_groups([group], request_timeout=TIMEOUT).values()
        coordinator = described.result(TIMEOUT).coordinator
        assert_gateway_address(gateway, kafka, coordinator.host, coordinator.port, "group coordinator")
        assert_only_gateway_connections(gateway, kafka, before)
    finally:
        consumer.close()


def assert_only_gateway_connections(gateway, kafka, before: dict) -> None:
    """Every socket the clients opened (in any thread) goes to the gateway, none to the broker."""
    opened = {inode: remote for inode, remote in tcp_connections().items() if inode not in before}
    assert opened, "no open connections: the check would prove nothing"
    for host, port in opened.values():
        assert_gateway_address(gateway, kafka, host, port, "open connection")


# --------------------------------------------------------------------------- 4. idempotence

IDEMPOTENT_PARTITIONS = 3
IDEMPOTENT_PER_PARTITION = 30


@pytest.mark.parametrize("client", CLIENTS)
def test_idempotent_producer(gateway, kafka, client):
    topic = unique(f"idem-{client}")
    create_topic(gateway, topic, partitions=IDEMPOTENT_PARTITIONS)
    sent = [(p, f"{p}:{i}".encode()) for i in range(IDEMPOTENT_PER_PARTITION) for p in range(IDEMPOTENT_PARTITIONS)]

    if client == "aiokafka":
        async def run():
            producer = AIOKafkaProducer(bootstrap_servers=gateway.bootstrap, enable_idempotence=True, linger_ms=5,
                                        **auth("aiokafka"))
            await producer.start()
            try:
                futures = [await producer.send(topic, value=v, partition=p) for p, v in sent]
                return len(await asyncio.gather(*futures))
            finally:
                await producer.stop()
        acked = asyncio.run(run())
    elif client == "kafka-python":
        producer = KafkaProducer(bootstrap_servers=gateway.bootstrap, enable_idempotence=True, linger_ms=5,
                                 **auth())
        try:
            futures = [producer.send(topic, value=v, partition=p) for p, v in sent]
            acked = sum(1 for f in futures if f.get(TIMEOUT).offset >= 0)
        finally:
            producer.close(TIMEOUT)
    else:
        delivered = []
        producer = CfProducer({"bootstrap.servers": gateway.bootstrap, "enable.idempotence": True, "linger.ms": 5,
                               **auth("confluent")})
        for p, v in sent:
            producer.produce(topic, value=v, partition=p, on_delivery=lambda err, msg: delivered.append(err))
        assert producer.flush(TIMEOUT) == 0
        assert set(delivered) == {None}
        acked = len(delivered)

    assert acked == len(sent)
    for p in range(IDEMPOTENT_PARTITIONS):
        values = [r[1] for r in consume(client, gateway.bootstrap, topic, IDEMPOTENT_PER_PARTITION, partition=p,
                                        **auth(client))]
        # In order, each exactly once.
        assert values == [f"{p}:{i}".encode() for i in range(IDEMPOTENT_PER_PARTITION)]
        batches = raw_batches(kafka, topic, p)
        assert sum(b["count"] for b in batches) == IDEMPOTENT_PER_PARTITION
        assert all(b["producer_id"] >= 0 for b in batches), "written without a producer id: not idempotent"
