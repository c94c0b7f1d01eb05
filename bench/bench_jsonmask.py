"""Member-path masking on JSON bytes (brokerguard._native.jsonmask): both twins, against orjson.

    .venv/bin/python -m pytest bench/bench_jsonmask.py --benchmark-group-by=group

Numbers, not pass/fail. One batch is 1000 JSON records of about 300 bytes, built from a fixed
seed so runs compare (the records of bench_content.py); each benchmark's `us_per_record` (extra
info, and the printed table) is its median time over the batch divided by 1000. The orjson row
is the floor of the general path: parse and write every record and do nothing else.
"""
import orjson
import pytest

from bench_content import VALUES, orjson_round_trip, per_record
from brokerguard._native import jsonmask, jsonmask_py


def three_paths(twin):
    """$.card.number keep_last 4, $.customer.email redact, $.amount null."""
    return twin.FieldMasker([
        (("card", "number"), twin.KEEP_LAST, 4, None),
        (("customer", "email"), twin.REDACT, 0, b'"[REDACTED]"'),
        (("amount",), twin.NULL, 0, None),
    ])


def mask_all(mask, values):
    return [mask(value) for value in values]


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
