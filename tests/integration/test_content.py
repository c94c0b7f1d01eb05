"""Data protection through the gateway, with real clients and the real broker: masking before the
broker and per reader, validation with Kafka's own INVALID_RECORD, dead letters, rate limits as
throttling, and hostile payloads.

The test gateway's rules are tests/rules: everything.yaml lets the tester do everything, and
content.yaml turns one obligation on per topic family (masked.*, validated.*, deadletter.*,
limited.*, readmasked.*, hostile.*). What reached the broker is read straight from its own
PLAINTEXT listener, past the gateway.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import socket
import time
import uuid

import orjson
import pytest
from aiokafka import AIOKafkaProducer
from confluent_kafka import Consumer as CfConsumer, KafkaError, KafkaException, Producer as CfProducer
from confluent_kafka import TopicPartition as CfTP
from kafka import KafkaProducer
from kafka.record.default_records import DefaultRecordBatchBuilder

from devstack.kafka import java_tool
from harness import (MASK_KEY, SHIPPED_RULES, Gateway, User, auth, connect, create_topics, java_client_properties,
                     read_response, request_frame)
from test_python_clients import codec_option, consume, raw_batches

pytestmark = pytest.mark.kafka

CODECS = ("none", "gzip", "snappy", "lz4", "zstd")
CODEC_IDS = {"none": 0, "gzip": 1, "snappy": 2, "lz4": 3, "zstd": 4}
TIMEOUT = 30.0
INVALID_RECORD = 87
CORRUPT_MESSAGE = 2
DEAD_LETTER_TOPIC = "dead-letter.tests"
CARD = "4111111111111111"  # a test card number that passes the Luhn check


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def broker_records(kafka, topic: str, count: int, partition: int = 0, committed_only: bool = False) -> list:
    """(key, value, headers, timestamp) of the first `count` records, read from the broker itself."""
    consumer = CfConsumer({"bootstrap.servers": kafka.bootstrap, "group.id": unique("direct"),
                           "enable.auto.commit": False, "auto.offset.reset": "earliest",
                           "isolation.level": "read_committed" if committed_only else "read_uncommitted"})
    out: list = []
    deadline = time.monotonic() + TIMEOUT
    try:
        consumer.assign([CfTP(topic, partition, 0)])
        while len(out) < count and time.monotonic() < deadline:
            for msg in consumer.consume(count - len(out), timeout=0.5):
                assert msg.error() is None, msg.error()
                out.append((msg.key(), msg.value(), msg.headers() or [], msg.timestamp()[1]))
    finally:
        consumer.close()
    assert len(out) == count, f"{len(out)} of {count} records on the broker"
    return out


# A partition just created can be in the metadata before its leader serves it.
NOT_YET_LED = (KafkaError.NOT_LEADER_FOR_PARTITION, KafkaError.LEADER_NOT_AVAILABLE, KafkaError.UNKNOWN_TOPIC_OR_PART)


def broker_count(kafka, topic: str, partition: int = 0) -> int:
    consumer = CfConsumer({"bootstrap.servers": kafka.bootstrap, "group.id": unique("count")})
    deadline = time.monotonic() + TIMEOUT
    try:
        while True:
            try:
                low, high = consumer.get_watermark_offsets(CfTP(topic, partition), timeout=TIMEOUT)
                return high - low
            except KafkaException as err:
                if err.args[0].code() not in NOT_YET_LED or time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
    finally:
        consumer.close()


# -- the records and what masking must make of them --------------------------------------------

def order(i: int) -> dict:
    return {"id": i, "amount": 10.5 + i, "email": f"buyer{i % 2}@example.com",
            "card": {"number": CARD, "cvv": "123", "brand": "visa"},
            "lines": [{"sku": f"sku-{i}", "note": "gift wrap"}, {"sku": "x", "note": None}],
            "profile": {"name": "Ada", "ssn": "078-05-1120"},
            "login": {"user": "ada", "password": f"pw-{i}", "devices": [{"api_key": f"key-{i}", "model": "x1"}]},
            "comment": f"call me, card {CARD[:4]} {CARD[4:8]} {CARD[8:12]} {CARD[12:]}"}


def pseudonym(value: object) -> str:
    """The hash strategy's pseudonym, made with the test gateways' key: the same in every run."""
    return "h:" + hmac.new(MASK_KEY.encode(), orjson.dumps(value), hashlib.sha256).hexdigest()[:32]


def assert_masked(original: dict, masked: dict) -> None:
    """tests/rules/content.yaml's test-pii profile: exactly these fields changed."""
    assert masked["card"]["number"] == "*" * 12 + CARD[-4:]
    assert "cvv" not in masked["card"]
    assert masked["card"]["brand"] == original["card"]["brand"]
    assert masked["email"] == pseudonym(original["email"])
    assert masked["profile"] == {"name": "Ada", "ssn": "[REDACTED]"}
    # The built-in `credentials` path set, listed by name in the profile.
    assert masked["login"] == {"user": "ada", "password": "[REDACTED:credentials]",
                               "devices": [{"api_key": "[REDACTED:credentials]", "model": "x1"}]}
    assert [line["note"] for line in masked["lines"]] == [None, None]
    assert [line["sku"] for line in masked["lines"]] == [line["sku"] for line in original["lines"]]
    assert (masked["id"], masked["amount"]) == (original["id"], original["amount"])
    assert CARD[12:] not in masked["comment"].replace(masked["card"]["number"], ""), masked["comment"]
    assert masked["comment"].startswith("call me, card ")


