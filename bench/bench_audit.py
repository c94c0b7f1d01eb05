"""The audit trail's own cost: sealing events into the hash chain, and the SQLite sink's writes.

    .venv/bin/python -m pytest bench/bench_audit.py --benchmark-group-by=group -p no:cacheprovider

Numbers, not pass/fail. A batch is 500 request events as the Kafka adapter writes them (one
produce operation, a digest payload), each ~600 bytes of JSON. `us_per_record` in extra_info is
per event; its inverse is the events/s one worker's sink sustains.
"""
import itertools

import pytest

from brokerguard.audit import Chain, Sealed
from brokerguard.plugins.sinks.sqlite import SqliteSink

EVENTS = 500
KEY = b"bench-chain-key-0123456789abcdef"
_sessions = itertools.count()


def request_events(session: str) -> list[dict]:
    return [{"kind": "request", "time": 1_796_000_000.0 + n / 1000, "session": session, "seq": n + 1,
             "identity": "svc-payments", "client_id": "payments-writer", "software": "apache-kafka-java 4.4.0",
             "api": "Produce", "api_version": 11, "correlation_id": n,
             "operations": [{"action": "produce", "resource": "topic:payments.cards", "decision": "allow",
                             "rule": "payments.yaml:service-writes", "reason": "the payments service writes cards"}],
             "decision": "allow", "rule": "payments.yaml:service-writes", "reason": "the payments service writes cards",
             "outcome": "ok", "latency_ms": 1.234,
             "payload": {"capture": "digest", "partitions": [{"topic": "payments.cards", "partition": 3,
                                                              "bytes": 16384, "sha256": "ab" * 32}]}}
            for n in range(EVENTS)]


def per_event(benchmark):
    median = benchmark.stats.stats.median
    benchmark.extra_info["us_per_record"] = round(median / EVENTS * 1e6, 3)
    benchmark.extra_info["events_per_s"] = round(EVENTS / median)


@pytest.mark.benchmark(group="audit: seal 500 request events (HMAC chain)")
def test_seal(benchmark):
    chain = Chain("bench", KEY)

    def seal():
        return [Sealed(event, chain.seal(event)) for event in request_events("s")]

    benchmark(seal)
    per_event(benchmark)


@pytest.mark.benchmark(group="audit: SQLite sink, 500 sealed events per transaction")
def test_sqlite_write(benchmark, tmp_path):
    sink = SqliteSink.open(tmp_path / "audit.db")
    chain = Chain("bench", KEY)

    def batch():
        return ([Sealed(event, chain.seal(event)) for event in request_events(f"s{next(_sessions)}")],), {}

    benchmark.pedantic(sink.write, setup=batch, rounds=40, iterations=1)
    per_event(benchmark)
