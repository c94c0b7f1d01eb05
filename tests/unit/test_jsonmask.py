"""Member-path masking of JSON bytes (brokerguard._native.jsonmask) and its pure-Python twin.

Every behavioural test runs against both twins. The differential tests draw JSON documents
(written by json.dumps with random whitespace) and rules, and require identical results from
both twins, the document Python computes by applying the rules to json.loads of the original,
and the very bytes json.dumps writes for that document. What counts as valid JSON is checked
against Python's json (see python_accepts for where RFC 8259 and Python differ).
Hypothesis prints the seed and a reproduction blob on failure.
"""
import hashlib
import hmac
import json
import os
import subprocess
import sys

import pytest
from hypothesis import event, given
from hypothesis import strategies as st

from fuzzing import random_inputs, strings_with_an_odd_byte

from brokerguard._native import jsonmask, jsonmask_py

TWINS = [pytest.param(jsonmask, id="cython"), pytest.param(jsonmask_py, id="python")]
REDACT, NULL, DROP, KEEP_LAST, KEEP_FIRST, HASH = 1, 2, 3, 4, 5, 6
MARK = b'"[REDACTED]"'

RANDOM = random_inputs(300)


@pytest.fixture(params=TWINS)
def twin(request):
    return request.param


def pseudonym(raw: bytes) -> bytes:
    return b'"h:' + hashlib.sha256(raw).hexdigest()[:16].encode() + b'"'


def rule(path, strategy, n=0, replacement=None):
    """A rule; path "a.b" stands for ("a", "b")."""
    if isinstance(path, str):
        path = tuple(path.split("."))
    if strategy == REDACT and replacement is None:
        replacement = MARK
    return (path, strategy, n, replacement)


def masker(twin, *rules, hash_function=pseudonym, **kwargs):
    return twin.FieldMasker(list(rules), hash_function=hash_function, **kwargs)


def outcome(call):
    try:
        return ("ok", call())
    except (TypeError, ValueError) as err:
        return (type(err).__name__, str(err))


def both(rules, value, **kwargs):
    """The one result of both twins for value (their results must be identical)."""
    results = [outcome(lambda: masker(twin, *rules, **kwargs).mask(value)) for twin in (jsonmask, jsonmask_py)]
    assert results[0] == results[1]
    if results[0][0] == "ok" and isinstance(results[0][1], bytes) and results[0][1] == value:
        # Identity too: either both return value itself or neither does.
        assert (masker(jsonmask, *rules, **kwargs).mask(value) is value) == (
            masker(jsonmask_py, *rules, **kwargs).mask(value) is value)
    return results[0]


def _refuse_constant(name):
    raise ValueError(f"{name} is not JSON")


def python_accepts(data: bytes) -> bool:
    """Whether Python's json reads data as one JSON document, held to RFC 8259 where Python is
    more lenient. The differences, and how they are settled here:

    - json.loads(bytes) guesses UTF-16 and UTF-32, skips a UTF-8 BOM and decodes with
      "surrogatepass" (taking UTF-8-encoded surrogates ED A0..BF): RFC 8259 text is UTF-8 only,
      so data is decoded as strict UTF-8 first and json.loads reads the str (which refuses a BOM);
    - NaN, Infinity and -Infinity are refused through parse_constant;
    - a lone surrogate escape ("\\ud800") is accepted, by Python and by the masker alike;
    - integers are kept as text (parse_int=str), so Python's 4300-digit limit on int() plays
      no part: the grammar allows any number of digits.

    Nesting depth is left out: Python stops at its recursion limit, the masker at max_depth;
    the documents compared here are shallow.
    """
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    try:
        json.loads(text, parse_constant=_refuse_constant, parse_int=str)
    except ValueError:  # JSONDecodeError included
        return False
    return True


# The twins themselves


def test_cython_twin_is_the_compiled_extension():
    assert jsonmask.__file__.endswith(".so"), jsonmask.__file__
    assert jsonmask.FieldMasker is not jsonmask_py.FieldMasker
    assert jsonmask.FALLBACK is jsonmask_py.FALLBACK
    assert repr(jsonmask.FALLBACK) == "FALLBACK"
    for twin in (jsonmask, jsonmask_py):
        assert (twin.REDACT, twin.NULL, twin.DROP, twin.KEEP_LAST, twin.KEEP_FIRST, twin.HASH) == (1, 2, 3, 4, 5, 6)
    assert sorted(jsonmask.__all__) == sorted(jsonmask_py.__all__)
    assert all(hasattr(jsonmask, name) for name in jsonmask.__all__)


@pytest.mark.parametrize("env, expected", [(None, "cython"), ("1", "python")])
def test_package_chooses_once_by_environment(env, expected):
    environ = {k: v for k, v in os.environ.items() if k != "BROKERGUARD_NO_EXTENSIONS"}
    if env is not None:
        environ["BROKERGUARD_NO_EXTENSIONS"] = env
    code = (
        "import brokerguard._native as n, brokerguard._native.jsonmask_py as p;"
        "print(n.IMPLEMENTATION, n.FieldMasker is p.FieldMasker, n.FALLBACK is p.FALLBACK,"
        " 'FieldMasker' in n.__all__ and 'FALLBACK' in n.__all__)"
    )
    out = subprocess.run([sys.executable, "-c", code], env=environ, capture_output=True, text=True, check=True)
    assert out.stdout.split() == [expected, str(expected == "python"), "True", "True"]


def test_both_twins_start_with_the_same_format_comment():
    here = os.path.dirname(jsonmask_py.__file__)
    with open(os.path.join(here, "jsonmask_py.py")) as source:
        python_lines = source.read().splitlines()
    with open(os.path.join(here, "jsonmask.pyx")) as source:
        cython_lines = source.read().splitlines()
    comment = python_lines[: next(i for i, line in enumerate(python_lines) if not line.startswith("#"))]
    assert comment[0].startswith("# JSON read here")
    assert cython_lines[: len(comment)] == comment


# What is masked


DOC = b'{"id": 7, "card": {"number": "4111111111111111", "cvc": 123}, "customer": {"email": "a@b.example"}}'


@pytest.mark.parametrize(
    "rules, value",
    [
        ([], DOC),
        ([rule("password", REDACT)], DOC),
        ([rule("card.holder", REDACT), rule("customer.email.x", NULL)], DOC),  # the email is a string
        ([rule("id.x", REDACT)], DOC),
        ([rule("number", REDACT)], DOC),  # only from the root
        ([rule("a", REDACT)], b'[{"a": 1}]'),  # the root is not an object
        ([rule("a", REDACT)], b'"a"'),
        ([rule("a.b", REDACT)], b'{"a": [{"b": 1}]}'),  # arrays are not looked into
        ([rule("a", DROP)], b"{}"),
        ([rule("a", DROP)], b' { "b" : { "a" : 1 } } '),
        ([rule("a", KEEP_LAST, 2)], b'{"A": "xyz", "a ": "xyz"}'),
    ],
)
def test_nothing_matched_returns_the_same_object(twin, rules, value):
    assert masker(twin, *rules).mask(value) is value


# Keys are compared 8 bytes at a time where the document has 8 bytes from the key on, byte by
# byte near its end: names of every length around 8, against keys one byte off anywhere.
KEY_NAMES = ["a", "ab", "abcdefg", "abcdefgh", "abcdefghi", "abcdefghijklmnop", "abcdefghijklmnopq"]


