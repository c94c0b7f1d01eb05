"""A real gateway process in front of the real broker, as the tests and benchmarks use it."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from typing import Any, NamedTuple

import yaml
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from devstack.processes import recv_exactly

ROOT = Path(__file__).resolve().parent.parent
BROKERGUARD = str(Path(sys.executable).with_name("brokerguard"))
PASSWORD_ENV = "BROKERGUARD_TEST_UPSTREAM_PASSWORD"
MASK_KEY_ENV = "BROKERGUARD_TEST_MASK_KEY"
MASK_KEY = "test-mask-key-7d1e0a"  # keys the masks' hash strategy in every test gateway
AUDIT_KEY_ENV = "BROKERGUARD_TEST_AUDIT_KEY"
AUDIT_KEY = "test-audit-chain-key-3b9f60"  # keys every test gateway's audit hash chain
BROKER_PORTS = 4
TEST_RULES = ROOT / "tests" / "rules"
SHIPPED_RULES = ROOT / "rules"


class User(NamedTuple):
    """A service account in the gateway's credentials file (SCRAM and PLAIN)."""

    name: str
    password: str
    groups: tuple[str, ...] = ()


# Every test gateway knows this account; tests/rules lets it do everything.
TESTER = User("tester", "tester-secret-5f1c", ("testers",))
MECHANISM = "SCRAM-SHA-512"


def auth(library: str = "kafka-python", user: User = TESTER, mechanism: str = MECHANISM) -> Any:
    """What a client library needs to log in to a test gateway as `user`: keyword arguments
    ("kafka-python", "aiokafka"), a config dict ("confluent"), or command-line args ("kcat")."""
    if library in ("kafka-python", "aiokafka"):
        return {"security_protocol": "SASL_PLAINTEXT", "sasl_mechanism": mechanism,
                "sasl_plain_username": user.name, "sasl_plain_password": user.password}
    if library == "confluent":
        return {"security.protocol": "SASL_PLAINTEXT", "sasl.mechanisms": mechanism,
                "sasl.username": user.name, "sasl.password": user.password}
    if library == "kcat":
        return ["-X", "security.protocol=SASL_PLAINTEXT", "-X", f"sasl.mechanisms={mechanism}",
                "-X", f"sasl.username={user.name}", "-X", f"sasl.password={user.password}"]
    raise ValueError(f"unknown client library {library!r}")


