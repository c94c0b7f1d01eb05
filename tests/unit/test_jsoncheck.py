"""The fast schema check (brokerguard._native.jsoncheck) against the full validator.

The compiled check may say False when in doubt, never True wrongly: every test holds it to
"passes only if orjson parses the document and jsonschema_rs accepts it", which is exactly what
the pure-Python twin computes. For documents within its reach (strings without escapes,
integers below 10**12, fractions without exponents) it must also say True whenever the
document passes. Schemas and documents are drawn at random from the keywords it reads;
Hypothesis prints the seed and a reproduction blob on failure.
"""
import json
import os
import subprocess
import sys

import jsonschema_rs
import orjson
import pytest
from hypothesis import event, given
from hypothesis import strategies as st

from fuzzing import random_inputs, strings_with_an_odd_byte

import brokerguard._native as native
from brokerguard._native import jsoncheck, jsoncheck_py, records, records_py

RANDOM = random_inputs(400)

ORDER = {"type": "object", "required": ["id", "amount", "currency", "card"],
         "properties": {"id": {"type": "integer"}, "amount": {"type": "number", "minimum": 0},
                        "currency": {"enum": ["EUR", "USD", "GBP"]},
                        "card": {"type": "object", "required": ["number"]}}}
GOOD_ORDER = b'{"id": 7, "amount": 12.5, "currency": "EUR", "card": {"number": "4111"}, "note": "x"}'


def full(schema, data: bytes) -> bool:
    """The answer the fast check must never contradict with a True."""
    try:
        document = orjson.loads(data)
    except orjson.JSONDecodeError:
        return False
    return jsonschema_rs.validator_for(schema, offline=True).is_valid(document)


def check(schema):
    fast = jsoncheck.compile_check(schema)
    assert fast is not None, "the schema should be within the fast check's keywords"
    return fast


def answers(schema, data: bytes) -> tuple[bool, bool]:
    """(fast, full) for one document, after checking the fast answer is sound and both twins agree
    with the full validator where they must."""
    fast = check(schema).passes(data)
    exact = full(schema, data)
    assert not fast or exact, f"passed a document the schema refuses: {data!r}"
    assert jsoncheck_py.compile_check(schema).passes(data) == exact
    return fast, exact


# The twins themselves


def test_cython_twin_is_the_compiled_extension():
    assert jsoncheck.__file__.endswith(".so"), jsoncheck.__file__
    assert sorted(jsoncheck.__all__) == sorted(jsoncheck_py.__all__)
    assert jsoncheck.MAX_DEPTH == jsoncheck_py.MAX_DEPTH
    assert native.compile_check is jsoncheck.compile_check


