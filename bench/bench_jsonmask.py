"""Member-path masking on JSON bytes (brokerguard._native.jsonmask): both twins, against orjson.

    .venv/bin/python -m pytest bench/bench_jsonmask.py --benchmark-group-by=group

Numbers, not pass/fail. One batch is 1000 JSON records of about 300 bytes, built from a fixed
seed so runs compare (the records of bench_content.py); each benchmark's `us_per_record` (extra
info, and the printed table) is its median time over the batch divided by 1000. The orjson row
is the floor of the general path: parse and write every record and do nothing else.
"""
import random

import orjson
import pytest

from brokerguard._native import jsonmask, jsonmask_py

RECORDS = 1000


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


def three_paths(twin):
    """$.card.number keep_last 4, $.customer.email redact, $.amount null."""
    return twin.FieldMasker([
        (("card", "number"), twin.KEEP_LAST, 4, None),
        (("customer", "email"), twin.REDACT, 0, b'"[REDACTED]"'),
        (("amount",), twin.NULL, 0, None),
    ])


def per_record(benchmark):
    benchmark.extra_info["record_bytes"] = round(SIZE)
    median = benchmark.stats.stats.median
    benchmark.extra_info["us_per_record"] = round(median / RECORDS * 1e6, 3)
    fastest = benchmark.stats.stats.min
    print(f"\n{benchmark.name}: {median / RECORDS * 1e6:.2f} µs/record median, {fastest / RECORDS * 1e6:.2f} "
          f"fastest ({SIZE:.0f}-byte JSON records)")


def mask_all(mask, values):
    return [mask(value) for value in values]


def orjson_round_trip(values):
    loads, dumps = orjson.loads, orjson.dumps
    return [dumps(loads(value)) for value in values]


@pytest.mark.benchmark(group="jsonmask: 3 member paths")
def test_orjson_loads_dumps(benchmark):
    benchmark(orjson_round_trip, VALUES)
    per_record(benchmark)


@pytest.mark.benchmark(group="jsonmask: 3 member paths")
@pytest.mark.parametrize("twin", [jsonmask, jsonmask_py], ids=["cython", "python"])
def test_mask_three_member_paths(benchmark, twin):
    masked = benchmark(mask_all, three_paths(twin).mask, VALUES)
    assert b'"number":"************1111"' in masked[0] and b'"email":"[REDACTED]"' in masked[0]
    assert b'"amount":null' in masked[0] and orjson.loads(masked[-1])["card"]["expiry"]
    per_record(benchmark)


@pytest.mark.benchmark(group="jsonmask: 3 member paths")
def test_mask_nothing_to_mask_cython(benchmark):
    untouched = jsonmask.FieldMasker([(("password",), jsonmask.REDACT, 0, b'"[REDACTED]"')])
    masked = benchmark(mask_all, untouched.mask, VALUES)
    assert all(out is value for out, value in zip(masked, VALUES))
    per_record(benchmark)