@pytest.mark.parametrize("name", KEY_NAMES)
@pytest.mark.parametrize("tail", [b"", b', "z": [1, 2, 3, 4, 5, 6, 7, 8, 9]'], ids=["at the end", "mid"])
def test_keys_match_only_their_exact_bytes(name, tail):
    rules = [rule(name, REDACT)]
    assert both(rules, b'{"%s":1%s}' % (name.encode(), tail)) == ("ok", b'{"%s":%s%s}' % (name.encode(), MARK, tail))
    for at in range(len(name)):
        for other in (name[:at] + "~" + name[at + 1:], name[:at] + name[at + 1:]):
            value = b'{"%s":1%s}' % (other.encode(), tail)
            assert both(rules, value) == ("ok", value)
    longer = b'{"%s~":1%s}' % (name.encode(), tail)
    assert both(rules, longer) == ("ok", longer)


@pytest.mark.parametrize(
    "value, expected",
    [
        (b'{"a":"secret","b":1}', b'{"a":"[REDACTED]","b":1}'),
        (b'{ "a" :\t-12.5e+3 ,\n "b" : 1 }', b'{ "a" :\t"[REDACTED]" ,\n "b" : 1 }'),
        (b'{"a": {"x": [1, {"y": 2}], "z": "\\u00e9"} }', b'{"a": "[REDACTED]" }'),
        (b'{"a":[]}', b'{"a":"[REDACTED]"}'),
        (b'{"a":true,"a":false,"a":null}', b'{"a":"[REDACTED]","a":"[REDACTED]","a":"[REDACTED]"}'),
        (b'\r\n{"b": {"a": 1}, "a": "\\"quoted\\""}\t', b'\r\n{"b": {"a": 1}, "a": "[REDACTED]"}\t'),
    ],
)
def test_redact_replaces_only_the_value_bytes(twin, value, expected):
    assert masker(twin, rule("a", REDACT)).mask(value) == expected


def test_redact_writes_any_json_replacement(twin):
    for replacement in (b"0", b'{"masked": true}', b"[ ]", b'"\\u00e9"', b"null"):
        m = masker(twin, rule("a", REDACT, replacement=replacement))
        assert m.mask(b'{"a": "x", "b": 2}') == b'{"a": ' + replacement + b', "b": 2}'


def test_null(twin):
    m = masker(twin, rule("amount", NULL), rule("card.number", NULL))
    assert m.mask(b'{"amount": 12.5, "card": {"number": "4111", "x": [1]}, "n": 1}') == (
        b'{"amount": null, "card": {"number": null, "x": [1]}, "n": 1}')
    assert m.mask(b'{"amount": null}') == b'{"amount": null}'


@pytest.mark.parametrize(
    "value, expected",
    [
        (b'{"a":1, "b":2}', b'{"b":2}'),
        (b'{"b":2, "a":1}', b'{"b":2}'),
        (b'{"a":1}', b"{}"),
        (b'{ "a" : 1 }', b"{  }"),
        (b'{"x":0, "a":1, "b":2}', b'{"x":0, "b":2}'),
        (b'{"x":0 , "a" : [1, {"a": 2}] ,\n "b":2}', b'{"x":0 , "b":2}'),
        (b'{"b":1 , "a":2 }', b'{"b":1 }'),
        (b'{"b":1\n,\n"a":2\n,\n"a":3}', b'{"b":1}'),
        (b'{"a":1,"a":2,"b":3}', b'{"b":3}'),  # a run of dropped members before a kept one
        (b'{"b":1,"a":2,"a":3}', b'{"b":1}'),  # a run at the end: the comma before it goes
        (b'{"b":1,"a":2,"c":3,"a":4}', b'{"b":1,"c":3}'),
        (b'{"a":2,"b":1,"a":4}', b'{"b":1}'),
        (b'{"a":1,"a":2,"a":3}', b"{}"),
        (b'{\n  "a": 1,\n  "b": 2\n}', b'{\n  "b": 2\n}'),
        (b'{\n  "b": 2,\n  "a": 1\n}', b'{\n  "b": 2\n}'),
        (b'{"b":{"a":1,"c":2},"a":{}}', b'{"b":{"a":1,"c":2}}'),
        (b'[{"a":1}]', b'[{"a":1}]'),
    ],
)
def test_drop_removes_the_member_and_one_comma(twin, value, expected):
    out = masker(twin, rule("a", DROP)).mask(value)
    assert out == expected
    json.loads(out)


def test_drop_beside_other_rules(twin):
    m = masker(twin, rule("a", DROP), rule("b", REDACT), rule("c.d", DROP), rule("c.e", NULL))
    value = b'{"a": 1, "b": 2, "c": {"e": 3, "d": 4}, "a": 5}'
    assert m.mask(value) == b'{"b": "[REDACTED]", "c": {"e": null}}'
    value = b'{"c": {"d": 4, "e": 3}, "b": 2, "a": 1}'
    assert m.mask(value) == b'{"c": {"e": null}, "b": "[REDACTED]"}'


@pytest.mark.parametrize(
    "text, n, last, first",
    [
        ("4111111111111111", 4, "************1111", "4111************"),
        ("abc", 3, "***", "***"),
        ("abc", 5, "***", "***"),
        ("abcd", 3, "*bcd", "abc*"),
        ("", 2, "", ""),
        ("abc", 0, "***", "***"),
        ("h\u00e9llo w\u00f6rld", 5, "******w\u00f6rld", "h\u00e9llo******"),
        ("\u65e5\u672c\u8a9e\u306e\u6587\u7ae0", 2, "****\u6587\u7ae0", "\u65e5\u672c****"),
        ("a\U0001f600b\U0001f601", 2, "**b\U0001f601", "a\U0001f600**"),
        ("\U0001f600", 1, "*", "*"),
        ("x\u007f\u0080\u07ff\u0800\uffff\U00010000\U0010ffff", 4, "****\u0800\uffff\U00010000\U0010ffff",
         "x\u007f\u0080\u07ff****"),
    ],
)
def test_keep_last_and_keep_first_count_code_points(twin, text, n, last, first):
    value = b'{"v": ' + json.dumps(text, ensure_ascii=False).encode() + b"}"
    size = len(text)
    expected_last = "*" * size if size <= n else "*" * (size - n) + text[size - n:]
    expected_first = "*" * size if size <= n else text[:n] + "*" * (size - n)
    assert last is None or expected_last == last
    assert first is None or expected_first == first
    for strategy, expected in ((KEEP_LAST, expected_last), (KEEP_FIRST, expected_first)):
        out = masker(twin, rule("v", strategy, n)).mask(value)
        assert out == b'{"v": ' + json.dumps(expected, ensure_ascii=False).encode() + b"}"


def test_hash_gets_the_raw_string_literal(twin):
    seen = []

    def record(raw):
        seen.append(raw)
        return b'"h:%d"' % len(seen)

    m = masker(twin, rule("a", HASH), rule("b.c", HASH), hash_function=record)
    value = b'{"a": "\xc3\xa9t\xc3\xa9", "b": {"c": "x"}, "a": ""}'
    assert m.mask(value) == b'{"a": "h:1", "b": {"c": "h:2"}, "a": "h:3"}'
    assert seen == [b'"\xc3\xa9t\xc3\xa9"', b'"x"', b'""']


