"""A real single-node Apache Kafka (KRaft) broker for tests, `make run` and benchmarks.

Standard library only: the jars come from Maven (devstack/pom.xml pins the version),
TLS material from the `openssl` command, readiness from hand-encoded Kafka requests.

Library use::

    from devstack.kafka import KafkaBroker, java_tool

    with KafkaBroker() as broker:
        broker.bootstrap        # "127.0.0.1:PORT", PLAINTEXT, no auth
        broker.sasl_bootstrap   # SASL_PLAINTEXT: SCRAM-SHA-512, SCRAM-SHA-256, PLAIN
        broker.ssl_bootstrap    # SASL_SSL, same mechanisms; trust broker.ca_file
        broker.username, broker.password   # the gateway service account

Command line::

    python devstack/kafka.py jars | start | status | stop | run

`start` leaves the broker running in the background and records it in
.devstack/kafka/state.json (mode 0600; holds the password, which is never printed).

Main classes of the Kafka 4.4 tools, for `java_tool()` / `java_tool_popen()`:

    kafka.Kafka                                        the broker (server.properties)
    kafka.tools.StorageTool                            kafka-storage.sh (format)
    org.apache.kafka.tools.TopicCommand                kafka-topics.sh
    org.apache.kafka.tools.ConfigCommand               kafka-configs.sh
    org.apache.kafka.tools.ConsoleProducer             kafka-console-producer.sh
    org.apache.kafka.tools.consumer.ConsoleConsumer    kafka-console-consumer.sh
    org.apache.kafka.tools.consumer.group.ConsumerGroupCommand   kafka-consumer-groups.sh
    org.apache.kafka.tools.ProducerPerformance         kafka-producer-perf-test.sh
    org.apache.kafka.tools.ConsumerPerformance         kafka-consumer-perf-test.sh
    org.apache.kafka.tools.ShareConsumerPerformance    kafka-share-consumer-perf-test.sh
    org.apache.kafka.tools.EndToEndLatency             kafka-e2e-latency.sh

In 4.4 the tools take client settings as `--command-config FILE` / `--command-property k=v`
(--producer-props, --consumer.config and --messages are deprecated); EndToEndLatency is
positional: bootstrap topic num-records acks record-size [command-config].
`KafkaBroker.write_client_config()` writes a FILE for the SASL listeners.
"""

from __future__ import annotations

import argparse
import base64
import fcntl
import hashlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

if __package__ in (None, ""):  # run as a script (python devstack/kafka.py ...): import as the package
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from devstack.processes import (DevstackError, PortClash, ServerProcess, free_ports, recv_exactly,  # noqa: E402
                                stop_group, tail)

ROOT = Path(__file__).resolve().parent.parent
POM = ROOT / "devstack" / "pom.xml"
DEVSTACK_DIR = ROOT / ".devstack"
JAR_DIR = DEVSTACK_DIR / "jars"
KAFKA_DIR = DEVSTACK_DIR / "kafka"
STATE_FILE = KAFKA_DIR / "state.json"

BROKER_JVM_OPTS = (
    # Small enough to share 2 cores / 24 GiB with the tests and the gateway.
    "-Xms256m", "-Xmx1g",
    "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20", "-XX:InitiatingHeapOccupancyPercent=35",
    "-XX:+ExplicitGCInvokesConcurrent", "-Djava.awt.headless=true",
)
TOOL_JVM_OPTS = ("-Xms64m", "-Xmx512m", "-XX:+UseG1GC", "-Djava.awt.headless=true")
MECHANISMS = ("SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN")
READY_TIMEOUT = 90.0
STOP_TIMEOUT = 30.0

BROKER_LOG4J2 = """\
status = warn
appender.out.type = Console
appender.out.name = OUT
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.out.ref = OUT
logger.state.name = state.change.logger
logger.state.level = WARN
logger.request.name = kafka.request.logger
logger.request.level = WARN
"""