# Left alone by every path and detector: must arrive byte-identical, odd spacing and all.
UNTOUCHED = b'{ "id" : 7,   "amount": 1.50, "note": "nothing to see" }'


def mixed_records(count: int = 4) -> list[tuple]:
    """(key, value, headers): orders to mask, then an untouched JSON value, text and a tombstone."""
    rows = [(f"k{i}".encode(), orjson.dumps(order(i)), [("source", b"test"), ("n", str(i).encode())])
            for i in range(count)]
    rows.append((b"plain", UNTOUCHED, [("source", b"test")]))
    rows.append((b"text", b"free text without secrets", []))
    rows.append((b"tomb", None, [("why", b"delete")]))
    return rows


def assert_arrived_masked(sent: list[tuple], arrived: list[tuple]) -> None:
    assert len(arrived) == len(sent)
    emails = {}
    for (key, value, headers), (got_key, got_value, got_headers, _) in zip(sent, arrived):
        assert got_key == key
        assert [(k, bytes(v) if v is not None else None) for k, v in got_headers] == headers
        if value is None or not value.startswith(b'{"id"'):
            assert got_value == value  # byte-identical
            continue
        original, masked = orjson.loads(value), orjson.loads(got_value)
        assert_masked(original, masked)
        emails.setdefault(original["email"], set()).add(masked["email"])
    # A stable pseudonym: the same email always becomes the same value.
    assert all(len(found) == 1 for found in emails.values()), emails


# -- masking before the broker: every codec, every client ---------------------------------------

async def _aio_send(bootstrap: str, topic: str, rows, **options) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=20, **options)
    await producer.start()
    try:
        futures = [await producer.send(topic, key=k, value=v, headers=h, partition=0) for k, v, h in rows]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


def confluent_send(bootstrap: str, topic: str, rows, **config) -> list:
    """Produce with librdkafka; the delivery error (or None) of each record, in order."""
    results: dict[int, object] = {}
    producer = CfProducer({"bootstrap.servers": bootstrap, "linger.ms": 20, **config})
    for n, (k, v, h) in enumerate(rows):
        producer.produce(topic, key=k, value=v, headers=h, partition=0,
                         on_delivery=lambda err, msg, n=n: results.__setitem__(n, err))
    assert producer.flush(TIMEOUT) == 0, "records still queued"
    return [results[n] for n in range(len(rows))]