@pytest.mark.parametrize(
    "value",
    [
        b'{"v": 12}',
        b'{"v": {"x": "y"}}',
        b'{"v": ["a"]}',
        b'{"v": true}',
        b'{"v": null}',
        b'{"v": "a\\nb"}',
        b'{"v": "\\u00e9"}',
        b'{"v": "ok", "v": "\\"esc\\""}',
        b'{"w": 1, "v": 1.5, "x": "tail"}',
    ],
)
@pytest.mark.parametrize("strategy", [KEEP_LAST, KEEP_FIRST, HASH])
def test_fallback_for_values_only_the_general_path_can_mask(twin, value, strategy):
    m = masker(twin, rule("v", strategy, 2), rule("w", REDACT))
    assert m.mask(value) is twin.FALLBACK
    # The document must still be valid: anything broken after the match makes it invalid.
    assert m.mask(value[:-1]) is None
    assert m.mask(value + b",") is None
    assert m.mask(value[:-1] + b', "z": "\xff"}') is None


def test_keys_are_compared_decoded(twin):
    cases = [
        (b'{"\\u0061": 1}', "a"),
        (b'{"\\u00e9t\\u00E9": 1}', "\u00e9t\u00e9"),
        (b'{"\\u00e9t\xc3\xa9": 1}', "\u00e9t\u00e9"),
        (b'{"\\ud83d\\ude00": 1}', "\U0001f600"),
        (b'{"\\uD83D\\uDE00x": 1}', "\U0001f600x"),
        (b'{"\\ud800": 1}', "\ud800"),  # a lone surrogate escape names a lone surrogate
        (b'{"\\ud800\\u0041": 1}', "\ud800A"),
        (b'{"\\udc00\\ud800": 1}', "\udc00\ud800"),  # not a pair: low then high
        (b'{"a\\nb": 1}', "a\nb"),
        (b'{"a\\\\nb": 1}', "a\\nb"),  # an escaped backslash, then n
        (b'{"\\"\\/\\b\\f\\r\\t": 1}', '"/\b\f\r\t'),
        (b'{"": 1}', ""),
        (b'{"\\u0000": 1}', "\x00"),
    ]
    for value, name in cases:
        assert json.loads(value) == {name: 1}
        assert masker(twin, rule((name,), NULL)).mask(value) == value.replace(b"1}", b"null}"), value
    # And not what they merely resemble.
    misses = [
        (b'{"a\\nb": 1}', "a\\nb"),
        (b'{"\\u0061": 1}', "\\u0061"),
        (b'{"\\ud83d\\ude00": 1}', "\ud83d\ude00"),
        (b'{"\\ud800": 1}', "\U00010000"),
        (b'{"\\u00e9": 1}', "e\u0301"),
    ]
    for value, name in misses:
        assert masker(twin, rule((name,), NULL)).mask(value) is value, value


def test_names_with_a_backslash_match_keys_with_one(twin):
    # The raw key bytes a\nb equal the UTF-8 of the name "a\\nb", but the key decodes to a, LF, b.
    m = masker(twin, rule(("a\\nb",), REDACT), rule(("c",), NULL))
    value = b'{"a\\nb": 1, "a\\\\nb": 2, "c": 3}'
    assert m.mask(value) == b'{"a\\nb": 1, "a\\\\nb": "[REDACTED]", "c": null}'


def test_the_outer_rule_wins(twin):
    for rules in (
        [rule("card", REDACT), rule("card.number", KEEP_LAST, 4)],
        [rule("card.number", KEEP_LAST, 4), rule("card", REDACT), rule("card.x.y", DROP)],
    ):
        out = masker(twin, *rules).mask(b'{"card": {"number": "4111111111111111"}, "x": 1}')
        assert out == b'{"card": "[REDACTED]", "x": 1}'
    # An outer KEEP_LAST on an object needs the general path, whatever the inner rules say.
    m = masker(twin, rule("card", KEEP_LAST, 4), rule("card.number", REDACT))
    assert m.mask(b'{"card": {"number": "4111"}}') is twin.FALLBACK
    m = masker(twin, rule("card", DROP), rule("card.number", REDACT), rule("x", NULL))
    assert m.mask(b'{"x": 1, "card": {"number": "4111"}}') == b'{"x": null}'


def test_paths_follow_objects_only(twin):
    m = masker(twin, rule("a.b.c", NULL))
    assert m.mask(b'{"a": {"b": {"c": 1, "d": {"c": 2}}}}') == b'{"a": {"b": {"c": null, "d": {"c": 2}}}}'
    for value in (b'{"a": [{"b": {"c": 1}}]}', b'{"a": {"b": [{"c": 1}]}}', b'{"a": {"b": "c"}}', b'{"c": 1}',
                  b'{"b": {"c": 1}}', b'{"x": {"a": {"b": {"c": 1}}}}'):
        assert m.mask(value) is value


def test_duplicate_keys_are_masked_wherever_they_occur(twin):
    m = masker(twin, rule("a.b", REDACT))
    value = b'{"a": {"b": 1, "b": 2}, "a": 3, "a": {"x": 0, "b": [4]}}'
    assert m.mask(value) == (
        b'{"a": {"b": "[REDACTED]", "b": "[REDACTED]"}, "a": 3, "a": {"x": 0, "b": "[REDACTED]"}}')
    many = b"{" + b",".join([b'"a":{"b":%d}' % i for i in range(1000)] + [b'"z":0']) + b"}"
    assert m.mask(many) == b"{" + b",".join([b'"a":{"b":"[REDACTED]"}'] * 1000 + [b'"z":0']) + b"}"
    m = masker(twin, rule("a", DROP))
    assert m.mask(many) == b'{"z":0}'
    assert m.mask(many.replace(b',"z":0', b"")) == b"{}"


def test_long_paths_and_deep_documents(twin):
    names = [f"k{i}" for i in range(40)]
    value = "".join(f'{{"x": 0, "{name}": ' for name in names).encode() + b'"v"' + b"}" * 40
    m = masker(twin, rule(tuple(names), KEEP_FIRST, 0), rule(tuple(names[:20]) + ("x",), NULL))
    out = m.mask(value)
    doc = json.loads(out)
    for name in names[:20]:
        doc = doc[name]
    assert doc["x"] is None
    for name in names[20:]:
        doc = doc[name]
    assert doc == "*"
    # Far deeper than any rule: 5000 levels, with a larger max_depth.
    deep = b'{"a": ' + b"[" * 5000 + b"]" * 5000 + b', "b": ' + b'{"b": ' * 3000 + b"1" + b"}" * 3000 + b"}"
    m = masker(twin, rule("a", NULL), rule(("b",) * 3, REDACT), max_depth=10_000)
    assert m.mask(deep) == b'{"a": null, "b": {"b": {"b": "[REDACTED]"}}}'


# Valid JSON, and what is not


