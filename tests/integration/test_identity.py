"""Who may connect: OAUTHBEARER tokens from a real OIDC issuer, SCRAM service accounts, mTLS;
nothing before login; refused tokens; KIP-368 session lifetime; revocation of live sessions.

Clients are real (aiokafka, confluent-kafka, kafka-python) or raw sockets where a test must
control each byte of the login.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
import uuid

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.abc import AbstractTokenProvider
from confluent_kafka import Consumer as CfConsumer, Producer as CfProducer
from kafka import KafkaConsumer, KafkaProducer
from kafka.admin import KafkaAdminClient, NewTopic
from kafka.errors import KafkaTimeoutError
from kafka.record.memory_records import MemoryRecordsBuilder

from harness import TESTER, Gateway, User, auth, connect, read_response, request_frame

pytestmark = pytest.mark.kafka

CONTRACTOR = User("contractor", "contractor-secret-9a2", ("testers",))
TIMEOUT = 30


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


@pytest.fixture(scope="module")
def gateway(kafka, oidc, tmp_path_factory):
    """Accepts the test issuer's tokens (audience "brokerguard") and SCRAM service accounts."""
    gateway = Gateway(kafka, tmp_path_factory.mktemp("identity"), users=(CONTRACTOR,),
                      identity={"oidc": {"issuer": oidc.url, "audience": ["brokerguard"],
                                         "jwks_min_refresh_s": 1},
                                # the tests here fail on purpose many times from one address;
                                # the limit has a gateway of its own below
                                "failed_auth_per_minute": 1000}).start()
    yield gateway
    gateway.stop()


def create_topic(kafka, name: str) -> str:
    admin = KafkaAdminClient(bootstrap_servers=kafka.bootstrap)
    try:
        admin.create_topics([NewTopic(name, 1, 1)])
    finally:
        admin.close()
    return name


# -- raw OAUTHBEARER -------------------------------------------------------------------------


def bearer(token: str) -> bytes:
    return f"n,,\x01auth=Bearer {token}\x01\x01".encode()


def oauth_login(address: str, token: str, sock: socket.socket | None = None) -> dict:
    """SaslHandshake + SaslAuthenticate v2 with `token`; the SaslAuthenticate response."""
    sock = sock or connect(address, user=None)
    sock.sendall(request_frame(17, 1, {"mechanism": "OAUTHBEARER"}, correlation_id=11))
    _, handshake = read_response(sock, 17, 1)
    assert handshake["error_code"] == 0, handshake
    sock.sendall(request_frame(36, 2, {"auth_bytes": bearer(token)}, correlation_id=12))
    _, reply = read_response(sock, 36, 2)
    reply["_sock"] = sock
    return reply


def assert_closed(sock: socket.socket, within: float = 5) -> None:
    sock.settimeout(within)
    try:
        assert sock.recv(1) == b"", "the gateway kept the connection open"
    except ConnectionResetError:
        pass
    finally:
        sock.close()


def refused_tokens(oidc) -> dict[str, str]:
    from devstack.oidc import OidcIssuer

    with OidcIssuer(audience="brokerguard") as impostor:  # its keys are not the issuer's
        forged = impostor.issue("mallory", groups=["testers"], iss=oidc.url)
    return {
        "forged": forged,
        "expired": oidc.issue("mallory", groups=["testers"], expires_in=-600),
        "not yet valid": oidc.issue("mallory", groups=["testers"], not_before=int(time.time()) + 600),
        "wrong audience": oidc.issue("mallory", groups=["testers"], audience="another-service"),
        "alg none": oidc.issue("mallory", groups=["testers"], algorithm="none"),
        # HS256 keyed with the issuer's public key: accepted by a verifier that lets the token
        # choose the algorithm (key confusion).
        "HS256 key confusion": oidc.issue("mallory", groups=["testers"], algorithm="HS256"),
        "garbage": "not-a-jwt",
    }


@pytest.mark.parametrize("case", ["forged", "expired", "not yet valid", "wrong audience", "alg none",
                                  "HS256 key confusion", "garbage"])
def test_bad_tokens_are_refused_and_the_connection_closed(gateway, oidc, case):
    reply = oauth_login(gateway.bootstrap, refused_tokens(oidc)[case])
    assert reply["error_code"] == 58, reply  # SASL_AUTHENTICATION_FAILED
    assert reply["error_message"] == "Authentication failed"  # nothing about which check failed
    assert_closed(reply["_sock"])
    assert "authentication failed (OAUTHBEARER)" in gateway.wait_for_log("authentication failed (OAUTHBEARER)")