@pytest.mark.parametrize("compression", CODECS)
@pytest.mark.parametrize("client", ("aiokafka", "confluent"))
def test_masked_before_the_broker(gateway, kafka, client, compression):
    topic = unique(f"masked.{client}-{compression}")
    create_topics(kafka, topic)
    rows = mixed_records()
    if client == "aiokafka":
        asyncio.run(_aio_send(gateway.bootstrap, topic, rows, **auth("aiokafka"),
                              **codec_option("aiokafka", compression)))
    else:
        assert confluent_send(gateway.bootstrap, topic, rows, **auth("confluent"),
                              **codec_option("confluent", compression)) == [None] * len(rows)
    assert_arrived_masked(rows, broker_records(kafka, topic, len(rows)))
    # Re-encoding kept the producer's codec.
    assert {b["codec"] for b in raw_batches(kafka, topic)} == {CODEC_IDS[compression]}


def test_masked_before_the_broker_java_producer(gateway, kafka, tmp_path):
    topic = unique("masked.java")
    create_topics(kafka, topic)
    login = java_client_properties(tmp_path / "client.properties")
    sent = []
    for compression in CODECS:
        rows = [(f"{compression}-{i}".encode(), orjson.dumps(order(i)), [("source", b"test")]) for i in range(2)]
        lines = "".join(f"source:test\t{k.decode()}\t{v.decode()}\n" for k, v, _ in rows)
        proc = java_tool("org.apache.kafka.tools.ConsoleProducer", "--bootstrap-server", gateway.bootstrap,
                         "--command-config", str(login), "--topic", topic, "--compression-codec", compression,
                         "--reader-property", "parse.key=true", "--reader-property", "parse.headers=true",
                         input=lines, timeout=90)
        assert proc.returncode == 0, proc.stderr
        sent += rows
    assert_arrived_masked(sent, broker_records(kafka, topic, len(sent)))
    assert {b["codec"] for b in raw_batches(kafka, topic)} == set(CODEC_IDS.values())


def test_idempotent_and_transactional_producers_with_masking(gateway, kafka):
    topic = unique("masked.exactly-once")
    create_topics(kafka, topic)
    rows = mixed_records()
    assert confluent_send(gateway.bootstrap, topic, rows, **auth("confluent"),
                          **{"enable.idempotence": True}) == [None] * len(rows)

    producer = CfProducer({"bootstrap.servers": gateway.bootstrap, "transactional.id": unique("tx-masked"),
                           "linger.ms": 20, **auth("confluent")})
    producer.init_transactions(TIMEOUT)
    producer.begin_transaction()
    for k, v, h in rows:
        producer.produce(topic, key=k, value=v, headers=h, partition=0)
    producer.commit_transaction(TIMEOUT)

    arrived = broker_records(kafka, topic, 2 * len(rows), committed_only=True)
    assert_arrived_masked(rows, arrived[: len(rows)])
    assert_arrived_masked(rows, arrived[len(rows):])
    batches = [b for b in raw_batches(kafka, topic) if not b["control"]]
    assert all(b["producer_id"] >= 0 for b in batches)
    assert any(b["transactional"] for b in batches)


# -- masking per reader: the shipped rules -------------------------------------------------------

PAYMENTS = User("svc-payments", "payments-secret-31", ())
ANALYST = User("ann", "ann-secret-58", ("analysts",))


@pytest.fixture(scope="module")
def shipped(kafka, tmp_path_factory):
    gateway = Gateway(kafka, tmp_path_factory.mktemp("shipped-content"), users=(PAYMENTS, ANALYST),
                      rules=SHIPPED_RULES).start()
    yield gateway
    gateway.stop()


def payment(i: int) -> dict:
    return {"payment_id": f"p-{i}", "amount": 99.5, "customer": {"email": f"c{i}@example.com"},
            "card": {"number": CARD, "cvv": "999", "expiry": "12/29"},
            "note": f"customer read out {CARD} on the phone"}


