"""Least privilege through the gateway, with the shipped rules/ and real clients.

The identities are SCRAM service accounts with groups from the credentials file:
svc-payments (the payments service), ann (analysts), pat (platform-admins), mallory (nobody).
"""

from __future__ import annotations

import shutil
import time
import uuid

import pytest
from confluent_kafka import Producer as CfProducer
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import KafkaAdminClient, NewTopic
from kafka.errors import (GroupAuthorizationFailedError, TopicAuthorizationFailedError,
                          TransactionalIdAuthorizationFailedError)
from kafka.record.memory_records import MemoryRecordsBuilder

from harness import SHIPPED_RULES, Gateway, User, auth, call, connect, read_response, request_frame

pytestmark = pytest.mark.kafka

PAYMENTS = User("svc-payments", "payments-secret-31", ())
ANALYST = User("ann", "ann-secret-58", ("analysts",))
ADMIN = User("pat", "pat-secret-12", ("platform-admins",))
NOBODY = User("mallory", "mallory-secret-40", ())
TIMEOUT = 30


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


@pytest.fixture(scope="module")
def gateway(kafka, tmp_path_factory):
    work = tmp_path_factory.mktemp("authorization")
    rules = work / "rules"
    shutil.copytree(SHIPPED_RULES, rules)  # a copy, so the reload test may change it
    gateway = Gateway(kafka, work, users=(PAYMENTS, ANALYST, ADMIN, NOBODY), rules=rules).start()
    yield gateway
    gateway.stop()


@pytest.fixture(scope="module")
def payments_topic(kafka):
    """Created straight at the broker: the test is about who may use it through the gateway."""
    name = unique("payments.cards")
    admin = KafkaAdminClient(bootstrap_servers=kafka.bootstrap)
    admin.create_topics([NewTopic(name, 1, 1), NewTopic(name + ".refunds", 1, 1)])
    admin.close()
    producer = KafkaProducer(bootstrap_servers=kafka.bootstrap)
    producer.send(name, b"seed").get(timeout=TIMEOUT)
    producer.close()
    return name


@pytest.fixture(scope="module")
def other_topic(kafka):
    name = unique("inventory")
    admin = KafkaAdminClient(bootstrap_servers=kafka.bootstrap)
    admin.create_topics([NewTopic(name, 1, 1)])
    admin.close()
    return name


def records(value: bytes) -> bytes:
    builder = MemoryRecordsBuilder(magic=2, compression_type=0, batch_size=1 << 20)
    builder.append(timestamp=None, key=None, value=value, headers=[])
    builder.close()
    return builder.buffer()


def test_analyst_consumes_payments_but_cannot_publish(gateway, payments_topic):
    consumer = KafkaConsumer(bootstrap_servers=gateway.bootstrap, auto_offset_reset="earliest",
                             consumer_timeout_ms=10000, **auth(user=ANALYST))
    consumer.assign([TopicPartition(payments_topic, 0)])
    assert b"seed" in [m.value for m in consumer]
    consumer.close()
    producer = KafkaProducer(bootstrap_servers=gateway.bootstrap, retries=0, **auth(user=ANALYST))
    try:
        with pytest.raises(TopicAuthorizationFailedError):
            producer.send(payments_topic, b"forged payment").get(timeout=TIMEOUT)
    finally:
        producer.close()
    assert f"produce on topic {payments_topic} refused" in gateway.log()


def test_the_payments_service_publishes(gateway, payments_topic):
    producer = KafkaProducer(bootstrap_servers=gateway.bootstrap, acks="all", **auth(user=PAYMENTS))
    metadata = producer.send(payments_topic, b"card-payment").get(timeout=TIMEOUT)
    producer.close()
    assert metadata.offset >= 1


def test_librdkafka_shows_the_rule_and_reason(gateway, payments_topic):
    producer = CfProducer({"bootstrap.servers": gateway.bootstrap, **auth("confluent", user=ANALYST),
                           "message.send.max.retries": 0})
    errors: list = []
    producer.produce(payments_topic, b"x", on_delivery=lambda err, _m: errors.append(err))
    producer.flush(TIMEOUT)
    assert len(errors) == 1 and errors[0] is not None
    assert errors[0].name() == "TOPIC_AUTHORIZATION_FAILED"


def test_an_unknown_identity_sees_no_topics(gateway, payments_topic, other_topic):
    seen = call(gateway.bootstrap, 3, 12, {"topics": None, "allow_auto_topic_creation": False}, user=NOBODY)
    assert seen["topics"] == []
    assert seen["brokers"], "the brokers are still listed, so a client can go on"
    analyst_view = call(gateway.bootstrap, 3, 12, {"topics": None, "allow_auto_topic_creation": False},
                        user=ANALYST)
    names = {t["name"] for t in analyst_view["topics"]}
    assert payments_topic in names and other_topic not in names
    named = call(gateway.bootstrap, 3, 12, {"topics": [{"name": payments_topic}],
                                            "allow_auto_topic_creation": True}, user=NOBODY)
    assert [(t["name"], t["error_code"]) for t in named["topics"]] == [(payments_topic, 29)]


