"""The Kafka wire through the gateway, spoken by hand: clients only ever learn gateway addresses,
the gateway offers only versions it can parse, offers its own SASL login, and responses keep the
order of requests.

Requests are built with the gateway's own codec and sent over plain sockets, for every version
the gateway offers (taken from its own ApiVersions answer), so nothing depends on what some client
library happens to send. Every connection to the gateway logs in first (SaslHandshake and
SaslAuthenticate, as clients do) unless the test is about what happens before login.
"""

from __future__ import annotations

import os
import random
import socket
import struct
import time
import uuid

import confluent_kafka
import pytest

from brokerguard.plugins.kafka import authorize
from brokerguard.plugins.kafka.protocol import codec
from devstack.kafka import api_versions
from devstack.processes import recv_exactly
from harness import TESTER, User, auth, connect, login

pytestmark = pytest.mark.kafka

PRODUCE, FETCH, METADATA, FIND_COORDINATOR = 0, 1, 3, 10
SASL_HANDSHAKE, API_VERSIONS, CREATE_TOPICS, SASL_AUTHENTICATE, DESCRIBE_CLUSTER = 17, 18, 19, 36, 60
UNSUPPORTED_SASL_MECHANISM, UNSUPPORTED_VERSION = 33, 35
# What the gateway offers on a plain listener with only a credentials file: PLAIN needs TLS.
GATEWAY_MECHANISMS = {"SCRAM-SHA-512", "SCRAM-SHA-256"}
# Answers a broker gives while it is still creating __consumer_offsets / __transaction_state.
COORDINATOR_LOADING = {14, 15}  # COORDINATOR_LOAD_IN_PROGRESS, COORDINATOR_NOT_AVAILABLE
CLIENT_ID = "address-tests"
SOFTWARE = {"client_software_name": "brokerguard-tests", "client_software_version": "0.1.0"}
TIMEOUT = 30.0


# --------------------------------------------------------------------------- the wire by hand

def _split(address: str) -> tuple[str, int]:
    host, port = address.rsplit(":", 1)
    return host, int(port)


def request_frame(api_key: int, version: int, correlation_id: int, body: dict,
                  body_version: int | None = None) -> bytes:
    """One size-prefixed request; `body_version` encodes the body as another version (for
    requests newer than the codec knows)."""
    payload = (codec.encode_request_header(api_key, version, correlation_id, CLIENT_ID)
               + codec.encode_request(api_key, version if body_version is None else body_version, body))
    return struct.pack(">i", len(payload)) + payload


def read_frame(sock: socket.socket) -> bytes:
    """The next response frame, without its size."""
    size = struct.unpack(">i", recv_exactly(sock, 4))[0]
    return recv_exactly(sock, size)


def decode(payload: bytes, api_key: int, version: int) -> tuple[int, dict]:
    correlation_id, offset = codec.decode_response_header(
        payload, 0, codec.response_header_version(api_key, version))
    return correlation_id, codec.decode_response(api_key, version, payload, offset)


def read_response(sock: socket.socket, api_key: int, version: int) -> tuple[int, dict]:
    """(correlation_id, body) of the next response, decoded as (api_key, version)."""
    return decode(read_frame(sock), api_key, version)


class Wire:
    """One client connection speaking raw Kafka requests, one at a time; logged in as `user`
    first (None: not logged in, as for the broker's own plain listener)."""

    def __init__(self, address: str, user: User | None = TESTER) -> None:
        self.sock = connect(address, user, timeout=TIMEOUT)
        self._next = 0

    def request(self, api_key: int, version: int, body: dict) -> dict:
        self._next += 1
        self.sock.sendall(request_frame(api_key, version, self._next, body))
        correlation_id, response = read_response(self.sock, api_key, version)
        assert correlation_id == self._next
        return response

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> Wire:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def send_request(address: str, api_key: int, version: int, body: dict, user: User | None = TESTER) -> dict:
    """One request on a fresh connection, logged in as `user` first; the decoded response body."""
    with Wire(address, user) as wire:
        return wire.request(api_key, version, body)