VALID = [
    b"0", b"-0", b"1", b"-1", b"123", b"1.5", b"-0.0", b"1e5", b"1E+5", b"1e-5", b"0.1e10", b"12345678901234567890123",
    b"1" * 5000, b"true", b"false", b"null", b'""', b'"a"', b"[]", b"{}", b"[[]]", b'{"": {}}', b" \t\r\n1 \t\r\n",
    b'"\\"\\\\\\/\\b\\f\\n\\r\\t"', b'"\\u0000\\uFFFF\\uabcd"', b'"\\ud800"', b'"\\udc00\\ud800"', b'"\x7f"',
    b'"\xc2\x80\xdf\xbf\xe0\xa0\x80\xed\x9f\xbf\xee\x80\x80\xef\xbf\xbf\xf0\x90\x80\x80\xf4\x8f\xbf\xbf"',
    b'[1, "a", true, null, {"a": [false]}, -2.5E-3]', b'{"a":1,"a":2}', b'{"a" : [ ] , "b" : { } }',
]
INVALID = [
    b"", b" ", b"01", b"-", b"-a", b"+1", b"1.", b".5", b"1.e5", b"1e", b"1e+", b"0x10", b"1 2", b"--1", b"-01",
    b"NaN", b"Infinity", b"-Infinity", b"nan", b"tru", b"truex", b"nul", b"True", b"None", b"'a'", b'"a', b'"\\"',
    b'"\\x"', b'"\\u12"', b'"\\u12g4"', b'"\\U0041"', b'"a\x00"', b'"a\x1f"', b'"a\nb"', b'"a\tb"', b"[", b"]", b"[1,]",
    b"[,1]", b"[1 2]", b"{", b"}", b'{"a"}', b'{"a":}', b'{"a" 1}', b'{"a":1,}', b'{,"a":1}', b"{1:2}", b"{a:1}",
    b"{'a':1}", b'{"a":1}}', b"[]]", b"[}", b'{"a":1]', b"\xef\xbb\xbf{}", b"\x00", b"1\x00", b"\x0c1", b"\xa01",
    b"/*c*/1", b"[1]x", b'"\xff"', b'"\xc0\x80"', b'"\xc1\xbf"', b'"\xe0\x80\x80"', b'"\xe0\x9f\xbf"',
    b'"\xed\xa0\x80"', b'"\xed\xbf\xbf"', b'"\xf0\x80\x80\x80"', b'"\xf0\x8f\xbf\xbf"', b'"\xf4\x90\x80\x80"',
    b'"\xf5\x80\x80\x80"', b'"\xf8\x88\x80\x80\x80"', b'"\x80"', b'"\xc2"', b'"\xe2\x82"', b'"\xf0\x9f\x98"',
    b'"\xc2\x41"', b'"\xe2\x28\xa1"', b"\xc3\xa9", b'{"\xff": 1}', b'{"a\x01": 1}',
]


@pytest.mark.parametrize("value", VALID)
def test_valid_documents(twin, value):
    assert python_accepts(value)
    m = masker(twin, rule("a", REDACT))
    out = m.mask(value)
    assert out is not None and out is not twin.FALLBACK


@pytest.mark.parametrize("value", INVALID)
def test_invalid_documents(twin, value):
    assert not python_accepts(value)
    for m in (masker(twin), masker(twin, rule("a", REDACT)), masker(twin, rule("a", KEEP_LAST, 1))):
        assert m.mask(value) is None
        assert m.mask(b'{"a": "x", "b": ' + value + b"}") is None
        assert m.mask(b'{"a": 1, "b": [0, ' + value + b"]}") is None


def test_python_json_is_more_lenient_where_documented():
    # The oracle's own checks: what json.loads(bytes) takes that RFC 8259 (and the masker) do not.
    assert json.loads(b"NaN") != json.loads(b"NaN") and not python_accepts(b"NaN")
    assert json.loads(b"\xef\xbb\xbf{}") == {} and not python_accepts(b"\xef\xbb\xbf{}")
    assert json.loads(b'"\xed\xa0\x80"') == "\ud800" and not python_accepts(b'"\xed\xa0\x80"')
    assert json.loads('{"a": 1}'.encode("utf-16")) == {"a": 1}
    assert python_accepts(b'"\\ud800"')


def test_max_depth(twin):
    for max_depth in (0, 1, 2, 5, 300):
        m = masker(twin, rule("a", REDACT), max_depth=max_depth)
        for depth in range(0, min(max_depth, 10) + 2):
            for value in (b"[" * depth + b"1" + b"]" * depth, b'{"a":' * depth + b"1" + b"}" * depth):
                out = m.mask(value)
                if depth <= max_depth:
                    assert out is not None
                else:
                    assert out is None
        at_limit = b"[" * max_depth + b"1" + b"]" * max_depth
        assert m.mask(at_limit) is at_limit
        assert m.mask(b"[" + at_limit + b"]") is None
    # Depth counts inside masked values too: the whole document is validated.
    m = masker(twin, rule("a", REDACT), max_depth=4)
    assert m.mask(b'{"a": [[[1]]]}') == b'{"a": "[REDACTED]"}'
    assert m.mask(b'{"a": [[[[1]]]]}') is None


def test_deep_nesting_does_not_crash(twin):
    deep = 100_000
    for value in (b"[" * deep + b"]" * deep, b'{"a":' * deep + b"1" + b"}" * deep, b"[" * deep, b'{"a":' * deep):
        assert masker(twin, rule("a", REDACT)).mask(value) is None
        assert masker(twin, rule(("a",) * 50, REDACT)).mask(value) is None
    m = masker(twin, rule(("a",) * 3, NULL), max_depth=2 * deep)
    value = b'{"a":' * deep + b"1" + b"}" * deep
    assert m.mask(value) == b'{"a":' * 3 + b"null" + b"}" * 3
    value = b"[" * deep + b"]" * deep
    assert m.mask(value) is value
    assert m.mask(value[:-1]) is None


def test_ten_megabyte_strings(twin):
    big = b"x" * (10 * 1024 * 1024)
    m = masker(twin, rule("s", KEEP_LAST, 4), rule("t", REDACT))
    assert m.mask(b'{"s": "' + big + b'abcd"}') == b'{"s": "' + b"*" * len(big) + b'abcd"}'
    value = b'{"u": "' + big + b'\xc3\xa9", "t": 1}'
    assert m.mask(value) == b'{"u": "' + big + b'\xc3\xa9", "t": "[REDACTED]"}'
    wide = "\u00e9\u4e2d\U0001f600" * (1024 * 1024)
    out = m.mask(b'{"s": "' + wide.encode() + b'"}')
    assert out == b'{"s": "' + ("*" * (len(wide) - 4) + wide[-4:]).encode() + b'"}'
    for bad in (b'{"u": "' + big + b'\xff"}', b'{"u": "' + big, b'{"u": "' + big + b'\x01"}',
                b'{"u": "' + big + b'\\q"}', b'{"u": "' + big + b'\xe4\xb8"}'):
        assert m.mask(bad) is None
    assert m.mask(b'{"s": 1, "u": "' + big + b'"}') is twin.FALLBACK


# Arguments


@pytest.mark.parametrize("value", [bytearray(b"{}"), memoryview(b"{}"), "{}", None, 1, [b"{}"]])
def test_mask_takes_bytes_only(value):
    messages = set()
    for twin in (jsonmask, jsonmask_py):
        with pytest.raises(TypeError) as caught:
            masker(twin, rule("a", REDACT)).mask(value)
        messages.add(str(caught.value))
    assert messages == {f"FieldMasker.mask takes bytes, not {type(value).__name__}"}


def test_bytes_subclasses_are_bytes(twin):
    class Raw(bytes):
        pass

    value = Raw(b'{"b": 1}')
    assert masker(twin, rule("a", REDACT)).mask(value) is value
    assert masker(twin, rule("b", NULL)).mask(value) == b'{"b": null}'