def test_the_package_chooses_by_environment():
    environ = {**os.environ, "BROKERGUARD_NO_EXTENSIONS": "1"}
    code = "import brokerguard._native as n, brokerguard._native.jsoncheck_py as p; print(n.compile_check is p.compile_check)"
    out = subprocess.run([sys.executable, "-c", code], env=environ, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["True"]


def test_both_twins_read_the_same_schemas():
    for schema in SUPPORTED + UNSUPPORTED:
        assert (jsoncheck.compile_check(schema) is None) == (jsoncheck_py.compile_check(schema) is None), schema


# Which schemas it reads

SUPPORTED = [
    True, False, {}, {"description": "anything"}, ORDER,
    {"$schema": "https://json-schema.org/draft/2020-12/schema", "type": "string"},
    {"$schema": "http://json-schema.org/draft-07/schema#", "type": "array", "items": {"type": "integer"}},
    {"type": ["string", "null"], "maxLength": 3},
    {"const": "x"}, {"enum": [1, "a", None, True, 2.0]},
    {"type": "object", "additionalProperties": False, "properties": {"a": {}}, "required": ["a"]},
    {"type": "array", "minItems": 1, "maxItems": 3, "items": False},
    {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1.5, "title": "t", "$comment": "c",
     "examples": [1], "default": 1, "deprecated": False, "readOnly": True, "writeOnly": False},
    {"$defs": {"a": {"type": "string"}}, "type": "object"},
    {"type": "string", "pattern": "^a"}, {"properties": {"a": {"format": "date"}}},
]
UNSUPPORTED = [
    {"$ref": "#/$defs/a", "$defs": {"a": {}}},
    {"patternProperties": {"^a": {}}},
    {"type": "array", "items": [{}, {}]},
    {"prefixItems": [{}]},
    {"anyOf": [{}, {}]}, {"allOf": [{}]}, {"oneOf": [{}]}, {"not": {}}, {"if": {}, "then": {}},
    {"uniqueItems": True}, {"multipleOf": 2}, {"minProperties": 1}, {"propertyNames": {}},
    {"dependentRequired": {}}, {"contains": {}}, {"unevaluatedProperties": False},
    {"$schema": "http://json-schema.org/draft-04/schema#", "type": "string"},
    {"properties": {"a": {"multipleOf": 2}}},  # anywhere in the tree
    {"enum": [[1], {"a": 1}]}, {"enum": [1.5]}, {"const": 2 ** 60},
    {"maximum": 2 ** 60}, {"minLength": 1.0},
    {"required": [f"p{i}" for i in range(65)]},
    {"x-custom": 1},
]


@pytest.mark.parametrize("schema", SUPPORTED, ids=str)
def test_schemas_it_reads(schema):
    assert jsoncheck.compile_check(schema) is not None


@pytest.mark.parametrize("schema", UNSUPPORTED, ids=str)
def test_schemas_it_leaves_to_the_full_validator(schema):
    assert jsoncheck.compile_check(schema) is None


# Documents


@pytest.mark.parametrize("data, passes", [
    (GOOD_ORDER, True),
    (b' \n{"id":1,"amount":0,"currency":"GBP","card":{"number":null}}\t', True),
    (GOOD_ORDER.replace(b'"EUR"', b'"JPY"'), False),
    (GOOD_ORDER.replace(b"12.5", b"-0.01"), False),
    (GOOD_ORDER.replace(b'"id": 7', b'"id": "7"'), False),
    (GOOD_ORDER.replace(b'"card": {"number": "4111"}', b'"card": {}'), False),
    (GOOD_ORDER.replace(b'"card"', b'"c\\u0061rd"'), True),  # keys are compared decoded
    (GOOD_ORDER.replace(b'"EUR"', b'"\\u0045UR"'), True),  # and enum texts too
    (GOOD_ORDER[:-1], False), (GOOD_ORDER + b"x", False), (b"[]", False), (b"", False),
    # Keys in any order, unknown ones between, a repeated one (the last counts, as orjson reads it):
    # the property search starts after the last match and must still find every property.
    (b'{"card": {"number": 1}, "x": 0, "currency": "USD", "amount": 1, "id": 2}', True),
    (b'{"amount": 1, "id": 2, "note": "a", "card": {"number": 1}, "currency": "USD"}', True),
    (b'{"id": 1, "amount": 1, "currency": "USD", "card": {"number": 1}, "id": "one"}', False),
    (b'{"card": {"number": 1}, "currency": "USD", "amount": 1}', False),
])
def test_order_documents(data, passes):
    fast, exact = answers(ORDER, data)
    assert fast == exact == passes


@pytest.mark.parametrize("name", ["a", "ab", "abcdefg", "abcdefgh", "abcdefghi", "abcdefghijklmnopq"])
@pytest.mark.parametrize("tail", [b"", b', "z": [1, 2, 3, 4, 5, 6, 7, 8, 9]'], ids=["at the end", "mid"])
def test_properties_match_only_their_exact_bytes(name, tail):
    # Names are compared 8 bytes at a time where the document has 8 bytes from the key on.
    schema = {"type": "object", "properties": {name: {"type": "string"}}, "required": [name]}
    assert answers(schema, b'{"%s":"x"%s}' % (name.encode(), tail)) == (True, True)
    for at in range(len(name)):
        other = (name[:at] + "~" + name[at + 1:]).encode()
        assert answers(schema, b'{"%s":1%s}' % (other, tail)) == (False, False)
    assert answers(schema, b'{"%s":1, "%s~":1%s}' % (name.encode(), name.encode(), tail)) == (False, False)


@pytest.mark.parametrize("schema, data", [
    ({"type": "string"}, b'"\\ud800"'),  # a lone surrogate: orjson refuses it
    ({"type": "string"}, b'"\\udc00\\ud800"'),
    ({"type": "object"}, b'{"\\ud800": 1}'),
    ({"type": "object"}, b'{"a": "\\ud800"}'),  # the same in a member or an item the schema says nothing of
    ({"type": "array"}, b'["x", "\\udc00"]'),
    ({"type": "number"}, b"1e400"),  # infinite as a double: orjson refuses it
    ({"type": "number"}, b"-1e400"),
    ({"type": "number", "maximum": 9007199254740992}, b"9007199254740993"),  # beyond a double
    ({"type": "integer", "maximum": 10}, b"12345678901234567890123"),
])
def test_never_passes_what_orjson_or_the_schema_refuses(schema, data):
    fast, exact = answers(schema, data)
    assert fast is False and exact is False


@pytest.mark.parametrize("schema, data", [
    ({"type": "integer"}, b"2.0"),  # an integer to JSON Schema; left to the full validator
    ({"type": "integer"}, b"1e2"),
    ({"type": "number"}, b"1.5E3"),
    ({"type": "integer"}, b"1234567890123456789"),
    ({"type": "integer", "minimum": 0}, b"1234567890123456"),
    ({"type": "string", "maxLength": 3}, b'"\\u0041"'),
    ({"type": "string"}, b'"\\ud83d\\ude00"'),  # a pair is fine...
    ({"enum": ["\U0001f600"]}, b'"\\ud83d\\ude00"'),  # ...and compared decoded
    ({"type": "array"}, b"[" * 200 + b"]" * 200),  # deeper than MAX_DEPTH
    ({"type": "object"}, b'{"a": 1, "a": "x"}'),
    ({"properties": {"a": {"type": "string"}}}, b'{"a": 1, "a": "x"}'),  # the last one counts
])
def test_in_doubt_the_full_validator_decides(schema, data):
    fast, exact = answers(schema, data)
    assert exact is True  # each of these passes; the fast check may or may not be sure


def test_doubt_is_narrow():
    assert check({"type": "string"}).passes(b'"\\ud83d\\ude00"')
    assert check({"enum": ["\U0001f600"]}).passes(b'"\\ud83d\\ude00"')
    assert check({"type": "string", "maxLength": 1}).passes("\"\U0001f600\"".encode())  # code points
    assert check({"type": "integer", "maximum": 10 ** 15}).passes(b"999999999999999")
    assert check({"type": "number", "maximum": 0.1}).passes(b"0.1")
    assert not check({"type": "number", "exclusiveMaximum": 0.1}).passes(b"0.1")
    assert check({"type": "array"}).passes(b"[" * 100 + b"]" * 100)


@pytest.mark.parametrize("schema, good, bad", [
    ({"enum": [1, True, None, "a"]}, [b"1", b"true", b"null", b'"a"'],
     [b"false", b'"1"', b"2", b'"b"', b"1.5"]),
    ({"enum": [0]}, [b"0", b"-0"], [b"false", b"1"]),
    ({"const": False}, [b"false"], [b"0", b"null"]),
    ({"type": "object", "additionalProperties": False, "properties": {"a": {}}, "required": ["b"]},
     [], [b'{"a": 1}', b'{"a": 1, "b": 2}', b'{"b": 2}']),
    ({"type": "object", "additionalProperties": {"type": "integer"}, "properties": {"a": {"type": "string"}}},
     [b'{"a": "x", "b": 1}', b"{}"], [b'{"a": 1}', b'{"b": "x"}']),
    ({"type": "array", "items": {"type": "string"}, "minItems": 1, "maxItems": 2},
     [b'["a"]', b'["a", "b"]'], [b"[]", b'["a", "b", "c"]', b"[1]"]),
    ({"type": ["null", "boolean"]}, [b"null", b"true"], [b"0", b'""', b"[]", b"{}"]),
    (False, [], [b"null", b"{}"]),
    ({"type": "string", "pattern": "^[0-9]{2}$"}, [b'"12"', b'"1\\u0032"'], [b'"123"', "\"٣٣\"".encode()]),
    ({"pattern": "^a"}, [b"1", b'"ab"', b"[]"], [b'"ba"']),  # pattern says nothing of other types
    ({"$schema": "http://json-schema.org/draft-07/schema#", "format": "email"}, [b'"a@example.com"'], [b'"a"']),
    ({"format": "email"}, [b'"a"'], []),  # in 2020-12 a format is an annotation, as to the full validator
    (True, [b"null", b'{"a": [1, 2.5, "x", true]}'], [b"nul", b"[1,]", b"\xff"]),
])
def test_keywords(schema, good, bad):
    for data in good:
        assert answers(schema, data) == (True, True), data
    for data in bad:
        assert answers(schema, data) == (False, False), data


def test_passes_all():
    fast = check(ORDER)
    twin = jsoncheck_py.compile_check(ORDER)
    for values, allow_none, expected in [
        ([GOOD_ORDER] * 3, False, True),
        ([GOOD_ORDER, None], True, True),
        ([GOOD_ORDER, None], False, False),
        ([GOOD_ORDER, b"{}"], True, False),
        ([GOOD_ORDER, bytearray(GOOD_ORDER)], True, False),  # not bytes: the caller looks closer
        ([], False, True),
    ]:
        assert fast.passes_all(values, allow_none) is expected
        assert twin.passes_all(values, allow_none) is expected


@pytest.mark.parametrize("records_twin", [records, records_py], ids=["cython-records", "python-records"])
@pytest.mark.parametrize("check_twin", [jsoncheck, jsoncheck_py], ids=["cython-check", "python-check"])
def test_values_pass_reads_the_batch_as_passes_all_reads_its_values(records_twin, check_twin):
    """The record core checks a decoded batch's values where they lie (the compiled twins through
    the value_check.pxd capsule); it answers what passes_all answers on the values as a list."""
    fast = check_twin.compile_check(ORDER)
    bad = [b"{}", GOOD_ORDER[:-1], GOOD_ORDER.replace(b"12.5", b"-1"), b"\xff", b""]
    cases = [[GOOD_ORDER] * 5, [GOOD_ORDER, None, GOOD_ORDER], [None], []]
    cases += [[GOOD_ORDER] * at + [value] + [GOOD_ORDER] * 2 for at in (0, 3) for value in bad]
    for values in cases:
        batch_bytes = records_twin.encode_batch([None] * len(values), values, [[] for _ in values],
                                                list(range(len(values))))
        (batch,), _ = records_twin.read_batches(batch_bytes, 1 << 20)
        decoded = batch.decode(1 << 20)
        for allow_none in (False, True):
            expected = fast.passes_all(values, allow_none)
            assert decoded.values_pass(fast, allow_none) is expected, (values, allow_none)
    if check_twin is jsoncheck:
        assert fast.native_check_value is not None
    else:
        assert fast.native_check_value is None


def test_passes_takes_bytes():
    for twin in (jsoncheck, jsoncheck_py):
        with pytest.raises(TypeError, match="a document is bytes, not str"):
            twin.compile_check(ORDER).passes("{}")


def test_a_check_is_initialized_once():
    fast = check(ORDER)
    with pytest.raises(TypeError, match="initialized once"):
        fast.__init__(ORDER, jsoncheck_py.plan(ORDER))


# Random schemas and documents

NAMES = st.sampled_from(["a", "b", "id", "é", "a b", "x\"y", "k\\", "\U0001f600"])
PLAIN_TEXT = st.text(st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters='"\\'), max_size=6)
INTEGERS = st.integers(-10 ** 12, 10 ** 12)
FRACTIONS = st.integers(-4 * 10 ** 6, 4 * 10 ** 6).map(lambda k: (2 * k + 1) / 8)  # 0.125, -3.375: no exponent
SMALL_NUMBERS = st.integers(-5, 5) | st.sampled_from([-1.5, -0.5, 0.25, 2.5])


