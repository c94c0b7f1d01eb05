"""Mask profiles: every strategy and path form, combining, pass-through, unmaskable values, spec
mistakes, and random values that must never make masking raise.

hypothesis prints the failing example and the seed to replay it (`--hypothesis-seed`).
"""

import hmac
import re

import orjson
import pytest
from hypothesis import assume, event, given
from hypothesis import strategies as st

from fuzzing import random_inputs

from brokerguard.content import (UNMASKABLE, ContentSpecError, Detector, DetectorSet, MaskProfile, PathSet, combine,
                                 compile_profile, parse_path)

DETECTORS = DetectorSet.load()
KEY = b"k" * 32
FUZZ = random_inputs(300)
ORDER = {"id": 7, "card": {"number": "4111111111111111", "expiry": "12/29"},
         "customer": {"email": "jane@example.com", "ssn": "078-05-1120", "name": "Jane"},
         "items": [{"sku": "A-1", "note": "gift", "ssn": "123-45-6789"}, {"sku": "B-7", "note": "rush"}],
         "cvv": 123, "name": "Jane", "comment": "leave at the door"}


def profile(*fields, detectors=(), on_unmaskable=None, hash_key=KEY, name="p"):
    spec = {}
    if fields:
        spec["fields"] = [dict(path=path, strategy=strategy, **options) for path, strategy, options in
                          (field if len(field) == 3 else (*field, {}) for field in fields)]
    if detectors:
        spec["detectors"] = list(detectors)
    if on_unmaskable:
        spec["on_unmaskable"] = on_unmaskable
    return compile_profile(name, spec, detectors=DETECTORS, hash_key=hash_key)


def mask_one(profile_, document):
    values, failures = profile_.mask_values([orjson.dumps(document)])
    assert failures == []
    return orjson.loads(values[0])


def pseudonym(value, key=KEY):
    return "h:" + hmac.new(key, orjson.dumps(value, option=orjson.OPT_SORT_KEYS), "sha256").hexdigest()[:32]


# -- the spec example --------------------------------------------------------------------------


def test_the_card_data_profile():
    spec = {
        "fields": [
            {"path": "$.card.number", "strategy": "keep_last", "n": 4},
            {"path": "$.customer.email", "strategy": "hash"},
            {"path": "$..ssn", "strategy": "redact"},
            {"path": "$.items[*].note", "strategy": "drop"},
            {"path": "$.cvv", "strategy": "null"},
            {"path": "$.name", "strategy": "keep_first", "n": 1},
            {"path": "$.comment", "strategy": "redact", "with": "[removed]"},
        ],
        "detectors": ["payment_card", "email"],
        "on_unmaskable": "refuse",
    }
    card_data = compile_profile("card-data", spec, detectors=DETECTORS, hash_key=KEY)
    assert card_data.name == "card-data"
    assert mask_one(card_data, ORDER) == {
        "id": 7, "card": {"number": "************1111", "expiry": "12/29"},
        "customer": {"email": pseudonym("jane@example.com"), "ssn": "[REDACTED]", "name": "Jane"},
        "items": [{"sku": "A-1", "ssn": "[REDACTED]"}, {"sku": "B-7"}],
        "cvv": None, "name": "J***", "comment": "[removed]"}


# -- strategies --------------------------------------------------------------------------------


def test_redact_and_redact_with():
    assert mask_one(profile(("$.a", "redact"), ("$.b", "redact", {"with": "gone"})),
                    {"a": {"x": 1}, "b": 2, "c": 3}) == {"a": "[REDACTED]", "b": "gone", "c": 3}


@pytest.mark.parametrize("value, n, last, first", [
    ("4111111111111111", 4, "************1111", "4111************"),
    (4111111111111111, 4, "************1111", "4111************"),
    (12.5, 1, "***5", "1***"),
    ("abcd", 4, "****", "****"),  # no longer than n: fully starred, nothing leaks
    ("ab", 4, "**", "**"),
    ("abcdef", 0, "******", "******"),
    ("", 2, "", ""),
    (True, 1, "***e", "t***"),
    ({"x": 1}, 2, "*****1}", '{"*****'),
])
def test_keep_last_and_keep_first(value, n, last, first):
    masked = mask_one(profile(("$.last", "keep_last", {"n": n}), ("$.first", "keep_first", {"n": n})),
                      {"last": value, "first": value})
    assert masked == {"last": last, "first": first}


def test_null_and_drop():
    masked = mask_one(profile(("$.a", "null"), ("$.b", "drop"), ("$.list[1]", "drop")),
                      {"a": "x", "b": "y", "c": "z", "list": [0, 1, 2]})
    assert masked == {"a": None, "c": "z", "list": [0, 2]}