@pytest.mark.parametrize(
    "rules, kwargs, error",
    [
        (None, {}, "TypeError: rules must be a list of (path, strategy, n, replacement), not NoneType"),
        ([("a", 1, 0, MARK)], {}, "TypeError: rule 0: the path must be a tuple of member names (str), not 'a'"),
        ([(("a", b"b"), 1, 0, MARK)], {}, "TypeError: rule 0: the path must be a tuple of member names (str), "
                                          "not ('a', b'b')"),
        ([(("a",), 2, 0, None), ((), 2, 0, None)], {},
         "ValueError: rule 1: the path is empty; a path names at least one member of the root object"),
        ([(("a",), 7, 0, None)], {}, "ValueError: rule 0: unknown strategy 7; strategies are 1 (REDACT), 2 (NULL), "
                                     "3 (DROP), 4 (KEEP_LAST), 5 (KEEP_FIRST), 6 (HASH)"),
        ([(("a",), True, 0, None)], {}, "ValueError: rule 0: unknown strategy True; strategies are 1 (REDACT), "
                                        "2 (NULL), 3 (DROP), 4 (KEEP_LAST), 5 (KEEP_FIRST), 6 (HASH)"),
        ([(("a",), 4, -1, None)], {}, "ValueError: rule 0: n must be 0 or more, not -1"),
        ([(("a",), 5, 1.5, None)], {}, "TypeError: rule 0: n must be an int, not float"),
        ([(("a",), 1, 0, None)], {}, "TypeError: rule 0: the replacement must be bytes (JSON text), not NoneType"),
        ([(("a",), 1, 0, "x")], {}, "TypeError: rule 0: the replacement must be bytes (JSON text), not str"),
        ([(("a",), 1, 0, b"[REDACTED]")], {}, "ValueError: rule 0: the replacement b'[REDACTED]' is not one JSON value"),
        ([(("a",), 1, 0, b"")], {}, "ValueError: rule 0: the replacement b'' is not one JSON value"),
        ([(("a",), 6, 0, None)], {"hash_function": None}, "ValueError: rule 0: HASH needs a hash_function"),
        ([(("a", "b"), 2, 0, None), (("a", "b"), 3, 0, None)], {},
         "ValueError: rule 1: the path ('a', 'b') is listed twice; merge the rules first"),
        ([(("a",), 2, 0)], {}, "TypeError: rule 0: a rule is a tuple (path, strategy, n, replacement), not (('a',), 2, 0)"),
        ([[("a",), 2, 0, None]], {}, "TypeError: rule 0: a rule is a tuple (path, strategy, n, replacement), "
                                     "not [('a',), 2, 0, None]"),
        ([], {"max_depth": -1}, "ValueError: max_depth must be 0 or more, not -1"),
        ([], {"max_depth": 2.0}, "TypeError: max_depth must be an int, not float"),
        ([], {"max_depth": True}, "TypeError: max_depth must be an int, not bool"),
        ([], {"hash_function": "sha256"}, "TypeError: hash_function must be callable, not str"),
    ],
)
def test_rules_are_checked_alike(rules, kwargs, error):
    for twin in (jsonmask, jsonmask_py):
        result = outcome(lambda: twin.FieldMasker(rules, **kwargs))
        assert f"{result[0]}: {result[1]}" == error


def test_rule_arguments_that_are_fine(twin):
    assert masker(twin, rule("a", KEEP_LAST, 2**80)).mask(b'{"a": "xy"}') == b'{"a": "**"}'
    m = twin.FieldMasker(iter([rule("a", NULL, 99, b"ignored")]), max_depth=2**80)
    assert m.mask(b'{"a": 1}') == b'{"a": null}'
    assert twin.FieldMasker((r for r in [rule("a.b", KEEP_FIRST, 1, None)])).mask(b'{"a": {"b": "xy"}}') == (
        b'{"a": {"b": "x*"}}')


def test_a_masker_is_initialized_once(twin):
    m = masker(twin, rule("a", NULL))
    with pytest.raises(TypeError, match="^a FieldMasker is initialized once; make a new one for other rules$"):
        m.__init__([rule("a", REDACT)])
    assert m.mask(b'{"a": 1}') == b'{"a": null}'


def hmac_pseudonym(key: bytes, literal: bytes) -> bytes:
    """Pseudonyms' answer, from Python's hmac: the oracle for both twins."""
    return b'"h:' + hmac.new(key, literal, hashlib.sha256).hexdigest()[:32].encode() + b'"'


@pytest.mark.parametrize("sha_extensions", [True, False], ids=["sha-extensions", "portable"])
@given(key=st.binary(max_size=200), text=st.text(max_size=300))
def test_pseudonyms_are_hmac_sha256_of_the_string_literal(sha_extensions, key, text):
    """HASH with Pseudonyms: the compiled twin computes HMAC-SHA256 itself (with the CPU's SHA
    extensions where it has them, in portable C otherwise), without Python and so without the
    GIL. Keys longer than SHA-256's block are hashed first; literals of any length, over many
    blocks."""
    literal = json.dumps(text, ensure_ascii=False).encode()
    if b"\\" in literal:
        return  # an escaped string goes to the general path: FALLBACK
    document = b'{"id": 7, "email": ' + literal + b', "tags": ["x"]}'
    expected = b'{"id": 7, "email": ' + hmac_pseudonym(key, literal) + b', "tags": ["x"]}'
    before = jsonmask._sha_extensions(sha_extensions)
    try:
        native = jsonmask.FieldMasker([(("email",), HASH, 0, None)], jsonmask.Pseudonyms(key))
        assert native.native_mask_plain is not None  # no Python called: the GIL-free path
        assert native.mask(document) == expected
    finally:
        jsonmask._sha_extensions(before)
    python = jsonmask_py.FieldMasker([(("email",), HASH, 0, None)], jsonmask_py.Pseudonyms(key))
    assert python.mask(document) == expected


def test_a_hash_function_of_its_own_is_called_from_the_walk():
    """Any other hash_function is Python, so the compiled masker cannot run without the GIL."""
    assert masker(jsonmask, rule("a", HASH)).native_mask_plain is None
    assert masker(jsonmask, rule("a", REDACT)).native_mask_plain is not None

    class Fixed(jsonmask.Pseudonyms):
        def __call__(self, literal):
            return b'"fixed"'

    mine = masker(jsonmask, rule("a", HASH), hash_function=Fixed(b"k"))
    assert mine.native_mask_plain is None and mine.mask(b'{"a": "x"}') == b'{"a": "fixed"}'
    with pytest.raises(TypeError, match="the key must be bytes, not str"):
        jsonmask.Pseudonyms("key")


def test_hash_function_results_are_checked(twin):
    value = b'{"a": "x"}'
    for returned, error in (
        ("h:1", "TypeError: hash_function must return bytes (a JSON string literal), not str"),
        (None, "TypeError: hash_function must return bytes (a JSON string literal), not NoneType"),
        (b"h:1", "ValueError: hash_function returned b'h:1', which is not one JSON value"),
        (b'"h:1', "ValueError: hash_function returned b'\"h:1', which is not one JSON value"),
    ):
        result = outcome(lambda: masker(twin, rule("a", HASH), hash_function=lambda raw: returned).mask(value))
        assert f"{result[0]}: {result[1]}" == error

    def broken(raw):
        raise KeyError("from the hash function")

    with pytest.raises(KeyError, match="from the hash function"):
        masker(twin, rule("a", HASH), hash_function=broken).mask(value)
    # The hash function is never called for an invalid document or one that falls back.
    calls = []
    m = masker(twin, rule("a", HASH), rule("b", KEEP_LAST, 1), hash_function=lambda raw: calls.append(raw) or b'"h"')
    assert m.mask(b'{"a": "x", "b": 1}') is twin.FALLBACK
    assert m.mask(b'{"a": "x", "b": "y"') is None
    assert calls == []
    assert m.mask(b'{"a": "x", "b": "y"}') == b'{"a": "h", "b": "*"}' and calls == [b'"x"']


