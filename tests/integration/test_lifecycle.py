"""The gateway process's life: draining on SIGTERM, and the supervisor of several workers."""

from __future__ import annotations

import os
import re
import signal
import socket
import time
import uuid
from pathlib import Path

import pytest

from harness import Gateway, call, connect, partition_leader, produce_and_consume, read_response, request_frame

pytestmark = pytest.mark.kafka

FETCH, CREATE_TOPICS, API_VERSIONS = 1, 19, 18
API_VERSIONS_BODY = {"client_software_name": "robustness", "client_software_version": "1"}


def create_topic(gateway: Gateway, partitions: int = 1) -> str:
    topic = f"robust-{uuid.uuid4().hex[:10]}"
    body = call(gateway.bootstrap, CREATE_TOPICS, 7, {
        "topics": [{"name": topic, "num_partitions": partitions, "replication_factor": 1}],
        "timeout_ms": 15000})
    assert body["topics"][0]["error_code"] == 0, body
    return topic


def leader_of(gateway: Gateway, topic: str) -> str:
    # A new topic's leader shows in Metadata a moment after CreateTopics returns.
    deadline = time.monotonic() + 15
    while True:
        try:
            return partition_leader(gateway.bootstrap, topic)
        except (AssertionError, KeyError, ValueError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def fetch_request(topic: str, correlation_id: int, max_wait_ms: int) -> bytes:
    return request_frame(FETCH, 12, {
        "replica_id": -1, "max_wait_ms": max_wait_ms, "min_bytes": 1, "max_bytes": 1 << 20,
        "isolation_level": 0, "session_id": 0, "session_epoch": -1,
        "topics": [{"topic": topic, "partitions": [
            {"partition": 0, "fetch_offset": 0, "partition_max_bytes": 1 << 20}]}],
    }, correlation_id=correlation_id)


def test_sigterm_answers_held_requests_then_exits_cleanly(own_gateway):
    gateway = own_gateway().start()
    topic = create_topic(gateway)
    leader = leader_of(gateway, topic)
    assert leader.startswith("127.0.0.1:") and int(leader.rsplit(":", 1)[1]) in gateway.gateway_ports()

    sock = connect(leader, timeout=15)  # logged in
    # One write, so the gateway reads both frames together: once ApiVersions is answered, the
    # Fetch (held by the broker: the partition is empty) is in flight.
    sock.sendall(request_frame(API_VERSIONS, 3, API_VERSIONS_BODY, correlation_id=1)
                 + fetch_request(topic, correlation_id=2, max_wait_ms=5000))
    correlation_id, versions = read_response(sock, API_VERSIONS, 3)
    assert (correlation_id, versions["error_code"]) == (1, 0)

    gateway.process.send_signal(signal.SIGTERM)
    gateway.wait_for_log("draining 1 kafka connections")
    for port in sorted(gateway.gateway_ports()):
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=5).close()
    assert gateway.process.poll() is None, "the gateway exited before the held Fetch was answered"

    correlation_id, fetched = read_response(sock, FETCH, 12)
    assert correlation_id == 2
    assert fetched["error_code"] == 0
    (partition,) = fetched["responses"][0]["partitions"]
    assert (partition["error_code"], partition["high_watermark"]) == (0, 0)
    assert not partition["records"]
    assert sock.recv(1) == b"", "the connection stayed open after its last response"
    sock.close()

    assert gateway.process.wait(30) == 0
    log = gateway.log()
    assert "closed: gateway shutting down" in log
    assert f"worker {gateway.process.pid} stopped" in log
    assert "drain timeout" not in log


def child_pids(pid: int) -> set[int]:
    children = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # gone meanwhile
        if int(fields[1]) == pid and fields[0] != "Z":
            children.add(int(stat.parent.name))
    return children


def session_members(sid: int) -> set[int]:
    members = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[3]) == sid:
            members.add(int(stat.parent.name))
    return members


def ready_workers(log: str) -> list[int]:
    return [int(pid) for pid in re.findall(r"worker (\d+) ready", log)]


def api_versions_burst(gateway: Gateway, count: int) -> None:
    for _ in range(count):
        body = call(gateway.bootstrap, API_VERSIONS, 3, API_VERSIONS_BODY)
        assert body["error_code"] == 0
        produce = [k for k in body["api_keys"] if k["api_key"] == 0]
        assert produce and produce[0]["max_version"] == 9, produce


def serving_workers(gateway: Gateway, log_from: int, count: int) -> set[int]:
    """Worker pids that logged the end of the last `count` client connections."""
    pattern = re.compile(r"\[(\d+)\] brokerguard\.kafka: session \w+ from \S+(?: as .+?)? closed: client closed")
    deadline = time.monotonic() + 15
    while True:
        pids = pattern.findall(gateway.log()[log_from:])
        if len(pids) >= count or time.monotonic() > deadline:
            assert len(pids) == count, pids
            return {int(pid) for pid in pids}
        time.sleep(0.05)


def test_supervisor_replaces_a_killed_worker_and_stops_all(own_gateway):
    # debug: every client connection's end is logged with the pid of the worker that served it
    gateway = own_gateway(workers=2, log_level="debug").start()
    supervisor = gateway.process.pid
    workers = child_pids(supervisor)
    assert len(workers) == 2 and set(ready_workers(gateway.log())) == workers
    assert f"started 2 workers: {' '.join(map(str, sorted(workers)))}" in gateway.log()

    log_from = len(gateway.log())
    api_versions_burst(gateway, 20)
    # SO_REUSEPORT spreads connections by address hash: all 20 on one worker has odds 2**-19.
    assert serving_workers(gateway, log_from, 20) == workers

    victim = min(workers)
    os.kill(victim, signal.SIGKILL)
    gateway.wait_for_log(f"worker {victim} exited unexpectedly (status -9); starting another")
    deadline = time.monotonic() + 30
    while len(ready_workers(gateway.log())) < 3:
        assert time.monotonic() < deadline, gateway.log()[-4000:]
        time.sleep(0.05)
    replacement = ready_workers(gateway.log())[-1]
    assert replacement not in workers
    workers = (workers - {victim}) | {replacement}
    assert child_pids(supervisor) == workers

    log_from = len(gateway.log())
    api_versions_burst(gateway, 20)
    assert serving_workers(gateway, log_from, 20) == workers
    produce_and_consume(gateway.bootstrap, f"robust-workers-{uuid.uuid4().hex[:8]}", [b"one", b"two", b"three"])

    assert gateway.stop() == 0
    for pid in workers:
        assert f"worker {pid} stopped" in gateway.log()
    assert session_members(supervisor) == set(), "processes of the gateway outlived it"
