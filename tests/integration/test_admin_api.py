"""The admin API of a real gateway, over real HTTP: sessions, replay, verification, auth, and
the admin process's life beside the workers."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml
from confluent_kafka import Producer as CfProducer
from kafka import KafkaConsumer, TopicPartition

from harness import BROKERGUARD, TESTER, Gateway, User, auth, create_topics, eventually, free_port_range

pytestmark = pytest.mark.kafka

NOBODY = User("mallory", "mallory-secret-40", ())  # tests/rules allow her nothing
TOKEN_ENV = "BROKERGUARD_TEST_ADMIN_TOKEN"
TOKEN = "admin-token-for-the-tests-8c41d2"
REPLAY_PASSWORD_ENV = "BROKERGUARD_TEST_REPLAY_PASSWORD"
TIMEOUT = 30


class Admin:
    """The admin API of a gateway, called as any HTTP client would."""

    def __init__(self, url: str, token: str | None = TOKEN) -> None:
        self.url = url
        self.token = token

    def call(self, method: str, path: str, body: Any = None, token: str | None = None,
             raw: bytes | None = None, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], Any]:
        """(status, headers, decoded JSON body) of one request; `token` overrides the admin token
        ("": send none)."""
        sent = dict(headers or {})
        bearer = token if token is not None else self.token
        if bearer and "Authorization" not in sent:
            sent["Authorization"] = f"Bearer {bearer}"
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        if data is not None:
            sent["Content-Type"] = "application/json"
        request = urllib.request.Request(self.url + path, data=data, method=method, headers=sent)
        try:
            with urllib.request.urlopen(request, timeout=120) as response:
                return response.status, _lower(response.headers), json.loads(response.read())
        except urllib.error.HTTPError as err:
            with err:
                return err.code, _lower(err.headers), json.loads(err.read())

    def get(self, path: str, **options: Any) -> tuple[int, dict[str, str], Any]:
        return self.call("GET", path, **options)

    def ok(self, path: str) -> Any:
        status, _, body = self.get(path)
        assert status == 200, f"GET {path}: {status} {body}"
        return body


def _lower(headers: Any) -> dict[str, str]:
    return {name.lower(): value for name, value in headers.items()}


def with_admin(gateway: Gateway, **admin: Any) -> Admin:
    """Configure `gateway` (not yet started) to serve its admin API on a free loopback port."""
    port = free_port_range(1)
    gateway.config["admin"] = {"listen": f"127.0.0.1:{port}", "token_env": TOKEN_ENV, **admin}
    gateway.env[TOKEN_ENV] = TOKEN
    return Admin(f"http://127.0.0.1:{port}")


def serving(admin: Admin) -> bool:
    try:
        return admin.get("/api/health", token="")[0] == 200
    except OSError:
        return False


def wait_until_serving(admin: Admin, gateway: Gateway) -> None:
    assert eventually(lambda: serving(admin), bool), f"admin API not serving:\n{gateway.log()[-4000:]}"


def admin_pids(gateway: Gateway) -> list[int]:
    """Every admin process the gateway started so far, in order, from its log."""
    return [int(pid) for pid in re.findall(r"admin API process (\d+) serving", gateway.log())]


def alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie waiting for its reaper does not)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def produce(gateway: Gateway, topic: str, records: list[tuple], user: User = TESTER) -> list:
    """Send (key, value, headers, timestamp) records with librdkafka; the delivery errors (None: delivered)."""
    producer = CfProducer({"bootstrap.servers": gateway.bootstrap, **auth("confluent", user=user), "linger.ms": 5,
                           "client.id": f"admin-api-{user.name}", "message.timeout.ms": TIMEOUT * 1000})
    results: list = []
    for key, value, headers, stamp in records:
        producer.produce(topic, key=key, value=value, headers=headers, timestamp=stamp,
                         on_delivery=lambda err, msg: results.append(err))
    producer.flush(TIMEOUT)
    return results


def records(count: int) -> list[tuple]:
    return [(f"k{n}".encode() if n % 2 else None, f'{{"n": {n}}}'.encode(), [("trace", f"t{n}".encode())],
             1_700_000_000_000 + n) for n in range(count)]


@pytest.fixture(scope="module")
def evidence(kafka) -> str:
    """A topic whose produce payloads the rules keep in full (tests/rules/content.yaml)."""
    name = f"evidence.{uuid.uuid4().hex[:8]}"
    create_topics(kafka, name)
    return name


@pytest.fixture(scope="module")
def gateway(kafka, tmp_path_factory, evidence):
    gateway = Gateway(kafka, tmp_path_factory.mktemp("admin-api"), users=(NOBODY,))
    gateway.admin = with_admin(gateway, replay_username=TESTER.name, replay_password_env=REPLAY_PASSWORD_ENV)
    gateway.env[REPLAY_PASSWORD_ENV] = TESTER.password
    gateway.start()
    wait_until_serving(gateway.admin, gateway)
    assert produce(gateway, evidence, records(5)) == [None] * 5
    refused = produce(gateway, evidence, records(1), user=NOBODY)
    assert refused and refused[0].name() == "TOPIC_AUTHORIZATION_FAILED"
    yield gateway
    gateway.stop()


def ended_sessions(admin: Admin, query: str) -> list[dict]:
    return eventually(lambda: admin.ok(f"/api/sessions?{query}"),
                      lambda found: bool(found) and all(s["ended"] for s in found))


def producing_session(admin: Admin, user: User, topic: str) -> dict:
    """The ended session that wrote to `topic` (a client also opens others, e.g. for its bootstrap)."""
    def find() -> dict | None:
        for summary in admin.ok(f"/api/sessions?identity={user.name}&topic={topic}"):
            events = admin.ok(f"/api/sessions/{summary['session']}")["events"]
            if summary["ended"] and any(e["kind"] == "request" and e["api"] == "Produce" for e in events):
                return summary
        return None

    found = eventually(find, bool)
    assert found, f"no ended session of {user.name} wrote to {topic}"
    return found


def test_health_needs_no_token_and_everything_else_does(gateway):
    admin = gateway.admin
    status, _, body = admin.get("/api/health", token="")
    assert status == 200 and body == {"ok": True}
    for path in ("/api/sessions", "/api/audit/verify", "/api/no-such-thing"):
        status, headers, body = admin.get(path, token="")
        assert status == 401 and headers["www-authenticate"] == "Bearer", path
        assert "Authorization: Bearer" in body["error"]
        status, headers, body = admin.get(path, token="not-the-token")
        assert status == 401 and headers["www-authenticate"].startswith("Bearer"), path
        assert body == {"error": "the bearer token is not valid"}
    status, _, _ = admin.get("/api/sessions", headers={"Authorization": f"Basic {TOKEN}"})
    assert status == 401
    assert admin.get("/api/no-such-thing")[0] == 404


def test_sessions_are_listed_by_identity_topic_and_denial(gateway, evidence):
    admin = gateway.admin
    mine = producing_session(admin, TESTER, evidence)
    assert mine["identity"] == TESTER.name and evidence in mine["topics"]
    assert mine["requests"] >= 1 and mine["denied"] == 0 and mine["ended"] and mine["end_reason"]

    theirs = ended_sessions(admin, f"topic={evidence}&denied=true")
    assert theirs and {s["identity"] for s in theirs} == {NOBODY.name} and all(s["denied"] > 0 for s in theirs)
    assert all(s["identity"] == NOBODY.name for s in admin.ok(f"/api/sessions?identity={NOBODY.name}"))

    assert mine["session"] in {s["session"] for s in admin.ok(f"/api/sessions?topic={evidence}&since=1h")}
    assert admin.ok(f"/api/sessions?topic={evidence}&until=2000-01-01T00:00") == []
    assert len(admin.ok("/api/sessions?limit=1")) == 1


@pytest.mark.parametrize("query, complaint", [
    ("since=yesterday", "'yesterday' is neither an ISO time"),
    ("until=5x", "'5x' is neither an ISO time"),
    ("limit=0", "`limit` is a whole number from 1 to 10000"),
    ("limit=lots", "`limit` is a whole number"),
    ("denied=maybe", "`denied` is true or false"),
    ("identiy=tester", "unknown parameter identiy"),
])
def test_bad_parameters_are_a_400_that_says_why(gateway, query, complaint):
    status, _, body = gateway.admin.get(f"/api/sessions?{query}")
    assert status == 400 and complaint in body["error"]


def test_a_session_is_shown_with_its_events(gateway, evidence):
    admin = gateway.admin
    mine = producing_session(admin, TESTER, evidence)
    shown = admin.ok(f"/api/sessions/{mine['session']}")
    assert shown["session"] == mine["session"]
    kinds = [event["kind"] for event in shown["events"]]
    assert kinds[0] == "session_start" and kinds[1] == "login" and kinds[-1] == "session_end"
    [write] = [e for e in shown["events"] if e["kind"] == "request" and e["api"] == "Produce"]
    assert write["payload"]["capture"] == "full" and write["decision"] == "allow"

    status, _, body = admin.get("/api/sessions/no-such-session")
    assert status == 404 and body == {"error": "no events of session no-such-session"}


def test_the_trail_verifies_intact(gateway):
    report = gateway.admin.ok("/api/audit/verify")
    assert report["intact"] and report["keyed"] and report["problems"] == []
    assert report["events"] > 5 and report["streams"] >= 1 and isinstance(report["open_streams"], list)


def test_a_session_replays_into_a_sandbox_through_the_gateway(gateway, evidence, kafka):
    admin = gateway.admin
    sandbox = f"evidence.sandbox-{uuid.uuid4().hex[:8]}"
    create_topics(kafka, sandbox)
    mine = producing_session(admin, TESTER, evidence)
    path = f"/api/sessions/{mine['session']}/replay"

    assert admin.call("POST", path, {"to": sandbox}, token="not-the-token")[0] == 401
    status, _, body = admin.call("POST", path, {})
    assert status == 400 and body == {"error": 'name the target topic: {"to": "<topic>"}'}
    assert admin.call("POST", path, raw=b"to=sandbox")[0] == 400
    assert admin.call("POST", "/api/sessions/no-such-session/replay", {"to": sandbox})[0] == 404

    status, _, result = admin.call("POST", path, {"to": sandbox})
    assert status == 200, result
    assert result == {"records": 5, "requests": 1, "skipped": []}

    consumer = KafkaConsumer(bootstrap_servers=kafka.bootstrap, auto_offset_reset="earliest",
                             enable_auto_commit=False, consumer_timeout_ms=10000)
    consumer.assign([TopicPartition(sandbox, 0)])
    sent = records(5)
    replayed = [(m.key, m.value, [(k, v) for k, v in m.headers], m.timestamp) for _, m in zip(sent, consumer)]
    consumer.close()
    assert replayed == sent
    # the replay is an ordinary client of the gateway: it is on record as the replay account
    assert eventually(lambda: admin.ok(f"/api/sessions?identity={TESTER.name}&topic={sandbox}"), bool)


def test_brokerguard_admin_serves_the_same_api_alone(gateway, evidence, tmp_path):
    port = free_port_range(1)
    config = yaml.safe_load(gateway.config_file.read_text())
    config["admin"]["listen"] = f"127.0.0.1:{port}"
    config_file = tmp_path / "admin.yaml"
    config_file.write_text(yaml.safe_dump(config))
    log = open(tmp_path / "admin.log", "wb")
    process = subprocess.Popen([BROKERGUARD, "admin", "--config", str(config_file)], env=gateway.env,
                               stdout=log, stderr=subprocess.STDOUT)
    try:
        admin = Admin(f"http://127.0.0.1:{port}")
        assert eventually(lambda: serving(admin), bool), (tmp_path / "admin.log").read_text()
        assert admin.ok(f"/api/sessions?identity={TESTER.name}&topic={evidence}")
        assert admin.get("/api/sessions", token="")[0] == 401
    finally:
        process.send_signal(signal.SIGTERM)
        code = process.wait(TIMEOUT)
        log.close()
    assert code == 0, (tmp_path / "admin.log").read_text()


def test_a_replay_the_rules_refuse_is_a_502_with_the_reason(own_gateway, kafka):
    gateway = own_gateway(users=(NOBODY,))
    admin = with_admin(gateway, replay_username=NOBODY.name, replay_password_env=REPLAY_PASSWORD_ENV)
    gateway.env[REPLAY_PASSWORD_ENV] = NOBODY.password
    gateway.start()
    wait_until_serving(admin, gateway)
    evidence, sandbox = f"evidence.{uuid.uuid4().hex[:8]}", f"evidence.sandbox-{uuid.uuid4().hex[:8]}"
    create_topics(kafka, evidence, sandbox)
    assert produce(gateway, evidence, records(2)) == [None, None]
    mine = producing_session(admin, TESTER, evidence)

    status, _, body = admin.call("POST", f"/api/sessions/{mine['session']}/replay", {"to": sandbox})
    assert status == 502 and body["error"].startswith(f"replay to {sandbox} failed:")
    assert "AuthorizationFailedError" in body["error"]  # mallory may not even start an idempotent producer
    assert NOBODY.password not in gateway.log()


def test_the_admin_process_is_restarted_and_stops_with_the_gateway(own_gateway):
    gateway = own_gateway()
    admin = with_admin(gateway)  # no replay account
    gateway.start()
    wait_until_serving(admin, gateway)
    status, _, body = admin.call("POST", "/api/sessions/any/replay", {"to": "evidence.sandbox"})
    assert status == 409 and "admin.replay_username" in body["error"]

    [first] = admin_pids(gateway)
    os.kill(first, signal.SIGKILL)
    pids = eventually(lambda: admin_pids(gateway), lambda pids: len(pids) == 2)
    assert len(pids) == 2 and "admin server %d exited unexpectedly" % first in gateway.log()
    wait_until_serving(admin, gateway)

    assert gateway.stop() == 0
    assert not alive(pids[1])
    with pytest.raises(OSError):
        admin.get("/api/health", token="")


def test_the_admin_process_does_not_outlive_a_killed_gateway(own_gateway):
    gateway = own_gateway(workers=2)
    admin = with_admin(gateway)
    gateway.start()
    wait_until_serving(admin, gateway)
    [pid] = admin_pids(gateway)
    try:
        gateway.process.send_signal(signal.SIGKILL)
        gateway.process.wait(TIMEOUT)
        assert not eventually(lambda: alive(pid), lambda running: not running), "the admin process outlived the gateway"
    finally:
        try:
            os.killpg(gateway.process.pid, signal.SIGTERM)  # the workers it left behind
        except ProcessLookupError:
            pass


def test_an_admin_port_in_use_stops_the_start_with_its_address(own_gateway):
    gateway = own_gateway()
    admin = with_admin(gateway)
    port = int(admin.url.rsplit(":", 1)[1])
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", port))
        taken.listen(1)
        with pytest.raises(RuntimeError, match=f"admin.listen 127.0.0.1:{port}: Address already in use"):
            gateway.start()