def _scalars():
    return st.one_of(
        st.just({}),
        st.fixed_dictionaries({"type": st.sampled_from(["integer", "number"])},
                              optional={"minimum": SMALL_NUMBERS, "maximum": SMALL_NUMBERS,
                                        "exclusiveMinimum": SMALL_NUMBERS, "exclusiveMaximum": SMALL_NUMBERS}),
        st.fixed_dictionaries({"type": st.just("string")},
                              optional={"minLength": st.integers(0, 3), "maxLength": st.integers(0, 4),
                                        "pattern": st.sampled_from(["^a", "[0-9]{2}", "^\\w*$", "é|😀"]),
                                        "format": st.sampled_from(["email", "date", "uuid"])}),
        st.builds(lambda t: {"type": t}, st.sampled_from(["boolean", "null"])
                  | st.lists(st.sampled_from(["null", "boolean", "integer", "number", "string", "array", "object"]),
                             min_size=1, max_size=3, unique=True)),
        st.lists(st.none() | st.booleans() | st.integers(-3, 3) | st.sampled_from(["", "a", "é", "a b"]),
                 min_size=1, max_size=4).map(lambda values: {"enum": values}),
        st.sampled_from([True, False]),
    )


SCHEMAS = st.recursive(
    _scalars(),
    lambda children: st.one_of(
        st.fixed_dictionaries({"type": st.just("object")},
                              optional={"properties": st.dictionaries(NAMES, children, max_size=3),
                                        "required": st.lists(NAMES, max_size=3, unique=True),
                                        "additionalProperties": children}),
        st.fixed_dictionaries({"type": st.just("array")},
                              optional={"items": children, "minItems": st.integers(0, 2),
                                        "maxItems": st.integers(0, 3)}),
    ),
    max_leaves=8,
)