# --------------------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def wire(gateway):
    with Wire(gateway.bootstrap) as connection:
        yield connection


@pytest.fixture(scope="module")
def offered(wire) -> dict[int, tuple[int, int]]:
    """The versions the gateway offers, from its own ApiVersions answer."""
    response = wire.request(API_VERSIONS, 3, SOFTWARE)
    assert response["error_code"] == 0
    return {entry["api_key"]: (entry["min_version"], entry["max_version"]) for entry in response["api_keys"]}


def _versions(offered: dict, api_key: int) -> range:
    low, high = offered[api_key]
    return range(low, high + 1)


def wait_for_leaders(wire: Wire, topic: str, partitions: int) -> dict:
    """The topic's Metadata once every partition has a leader (produce with acks=0 needs one)."""
    deadline = time.monotonic() + TIMEOUT
    while True:
        response = wire.request(METADATA, 12, {"topics": [{"name": topic}], "allow_auto_topic_creation": False})
        (found,) = response["topics"]
        if (found["error_code"] == 0 and len(found["partitions"]) == partitions
                and all(p["error_code"] == 0 and p["leader_id"] >= 0 for p in found["partitions"])):
            return response
        assert time.monotonic() < deadline, f"{topic} has no leaders after {TIMEOUT} s: {found}"
        time.sleep(0.1)


def create_topic(wire: Wire, partitions: int = 2) -> str:
    topic = f"addresses-{uuid.uuid4().hex[:10]}"
    response = wire.request(CREATE_TOPICS, 7, {
        "topics": [{"name": topic, "num_partitions": partitions, "replication_factor": 1}],
        "timeout_ms": 15000})
    assert [(t["name"], t["error_code"]) for t in response["topics"]] == [(topic, 0)], response
    wait_for_leaders(wire, topic, partitions)
    return topic


@pytest.fixture(scope="module")
def topic(wire) -> str:
    return create_topic(wire)


def assert_gateway_address(gateway, node_id: int, host: str, port: int) -> None:
    gateway_host = _split(gateway.bootstrap)[0]
    assert (host, port) == (gateway_host, gateway.broker_ports_first + node_id), (
        f"node {node_id} announced at {host}:{port}, not at its gateway port")
    assert port in gateway.gateway_ports()


def until_coordinators_ready(call):
    """`call()` again while the broker is still creating the coordinator's internal topic."""
    deadline = time.monotonic() + TIMEOUT
    while True:
        response = call()
        codes = {c["error_code"] for c in response.get("coordinators", [response])}
        if not codes & COORDINATOR_LOADING or time.monotonic() > deadline:
            return response
        time.sleep(0.1)


# --------------------------------------------------------------------------- addresses

def test_metadata_every_version_announces_only_gateway_addresses(gateway, wire, offered, topic):
    versions = _versions(offered, METADATA)
    assert versions.stop - 1 >= 12, f"the gateway offers Metadata only up to v{versions.stop - 1}"
    for version in versions:
        everything = [] if version == 0 else None  # v0 has no null: an empty list means all
        for topics in (everything, [{"name": topic}]):
            response = wire.request(METADATA, version, {"topics": topics})
            assert response["brokers"], f"Metadata v{version}: no brokers"
            for broker in response["brokers"]:
                assert_gateway_address(gateway, broker["node_id"], broker["host"], broker["port"])
            names = {t["name"]: t for t in response["topics"]}
            assert topic in names, f"Metadata v{version} with topics={topics}: {sorted(names)}"
            assert names[topic]["error_code"] == 0
            leaders = {p["leader_id"] for p in names[topic]["partitions"]}
            assert leaders <= {b["node_id"] for b in response["brokers"]}
            if topics:
                assert list(names) == [topic]


def test_the_broker_itself_announces_other_addresses(gateway, kafka):
    # Without this, the rewriting tests above would pass against a broker that happened to
    # advertise the gateway's ports.
    response = send_request(kafka.bootstrap, METADATA, 12, {"topics": None}, user=None)
    ports = {broker["port"] for broker in response["brokers"]}
    assert ports and not ports & gateway.gateway_ports()