def test_hash_is_a_stable_keyed_pseudonym():
    hashed = profile(("$.email", "hash"), ("$.doc", "hash"))
    one = mask_one(hashed, {"email": "jane@example.com", "doc": {"b": 1, "a": 2}})
    two = mask_one(hashed, {"email": "jane@example.com", "doc": {"a": 2, "b": 1}})
    assert one == two  # same value, same pseudonym: joins still work (object keys in any order)
    assert one["email"] == pseudonym("jane@example.com")
    assert one["email"].startswith("h:") and len(one["email"]) == 34
    other_key = mask_one(profile(("$.email", "hash"), hash_key=b"x" * 32), {"email": "jane@example.com"})
    assert other_key["email"] != one["email"]
    assert mask_one(hashed, {"email": "john@example.com"})["email"] != one["email"]


def test_hash_needs_a_key():
    with pytest.raises(ContentSpecError) as caught:
        profile(("$.a", "redact"), ("$.email", "hash"), hash_key=None)
    assert caught.value.path == "$.fields[1].strategy" and "hash key" in caught.value.message
    with pytest.raises(ContentSpecError, match=r"\$\.detectors\[0\]\.strategy"):
        profile(detectors=[{"name": "email", "strategy": "hash"}], hash_key=None)


# -- paths -------------------------------------------------------------------------------------


@pytest.mark.parametrize("path, segments", [
    ("$", ()),
    ("$.card.number", (("key", "card"), ("key", "number"))),
    ("$['name with.dot']", (("key", "name with.dot"),)),
    ('$["it\'s"].x', (("key", "it's"), ("key", "x"))),
    (r"$['a\'b']", (("key", "a'b"),)),
    ("$.items[*].note", (("key", "items"), ("each", None), ("key", "note"))),
    ("$.*", (("each", None),)),
    ("$.items[3]", (("key", "items"), ("index", 3))),
    ("$.items[-1]", (("key", "items"), ("index", -1))),
    ("$..ssn", (("deep", "ssn"),)),
    ("$..['tax id'].last", (("deep", "tax id"), ("key", "last"))),
    ("$.trace-id", (("key", "trace-id"),)),
    ("$.größe", (("key", "größe"),)),
])
def test_parse_path(path, segments):
    assert parse_path(path) == segments


@pytest.mark.parametrize("path, problem", [
    ("card.number", "starts with `$`"),
    ("$.", "expected a name at character 3"),
    ("$..", "expected a name at character 4"),
    ("$[abc]", "must hold *, an index or a quoted name"),
    ("$.a[", "must hold"),
    ("$..[*]", "takes a name"),
    ("$ x", "unexpected ` ` at character 2"),
])
def test_bad_paths(path, problem):
    with pytest.raises(ValueError, match=re.escape(problem)):
        parse_path(path)
    with pytest.raises(ContentSpecError) as caught:
        profile((path, "redact"))
    assert caught.value.path == "$.fields[0].path" and "is not a path" in caught.value.message


def test_every_path_form():
    document = {"a.b": 1, "list": [{"x": 1}, {"x": 2}, {"x": 3}], "obj": {"p": {"x": 4}, "q": {"x": 5}},
                "deep": {"deeper": {"secret": "s1", "more": [{"secret": "s2"}]}}, "secret": "s0"}
    masked = mask_one(profile(("$['a.b']", "null"), ("$.list[0].x", "redact"), ("$.list[-1].x", "drop"),
                              ("$.obj[*].x", "keep_first", {"n": 0}), ("$..secret", "redact", {"with": "S"})),
                      document)
    assert masked == {"a.b": None, "list": [{"x": "[REDACTED]"}, {"x": 2}, {}],
                      "obj": {"p": {"x": "*"}, "q": {"x": "*"}},
                      "deep": {"deeper": {"secret": "S", "more": [{"secret": "S"}]}}, "secret": "S"}


def test_recursive_descent_then_members():
    masked = mask_one(profile(("$..card.number", "keep_last", {"n": 4})),
                      {"card": {"number": "12345678"}, "x": [{"card": {"number": "87654321", "cvv": 1}}],
                       "number": "11111111"})
    assert masked == {"card": {"number": "****5678"}, "x": [{"card": {"number": "****4321", "cvv": 1}}],
                      "number": "11111111"}


def test_any_member_name_is_data_not_code():
    name = '"); raise SystemExit(1) #'
    masked = mask_one(profile((f"$['{name}'].v", "redact"), (f"$['{name}']", "keep_first", {"n": 1})),
                      {name: {"v": 1}})
    assert masked == {name: "{" + "*" * 17}


def test_the_root():
    assert orjson.loads(profile(("$", "redact")).mask_values([b'{"a": 1}'])[0][0]) == "[REDACTED]"
    assert profile(("$", "null")).mask_values([b"[1]"])[0] == [b"null"]
    with pytest.raises(ContentSpecError, match="cannot remove the whole value"):
        profile(("$", "drop"))


def test_drop_every_element_and_indexes_from_both_ends():
    masked = mask_one(profile(("$.a[*]", "drop"), ("$.b[0]", "drop"), ("$.b[-1]", "drop"), ("$.c[5]", "drop")),
                      {"a": [1, 2, 3], "b": [1, 2, 3, 4], "c": [1]})
    assert masked == {"a": [], "b": [2, 3], "c": [1]}