def test_a_good_token_logs_in_with_its_session_lifetime(gateway, oidc):
    reply = oauth_login(gateway.bootstrap, oidc.issue("alice", groups=["testers"], expires_in=120))
    assert reply["error_code"] == 0, reply
    assert 100_000 < reply["session_lifetime_ms"] <= 120_000
    reply["_sock"].close()


def test_nothing_but_login_before_authentication(gateway):
    with connect(gateway.bootstrap, user=None) as sock:
        sock.sendall(request_frame(18, 3, {"client_software_name": "raw", "client_software_version": "1"}))
        _, versions = read_response(sock, 18, 3)
        offered = {k["api_key"]: (k["min_version"], k["max_version"]) for k in versions["api_keys"]}
        assert offered[17] == (0, 1) and 36 in offered
        sock.sendall(request_frame(3, 12, {"topics": None, "allow_auto_topic_creation": False}))
        assert_closed(sock)
    gateway.wait_for_log("Metadata request before authentication")


def test_handshake_offers_the_configured_mechanisms(gateway):
    with connect(gateway.bootstrap, user=None) as sock:
        sock.sendall(request_frame(17, 1, {"mechanism": "GSSAPI"}))
        _, reply = read_response(sock, 17, 1)
        assert reply["error_code"] == 33  # UNSUPPORTED_SASL_MECHANISM
        # PLAIN is not offered on a listener without TLS
        assert reply["mechanisms"] == ["OAUTHBEARER", "SCRAM-SHA-512", "SCRAM-SHA-256"]


# -- real clients ----------------------------------------------------------------------------


class Tokens(AbstractTokenProvider):
    def __init__(self, oidc, subject: str) -> None:
        self._oidc, self._subject = oidc, subject

    async def token(self) -> str:
        return self._oidc.issue(self._subject, groups=["testers"])


def test_aiokafka_with_oauthbearer(gateway, oidc, kafka):
    topic = create_topic(kafka, unique("oidc-aiokafka"))
    options = dict(bootstrap_servers=gateway.bootstrap, security_protocol="SASL_PLAINTEXT",
                   sasl_mechanism="OAUTHBEARER", sasl_oauth_token_provider=Tokens(oidc, "alice"))

    async def scenario() -> list[bytes]:
        producer = AIOKafkaProducer(acks="all", **options)
        await producer.start()
        try:
            for i in range(5):
                await producer.send_and_wait(topic, f"token-{i}".encode())
        finally:
            await producer.stop()
        consumer = AIOKafkaConsumer(topic, auto_offset_reset="earliest", **options)
        await consumer.start()
        try:
            batches = await consumer.getmany(timeout_ms=15000, max_records=5)
            return [m.value for records in batches.values() for m in records]
        finally:
            await consumer.stop()

    assert asyncio.run(asyncio.wait_for(scenario(), TIMEOUT)) == [f"token-{i}".encode() for i in range(5)]
    assert "as alice (OAUTHBEARER)" in gateway.log()


def confluent_oauth(gateway, oidc, subject: str, expires_in: int = 300) -> dict:
    def token(_config):
        return oidc.issue(subject, groups=["testers"], expires_in=expires_in), time.time() + expires_in

    return {"bootstrap.servers": gateway.bootstrap, "security.protocol": "SASL_PLAINTEXT",
            "sasl.mechanisms": "OAUTHBEARER", "oauth_cb": token}


def consume_all(config: dict, topic: str, count: int) -> list[bytes]:
    consumer = CfConsumer({**config, "group.id": unique("g"), "auto.offset.reset": "earliest"})
    consumer.subscribe([topic])
    values: list[bytes] = []
    deadline = time.monotonic() + TIMEOUT
    try:
        while len(values) < count and time.monotonic() < deadline:
            message = consumer.poll(1.0)
            if message is not None:
                assert message.error() is None, message.error()
                values.append(message.value())
    finally:
        consumer.close()
    return values


def produce_all(config: dict, topic: str, values: list[bytes]) -> None:
    producer = CfProducer({**config, "acks": "all"})
    errors: list = []
    for value in values:
        producer.produce(topic, value, on_delivery=lambda err, _msg: err and errors.append(err))
    assert producer.flush(TIMEOUT) == 0
    assert errors == []