def test_find_coordinator_single_key_versions(gateway, wire, offered):
    versions = [v for v in _versions(offered, FIND_COORDINATOR) if v <= 3]
    assert versions, "the gateway offers no single-key FindCoordinator version"
    for version in versions:
        key_types = (0,) if version == 0 else (0, 1)  # v0 knows only groups
        for key_type in key_types:
            key = f"{'group' if key_type == 0 else 'txn'}-v{version}-{uuid.uuid4().hex[:6]}"
            body = {"key": key, "key_type": key_type}
            response = until_coordinators_ready(lambda: wire.request(FIND_COORDINATOR, version, body))
            assert response["error_code"] == 0, f"FindCoordinator v{version} {key}: {response}"
            assert_gateway_address(gateway, response["node_id"], response["host"], response["port"])


def test_find_coordinator_batched_versions(gateway, wire, offered):
    versions = [v for v in _versions(offered, FIND_COORDINATOR) if v >= 4]
    assert versions, "the gateway offers no batched FindCoordinator version"
    for version in versions:
        for key_type, prefix in ((0, "group"), (1, "txn")):
            keys = [f"{prefix}-v{version}-{i}-{uuid.uuid4().hex[:6]}" for i in range(5)]
            body = {"key_type": key_type, "coordinator_keys": keys}
            response = until_coordinators_ready(lambda: wire.request(FIND_COORDINATOR, version, body))
            coordinators = response["coordinators"]
            assert sorted(c["key"] for c in coordinators) == sorted(keys)
            for coordinator in coordinators:
                assert coordinator["error_code"] == 0, f"FindCoordinator v{version}: {coordinator}"
                assert_gateway_address(gateway, coordinator["node_id"], coordinator["host"], coordinator["port"])


def test_describe_cluster_every_version(gateway, wire, offered):
    for version in _versions(offered, DESCRIBE_CLUSTER):
        response = wire.request(DESCRIBE_CLUSTER, version, {"include_fenced_brokers": True})
        assert response["error_code"] == 0, f"DescribeCluster v{version}: {response}"
        assert response["brokers"]
        for broker in response["brokers"]:
            assert_gateway_address(gateway, broker["broker_id"], broker["host"], broker["port"])


def test_broker_ports_reach_the_broker_they_stand_for(gateway, wire):
    # The announced port must lead to a working connection, not only look right.
    response = wire.request(METADATA, 12, {"topics": None})
    for broker in response["brokers"]:
        with Wire(f"{broker['host']}:{broker['port']}") as direct:
            again = direct.request(DESCRIBE_CLUSTER, 0, {})
        assert broker["node_id"] in {b["broker_id"] for b in again["brokers"]}


# --------------------------------------------------------------------------- API versions

LOGIN_APIS = {API_VERSIONS, SASL_HANDSHAKE, SASL_AUTHENTICATE}