def test_positive_and_negative_index_on_the_same_element():
    masked = mask_one(profile(("$.a[1]", "keep_last", {"n": 1}), ("$.a[-1]", "redact")), {"a": ["x", "yz"]})
    assert masked == {"a": ["x", "[REDACTED]"]}


def test_paths_that_are_not_there_change_nothing():
    masks = profile(("$.card.number", "redact"), ("$.items[*].note", "drop"), ("$..ssn", "redact"),
                    ("$.list[9]", "null"))
    values = [b'{"card": "not an object", "items": {"a": {"note": 1}}}', b'{"items": [1, "x", null]}', b"[]", b'"text"',
              b"12", b'{"list": [1]}']
    masked, failures = masks.mask_values(values)
    assert failures == [] and masked[1:] == values[1:] and all(a is b for a, b in zip(masked[1:], values[1:]))
    assert orjson.loads(masked[0]) == {"card": "not an object", "items": {"a": {}}}  # [*] reaches object members


def test_inner_rules_apply_before_rules_on_what_holds_them():
    document = {"a": {"secret": "hunter2", "b": 1}}
    expected = {"a": '{"secret":"[' + "*" * 17}  # `[` is where the redaction starts
    assert mask_one(profile(("$.a", "keep_first", {"n": 12}), ("$.a.secret", "redact")), document) == expected
    assert mask_one(profile(("$.a", "keep_first", {"n": 12}), ("$[*].secret", "redact")), document) == expected


def test_where_rules_meet_the_least_revealing_wins():
    document = {"a": "abcdefgh", "b": "abcdefgh", "c": "abcdefgh", "d": "abcdefgh", "e": "abcdefgh"}
    masked = mask_one(profile(("$.a", "keep_last", {"n": 4}), ("$.a", "keep_last", {"n": 2}),
                              ("$.b", "redact"), ("$.b", "drop"),
                              ("$.c", "keep_first", {"n": 2}), ("$.c", "keep_last", {"n": 2}),
                              ("$.d", "hash"), ("$.d", "null"),
                              ("$..e", "redact"), ("$.e", "keep_last", {"n": 3})), document)
    assert masked == {"a": "******gh", "c": "********", "d": None, "e": "[REDACTED]"}


def test_member_paths_and_the_automaton_agree():
    fields = [("$.card.number", "keep_last", {"n": 4}), ("$.customer", "keep_first", {"n": 3}),
              ("$.customer.email", "hash"), ("$.cvv", "null"), ("$.items", "drop"), ("$.name", "redact")]
    plain = profile(*fields)
    general = profile(*fields, ("$.never[*]", "drop"))
    assert plain._members is not None and general._automaton is not None
    values = [orjson.dumps(ORDER), b'{"card": {"number": 12345}, "customer": "x"}', b'{"customer": {"email": 1}}']
    assert plain.mask_values(values) == general.mask_values(values)


# -- pass-through ------------------------------------------------------------------------------


def test_unmasked_values_are_the_very_bytes_that_came_in():
    masks = profile(("$.secret", "redact"), detectors=["email"])
    values = [b'{ "id" : 1,\n  "n": 1.50 }', b'{"secret": 1}', b"plain text", b'{"text": "no\\u0040email here"}',
              None, b'"x"']
    masked, failures = masks.mask_values(values)
    assert failures == []
    for index in (0, 2, 3, 5):
        assert masked[index] is values[index]
    # Member paths are masked in the bytes: everything else stays as it came, spacing included.
    assert masked[1] == b'{"secret": "[REDACTED]"}' and masked[4] is None


def test_detectors_leave_everything_else_byte_identical():
    masks = profile(detectors=["email"])
    value = b'{ "a" : 1.50 ,  "to": "mail jane@example.com now", "big": 123456789012345678901234 }'
    masked, failures = masks.mask_values([value])
    assert failures == []
    assert masked == [b'{ "a" : 1.50 ,  "to": "mail [REDACTED:email] now", "big": 123456789012345678901234 }']


# -- detectors in profiles ---------------------------------------------------------------------


def test_detectors_apply_to_string_values_after_field_rules():
    masks = profile(("$.kept", "keep_last", {"n": 4}), detectors=["payment_card", "email"])
    masked = mask_one(masks, {"kept": "4111111111111111", "note": "card 4111 1111 1111 1111, mail a@b.io",
                              "jane@example.com": "a key is not masked", "n": 4111111111111111,
                              "nested": [{"deep": ["x@y.org"]}]})
    assert masked == {"kept": "************1111", "note": "card [REDACTED:payment_card], mail [REDACTED:email]",
                      "jane@example.com": "a key is not masked", "n": 4111111111111111,
                      "nested": [{"deep": ["[REDACTED:email]"]}]}


def test_detector_strategies():
    masks = profile(detectors=[{"name": "payment_card", "strategy": "keep_last", "n": 4},
                               {"name": "email", "strategy": "hash"},
                               {"name": "us_ssn", "with": "<ssn>", "strategy": "redact"},
                               {"name": "iban", "strategy": "keep_first", "n": 4}])
    masked = mask_one(masks, {"t": "4111 1111 1111 1111 / jane@example.com / 078-05-1120 / DE89370400440532013000"})
    assert masked["t"] == (f"**** **** **** 1111 / {pseudonym('jane@example.com')} / <ssn> / "
                           "DE89******************")


