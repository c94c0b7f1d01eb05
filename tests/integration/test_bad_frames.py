"""Hostile and broken request frames against a real gateway with a 64 KiB frame limit.

Whatever a client sends, only that client's connection may suffer: the gateway closes it with the
reason in its log (or, for an incomplete frame, waits for the rest), stays up, and a healthy
producer connected before the attack keeps every record it was acknowledged. Frames are checked
before anything else, so the same holds for a client that has not logged in (whose complete
frames other than the login's own close its connection) as for one that has.

Random cases come from hypothesis: a failure prints a `@reproduce_failure` blob, and
`pytest --hypothesis-seed=N` replays a run.
"""

from __future__ import annotations

import socket
import struct
import uuid

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.record.default_records import DefaultRecordBatchBuilder

from brokerguard._native.frames_py import FrameError, RequestScanner
from brokerguard.plugins.kafka import authorize
from brokerguard.plugins.kafka.rewrite import Versions
from fuzzing import random_inputs
from harness import MECHANISM, TESTER, Gateway, User, auth, connect, read_response, request_frame

pytestmark = pytest.mark.kafka

LIMIT = 65536
PRODUCE, METADATA, API_VERSIONS = 0, 3, 18
# The pure-Python twin of the gateway's scanner, configured like the gateway: it says which
# error (if any) the gateway must report for a given byte string.
ORACLE = RequestScanner(Versions(authorize.SUPPORTED).flexible_from, LIMIT)


@pytest.fixture(scope="module")
def small_gateway(kafka, tmp_path_factory):
    # debug: a client that closes its own connection is logged too, so every connection's end
    # leaves a line to check.
    gateway = Gateway(kafka, tmp_path_factory.mktemp("bad-frames"), log_level="debug",
                      max_frame_bytes=LIMIT).start()
    yield gateway
    gateway.stop()