# Tools write their results to stdout; keep log lines off it and few.
TOOL_LOG4J2 = """\
status = error
appender.err.type = Console
appender.err.name = ERR
appender.err.target = SYSTEM_ERR
appender.err.layout.type = PatternLayout
appender.err.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = WARN
rootLogger.appenderRef.err.ref = ERR
"""


# --------------------------------------------------------------------------- jars

def kafka_version() -> str:
    """The Kafka version pinned in devstack/pom.xml."""
    match = re.search(r"<kafka\.version>([^<]+)</kafka\.version>", POM.read_text())
    if not match:
        raise DevstackError(f"{POM}: no <kafka.version> property")
    return match.group(1).strip()


def ensure_jars() -> Path:
    """Resolve the broker and tool jars with Maven once per POM content; return their dir."""
    JAR_DIR.mkdir(parents=True, exist_ok=True)
    stamp = JAR_DIR / ".stamp"
    want = f"{kafka_version()} {hashlib.sha256(POM.read_bytes()).hexdigest()}"
    # Parallel test workers may all arrive here at once.
    with open(DEVSTACK_DIR / ".jars.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if stamp.exists() and stamp.read_text() == want and any(JAR_DIR.glob("kafka_2.13-*.jar")):
            return JAR_DIR
        for old in JAR_DIR.glob("*.jar"):
            old.unlink()
        stamp.unlink(missing_ok=True)
        mvn = shutil.which("mvn")
        if mvn is None:
            raise DevstackError("Maven (mvn) is not on PATH; it is needed to fetch the Kafka jars")
        cmd = [mvn, "-B", "-q", "-f", str(POM), "dependency:copy-dependencies",
               f"-DoutputDirectory={JAR_DIR}"]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise DevstackError(
                f"Maven failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stdout}{proc.stderr}")
        stamp.write_text(want)
    return JAR_DIR


def _classpath(jar_dir: Path) -> str:
    return str(jar_dir / "*")  # the JVM expands the wildcard itself


def _tool_log_config() -> Path:
    path = DEVSTACK_DIR / "tools-log4j2.properties"
    if not path.exists() or path.read_text() != TOOL_LOG4J2:
        DEVSTACK_DIR.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(TOOL_LOG4J2)
        tmp.replace(path)
    return path


def _tool_cmd(main_class: str, args, jvm_opts) -> list[str]:
    jar_dir = ensure_jars()
    opts = TOOL_JVM_OPTS if jvm_opts is None else tuple(jvm_opts)
    return [_java(), *opts, f"-Dlog4j2.configurationFile={_tool_log_config()}",
            "-cp", _classpath(jar_dir), main_class, *map(str, args)]


def java_tool(main_class: str, *args, timeout: float = 120, input: str | None = None,
              jvm_opts=None, check: bool = False, **kw) -> subprocess.CompletedProcess:
    """Run a Kafka tool class to completion; output is captured as text.

    `jvm_opts` replaces TOOL_JVM_OPTS; other keywords go to subprocess.run.
    """
    return subprocess.run(_tool_cmd(main_class, args, jvm_opts), input=input,
                          capture_output=True, text=True, timeout=timeout, check=check, **kw)


def java_tool_popen(main_class: str, *args, jvm_opts=None, **kw) -> subprocess.Popen:
    """Start a long-running Kafka tool class; keywords go to subprocess.Popen."""
    return subprocess.Popen(_tool_cmd(main_class, args, jvm_opts), **kw)


def _java() -> str:
    home = os.environ.get("JAVA_HOME")
    java = str(Path(home) / "bin" / "java") if home else shutil.which("java")
    if not java or not Path(java).exists():
        raise DevstackError("java is not on PATH (Kafka needs Java 17 or newer)")
    return java


# --------------------------------------------------------------------------- wire

def _request(sock: socket.socket, api_key: int, version: int, corr: int, body: bytes) -> bytes:
    """Send one request with header v1 (non-flexible) and return the response body."""
    client_id = b"devstack"
    header = struct.pack(">hhih", api_key, version, corr, len(client_id)) + client_id
    frame = header + body
    sock.sendall(struct.pack(">i", len(frame)) + frame)
    size = struct.unpack(">i", recv_exactly(sock, 4))[0]
    payload = recv_exactly(sock, size)
    if struct.unpack(">i", payload[:4])[0] != corr:
        raise DevstackError("correlation id mismatch")
    return payload[4:]


def api_versions(host: str, port: int, timeout: float = 2.0,
                 ssl_context=None) -> dict[int, tuple[int, int]]:
    """ApiVersions v0: {api_key: (min_version, max_version)}.

    Brokers answer it before SASL authentication, so it works on every listener;
    pass an ssl.SSLContext for SASL_SSL.
    """
    with socket.create_connection((host, port), timeout=timeout) as raw:
        sock = ssl_context.wrap_socket(raw, server_hostname=host) if ssl_context else raw
        body = _request(sock, 18, 0, 1, b"")
    error, count = struct.unpack(">hi", body[:6])
    if error:
        raise DevstackError(f"ApiVersions error code {error}")
    apis = {}
    for i in range(count):
        key, lo, hi = struct.unpack_from(">hhh", body, 6 + 6 * i)
        apis[key] = (lo, hi)
    return apis


def metadata_brokers(host: str, port: int, apis: dict[int, tuple[int, int]],
                     timeout: float = 2.0) -> list[tuple[int, str, int]]:
    """Metadata for no topics, in the newest non-flexible version; [(node_id, host, port)]."""
    lo, hi = apis.get(3, (0, -1))
    version = min(hi, 8)  # v9+ uses compact encodings
    if version < max(lo, 1):
        raise DevstackError(f"no usable Metadata version in {lo}..{hi}")
    body = struct.pack(">i", 0)  # empty topic list: brokers only
    if version >= 4:
        body += b"\x00"  # allow_auto_topic_creation
    if version >= 8:
        body += b"\x00\x00"  # include cluster/topic authorized operations
    with socket.create_connection((host, port), timeout=timeout) as sock:
        resp = _request(sock, 3, version, 2, body)
    pos = 4 if version >= 3 else 0  # throttle_time_ms
    (count,), pos = struct.unpack_from(">i", resp, pos), pos + 4
    brokers = []
    for _ in range(count):
        node_id, hlen = struct.unpack_from(">ih", resp, pos)
        pos += 6
        bhost = resp[pos:pos + hlen].decode()
        pos += hlen
        (bport, rlen) = struct.unpack_from(">ih", resp, pos)
        pos += 6 + max(rlen, 0)
        brokers.append((node_id, bhost, bport))
    return brokers


# --------------------------------------------------------------------------- TLS

def _make_tls(tls_dir: Path) -> tuple[Path, Path]:
    """Throw-away CA and a broker cert for 127.0.0.1/localhost; return (ca.pem, broker.pem)."""
    tls_dir.mkdir(parents=True, exist_ok=True)
    ca_key, ca_pem = tls_dir / "ca.key", tls_dir / "ca.pem"
    key, csr, crt = tls_dir / "broker.key", tls_dir / "broker.csr", tls_dir / "broker.crt"
    ext = tls_dir / "broker.ext"
    # Extensions strict verifiers (Python 3.13 VERIFY_X509_STRICT, Java) insist on.
    ext.write_text(
        "basicConstraints=critical,CA:FALSE\n"
        "keyUsage=critical,digitalSignature,keyEncipherment\n"
        "extendedKeyUsage=serverAuth\n"
        "subjectAltName=IP:127.0.0.1,DNS:localhost\n"
        "subjectKeyIdentifier=hash\n"
        "authorityKeyIdentifier=keyid\n")
    steps = [
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", ca_key,
         "-out", ca_pem, "-days", "30", "-subj", "/CN=brokerguard devstack CA",
         "-addext", "basicConstraints=critical,CA:TRUE",
         "-addext", "keyUsage=critical,keyCertSign,cRLSign"],
        ["openssl", "req", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", csr,
         "-subj", "/CN=localhost"],
        ["openssl", "x509", "-req", "-in", csr, "-CA", ca_pem, "-CAkey", ca_key,
         "-CAcreateserial", "-out", crt, "-days", "30", "-sha256", "-extfile", ext],
    ]
    for cmd in steps:
        proc = subprocess.run([str(c) for c in cmd], capture_output=True, text=True)
        if proc.returncode != 0:
            raise DevstackError(f"openssl failed: {' '.join(map(str, cmd))}\n{proc.stderr}")
    # Kafka's PEM keystore: unencrypted PKCS#8 key followed by the certificate chain.
    broker_pem = tls_dir / "broker.pem"
    broker_pem.write_text(key.read_text() + crt.read_text() + ca_pem.read_text())
    return ca_pem, broker_pem