def test_a_replacement_is_escaped_inside_the_json_string():
    masks = profile(detectors=[{"name": "email", "strategy": "redact", "with": 'say "no" \\ \n'}])
    masked, _ = masks.mask_values([b'{"to": "jane@example.com"}'])
    assert orjson.loads(masked[0]) == {"to": 'say "no" \\ \n'}


def test_escaped_strings_are_scanned_after_decoding():
    masks = profile(detectors=["email"])
    masked, _ = masks.mask_values([b'{"to": "jane\\u0040example.com", "q": "\\"quoted\\""}'])
    assert orjson.loads(masked[0]) == {"to": "[REDACTED:email]", "q": '"quoted"'}


def test_a_match_across_strings_is_settled_string_by_string():
    key = "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC"
    masks = profile(detectors=["pem_private_key"])
    value = orjson.dumps({"a": key.replace("\n", " "), "b": "x -----END PRIVATE KEY-----"})
    masked, _ = masks.mask_values([value])
    assert orjson.loads(masked[0]) == {"a": "[REDACTED:pem_private_key]", "b": "x -----END PRIVATE KEY-----"}


def test_anchored_detector_patterns_scan_each_string_on_its_own():
    anchored = DetectorSet([Detector("leading_secret", r"^secret-[0-9]+")])
    masks = compile_profile("p", {"detectors": ["leading_secret"]}, detectors=anchored, hash_key=None)
    masked, _ = masks.mask_values([b'{"a": "secret-12 x", "b": "not secret-13", "c": ["secret-14"]}'])
    assert orjson.loads(masked[0]) == {"a": "[REDACTED:leading_secret] x", "b": "not secret-13",
                                       "c": ["[REDACTED:leading_secret]"]}
    # Beside field rules too: the walker's bytes are not searched whole then, string by string.
    masks = compile_profile("p", {"fields": [{"path": "$.z", "strategy": "redact"}], "detectors": ["leading_secret"]},
                            detectors=anchored, hash_key=None)
    for values in ([b'{"a": "secret-12 x", "z": 1}'], (b'{"a": "secret-12 x", "z": 1}',)):
        masked, _ = masks.mask_values(values)
        assert orjson.loads(masked[0]) == {"a": "[REDACTED:leading_secret] x", "z": "[REDACTED]"}


def test_text_that_is_not_json_gets_the_detectors():
    masks = profile(("$.x", "redact"), detectors=["payment_card", "email"])
    values = [b"card=4111-1111-1111-1111 user=jane@example.com", b"nothing to see", b'{"unclosed": "a@b.io"']
    masked, failures = masks.mask_values(values)
    assert failures == []
    assert masked[0] == b"card=[REDACTED:payment_card] user=[REDACTED:email]"
    assert masked[1] is values[1]
    assert masked[2] == b'{"unclosed": "[REDACTED:email]"'


# -- unmaskable values -------------------------------------------------------------------------

DEEP = b"[" * 2000 + b"]" * 2000
WIDE = b'{"a": 123456789012345678901234, "secret": "s"}'


def test_unmaskable_values_are_refused_and_never_returned():
    masks = profile(("$.secret", "redact"))
    values = [b"\xff\xfe not utf-8", b"<not json>", DEEP, b'{"secret": 1}', None]
    masked, failures = masks.mask_values(values)
    assert masked == [None, None, None, b'{"secret": "[REDACTED]"}', None]
    reasons = dict(failures)
    assert sorted(reasons) == [0, 1, 2]
    assert "not JSON" in reasons[0] and "no detectors for text" in reasons[0]
    assert "unexpected character" in reasons[1] and "line 1 column 1" in reasons[1]
    assert "depth" in reasons[2]
    # A path the byte walker cannot take: a wide integer under keep_last goes through orjson.
    masked, failures = profile(("$.a", "keep_last", {"n": 2})).mask_values([b'{"a": 123456789012345678901234}'])
    assert masked == [None] and "integer beyond 64 bits" in failures[0][1]


def test_documents_nested_deeper_than_orjson_writes():
    deep = b'{"secret": 1, "a": ' + b"[" * 300 + b"]" * 300 + b"}"
    # Paths the walker runs are masked in the bytes, however deep the rest nests (up to 1024 levels).
    secret = deep.replace(b'"secret": 1', b'"secret": "[REDACTED]"')
    for masks, expected in ((profile(("$.secret", "redact")), secret), (profile(("$..secret", "redact")), secret),
                            (profile(("$[*]", "redact")), b'{"secret": "[REDACTED]", "a": "[REDACTED]"}')):
        assert masks.mask_values([deep]) == ([expected], [])
    # What needs the document rewritten cannot be written this deep: refused, never passed.
    for masks in (profile(("$.a", "hash")), profile(("$.a", "keep_last", {"n": 2})), profile(("$.secret", "redact"), ("$.x[-1]", "null"))):
        masked, failures = masks.mask_values([deep])
        assert masked == [None] and "Recursion limit" in failures[0][1]
    masked, failures = profile(detectors=["email"]).mask_values([deep[:-1] + b', "to": "a@b.io"}'])
    assert failures == [] and b"[REDACTED:email]" in masked[0]