def test_one_produce_to_an_allowed_and_a_denied_topic(gateway, payments_topic, other_topic):
    """The allowed part reaches the broker; the denied part is answered by the gateway; one
    response holds both, in the protocol's terms."""
    with connect(gateway.bootstrap, PAYMENTS) as sock:
        sock.sendall(request_frame(0, 9, {"transactional_id": None, "acks": -1, "timeout_ms": 10000, "topic_data": [
            {"name": payments_topic, "partition_data": [{"index": 0, "records": records(b"allowed-part")}]},
            {"name": other_topic, "partition_data": [{"index": 0, "records": records(b"denied-part")}]},
        ]}, correlation_id=5))
        correlation_id, reply = read_response(sock, 0, 9)
    assert correlation_id == 5
    by_topic = {t["name"]: t["partition_responses"][0] for t in reply["responses"]}
    assert by_topic[payments_topic]["error_code"] == 0 and by_topic[payments_topic]["base_offset"] >= 0
    assert by_topic[other_topic]["error_code"] == 29  # TOPIC_AUTHORIZATION_FAILED
    assert "default-deny" in by_topic[other_topic]["error_message"]
    direct = KafkaConsumer(bootstrap_servers=gateway.bootstrap, auto_offset_reset="earliest",
                           consumer_timeout_ms=5000, **auth(user=ADMIN))
    direct.assign([TopicPartition(other_topic, 0)])
    assert [m.value for m in direct] == []  # nothing of the denied part reached the broker
    direct.close()


def test_consumer_groups_are_enforced(gateway, payments_topic):
    allowed = KafkaConsumer(payments_topic, bootstrap_servers=gateway.bootstrap, group_id=unique("payments-fraud"),
                            auto_offset_reset="earliest", consumer_timeout_ms=15000, **auth(user=ANALYST))
    assert b"seed" in [m.value for m in allowed]
    allowed.close()
    denied = KafkaConsumer(payments_topic, bootstrap_servers=gateway.bootstrap, group_id=unique("scraper"),
                           auto_offset_reset="earliest", consumer_timeout_ms=5000, **auth(user=ANALYST))
    try:
        with pytest.raises(GroupAuthorizationFailedError):
            list(denied)
    finally:
        denied.close()


def test_transactional_ids_are_enforced(gateway, payments_topic):
    producer = KafkaProducer(bootstrap_servers=gateway.bootstrap, transactional_id=unique("payments-settle"),
                             **auth(user=PAYMENTS))
    producer.init_transactions()
    producer.begin_transaction()
    producer.send(payments_topic, b"in-a-transaction")
    producer.commit_transaction()
    producer.close()
    with pytest.raises(TransactionalIdAuthorizationFailedError):
        other = KafkaProducer(bootstrap_servers=gateway.bootstrap, transactional_id=unique("rogue"),
                              **auth(user=PAYMENTS))
        try:
            other.init_transactions()
        finally:
            other.close()


def test_delete_topics_is_refused_with_a_clear_message(gateway, payments_topic):
    reply = call(gateway.bootstrap, 20, 6, {"topics": [{"name": payments_topic, "topic_id": bytes(16)}],
                                            "timeout_ms": 10000}, user=PAYMENTS)
    (result,) = reply["responses"]
    assert result["error_code"] == 29
    assert "delete on topic" in result["error_message"] and ".yaml:" in result["error_message"]
    admin = KafkaAdminClient(bootstrap_servers=gateway.bootstrap, **auth(user=PAYMENTS))
    try:
        assert payments_topic in admin.list_topics()
    finally:
        admin.close()


def test_platform_admins_may_delete(gateway, kafka):
    name = unique("sandbox.scratch")
    admin = KafkaAdminClient(bootstrap_servers=gateway.bootstrap, **auth(user=ADMIN))
    try:
        admin.create_topics([NewTopic(name, 1, 1)])
        admin.delete_topics([name])
    finally:
        admin.close()


def test_rules_reload_through_the_cli_and_a_broken_set_is_refused(gateway, other_topic):
    rules = gateway.work_dir / "rules"
    (rules / "inventory.yaml").write_text(
        "description: inventory readers\n"
        "resources: {topics: ['inventory-*']}\n"
        "rules:\n"
        "  - name: analysts-read-inventory\n"
        "    allow: [consume, describe]\n"
        "    who: {groups: [analysts]}\n")
    try:
        gateway.cli("rules", "reload")
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            view = call(gateway.bootstrap, 3, 12, {"topics": None, "allow_auto_topic_creation": False}, user=ANALYST)
            if other_topic in {t["name"] for t in view["topics"]}:
                break
            time.sleep(0.1)
        else:
            raise AssertionError("the reloaded rules did not take effect")
        (rules / "broken.yaml").write_text("rules:\n  - name: oops\n    allow: [fly]\n")
        refused = gateway.cli("rules", "reload", check=False)
        assert refused.returncode != 0 and "broken.yaml:3" in refused.stdout + refused.stderr
        gateway.process.send_signal(__import__("signal").SIGHUP)  # a worker refuses it too
        gateway.wait_for_log("rules reload refused")
        view = call(gateway.bootstrap, 3, 12, {"topics": None, "allow_auto_topic_creation": False}, user=ANALYST)
        assert other_topic in {t["name"] for t in view["topics"]}, "the rules in force were kept"
    finally:
        for name in ("inventory.yaml", "broken.yaml"):
            (rules / name).unlink(missing_ok=True)
        gateway.cli("rules", "reload")
