"""A real gateway process in front of the real broker, as the tests and benchmarks use it."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import yaml
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

ROOT = Path(__file__).resolve().parent.parent
BROKERGUARD = str(Path(sys.executable).with_name("brokerguard"))
PASSWORD_ENV = "BROKERGUARD_TEST_UPSTREAM_PASSWORD"
BROKER_PORTS = 4


def free_port_range(count: int) -> int:
    """First of `count` consecutive free loopback ports."""
    for _ in range(200):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            first = probe.getsockname()[1]
        if first + count > 65000:
            continue
        sockets = []
        try:
            for port in range(first, first + count):
                s = socket.socket()
                s.bind(("127.0.0.1", port))
                sockets.append(s)
            return first
        except OSError:
            continue
        finally:
            for s in sockets:
                s.close()
    raise RuntimeError("no run of free loopback ports")


class Gateway:
    """`brokerguard run` as a subprocess; `bootstrap` is where clients connect."""

    def __init__(self, kafka, work_dir: Path, *, workers: int = 1, log_level: str = "info",
                 upstream: str = "sasl", **kafka_overrides) -> None:
        self.work_dir = Path(work_dir)
        self.work_dir.mkdir(parents=True, exist_ok=True)
        first = free_port_range(1 + BROKER_PORTS)
        self.port = first
        self.broker_ports_first = first + 1
        if upstream == "sasl":
            upstream_config = {
                "bootstrap_servers": [kafka.sasl_bootstrap],
                "security_protocol": "SASL_PLAINTEXT",
                "sasl": {"mechanism": "SCRAM-SHA-512", "username": kafka.username, "password_env": PASSWORD_ENV},
            }
        else:
            upstream_config = {"bootstrap_servers": [kafka.bootstrap]}
        kafka_section = {
            "listen": {"host": "127.0.0.1", "port": first,
                       "broker_ports": {"first": first + 1, "count": BROKER_PORTS}},
            "upstream": upstream_config,
            **kafka_overrides,
        }
        self.config = {"workers": workers, "log_level": log_level, "drain_timeout_s": 10, "kafka": kafka_section}
        self.config_file = self.work_dir / "gateway.yaml"
        self.log_file = self.work_dir / "gateway.log"
        self.env = {**os.environ, PASSWORD_ENV: kafka.password}
        self.process: subprocess.Popen | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def gateway_ports(self) -> set[int]:
        return {self.port, *range(self.broker_ports_first, self.broker_ports_first + BROKER_PORTS)}

    def start(self, timeout: float = 30) -> Gateway:
        self.config_file.write_text(yaml.safe_dump(self.config))
        self._log_handle = open(self.log_file, "ab")
        self.process = subprocess.Popen(
            [BROKERGUARD, "run", "--config", str(self.config_file)],
            stdout=self._log_handle, stderr=subprocess.STDOUT, env=self.env, start_new_session=True)
        deadline = time.monotonic() + timeout
        workers = self.config["workers"]
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"gateway exited with {self.process.returncode}:\n{self.log()}")
            if self.log().count(" ready") >= workers:
                return self
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"gateway not ready after {timeout} s:\n{self.log()}")

    def log(self) -> str:
        return self.log_file.read_text(errors="replace") if self.log_file.exists() else ""

    def wait_for_log(self, text: str, timeout: float = 10) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            log = self.log()
            if text in log:
                return log
            time.sleep(0.05)
        raise AssertionError(f"{text!r} not in the gateway log after {timeout} s:\n{self.log()[-4000:]}")

    def stop(self, timeout: float = 30) -> int | None:
        if self.process is None or self.process.poll() is not None:
            if self.process is not None:
                self._log_handle.close()  # it exited on its own (e.g. a test's SIGTERM)
            return self.process.returncode if self.process else None
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
            raise RuntimeError(f"gateway did not stop within {timeout} s:\n{self.log()[-4000:]}")
        finally:
            self._log_handle.close()


# -- raw Kafka wire helpers: for tests that must control every byte a client sends ------------


def request_frame(api_key: int, version: int, body: dict, correlation_id: int = 1,
                  client_id: str | None = "brokerguard-tests") -> bytes:
    """One whole request frame, size prefix included, built with the gateway's codec."""
    from brokerguard.plugins.kafka.protocol import codec

    payload = (codec.encode_request_header(api_key, version, correlation_id, client_id)
               + codec.encode_request(api_key, version, body))
    return len(payload).to_bytes(4, "big") + payload


def recv_exactly(sock: socket.socket, count: int) -> bytes:
    chunks = bytearray()
    while len(chunks) < count:
        chunk = sock.recv(min(count - len(chunks), 1 << 20))
        if not chunk:
            raise ConnectionError(f"connection closed after {len(chunks)} of {count} bytes")
        chunks += chunk
    return bytes(chunks)


def read_response(sock: socket.socket, api_key: int, version: int) -> tuple[int, dict]:
    """(correlation id, decoded body) of the next response frame on `sock`."""
    from brokerguard.plugins.kafka.protocol import codec

    size = int.from_bytes(recv_exactly(sock, 4), "big", signed=True)
    payload = recv_exactly(sock, size)
    correlation_id, offset = codec.decode_response_header(
        payload, 0, codec.response_header_version(api_key, version))
    return correlation_id, codec.decode_response(api_key, version, payload, offset)


def call(address: str, api_key: int, version: int, body: dict, timeout: float = 10) -> dict:
    """One request on a fresh connection to HOST:PORT; the decoded response body."""
    host, _, port = address.rpartition(":")
    with socket.create_connection((host, int(port)), timeout=timeout) as sock:
        sock.sendall(request_frame(api_key, version, body, correlation_id=7))
        correlation_id, response = read_response(sock, api_key, version)
    assert correlation_id == 7, f"response to correlation id {correlation_id}, expected 7"
    return response


def partition_leader(address: str, topic: str, partition: int = 0) -> str:
    """HOST:PORT of the partition's leader as Metadata at `address` names it."""
    body = call(address, 3, 12, {"topics": [{"name": topic}], "allow_auto_topic_creation": False})
    brokers = {b["node_id"]: f"{b['host']}:{b['port']}" for b in body["brokers"]}
    (found,) = [t for t in body["topics"] if t["name"] == topic]
    assert found["error_code"] == 0, f"Metadata for {topic}: error {found['error_code']}"
    (leader,) = [p["leader_id"] for p in found["partitions"] if p["partition_index"] == partition]
    return brokers[leader]


def produce_and_consume(bootstrap: str, topic: str, values: list[bytes]) -> None:
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
    try:
        for value in values:
            producer.send(topic, value).get(timeout=15)
    finally:
        producer.close()
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                             auto_offset_reset="earliest", consumer_timeout_ms=15000)
    try:
        consumer.assign([TopicPartition(topic, 0)])
        seen = [m.value for _, m in zip(values, consumer)]
    finally:
        consumer.close()
    assert seen == values