# --------------------------------------------------------------------------- broker

def _cluster_id() -> str:
    # Kafka's Uuid text form: URL-safe base64 of 16 bytes, unpadded. Like Kafka's own
    # Uuid.randomUuid(), avoid a leading "-": the storage tool would read it as an option.
    while True:
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not text.startswith("-"):
            return text


class KafkaBroker(ServerProcess):
    """One KRaft node (broker + controller, node.id=1) on 127.0.0.1 in its own process group.

    Listeners: PLAINTEXT (no auth, also inter-broker), SASL_PLAINTEXT and SASL_SSL
    (SCRAM-SHA-512, SCRAM-SHA-256, PLAIN; the `gateway` user with a fresh random
    password), CONTROLLER. No authorizer is configured: every authenticated principal
    may do everything. An auto-created work dir is removed by stop() unless `keep_work_dir`.
    """

    def __init__(self, work_dir: str | os.PathLike | None = None, *,
                 username: str = "gateway", jvm_opts=BROKER_JVM_OPTS,
                 extra_config: dict[str, str] | None = None,
                 ready_timeout: float = READY_TIMEOUT, keep_work_dir: bool | None = None):
        self._requested_dir = Path(work_dir) if work_dir else None
        self.keep_work_dir = keep_work_dir if keep_work_dir is not None else work_dir is not None
        self.username = username
        self.password: str | None = None
        self.jvm_opts = tuple(jvm_opts)
        self.extra_config = dict(extra_config or {})
        self.ready_timeout = ready_timeout
        self.work_dir: Path | None = None
        self.jar_dir: Path | None = None
        self.log_file: Path | None = None
        self.ca_file: Path | None = None
        self.ports: dict[str, int] = {}
        self.pid: int | None = None
        self.kafka_version = kafka_version()
        self._proc: subprocess.Popen | None = None

    # ---- addresses
    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.ports['PLAINTEXT']}"

    @property
    def sasl_bootstrap(self) -> str:
        return f"127.0.0.1:{self.ports['SASL_PLAINTEXT']}"

    @property
    def ssl_bootstrap(self) -> str:
        return f"127.0.0.1:{self.ports['SASL_SSL']}"

    # ---- lifecycle
    def start(self) -> "KafkaBroker":
        if self._proc is not None:
            raise DevstackError("broker already started")
        self.jar_dir = ensure_jars()
        self._prepare_work_dir()
        self.password = secrets.token_urlsafe(24)
        self.ca_file, broker_pem = _make_tls(self.work_dir / "tls")
        self._start_on_free_ports(lambda: self._write_config(broker_pem))
        return self

    def _prepare_work_dir(self) -> None:
        if self._requested_dir is not None:
            self.work_dir = self._requested_dir.resolve()
            if self.work_dir.exists():
                shutil.rmtree(self.work_dir)
            self.work_dir.mkdir(parents=True)
        else:
            KAFKA_DIR.mkdir(parents=True, exist_ok=True)
            self.work_dir = Path(tempfile.mkdtemp(prefix="broker-", dir=KAFKA_DIR))
        os.chmod(self.work_dir, 0o700)  # server.properties holds the password
        self.log_file = self.work_dir / "broker.log"

    def _write_config(self, broker_pem: Path) -> None:
        wd = self.work_dir
        data = wd / "data"
        shutil.rmtree(data, ignore_errors=True)  # a retry formats afresh
        names = ("PLAINTEXT", "SASL_PLAINTEXT", "SASL_SSL", "CONTROLLER")
        self.ports = dict(zip(names, free_ports(len(names))))
        listeners = ",".join(f"{n}://127.0.0.1:{p}" for n, p in self.ports.items())
        advertised = ",".join(f"{n}://127.0.0.1:{p}" for n, p in self.ports.items()
                              if n != "CONTROLLER")
        cfg = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.voters": f"1@127.0.0.1:{self.ports['CONTROLLER']}",
            "controller.listener.names": "CONTROLLER",
            "listeners": listeners,
            "advertised.listeners": advertised,
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,SASL_PLAINTEXT:SASL_PLAINTEXT,"
                                              "SASL_SSL:SASL_SSL,CONTROLLER:PLAINTEXT",
            "inter.broker.listener.name": "PLAINTEXT",
            "log.dirs": str(data),
            "sasl.enabled.mechanisms": ",".join(MECHANISMS),
            # Single node: every internal topic with one replica.
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "8",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "transaction.state.log.num.partitions": "8",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            "share.coordinator.state.topic.num.partitions": "8",
            "default.replication.factor": "1",
            "min.insync.replicas": "1",
            "num.partitions": "1",
            "auto.create.topics.enable": "true",
            "group.initial.rebalance.delay.ms": "0",
            "ssl.keystore.type": "PEM",
            "ssl.keystore.location": str(broker_pem),
            "ssl.truststore.type": "PEM",
            "ssl.truststore.location": str(self.ca_file),
            "ssl.client.auth": "none",
        }
        plain = ("org.apache.kafka.common.security.plain.PlainLoginModule required "
                 f'user_{self.username}="{self.password}";')
        scram = "org.apache.kafka.common.security.scram.ScramLoginModule required;"
        for listener in ("sasl_plaintext", "sasl_ssl"):
            cfg[f"listener.name.{listener}.plain.sasl.jaas.config"] = plain
            for mech in ("scram-sha-512", "scram-sha-256"):
                cfg[f"listener.name.{listener}.{mech}.sasl.jaas.config"] = scram
        cfg.update(self.extra_config)
        props = wd / "server.properties"
        props.write_text("".join(f"{k}={v}\n" for k, v in cfg.items()))
        os.chmod(props, 0o600)
        (wd / "log4j2.properties").write_text(BROKER_LOG4J2)
        self._format(props)

    def _format(self, props: Path) -> None:
        cmd = ["kafka.tools.StorageTool", "format", "--config", props,
               "--cluster-id", _cluster_id()]
        for mech in ("SCRAM-SHA-512", "SCRAM-SHA-256"):
            cmd += ["--add-scram", f"{mech}=[name={self.username},password={self.password}]"]
        proc = java_tool(*cmd, timeout=120)
        if proc.returncode != 0:
            raise DevstackError(f"kafka-storage format failed ({proc.returncode}):\n"
                                f"{proc.stdout}{proc.stderr}")

    def _launch(self) -> subprocess.Popen:
        cmd = [_java(), *self.jvm_opts,
               f"-Dlog4j2.configurationFile={self.work_dir / 'log4j2.properties'}",
               f"-Dkafka.logs.dir={self.work_dir}",
               "-cp", _classpath(self.jar_dir), "kafka.Kafka",
               str(self.work_dir / "server.properties")]
        with open(self.log_file, "ab") as log:
            return subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                    cwd=self.work_dir, start_new_session=True)

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.ready_timeout
        last_error: Exception | None = None
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                if "Address already in use" in tail(self.log_file, 200):
                    raise PortClash()
                raise DevstackError(
                    f"Kafka exited with code {self._proc.returncode} during start-up; "
                    f"last lines of {self.log_file}:\n{tail(self.log_file)}")
            try:
                apis = api_versions("127.0.0.1", self.ports["PLAINTEXT"])
                brokers = metadata_brokers("127.0.0.1", self.ports["PLAINTEXT"], apis)
                if any(b[0] == 1 and b[2] == self.ports["PLAINTEXT"] for b in brokers):
                    return
                last_error = DevstackError(f"Metadata lists no broker yet: {brokers}")
            except (OSError, DevstackError, struct.error) as err:
                last_error = err
            time.sleep(0.2)
        raise DevstackError(
            f"Kafka did not answer on {self.bootstrap} within {self.ready_timeout:.0f}s "
            f"(last error: {last_error!r}); last lines of {self.log_file}:\n{tail(self.log_file)}")

    def stop(self, _remove: bool = True) -> None:
        """SIGTERM the process group, wait for a clean shutdown, then SIGKILL. Idempotent."""
        self._end(STOP_TIMEOUT)
        if _remove and not self.keep_work_dir and self.work_dir and self.work_dir.exists():
            shutil.rmtree(self.work_dir, ignore_errors=True)

    @staticmethod
    def _shut_down(pid: int, wait, grace: float) -> None:
        _terminate_group(pid, wait, grace)

    # ---- clients
    def client_config(self, mechanism: str = "SCRAM-SHA-512", tls: bool = False,
                      password: str | None = None) -> dict[str, str]:
        """Java client properties for the gateway account on the SASL listeners."""
        module = ("org.apache.kafka.common.security.plain.PlainLoginModule"
                  if mechanism == "PLAIN" else
                  "org.apache.kafka.common.security.scram.ScramLoginModule")
        secret = self.password if password is None else password
        cfg = {
            "security.protocol": "SASL_SSL" if tls else "SASL_PLAINTEXT",
            "sasl.mechanism": mechanism,
            "sasl.jaas.config": f'{module} required username="{self.username}" '
                                f'password="{secret}";',
        }
        if tls:
            cfg.update({"ssl.truststore.type": "PEM",
                        "ssl.truststore.location": str(self.ca_file)})
        return cfg

    def write_client_config(self, path: str | os.PathLike, **kw) -> Path:
        path = Path(path)
        path.write_text("".join(f"{k}={v}\n" for k, v in self.client_config(**kw).items()))
        os.chmod(path, 0o600)
        return path

    def state(self) -> dict:
        return {
            "kafka_version": self.kafka_version, "pid": self.pid,
            "bootstrap": self.bootstrap, "sasl_bootstrap": self.sasl_bootstrap,
            "ssl_bootstrap": self.ssl_bootstrap, "ports": self.ports,
            "username": self.username, "password": self.password,
            "mechanisms": list(MECHANISMS), "ca_file": str(self.ca_file),
            "work_dir": str(self.work_dir), "log_file": str(self.log_file),
            "jar_dir": str(self.jar_dir),
        }