def test_one_topic_masked_for_analysts_raw_for_the_owner(shipped, kafka):
    topic = unique("payments.cards")
    create_topics(kafka, topic)
    sent = [orjson.dumps(payment(i)) for i in range(3)]
    producer = KafkaProducer(bootstrap_servers=shipped.bootstrap, acks="all", **auth(user=PAYMENTS))
    for value in sent:
        producer.send(topic, value, partition=0).get(timeout=TIMEOUT)
    producer.close()

    # The owner reads what it wrote (librdkafka); it is what the broker holds.
    owner = consume("confluent", shipped.bootstrap, topic, len(sent), **auth("confluent", user=PAYMENTS),
                    **{"group.id": unique("payments-owner")})
    assert [r[1] for r in owner] == sent
    assert [r[1] for r in broker_records(kafka, topic, len(sent))] == sent

    # The analyst reads the same records masked, with two clients.
    for client, group in (("aiokafka", {}), ("kafka-python", {}),
                          ("confluent", {"group.id": unique("payments-analysts")})):
        masked = [orjson.loads(r[1]) for r in consume(client, shipped.bootstrap, topic, len(sent),
                                                       **auth(client, user=ANALYST), **group)]
        for i, doc in enumerate(masked):
            assert doc["card"] == {"number": "************" + CARD[-4:], "expiry": "[REDACTED]"}
            assert doc["customer"]["email"] != f"c{i}@example.com"
            assert doc["payment_id"] == f"p-{i}" and doc["amount"] == 99.5
            # The detector found the card number in free text.
            assert CARD not in doc["note"] and "[REDACTED:payment_card]" in doc["note"], doc["note"]


@pytest.mark.parametrize("compression", CODECS)
def test_consumers_read_masked_from_every_codec(gateway, kafka, compression):
    topic = unique(f"readmasked.{compression}")
    create_topics(kafka, topic)
    rows = mixed_records()
    assert confluent_send(kafka.bootstrap, topic, rows, **codec_option("confluent", compression)) == [None] * len(rows)
    for client in ("aiokafka", "confluent"):
        arrived = consume(client, gateway.bootstrap, topic, len(rows), **auth(client))
        assert_arrived_masked(rows, arrived)
    assert [r[1] for r in broker_records(kafka, topic, len(rows))] == [r[1] for r in rows]  # stored raw


def test_large_fetches_are_masked_whole_and_in_order(gateway, kafka):
    """Fetch responses of many batches (masked on two threads, written out as chunks) arrive
    with every record, in order, masked where the profile says and byte-identical elsewhere."""
    topic = unique("readmasked.large")
    create_topics(kafka, topic)
    rows = mixed_records(3000)
    assert confluent_send(kafka.bootstrap, topic, rows, **{"batch.size": 65536}) == [None] * len(rows)
    for client in ("aiokafka", "confluent"):
        assert_arrived_masked(rows, consume(client, gateway.bootstrap, topic, len(rows), **auth(client)))


# -- validation: INVALID_RECORD with the record's index and reason -------------------------------

def batch(rows, compression: int = 0, producer_id: int = -1) -> bytes:
    builder = DefaultRecordBatchBuilder(magic=2, compression_type=compression, is_transactional=False,
                                        producer_id=producer_id, producer_epoch=-1, base_sequence=-1,
                                        batch_size=1 << 30)
    for n, (key, value, headers) in enumerate(rows):
        builder.append(n, timestamp=int(time.time() * 1000), key=key, value=value, headers=headers)
    return bytes(builder.build())


def produce_raw(address: str, topic: str, records: bytes, version: int = 9) -> dict:
    """One Produce request with one partition; its partition response."""
    with connect(address) as sock:
        return produce_on(sock, topic, records, version)


def produce_on(sock: socket.socket, topic: str, records: bytes, version: int = 9) -> dict:
    body = {"transactional_id": None, "acks": -1, "timeout_ms": 10000,
            "topic_data": [{"name": topic, "partition_data": [{"index": 0, "records": records}]}]}
    sock.sendall(request_frame(0, version, body, correlation_id=11))
    correlation_id, response = read_response(sock, 0, version)
    assert correlation_id == 11
    [entry] = response["responses"]
    [partition] = entry["partition_responses"]
    return partition