# Documents within the fast check's reach: what it answers for them must be exact.
REACHABLE = st.recursive(
    st.none() | st.booleans() | INTEGERS | FRACTIONS | SMALL_NUMBERS | PLAIN_TEXT
    | st.sampled_from(["", "a", "é", "a b"]),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(NAMES, children, max_size=4),
    max_leaves=12,
)
# Anything JSON can say, written with escapes and exponents too.
ANYTHING = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(NAMES | st.text(max_size=3), children, max_size=4),
    max_leaves=12,
)


def conforming(schema, draw):
    """A document built to pass schema, mostly (some keywords are left to chance)."""
    if schema is False or schema is True or not schema:
        return draw(REACHABLE)
    if "enum" in schema:
        return draw(st.sampled_from(schema["enum"]))
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = draw(st.sampled_from(kind))
    if kind == "object":
        properties = schema.get("properties", {})
        names = [*properties, *schema.get("required", [])]
        chosen = draw(st.lists(st.sampled_from(names), unique=True)) if names else []
        return {name: conforming(properties.get(name, schema.get("additionalProperties", True)), draw)
                for name in chosen}
    if kind == "array":
        count = draw(st.integers(schema.get("minItems", 0), max(schema.get("minItems", 0), schema.get("maxItems", 3))))
        return [conforming(schema.get("items", True), draw) for _ in range(count)]
    if kind == "string":
        return draw(PLAIN_TEXT)
    if kind in ("integer", "number"):
        return draw(SMALL_NUMBERS if kind == "number" else st.integers(-5, 5))
    return draw(st.none() if kind == "null" else st.booleans())