def test_api_versions_offers_only_what_both_sides_parse(gateway, kafka, wire, offered):
    # The gateway answers ApiVersions itself, before login as after: the versions both it and the
    # broker speak, for the APIs it can authorize, plus its own login (SaslHandshake v1 only:
    # v0 would be followed by raw SASL bytes outside Kafka framing).
    broker = api_versions(*_split(kafka.bootstrap))
    with Wire(gateway.bootstrap, user=None) as before_login:
        unauthenticated = before_login.request(API_VERSIONS, 3, SOFTWARE)
    assert {e["api_key"]: (e["min_version"], e["max_version"]) for e in unauthenticated["api_keys"]} == offered
    for version in range(offered[API_VERSIONS][0], offered[API_VERSIONS][1] + 1):
        response = wire.request(API_VERSIONS, version, SOFTWARE if version >= 3 else {})
        assert response["error_code"] == 0
        seen = {e["api_key"]: (e["min_version"], e["max_version"]) for e in response["api_keys"]}
        assert len(seen) == len(response["api_keys"]), "an API key listed twice"
        assert seen == offered
        for key, (low, high) in seen.items():
            spec = codec.API_KEYS.get(key)
            assert spec is not None, f"ApiVersions v{version} offers API {key}, which the codec does not know"
            assert key in broker, f"API {key} ({spec.name}) offered but the broker lacks it"
            assert broker[key][0] <= low <= high <= broker[key][1], (
                f"{spec.name}: {low}-{high} offered, the broker has {broker[key]}")
            assert spec.min_version <= low <= high <= spec.max_version
            assert key in LOGIN_APIS or key in authorize.SUPPORTED, (
                f"{spec.name} offered, but the gateway cannot authorize it")
        assert seen[PRODUCE][1] == 9 and seen[FETCH][1] == 15
        assert seen[SASL_HANDSHAKE] == (0, 1)
        assert SASL_AUTHENTICATE in seen
        # Nothing both sides speak and the gateway authorizes is left out.
        for key, (low, high) in broker.items():
            spec = codec.API_KEYS.get(key)
            if spec is None or not (key in LOGIN_APIS or key in authorize.SUPPORTED):
                continue
            if key == SASL_HANDSHAKE:
                low = max(low, 1)
            if max(low, spec.min_version) <= min(high, spec.max_version):
                assert key in seen, f"{spec.name} is spoken by broker and gateway but not offered"


def test_api_versions_newer_than_the_gateway_gets_unsupported_version(gateway, offered):
    # Before login, as a client asks: the gateway answers ApiVersions itself, in every version its
    # codec parses.
    parsed_max = codec.API_KEYS[API_VERSIONS].max_version
    assert offered[API_VERSIONS][1] <= parsed_max
    # Just above what the gateway parses, and far above.
    for version in sorted({parsed_max + 1, 0x7FFF}):
        with connect(gateway.bootstrap, user=None, timeout=TIMEOUT) as sock:
            sock.sendall(request_frame(API_VERSIONS, version, 77, SOFTWARE, body_version=3))
            correlation_id, response = read_response(sock, API_VERSIONS, 0)
            assert correlation_id == 77
            assert response["error_code"] == UNSUPPORTED_VERSION, f"ApiVersions v{version}: {response}"
            own = [e for e in response["api_keys"] if e["api_key"] == API_VERSIONS]
            assert own, f"the v{version} answer does not say which ApiVersions versions to use"
            assert own[0]["min_version"] == 0 and offered[API_VERSIONS][1] <= own[0]["max_version"] < version
            # A client retries with the version it was told; the connection must still serve it.
            sock.sendall(request_frame(API_VERSIONS, offered[API_VERSIONS][1], 78, SOFTWARE))
            correlation_id, retried = read_response(sock, API_VERSIONS, offered[API_VERSIONS][1])
            assert correlation_id == 78 and retried["error_code"] == 0


def closed(sock: socket.socket) -> bool:
    """Whether the peer has closed `sock` (waits up to the socket's timeout for it)."""
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True


def test_sasl_handshake_offers_the_gateways_own_mechanisms(gateway):
    # The gateway, not the broker, authenticates clients: it names its own mechanisms (from the
    # credentials file: SCRAM; PLAIN only over TLS), whatever the broker's listener enables.
    with Wire(gateway.bootstrap, user=None) as wire:
        response = wire.request(SASL_HANDSHAKE, 1, {"mechanism": "SCRAM-SHA-512"})
        assert response["error_code"] == 0, response
        assert set(response["mechanisms"]) == GATEWAY_MECHANISMS
    for mechanism in ("PLAIN", "GSSAPI", "OAUTHBEARER"):
        with Wire(gateway.bootstrap, user=None) as wire:
            response = wire.request(SASL_HANDSHAKE, 1, {"mechanism": mechanism})
            assert response["error_code"] == UNSUPPORTED_SASL_MECHANISM, (mechanism, response)
            assert set(response["mechanisms"]) == GATEWAY_MECHANISMS
            # A client that cannot log in has nothing more to ask: the gateway closes.
            assert closed(wire.sock), f"the connection stayed open after refusing {mechanism}"
    # v0 (raw SASL bytes after it) is refused the same way.
    with Wire(gateway.bootstrap, user=None) as wire:
        response = wire.request(SASL_HANDSHAKE, 0, {"mechanism": "SCRAM-SHA-512"})
        assert response["error_code"] == UNSUPPORTED_VERSION, response
        assert closed(wire.sock)


