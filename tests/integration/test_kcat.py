"""kcat (librdkafka) through the gateway: metadata, produce with every compression codec, and
consume both by partition and as a consumer group, compared byte for byte. Every kcat run against
the gateway logs in (SASL SCRAM); runs against the broker's plain listener do not."""

from __future__ import annotations

import json
import re
import subprocess
import time
import uuid

import confluent_kafka
import pytest
from confluent_kafka.admin import AdminClient, NewTopic

from harness import auth

pytestmark = pytest.mark.kafka

CODECS = ("none", "gzip", "snappy", "lz4", "zstd")
# Fields separated by a byte no key, header or value below contains.
FORMAT = "k=%k\x1fh=%h\x1fv=%s\x1fp=%p\x1fo=%o\x1fts=%T\\n"
TIMEOUT = 60


def kcat(*args: str, input: str | None = None) -> str:
    proc = subprocess.run(["kcat", *args], input=input, capture_output=True, text=True, timeout=TIMEOUT)
    assert proc.returncode == 0, f"kcat {' '.join(args)}: exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def via(gateway) -> tuple[str, ...]:
    """kcat's arguments for the gateway: its bootstrap address and the login."""
    return ("-b", gateway.bootstrap, *auth("kcat"))


def create_topic(bootstrap: str, partitions: int) -> str:
    topic = f"kcat-{uuid.uuid4().hex[:10]}"
    admin = AdminClient({"bootstrap.servers": bootstrap, **auth("confluent")})
    admin.create_topics([NewTopic(topic, partitions, 1)])[topic].result(TIMEOUT)
    return topic


def messages(codec: str) -> list[tuple[str, str]]:
    # Repetitive values, so every codec really has something to compress.
    return [(f"{codec}-key-{i}", f"{codec} value {i} " + "abcdefgh" * 40 + " ünïcødé") for i in range(3)]


def test_metadata_lists_only_gateway_addresses(gateway, kafka):
    listing = kcat(*via(gateway), "-L", "-m", "15")
    brokers = re.findall(r"broker (-?\d+) at ([\w.\-]+):(\d+)", listing)
    assert brokers, listing
    host = gateway.bootstrap.rsplit(":", 1)[0]
    for node_id, broker_host, port in brokers:
        assert (broker_host, int(port)) == (host, gateway.broker_ports_first + int(node_id)), listing
    # No address of the broker's own appears anywhere, under any name.
    broker_ports = {int(address.rsplit(":", 1)[1])
                    for address in (kafka.bootstrap, kafka.sasl_bootstrap, kafka.ssl_bootstrap)}
    mentioned = {int(port) for port in re.findall(r":(\d+)", listing)}
    assert mentioned <= gateway.gateway_ports() and not mentioned & broker_ports, listing

    as_json = json.loads(kcat(*via(gateway), "-L", "-J", "-m", "15"))
    announced = {(b["id"], b["name"]) for b in as_json["brokers"]}
    assert announced == {(int(n), f"{h}:{p}") for n, h, p in brokers}


def produce_every_codec(gateway, topic: str) -> tuple[list[str], int, int]:
    """Produce each codec's messages into its own partition; the lines kcat should print for them
    without the timestamp, and the time window the timestamps must fall in."""
    expected = []
    started = int(time.time() * 1000)
    for partition, codec in enumerate(CODECS):
        batch = messages(codec)
        kcat("-P", *via(gateway), "-t", topic, "-p", str(partition), "-z", codec, "-K", "|",
             "-H", f"codec={codec}", "-H", "empty=", "-H", "eq=a=b",
             input="".join(f"{key}|{value}\n" for key, value in batch))
        expected += [f"k={key}\x1fh=codec={codec},empty=,eq=a=b\x1fv={value}\x1fp={partition}\x1fo={offset}"
                     for offset, (key, value) in enumerate(batch)]
    return expected, started, int(time.time() * 1000)


def split_timestamps(output: str) -> tuple[list[str], list[int]]:
    lines, stamps = [], []
    for line in output.splitlines():
        rest, stamp = line.rsplit("\x1fts=", 1)
        lines.append(rest)
        stamps.append(int(stamp))
    return lines, stamps


def test_produce_every_codec_and_consume_exactly(gateway, kafka):
    topic = create_topic(gateway.bootstrap, len(CODECS))
    expected, started, ended = produce_every_codec(gateway, topic)

    through_gateway = kcat("-C", *via(gateway), "-t", topic, "-o", "beginning", "-e", "-f", FORMAT)
    lines, stamps = split_timestamps(through_gateway)
    assert sorted(lines) == sorted(expected)
    assert all(started <= stamp <= ended for stamp in stamps), (started, stamps, ended)
    # And exactly what the broker itself serves, timestamps included.
    direct = kcat("-C", "-b", kafka.bootstrap, "-t", topic, "-o", "beginning", "-e", "-f", FORMAT)
    assert sorted(through_gateway.splitlines()) == sorted(direct.splitlines())


def test_consumer_group(gateway):
    topic = create_topic(gateway.bootstrap, 2)
    sent = [(f"key-{i}", f"value-{i}") for i in range(6)]
    for partition in (0, 1):
        kcat("-P", *via(gateway), "-t", topic, "-p", str(partition), "-K", "|", "-z", "lz4",
             input="".join(f"{k}|{v}\n" for k, v in sent[partition::2]))
    group = f"kcat-group-{uuid.uuid4().hex[:8]}"
    consumed = kcat(*via(gateway), "-G", group, topic, "-c", str(len(sent)),
                    "-X", "auto.offset.reset=earliest", "-f", "%k|%s|%p|%o\\n")
    expected = [f"{k}|{v}|{i % 2}|{i // 2}" for i, (k, v) in enumerate(sent)]
    assert sorted(consumed.splitlines()) == sorted(expected)

    # kcat commits on close; the commit went to the coordinator through the gateway.
    consumer = confluent_kafka.Consumer({"bootstrap.servers": gateway.bootstrap, "group.id": group,
                                         "enable.auto.commit": False, **auth("confluent")})
    try:
        committed = consumer.committed([confluent_kafka.TopicPartition(topic, p) for p in (0, 1)], timeout=TIMEOUT)
    finally:
        consumer.close()
    assert sorted((tp.partition, tp.offset, tp.error) for tp in committed) == [(0, 3, None), (1, 3, None)]
