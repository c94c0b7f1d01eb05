"""The gateway's whole Produce path in one process, without sockets: what one request costs.

    .venv/bin/python -m pytest bench/bench_produce_path.py --benchmark-group-by=group -p no:cacheprovider

Numbers, not pass/fail. The real ClientConnection and UpstreamConnection of one worker (rules
from tests/rules, the audit bus with its SQLite sink) get their bytes from in-memory transports:
a Produce v9 request of one 64 KiB batch (223 JSON records of ~300 bytes, as ProducerPerformance
sends them in `make bench`) is read, authorized, checked and forwarded, and the broker's answer
is read, audited and written back. Without the kernel, the broker and the client on the same
cores, the numbers move much less between runs than the end-to-end ones, so they show what a
change to the data path saves. extra_info has µs of process CPU (every thread, the audit sink's
included) per request; `us_per_record` is the median per record.
"""
import asyncio
import os
import time
from pathlib import Path

import pytest
import uvloop
import yaml

from brokerguard._native import encode_batch
from brokerguard.config import parse
from brokerguard.identity import Identity
from brokerguard.identity.credentials import CredentialsFile
from brokerguard.pipeline import Pipeline
from brokerguard.plugins.kafka.adapter import KafkaAdapter
from brokerguard.plugins.kafka.connection import ClientConnection, UpstreamConnection
from brokerguard.plugins.kafka.protocol import codec

from kafka_tools import write_json_payloads

ROOT = Path(__file__).resolve().parent.parent
VERSION = 9
RECORDS = 223
PER_CALL = 20  # requests per timed call: the loop turns between them, so the audit bus flushes
KEY_ENV = "BROKERGUARD_BENCH_KEY"


class _Transport:
    """Counts what is written; the peer names a connection asks for."""

    def __init__(self) -> None:
        self.written = 0

    def get_extra_info(self, name, default=None):
        return {"sockname": ("127.0.0.1", 9092), "peername": ("127.0.0.1", 40000)}.get(name, default)

    def write(self, data) -> None:
        self.written += len(data)

    def writelines(self, chunks) -> None:
        self.written += sum(map(len, chunks))

    def is_closing(self) -> bool:
        return False

    def close(self) -> None:
        pass

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


def _frames(topic: str, work: Path) -> tuple[bytes, bytes]:
    """One Produce request and the broker's answer to it, size prefixes included."""
    payloads = work / "events.json"
    write_json_payloads(payloads)
    values = [line.encode() for line in payloads.read_text().splitlines()[:RECORDS]]
    batch = encode_batch([None] * RECORDS, values, [[] for _ in values],
                         [1_796_000_000_000 + n for n in range(RECORDS)])
    body = {"transactional_id": None, "acks": 1, "timeout_ms": 30000,
            "topic_data": [{"name": topic, "partition_data": [{"index": 0, "records": batch}]}]}
    request = codec.encode_request_header(0, VERSION, 0, "producer-1") + codec.encode_request(0, VERSION, body)
    answer = {"throttle_time_ms": 0, "responses": [{"name": topic, "partition_responses": [
        {"index": 0, "error_code": 0, "base_offset": 1000, "log_append_time_ms": -1, "log_start_offset": 0,
         "record_errors": [], "error_message": None}]}]}
    response = (codec.encode_response_header(0, codec.response_header_version(0, VERSION))
                + codec.encode_response(0, VERSION, answer))
    return len(request).to_bytes(4, "big") + request, len(response).to_bytes(4, "big") + response


def _feed(protocol, data: bytes) -> None:
    """As the event loop does: into the protocol's buffer, at most 64 KiB per read."""
    pos = 0
    while pos < len(data):
        buffer = protocol.get_buffer(-1)
        size = min(len(buffer), len(data) - pos, 65536)
        buffer[:size] = data[pos:pos + size]
        pos += size
        protocol.buffer_updated(size)