def _terminate_group(pid: int, wait, grace: float = STOP_TIMEOUT) -> None:
    """SIGTERM the group led by the JVM, give it `grace` seconds, then SIGKILL."""
    stop_group(pid, wait, ((signal.SIGTERM, grace, True),))


# --------------------------------------------------------------------------- CLI

def _write_state(state: dict) -> None:
    KAFKA_DIR.mkdir(parents=True, exist_ok=True)
    fd = os.open(STATE_FILE, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(state, f, indent=2)
    os.chmod(STATE_FILE, 0o600)


def read_state() -> dict | None:
    """The state of the broker started by the CLI, or None."""
    try:
        return json.loads(STATE_FILE.read_text())
    except (OSError, ValueError):
        return None


def _state_alive(state: dict) -> bool:
    # Check the command line too: the pid may have been reused since.
    try:
        cmdline = Path(f"/proc/{state['pid']}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return b"kafka.Kafka" in cmdline and any(state["work_dir"].encode() in a for a in cmdline)


def _cli_state(broker: KafkaBroker) -> dict:
    """The broker's state plus ready-made Java client property files for each SASL setup."""
    state = broker.state()
    clients = broker.work_dir / "clients"
    clients.mkdir(exist_ok=True)
    state["client_configs"] = {
        f"{'sasl_ssl' if tls else 'sasl_plaintext'}:{mech}": str(broker.write_client_config(
            clients / f"{'sasl_ssl' if tls else 'sasl_plaintext'}-{mech.lower()}.properties",
            mechanism=mech, tls=tls))
        for tls in (False, True) for mech in MECHANISMS
    }
    return state


def _public(state: dict) -> str:
    shown = {k: v for k, v in state.items() if k != "password"}
    return json.dumps(shown, indent=2)


def _running_state() -> dict | None:
    state = read_state()
    return state if state and _state_alive(state) else None


def _cli_start(args) -> int:
    if state := _running_state():
        print(f"already running: {state['bootstrap']} (pid {state['pid']})")
        return 0
    broker = KafkaBroker(KAFKA_DIR / "cli", keep_work_dir=True)
    broker.start()
    broker.detach()
    _write_state(_cli_state(broker))
    print(broker.bootstrap)
    print(f"state: {STATE_FILE}", file=sys.stderr)
    return 0


def _cli_stop(args) -> int:
    state = read_state()
    if not state or not _state_alive(state):
        print("not running")
        STATE_FILE.unlink(missing_ok=True)
        return 0
    pid = state["pid"]

    def wait(timeout):
        deadline = time.monotonic() + timeout
        while Path(f"/proc/{pid}").exists() and _state_alive(state):
            if time.monotonic() > deadline:
                raise subprocess.TimeoutExpired("kafka", timeout)
            time.sleep(0.2)

    _terminate_group(pid, wait)
    STATE_FILE.unlink(missing_ok=True)
    print(f"stopped (pid {pid})")
    return 0


def _cli_status(args) -> int:
    state = read_state()
    if not state or not _state_alive(state):
        print("not running")
        return 1
    try:
        api_versions("127.0.0.1", state["ports"]["PLAINTEXT"])
        answering = "answering"
    except (OSError, DevstackError) as err:
        answering = f"not answering ({err})"
    print(f"running, {answering}")
    print(_public(state))
    return 0


def _cli_run(args) -> int:
    def interrupt(*_):
        # First signal stops the broker; further ones must not cut that shutdown short.
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_IGN)
        raise KeyboardInterrupt

    if state := _running_state():
        # Both use the same work dir; starting again would wipe the live one.
        raise DevstackError(f"already running in the background: {state['bootstrap']} "
                            f"(pid {state['pid']}); stop it first")
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, interrupt)
    try:
        with KafkaBroker(KAFKA_DIR / "cli", keep_work_dir=True) as broker:
            state = _cli_state(broker)
            _write_state(state)
            print(_public(state), flush=True)
            print("Kafka is running; Ctrl-C stops it.", file=sys.stderr, flush=True)
            while broker.is_running():
                time.sleep(0.5)
            print(f"Kafka exited; see {broker.log_file}", file=sys.stderr)
            return 1
    except KeyboardInterrupt:
        print("stopped", file=sys.stderr)
        return 0
    finally:
        STATE_FILE.unlink(missing_ok=True)


def _cli_jars(args) -> int:
    print(ensure_jars())
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="devstack/kafka.py", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name, fn, text in (("start", _cli_start, "start in the background"),
                           ("stop", _cli_stop, "stop the background broker"),
                           ("status", _cli_status, "show the background broker"),
                           ("run", _cli_run, "run in the foreground until Ctrl-C"),
                           ("jars", _cli_jars, "only fetch the jars")):
        sub.add_parser(name, help=text).set_defaults(fn=fn)
    args = parser.parse_args(argv)
    try:
        return args.fn(args)
    except DevstackError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