def test_unmaskable_values_can_be_redacted_instead():
    masks = profile(("$.secret", "redact"), on_unmaskable="redact")
    masked, failures = masks.mask_values([b"not json", DEEP, b'{"other": 1}'])
    assert failures == [] and masked[:2] == [UNMASKABLE, UNMASKABLE] and masked[2] == b'{"other": 1}'
    assert orjson.loads(UNMASKABLE) == "[REDACTED: not maskable]"


def test_with_detectors_only_invalid_utf8_is_unmaskable():
    masks = profile(detectors=["email"])
    masked, failures = masks.mask_values([b"\xc3\x28 a@b.io", b"a@b.io \xff", DEEP])
    assert masked == [None, None, DEEP] and [index for index, _ in failures] == [0, 1]
    assert "not UTF-8 text" in failures[0][1]


def test_a_wide_integer_document_that_needs_nothing_passes_and_one_with_a_match_is_masked_as_text():
    masks = profile(("$.zzz", "redact"), detectors=["email"])
    plain = b'{"a": 123456789012345678901234}'
    mailed = b'{"a": 123456789012345678901234, "to": "a@b.io"}'
    masked, failures = masks.mask_values([plain, mailed, b'{"a": -9223372036854775809, "zzz": 1}',
                                          b'{"a": -9223372036854775808, "zzz": 1}'])
    assert masked[0] is plain and masked[1] == b'{"a": 123456789012345678901234, "to": "[REDACTED:email]"}'
    # The byte walker keeps a wide integer exactly as written while it masks beside it.
    assert failures == [] and masked[2] == b'{"a": -9223372036854775809, "zzz": "[REDACTED]"}'
    assert masked[3] == b'{"a": -9223372036854775808, "zzz": "[REDACTED]"}'


def test_a_wide_integer_document_with_escapes_and_a_match_is_unmaskable():
    masks = profile(detectors=["email"])
    value = b'{"a": 123456789012345678901234, "to": "a\\u0040b.io"}'
    masked, failures = masks.mask_values([value])
    assert masked == [None] and "escaped text" in failures[0][1]


def test_a_long_digit_string_is_not_taken_for_a_wide_integer():
    masks = profile(("$.s", "redact"))
    assert masks.mask_values([b'{"id": "123456789012345678901234567890", "s": 1}'])[0] == [
        b'{"id": "123456789012345678901234567890", "s": "[REDACTED]"}']


def test_ten_megabytes_of_text():
    masks = profile(("$.x", "redact"), detectors=["email", "payment_card"])
    text = ("lorem ipsum 4111 1111 1111 1111 dolor jane@example.com " * 200_000)[:10_000_000]
    masked, failures = masks.mask_values([orjson.dumps({"body": text}), text.encode()])
    assert failures == []
    for out in (orjson.loads(masked[0])["body"], masked[1].decode()):
        assert "jane@" not in out and "4111 1111" not in out and out.count("[REDACTED:email]") == 181_818


# -- combine -----------------------------------------------------------------------------------


def test_combine_applies_every_profile():
    first = profile(("$.a", "keep_last", {"n": 2}), ("$.b", "redact"), detectors=["email"], on_unmaskable="redact",
                    name="first")
    second = profile(("$.a", "keep_last", {"n": 1}), ("$..c", "null"),
                     detectors=[{"name": "email", "strategy": "keep_first", "n": 1}, "us_ssn"], name="second")
    both = combine([first, second])
    assert isinstance(both, MaskProfile) and both.name == "first+second"
    assert both.on_unmaskable == "refuse"
    assert [name for name, _ in both.detectors] == ["email", "us_ssn"]
    assert mask_one(both, {"a": "abcdef", "b": 1, "x": {"c": 2}, "t": "jane@example.com 078-05-1120"}) == {
        "a": "*****f", "b": "[REDACTED]", "x": {"c": None}, "t": "[REDACTED:email] [REDACTED:us_ssn]"}
    assert combine([first]) is first
    assert combine([first, first]).mask_values([b'{"b": 1}'])[0] == [b'{"b": "[REDACTED]"}']
    assert combine([first, profile(("$.z", "null"), on_unmaskable="redact")]).on_unmaskable == "redact"
    with pytest.raises(ValueError):
        combine([])


# -- spec mistakes -----------------------------------------------------------------------------


