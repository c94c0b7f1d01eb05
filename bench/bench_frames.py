"""Frame scanning, compiled twin against pure-Python twin.

    .venv/bin/python -m pytest bench/bench_frames.py --benchmark-group-by=group

Numbers, not pass/fail. The mixed stream is built from a fixed seed so runs compare.
"""
import random
import struct

import pytest

from brokerguard._native import frames, frames_py

TWINS = [pytest.param(frames, id="cython"), pytest.param(frames_py, id="python")]

FLEXIBLE_FROM = [-1] * 76
FLEXIBLE_FROM[0:4] = [9, 12, 6, 9]
FLEXIBLE_FROM[8:17] = [8, 6, 3, 6, 4, 4, 4, 5, 3]
FLEXIBLE_FROM[18] = 3
LIMIT = 100 * 1024 * 1024


def _frame(api_key, api_version, correlation_id, body, tagged=False, client_id=b"bench-client"):
    head = struct.pack(">hhih", api_key, api_version, correlation_id, len(client_id)) + client_id
    payload = head + (b"\x00" if tagged else b"") + body
    return struct.pack(">i", len(payload)) + payload


def _produce(correlation_id, api_version, acks, records):
    if api_version >= 9:
        body = b"\x0b" + b"txn-orders" + struct.pack(">h", acks) + records
    else:
        body = struct.pack(">h", 10) + b"txn-orders" + struct.pack(">h", acks) + records
    return _frame(0, api_version, correlation_id, body, tagged=api_version >= 9)


def mixed_stream(count=1000, seed=20240501):
    """Produce (40%, 100 B to 16 KiB, acks 0/1/-1), Fetch, Metadata, Heartbeat, ApiVersions."""
    rnd = random.Random(seed)
    out = []
    for correlation_id in range(count):
        kind = rnd.random()
        if kind < 0.4:
            size = rnd.choice([100, 1000, 4096, 16384])
            out.append(_produce(correlation_id, rnd.choice([3, 7, 9, 11]), rnd.choice([0, 1, -1]), bytes(size)))
        elif kind < 0.7:
            out.append(_frame(1, 13, correlation_id, bytes(90), tagged=True))
        elif kind < 0.8:
            out.append(_frame(3, 12, correlation_id, bytes(40), tagged=True))
        elif kind < 0.9:
            out.append(_frame(12, 4, correlation_id, bytes(30), tagged=True))
        else:
            out.append(_frame(18, 3, correlation_id, bytes(30), tagged=True))
    return bytearray(b"".join(out))


MIXED = mixed_stream()
PRODUCE_16K = bytearray(_produce(1, 9, 1, bytes(16384)))
RESPONSES = bytearray(b"".join(struct.pack(">ii", 4 + 60, cid) + bytes(60) for cid in range(1000)))


@pytest.mark.benchmark(group="requests: 1000 mixed frames")
@pytest.mark.parametrize("twin", TWINS)
def test_scan_mixed_requests(benchmark, twin):
    scanner = twin.RequestScanner(FLEXIBLE_FROM, LIMIT)
    found, consumed, _ = benchmark(scanner.scan, MIXED, 0, len(MIXED))
    assert len(found) == 1000 and consumed == len(MIXED)


@pytest.mark.benchmark(group="requests: one 16 KiB Produce v9")
@pytest.mark.parametrize("twin", TWINS)
def test_scan_one_produce(benchmark, twin):
    scanner = twin.RequestScanner(FLEXIBLE_FROM, LIMIT)
    found, _, _ = benchmark(scanner.scan, PRODUCE_16K, 0, len(PRODUCE_16K))
    assert found[0][5] is True


@pytest.mark.benchmark(group="requests: parse_request_header")
@pytest.mark.parametrize("twin", TWINS)
def test_parse_request_header(benchmark, twin):
    result = benchmark(twin.parse_request_header, PRODUCE_16K, 4, len(PRODUCE_16K), FLEXIBLE_FROM)
    assert result[3] == "bench-client"


@pytest.mark.benchmark(group="responses: 1000 frames")
@pytest.mark.parametrize("twin", TWINS)
def test_scan_responses(benchmark, twin):
    scanner = twin.ResponseScanner(LIMIT)
    found, _, _ = benchmark(scanner.scan, RESPONSES, 0, len(RESPONSES))
    assert len(found) == 1000