def test_each_mechanism_logs_in(gateway):
    for mechanism in sorted(GATEWAY_MECHANISMS):
        with connect(gateway.bootstrap, user=None, timeout=TIMEOUT) as sock:
            login(sock, TESTER, mechanism)
            sock.sendall(request_frame(METADATA, 12, 9, {"topics": None}))
            correlation_id, response = read_response(sock, METADATA, 12)
            assert correlation_id == 9 and response["brokers"], mechanism


# --------------------------------------------------------------------------- ordering

def test_pipelined_requests_are_answered_in_request_order(gateway, offered, topic):
    seed = int(os.environ.get("BROKERGUARD_TEST_SEED") or random.randrange(2**32))
    print(f"seed {seed} (set BROKERGUARD_TEST_SEED to replay)")
    rng = random.Random(seed)
    too_new = codec.API_KEYS[API_VERSIONS].max_version + 1
    kinds = [
        (METADATA, offered[METADATA][1], {"topics": [{"name": topic}]}),
        (METADATA, 1, {"topics": None}),
        (API_VERSIONS, 3, SOFTWARE),
        (API_VERSIONS, 0, {}),
        (FIND_COORDINATOR, offered[FIND_COORDINATOR][1], {"key_type": 0, "coordinator_keys": ["g1", "g2"]}),
        (FIND_COORDINATOR, 3, {"key": "g3", "key_type": 0}),
        (DESCRIBE_CLUSTER, offered[DESCRIBE_CLUSTER][1], {}),
    ]
    plan = [kinds[i % len(kinds)] for i in range(49)]
    rng.shuffle(plan)
    # Answers the gateway makes itself (every ApiVersions, this one an error) must wait for their
    # turn behind forwarded ones.
    local_api_versions = (API_VERSIONS, too_new, SOFTWARE)
    plan.insert(rng.randrange(1, 49), local_api_versions)
    assert len(plan) == 50
    correlation_ids = rng.sample(range(-2**31, 2**31), len(plan))
    frames = b"".join(
        request_frame(entry[0], entry[1], cid, entry[2], body_version=3 if entry is local_api_versions else None)
        for entry, cid in zip(plan, correlation_ids))
    with connect(gateway.bootstrap, timeout=TIMEOUT) as sock:
        sock.sendall(frames)  # one write, so the gateway reads many frames at once
        answered = []
        for entry, expected_id in zip(plan, correlation_ids):
            payload = read_frame(sock)
            answered.append(int.from_bytes(payload[:4], "big", signed=True))
            if answered[-1] != expected_id:
                break  # decoding it as the planned request's response would only obscure this
            key, version, _ = entry
            _, response = decode(payload, key, 0 if entry is local_api_versions else version)
            if entry is local_api_versions:
                assert response["error_code"] == UNSUPPORTED_VERSION
            elif key == API_VERSIONS:
                assert response["error_code"] == 0 and response["api_keys"]
            elif key in (METADATA, DESCRIBE_CLUSTER):
                assert response["brokers"]
                assert all(b["port"] in gateway.gateway_ports() for b in response["brokers"])
    assert answered == correlation_ids[:len(answered)] and len(answered) == len(plan), (
        f"responses came back as {answered}, requests were sent as {correlation_ids}")


# --------------------------------------------------------------------------- produce acks=0

def _crc32c_table() -> list[int]:
    table = []
    for n in range(256):
        for _ in range(8):
            n = (n >> 1) ^ 0x82F63B78 if n & 1 else n >> 1
        table.append(n)
    return table


_CRC32C = _crc32c_table()