@RANDOM
@given(schema=SCHEMAS, data=st.data())
def test_random_schemas_exact_within_reach(schema, data):
    document = conforming(schema, data.draw) if data.draw(st.booleans()) else data.draw(REACHABLE)
    text = orjson.dumps(document)
    if b"\\" in text:
        return  # a name written with an escape: not within reach
    fast, exact = answers(schema, text)
    event(f"passes {exact}")
    integral = [value for value in _numbers(document) if isinstance(value, float) and value.is_integer()]
    if not integral:  # a 2.0 where an integer is wanted is left to the full validator
        assert fast == exact, text


def _numbers(document):
    if isinstance(document, dict):
        for value in document.values():
            yield from _numbers(value)
    elif isinstance(document, list):
        for value in document:
            yield from _numbers(value)
    elif isinstance(document, (int, float)) and not isinstance(document, bool):
        yield document


@RANDOM
@given(schema=SCHEMAS, document=ANYTHING, ascii_only=st.booleans(), indent=st.sampled_from([None, 1]))
def test_random_schemas_sound_for_anything(schema, document, ascii_only, indent):
    try:
        text = json.dumps(document, ensure_ascii=ascii_only, indent=indent).encode("utf-8", "surrogatepass")
    except ValueError:
        return
    fast, exact = answers(schema, text)
    event(f"fast {fast}, full {exact}")