def java_client_properties(path: Path, user: User = TESTER, mechanism: str = MECHANISM) -> Path:
    """A --command-config / --producer.config file for Kafka's Java tools."""
    module = "scram.ScramLoginModule" if mechanism.startswith("SCRAM") else "plain.PlainLoginModule"
    path.write_text(
        "security.protocol=SASL_PLAINTEXT\n"
        f"sasl.mechanism={mechanism}\n"
        f"sasl.jaas.config=org.apache.kafka.common.security.{module} required "
        f'username="{user.name}" password="{user.password}";\n')
    return path


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
                 upstream: str = "sasl", users: tuple[User, ...] = (), rules: Path = TEST_RULES,
                 identity: dict | None = None, listen_tls: dict | None = None, audit: dict | None = None,
                 **kafka_overrides) -> None:
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
                       "broker_ports": {"first": first + 1, "count": BROKER_PORTS},
                       **({"tls": listen_tls} if listen_tls else {})},
            "upstream": upstream_config,
            **kafka_overrides,
        }
        self.credentials_file = self.work_dir / "credentials.json"
        self.users = (TESTER, *users)
        self.config = {
            "workers": workers, "log_level": log_level, "drain_timeout_s": 10,
            "identity": {"credentials_file": str(self.credentials_file), "failed_auth_delay_ms": 20,
                         **(identity or {})},
            "rules": {"dir": str(rules)},
            "content": {"hash_key_env": MASK_KEY_ENV},
            "state": {"sqlite_path": str(self.work_dir / "state.db"), "poll_interval_ms": 100},
            "audit": {"dir": str(self.work_dir), "chain_key_env": AUDIT_KEY_ENV, "flush_interval_ms": 20,
                      **(audit or {})},
            "kafka": kafka_section,
        }
        self.config_file = self.work_dir / "gateway.yaml"
        self.log_file = self.work_dir / "gateway.log"
        self.env = {**os.environ, PASSWORD_ENV: kafka.password, MASK_KEY_ENV: MASK_KEY, AUDIT_KEY_ENV: AUDIT_KEY}
        self.process: subprocess.Popen | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def gateway_ports(self) -> set[int]:
        return {self.port, *range(self.broker_ports_first, self.broker_ports_first + BROKER_PORTS)}

    def start(self, timeout: float = 30) -> Gateway:
        from brokerguard.identity.credentials import CredentialsFile

        credentials = CredentialsFile(self.credentials_file, create=True)
        for user in self.users:
            if user.name not in credentials.users():
                credentials.add(user.name, user.password, list(user.groups))
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

    def cli(self, *args: str, check: bool = True, input: str | None = None) -> subprocess.CompletedProcess:
        """`brokerguard ARGS --config <this gateway's config>`."""
        result = subprocess.run([BROKERGUARD, *args, "--config", str(self.config_file)], env=self.env,
                                capture_output=True, text=True, input=input, timeout=60)
        if check and result.returncode != 0:
            raise AssertionError(f"brokerguard {' '.join(args)} exited {result.returncode}:\n"
                                 f"{result.stdout}{result.stderr}")
        return result

    def wait_for_log(self, text: str, timeout: float = 10, since: int = 0) -> str:
        """The log once `text` is in it, after its first `since` characters."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            log = self.log()
            if text in log[since:]:
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


def read_response(sock: socket.socket, api_key: int, version: int) -> tuple[int, dict]:
    """(correlation id, decoded body) of the next response frame on `sock`."""
    from brokerguard.plugins.kafka.protocol import codec

    size = int.from_bytes(recv_exactly(sock, 4), "big", signed=True)
    payload = recv_exactly(sock, size)
    correlation_id, offset = codec.decode_response_header(
        payload, 0, codec.response_header_version(api_key, version))
    return correlation_id, codec.decode_response(api_key, version, payload, offset)


def login(sock: socket.socket, user: User = TESTER, mechanism: str = MECHANISM) -> dict:
    """SaslHandshake and SaslAuthenticate on `sock` as a Kafka client does them; the last
    SaslAuthenticate response. Raises AssertionError if the gateway refuses."""
    from brokerguard.plugins.kafka import sasl
    from brokerguard.secret import Secret

    sock.sendall(request_frame(17, 1, {"mechanism": mechanism}, correlation_id=1))
    _, handshake = read_response(sock, 17, 1)
    assert handshake["error_code"] == 0, f"SaslHandshake: {handshake}"
    exchange = sasl.mechanism(mechanism, user.name, Secret(user.password))
    token: bytes | None = exchange.first()
    correlation_id = 1
    while token is not None:
        correlation_id += 1
        sock.sendall(request_frame(36, 2, {"auth_bytes": token}, correlation_id=correlation_id))
        _, reply = read_response(sock, 36, 2)
        assert reply["error_code"] == 0, f"SaslAuthenticate: {reply}"
        token = exchange.respond(bytes(reply["auth_bytes"]))
    return reply


def connect(address: str, user: User | None = TESTER, timeout: float = 10) -> socket.socket:
    """A socket to HOST:PORT, logged in as `user` (None: not logged in)."""
    host, _, port = address.rpartition(":")
    sock = socket.create_connection((host, int(port)), timeout=timeout)
    if user is not None:
        try:
            login(sock, user)
        except BaseException:
            sock.close()
            raise
    return sock


def call(address: str, api_key: int, version: int, body: dict, timeout: float = 10,
         user: User | None = TESTER) -> dict:
    """One request on a fresh connection to HOST:PORT, logged in as `user` first (None for the
    broker's own plain listener); the decoded response body."""
    with connect(address, user, timeout) as sock:
        sock.sendall(request_frame(api_key, version, body, correlation_id=7))
        correlation_id, response = read_response(sock, api_key, version)
    assert correlation_id == 7, f"response to correlation id {correlation_id}, expected 7"
    return response


def partition_leader(address: str, topic: str, partition: int = 0, user: User | None = TESTER) -> str:
    """HOST:PORT of the partition's leader as Metadata at `address` names it."""
    body = call(address, 3, 12, {"topics": [{"name": topic}], "allow_auto_topic_creation": False}, user=user)
    brokers = {b["node_id"]: f"{b['host']}:{b['port']}" for b in body["brokers"]}
    (found,) = [t for t in body["topics"] if t["name"] == topic]
    assert found["error_code"] == 0, f"Metadata for {topic}: error {found['error_code']}"
    (leader,) = [p["leader_id"] for p in found["partitions"] if p["partition_index"] == partition]
    return brokers[leader]


def produce_and_consume(bootstrap: str, topic: str, values: list[bytes], user: User = TESTER) -> None:
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", **auth(user=user))
    try:
        for value in values:
            producer.send(topic, value).get(timeout=15)
    finally:
        producer.close()
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                             auto_offset_reset="earliest", consumer_timeout_ms=15000, **auth(user=user))
    try:
        consumer.assign([TopicPartition(topic, 0)])
        seen = [m.value for _, m in zip(values, consumer)]
    finally:
        consumer.close()
    assert seen == values


