"""The content core on one batch: masking, detectors, schema validation, against orjson alone.

    .venv/bin/python -m pytest bench/bench_content.py --benchmark-group-by=group

Numbers, not pass/fail. One batch is 1000 JSON records of about 300 bytes, built from a fixed
seed so runs compare; each benchmark's `us_per_record` (extra info, and the printed table)
is its median time over the batch divided by 1000. The orjson rows are the floor: parse and
write every record and do nothing else.
"""
import random

import orjson
import pytest

from brokerguard.content import DetectorSet, compile_profile, compile_validation

RECORDS = 1000
DETECTORS = DetectorSet.load()
KEY = b"bench-hash-key-0123456789abcdef!"


def batch(seed=20251130):
    rnd = random.Random(seed)
    values = []
    for index in range(RECORDS):
        values.append(orjson.dumps({
            "id": 100_000 + index,
            "card": {"number": rnd.choice(["4111111111111111", "5555555555554444", "378282246310005"]),
                     "expiry": f"{rnd.randint(1, 12):02d}/{rnd.randint(26, 32)}", "holder": "Jane Q Public"},
            "customer": {"email": f"customer{rnd.randint(0, 99_999)}@example.com", "id": f"c-{rnd.randint(0, 99_999)}",
                         "tier": rnd.choice(["gold", "silver", "bronze"])},
            "amount": round(rnd.uniform(1, 500), 2), "currency": rnd.choice(["EUR", "USD", "GBP"]),
            "items": [{"sku": f"A-{rnd.randint(1, 99)}", "qty": rnd.randint(1, 5), "note": rnd.choice(["", "gift"])}],
            "ts": "2025-11-30T12:00:00Z", "merchant": "Acme Coffee Roasters",
        }))
    return values


VALUES = batch()
SIZE = sum(map(len, VALUES)) / RECORDS
THREE_PATHS = compile_profile("three-paths", {"fields": [
    {"path": "$.card.number", "strategy": "keep_last", "n": 4},
    {"path": "$.customer.email", "strategy": "redact"},
    {"path": "$.amount", "strategy": "null"},
]}, detectors=DETECTORS, hash_key=KEY)
THREE_PATHS_HASH = compile_profile("three-paths-hash", {"fields": [
    {"path": "$.card.number", "strategy": "keep_last", "n": 4},
    {"path": "$.customer.email", "strategy": "hash"},
    {"path": "$.amount", "strategy": "null"},
]}, detectors=DETECTORS, hash_key=KEY)
WILDCARDS = compile_profile("wildcards", {"fields": [
    {"path": "$.card.number", "strategy": "keep_last", "n": 4},
    {"path": "$..email", "strategy": "redact"},
    {"path": "$.items[*].note", "strategy": "drop"},
]}, detectors=DETECTORS, hash_key=KEY)
DETECTING = compile_profile("detectors", {"detectors": ["payment_card", "email", "us_ssn", "phone"]},
                            detectors=DETECTORS, hash_key=KEY)
UNTOUCHED = compile_profile("untouched", {"fields": [{"path": "$.password", "strategy": "redact"}]},
                            detectors=DETECTORS, hash_key=KEY)
PAYMENT_EVENT = {
    "type": "object", "required": ["id", "card", "amount", "currency"],
    "properties": {"id": {"type": "integer"}, "amount": {"type": "number", "minimum": 0},
                   "currency": {"enum": ["EUR", "USD", "GBP"]},
                   "card": {"type": "object", "required": ["number"],
                            "properties": {"number": {"type": "string", "pattern": "^[0-9]{13,19}$"}}},
                   "items": {"type": "array", "items": {"type": "object", "required": ["sku"]}}}}
SCHEMA = compile_validation("payment-event", {
    "value": {"schema": PAYMENT_EVENT}, "required_headers": ["trace-id"], "max_record_bytes": 1048576,
}, ".")
VALUE_ONLY = compile_validation("payment-event-value", {"value": {"schema": PAYMENT_EVENT}}, ".")
KEYS = [None] * RECORDS
HEADERS = [[("trace-id", b"0af7651916cd43dd8448eb211c80319c")]] * RECORDS


def per_record(benchmark):
    benchmark.extra_info["record_bytes"] = round(SIZE)
    median = benchmark.stats.stats.median
    benchmark.extra_info["us_per_record"] = round(median / RECORDS * 1e6, 3)
    fastest = benchmark.stats.stats.min
    print(f"\n{benchmark.name}: {median / RECORDS * 1e6:.2f} µs/record median, {fastest / RECORDS * 1e6:.2f} "
          f"fastest ({SIZE:.0f}-byte JSON records)")


def orjson_round_trip(values):
    loads, dumps = orjson.loads, orjson.dumps
    return [dumps(loads(value)) for value in values]


def orjson_parse(values):
    loads = orjson.loads
    return [loads(value) for value in values]


@pytest.mark.benchmark(group="mask 3 paths")
def test_orjson_loads_dumps(benchmark):
    benchmark(orjson_round_trip, VALUES)
    per_record(benchmark)


@pytest.mark.benchmark(group="mask 3 paths")
def test_mask_three_member_paths(benchmark):
    masked, failures = benchmark(THREE_PATHS.mask_values, VALUES)
    assert failures == [] and b'"************1111"' in masked[0]
    per_record(benchmark)