def test_one_masker_serves_a_hash_function_that_masks(twin):
    inner = masker(twin, rule("k", REDACT))

    def nested(raw):
        assert inner.mask(b'{"k": 1}') == b'{"k": "[REDACTED]"}'
        return b'"h"'

    m = masker(twin, *[rule(f"a{i}", HASH) for i in range(40)], hash_function=nested)
    value = b"{" + b",".join(b'"a%d": "v"' % i for i in range(40)) + b"}"
    assert m.mask(value) == b"{" + b",".join(b'"a%d": "h"' % i for i in range(40)) + b"}"


# Differential: random documents and rules


KEYS = st.sampled_from(["a", "b", "card", "number", "email", "\u00e9", "\U0001f600", "x y", 'q"', "\\", "\n", "",
                        "\ud800"]) | st.text(max_size=5)
TEXT = st.text(st.characters(exclude_categories=("Cs",)), max_size=10) | st.sampled_from(
    ["4111111111111111", "a@b.example", "\u65e5\u672c\u8a9e", "tab\there", 'say "hi"', "back\\slash", ""])
SCALARS = (st.none() | st.booleans() | st.integers(-(10**20), 10**20)
           | st.floats(allow_nan=False, allow_infinity=False) | TEXT)
VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(KEYS, inner, max_size=4),
                      max_leaves=20)
OBJECTS = st.dictionaries(KEYS, VALUES, min_size=1, max_size=6)
DOCUMENTS = st.integers(0, 4).flatmap(lambda pick: VALUES if pick == 0 else OBJECTS)  # mostly objects
REPLACEMENTS = st.sampled_from([MARK, b"0", b"null", b'{"masked": true}', b'"\\u00e9"', b"[ 1 ,2 ]", b'"h\xc3\xa9"'])


@st.composite
def layouts(draw):
    """json.dumps arguments, and whitespace before and after the document."""
    kwargs = dict(
        indent=draw(st.sampled_from([None, None, 0, 2, "\t", " \r"])),
        separators=(draw(st.sampled_from([",", ", ", " ,", " , ", ",\n\t", "\r,"])),
                    draw(st.sampled_from([":", ": ", " :", " : ", "\t:\r\n"]))),
        ensure_ascii=draw(st.booleans()),
    )
    return kwargs, draw(st.sampled_from(["", " ", "\n", " \t\r\n"])), draw(st.sampled_from(["", " ", "\r\n"]))


def dump(doc, layout) -> bytes:
    kwargs, before, after = layout
    return (before + json.dumps(doc, **kwargs) + after).encode("utf-8")


def fit(doc, layout):
    """layout, with ensure_ascii if doc has a lone surrogate (json.dumps writes it raw otherwise,
    and UTF-8 cannot hold it)."""
    try:
        dump(doc, layout)
    except UnicodeEncodeError:
        kwargs, before, after = layout
        return {**kwargs, "ensure_ascii": True}, before, after
    return layout


def member_paths(doc, prefix=()):
    if isinstance(doc, dict):
        for key, value in doc.items():
            yield prefix + (key,)
            yield from member_paths(value, prefix + (key,))


@st.composite
def rule_sets(draw, doc):
    present = list(member_paths(doc))
    paths = draw(st.lists(st.sampled_from(present), min_size=1, max_size=4)) if present else []
    paths += draw(st.lists(st.lists(KEYS, min_size=1, max_size=3).map(tuple), max_size=2))
    rules = []
    for path in dict.fromkeys(paths):
        strategy = draw(st.integers(1, 6))
        rules.append((path, strategy, draw(st.integers(0, 6)), draw(REPLACEMENTS) if strategy == REDACT else None))
    return rules


def expected_masking(doc, rules, ascii_only):
    """What the rules make of doc (a document json.loads read), computed on Python objects:
    (the masked document with REDACT values as placeholders, the placeholders' replacements,
    anything matched, needs the general path, an object or array was emptied by DROP)."""
    tree = {}  # name -> [(strategy, n, replacement) or None, children]
    for path, strategy, n, replacement in sorted(rules, key=lambda r: len(r[0])):
        level = tree
        for name in path[:-1]:
            entry = level.setdefault(name, [None, {}])
            if entry[0] is not None:
                break  # under an outer rule: moot
            level = entry[1]
        else:
            level.setdefault(path[-1], [None, {}])[0] = (strategy, n, replacement)
    states = []  # the tree as states, which expected_by_states reads

    def state_of(level, mask):
        index = len(states)
        states.append(None)
        members = () if mask else tuple((name, state_of(children, inner)) for name, (inner, children) in level.items())
        states[index] = (mask, members, (), -1)
        return index

    state_of(tree, None)
    return expected_by_states(doc, states, ascii_only)


def substitute(dumped: bytes, placeholders) -> bytes:
    for placeholder, replacement in placeholders.items():
        literal = json.dumps(placeholder).encode()
        assert dumped.count(literal) == 1
        dumped = dumped.replace(literal, replacement)
    return dumped


@RANDOM
@given(data=st.data(), doc=DOCUMENTS, layout=layouts())
def test_random_documents_and_rules(data, doc, layout):
    layout = fit(doc, layout)
    value = dump(doc, layout)
    rules = data.draw(rule_sets(json.loads(value)))
    ascii_only = layout[0]["ensure_ascii"]
    masked, placeholders, matched, fallback, emptied = expected_masking(json.loads(value), rules, ascii_only)
    results = [masker(twin, *rules).mask(value) for twin in (jsonmask, jsonmask_py)]
    assert results[0] == results[1]
    assert (results[0] is value) == (results[1] is value)
    out = results[0]
    event("nothing matched" if not matched else "general path" if fallback else "masked")
    if not matched:
        assert out is value
    elif fallback:
        assert out is jsonmask.FALLBACK
    else:
        assert isinstance(out, bytes)
        assert json.loads(out) == json.loads(substitute(json.dumps(masked).encode(), placeholders))
        # Byte for byte: what json.dumps writes for the masked document, in the same layout,
        # with each REDACT replacement spliced in as given. An object emptied by DROP keeps the
        # whitespace it had inside, which json.dumps would not write.
        if not emptied or layout[0]["indent"] is None:
            event("masked: compared byte for byte")
            assert out == substitute(dump(masked, layout), placeholders)


def test_layouts_write_what_the_differential_test_expects():
    # Non-ASCII stays raw unless ensure_ascii; a lone surrogate can only be written escaped.
    layout = ({"ensure_ascii": False}, "", "")
    assert dump({"\u00e9": "\u00e9"}, fit({}, layout)) == '{"\u00e9": "\u00e9"}'.encode()
    assert dump({"\ud800": 1}, fit({"\ud800": 1}, layout)) == b'{"\\ud800": 1}'
    assert json.dumps("\x00") == json.dumps("\x00", ensure_ascii=False) == '"\\u0000"'


# States: wildcards, indexes and loops


def states_masker(twin, states, hash_function=pseudonym, **kwargs):
    return twin.FieldMasker(states=states, hash_function=hash_function, **kwargs)


