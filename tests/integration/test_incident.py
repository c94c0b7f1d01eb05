"""The incident of DESIGN.md, end to end, with the SIEM a real HTTP receiver.

A contractor publishes, is offboarded (revoked): the session is cut, the next login refused, and
both reach the SIEM as alerts. A CI job floods a topic with malformed JSON: it gets
INVALID_RECORD, and the SIEM an alert with its identity and the (masked) payload. Responders
list and show the sessions and replay the contractor's into a sandbox, byte-identical. While
the receiver is down, alerts wait in the webhook's outbox; back up, every one arrives once.
"""

from __future__ import annotations

import base64
import json
import sqlite3
import time
import uuid

import pytest
from confluent_kafka import Producer as CfProducer

from harness import TESTER, User, auth, connect, create_topics, eventually, replay_session
from receiver import Receiver

pytestmark = pytest.mark.kafka

CONTRACTOR = User("contractor", "contractor-secret-77e", ("testers",))
INTRUDER = User("intruder", "intruder-secret-0c4", ())  # no group: every rule denies it
TIMEOUT = 30


@pytest.fixture
def siem():
    receiver = Receiver()
    yield receiver
    if receiver._server is not None:
        receiver.stop()


def alerts(siem: Receiver, kind: str | None = None) -> list[dict]:
    return [e for e in siem.events() if e["kind"] == "alert" and (kind is None or e["alert"] == kind)]


def test_the_incident(own_gateway, kafka, siem):
    gateway = own_gateway(users=(CONTRACTOR, INTRUDER), audit={"sinks": [
        {"type": "sqlite"},
        {"type": "webhook", "url": siem.url(), "events": "alerts", "secret_env": "SIEM_SECRET"},
    ]})
    gateway.env["SIEM_SECRET"] = "siem-hmac-key-31c"
    gateway.start()
    evidence, orders, sandbox = (f"evidence.{uuid.uuid4().hex[:8]}", f"validated.{uuid.uuid4().hex[:8]}",
                                 f"evidence.sandbox-{uuid.uuid4().hex[:8]}")
    create_topics(kafka, evidence, orders, sandbox)

    # The contractor still holds a credential that can publish (evidence.*: captured in full).
    sent = [(f"k{n}".encode(), f'{{"n": {n}, "to": "acct-{n}"}}'.encode(), [("origin", b"laptop")],
             1_700_000_100_000 + n) for n in range(5)]
    producer = CfProducer({"bootstrap.servers": gateway.bootstrap, **auth("confluent", user=CONTRACTOR),
                           "linger.ms": 0})
    for key, value, headers, stamp in sent:
        producer.produce(evidence, key=key, value=value, headers=headers, timestamp=stamp)
    producer.flush(TIMEOUT)
    gateway.cli("identities", "revoke", CONTRACTOR.name, "--reason", "offboarded")
    gateway.wait_for_log(f"identity {CONTRACTOR.name} revoked")
    del producer
    with pytest.raises(AssertionError, match="SaslAuthenticate"):
        connect(gateway.bootstrap, CONTRACTOR)

    revoked = eventually(lambda: alerts(siem, "revoked"), lambda found: len(found) >= 2)
    assert {a["identity"] for a in revoked} >= {CONTRACTOR.name} and len(revoked) >= 2
    assert any("revoked" in (a["reason"] or "") for a in revoked)

    # The CI job's malformed-JSON flood.
    flood = CfProducer({"bootstrap.servers": gateway.bootstrap, **auth("confluent"), "linger.ms": 20,
                        "batch.num.messages": 100})
    results = []
    for n in range(300):
        value = b'{"id": %d, "amount": 1.5}' % n if n % 3 else b'{"id": %d, "amount": "lots", "card": "4111 1111 1111 1111"' % n
        flood.produce(orders, value=value, headers=[("source", b"ci")], on_delivery=lambda err, msg: results.append(err))
    flood.flush(TIMEOUT)
    assert any(err is not None and err.name() == "INVALID_RECORD" for err in results)
    [invalid] = eventually(lambda: alerts(siem, "invalid")[:1], bool)
    assert invalid["identity"] == TESTER.name and invalid["session"]
    payload = invalid["payload"]
    assert payload["capture"] == "masked" and payload["partitions"][0]["topic"] == orders
    values = [base64.b64decode(r["value"]) for p in payload["partitions"] for r in p["records_data"]]
    assert values and not any(b"4111 1111 1111 1111" in v for v in values)

    # Responders: the contractor's sessions, the timeline, and a replay into a sandbox.
    listed = json.loads(gateway.cli("sessions", "list", "--identity", CONTRACTOR.name, "--topic", evidence,
                                    "--format", "json").stdout)
    assert listed and any("revoked" in (s["end_reason"] or "") for s in listed)
    session = listed[0]["session"]
    timeline = gateway.cli("sessions", "show", session).stdout
    assert f"logged in as {CONTRACTOR.name}" in timeline and "Produce" in timeline and "revoked" in timeline
    assert f"payload (full): {evidence}[0] " in timeline and " blake3:" in timeline
    assert replay_session(gateway, kafka, session, sandbox, len(sent)) == sent

    # The SIEM is down for a while: alerts wait in the outbox, then arrive, each once.
    siem.stop()
    intruder = CfProducer({"bootstrap.servers": gateway.bootstrap, **auth("confluent", user=INTRUDER),
                           "message.timeout.ms": 5000})
    intruder.produce(evidence, b"let me in")
    intruder.flush(10)
    del intruder
    store = sqlite3.connect(gateway.work_dir / "audit.db")

    def stored_alerts():
        return {(e["stream"], e["index"]) for e in (json.loads(line) for (line,) in
                store.execute("SELECT line FROM events WHERE kind = 'alert'"))}

    eventually(stored_alerts, lambda found: any(
        json.loads(line)["identity"] == INTRUDER.name
        for (line,) in store.execute("SELECT line FROM events WHERE kind = 'alert'")))
    time.sleep(1)  # some deliveries fail meanwhile: the receiver's port is closed
    siem.start()
    expected = stored_alerts()
    received = eventually(lambda: [(e["stream"], e["index"]) for e in alerts(siem)],
                          lambda got: set(got) >= expected, timeout=90)
    assert set(received) >= expected
    assert len(received) == len(set(received)), "an alert arrived twice"
    assert any(a["identity"] == INTRUDER.name and a["alert"] == "denied" for a in alerts(siem))