@pytest.mark.parametrize("spec, path, problem", [
    ({"feilds": []}, "$.feilds", "did you mean `fields`"),
    ({"fields": {"path": "$.a"}}, "$.fields", "must be a list"),
    ({"fields": ["$.a"]}, "$.fields[0]", "must be a mapping"),
    ({"fields": [{"strategy": "redact"}]}, "$.fields[0]", "no `path`"),
    ({"fields": [{"path": "$.a"}]}, "$.fields[0]", "no `strategy`"),
    ({"fields": [{"path": "$.a", "strategy": "redcat"}]}, "$.fields[0].strategy", "did you mean `redact`"),
    ({"fields": [{"path": "$.a", "strategy": None}]}, "$.fields[0].strategy", 'write "null" in quotes'),
    ({"fields": [{"path": "$.a", "strategy": "keep_last"}]}, "$.fields[0]", "needs `n`"),
    ({"fields": [{"path": "$.a", "strategy": "keep_last", "n": -1}]}, "$.fields[0].n", "whole number"),
    ({"fields": [{"path": "$.a", "strategy": "keep_last", "n": True}]}, "$.fields[0].n", "whole number"),
    ({"fields": [{"path": "$.a", "strategy": "redact", "n": 2}]}, "$.fields[0].n", "belongs to keep_last"),
    ({"fields": [{"path": "$.a", "strategy": "null", "with": "x"}]}, "$.fields[0].with", "replacement text"),
    ({"fields": [{"path": "$.a", "strategy": "redact", "with": 5}]}, "$.fields[0].with", "must be text"),
    ({"fields": [{"path": "$.a", "strategy": "redact", "mode": 1}]}, "$.fields[0].mode", "unknown key"),
    ({"detectors": "email"}, "$.detectors", "must be a list"),
    ({"detectors": ["email", "emial"]}, "$.detectors[1]", "did you mean `email`"),
    ({"detectors": ["email", "email"]}, "$.detectors[1]", "listed twice"),
    ({"detectors": [{"strategy": "redact"}]}, "$.detectors[0]", "no `name`"),
    ({"detectors": [{"name": "email", "strategy": "drop"}]}, "$.detectors[0].strategy", "replaced inside text"),
    ({"detectors": [{"name": "email", "n": 2}]}, "$.detectors[0].n", "needs a `strategy`"),
    ({"detectors": [5]}, "$.detectors[0]", "must be text"),
    ({"detectors": ["email"], "on_unmaskable": "drop"}, "$.on_unmaskable", "`refuse`"),
    ({"paths": "credentials"}, "$.paths", "must be a list of path set names"),
    ({"paths": ["credentails"]}, "$.paths[0]", "did you mean `credentials`"),
    ({"paths": ["credentials", "credentials"]}, "$.paths[1]", "listed twice"),
    ({"paths": [{"strategy": "null"}]}, "$.paths[0]", "no `name`"),
    ({"paths": [{"name": "credentials", "n": 2}]}, "$.paths[0].n", "needs a `strategy`"),
    ({"paths": [{"name": "credentials", "strategy": "keep_last"}]}, "$.paths[0]", "needs `n`"),
    ({"paths": [{"name": "credentials", "mode": 1}]}, "$.paths[0].mode", "unknown key"),
    ({"paths": [7]}, "$.paths[0]", "must be text"),
    ({}, "$", "masks nothing"),
    ({"description": "nothing"}, "$", "masks nothing"),
    ([], "$", "must be a mapping"),
])
def test_spec_mistakes_say_where(spec, path, problem):
    with pytest.raises(ContentSpecError) as caught:
        compile_profile("card-data", spec, detectors=DETECTORS, hash_key=KEY)
    assert caught.value.path == path
    assert problem in caught.value.message
    assert str(caught.value).startswith(f"card-data: {path}: ")
    assert isinstance(caught.value, ValueError)


# -- path sets ---------------------------------------------------------------------------------

LOGIN = {"user": "ada", "password": "pw", "Password": "kept", "user_password": "kept",
         "devices": [{"api_key": "k-1", "model": "x1"}], "session": {"access_token": {"value": "t", "ttl": 60}}}


def test_a_path_set_masks_as_its_fields_written_inline():
    from brokerguard.plugins.detectors.pathsets import CREDENTIAL_NAMES

    listed = compile_profile("p", {"paths": ["credentials"]}, detectors=DETECTORS, hash_key=KEY)
    inline = profile(*((f"$..{name}", "redact", {"with": "[REDACTED:credentials]"}) for name in CREDENTIAL_NAMES))
    masked = mask_one(listed, LOGIN)
    assert masked == mask_one(inline, LOGIN)
    assert masked == {**LOGIN, "password": "[REDACTED:credentials]", "devices": [{"api_key": "[REDACTED:credentials]",
                                                                                   "model": "x1"}],
                      "session": {"access_token": "[REDACTED:credentials]"}}


def test_a_path_set_entry_with_a_strategy_masks_every_path_with_it():
    dropped = compile_profile("p", {"paths": [{"name": "credentials", "strategy": "drop"}]}, detectors=DETECTORS,
                              hash_key=KEY)
    assert mask_one(dropped, LOGIN) == {"user": "ada", "Password": "kept", "user_password": "kept",
                                        "devices": [{"model": "x1"}], "session": {}}
    hashed = compile_profile("p", {"paths": [{"name": "credentials", "strategy": "hash"}]}, detectors=DETECTORS,
                             hash_key=KEY)
    assert mask_one(hashed, LOGIN)["password"] == mask_one(profile(("$.password", "hash")), LOGIN)["password"]