def eventually(read, until, timeout: float = 15):
    """read() until until(value) holds or timeout seconds pass; the last value either way. For
    what the gateway does off the data path (the audit trail) within a flush interval."""
    deadline = time.monotonic() + timeout
    while True:
        value = read()
        if until(value) or time.monotonic() > deadline:
            return value
        time.sleep(0.1)


def create_topics(kafka, *names: str, partitions: int = 1, timeout: float = 30) -> None:
    """Topics created straight at the broker: tests about records or about who may use them go
    through the gateway. One that exists already (a shared dead-letter topic) is fine."""
    from confluent_kafka import KafkaError
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": kafka.bootstrap})
    for future in admin.create_topics([NewTopic(n, partitions, 1) for n in names]).values():
        try:
            future.result(timeout)
        except Exception as err:
            if err.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise
    # Created is not yet led: a client that asks at once can get NOT_LEADER_OR_FOLLOWER.
    deadline = time.monotonic() + timeout
    while True:
        topics = admin.list_topics(timeout=timeout).topics
        if all(name in topics and topics[name].error is None and topics[name].partitions
               and all(p.leader >= 0 for p in topics[name].partitions.values()) for name in names):
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"topics {names} have no leader after {timeout} s")
        time.sleep(0.05)


def replay_session(gateway: Gateway, kafka, session: str, sandbox: str, count: int) -> list[tuple]:
    """`brokerguard sessions replay` of a session into sandbox (as the test account, through the
    gateway's rules); the (key, value, headers, timestamp) of the first `count` records there."""
    gateway.env["REPLAY_PASSWORD"] = TESTER.password
    out = gateway.cli("sessions", "replay", session, "--to", sandbox, "--username", TESTER.name,
                      "--password-env", "REPLAY_PASSWORD").stdout
    assert f"published {count} records" in out
    # Polled up to a deadline, not until a quiet spell: on a loaded host the first fetch of a new
    # topic can come after more than ten seconds of nothing. Once, under load, one consumer read
    # nothing in 60 s from records the broker had acknowledged; a consumer that has read nothing
    # for 20 s is replaced by a new one (new connections, metadata and offset lookup).
    messages: list = []
    deadline = time.monotonic() + 60
    while len(messages) < count and time.monotonic() < deadline:
        consumer = KafkaConsumer(bootstrap_servers=kafka.bootstrap, auto_offset_reset="earliest",
                                 enable_auto_commit=False)
        consumer.assign([TopicPartition(sandbox, 0)])
        messages = []
        given_up = min(deadline, time.monotonic() + 20)
        while len(messages) < count and (messages or time.monotonic() < given_up) and time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=1000).values():
                messages += batch
        consumer.close()
    return [(m.key, m.value, list(m.headers), m.timestamp) for m in messages[:count]]