def crc32c(data: bytes) -> int:
    crc = 0xFFFFFFFF
    for byte in data:
        crc = _CRC32C[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def test_crc32c_check_value():
    assert crc32c(b"123456789") == 0xE3069283  # the CRC-32C catalogue's check value


def _varint(n: int) -> bytes:
    n = (n << 1) ^ (n >> 63)  # zigzag
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _sized(data: bytes | None) -> bytes:
    return _varint(-1) if data is None else _varint(len(data)) + data


def record_batch(key: bytes, value: bytes, headers: list[tuple[str, bytes]], timestamp_ms: int) -> bytes:
    """A record batch v2 with one uncompressed record, as the protocol guide lays it out."""
    record = (b"\x00" + _varint(0) + _varint(0)  # attributes, timestamp delta, offset delta
              + _sized(key) + _sized(value) + _varint(len(headers))
              + b"".join(_sized(k.encode()) + _sized(v) for k, v in headers))
    records = _varint(len(record)) + record
    # attributes 0 (no compression, CreateTime), last offset delta 0, first/max timestamp,
    # no producer id/epoch/sequence, one record
    after_crc = struct.pack(">hiqqqhii", 0, 0, timestamp_ms, timestamp_ms, -1, -1, -1, 1) + records
    after_length = struct.pack(">ibI", -1, 2, crc32c(after_crc)) + after_crc  # leader epoch, magic, crc
    return struct.pack(">qi", 0, len(after_length)) + after_length


def test_produce_acks_0_gets_no_response_and_does_not_block_the_next(gateway, wire, offered):
    assert offered[PRODUCE][1] == 9
    topic = create_topic(wire, partitions=1)
    leader = wait_for_leaders(wire, topic, 1)["topics"][0]["partitions"][0]["leader_id"]
    timestamp = int(time.time() * 1000) - 60_000
    batch = record_batch(b"key-1", b"value-1", [("h1", b"one"), ("h2", b"")], timestamp)
    produce = {"transactional_id": None, "acks": 0, "timeout_ms": 10000,
               "topic_data": [{"name": topic, "partition_data": [{"index": 0, "records": batch}]}]}
    metadata = {"topics": [{"name": topic}]}
    host = _split(gateway.bootstrap)[0]
    with connect(f"{host}:{gateway.broker_ports_first + leader}", timeout=TIMEOUT) as sock:
        sock.sendall(request_frame(PRODUCE, 9, 500, produce) + request_frame(METADATA, 12, 501, metadata))
        correlation_id, response = read_response(sock, METADATA, 12)
        assert correlation_id == 501, "the first response is not the Metadata one"
        assert response["topics"][0]["name"] == topic
        # Had anything answered the produce, it would come before this one.
        sock.sendall(request_frame(API_VERSIONS, 3, 502, SOFTWARE))
        correlation_id, _ = read_response(sock, API_VERSIONS, 3)
        assert correlation_id == 502

    consumer = confluent_kafka.Consumer({
        "bootstrap.servers": gateway.bootstrap, "group.id": f"acks0-{topic}",
        "enable.auto.commit": False, "enable.partition.eof": True, **auth("confluent")})
    try:
        consumer.assign([confluent_kafka.TopicPartition(topic, 0, 0)])
        deadline = time.monotonic() + TIMEOUT
        messages = []
        while time.monotonic() < deadline:
            message = consumer.poll(1.0)
            if message is None:
                continue
            if message.error():
                if message.error().code() == confluent_kafka.KafkaError._PARTITION_EOF and messages:
                    break
                if message.error().code() != confluent_kafka.KafkaError._PARTITION_EOF:
                    raise AssertionError(f"consume failed: {message.error()}")
                continue
            messages.append(message)
    finally:
        consumer.close()
    assert [(m.offset(), m.key(), m.value(), m.headers(), m.timestamp()) for m in messages] == [
        (0, b"key-1", b"value-1", [("h1", b"one"), ("h2", b"")],
         (confluent_kafka.TIMESTAMP_CREATE_TIME, timestamp))]