class Healthy:
    """A kafka-python producer connected before any attack; remembers what was acknowledged."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.topic = f"robust-healthy-{uuid.uuid4().hex[:8]}"
        self.producer = KafkaProducer(bootstrap_servers=gateway.bootstrap, acks="all", linger_ms=0,
                                      retries=0, request_timeout_ms=10000, **auth())
        self.acknowledged: list[bytes] = []
        self.produce()
        # Every connection opened from here on that closes must be one of the attackers'.
        self.log_from = len(gateway.log())

    def produce(self) -> None:
        value = f"healthy-{len(self.acknowledged)}".encode()
        self.producer.send(self.topic, value).get(timeout=15)
        self.acknowledged.append(value)

    def check(self, attack_ports: set[int]) -> None:
        self.produce()
        closed = [line for line in self.gateway.log()[self.log_from:].splitlines() if " closed: " in line]
        self.producer.close()
        strangers = [line for line in closed if _port_of(line) not in attack_ports]
        assert not strangers, "connections other than the attackers' were closed:\n" + "\n".join(strangers)
        consumer = KafkaConsumer(bootstrap_servers=self.gateway.bootstrap, enable_auto_commit=False,
                                 auto_offset_reset="earliest", consumer_timeout_ms=15000, **auth())
        try:
            consumer.assign([TopicPartition(self.topic, 0)])
            seen = []
            for message in consumer:
                seen.append(message.value)
                if len(seen) == len(self.acknowledged):
                    break
        finally:
            consumer.close()
        assert seen == self.acknowledged


def _port_of(log_line: str) -> int | None:
    _, sep, rest = log_line.partition(" from 127.0.0.1:")
    return int(rest.split(" ", 1)[0]) if sep else None


def expected_outcome(data: bytes) -> tuple[str, str | None]:
    """("rejected", reason) when the gateway must refuse the first frame; ("pending", None) when
    no frame is complete yet; ("forwarded", None) when some frame is handled as a request, whose
    answer (a response or a close) the gateway or the broker decides."""
    try:
        frames, _, _ = ORACLE.scan(data, 0, len(data))
    except FrameError as err:
        # An error after a complete good frame may come after that frame was handled (TCP may
        # deliver them in separate reads), so the request's own outcome may come first.
        if len(data) >= 4:
            first_end = 4 + int.from_bytes(data[:4], "big", signed=True)
            if 12 <= first_end <= len(data):
                try:
                    if ORACLE.scan(data[:first_end], 0, first_end)[0]:
                        return "forwarded", None
                except FrameError:
                    pass
        return "rejected", str(err)
    return ("forwarded", None) if frames else ("pending", None)


def wait_closed_by_gateway(sock: socket.socket, timeout: float = 15) -> None:
    sock.settimeout(timeout)
    try:
        while sock.recv(65536):
            pass
    except ConnectionResetError:
        pass
    except socket.timeout:
        raise AssertionError(f"the gateway kept the connection open for {timeout} s") from None


def still_open(sock: socket.socket) -> bool:
    sock.setblocking(False)
    try:
        return sock.recv(1, socket.MSG_PEEK) != b""
    except BlockingIOError:
        return True
    except ConnectionResetError:
        return False
    finally:
        sock.setblocking(True)


def session_closed(port: int, user: User | None) -> str:
    """How the log line of the gateway closing the connection from `port` begins."""
    who = "" if user is None else f" as {user.name} ({MECHANISM})"
    return f"from 127.0.0.1:{port}{who} closed: "


def attack(gateway: Gateway, healthy: Healthy, data: bytes, user: User | None = TESTER) -> int:
    """Send `data` on a fresh connection, logged in as `user` first (None: not logged in), and
    check what the gateway did; the client port."""
    outcome, reason = expected_outcome(data)
    log_from = len(gateway.log())
    sock = connect(f"127.0.0.1:{gateway.port}", user, timeout=15)
    port = sock.getsockname()[1]
    me = session_closed(port, user)
    try:
        try:
            sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            assert outcome != "pending", "the gateway closed a connection waiting for a frame's rest"
        if outcome == "rejected":
            wait_closed_by_gateway(sock)
            gateway.wait_for_log(f"{me}bad request frame: {reason}", since=log_from)
        healthy.produce()
        if outcome == "pending":
            assert still_open(sock), "the gateway closed a connection waiting for a frame's rest"
    finally:
        sock.close()
    assert gateway.process.poll() is None, f"the gateway died:\n{gateway.log()[-4000:]}"
    # Only lines written since this attack: an earlier one may have had the same client port.
    if outcome == "pending":
        gateway.wait_for_log(f"{me}client closed the connection", since=log_from)
    else:
        gateway.wait_for_log(me, since=log_from)
    log = gateway.log()[log_from:]
    assert log.count(me) == 1, log
    assert "Traceback" not in log and "Fatal error" not in log, log
    return port


def frame(size: int, payload: bytes) -> bytes:
    return size.to_bytes(4, "big", signed=True) + payload


def exact(payload: bytes) -> bytes:
    return frame(len(payload), payload)


def header(api_key: int, version: int, client_id: bytes | None, correlation_id: int = 1) -> bytes:
    client = b"\xff\xff" if client_id is None else struct.pack(">h", len(client_id)) + client_id
    return struct.pack(">hhi", api_key, version, correlation_id) + client


GOOD_REQUESTS = [
    request_frame(API_VERSIONS, 3, {"client_software_name": "fuzz", "client_software_version": "1"}),
    request_frame(METADATA, 12, {"topics": [{"name": "robust-fuzz"}], "allow_auto_topic_creation": False}),
    request_frame(PRODUCE, 9, {"acks": -1, "timeout_ms": 1000, "topic_data": [
        {"name": "robust-fuzz", "partition_data": [{"index": 0, "records": b"\0" * 80}]}]}),
]

int16 = st.integers(-(2**15), 2**15 - 1)
random_bytes = st.binary(max_size=300)
# size field out of bounds: negative, above the limit, or too small for a request header
bad_size = st.builds(
    frame,
    st.one_of(st.integers(-(2**31), -1), st.integers(LIMIT + 1, 2**31 - 1), st.integers(0, 7)),
    st.binary(max_size=64))
# a frame of exactly its announced size whose header or Produce body is cut short or invalid
malformed_header = st.builds(
    lambda api_key, version, client_id, client_length, body: exact(
        struct.pack(">hhih", api_key, version, 1, client_length) + client_id + body),
    st.sampled_from([PRODUCE, PRODUCE, METADATA, API_VERSIONS]), st.integers(0, 12),
    st.binary(max_size=12), int16, st.binary(max_size=8))
short_produce = st.builds(
    lambda version, client_id, body: exact(header(PRODUCE, version, client_id) + body),
    st.integers(0, 12), st.one_of(st.none(), st.binary(max_size=10)), st.binary(max_size=4))
# a well-formed request cut anywhere: the gateway must wait for the rest
truncated = st.builds(lambda request, cut: request[: int(cut * len(request))],
                      st.sampled_from(GOOD_REQUESTS), st.floats(0, 0.999))
# a good request followed by garbage
good_then_bad = st.builds(lambda request, tail: request + tail, st.sampled_from(GOOD_REQUESTS), random_bytes)
attacks = st.one_of(random_bytes, bad_size, malformed_header, short_produce, truncated, good_then_bad)


@pytest.mark.parametrize("user", [None, TESTER], ids=["before-login", "logged-in"])
def test_bad_frames_close_only_the_offending_connection(small_gateway, user):
    healthy = Healthy(small_gateway)
    attack_ports: set[int] = set()

    @random_inputs(80)
    @given(attacks)
    # the named cases always run
    @example(frame(LIMIT + 1, b"\0" * 16))  # size above max_frame_bytes
    @example(frame(-1, b""))  # negative size
    @example(frame(10 * 1024 * 1024, b""))  # 10 MB announced, never sent
    @example(exact(header(PRODUCE, 9, b"c") + b"\0"))  # Produce too short for acks
    @example(exact(header(PRODUCE, 3, None) + b"\0\0\0"))
    @example(exact(header(METADATA, 12, b"abc")[:-2]))  # client_id runs past the frame
    @example(GOOD_REQUESTS[1][:-5])  # truncated, then closed
    @example(b"\0\0")
    def run(data: bytes) -> None:
        attack_ports.add(attack(small_gateway, healthy, data, user))

    run()
    healthy.check(attack_ports)


@pytest.mark.parametrize("data, reason", [
    (frame(LIMIT + 1, b""), f"frame size {LIMIT + 1} exceeds the limit of {LIMIT} bytes"),
    (frame(10 * 1024 * 1024, b""), f"frame size {10 * 1024 * 1024} exceeds the limit of {LIMIT} bytes"),
    (frame(-5, b"abcd"), "negative frame size -5"),
    (exact(header(PRODUCE, 9, b"client") + b"\0"), "Produce v9 body truncated before acks"),
    (exact(header(PRODUCE, 3, None) + b"\0\0\0"), "Produce v3 body truncated before acks"),
], ids=["above-limit", "10MB-announced", "negative", "produce-v9-no-acks", "produce-v3-no-acks"])
def test_named_bad_frames_have_clear_reasons(small_gateway, data, reason):
    # The oracle agrees with the wording the gateway's users see.
    assert expected_outcome(data) == ("rejected", reason)
    healthy = Healthy(small_gateway)
    port = attack(small_gateway, healthy, data)
    healthy.check({port})


def produce_request(size: int, topic: str) -> bytes:
    """A real Produce v9 request of one record, padded to a frame of exactly `size` bytes."""
    value_size = size
    for _ in range(4):  # varint lengths grow with the value: converge on the exact size
        builder = DefaultRecordBatchBuilder(magic=2, compression_type=0, is_transactional=False,
                                            producer_id=-1, producer_epoch=-1, base_sequence=-1,
                                            batch_size=2 * size)
        builder.append(0, timestamp=None, key=None, value=b"x" * value_size, headers=[])
        request = request_frame(PRODUCE, 9, {"acks": -1, "timeout_ms": 10000, "topic_data": [
            {"name": topic, "partition_data": [{"index": 0, "records": bytes(builder.build())}]}]})
        if len(request) == size:
            return request
        value_size += size - len(request)
    raise AssertionError(f"cannot build a Produce of exactly {size} bytes")


def test_oversized_produce_closes_that_client_only(small_gateway):
    healthy = Healthy(small_gateway)
    request = produce_request(70_000, f"robust-oversize-{uuid.uuid4().hex[:8]}")
    with connect(f"127.0.0.1:{small_gateway.port}", timeout=15) as sock:
        port = sock.getsockname()[1]
        try:
            sock.sendall(request)
        except (BrokenPipeError, ConnectionResetError):
            pass
        wait_closed_by_gateway(sock)
    small_gateway.wait_for_log(
        f"{session_closed(port, TESTER)}bad request frame: frame size {len(request) - 4} "
        f"exceeds the limit of {LIMIT} bytes")
    assert small_gateway.process.poll() is None
    healthy.check({port})
    # A Produce within the limit, sent the same way, is taken.
    with connect(f"127.0.0.1:{small_gateway.port}", timeout=15) as sock:
        sock.sendall(produce_request(60_000, healthy.topic))
        correlation_id, response = read_response(sock, PRODUCE, 9)
    assert correlation_id == 1
    (partition,) = response["responses"][0]["partition_responses"]
    assert partition["error_code"] == 0, partition
