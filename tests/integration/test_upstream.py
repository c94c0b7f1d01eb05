"""The gateway's side towards the broker: refused logins, TLS, a broker that is down, and a client
too slow to take what the broker sends.

The gateway opens a client's upstream connection only once the client has logged in, so each
client here logs in first; a broker that refuses the gateway, or is down, then ends the client's
connection before any request of it is answered."""

from __future__ import annotations

import fcntl
import os
import socket
import termios
import time
import uuid
from pathlib import Path

import pytest
from kafka import KafkaProducer

from harness import (MECHANISM, PASSWORD_ENV, TESTER, Gateway, connect, partition_leader, produce_and_consume,
                     read_response, request_frame)

pytestmark = pytest.mark.kafka

FETCH, METADATA = 1, 3
METADATA_REQUEST = request_frame(METADATA, 12, {"topics": None, "allow_auto_topic_creation": False})


def closed_by_gateway(gateway: Gateway) -> str:
    """Log in, ask for Metadata, and expect the connection closed without an answer; how the
    gateway's log line about closing it begins."""
    with connect(f"127.0.0.1:{gateway.port}", timeout=30) as sock:
        port = sock.getsockname()[1]
        try:
            sock.sendall(METADATA_REQUEST)
            assert sock.recv(1) == b"", "the gateway answered without an upstream connection"
        except (BrokenPipeError, ConnectionResetError):
            pass  # closed even before the request arrived
    return f"from 127.0.0.1:{port} as {TESTER.name} ({MECHANISM}) closed: "


def test_refused_login_closes_the_client_and_never_logs_a_password(own_gateway, kafka):
    gateway = own_gateway(log_level="debug")
    wrong = f"wrong-{uuid.uuid4().hex}"
    gateway.env[PASSWORD_ENV] = wrong
    gateway.start()
    closed = closed_by_gateway(gateway)
    gateway.wait_for_log(f"{closed}upstream {kafka.sasl_bootstrap}: login as 'gateway' refused")
    assert gateway.process.poll() is None
    gateway.stop()
    log = gateway.log()
    assert wrong not in log and kafka.password not in log and TESTER.password not in log


def test_sasl_ssl_upstream_carries_produce_and_consume(own_gateway, kafka):
    gateway = own_gateway()
    gateway.config["kafka"]["upstream"] = {
        "bootstrap_servers": [kafka.ssl_bootstrap],
        "security_protocol": "SASL_SSL",
        "sasl": {"mechanism": "SCRAM-SHA-512", "username": kafka.username, "password_env": PASSWORD_ENV},
        "tls": {"ca_file": str(kafka.ca_file)},
    }
    gateway.start()
    assert f"upstream {kafka.ssl_bootstrap}" in gateway.log()
    produce_and_consume(gateway.bootstrap, f"robust-tls-{uuid.uuid4().hex[:8]}", [b"a", b"b" * 5000, b"c"])
    assert "closed: upstream" not in gateway.log()


def test_upstream_down_closes_the_client_and_names_the_address(own_gateway):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        down = probe.getsockname()[1]  # nothing listens here once the probe is closed
    gateway = own_gateway()
    gateway.config["kafka"]["upstream"] = {"bootstrap_servers": [f"127.0.0.1:{down}"]}
    gateway.start()
    closed = closed_by_gateway(gateway)
    gateway.wait_for_log(f"{closed}upstream 127.0.0.1:{down}: cannot connect")
    assert gateway.process.poll() is None


# -- backpressure ---------------------------------------------------------------------------

RECORDS, RECORD_SIZE = 200, 100_000  # ~20 MB on one partition
FETCHES = 16  # ~320 MB of responses: buffering them all would break the bound below
MEMORY_BOUND_KB = 200 * 1024


def status_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def cpu_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


def unread_bytes(sock: socket.socket) -> int:
    return int.from_bytes(fcntl.ioctl(sock, termios.FIONREAD, b"\0\0\0\0"), "little")


def big_fetch(topic: str, correlation_id: int) -> bytes:
    return request_frame(FETCH, 12, {
        "replica_id": -1, "max_wait_ms": 500, "min_bytes": 1, "max_bytes": 50 << 20,
        "isolation_level": 0, "session_id": 0, "session_epoch": -1,
        "topics": [{"topic": topic, "partitions": [
            {"partition": 0, "fetch_offset": 0, "partition_max_bytes": 50 << 20}]}],
    }, correlation_id=correlation_id)


def fetched_records(sock: socket.socket, correlation_id: int) -> bytes:
    got, body = read_response(sock, FETCH, 12)
    assert got == correlation_id
    (partition,) = body["responses"][0]["partitions"]
    assert (body["error_code"], partition["error_code"], partition["high_watermark"]) == (0, 0, RECORDS)
    return partition["records"]


def test_a_client_that_does_not_read_does_not_grow_the_gateway(own_gateway, kafka):
    topic = f"robust-backpressure-{uuid.uuid4().hex[:8]}"
    producer = KafkaProducer(bootstrap_servers=kafka.bootstrap, acks="all", linger_ms=20,
                             batch_size=1 << 20, max_request_size=4 << 20)
    for _ in range(RECORDS):
        producer.send(topic, os.urandom(RECORD_SIZE))
    producer.flush(timeout=60)
    producer.close()
    # What the broker itself sends for this Fetch: the gateway must deliver exactly these bytes.
    host, _, port = kafka.bootstrap.rpartition(":")
    with socket.create_connection((host, int(port)), timeout=30) as direct:
        direct.sendall(big_fetch(topic, 1))
        expected = fetched_records(direct, 1)
    assert len(expected) >= RECORDS * RECORD_SIZE

    gateway = own_gateway().start()
    worker = gateway.process.pid
    leader = partition_leader(gateway.bootstrap, topic)
    with connect(leader, timeout=60) as sock:
        sock.sendall(METADATA_REQUEST)
        read_response(sock, METADATA, 12)  # forwarded and answered: the upstream is open
        baseline = status_kb(worker, "VmRSS")
        sock.sendall(b"".join(big_fetch(topic, n) for n in range(2, 2 + FETCHES)))

        # Not reading: wait until bytes have reached this socket and the gateway has gone quiet
        # (paused, or - were it buffering without bound - done reading everything).
        deadline = time.monotonic() + 60
        ticks, quiet_since = cpu_ticks(worker), time.monotonic()
        while time.monotonic() - quiet_since < 1.0 or not unread_bytes(sock):
            assert time.monotonic() < deadline, "the gateway never went quiet"
            time.sleep(0.1)
            now = cpu_ticks(worker)
            if now != ticks:
                ticks, quiet_since = now, time.monotonic()
        stalled = status_kb(worker, "VmRSS")
        assert stalled - baseline < MEMORY_BOUND_KB, f"RSS grew by {stalled - baseline} kB"

        for n in range(2, 2 + FETCHES):
            assert fetched_records(sock, n) == expected, f"Fetch {n} arrived altered"
    peak = status_kb(worker, "VmHWM")
    assert peak - baseline < MEMORY_BOUND_KB, f"peak RSS {peak - baseline} kB above the baseline"
    assert gateway.process.poll() is None
