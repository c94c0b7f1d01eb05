"""The audit trail of a real gateway: sessions, one event per request with its decision and
outcome, `brokerguard sessions` and `brokerguard audit verify` (and tampering caught)."""

from __future__ import annotations

import base64
import json
import shutil
import sqlite3
import subprocess
import uuid

import pytest
import yaml
from confluent_kafka import Producer as CfProducer
from kafka import KafkaProducer

from brokerguard._native import encode_batch
from harness import (BROKERGUARD, SHIPPED_RULES, TESTER, Gateway, User, auth, connect, create_topics, eventually,
                     read_response, replay_session, request_frame)

pytestmark = pytest.mark.kafka

PAYMENTS = User("svc-payments", "payments-secret-31", ())
NOBODY = User("mallory", "mallory-secret-40", ())
TIMEOUT = 30


@pytest.fixture(scope="module")
def gateway(kafka, tmp_path_factory):
    work = tmp_path_factory.mktemp("audit")
    rules = work / "rules"
    shutil.copytree(SHIPPED_RULES, rules)
    gateway = Gateway(kafka, work, users=(PAYMENTS, NOBODY), rules=rules).start()
    yield gateway
    gateway.stop()


@pytest.fixture(scope="module")
def topic(kafka):
    name = f"payments.cards-{uuid.uuid4().hex[:8]}"
    create_topics(kafka, name)
    return name


def sessions(gateway: Gateway, *args: str) -> list[dict]:
    return json.loads(gateway.cli("sessions", "list", "--format", "json", *args).stdout)


def timeline(gateway: Gateway, session: str) -> list[dict]:
    return json.loads(gateway.cli("sessions", "show", session, "--format", "json").stdout)


def produce(gateway: Gateway, user: User, topic: str, value: bytes) -> None:
    producer = KafkaProducer(bootstrap_servers=gateway.bootstrap, acks="all", client_id=f"audit-{user.name}",
                             **auth(user=user))
    try:
        producer.send(topic, value).get(timeout=TIMEOUT)
    finally:
        producer.close()


def test_allowed_and_denied_requests_are_recorded_per_session(gateway, topic):
    produce(gateway, PAYMENTS, topic, b'{"amount": 1}')
    denied = CfProducer({"bootstrap.servers": gateway.bootstrap, "client.id": "audit-mallory",
                         **auth("confluent", user=NOBODY)})
    errors = []
    denied.produce(topic, b"not yours", on_delivery=lambda err, msg: errors.append(err))
    denied.flush(TIMEOUT)
    assert errors and errors[0].name() == "TOPIC_AUTHORIZATION_FAILED"
    del denied

    mine = eventually(lambda: sessions(gateway, "--identity", "svc-payments", "--topic", topic),
                      lambda found: found and found[0]["ended"])
    assert mine and mine[0]["requests"] >= 2 and mine[0]["denied"] == 0
    assert mine[0]["client_id"] == "audit-svc-payments" and mine[0]["end_reason"]
    events = timeline(gateway, mine[0]["session"])
    kinds = [e["kind"] for e in events]
    assert kinds[0] == "session_start" and kinds[1] == "login" and kinds[-1] == "session_end"
    [write] = [e for e in events if e["kind"] == "request" and e["api"] == "Produce"]
    assert write["decision"] == "allow" and write["outcome"] == "ok" and write["latency_ms"] >= 0
    assert write["operations"] == [{"action": "produce", "resource": f"topic:{topic}", "decision": "allow",
                                    "rule": write["rule"], "reason": write["reason"]}]
    assert write["identity"] == "svc-payments" and write["seq"] >= 1

    theirs = eventually(lambda: sessions(gateway, "--identity", "mallory", "--denied"),
                        lambda found: any(topic in s["topics"] for s in found))
    session = next(s for s in theirs if topic in s["topics"])
    # librdkafka learns from Metadata that the topic is not its to write: that request is the refusal
    refused = [e for e in timeline(gateway, session["session"]) if e["kind"] == "request"
               and any(op["resource"] == f"topic:{topic}" and op["decision"] == "deny" for op in e["operations"])]
    assert refused, "the refused request has an event"
    event = refused[0]
    assert event["decision"] in ("deny", "partial") and event["outcome"] == "error"
    assert event["errors"][f"topic:{topic}"].startswith("TOPIC_AUTHORIZATION_FAILED")
    assert event["rule"] == "default-deny" and "mallory" in event["reason"]


