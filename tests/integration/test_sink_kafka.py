"""The Kafka sink against the real broker: two gateways write one audit topic, a third process
reads the fleet's trail back and verifies it; retried batches and forged copies."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from brokerguard.audit import events
from brokerguard.audit.chain import verify
from brokerguard.audit.sinks import Sealed, SessionFilter, SinkContext
from brokerguard.errors import ConfigError
from brokerguard.plugins.sinks.kafka import AuditTopicError, KafkaSink
from sealing import KEY, Stream

pytestmark = pytest.mark.kafka

PASSWORD_ENV = "BROKERGUARD_TEST_AUDIT_PASSWORD"


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def context(gateway: str) -> SinkContext:
    return SinkContext(gateway=gateway, state_dir=Path(".brokerguard"))


def plain(kafka, topic: str, **options) -> dict:
    return {"type": "kafka", "bootstrap_servers": [kafka.bootstrap], "topic": topic, **options}


def sasl(kafka, topic: str, monkeypatch, **options) -> dict:
    monkeypatch.setenv(PASSWORD_ENV, kafka.password)
    return {"bootstrap_servers": [kafka.sasl_bootstrap], "topic": topic, "security_protocol": "SASL_PLAINTEXT",
            "sasl_mechanism": "SCRAM-SHA-512", "username": kafka.username, "password_env": PASSWORD_ENV, **options}


def session(name: str, identity: str, topic: str, started: float, requests: int = 3) -> list[dict]:
    out = [events.session_start(name, "kafka", "10.0.0.7:5000", "main", started),
           {**events.login(name, identity, "SCRAM-SHA-512", True), "time": started + 0.1}]
    for seq in range(requests):
        out.append({"kind": "request", "time": started + 1 + seq, "session": name, "seq": seq, "identity": identity,
                    "api": "Produce", "decision": "allow",
                    "operations": [{"action": "write", "resource": f"topic:{topic}", "decision": "allow"}]})
    end = events.session_end(name, identity, "client closed", requests, 10, 20, started)
    end["time"] = started + requests + 1
    return out + [end]


async def admin_for(kafka) -> AIOKafkaAdminClient:
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka.bootstrap)
    await admin.start()
    return admin


def fleet(kafka, monkeypatch, topic: str) -> tuple[Stream, Stream, list[Sealed]]:
    """Two gateways, one over SASL and one over PLAINTEXT, write their streams to one topic; one
    of them has a batch retried (written twice). Returns their streams and the retried batch."""
    one = KafkaSink.from_config(sasl(kafka, topic, monkeypatch, partitions=3), context("gw-a:1"))
    two = KafkaSink.from_config(plain(kafka, topic, partitions=3), context("gw-b:2"))
    first, second = Stream("gw-a:1"), Stream("gw-b:2")
    retried = first.seal(session("s-a2", "alice", "payments", 1100))

    async def run() -> None:
        await one.start()
        await two.start()
        try:
            await one.write(first.start())
            await two.write(second.start())
            await one.write(first.seal(session("s-a1", "alice", "orders", 1000)))
            await two.write(second.seal(session("s-b1", "bob", "orders", 1050)))
            await one.write(retried)
            await one.write(retried)  # the bus retries a batch whose write raised after part of it was stored
            await two.write(second.seal(session("s-b2", "bob", "audit", 1200, requests=40)))
            await one.write(first.end())
            await two.write(second.end())
        finally:
            await one.close()
            await two.close()

    asyncio.run(run())
    return first, second, retried


def test_a_fleet_writes_one_topic_and_a_third_process_reads_every_stream_in_order(kafka, monkeypatch):
    topic = unique("audit")
    first, second, _ = fleet(kafka, monkeypatch, topic)
    reader = KafkaSink.from_config(plain(kafka, topic, create_topic=False), context("cli:9"))

    read = list(reader.events())
    assert len(read) == 14 + 51  # each event once, the retried batch too
    for stream, count in ((first.chain.stream, 14), (second.chain.stream, 51)):
        mine = [event for event in read if event["stream"] == stream]
        assert [event["index"] for event in mine] == list(range(count))
        assert mine[-1]["kind"] == "stream_end"
    result = verify(read, KEY)
    assert result.intact and result.streams == 2 and result.events == 65 and not result.open_streams

    summaries = reader.sessions(SessionFilter())
    assert [s["session"] for s in summaries] == ["s-b2", "s-a2", "s-b1", "s-a1"]
    assert summaries[0]["gateway"] == "gw-b:2" and summaries[0]["requests"] == 40
    assert summaries[1]["requests"] == 3 and summaries[1]["identity"] == "alice"  # not counted twice
    assert [s["session"] for s in reader.sessions(SessionFilter(topic="orders"))] == ["s-b1", "s-a1"]
    assert [e.get("seq") for e in reader.session_events("s-b2")] == [None, None, *range(40), None]


def test_records_are_keyed_by_session_and_carry_the_line_and_headers(kafka, monkeypatch):
    topic = unique("audit")
    first, _, retried = fleet(kafka, monkeypatch, topic)

    async def records() -> list:
        consumer = AIOKafkaConsumer(bootstrap_servers=kafka.bootstrap, group_id=None)
        await consumer.start()
        try:
            partitions = [TopicPartition(topic, p) for p in range(3)]
            consumer.assign(partitions)
            await consumer.seek_to_beginning(*partitions)
            ends = await consumer.end_offsets(partitions)
            out = []
            while len(out) < sum(ends.values()):
                for batch in (await consumer.getmany(timeout_ms=1000)).values():
                    out.extend(batch)
            return out
        finally:
            await consumer.stop()

    found = asyncio.run(records())
    assert len(found) == 65 + 6  # the topic holds the retried batch twice; readers drop the copies
    for record in found:
        event = orjson.loads(record.value)
        assert record.key == (event.get("session") or event["stream"]).encode()
        assert dict(record.headers) == {"brokerguard.stream": event["stream"].encode(),
                                        "brokerguard.index": str(event["index"]).encode()}
    by_session: dict[bytes, set[int]] = {}
    for record in found:
        by_session.setdefault(record.key, set()).add(record.partition)
    assert all(len(partitions) == 1 for partitions in by_session.values())  # a session stays in one partition
    assert {record.value for record in found} >= {sealed.line for sealed in retried}
    assert first.chain.stream.encode() in by_session


def test_the_topic_is_created_with_the_options_and_kept_forever(kafka):
    topic = unique("audit")
    sink = KafkaSink.from_config(plain(kafka, topic, partitions=4), context("gw-a:1"))

    async def run():
        await sink.start()
        await sink.close()
        admin = await admin_for(kafka)
        try:
            [described] = await admin.describe_topics([topic])
            [configs] = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
        finally:
            await admin.close()
        return described, {name: value for name, value, *_ in configs.resources[0][4]}

    described, configs = asyncio.run(run())
    assert len(described["partitions"]) == 4
    assert all(len(p["replicas"]) == 1 for p in described["partitions"])  # the broker's default: one node
    assert configs["retention.ms"] == "-1"
    assert configs["max.message.bytes"] == str(8 * 1024 * 1024 + 64 * 1024)


def test_an_existing_topic_is_used_as_it_is(kafka):
    topic = unique("audit")

    async def run():
        for partitions in (2, 5):  # the second sink finds the topic and leaves it alone
            sink = KafkaSink.from_config(plain(kafka, topic, partitions=partitions), context("gw-a:1"))
            await sink.start()
            await sink.close()
        admin = await admin_for(kafka)
        try:
            [described] = await admin.describe_topics([topic])
        finally:
            await admin.close()
        return len(described["partitions"])

    assert asyncio.run(run()) == 2


def test_a_forged_copy_in_the_topic_is_shown_to_verify_not_hidden(kafka, monkeypatch):
    topic = unique("audit")
    first, _, _ = fleet(kafka, monkeypatch, topic)
    reader = KafkaSink.from_config(plain(kafka, topic), context("cli:9"))
    genuine = next(e for e in reader.events() if e["stream"] == first.chain.stream and e["index"] == 4)
    forged = {**genuine, "decision": "deny", "identity": "mallory"}  # same stream and index, edited

    async def forge():
        producer = AIOKafkaProducer(bootstrap_servers=kafka.bootstrap)
        await producer.start()
        try:
            await producer.send_and_wait(topic, orjson.dumps(forged, option=orjson.OPT_SORT_KEYS),
                                         key=forged["session"].encode(),
                                         headers=[("brokerguard.stream", forged["stream"].encode()),
                                                  ("brokerguard.index", b"4")])
        finally:
            await producer.stop()

    asyncio.run(forge())
    read = list(reader.events())
    copies = [e for e in read if e["stream"] == first.chain.stream and e["index"] == 4]
    assert copies == [genuine, forged]  # both: the reader cannot know which is the forgery, verify can
    result = verify(read, KEY)
    assert [str(problem) for problem in result.problems] == [
        f"stream {first.chain.stream} event 4: appears twice (a copy was inserted)"]


def test_the_reader_works_inside_a_running_event_loop(kafka, monkeypatch):
    topic = unique("audit")
    fleet(kafka, monkeypatch, topic)
    reader = KafkaSink.from_config(sasl(kafka, topic, monkeypatch), context("cli:9"))

    async def inside():
        return reader.session_events("s-a1")

    assert [e["kind"] for e in asyncio.run(inside())] == ["session_start", "login", "request", "request", "request",
                                                          "session_end"]


def test_a_missing_topic_is_an_error_and_is_not_created_by_reading(kafka):
    topic = unique("audit")
    reader = KafkaSink.from_config(plain(kafka, topic, create_topic=False), context("cli:9"))
    with pytest.raises(AuditTopicError, match=f"topic {topic} does not exist"):
        list(reader.events())
    with pytest.raises(AuditTopicError, match=f"topic {topic} does not exist and `create_topic` is false"):
        asyncio.run(reader.start())

    async def topics():
        admin = await admin_for(kafka)
        try:
            return await admin.list_topics()
        finally:
            await admin.close()

    assert topic not in asyncio.run(topics())


def test_an_event_the_topic_cannot_take_fails_the_write_for_the_bus_to_retry(kafka):
    topic = unique("audit")
    sink = KafkaSink.from_config(plain(kafka, topic, max_event_bytes=65536), context("gw-a:1"))
    stream = Stream("gw-a:1")

    async def run():
        await sink.start()
        try:
            await sink.write(stream.start())
            await sink.write(stream.seal([{"kind": "request", "time": 1.0, "session": "s", "note": "x" * 300_000}]))
        finally:
            await sink.close()

    with pytest.raises(AuditTopicError, match=f"1 of 1 events not stored in {topic}: MessageSizeTooLargeError"):
        asyncio.run(run())


def test_a_wrong_password_fails_at_start_without_showing_it(kafka, monkeypatch):
    options = sasl(kafka, unique("audit"), monkeypatch)
    monkeypatch.setenv(PASSWORD_ENV, "not-the-password-4242")
    sink = KafkaSink.from_config(options, context("gw-a:1"))
    with pytest.raises(AuditTopicError) as caught:
        asyncio.run(sink.start())
    assert "cannot connect" in str(caught.value) and "SASL" in str(caught.value)
    assert "not-the-password-4242" not in str(caught.value) and "not-the-password-4242" not in repr(sink)


@pytest.mark.parametrize(
    "options, message",
    [
        ({}, "audit sink kafka: `bootstrap_servers` is required"),
        ({"bootstrap_servers": "b:9092"}, "audit sink kafka: `bootstrap_servers` must be a list, not 'b:9092'"),
        ({"bootstrap_servers": []}, "`bootstrap_servers` must list at least one HOST:PORT"),
        ({"bootstrap_servers": ["broker"]}, "audit sink kafka: `bootstrap_servers` entry 'broker' is not HOST:PORT"),
        ({"topic": "audit trail"}, "audit sink kafka: `topic` 'audit trail' is not a valid Kafka topic name"),
        ({"security_protocol": "TLS"},
         "audit sink kafka: `security_protocol` must be one of PLAINTEXT, SASL_PLAINTEXT, SSL, SASL_SSL, not 'TLS'"),
        ({"security_protocol": "SASL_SSL", "sasl_mechanism": "PLAIN", "username": "gw"},
         "audit sink kafka: `password_env` is required with security_protocol SASL_SSL"),
        ({"security_protocol": "SASL_PLAINTEXT", "sasl_mechanism": "GSSAPI", "username": "gw", "password_env": "X"},
         "audit sink kafka: `sasl_mechanism` must be one of PLAIN, SCRAM-SHA-256, SCRAM-SHA-512, not 'GSSAPI'"),
        ({"security_protocol": "SASL_PLAINTEXT", "sasl_mechanism": "PLAIN", "username": "gw",
          "password_env": "BG_UNSET_AUDIT_VAR"},
         "audit sink kafka: environment variable BG_UNSET_AUDIT_VAR (`password_env`) is not set"),
        ({"username": "gw"}, "audit sink kafka: `username` needs security_protocol SASL_PLAINTEXT or SASL_SSL "
                             "(it is PLAINTEXT)"),
        ({"ssl_cafile": "/ca.pem"}, "audit sink kafka: `ssl_cafile` needs security_protocol SSL or SASL_SSL"),
        ({"security_protocol": "SSL", "ssl_cafile": "/no/such/ca.pem"},
         "audit sink kafka: `ssl_cafile` /no/such/ca.pem is not a file"),
        ({"partitions": 0}, "audit sink kafka: `partitions` must be at least 1, not 0"),
        ({"replication_factor": 0}, "`replication_factor` must be at least 1, or -1 for the broker's default, not 0"),
        ({"create_topic": "no"}, "audit sink kafka: `create_topic` must be true or false, not 'no'"),
        ({"max_event_bytes": 1000}, "audit sink kafka: `max_event_bytes` must be at least 65536, not 1000"),
        ({"acks": 1}, "audit sink kafka: unknown option acks (it takes bootstrap_servers, topic, security_protocol"),
    ],
)
def test_option_mistakes_name_the_option_and_why(options, message):
    if "bootstrap_servers" not in options and options:
        options = {"bootstrap_servers": ["127.0.0.1:9092"], **options}
    with pytest.raises(ConfigError) as caught:
        KafkaSink.from_config(options, context("gw-a:1"))
    assert message in str(caught.value)


def test_writes_and_reads_over_sasl_ssl(kafka, monkeypatch):
    topic = unique("audit")
    options = sasl(kafka, topic, monkeypatch, security_protocol="SASL_SSL", ssl_cafile=str(kafka.ca_file))
    options["bootstrap_servers"] = [kafka.ssl_bootstrap]
    sink = KafkaSink.from_config(options, context("gw-a:1"))
    stream = Stream("gw-a:1")
    written = stream.start() + stream.seal(session("s-1", "alice", "orders", 1000)) + stream.end()

    async def run():
        await sink.start()
        try:
            await sink.write(written)
        finally:
            await sink.close()

    asyncio.run(run())
    assert list(sink.events()) == [sealed.event for sealed in written]