def test_invalid_records_are_refused_with_their_index_and_reason(gateway, kafka):
    topic = unique("validated.orders")
    create_topics(kafka, topic)
    header = [("source", b"test")]
    rows = [(None, b'{"id": 1, "amount": 2.5}', header),
            (None, b'{"id": 2, "amount": "lots"}', header),
            (None, b'{"id": 3, "amount": 1', header),
            (None, b'{"id": 4, "amount": 4}', []),
            (None, b'{"id": 5, "amount": 5}', header)]
    answer = produce_raw(gateway.bootstrap, topic, batch(rows))
    assert answer["error_code"] == INVALID_RECORD
    errors = {e["batch_index"]: e["batch_index_error_message"] for e in answer["record_errors"]}
    assert sorted(errors) == [1, 2, 3], answer
    assert "$.amount" in errors[1] and "number" in errors[1]
    assert "not JSON" in errors[2]
    assert "source" in errors[3]
    assert "record 1: $.amount" in answer["error_message"]
    assert broker_count(kafka, topic) == 0  # the batch never reached the broker

    good = produce_raw(gateway.bootstrap, topic, batch([rows[0], rows[4]]))
    assert good["error_code"] == 0 and good["base_offset"] == 0


def test_malformed_json_flood_is_refused_and_throttled(gateway, kafka):
    """A CI job writing a mix of valid and invalid JSON at full speed: it is told which records
    were invalid, consumers see only valid records, and it is slowed to its limit."""
    topic = unique("limited.flood")
    create_topics(kafka, topic)
    producer = KafkaProducer(bootstrap_servers=gateway.bootstrap, acks="all", linger_ms=5, batch_size=16384,
                             retries=0, **auth())
    started = time.monotonic()
    futures = []
    for i in range(3000):
        value = b"{not json" if i % 500 == 7 else orjson.dumps({"n": i, "pad": "x" * 40})
        futures.append((value, producer.send(topic, value, partition=0)))
    producer.flush(TIMEOUT * 4)
    elapsed = time.monotonic() - started
    accepted, refused = [], []
    for value, future in futures:
        try:
            future.get(TIMEOUT)
            accepted.append(value)
        except Exception as err:
            refused.append((value, err))
    throttle = max(group.get("throttle-time-max") or 0 for group in producer.metrics().values())
    producer.close()

    assert refused, "no batch was refused"
    # KIP-467: the invalid record is named, its batch mates are refused with it.
    invalid = [err for value, err in refused if value == b"{not json"]
    assert len(invalid) == 6 and all(type(err).__name__ == "InvalidRecordError" for err in invalid), invalid
    assert all("value is not JSON" in str(err) for err in invalid), invalid
    assert all("invalid record" in str(err) for value, err in refused if value != b"{not json"), refused[:3]
    assert b"{not json" not in accepted
    # Consumers see exactly the accepted records.
    assert [r[1] for r in broker_records(kafka, topic, len(accepted))] == accepted
    assert broker_count(kafka, topic) == len(accepted)
    # 1000 records/s with one second of allowance: 3000 records take about two seconds at least.
    assert throttle > 0
    assert elapsed > 1.5, f"3000 records in {elapsed:.2f} s: not throttled to 1000/s"


def test_throttle_time_is_kafkas_and_the_response_waits(gateway, kafka):
    topic = unique("limited.raw")
    create_topics(kafka, topic)
    # 1500 records against 1000/s with one second's allowance: half a second of debt.
    records = batch([(None, orjson.dumps({"n": i}), []) for i in range(1500)])
    body = {"transactional_id": None, "acks": -1, "timeout_ms": 10000,
            "topic_data": [{"name": topic, "partition_data": [{"index": 0, "records": records}]}]}
    with connect(gateway.bootstrap) as sock:
        asked = time.monotonic()
        sock.sendall(request_frame(0, 9, body, correlation_id=12))
        _, response = read_response(sock, 0, 9)
        waited = time.monotonic() - asked
    assert response["responses"][0]["partition_responses"][0]["error_code"] == 0  # served, not refused
    assert 400 <= response["throttle_time_ms"] <= 600, response["throttle_time_ms"]
    assert waited >= response["throttle_time_ms"] / 1000


# -- dead letters --------------------------------------------------------------------------------