def refused_requests(topic: str) -> dict[str, tuple[int, int, dict]]:
    """API name -> (api key, version, body) of a request naming only `topic`."""
    fetch_partition = {"partition": 0, "current_leader_epoch": -1, "fetch_offset": 0, "last_fetched_epoch": -1,
                       "log_start_offset": -1, "partition_max_bytes": 1 << 20}
    return {
        "Produce": (0, 9, {"transactional_id": None, "acks": -1, "timeout_ms": 10000, "topic_data": [
            {"name": topic, "partition_data": [{"index": 0, "records": encode_batch([None], [b"{}"], [[]], [0])}]}]}),
        "Fetch": (1, 12, {"replica_id": -1, "max_wait_ms": 100, "min_bytes": 1, "max_bytes": 1 << 20,
                          "isolation_level": 0, "session_id": 0, "session_epoch": -1,
                          "topics": [{"topic": topic, "partitions": [fetch_partition]}],
                          "forgotten_topics_data": [], "rack_id": ""}),
    }


@pytest.mark.parametrize("api", ["Produce", "Fetch"])
def test_a_request_refused_on_the_fast_path_lists_its_decision_once(gateway, topic, api):
    """Produce and Fetch are decided first by readers that take only their topics; one they
    refuse is then decoded and decided again to answer it. Its event names each decision once."""
    api_key, version, body = refused_requests(topic)[api]
    client_id = f"audit-refused-{api.lower()}"
    with connect(gateway.bootstrap, NOBODY) as sock:
        sock.sendall(request_frame(api_key, version, body, correlation_id=7, client_id=client_id))
        correlation_id, reply = read_response(sock, api_key, version)
    assert correlation_id == 7
    [entry] = reply["responses"]
    [partition] = entry["partition_responses" if api == "Produce" else "partitions"]
    assert partition["error_code"] == 29  # TOPIC_AUTHORIZATION_FAILED

    def refused() -> list[dict]:
        return [event for session in sessions(gateway, "--identity", "mallory")
                for event in timeline(gateway, session["session"])
                if event["kind"] == "request" and event.get("client_id") == client_id]

    [event] = eventually(refused, bool)
    assert event["api"] == api and event["decision"] == "deny" and event["outcome"] == "refused"
    assert event["operations"] == [{"action": "produce" if api == "Produce" else "consume",
                                    "resource": f"topic:{topic}", "decision": "deny",
                                    "rule": "default-deny", "reason": event["reason"]}]


def test_a_failed_login_is_recorded(gateway):
    wrong = User("svc-payments", "not-the-password", ())
    # One attempt on a raw connection: a client library would retry into the failure budget
    # and lock the other tests of this address out.
    with pytest.raises(AssertionError, match="SaslAuthenticate"):
        connect(gateway.bootstrap, wrong)
    store = sqlite3.connect(gateway.work_dir / "audit.db")

    def failed_logins():
        return [json.loads(line) for (line,) in store.execute("SELECT line FROM events WHERE kind = 'login'")
                if not json.loads(line)["ok"]]

    failures = eventually(failed_logins, bool)
    assert failures and "authentication failed" in failures[0]["reason"]
    assert failures[0]["peer"].startswith("127.0.0.1:")


