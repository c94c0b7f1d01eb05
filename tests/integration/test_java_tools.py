"""Kafka's own Java tools through the gateway: topics admin, console producer with every codec,
console consumer in a group, and the group's offsets as kafka-consumer-groups shows them.

Every tool logs in to the gateway with a client properties file (`--command-config`, the name
every Kafka 4.x tool takes). Every JVM costs seconds on a shared machine, so the file makes about
a dozen tool runs.
"""

from __future__ import annotations

import re
import subprocess
import time
import uuid

import pytest
from confluent_kafka.admin import AdminClient, NewTopic

from devstack.kafka import java_tool
from harness import auth, java_client_properties

pytestmark = pytest.mark.kafka

TOPICS = "org.apache.kafka.tools.TopicCommand"
PRODUCER = "org.apache.kafka.tools.ConsoleProducer"
CONSUMER = "org.apache.kafka.tools.consumer.ConsoleConsumer"
GROUPS = "org.apache.kafka.tools.consumer.group.ConsumerGroupCommand"
CODECS = ("none", "gzip", "snappy", "lz4", "zstd")
PER_CODEC = 2
TIMEOUT = 90


def tool(main_class: str, *args, input: str | None = None) -> str:
    proc = java_tool(main_class, *args, input=input, timeout=TIMEOUT)
    assert proc.returncode == 0, (f"{main_class.rsplit('.', 1)[1]} {' '.join(map(str, args))}: "
                                  f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")
    return proc.stdout


@pytest.fixture(scope="module")
def login(tmp_path_factory) -> tuple[str, str]:
    """The tools' arguments for logging in to the gateway."""
    properties = java_client_properties(tmp_path_factory.mktemp("java-tools") / "client.properties")
    return ("--command-config", str(properties))


def test_topic_command(gateway, login):
    topic = f"java-topics-{uuid.uuid4().hex[:8]}"
    server = ("--bootstrap-server", gateway.bootstrap, *login)
    tool(TOPICS, *server, "--create", "--topic", topic, "--partitions", "3", "--replication-factor", "1")
    assert topic in tool(TOPICS, *server, "--list").split()

    described = tool(TOPICS, *server, "--describe", "--topic", topic)
    for fact in (f"Topic: {topic}", "PartitionCount: 3", "ReplicationFactor: 1"):
        assert fact in described, described
    leaders = dict(re.findall(r"Partition: (\d+)\s+Leader: (-?\d+)", described))
    assert leaders == {"0": "1", "1": "1", "2": "1"}, described

    tool(TOPICS, *server, "--delete", "--topic", topic)
    # Deletion is asynchronous in the broker; the name leaves the listing once the controller is done.
    admin = AdminClient({"bootstrap.servers": gateway.bootstrap, **auth("confluent")})
    deadline = time.monotonic() + TIMEOUT
    while topic in admin.list_topics(timeout=TIMEOUT).topics:
        assert time.monotonic() < deadline, f"{topic} still listed {TIMEOUT} s after --delete"
        time.sleep(0.1)


def records(codec: str) -> list[tuple[str, str, str]]:
    """(headers, key, value) as ConsoleProducer reads them with parse.headers and parse.key."""
    return [(f"codec:{codec},n:{i}", f"{codec}-key-{i}", f"{codec} value {i} " + "xyz" * 50)
            for i in range(PER_CODEC)]


@pytest.fixture(scope="module")
def produced(gateway, login):
    """A one-partition topic (so the consumer's order is the producers' order) holding every
    codec's records, each produced by its own ConsoleProducer run with that compression."""
    topic = f"java-console-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": gateway.bootstrap, **auth("confluent")})
    admin.create_topics([NewTopic(topic, 1, 1)])[topic].result(TIMEOUT)
    for codec in CODECS:
        tool(PRODUCER, "--bootstrap-server", gateway.bootstrap, *login, "--topic", topic, "--compression-codec", codec,
             "--reader-property", "parse.key=true", "--reader-property", "parse.headers=true",
             input="".join(f"{h}\t{k}\t{v}\n" for h, k, v in records(codec)))
    return topic


def broker_timestamps(kafka, topic: str, count: int) -> list[int]:
    """The records' timestamps as the broker itself serves them, read past the gateway."""
    proc = subprocess.run(["kcat", "-C", "-b", kafka.bootstrap, "-t", topic, "-o", "beginning", "-e",
                           "-f", "%T\\n"], capture_output=True, text=True, timeout=TIMEOUT)
    assert proc.returncode == 0, proc.stderr
    stamps = [int(line) for line in proc.stdout.split()]
    assert len(stamps) == count
    return stamps


@pytest.fixture(scope="module")
def group():
    return f"java-group-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def consumed(gateway, login, produced, group) -> str:
    return tool(CONSUMER, "--bootstrap-server", gateway.bootstrap, *login, "--topic", produced, "--group", group,
                "--from-beginning", "--max-messages", str(PER_CODEC * len(CODECS)), "--timeout-ms", "60000",
                "--formatter-property", "print.key=true", "--formatter-property", "print.headers=true",
                "--formatter-property", "print.timestamp=true", "--formatter-property", "print.offset=true")


def test_console_producer_and_consumer(kafka, produced, consumed):
    sent = [record for codec in CODECS for record in records(codec)]
    stamps = broker_timestamps(kafka, produced, len(sent))
    expected = "".join(f"CreateTime:{stamp}\tOffset:{offset}\t{headers}\t{key}\t{value}\n"
                       for offset, (stamp, (headers, key, value)) in enumerate(zip(stamps, sent)))
    assert consumed == expected


def test_consumer_group_describe(gateway, login, produced, group, consumed):
    described = tool(GROUPS, "--bootstrap-server", gateway.bootstrap, *login, "--describe", "--group", group)
    rows = [line.split() for line in described.splitlines() if line.startswith(group)]
    assert len(rows) == 1, described
    header = next(line.split() for line in described.splitlines() if line.startswith("GROUP"))
    row = dict(zip(header, rows[0]))
    total = str(PER_CODEC * len(CODECS))
    assert (row["TOPIC"], row["PARTITION"], row["CURRENT-OFFSET"], row["LOG-END-OFFSET"], row["LAG"]) == (
        produced, "0", total, total, "0"), described
