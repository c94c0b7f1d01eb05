"""Payload validation: messages that say where, spec mistakes at compile time, and hostile payloads
that must come back as a message, never as an exception.

hypothesis prints the failing example and the seed to replay it (`--hypothesis-seed`).
"""

import dataclasses
import json

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fuzzing import random_inputs

from brokerguard._native import encode_batch, read_batches
from brokerguard.content import ContentSpecError, Validation, compile_validation
from brokerguard.content.validation import _size

FUZZ = random_inputs(300)
PAYMENT = {"type": "object", "required": ["amount"],
           "properties": {"amount": {"type": "number"}, "currency": {"type": "string", "pattern": "^[A-Z]{3}$"},
                          "items": {"type": "array", "items": {"type": "object",
                                                               "properties": {"sku": {"type": "string"}}}},
                          "odd key": {"type": "integer"}}}


def validation(spec, base_dir="."):
    return compile_validation("payment-event", spec, base_dir)


PAYMENT_EVENT = validation({"value": {"json": True, "schema": PAYMENT}, "key": {"json": False},
                            "required_headers": ["trace-id"], "max_record_bytes": 1048576, "on_invalid": "reject"})
TRACE = [("trace-id", b"abc")]


def check_values(check, *values, headers=TRACE):
    return check.check([None] * len(values), list(values), [headers] * len(values))


def test_valid_records_give_nothing():
    good = orjson.dumps({"amount": 12.5, "currency": "EUR", "items": [{"sku": "A-1"}]})
    assert check_values(PAYMENT_EVENT, good, b'{"amount": 1}', None) == []
    assert PAYMENT_EVENT.dead_letter is None and isinstance(PAYMENT_EVENT, Validation)


def test_schema_errors_name_the_place():
    problems = check_values(PAYMENT_EVENT, b'{"amount": "12"}', b'{"amount": 1, "items": [{"sku": "a"}, {"sku": 2}]}',
                            b'{"amount": 1, "odd key": 1.5}', b"{}", b'{"amount": 1, "currency": "euro"}')
    assert problems == [
        (0, '$.amount: "12" is not of type "number"'),
        (1, '$.items[1].sku: 2 is not of type "string"'),
        (2, "$['odd key']: 1.5 is not of type \"integer\""),
        (3, '$: "amount" is a required property'),
        (4, '$.currency: "euro" does not match "^[A-Z]{3}$"'),
    ]


def test_several_schema_errors_are_listed_then_summed_up():
    many = validation({"value": {"schema": {"type": "array", "items": {"type": "string"}}}})
    [(_, message)] = check_values(many, b"[1, 2, 3, 4, 5]")
    assert message == ('$[0]: 1 is not of type "string"; $[1]: 2 is not of type "string"; '
                       '$[2]: 3 is not of type "string"; and more')


def test_not_json():
    [(index, message)] = check_values(PAYMENT_EVENT, b'{"amount" 1}')
    assert index == 0
    assert message.startswith("value is not JSON: unexpected character") and message.endswith("at line 1 column 11")
    [(_, message)] = check_values(PAYMENT_EVENT, b"")
    assert message.startswith("value is not JSON: ")


def test_missing_headers():
    records = [b'{"amount": 1}'] * 4
    headers = [[], None, [("trace-id", None)], [(b"trace-id", b"x")]]
    assert PAYMENT_EVENT.check([None] * 4, records, headers) == [(0, "missing header trace-id"),
                                                                (1, "missing header trace-id")]
    two = validation({"required_headers": ["trace-id", "tenant"]})
    assert two.check(None, [b"x"], None) == [(0, "missing headers trace-id, tenant")]


def test_record_size_counts_key_value_and_headers():
    small = validation({"max_record_bytes": 10})
    assert small.check([b"12345"], [b"12345"], [[]]) == []
    assert small.check([b"12345"], [b"12345"], [[("h", b"")]]) == [(0, "record is 11 bytes, over the limit of 10")]
    assert small.check([None], [b"x" * 2_000_000], None) == [(0, "record is 2000000 bytes, over the limit of 10")]
    assert small.check(None, [None], [[("ü", "é")]]) == []  # 4 bytes in UTF-8
    escaped = b"\xff\xfe".decode("utf-8", "surrogateescape")  # how header names come from the wire
    assert small.check(None, [b"12345678"], [[(escaped, None)]]) == []
    assert small.check(None, [b"123456789"], [[(escaped, None)]]) == [(0, "record is 11 bytes, over the limit of 10")]