def test_confluent_kafka_with_oauthbearer(gateway, oidc, kafka):
    topic = create_topic(kafka, unique("oidc-confluent"))
    config = confluent_oauth(gateway, oidc, "bob")
    produce_all(config, topic, [b"one", b"two"])
    assert consume_all(config, topic, 2) == [b"one", b"two"]
    assert "as bob (OAUTHBEARER)" in gateway.log()


def test_confluent_kafka_fetches_its_own_token_from_the_issuer(gateway, oidc, kafka):
    """librdkafka's OIDC client-credentials flow: it asks the issuer's token endpoint itself."""
    oidc.register_client("reporting-job", "reporting-secret", subject="svc-reporting", groups=["testers"])
    topic = create_topic(kafka, unique("oidc-flow"))
    config = {"bootstrap.servers": gateway.bootstrap, "security.protocol": "SASL_PLAINTEXT",
              "sasl.mechanisms": "OAUTHBEARER", "sasl.oauthbearer.method": "oidc",
              "sasl.oauthbearer.client.id": "reporting-job", "sasl.oauthbearer.client.secret": "reporting-secret",
              "sasl.oauthbearer.token.endpoint.url": oidc.token_url}
    produce_all(config, topic, [b"from-the-flow"])
    assert consume_all(config, topic, 1) == [b"from-the-flow"]
    assert "as svc-reporting (OAUTHBEARER)" in gateway.log()


def test_librdkafka_reauthenticates_before_its_token_expires(gateway, oidc, kafka):
    """KIP-368: with 6 s tokens the gateway tells the client its session lifetime; the client
    logs in again on the same connection and keeps producing past several expiries."""
    topic = create_topic(kafka, unique("reauth"))
    producer = CfProducer({**confluent_oauth(gateway, oidc, "carol", expires_in=6), "acks": "all"})
    errors: list = []
    end = time.monotonic() + 15
    sent = 0
    while time.monotonic() < end:
        producer.produce(topic, f"r{sent}".encode(), on_delivery=lambda err, _m: err and errors.append(err))
        producer.poll(0.2)
        sent += 1
    assert producer.flush(TIMEOUT) == 0
    assert errors == []
    log = gateway.log()
    assert "as carol (OAUTHBEARER)" in log
    assert "as carol (OAUTHBEARER): logged in again" in log


def test_a_session_that_does_not_reauthenticate_is_closed_at_expiry(gateway, oidc):
    reply = oauth_login(gateway.bootstrap, oidc.issue("dave", groups=["testers"], expires_in=3))
    assert reply["error_code"] == 0 and 0 < reply["session_lifetime_ms"] <= 3000
    assert_closed(reply["_sock"], within=10)
    gateway.wait_for_log("session expired")


def test_reauthentication_keeps_the_session_and_must_keep_the_subject(gateway, oidc):
    first = oauth_login(gateway.bootstrap, oidc.issue("erin", groups=["testers"], expires_in=4))
    sock = first["_sock"]
    second = oauth_login(gateway.bootstrap, oidc.issue("erin", groups=["testers"], expires_in=60), sock=sock)
    assert second["error_code"] == 0 and second["session_lifetime_ms"] > 4000
    time.sleep(5)  # past the first token's expiry: the session lives on the second
    sock.sendall(request_frame(3, 12, {"topics": [], "allow_auto_topic_creation": False}, correlation_id=21))
    correlation_id, _ = read_response(sock, 3, 12)
    assert correlation_id == 21
    other = oauth_login(gateway.bootstrap, oidc.issue("frank", groups=["testers"]), sock=sock)
    assert other["error_code"] == 58
    assert other["error_message"] == "Re-authentication must use the same identity"
    assert_closed(sock)


def test_key_rotation_needs_no_restart(gateway, oidc):
    oidc.rotate()
    reply = oauth_login(gateway.bootstrap, oidc.issue("grace", groups=["testers"]))
    assert reply["error_code"] == 0, reply
    reply["_sock"].close()


# -- SCRAM service accounts and failures -----------------------------------------------------


def test_wrong_password_and_unknown_user_get_the_same_answer(gateway):
    answers = []
    for user in (User(TESTER.name, "wrong"), User("nobody-here", "wrong")):
        started = time.monotonic()
        with pytest.raises(AssertionError) as refused:
            connect(gateway.bootstrap, user)
        answers.append((str(refused.value).split("'error_message': ")[1].split(",")[0], time.monotonic() - started))
    assert answers[0][0] == answers[1][0] == "'Authentication failed'"
    # both answered no sooner than the configured failure delay (20 ms in tests)
    assert all(elapsed >= 0.02 for _, elapsed in answers)