EACH_NOTE_DROPPED = [(None, (("items", 1),), (), -1), (None, (), (), 2), (None, (("note", 3),), (), -1),
                     ((DROP, 0, None), (), (), -1)]  # $.items[*].note: drop
# $..ssn: redact (state 1 loops through every member and element below the root)
ANY_SSN = [(None, (("ssn", 2),), (), 1), (None, (("ssn", 2),), (), 1), ((REDACT, 0, MARK), (), (), -1)]


def test_states_reach_into_arrays(twin):
    m = states_masker(twin, EACH_NOTE_DROPPED)
    assert m.mask(b'{"items": [{"note": 1, "a": 2}, {"a": 3, "note": 4}, 5, {"note": {"x": []}}]}') == (
        b'{"items": [{"a": 2}, {"a": 3}, 5, {}]}')
    for value in (b'{"items": {"a": {"note": 1}}}', b'{"items": [["note"]]}', b'{"note": 1}', b"[]"):
        assert m.mask(value) is value or value == b'{"items": {"a": {"note": 1}}}'
    # `other` is every member too, so [*] reaches an object's members as the general path's does.
    assert m.mask(b'{"items": {"a": {"note": 1}}}') == b'{"items": {"a": {}}}'


def test_a_loop_masks_at_every_depth(twin):
    m = states_masker(twin, ANY_SSN)
    value = b'{"ssn": 1, "a": [{"ssn": "x"}, [[{"b": {"ssn": null}}]]], "c": {"ssn": {"ssn": 2}}}'
    assert m.mask(value) == (b'{"ssn": "[REDACTED]", "a": [{"ssn": "[REDACTED]"}, [[{"b": {"ssn": "[REDACTED]"}}]]],'
                             b' "c": {"ssn": "[REDACTED]"}}')
    deep = b'{"a": ' + b"[" * 3000 + b'{"ssn": 1}' + b"]" * 3000 + b"}"
    assert states_masker(twin, ANY_SSN, max_depth=5000).mask(deep) == deep.replace(b"1", MARK)


def test_indexes_count_every_element_as_it_came(twin):
    # $.a[0], $.a[2]: redact, $.a[1]: drop, $.a[*].x: null
    states = [(None, (("a", 1),), (), -1), (None, (), ((0, 2), (1, 3), (2, 2)), 4), ((REDACT, 0, MARK), (), (), -1),
              ((DROP, 0, None), (), (), -1), (None, (("x", 5),), (), -1), ((NULL, 0, None), (), (), -1)]
    m = states_masker(twin, states)
    assert m.mask(b'{"a": [1, 2, 3, {"x": 4}, {"x": 5, "y": 6}]}') == (
        b'{"a": [' + MARK + b", " + MARK + b', {"x": null}, {"x": null, "y": 6}]}')
    assert m.mask(b'{"a": [{"x": 1}]}') == b'{"a": [' + MARK + b"]}"
    assert m.mask(b'{"a": {"k": {"x": 1}}}') == b'{"a": {"k": {"x": null}}}'  # [*] takes members too


@pytest.mark.parametrize(
    "value, expected",
    [
        (b"[1,2,3]", b"[1,3]"),
        (b"[ 1 , 2 , 3 ]", b"[ 1 , 3 ]"),
        (b"[1,\n  2]", b"[1]"),
        (b"[2]", b"[]"),
        (b"[ 2 ]", b"[  ]"),
        (b"[2, 2, 1, 2, 2]", b"[1]"),
        (b'[[2], {"2": 2}, 2]', b'[[2], {"2": 2}]'),
    ],
)
def test_drop_removes_the_element_and_one_comma(twin, value, expected):
    # The elements that are the number 2 are dropped, each named by its index.
    drops = [index for index, element in enumerate(json.loads(value)) if element == 2]
    states = [(None, (), tuple((index, 1) for index in drops), -1), ((DROP, 0, None), (), (), -1)]
    assert states_masker(twin, states).mask(value) == expected


@pytest.mark.parametrize(
    "states, kwargs, error",
    [
        (None, {}, "TypeError: rules must be a list of (path, strategy, n, replacement), not NoneType"),
        ([], {}, "ValueError: states is empty; states[0] is the root's"),
        (5, {}, "TypeError: states must be a list of (mask, members, elements, other), not int"),
        ([(None, (), ())], {}, "TypeError: state 0: a state is a tuple (mask, members, elements, other), "
                               "not (None, (), ())"),
        ([((NULL, 0, None), (), (), -1)], {}, "ValueError: state 0: the root is not masked here; its mask must be None"),
        ([(None, (), (), 1), (NULL, (), (), -1)], {}, "TypeError: state 1: a mask is None or a tuple "
                                                      "(strategy, n, replacement), not 2"),
        ([(None, (), (), 1), ((9, 0, None), (), (), -1)], {}, "ValueError: state 1: unknown strategy 9; strategies "
         "are 1 (REDACT), 2 (NULL), 3 (DROP), 4 (KEEP_LAST), 5 (KEEP_FIRST), 6 (HASH)"),
        ([(None, (), (), 1), ((HASH, 0, None), (), (), -1)], {"hash_function": None},
         "ValueError: state 1: HASH needs a hash_function"),
        ([(None, ((b"a", 0),), (), -1)], {}, "TypeError: state 0: a member name is a str, not bytes"),
        ([(None, (("a", 0), ("a", 0)), (), -1)], {}, "ValueError: state 0: the member 'a' is listed twice"),
        ([(None, (("a", 1),), (), -1)], {}, "ValueError: state 0, member 'a': no state 1; there are 1"),
        ([(None, (("a", "0"),), (), -1)], {}, "TypeError: state 0, member 'a': a target is a state's index (int), "
                                              "not str"),
        ([(None, (), ((-1, 0),), -1)], {}, "ValueError: state 0: element index -1: indexes count from the front, 0 on"),
        ([(None, (), ((1, 0), (1, 0)), -1)], {}, "ValueError: state 0: element 1 is listed twice"),
        ([(None, (), ((True, 0),), -1)], {}, "TypeError: state 0: an element index is an int, not bool"),
        ([(None, (), (), -2)], {}, "ValueError: state 0, other: no state -2; there are 1"),
    ],
)
def test_states_are_checked_alike(states, kwargs, error):
    for twin in (jsonmask, jsonmask_py):
        call = (lambda: twin.FieldMasker(None, **kwargs)) if states is None else (
            lambda: twin.FieldMasker(states=states, **kwargs))
        result = outcome(call)
        assert f"{result[0]}: {result[1]}" == error
    with pytest.raises(TypeError, match="^give rules or states, not both$"):
        jsonmask.FieldMasker([rule("a", NULL)], states=ANY_SSN)


@st.composite
def state_tables(draw, doc):
    """A random automaton over doc's keys and a few others: masks anywhere, loops allowed."""
    count = draw(st.integers(2, 5))
    names = st.sampled_from(sorted(set(keys_of(doc)) | {"a", "b"}))
    targets = st.sampled_from([*range(count), *range(1, count), -1])
    masks = st.tuples(st.integers(1, 6), st.integers(0, 6), REPLACEMENTS)
    states = []
    for index in range(count):
        mask = None if index == 0 else draw(st.none() | masks | masks)
        if mask is not None and mask[0] != REDACT:
            mask = (mask[0], mask[1], None)
        states.append((mask, tuple(draw(st.dictionaries(names | KEYS, targets, max_size=3)).items()),
                       tuple(draw(st.dictionaries(st.integers(0, 4), targets, max_size=2)).items()), draw(targets)))
    return states