class _Path:
    frames = staticmethod(_frames)  # (request, response) of one exchange

    def __init__(self, topic: str, audit: dict, work: Path) -> None:
        self.topic = topic
        os.environ[KEY_ENV] = "bench-key-0123456789abcdef0123456789"
        CredentialsFile(work / "credentials.json", create=True).add("tester", "bench-secret-1234", ["testers"])
        self.config = parse(yaml.safe_dump({
            "log_level": "warning", "identity": {"credentials_file": str(work / "credentials.json")},
            "rules": {"dir": str(ROOT / "tests" / "rules")}, "content": {"hash_key_env": KEY_ENV},
            "state": {"sqlite_path": str(work / "state.db")},
            "audit": {"dir": str(work), "chain_key_env": KEY_ENV, "flush_interval_ms": 20, **audit},
            "kafka": {"listen": {"host": "127.0.0.1", "port": 9092},
                      "upstream": {"bootstrap_servers": ["127.0.0.1:9093"]}}}))
        self.request, self.response = self.frames(topic, work)
        self.loop = uvloop.new_event_loop()
        self.loop.run_until_complete(self._open())
        self.sent = 0

    async def _open(self) -> None:
        self.pipeline = Pipeline(self.config)
        await self.pipeline.start()
        adapter = KafkaAdapter(self.config.kafka, self.pipeline)
        self.client, self.client_side = ClientConnection(adapter, None), _Transport()
        self.client.connection_made(self.client_side)
        self.pipeline.authenticated(self.client.session, Identity("tester", "SCRAM-SHA-512", frozenset({"testers"})))
        self.upstream, self.broker_side = UpstreamConnection(adapter), _Transport()
        self.upstream.connection_made(self.broker_side)
        self.upstream.attach(self.client)
        self.client._upstream = self.upstream  # as _open_upstream leaves it, without a broker

    async def _requests(self, count: int) -> None:
        request, response = bytearray(self.request), bytearray(self.response)
        for _ in range(count):
            self.sent += 1
            request[8:12] = response[4:8] = self.sent.to_bytes(4, "big")
            _feed(self.client, request)
            _feed(self.upstream, response)
            await asyncio.sleep(0)

    def run(self, count: int) -> None:
        self.loop.run_until_complete(self._requests(count))

    def close(self, masked: bool = False) -> None:
        self.loop.run_until_complete(self.pipeline.stop())
        self.loop.close()
        # Every request went up as it was and every answer came back: nothing was refused or
        # held; an answer whose values were masked comes back shorter.
        assert self.broker_side.written == self.sent * len(self.request), "a request was not forwarded"
        if masked:
            assert 0 < self.client_side.written < self.sent * len(self.response), "answers not masked"
        else:
            assert self.client_side.written == self.sent * len(self.response), "an answer did not come back"


CASES = [pytest.param("plain.bench", {"enabled": False}, id="no checks, audit off"),
         pytest.param("plain.bench", {"capture": "digest"}, id="no checks, audit digest"),
         pytest.param("bench-content.bench", {"enabled": False}, id="JSON Schema, audit off"),
         pytest.param("bench-content.bench", {"capture": "digest"}, id="JSON Schema, audit digest")]


@pytest.mark.benchmark(group=f"Produce path in process: {PER_CALL} requests of {RECORDS} JSON records")
@pytest.mark.parametrize("topic, audit", CASES)
def test_produce_path(benchmark, tmp_path, topic, audit):
    path = _Path(topic, audit, tmp_path)
    try:
        path.run(200)  # warm: decision cache, allocator, the sink's first writes
        measure(benchmark, path, "request", RECORDS, rounds=150)
    finally:
        path.close()


def measure(benchmark, path: _Path, unit: str, records: int, rounds: int) -> None:
    """Times PER_CALL exchanges a round; extra_info gets µs per `unit` (wall, median), µs of
    process CPU per `unit` (every thread) and µs per record."""
    start, sent = time.process_time(), path.sent
    benchmark.pedantic(path.run, args=(PER_CALL,), rounds=rounds, iterations=1)
    cpu = time.process_time() - start
    each = benchmark.stats.stats.median / PER_CALL
    benchmark.extra_info[f"us_per_{unit}"] = round(each * 1e6, 1)
    benchmark.extra_info[f"cpu_us_per_{unit}"] = round(cpu / (path.sent - sent) * 1e6, 1)
    benchmark.extra_info["us_per_record"] = round(each / records * 1e6, 3)