def test_tombstones():
    assert check_values(PAYMENT_EVENT, None) == []
    strict = validation({"value": {"json": True, "allow_null": False}})
    assert strict.check(None, [None], None) == [(0, "value is null (a tombstone), which this topic does not accept")]


def test_keys():
    keyed = validation({"key": {"schema": {"type": "object", "properties": {"id": {"type": "integer"}}}}})
    assert keyed.check([b'{"id": 1}', None], [b"x", b"y"], None) == []
    assert keyed.check([b'{"id": "1"}', b"nope"], [b"x", b"y"], None) == [
        (0, 'key $.id: "1" is not of type "integer"'),
        (1, "key is not JSON: invalid literal, expected 'null' at line 1 column 1")]


def test_every_problem_of_a_record_is_told():
    [(_, message)] = PAYMENT_EVENT.check([None], [b'{"amount": "x"}'], [[]])
    assert message == 'missing header trace-id; $.amount: "x" is not of type "number"'


def test_dead_letter():
    routed = validation({"value": {"json": True}, "on_invalid": {"dead_letter": "payments.dlq"}})
    assert routed.dead_letter == "payments.dlq"


def test_schema_file_relative_to_the_rules_directory(tmp_path):
    (tmp_path / "schemas").mkdir()
    (tmp_path / "schemas" / "payment.json").write_text(json.dumps(PAYMENT))
    (tmp_path / "schemas" / "payment.yaml").write_text("type: object\nrequired: [amount]\n")
    for name in ("payment.json", "payment.yaml"):
        checked = validation({"value": {"schema_file": f"schemas/{name}"}}, tmp_path)
        assert checked.check(None, [b"{}", b'{"amount": 1}'], None) == [(0, '$: "amount" is a required property')]


@pytest.mark.parametrize("content, problem", [
    (None, "cannot read schemas/s.json"),
    ("{not json", "schemas/s.json is not valid JSON"),
    ('{"type": "nope"}', "schemas/s.json: not a valid JSON Schema at $.type"),
    ('[1, 2]', "a JSON Schema is a mapping"),
])
def test_schema_file_mistakes(tmp_path, content, problem):
    (tmp_path / "schemas").mkdir()
    if content is not None:
        (tmp_path / "schemas" / "s.json").write_text(content)
    with pytest.raises(ContentSpecError) as caught:
        validation({"value": {"schema_file": "schemas/s.json"}}, tmp_path)
    assert caught.value.path == "$.value.schema_file" and problem in caught.value.message


@pytest.mark.parametrize("spec, path, problem", [
    ({"value": {"schema": {"type": "nope"}}}, "$.value.schema.type", "not a valid JSON Schema"),
    ({"value": {"schema": {"properties": {"a": {"minimum": "x"}}}}}, "$.value.schema.properties.a.minimum",
     "not a valid JSON Schema"),
    ({"value": {"schema": {"$ref": "https://example.com/schema.json"}}}, "$.value.schema", "Retrieval is disabled"),
    ({"value": {"schema": {"type": "string", "pattern": "(a)\\1"}}}, "$.value.schema.pattern", "regex"),
    ({"value": {"schema": "object"}}, "$.value.schema", "is a mapping"),
    ({"value": {"json": False, "schema": {}}}, "$.value.json", "set `json: true`"),
    ({"value": {"schema": {}, "schema_file": "x.json"}}, "$.value", "not both"),
    ({"value": {"json": "yes"}}, "$.value.json", "true or false"),
    ({"value": {"json": True, "allow_null": 0}}, "$.value.allow_null", "true or false"),
    ({"value": {"jsn": True}}, "$.value.jsn", "did you mean `json`"),
    ({"value": True}, "$.value", "must be a mapping"),
    ({"valu": {}}, "$.valu", "did you mean `value`"),
    ({"required_headers": "trace-id"}, "$.required_headers", "a list of header names"),
    ({"required_headers": ["a", ""]}, "$.required_headers[1]", "non-empty text"),
    ({"required_headers": ["a", "a"]}, "$.required_headers[1]", "listed twice"),
    ({"max_record_bytes": 0}, "$.max_record_bytes", "1 or more"),
    ({"max_record_bytes": "1MB"}, "$.max_record_bytes", "whole number of bytes"),
    ({"max_record_bytes": True}, "$.max_record_bytes", "whole number of bytes"),
    ({"max_record_bytes": 10, "on_invalid": "drop"}, "$.on_invalid", "`reject` or"),
    ({"max_record_bytes": 10, "on_invalid": {"dead_letter": ""}}, "$.on_invalid.dead_letter", "names where"),
    ({"max_record_bytes": 10, "on_invalid": {"dead_letters": "x"}}, "$.on_invalid.dead_letters", "unknown key"),
    ({}, "$", "checks nothing"),
    ({"key": {"json": False}}, "$", "checks nothing"),
])
def test_spec_mistakes_say_where(spec, path, problem):
    with pytest.raises(ContentSpecError) as caught:
        validation(spec)
    assert caught.value.path == path, caught.value
    assert problem in caught.value.message
    assert str(caught.value).startswith(f"payment-event: {path}: ")