def keys_of(doc):
    if isinstance(doc, dict):
        for key, value in doc.items():
            yield key
            yield from keys_of(value)
    elif isinstance(doc, list):
        for value in doc:
            yield from keys_of(value)


def expected_by_states(doc, states, ascii_only):
    """What states make of doc, computed on Python objects: expected_masking's answer."""
    placeholders = {}
    found = {"matched": False, "fallback": False, "emptied": False}

    def visit(container, state):
        _, members, elements, other = states[state]
        members, elements = dict(members), dict(elements)
        places = list(container) if isinstance(container, dict) else range(len(container))
        dropped = []
        for place in places:
            target = members.get(place, other) if isinstance(container, dict) else elements.get(place, other)
            if target < 0:
                continue
            value = container[place]
            if states[target][0] is None:
                if isinstance(value, (dict, list)):
                    visit(value, target)
                continue
            strategy, n, replacement = states[target][0]
            found["matched"] = True
            if strategy == DROP:
                dropped.append(place)
            elif strategy == REDACT:
                placeholder = f"\x00{len(placeholders)}\x00"
                placeholders[placeholder] = replacement
                container[place] = placeholder
            elif strategy == NULL:
                container[place] = None
            else:
                literal = json.dumps(value, ensure_ascii=ascii_only)
                if not isinstance(value, str) or "\\" in literal:
                    found["fallback"] = True
                elif strategy == HASH:
                    container[place] = json.loads(pseudonym(literal.encode()))
                else:
                    size = len(value)
                    kept = value[size - n:] if strategy == KEEP_LAST else value[:n]
                    container[place] = ("*" * size if size <= n else "*" * (size - n) + kept if strategy == KEEP_LAST
                                        else kept + "*" * (size - n))
        for place in reversed(dropped):
            del container[place]
        found["emptied"] |= bool(dropped) and not container

    if isinstance(doc, (dict, list)) and (states[0][1] or states[0][2] or states[0][3] >= 0):
        visit(doc, 0)
    return doc, placeholders, found["matched"], found["fallback"], found["emptied"]


@RANDOM
@given(data=st.data(), doc=DOCUMENTS, layout=layouts())
def test_random_documents_and_states(data, doc, layout):
    layout = fit(doc, layout)
    value = dump(doc, layout)
    states = data.draw(state_tables(json.loads(value)))
    ascii_only = layout[0]["ensure_ascii"]
    masked, placeholders, matched, fallback, emptied = expected_by_states(json.loads(value), states, ascii_only)
    results = [states_masker(twin, states).mask(value) for twin in (jsonmask, jsonmask_py)]
    assert results[0] == results[1]
    assert (results[0] is value) == (results[1] is value)
    out = results[0]
    event("nothing matched" if not matched else "general path" if fallback else "masked")
    if not matched:
        assert out is value
    elif fallback:
        assert out is jsonmask.FALLBACK
    else:
        assert json.loads(out) == json.loads(substitute(json.dumps(masked).encode(), placeholders))
        if not emptied or layout[0]["indent"] is None:
            event("masked: compared byte for byte")
            assert out == substitute(dump(masked, layout), placeholders)


# Differential: validity


MASKING = [rule("a", REDACT), rule("b", DROP), rule("card.number", KEEP_LAST, 4), rule(("\u00e9",), HASH),
           rule("x y", NULL), rule(("card", "\U0001f600"), KEEP_FIRST, 1)]
BYTES = b'{}[]:,"\\/ \t\r\n0123456789-+.eEtrufalsn\x00\x1f\x7f\x80\xbf\xc2\xa9\xe0\xa0\xed\xf0\x90\xf4\x8f\xf5\xff'
TOKENS = st.sampled_from([b"{", b"}", b"[", b"]", b":", b",", b" ", b"\n", b'"a"', b'"b"', b'"card"', b'"number"',
                          b'"\\u00e9"', b'"\xc3\xa9"', b'"\\ud800"', b'"x', b"1", b"-0.5e+3", b"01", b"1.", b"true",
                          b"fals", b"null", b"NaN", b'"\\"', b"\xff", b"\xed\xa0\x80", b'"\xf0\x9f\x98\x80"', b"\x00"])


@st.composite
def mutated(draw):
    doc = draw(DOCUMENTS)
    value = bytearray(dump(doc, fit(doc, draw(layouts()))))
    for _ in range(draw(st.integers(0, 3))):
        how = draw(st.sampled_from(["replace", "insert", "delete", "cut"]))
        at = draw(st.integers(0, len(value)))
        if how == "replace" and at < len(value):
            value[at] = draw(st.sampled_from(BYTES))
        elif how == "insert":
            value[at:at] = draw(st.sampled_from([bytes([b]) for b in BYTES]) | TOKENS)
        elif how == "delete":
            del value[at : at + draw(st.integers(1, 3))]
        else:
            del value[at:]
    return bytes(value)


def agree(value):
    results = [masker(twin, *MASKING).mask(value) for twin in (jsonmask, jsonmask_py)]
    assert results[0] == results[1]
    assert (results[0] is value) == (results[1] is value)
    assert (results[0] is None) == (not python_accepts(value)), value
    event("invalid" if results[0] is None else "general path" if results[0] is jsonmask.FALLBACK
          else "untouched" if results[0] is value else "masked")
    return results[0]


def test_strings_of_every_length_with_an_odd_byte_anywhere():
    """In masked values, other values and keys, and as the whole document."""
    compiled, python = masker(jsonmask, *MASKING), masker(jsonmask_py, *MASKING)
    for text in strings_with_an_odd_byte():
        for value in (b'{"a":"' + text + b'","card":{"number":"' + text + b'"}}', b'"' + text + b'"',
                      b'{"' + text + b'":1}'):
            result = compiled.mask(value)
            assert result == python.mask(value), value
            assert (result is None) == (not python_accepts(value)), value


@RANDOM
@given(value=mutated())
def test_validity_of_mutated_documents(value):
    agree(value)


@RANDOM
@given(value=st.lists(TOKENS, max_size=16).map(b"".join))
def test_validity_of_token_soup(value):
    agree(value)


@RANDOM
@given(value=st.binary(max_size=64) | st.lists(st.sampled_from(BYTES), max_size=24).map(bytes))
def test_random_bytes_never_raise(value):
    agree(value)
    for prefix in (b'{"a": ', b'{"card": {"number": ', b'{"b": 1, "x y": ', b'"'):
        agree(prefix + value)


@RANDOM
@given(values=st.lists(st.none() | mutated() | st.sampled_from([b'{"card": {"number": 4111}}', bytearray(b"{}"), "{}"]),
                       max_size=8))
def test_mask_all_is_mask_one_by_one(values):
    for twin in (jsonmask, jsonmask_py):
        out, pending = masker(twin, *MASKING).mask_all(values)
        expected, left = [], []
        for index, value in enumerate(values):
            result = masker(twin, *MASKING).mask(value) if isinstance(value, bytes) else None
            if value is not None and (result is None or result is jsonmask.FALLBACK):
                left.append(index)
                result = value
            expected.append(result)
        assert (out, pending) == (expected, left)
        assert [a is value for a, value in zip(out, values)] == [b is value for b, value in zip(expected, values)]