def test_invalid_records_go_to_the_dead_letter_topic(gateway, kafka):
    topic = unique("deadletter.orders")
    create_topics(kafka, topic, DEAD_LETTER_TOPIC)
    before = broker_count(kafka, DEAD_LETTER_TOPIC)
    rows = [(b"a", b'{"id": 1, "amount": 1}', []),
            (b"b", b'{"id": "two"}', [("trace", b"t-2")]),
            (b"c", b'{"id": 3, "amount": 3}', []),
            (b"d", b"[1, 2", [])]
    assert confluent_send(gateway.bootstrap, topic, rows, **auth("confluent")) == [None] * 4
    assert [r[1] for r in broker_records(kafka, topic, 2)] == [rows[0][1], rows[2][1]]
    assert broker_count(kafka, topic) == 2

    dead = broker_records(kafka, DEAD_LETTER_TOPIC, before + 2)[before:]
    assert [(r[0], r[1]) for r in dead] == [(b"b", rows[1][1]), (b"d", rows[3][1])]
    headers = [dict(r[2]) for r in dead]
    assert headers[0]["trace"] == b"t-2"
    for found in headers:
        assert found["brokerguard.topic"] == topic.encode()
        assert found["brokerguard.partition"] == b"0"
        assert found["brokerguard.validation"] == b"test-order-dead-letter"
    assert b"$.id" in headers[0]["brokerguard.reason"] or b"amount" in headers[0]["brokerguard.reason"]
    assert b"not JSON" in headers[1]["brokerguard.reason"]


def test_idempotent_batches_with_invalid_records_are_refused_not_split(gateway, kafka):
    topic = unique("deadletter.idempotent")
    create_topics(kafka, topic, DEAD_LETTER_TOPIC)
    errors = confluent_send(gateway.bootstrap, topic, [(None, b'{"id": 1, "amount": 1}', []), (None, b"oops", [])],
                            **auth("confluent"), **{"enable.idempotence": True, "linger.ms": 100})
    assert all(err is not None and err.code() == KafkaError.INVALID_RECORD for err in errors), errors
    assert broker_count(kafka, topic) == 0


# -- hostile payloads ----------------------------------------------------------------------------

HOSTILE = {
    "deeply nested": b"[" * 100_000 + b"]" * 100_000,
    "huge number": b'{"card": {"number": 1' + b"0" * 400 + b"}}",
    "invalid utf-8": b'{"email": "\xff\xfe"}',
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_json_is_refused_and_the_gateway_keeps_serving(gateway, kafka, name):
    topic = unique("hostile.json")
    create_topics(kafka, topic)
    with connect(gateway.bootstrap) as sock:
        answer = produce_on(sock, topic, batch([(None, HOSTILE[name], [])]))
        assert answer["error_code"] == INVALID_RECORD, answer
        assert answer["record_errors"][0]["batch_index"] == 0
        # The same connection goes on working.
        assert produce_on(sock, topic, batch([(None, b'{"ok": true}', [])]))["error_code"] == 0
    assert broker_count(kafka, topic) == 1


def test_decompression_bomb_and_crc_mismatch_are_corrupt_messages(gateway, kafka):
    topic = unique("hostile.batches")
    create_topics(kafka, topic)
    bomb = batch([(None, b"{" + b" " * (100 << 20) + b"}", [])], compression=1)  # gzip: 100 MiB of spaces
    assert len(bomb) < 1 << 20
    damaged = bytearray(batch([(None, b'{"ok": 1}', [])]))
    damaged[-1] ^= 0xFF  # the CRC covers the records
    with connect(gateway.bootstrap) as sock:
        answer = produce_on(sock, topic, bomb)
        assert answer["error_code"] == CORRUPT_MESSAGE, answer
        assert "decompress" in answer["error_message"]
        answer = produce_on(sock, topic, bytes(damaged))
        assert answer["error_code"] == CORRUPT_MESSAGE, answer
        assert "CRC" in answer["error_message"]
        assert produce_on(sock, topic, batch([(None, b'{"ok": true}', [])]))["error_code"] == 0
    assert broker_count(kafka, topic) == 1


# -- connections per identity ----------------------------------------------------------------------

def test_connections_per_identity(own_gateway):
    gateway = own_gateway()
    gateway.config["limits"] = {"connections_per_identity": 2}
    gateway.start()
    first, second = connect(gateway.bootstrap), connect(gateway.bootstrap)
    try:
        with pytest.raises(AssertionError, match="Too many connections"):
            connect(gateway.bootstrap)
    finally:
        first.close()
    time.sleep(0.2)  # the gateway sees the close
    connect(gateway.bootstrap).close()
    second.close()
