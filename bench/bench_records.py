"""Record batches: read, decode, rewrite with the same values, per twin and against aiokafka.

    .venv/bin/python -m pytest bench/bench_records.py --benchmark-group-by=group -p no:cacheprovider

Numbers, not pass/fail. One batch of 500 records with ~300-byte JSON values (a key and a header
each), built from a fixed seed. The work timed is what the gateway does to a Produce batch:
find the batch and check its CRC, decompress and parse every record, take the values, and write
the batch again (same values here, so the masking itself is not in the number). aiokafka does
the equivalent with its compiled reader and builder: iterate every record (key, value, headers,
timestamp) and append each to a new batch. extra_info holds µs per record and records/s.
"""
import json
import random

import pytest
from aiokafka.record.default_records import DefaultRecordBatch, DefaultRecordBatchBuilder

from brokerguard._native import records, records_py

COUNT = 500
LIMIT = 64 * 1024 * 1024
CODECS = [pytest.param(0, id="none"), pytest.param(3, id="lz4"), pytest.param(4, id="zstd")]
IMPLEMENTATIONS = ["cython", "python", "aiokafka"]


def _columns(seed=20240501):
    rnd = random.Random(seed)
    keys, values, headers, timestamps = [], [], [], []
    for i in range(COUNT):
        value = {
            "order_id": f"ord-{rnd.randrange(10**9):09d}",
            "customer": {"name": f"Customer {rnd.randrange(10**5)}", "email": f"c{rnd.randrange(10**6)}@example.com"},
            "card": f"4111 1111 1111 {rnd.randrange(10**4):04d}",
            "amount": round(rnd.random() * 1000, 2),
            "currency": rnd.choice(["EUR", "USD", "GBP"]),
            "items": [{"sku": f"SKU-{rnd.randrange(10**5)}", "qty": rnd.randrange(1, 5)} for _ in range(2)],
            "note": "".join(rnd.choice("abcdefghij ") for _ in range(rnd.randrange(20, 60))),
        }
        keys.append(b"customer-%d" % rnd.randrange(10**5))
        values.append(json.dumps(value).encode())
        headers.append([("trace-id", b"%016x" % rnd.getrandbits(64))])
        timestamps.append(1_700_000_000_000 + i)
    return keys, values, headers, timestamps


COLUMNS = _columns()
BATCHES = {codec: records.encode_batch(*COLUMNS, compression=codec) for codec in (0, 3, 4)}


def _ours(twin):
    def rewrite(raw):
        batches, _ = twin.read_batches(raw, LIMIT)
        batch = batches[0]
        decoded = batch.decode(LIMIT)
        return batch.with_values(decoded, decoded.values())

    return rewrite


def _aiokafka(codec):
    def rewrite(raw):
        batch = DefaultRecordBatch(raw)
        assert batch.validate_crc()
        builder = DefaultRecordBatchBuilder(
            magic=2, compression_type=codec, is_transactional=batch.is_transactional,
            producer_id=batch.producer_id, producer_epoch=batch.producer_epoch,
            base_sequence=batch.base_sequence, batch_size=LIMIT,
        )
        base = batch.base_offset
        for record in batch:
            builder.append(record.offset - base, record.timestamp, record.key, record.value, record.headers)
        return builder.build()

    return rewrite


@pytest.mark.parametrize("codec", CODECS)
@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_rewrite_batch(benchmark, codec, implementation):
    benchmark.group = f"records: read + decode + with_values, {COUNT} x ~300 B JSON, {('none', '', '', 'lz4', 'zstd')[codec]}"
    raw = BATCHES[codec]
    if implementation == "aiokafka":
        rewrite = _aiokafka(codec)
    else:
        rewrite = _ours(records if implementation == "cython" else records_py)
    out = benchmark(rewrite, raw)
    if codec == 0 and implementation != "aiokafka":
        assert out == raw
    median = benchmark.stats.stats.median
    benchmark.extra_info["us_per_record"] = round(median / COUNT * 1e6, 3)
    benchmark.extra_info["records_per_s"] = round(COUNT / median)
    benchmark.extra_info["value_bytes_mean"] = round(sum(map(len, COLUMNS[1])) / COUNT)