def test_the_trail_verifies_and_tampering_is_named(gateway, topic):
    produce(gateway, PAYMENTS, topic, b'{"amount": 2}')
    eventually(lambda: gateway.cli("audit", "verify").stdout, lambda out: "intact" in out)
    result = gateway.cli("audit", "verify", "--format", "json")
    report = json.loads(result.stdout)
    assert report["intact"] and report["keyed"] and report["events"] > 5

    # Tamper with a copy (SQLite's backup API: a consistent one), as someone with the file would.
    copy = gateway.work_dir / "tampered.db"
    with sqlite3.connect(copy) as target:
        sqlite3.connect(gateway.work_dir / "audit.db").backup(target)
    config = yaml.safe_load(gateway.config_file.read_text())
    config["audit"]["sinks"] = [{"type": "sqlite", "path": str(copy)}]
    tampered_config = gateway.work_dir / "tampered.yaml"
    tampered_config.write_text(yaml.safe_dump(config))

    def verify_copy() -> subprocess.CompletedProcess:
        return subprocess.run([BROKERGUARD, "audit", "verify", "--config", str(tampered_config)], env=gateway.env,
                              capture_output=True, text=True, timeout=60)

    assert verify_copy().returncode == 0
    db = sqlite3.connect(copy)
    stream, index, line = db.execute("SELECT stream, idx, line FROM events WHERE kind = 'request' "
                                      "ORDER BY time LIMIT 1").fetchone()
    edited = json.loads(line)
    edited["decision"] = "deny"
    db.execute("UPDATE events SET line = ? WHERE stream = ? AND idx = ?", (json.dumps(edited), stream, index))
    db.commit()
    result = verify_copy()
    assert result.returncode == 1
    assert f"TAMPERED stream {stream} event {index}: edited" in result.stdout and "NOT intact" in result.stdout

    db.execute("UPDATE events SET line = ? WHERE stream = ? AND idx = ?", (line, stream, index))
    db.execute("DELETE FROM events WHERE stream = ? AND idx = ?", (stream, index + 1))
    db.commit()
    result = verify_copy()
    assert result.returncode == 1
    assert f"TAMPERED stream {stream} event {index + 1}: event {index + 1} removed" in result.stdout


def own_events(gateway: Gateway, topic: str, api: str) -> list[dict]:
    """The `api` request events about `topic`, from the gateway's SQLite store."""
    store = sqlite3.connect(gateway.work_dir / "audit.db")
    found = []
    for (line,) in store.execute("SELECT line FROM events WHERE kind = 'request' ORDER BY time"):
        event = json.loads(line)
        if event["api"] == api and any(op["resource"] == f"topic:{topic}" for op in event["operations"]):
            found.append(event)
    return found


def test_capture_keeps_what_rules_and_config_say(own_gateway, kafka):
    """evidence.*: a rule keeps the full records; validated.*: the invalid produce is kept masked."""
    gateway = own_gateway().start()
    evidence, validated = f"evidence.{uuid.uuid4().hex[:8]}", f"validated.{uuid.uuid4().hex[:8]}"
    create_topics(kafka, evidence, validated)
    producer = CfProducer({"bootstrap.servers": gateway.bootstrap, **auth("confluent"), "linger.ms": 0})
    results = []
    producer.produce(evidence, key=b"k-1", value=b'{"card": "4111 1111 1111 1111"}', headers=[("trace", b"t-9")],
                     timestamp=1_700_000_000_123, on_delivery=lambda err, msg: results.append(err))
    producer.flush(TIMEOUT)
    producer.produce(validated, value=b'{"id": 1, "note": "card 4111 1111 1111 1111"}', headers=[("source", b"t")],
                     on_delivery=lambda err, msg: results.append(err))
    producer.flush(TIMEOUT)
    assert results[0] is None and results[1].name() == "INVALID_RECORD"

    [kept] = eventually(lambda: own_events(gateway, evidence, "Produce"), bool)
    [partition] = kept["payload"]["partitions"]
    assert kept["payload"]["capture"] == "full" and partition["records"] == 1
    [record] = partition["records_data"]
    assert base64.b64decode(record["key"]) == b"k-1"
    assert base64.b64decode(record["value"]) == b'{"card": "4111 1111 1111 1111"}'
    assert record["headers"] == [["trace", base64.b64encode(b"t-9").decode()]]
    assert record["timestamp"] == 1_700_000_000_123
    assert len(partition["blake3"]) == 64 and "sha256" not in partition  # the default digest

    [refused] = eventually(lambda: own_events(gateway, validated, "Produce"), bool)
    assert refused["outcome"] == "refused" and refused["errors"][f"topic:{validated}[0]"].startswith("INVALID_RECORD")
    assert refused["payload"]["capture"] == "masked"
    [record] = refused["payload"]["partitions"][0]["records_data"]
    value = base64.b64decode(record["value"])
    assert b"4111 1111 1111 1111" not in value and b'"id":1' in value.replace(b" ", b"")