# -- hostile payloads --------------------------------------------------------------------------

ANYTHING = validation({"value": {"schema": {"type": "object", "properties": {"a": {"type": "number"}},
                                            "additionalProperties": {"$ref": "#"}}},
                       "key": {"json": True}, "required_headers": ["h"], "max_record_bytes": 50_000_000})


def test_hostile_payloads_get_a_message():
    deep = b"[" * 100_000 + b"]" * 100_000
    huge_string = orjson.dumps({"a": "x" * 10_000_000})
    values = [deep, b'{"a": 1e400}', b'{"a": 123456789012345678901234567890}', b'{"a": "\xff"}', huge_string,
              b'{"b": ' * 1000 + b"1" + b"}" * 1000, b"\x00" * 100]
    problems = dict(ANYTHING.check([b"1"] * len(values), values, [[("h", b"")]] * len(values)))
    assert sorted(problems) == [0, 1, 3, 4, 5, 6]
    assert problems[0].startswith("value is not JSON: ") and "depth" in problems[0]
    assert problems[1].startswith("value is not JSON: ") and "infinity" in problems[1]
    assert problems[3].startswith("value is not JSON: ") and "UTF-8" in problems[3]
    assert problems[4].startswith('$.a: "xxxx') and "is not of type" not in problems[4] and len(problems[4]) < 300
    assert problems[5].startswith("$.b.b.b") and "…" in problems[5] and len(problems[5]) < 200
    assert problems[6].startswith("value is not JSON")


@FUZZ
@given(st.lists(st.tuples(st.binary(max_size=100) | st.none(), st.binary(max_size=300) | st.none(),
                          st.lists(st.tuples(st.text(max_size=3) | st.binary(max_size=3),
                                             st.binary(max_size=5) | st.none()), max_size=2)), max_size=5))
def test_random_records_never_raise(records):
    keys, values, headers = (list(column) for column in zip(*records)) if records else ([], [], [])
    for check in (ANYTHING, PAYMENT_EVENT):
        problems = check.check(keys, values, headers)
        assert [index for index, _ in problems] == sorted({index for index, _ in problems})
        assert all(isinstance(message, str) and message for _, message in problems)


JSON_VALUES = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
                           | st.text(), lambda inner: st.lists(inner, max_size=3)
                           | st.dictionaries(st.text(max_size=4), inner, max_size=3), max_leaves=20)


@FUZZ
@given(JSON_VALUES)
def test_random_json_never_raises(document):
    value = json.dumps(document).encode()
    problems = ANYTHING.check([b"1"], [value], [[("h", None)]])
    assert problems == [] or problems[0][0] == 0


@random_inputs(200)
@given(values=st.lists(st.one_of(st.none(), st.sampled_from([b'{"amount": 1}', b'{"amount": "x"}', b"{", b"[]",
                                                                b'{"amount": 2.5, "n": null}', b"\xff"])),
                       max_size=8),
       allow_null=st.booleans(), with_schema=st.booleans(), fast=st.booleans())
def test_the_whole_batch_pass_agrees_with_record_by_record(values, allow_null, with_schema, fast):
    spec = {"value": {"json": True, "allow_null": allow_null}}
    if with_schema:
        spec["value"]["schema"] = {"type": "object", "required": ["amount"], "properties": {"amount": {"type": "number"}}}
    validation = compile_validation("v", spec, ".")
    if not fast:
        validation.value = dataclasses.replace(validation.value, fast=None)
    keys = [None] * len(values)
    found = validation.check(keys, values)
    record_by_record = [(index, message) for index, value in enumerate(values)
                        if (message := validation._record(None, value, None)) is not None]
    assert found == record_by_record


@random_inputs(200)
@given(values=st.lists(st.one_of(st.none(), st.sampled_from([b'{"amount": 1}', b'{"amount": "x"}', b"{", b"[]",
                                                                b'{"amount": 2.5, "n": null}', b"\xff"])),
                       min_size=1, max_size=8),
       allow_null=st.booleans())