@pytest.mark.benchmark(group="mask 3 paths")
def test_mask_three_member_paths_one_hashed(benchmark):
    masked, failures = benchmark(THREE_PATHS_HASH.mask_values, VALUES)
    assert failures == [] and b'"h:' in masked[0]
    per_record(benchmark)


@pytest.mark.benchmark(group="mask 3 paths")
def test_mask_wildcard_and_recursive_paths(benchmark):
    masked, failures = benchmark(WILDCARDS.mask_values, VALUES)
    assert failures == [] and b"[REDACTED]" in masked[0]
    per_record(benchmark)


@pytest.mark.benchmark(group="mask 3 paths")
def test_mask_nothing_to_mask(benchmark):
    masked, failures = benchmark(UNTOUCHED.mask_values, VALUES)
    assert failures == [] and masked[0] is VALUES[0]
    per_record(benchmark)


@pytest.mark.benchmark(group="detectors")
def test_detectors_four_every_record_hit(benchmark):
    masked, failures = benchmark(DETECTING.mask_values, VALUES)
    assert failures == [] and b"[REDACTED:email]" in masked[0]
    per_record(benchmark)


CLEAN = [orjson.dumps({"id": index, "status": "shipped", "carrier": "DHL", "note": "left with the neighbour",
                       "items": [{"sku": f"A-{index % 97}", "qty": 1}], "ts": "2025-11-30T12:00:00Z",
                       "warehouse": "Leipzig-3", "weight_kg": 1.25, "flags": ["fragile", "insured"]})
         for index in range(RECORDS)]


@pytest.mark.benchmark(group="detectors")
def test_detectors_four_nothing_found(benchmark):
    masked, failures = benchmark(DETECTING.mask_values, CLEAN)
    assert failures == [] and masked[0] is CLEAN[0]
    per_record(benchmark)


@pytest.mark.benchmark(group="validate")
def test_orjson_loads(benchmark):
    benchmark(orjson_parse, VALUES)
    per_record(benchmark)


@pytest.mark.benchmark(group="validate")
def test_schema_headers_size_all_valid(benchmark):
    problems = benchmark(SCHEMA.check, KEYS, VALUES, HEADERS)
    assert problems == []
    per_record(benchmark)


@pytest.mark.benchmark(group="validate")
def test_schema_value_only_all_valid(benchmark):
    problems = benchmark(VALUE_ONLY.check, None, VALUES)
    assert problems == []
    per_record(benchmark)


INVALID = [value.replace(b'"currency":"', b'"currency":"X') for value in VALUES]


@pytest.mark.benchmark(group="validate")
def test_schema_every_record_invalid(benchmark):
    problems = benchmark(SCHEMA.check, KEYS, INVALID, HEADERS)
    assert len(problems) == RECORDS
    per_record(benchmark)


# -- the whole record core on a batch: what the gateway does per masked Fetch partition ---------

from brokerguard._native import LZ4, NONE, encode_batch, read_batches  # noqa: E402

BATCHES = {codec: encode_batch(KEYS, VALUES, [[] for _ in VALUES], [1_700_000_000_000 + n for n in range(RECORDS)],
                               compression=codec) for codec in (NONE, LZ4)}
LIMIT = 64 << 20


def mask_batch(raw: bytes, profile) -> bytes:
    """What the gateway does per masked partition: each value masked in place, one pass."""
    out = []
    for batch in read_batches(raw, LIMIT)[0]:
        out.append(batch.with_masked_values(batch.decode(LIMIT), profile.batch_masker))
    return b"".join(out)


def mask_batch_value_by_value(raw: bytes, profile) -> bytes:
    """The general path: a bytes object per value in and out."""
    out = []
    for batch in read_batches(raw, LIMIT)[0]:
        records = batch.decode(LIMIT)
        masked, _ = profile.mask_values(records.values())
        out.append(batch.with_values(records, masked))
    return b"".join(out)


@pytest.mark.benchmark(group="batch: decode, mask 3 paths, encode, CRC")
@pytest.mark.parametrize("codec", [NONE, LZ4], ids=["none", "lz4"])
@pytest.mark.parametrize("path", [mask_batch, mask_batch_value_by_value], ids=["one-pass", "value-by-value"])
def test_mask_whole_batch(benchmark, codec, path):
    assert path(BATCHES[codec], THREE_PATHS) == mask_batch_value_by_value(BATCHES[codec], THREE_PATHS)
    benchmark(path, BATCHES[codec], THREE_PATHS)
    per_record(benchmark)


@pytest.mark.benchmark(group="batch: decode, validate")
@pytest.mark.parametrize("validation", [SCHEMA, VALUE_ONLY], ids=["schema-headers-size", "schema"])
def test_validate_whole_batch(benchmark, validation):
    def validate(raw: bytes):
        for batch in read_batches(raw, LIMIT)[0]:
            records = batch.decode(LIMIT)
            keys = records.keys() if validation.reads_keys else None
            headers = HEADERS if validation.reads_headers else None
            assert validation.check(keys, records.values(), headers, records.sizes()) == []
    benchmark(validate, BATCHES[NONE])
    per_record(benchmark)