def test_a_captured_session_replays_byte_identical_into_a_sandbox(own_gateway, kafka):
    gateway = own_gateway().start()
    evidence, sandbox = f"evidence.{uuid.uuid4().hex[:8]}", f"evidence.sandbox-{uuid.uuid4().hex[:8]}"
    create_topics(kafka, evidence, sandbox)
    sent = [(f"k{n}".encode() if n % 3 else None, f'{{"n": {n}, "note": "é\\u0000"}}'.encode(),
             [("trace", f"t{n}".encode()), ("empty", b"")], 1_700_000_000_000 + n) for n in range(20)]
    producer = CfProducer({"bootstrap.servers": gateway.bootstrap, **auth("confluent"), "linger.ms": 5,
                           "compression.type": "lz4"})
    for key, value, headers, stamp in sent:
        producer.produce(evidence, key=key, value=value, headers=headers, timestamp=stamp)
    producer.flush(TIMEOUT)
    del producer
    session = eventually(lambda: own_events(gateway, evidence, "Produce"), bool)[0]["session"]
    eventually(lambda: sum(p["records"] for e in own_events(gateway, evidence, "Produce")
                           for p in e["payload"]["partitions"]), lambda n: n == len(sent))

    assert replay_session(gateway, kafka, session, sandbox, len(sent)) == sent

    denied = gateway.cli("sessions", "replay", session, "--to", sandbox, check=False)  # no login: refused
    assert denied.returncode != 0 and "replay to" in denied.stderr


def test_two_gateways_share_one_audit_topic(own_gateway, kafka):
    """The fleet pattern: both gateways write to one Kafka topic; either lists both's sessions."""
    audit_topic = f"brokerguard.audit-{uuid.uuid4().hex[:8]}"
    sinks = {"sinks": [{"type": "kafka", "bootstrap_servers": [kafka.bootstrap], "topic": audit_topic}]}
    first, second = own_gateway(audit=sinks).start(), own_gateway(audit=sinks).start()
    topic = f"fleet-{uuid.uuid4().hex[:8]}"
    for gateway in (first, second):
        produce(gateway, TESTER, topic, f"via {gateway.port}".encode())

    def listed():
        return json.loads(first.cli("sessions", "list", "--topic", topic, "--format", "json").stdout)

    def ports(sessions):
        return {int(s["listener"].rpartition(":")[2]) for s in sessions}

    found = eventually(listed, lambda sessions: ports(sessions) & first.gateway_ports()
                       and ports(sessions) & second.gateway_ports())
    assert ports(found) & first.gateway_ports() and ports(found) & second.gateway_ports()
    assert len({s["gateway"] for s in found}) == 2 and all(s["identity"] == "tester" for s in found)
    assert json.loads(second.cli("audit", "verify", "--format", "json").stdout)["intact"]


def test_fail_closed_auditing_stops_traffic_until_the_trail_catches_up(own_gateway, kafka):
    """The webhook's outbox is full and its receiver down: the gateway reads no more requests.
    Once the receiver is back, traffic resumes and every event is on record at the receiver."""
    from receiver import Receiver

    siem = Receiver()
    siem.stop()  # down from the start; the port stays ours to reuse
    gateway = own_gateway(audit={"fail_closed": True, "sinks": [
        {"type": "sqlite"}, {"type": "webhook", "url": siem.url(), "max_outbox_events": 10}]}).start()
    topic = f"held-{uuid.uuid4().hex[:8]}"
    create_topics(kafka, topic)
    producer = CfProducer({"bootstrap.servers": gateway.bootstrap, **auth("confluent"), "linger.ms": 0,
                           "message.timeout.ms": 120000})
    for n in range(20):  # their events fill the outbox
        producer.produce(topic, b"before %d" % n)
        producer.flush(10)
        if "auditing is fail-closed" in gateway.log():
            break
    gateway.wait_for_log("audit trail cannot keep up and auditing is fail-closed")
    for n in range(50):
        producer.produce(topic, b"held %d" % n)
    assert producer.flush(3) > 0, "records were written although the audit trail could not take their events"

    siem.start()
    assert producer.flush(60) == 0
    del producer
    gateway.wait_for_log("audit trail caught up")
    store = sqlite3.connect(gateway.work_dir / "audit.db")
    recorded = {(s, i) for s, i in store.execute("SELECT stream, idx FROM events")}
    received = eventually(lambda: {(e["stream"], e["index"]) for e in siem.events()}, lambda got: got >= recorded)
    assert received >= recorded
    produced = [e for e in (json.loads(line) for (line,) in store.execute("SELECT line FROM events WHERE kind = 'request'"))
                if e["api"] == "Produce"]
    assert produced and all(e["outcome"] == "ok" for e in produced)