def test_a_batch_passed_in_place_has_nothing_to_report(values, allow_null):
    """passes_in_place reads the decoded batch where it lies; a True must mean check() finds
    nothing, and every batch check() finds nothing in passes in place (the schema is one the
    native check reads exactly)."""
    spec = {"value": {"json": True, "allow_null": allow_null, "schema": {
        "type": "object", "required": ["amount"], "properties": {"amount": {"type": "number"}}}}}
    check = compile_validation("v", spec, ".")
    (batch,), _ = read_batches(encode_batch([None] * len(values), values, [[] for _ in values],
                                            list(range(len(values)))), 1 << 20)
    assert check.passes_in_place(batch.decode(1 << 20)) is (check.check(None, values) == [])


def test_only_value_checks_by_a_native_schema_check_pass_in_place():
    """Keys, headers, sizes, syntax-only and schemas the native check cannot read are told by check()."""
    good = b'{"amount": 1}'
    (batch,), _ = read_batches(encode_batch([None], [good], [[]], [0]), 1 << 20)
    records = batch.decode(1 << 20)
    schema = {"type": "object", "properties": {"amount": {"type": "number"}}}
    assert compile_validation("v", {"value": {"schema": schema}}, ".").passes_in_place(records)
    for spec in ({"value": {"schema": schema}, "key": {"json": False}},
                 {"value": {"schema": schema}, "required_headers": ["trace-id"]},
                 {"value": {"schema": schema}, "max_record_bytes": 100},
                 {"value": {"json": True}},
                 {"value": {"schema": {"anyOf": [schema, {"type": "string"}]}}},
                 {"required_headers": ["trace-id"]}):
        assert not compile_validation("v", spec, ".").passes_in_place(records), spec


def test_the_native_check_comes_first_where_it_reads_the_schema():
    order = {"type": "object", "required": ["id"], "properties": {"id": {"type": "integer", "minimum": 1},
                                                                   "code": {"type": "string", "pattern": "^[A-Z]{3}$"}}}
    fast = compile_validation("v", {"value": {"schema": order}}, ".")
    assert fast.value.fast is not None and PAYMENT_EVENT.value.fast is not None
    either = compile_validation("v", {"value": {"schema": {"anyOf": [{"type": "integer"}, {"type": "string"}]}}}, ".")
    assert either.value.fast is None  # anyOf: the full validator alone
    slow = compile_validation("v", {"value": {"schema": order}}, ".")
    slow.value = dataclasses.replace(slow.value, fast=None)
    values = [b'{"id": 1}', b'{"id": 0}', b'{"id": 1.5}', b'{"id": 2.0}', b'{"id": 1e400}', b'{"id": "\\ud800"}',
              b"{}", b"[", None, b'{"id": 12345678901234567890}', b'{"id": 3, "code": "EU"}', b'{"id": 3, "code": "EUR"}']
    assert fast.check(None, values) == slow.check(None, values) == [
        (1, "$.id: 0 is less than the minimum of 1"),
        (2, '$.id: 1.5 is not of type "integer"'),
        (4, "value is not JSON: number is infinity when parsed as double at line 1 column 8"),
        (5, "value is not JSON: no low surrogate in string at line 1 column 9"),
        (6, '$: "id" is a required property'),
        (7, "value is not JSON: unexpected end of data at line 1 column 2"),
        (10, '$.code: "EU" does not match "^[A-Z]{3}$"'),
    ]


@random_inputs(200)
@given(records=st.lists(st.tuples(st.sampled_from([None, b"k", b"k" * 40]),
                                  st.sampled_from([None, b'{"amount": 1}', b'{"amount": "x"}', b"{"]),
                                  st.lists(st.tuples(st.sampled_from(["trace-id", "other", b"trace-id"]),
                                                     st.sampled_from([None, b"", b"abc" * 10])), max_size=3),
                                  st.integers(0, 20)), max_size=6),
       limit=st.integers(1, 80), with_sizes=st.booleans())
def test_headers_and_sizes_in_bulk_agree_with_record_by_record(records, limit, with_sizes):
    validation = compile_validation("v", {"value": {"json": True}, "required_headers": ["trace-id"],
                                          "max_record_bytes": limit}, ".")
    keys = [key for key, _, _, _ in records]
    values = [value for _, value, _, _ in records]
    headers = [pairs for _, _, pairs, _ in records]
    # an encoded record is its key, value and headers and some bytes of framing
    sizes = [_size(key, value, pairs) + framing for key, value, pairs, framing in records] if with_sizes else None
    record_by_record = [(index, message) for index, (key, value, pairs, _) in enumerate(records)
                        if (message := validation._record(key, value, pairs)) is not None]
    assert validation.check(keys, values, headers, sizes) == record_by_record