def test_failed_logins_are_limited_per_address(own_gateway):
    gateway = own_gateway(identity={"failed_auth_per_minute": 3}).start()
    for _ in range(3):
        with pytest.raises(AssertionError):
            connect(gateway.bootstrap, User(TESTER.name, "wrong"))
    with pytest.raises(AssertionError):
        connect(gateway.bootstrap, TESTER)  # the right password, but this address is over its limit
    gateway.wait_for_log("too many failed authentications from 127.0.0.1")


def test_a_rotated_password_takes_effect_without_restart(gateway):
    rotated = User(CONTRACTOR.name, "rotated-secret-77")
    gateway.cli("users", "rotate", CONTRACTOR.name, "--password-stdin", input=rotated.password + "\n")
    try:
        logs_in_again(gateway, rotated, within=5)  # the gateway rereads the file within a second
        with pytest.raises(AssertionError):
            connect(gateway.bootstrap, CONTRACTOR)
    finally:
        gateway.cli("users", "rotate", CONTRACTOR.name, "--password-stdin", input=CONTRACTOR.password + "\n")
        logs_in_again(gateway, CONTRACTOR)


# -- revocation ------------------------------------------------------------------------------


def produce_request(topic: str, value: bytes, correlation_id: int) -> bytes:
    builder = MemoryRecordsBuilder(magic=2, compression_type=0, batch_size=1 << 20)
    builder.append(timestamp=None, key=None, value=value, headers=[])
    builder.close()
    return request_frame(0, 9, {"transactional_id": None, "acks": 1, "timeout_ms": 5000, "topic_data": [
        {"name": topic, "partition_data": [{"index": 0, "records": builder.buffer()}]}]},
        correlation_id=correlation_id)


def test_revocation_cuts_a_live_producer_off_within_a_second(gateway, kafka):
    topic = create_topic(kafka, unique("revoke"))
    sock = connect(gateway.bootstrap, CONTRACTOR)
    try:
        for i in range(5):
            sock.sendall(produce_request(topic, f"before-{i}".encode(), 100 + i))
            _, reply = read_response(sock, 0, 9)
            assert reply["responses"][0]["partition_responses"][0]["error_code"] == 0
        gateway.cli("identities", "revoke", CONTRACTOR.name, "--reason", "contract ended")
        revoked = time.monotonic()
        sock.settimeout(2)
        correlation_id = 200
        with pytest.raises((ConnectionError, OSError)):
            while time.monotonic() - revoked < 3:
                correlation_id += 1
                sock.sendall(produce_request(topic, b"after", correlation_id))
                read_response(sock, 0, 9)
                time.sleep(0.02)
        cut_off = time.monotonic() - revoked
        assert cut_off < 1.0, f"still connected {cut_off:.2f} s after the revocation"
        with pytest.raises(AssertionError):
            connect(gateway.bootstrap, CONTRACTOR)
        gateway.wait_for_log(f"identity {CONTRACTOR.name} revoked")
    finally:
        sock.close()
        gateway.cli("identities", "restore", CONTRACTOR.name)
    logs_in_again(gateway, CONTRACTOR)


def logs_in_again(gateway, user: User, within: float = 2) -> None:
    """Log in as `user`, retrying while the workers catch up with a change made through the CLI
    (a restored identity, a rotated password)."""
    deadline = time.monotonic() + within
    while True:
        try:
            connect(gateway.bootstrap, user).close()
            return
        except AssertionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def test_revocation_stops_a_real_client(gateway, kafka):
    topic = create_topic(kafka, unique("revoke-client"))
    producer = KafkaProducer(bootstrap_servers=gateway.bootstrap, acks="all", retries=0,
                             **auth(user=CONTRACTOR))
    try:
        producer.send(topic, b"allowed").get(timeout=TIMEOUT)
        gateway.cli("identities", "revoke", CONTRACTOR.name)
        time.sleep(1)
        with pytest.raises(Exception):
            producer.send(topic, b"refused").get(timeout=10)
        consumer = KafkaConsumer(topic, bootstrap_servers=kafka.bootstrap, auto_offset_reset="earliest",
                                 consumer_timeout_ms=5000)
        assert [m.value for m in consumer] == [b"allowed"]  # read at the broker itself
        consumer.close()
    finally:
        with contextlib.suppress(KafkaTimeoutError):  # its refused record is still queued
            producer.close(timeout=0)
        gateway.cli("identities", "restore", CONTRACTOR.name)
        logs_in_again(gateway, CONTRACTOR)