@RANDOM
@given(bound=st.floats(-1e6, 1e6, allow_nan=False) | st.decimals(-10 ** 9, 10 ** 9, places=12).map(float),
       digits=st.integers(1, 17))
def test_fractions_compare_with_bounds_as_orjson_reads_them(bound, digits):
    """A fraction token near a bound: the check's reading of it must be orjson's, to the last bit."""
    text = f"{bound:.{digits}f}".encode()
    if len(text) > 24 or b"." not in text:
        return
    for keyword in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
        fast, exact = answers({"type": "number", keyword: bound}, text)
        assert fast == exact, (keyword, bound, text)


@st.composite
def mutated(draw):
    value = bytearray(draw(st.sampled_from([GOOD_ORDER, b'{"a": [1, 2.5, "x\\u00e9", true, null]}'])))
    for _ in range(draw(st.integers(1, 3))):
        at = draw(st.integers(0, len(value)))
        how = draw(st.sampled_from(["replace", "insert", "delete", "cut"]))
        if how == "replace" and at < len(value):
            value[at] = draw(st.integers(0, 255))
        elif how == "insert":
            value[at:at] = draw(st.sampled_from([b"\\", b'"', b"\\ud800", b"e5", b".", b"-", b"0", b",", b"}",
                                                 b"]", b"\xff", b"\xed\xa0\x80", b" ", b"1" * 20]))
        elif how == "delete":
            del value[at:at + draw(st.integers(1, 3))]
        else:
            del value[at:]
    return bytes(value)


@RANDOM
@given(data=mutated() | st.binary(max_size=48))
def test_mutated_and_random_bytes_are_never_passed_wrongly(data):
    for schema in (ORDER, True, {"type": "object", "additionalProperties": {"type": ["number", "string", "array"]}}):
        fast, exact = answers(schema, data)
        event(f"fast {fast}, full {exact}")


def test_strings_of_every_length_with_an_odd_byte_anywhere():
    """As a value and as a key, the document ending right after the string or well past it."""
    schema = {"type": "object", "properties": {"k": {"type": "string"}}}
    fast, twin = check(schema), jsoncheck_py.compile_check(schema)
    validator = jsonschema_rs.validator_for(schema, offline=True)
    for text in strings_with_an_odd_byte():
        for data in (b'{"k":"' + text + b'"}', b'{"' + text + b'":1}', b'{"k":"' + text + b'"}' + b" " * 17):
            try:
                exact = validator.is_valid(orjson.loads(data))
            except orjson.JSONDecodeError:
                exact = False
            assert fast.passes(data) == exact == twin.passes(data), data


def test_plan_shape():
    nodes = jsoncheck_py.plan(ORDER)
    root = nodes[0]
    assert root[0] == jsoncheck_py.T_OBJECT
    assert [(name, bit) for name, _, bit in root[8]] == [(b"id", 1), (b"amount", 2), (b"currency", 4), (b"card", 8)]
    assert root[9] == 15
    assert nodes[root[8][1][1]][1] == 0.0  # amount's minimum