def test_a_path_set_meets_field_rules_and_the_least_revealing_wins():
    spec = {"fields": [{"path": "$.password", "strategy": "keep_last", "n": 1},
                       {"path": "$.user", "strategy": "null"}], "paths": ["credentials"]}
    masked = mask_one(compile_profile("p", spec, detectors=DETECTORS, hash_key=KEY), LOGIN)
    assert (masked["password"], masked["user"]) == ("[REDACTED:credentials]", None)


def test_a_hash_rule_in_a_path_set_needs_the_gateways_key_naming_the_set():
    sets = DetectorSet(path_sets=[PathSet("ids", [{"path": "$.customer_id", "strategy": "hash"}])])
    assert mask_one(compile_profile("p", {"paths": ["ids"]}, detectors=sets, hash_key=KEY), {"customer_id": 7}) == {
        "customer_id": mask_one(profile(("$.customer_id", "hash")), {"customer_id": 7})["customer_id"]}
    with pytest.raises(ContentSpecError) as caught:
        compile_profile("p", {"paths": ["ids"]}, detectors=sets, hash_key=None)
    assert caught.value.path == "$.paths[0]"
    assert caught.value.message.startswith("path set `ids` $.fields[0].strategy: `hash` needs the gateway's hash key")
    # A strategy of the profile's own replaces the set's: no key needed then.
    redacted = compile_profile("p", {"paths": [{"name": "ids", "strategy": "redact"}]}, detectors=sets, hash_key=None)
    assert mask_one(redacted, {"customer_id": 7}) == {"customer_id": "[REDACTED]"}


# -- random input ------------------------------------------------------------------------------

SCALARS = st.none() | st.booleans() | st.integers(-(2 ** 63), 2 ** 64 - 1) | st.floats(allow_nan=False,
                                                                                       allow_infinity=False) | st.text()
KEYS = st.sampled_from(["ssn", "card", "number", "note", "items", "x", "to"]) | st.text(max_size=5)
DOCUMENTS = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(KEYS, inner, max_size=4),
                         max_leaves=25)
EVERYTHING = profile(("$.card.number", "keep_last", {"n": 4}), ("$..ssn", "redact"), ("$.items[*].note", "drop"),
                     ("$.x[0]", "hash"), ("$.x[-1]", "null"), ("$.*.to", "keep_first", {"n": 1}),
                     detectors=["payment_card", "email", "us_ssn", "pem_private_key"])


def _values(document, key):
    if isinstance(document, dict):
        for name, value in document.items():
            if name == key:
                yield value
            yield from _values(value, key)
    elif isinstance(document, list):
        for value in document:
            yield from _values(value, key)


@FUZZ
@given(st.lists(st.binary(max_size=200) | st.text(max_size=200).map(str.encode) | st.none(), max_size=5))
def test_random_bytes_never_raise(values):
    for masks in (EVERYTHING, profile(("$.a", "redact")), profile(("$.a", "redact"), on_unmaskable="redact")):
        masked, failures = masks.mask_values(values)
        assert len(masked) == len(values)
        for index, reason in failures:
            assert masked[index] is None and values[index] is not None and reason
        for value, out in zip(values, masked):
            assert out is None or isinstance(out, bytes)
            if value is None:
                assert out is None


@FUZZ
@given(DOCUMENTS)
def test_random_documents_are_masked_and_stay_json(document):
    value = orjson.dumps(document)
    masked, failures = EVERYTHING.mask_values([value])
    assert failures == []
    out = orjson.loads(masked[0])
    for ssn in _values(out, "ssn"):
        assert ssn == "[REDACTED]"
    card = document.get("card") if isinstance(document, dict) else None
    if isinstance(card, dict) and isinstance(card.get("number"), str):
        number = card["number"]
        assert out["card"]["number"] == ("*" * len(number) if len(number) <= 4 else "*" * (len(number) - 4)
                                         + number[-4:]) or "[REDACTED:" in out["card"]["number"]


@FUZZ
@given(DOCUMENTS, st.sampled_from([" ", "\n  ", ""]))
def test_documents_are_masked_the_same_however_they_are_written(document, space):
    compact = orjson.dumps(document)
    spaced = orjson.dumps(document, option=orjson.OPT_INDENT_2).replace(b"\n", space.encode())
    assert orjson.loads(compact) == orjson.loads(spaced)
    masked, _ = EVERYTHING.mask_values([compact, spaced])
    assert orjson.loads(masked[0]) == orjson.loads(masked[1])


def test_json_that_orjson_cannot_read_is_never_masked_as_mere_text():
    # A number beyond a double's range: valid JSON, but its fields cannot be found, and detectors
    # over its text would let a card number written as a number through.
    masks = profile(("$.card.number", "keep_last", {"n": 4}), detectors=["payment_card"])
    huge = b'{"card": {"number": 1' + b"0" * 400 + b"}}"
    masked, failures = masks.mask_values([huge, b"not json 4111 1111 1111 1111"])
    assert masked[0] is None and "cannot be read whole" in failures[0][1]
    assert masked[1] == b"not json [REDACTED:payment_card]"


