"""Kafka's own performance tools, run as subprocesses, and parsers for what they print.

Plus one measurement of our own: EndToEndLatency stores each latency in whole milliseconds
(elapsed / 1000 / 1000 as a long), so its percentiles cannot show a sub-millisecond
difference. `latency_probe` times the same loop (send, wait for the ack, poll until the
record comes back) with librdkafka and a nanosecond clock.

A client that must log in (the gateway) gets a properties file for the Java tools (`config`,
passed as `--command-config`, the name every Kafka 4.x tool takes) and librdkafka settings for
the probe (`security`); the direct route to the broker's plain listener needs neither.
"""

from __future__ import annotations

import re
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

from devstack.kafka import java_tool

PRODUCER_PERF = "org.apache.kafka.tools.ProducerPerformance"
CONSUMER_PERF = "org.apache.kafka.tools.ConsumerPerformance"
END_TO_END = "org.apache.kafka.tools.EndToEndLatency"

# acks=1: the broker's append is measured, not replication (there is one node anyway).
PRODUCER_PROPS = ("acks=1", "linger.ms=5", "batch.size=65536")
MIB = 1024 * 1024


class ToolError(RuntimeError):
    """A tool failed or printed something we cannot read; the message carries its output."""


@dataclass
class Completed:
    stdout: str
    seconds: float


def run_tool(main_class: str, *args, timeout: float) -> Completed:
    started = time.monotonic()
    proc = java_tool(main_class, *args, timeout=timeout)
    seconds = time.monotonic() - started
    if proc.returncode != 0:
        raise ToolError(f"{main_class.rsplit('.', 1)[-1]} exited with {proc.returncode}\n"
                        f"args: {' '.join(map(str, args))}\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}")
    return Completed(proc.stdout, seconds)


def _login(config: Path | None) -> list[str]:
    return [] if config is None else ["--command-config", str(config)]


def producer_args(bootstrap: str, topic: str, records: int, record_size: int,
                  config: Path | None = None) -> list[str]:
    return ["--bootstrap-server", bootstrap, *_login(config), "--topic", topic, "--num-records", str(records),
            "--record-size", str(record_size), "--throughput", "-1",
            "--command-property", *PRODUCER_PROPS]


def json_producer_args(bootstrap: str, topic: str, records: int, payloads: Path,
                       config: Path | None = None) -> list[str]:
    """ProducerPerformance sending the JSON documents of `payloads`, one per line, at random."""
    return ["--bootstrap-server", bootstrap, *_login(config), "--topic", topic, "--num-records", str(records),
            "--payload-file", str(payloads), "--throughput", "-1", "--command-property", *PRODUCER_PROPS]


def write_json_payloads(path: Path, count: int = 1000, seed: int = 20261201) -> int:
    """`count` JSON payment events of about 300 bytes, one per line (valid for the bench's
    schema, with the three fields its mask hides); their mean size in bytes."""
    import json
    import random

    rnd = random.Random(seed)
    lines = []
    for n in range(count):
        lines.append(json.dumps({
            "id": n, "amount": round(rnd.uniform(1, 500), 2), "currency": rnd.choice(["EUR", "USD", "GBP"]),
            "card": {"number": rnd.choice(["4111111111111111", "5555555555554444"]), "expiry": "12/29"},
            "customer": {"email": f"customer{rnd.randint(0, 99_999)}@example.com", "phone": "+44 20 7946 0958",
                         "tier": rnd.choice(["gold", "silver", "bronze"])},
            "items": [{"sku": f"A-{rnd.randint(1, 99)}", "qty": rnd.randint(1, 5)}],
            "merchant": "Acme Coffee Roasters", "ts": "2026-12-01T12:00:00Z"}, separators=(",", ":")))
    path.write_text("\n".join(lines))
    return round(sum(map(len, lines)) / count)


def consumer_args(bootstrap: str, topic: str, records: int, group: str, config: Path | None = None) -> list[str]:
    return ["--bootstrap-server", bootstrap, *_login(config), "--topic", topic, "--num-records", str(records),
            "--group", group, "--timeout", "30000"]


def end_to_end_args(bootstrap: str, topic: str, records: int, record_size: int,
                    config: Path | None = None) -> list[str]:
    return ["--bootstrap-server", bootstrap, *_login(config), "--topic", topic, "--num-records", str(records),
            "--producer-acks", "1", "--record-size", str(record_size)]


# "500000 records sent, 98765.4 records/sec (96.45 MB/sec), 12.3 ms avg latency, 456.0 ms max
# latency, 10 ms 50th, 30 ms 95th, 40 ms 99th, 50 ms 99.9th."
_PRODUCER_SUMMARY = re.compile(
    r"^(\d+) records sent, ([\d.]+) records/sec \(([\d.]+) MB/sec\), ([\d.]+) ms avg latency, "
    r"([\d.]+) ms max latency, (\d+) ms 50th, (\d+) ms 95th, (\d+) ms 99th", re.M)


