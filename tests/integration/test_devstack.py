"""The dev-stack broker: starts, answers, authenticates, and leaves nothing behind."""

import os
import ssl
import sys
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from devstack.kafka import KafkaBroker, api_versions, java_tool  # noqa: E402

pytestmark = pytest.mark.kafka

TOPICS = "org.apache.kafka.tools.TopicCommand"
PRODUCER = "org.apache.kafka.tools.ConsoleProducer"
CONSUMER = "org.apache.kafka.tools.consumer.ConsoleConsumer"
PERF = "org.apache.kafka.tools.ProducerPerformance"


@pytest.fixture(scope="module")
def broker():
    # One broker for the whole module; the last test stops it on purpose.
    b = KafkaBroker()
    b.start()
    yield b
    b.stop()


def _out(proc):
    return f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"


def test_api_versions_on_every_listener(broker):
    for port in (broker.ports["PLAINTEXT"], broker.ports["SASL_PLAINTEXT"]):
        apis = api_versions("127.0.0.1", port)
        assert 0 in apis and 18 in apis  # Produce, ApiVersions
    ctx = ssl.create_default_context(cafile=str(broker.ca_file))
    apis = api_versions("127.0.0.1", broker.ports["SASL_SSL"], ssl_context=ctx)
    assert 17 in apis  # SaslHandshake


def test_create_topic_over_plaintext(broker):
    topic = f"devstack-{uuid.uuid4().hex[:8]}"
    created = java_tool(TOPICS, "--bootstrap-server", broker.bootstrap, "--create",
                        "--topic", topic, "--partitions", "3", "--replication-factor", "1")
    assert created.returncode == 0, _out(created)
    described = java_tool(TOPICS, "--bootstrap-server", broker.bootstrap, "--describe",
                          "--topic", topic)
    assert described.returncode == 0, _out(described)
    assert "PartitionCount: 3" in described.stdout


def test_scram_sha_512_produce_and_consume(broker, tmp_path):
    config = broker.write_client_config(tmp_path / "scram.properties", mechanism="SCRAM-SHA-512")
    topic = f"devstack-scram-{uuid.uuid4().hex[:8]}"
    lines = ["one", "two", "three"]
    produced = java_tool(PRODUCER, "--bootstrap-server", broker.sasl_bootstrap,
                         "--command-config", config, "--topic", topic,
                         input="\n".join(lines) + "\n")
    assert produced.returncode == 0, _out(produced)
    consumed = java_tool(CONSUMER, "--bootstrap-server", broker.sasl_bootstrap,
                         "--command-config", config, "--topic", topic, "--from-beginning",
                         "--max-messages", str(len(lines)), "--timeout-ms", "30000")
    assert consumed.returncode == 0, _out(consumed)
    assert consumed.stdout.split() == lines


def test_transactions_and_groups_on_a_single_node(broker):
    # Fails when an internal topic asks for more replicas than one node has.
    topic = f"devstack-txn-{uuid.uuid4().hex[:8]}"
    produced = java_tool(PERF, "--topic", topic, "--num-records", "1000", "--record-size", "100",
                         "--throughput", "-1", "--transactional-id", f"tx-{topic}",
                         "--transaction-duration-ms", "100",
                         "--command-property", f"bootstrap.servers={broker.bootstrap}")
    assert produced.returncode == 0, _out(produced)
    consumed = java_tool(CONSUMER, "--bootstrap-server", broker.bootstrap, "--topic", topic,
                         "--group", f"g-{topic}", "--from-beginning", "--max-messages", "1000",
                         "--timeout-ms", "30000",
                         "--command-property", "isolation.level=read_committed")
    assert consumed.returncode == 0, _out(consumed)
    assert len(consumed.stdout.splitlines()) == 1000


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-256", "PLAIN"])
def test_sasl_ssl_mechanisms(broker, tmp_path, mechanism):
    config = broker.write_client_config(tmp_path / "c.properties", mechanism=mechanism, tls=True)
    listed = java_tool(TOPICS, "--bootstrap-server", broker.ssl_bootstrap,
                       "--command-config", config, "--list")
    assert listed.returncode == 0, _out(listed)


def test_wrong_password_is_refused(broker, tmp_path):
    config = broker.write_client_config(tmp_path / "bad.properties", mechanism="SCRAM-SHA-512",
                                        password="not-the-password")
    listed = java_tool(TOPICS, "--bootstrap-server", broker.sasl_bootstrap,
                       "--command-config", config, "--list", timeout=60)
    assert listed.returncode != 0, _out(listed)
    assert "Authentication failed" in listed.stdout + listed.stderr, _out(listed)


def test_stop_leaves_no_process(broker):
    pid, work_dir = broker.pid, broker.work_dir
    assert Path(f"/proc/{pid}").exists()
    broker.stop()
    assert not Path(f"/proc/{pid}").exists()
    with pytest.raises(ProcessLookupError):
        os.killpg(pid, 0)  # nothing left in the broker's process group
    assert not work_dir.exists()
    broker.stop()  # idempotent
