"""The gateway's whole Fetch path in one process, without sockets: what one fetch costs.

    .venv/bin/python -m pytest bench/bench_fetch_path.py --benchmark-group-by=group -p no:cacheprovider

Numbers, not pass/fail; the consume side of bench_produce_path.py. The real ClientConnection and
UpstreamConnection of one worker (rules from tests/rules) get their bytes from in-memory
transports: a Fetch v15 request for one partition, named by topic id, is read, authorized and
forwarded, and the broker's answer, 1 MiB of records as ConsumerPerformance gets them in `make
bench` (16 batches of 223 JSON records of ~300 bytes), is read, masked where the rules say so,
audited and written back. extra_info has µs of process CPU per fetch (every thread: the second
masking thread's and the audit sink's included); `us_per_record` is the median per record.
"""
import uuid
from pathlib import Path

import pytest

from brokerguard._native import encode_batch
from brokerguard.plugins.kafka import apis
from brokerguard.plugins.kafka.protocol import codec

from bench_produce_path import PER_CALL, RECORDS, _Path, measure
from kafka_tools import write_json_payloads

VERSION = 15
BATCHES = 16  # 16 x 223 records: the ~1 MiB a Fetch of max.partition.fetch.bytes=1048576 brings
TOPIC_ID = uuid.UUID("6f1a0d3e-0000-4000-8000-000000000bbb").bytes


def _frames(topic: str, work: Path) -> tuple[bytes, bytes]:
    """One Fetch request and the broker's answer to it, size prefixes included."""
    payloads = work / "events.json"
    write_json_payloads(payloads)
    values = [line.encode() for line in payloads.read_text().splitlines()] * 4  # 1,000 of them
    records = b"".join(
        encode_batch([None] * RECORDS, values[n * RECORDS:(n + 1) * RECORDS], [[] for _ in range(RECORDS)],
                     [1_796_000_000_000 + i for i in range(RECORDS)], base_offset=n * RECORDS)
        for n in range(BATCHES))
    body = {"max_wait_ms": 500, "min_bytes": 1, "max_bytes": 52428800, "isolation_level": 0, "session_id": 0,
            "session_epoch": -1, "topics": [{"topic_id": TOPIC_ID, "partitions": [
                {"partition": 0, "current_leader_epoch": 0, "fetch_offset": 0, "last_fetched_epoch": -1,
                 "log_start_offset": -1, "partition_max_bytes": 1048576}]}],
            "forgotten_topics_data": [], "rack_id": ""}
    request = (codec.encode_request_header(apis.FETCH, VERSION, 0, "consumer-1")
               + codec.encode_request(apis.FETCH, VERSION, body))
    answer = {"throttle_time_ms": 0, "error_code": 0, "session_id": 0, "responses": [
        {"topic_id": TOPIC_ID, "partitions": [
            {"partition_index": 0, "error_code": 0, "high_watermark": RECORDS * BATCHES,
             "last_stable_offset": RECORDS * BATCHES, "log_start_offset": 0, "aborted_transactions": None,
             "preferred_read_replica": -1, "records": records}]}]}
    response = (codec.encode_response_header(apis.FETCH, codec.response_header_version(apis.FETCH, VERSION))
                + codec.encode_response(apis.FETCH, VERSION, answer))
    return len(request).to_bytes(4, "big") + request, len(response).to_bytes(4, "big") + response


class _FetchPath(_Path):
    frames = staticmethod(_frames)

    async def _open(self) -> None:
        await super()._open()
        self.client._adapter.topic_names.learn(apis.METADATA, {"topics": [{"name": self.topic, "topic_id": TOPIC_ID}]})


CASES = [pytest.param("plain.bench", {"enabled": False}, False, id="not masked, audit off"),
         pytest.param("plain.bench", {}, False, id="not masked, audited"),
         pytest.param("bench-content.bench", {"enabled": False}, True, id="three fields masked, audit off"),
         pytest.param("bench-content.bench", {}, True, id="three fields masked, audited")]


@pytest.mark.benchmark(group=f"Fetch path in process: {PER_CALL} fetches of {BATCHES} x {RECORDS} JSON records")
@pytest.mark.parametrize("topic, audit, masked", CASES)
def test_fetch_path(benchmark, tmp_path, topic, audit, masked):
    path = _FetchPath(topic, audit, tmp_path)
    try:
        path.run(50)  # warm: decision cache, allocator, the masking thread, the sink's first writes
        measure(benchmark, path, "fetch", BATCHES * RECORDS, rounds=30)
    finally:
        path.close(masked)