def parse_producer(stdout: str, record_size: int) -> dict:
    matches = _PRODUCER_SUMMARY.findall(stdout)
    if not matches:
        raise ToolError(f"no summary line in ProducerPerformance output:\n{stdout[-3000:]}")
    sent, rate, mb_s, avg, top, p50, p95, p99 = matches[-1]
    return {"records": int(sent), "records_per_s": float(rate), "mb_per_s": float(mb_s),
            "bytes": int(sent) * record_size, "send_latency_avg_ms": float(avg),
            "send_latency_max_ms": float(top), "send_latency_p50_ms": int(p50),
            "send_latency_p95_ms": int(p95), "send_latency_p99_ms": int(p99)}


_CONSUMER_FIELDS = ("start.time", "end.time", "data.consumed.in.MB", "MB.sec",
                    "data.consumed.in.nMsg", "nMsg.sec", "rebalance.time.ms", "fetch.time.ms",
                    "fetch.MB.sec", "fetch.nMsg.sec")


def parse_consumer(stdout: str) -> dict:
    """The CSV header line and the one data line ConsumerPerformance prints (Kafka 4.4)."""
    lines = [line for line in stdout.splitlines() if line.strip()]
    for i, line in enumerate(lines[:-1]):
        header = [f.strip() for f in line.split(",")]
        if header[:len(_CONSUMER_FIELDS)] == list(_CONSUMER_FIELDS):
            values = dict(zip(header, (v.strip() for v in lines[i + 1].split(","))))
            break
    else:
        raise ToolError(f"no result line in ConsumerPerformance output:\n{stdout[-3000:]}")
    mb = float(values["data.consumed.in.MB"])
    # fetch.* leave out the group join (rebalance.time.ms), which is not data throughput.
    return {"records": int(values["data.consumed.in.nMsg"]), "bytes": round(mb * MIB),
            "mb_per_s": float(values["fetch.MB.sec"]),
            "records_per_s": float(values["fetch.nMsg.sec"]),
            "mb_per_s_incl_join": float(values["MB.sec"]),
            "records_per_s_incl_join": float(values["nMsg.sec"]),
            "join_ms": int(values["rebalance.time.ms"]), "fetch_ms": int(values["fetch.time.ms"])}


_E2E_AVG = re.compile(r"^Avg latency: ([\d.]+) ms", re.M)
_E2E_PERCENTILES = re.compile(r"^Percentiles: 50th = (\d+), 99th = (\d+), 99\.9th = (\d+)", re.M)


def parse_end_to_end(stdout: str) -> dict:
    avg, pct = _E2E_AVG.search(stdout), _E2E_PERCENTILES.search(stdout)
    if not avg or not pct:
        raise ToolError(f"no latency summary in EndToEndLatency output:\n{stdout[-3000:]}")
    return {"avg_ms": float(avg.group(1)), "p50_ms": int(pct.group(1)),
            "p99_ms": int(pct.group(2)), "p999_ms": int(pct.group(3))}


def latency_probe(bootstrap: str, topic: str, records: int, record_size: int,
                  warmup: int = 200, timeout: float = 30.0, security: dict | None = None) -> dict:
    """EndToEndLatency's loop with librdkafka and perf_counter_ns; latencies in ms.

    The producer sends without lingering and with Nagle off; the consumer long-polls
    (fetch.wait.max.ms 100, fetch.min.bytes 1), so the broker answers as soon as the record
    is appended rather than the client spinning on empty fetches.
    """
    from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition

    common = {"bootstrap.servers": bootstrap, "socket.nagle.disable": True, **(security or {})}
    producer = Producer({**common, "acks": 1, "linger.ms": 0})
    consumer = Consumer({**common, "group.id": f"probe-{topic}", "enable.auto.commit": False,
                         "fetch.wait.max.ms": 100, "fetch.min.bytes": 1})
    # An explicit start offset: with OFFSET_END the first record could land before it resolves.
    _, high = consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=timeout)
    consumer.assign([TopicPartition(topic, 0, high)])
    payload = bytes(record_size)
    samples: list[int] = []
    try:
        for i in range(warmup + records):
            key = str(i).encode()
            started = time.perf_counter_ns()
            producer.produce(topic, payload, key)
            if producer.flush(timeout) != 0:
                raise ToolError(f"probe: produce to {topic} via {bootstrap} not acknowledged")
            deadline = time.monotonic() + timeout
            while True:
                msg = consumer.poll(timeout)
                if msg is not None:
                    if msg.error():
                        raise KafkaException(msg.error())
                    if msg.key() == key:
                        break
                if time.monotonic() > deadline:
                    raise ToolError(f"probe: record {i} not consumed from {topic} via {bootstrap}")
            if i >= warmup:
                samples.append(time.perf_counter_ns() - started)
    finally:
        consumer.close()
    samples.sort()
    ms = [s / 1e6 for s in samples]
    return {"records": len(ms), "p50_ms": _percentile(ms, 0.50), "p99_ms": _percentile(ms, 0.99),
            "p999_ms": _percentile(ms, 0.999), "avg_ms": statistics.fmean(ms)}


def _percentile(sorted_values: list[float], q: float) -> float:
    # Nearest rank, as EndToEndLatency picks its percentiles.
    return sorted_values[min(len(sorted_values) - 1, int(len(sorted_values) * q))]
