"""What authorization adds to one Kafka request on the gateway: decode the body, name its
resources, decide each (through the pipeline's decision cache, as in the gateway), plan.

    .venv/bin/python -m pytest bench/bench_authorize.py --benchmark-group-by=group

Numbers, not pass/fail. The rules are the shipped rules/; the identity is the payments service.
"""
from pathlib import Path

import pytest

from brokerguard.identity import Identity
from brokerguard.operations import AccessRequest, Client
from brokerguard._native import read_produce_request
from brokerguard.plugins.kafka import authorize
from brokerguard.plugins.kafka.protocol import codec
from brokerguard.policy import DecisionCache, load_rules

RULES = Path(__file__).resolve().parent.parent / "rules"
IDENTITY = Identity("svc-payments", "SCRAM-SHA-512")
CLIENT = Client("10.0.0.7", "payments-producer")


def deciding():
    cache = DecisionCache(load_rules(str(RULES)))
    key = (IDENTITY.key, CLIENT)

    def decide(action, resource):
        decision = cache.get((key, action, resource))
        if decision is None:
            decision = cache.decide((key, action, resource), AccessRequest(IDENTITY, action, resource, CLIENT))
        return decision

    return decide


def frame(api_key: int, version: int, body: dict) -> bytes:
    return codec.encode_request_header(api_key, version, 1, "bench") + codec.encode_request(api_key, version, body)


PRODUCE = frame(0, 9, {"transactional_id": None, "acks": -1, "timeout_ms": 30000, "topic_data": [
    {"name": "payments.cards", "partition_data": [{"index": i, "records": bytes(16384)} for i in range(4)]}]})
FETCH = frame(1, 12, {"replica_id": -1, "max_wait_ms": 500, "min_bytes": 1, "max_bytes": 52428800,
                      "isolation_level": 0, "session_id": 0, "session_epoch": -1, "topics": [
                          {"topic": "payments.cards", "partitions": [
                              {"partition": i, "current_leader_epoch": 0, "fetch_offset": 100,
                               "last_fetched_epoch": -1, "log_start_offset": -1, "partition_max_bytes": 1048576}
                              for i in range(8)]}], "forgotten_topics_data": [], "rack_id": ""})


def authorize_once(api_key: int, version: int, payload: bytes, decide, names) -> authorize.Plan:
    header = codec.decode_request_header(payload)
    body = codec.decode_request(api_key, version, payload, header.body_offset, trailing=True)
    return authorize.plan(api_key, version, body, decide, names)


def authorize_produce_fast(payload: bytes, decide, names) -> authorize.Plan:
    framed = len(payload).to_bytes(4, "big") + payload
    _, body = read_produce_request(framed, 0, len(framed))
    return authorize.plan(0, 9, body, decide, names)


@pytest.mark.benchmark(group="authorize a request (decode + plan, cached decisions)")
def test_authorize_produce_without_its_records(benchmark):
    """The gateway's hot path for Produce: the records are skipped, not decoded."""
    plan = benchmark(authorize_produce_fast, PRODUCE, deciding(), authorize.TopicNames())
    assert plan.forward is not None and not plan.changed


@pytest.mark.benchmark(group="authorize a request (decode + plan, cached decisions)")
@pytest.mark.parametrize("name, api_key, version, payload", [
    ("Produce v9, 1 topic x 4 partitions x 16 KiB", 0, 9, PRODUCE),
    ("Fetch v12, 1 topic x 8 partitions", 1, 12, FETCH),
])
def test_authorize_request(benchmark, name, api_key, version, payload):
    decide, names = deciding(), authorize.TopicNames()
    plan = benchmark(authorize_once, api_key, version, payload, decide, names)
    assert plan.forward is not None and not plan.changed