def _path_text(segments):
    text = "$"
    for kind, arg in segments:
        if kind == "each":
            text += "[*]"
        elif kind == "index":
            text += f"[{arg}]"
        else:
            quoted = "['" + arg.replace("\\", "\\\\").replace("'", "\\'") + "']"
            text += ".." + quoted if kind == "deep" else quoted
    return text


def _places(document, prefix=()):
    """The segments of every member and element in document."""
    items = document.items() if isinstance(document, dict) else enumerate(document) if isinstance(document, list) else ()
    for key, value in items:
        segments = prefix + ((("key" if isinstance(key, str) else "index"), key),)
        yield segments
        yield from _places(value, segments)


SEGMENTS = (st.tuples(st.sampled_from(["key", "deep"]), KEYS) | st.tuples(st.just("each"), st.none())
            | st.tuples(st.just("index"), st.integers(0, 3)))
STRATEGY = st.sampled_from(["redact", "null", "drop", "keep_last", "keep_first", "hash"])


@st.composite
def fields_for(draw, document):
    """Field rules, mostly for paths in document, with wildcards, indexes and `..` mixed in."""
    places = list(_places(document))
    paths = [draw(st.lists(SEGMENTS, min_size=1, max_size=4)) for _ in range(draw(st.integers(0, 2)))]
    for _ in range(draw(st.integers(1 if places else 0, 3 if places else 0))):
        segments = list(draw(st.sampled_from(places)))
        for at, (kind, arg) in enumerate(segments):
            turn = draw(st.sampled_from(["as is", "as is", "each", "deep"]))
            if turn == "each" or (turn == "deep" and kind == "index"):
                segments[at] = ("each", None)
            elif turn == "deep":
                segments[at] = ("deep", arg)
        paths.append(segments)
    return [(_path_text(path), draw(STRATEGY), draw(st.integers(0, 5))) for path in paths]


@FUZZ
@given(st.data(), DOCUMENTS)
def test_the_walker_masks_as_the_general_path_does(data, document):
    # Every path form but indexes from the end runs in the native walker: what it gives must be
    # what parsing, masking the objects and writing them back gives.
    fields = data.draw(fields_for(document))
    assume(fields)
    masks = profile(*((path, strategy, {"n": n} if strategy.startswith("keep") else {}) for path, strategy, n in fields))
    assert masks._walker is not None
    general = profile(*((path, strategy, {"n": n} if strategy.startswith("keep") else {}) for path, strategy, n in fields))
    general._walker = None
    value = orjson.dumps(document, option=orjson.OPT_INDENT_2)
    walked, walked_failures = masks.mask_values([value])
    parsed, parsed_failures = general.mask_values([value])
    assert walked_failures == parsed_failures
    event("unmaskable" if walked[0] is None else "unchanged" if walked[0] is value else "masked")
    if walked[0] is not None:
        assert orjson.loads(walked[0]) == orjson.loads(parsed[0])
        assert (walked[0] is value) == (parsed[0] is value)


BATCH_VALUES = (st.builds(orjson.dumps, DOCUMENTS) | st.sampled_from([
    b'{"note": "card 4111 1111 1111 1111"}', b'{"to": "a@b.io", "card": {"number": "4111111111111111"}}',
    b'{"note": "\\u0034111 1111 1111 1111"}', b'"a@b.io"', b"plain a@b.io text", b"not json \xff", b"078-05-1120",
    b'{"a@b.io": 1}', b"[4111111111111111]", b'{"ssn": "078-05-1120"}', b'{"x": "-----BEGIN', b'PRIVATE KEY-----"}',
    b"", b"\n"]) | st.none())


@FUZZ
@given(st.lists(BATCH_VALUES, max_size=30))
def test_a_batch_is_masked_as_its_values_are_one_by_one(values):
    # mask_values searches a list's values for detector matches all at once; a tuple goes value
    # by value: the answers must be the same, whatever the neighbours.
    for masks in (EVERYTHING, profile(detectors=["email", "payment_card", "pem_private_key"]),
                  profile(("$.card.number", "keep_last", {"n": 4}), ("$..ssn", "redact"), detectors=["email"]),
                  profile(("$.note", "redact"), detectors=["us_ssn"], on_unmaskable="redact")):
        assert masks.mask_values(values) == masks.mask_values(tuple(values))


def test_a_batch_that_mostly_matches_goes_value_by_value():
    masks = profile(detectors=["email"])
    hit, clean = b'{"to": "a@b.io"}', b'{"to": "nobody"}'
    values = [hit] * 9 + [clean, hit, clean, b'{"to": "c@d.io"}']
    masked, failures = masks.mask_values(values)
    assert failures == [] and (masked, failures) == masks.mask_values(tuple(values))
    assert [value == clean for value in masked] == [False] * 9 + [True, False, True, False]
