"""Detectors: each built-in finds what it should and leaves near misses alone; the registry finds
built-ins and third-party detectors by entry point and refuses what RE2 cannot compile.

hypothesis prints the failing example and the seed to replay it (`--hypothesis-seed`).
"""

import base64
import importlib.metadata
import json
import textwrap

import pytest
import re2
from hypothesis import given
from hypothesis import strategies as st

from fuzzing import random_inputs

from brokerguard.content import Detector, DetectorError, DetectorSet, PathSet, Scanner, builtin_detectors, compile_profile
from brokerguard.plugins.detectors import builtin
from brokerguard.plugins.detectors.builtin import iban_checks, luhn_checks

BUILTINS = ("aws_access_key", "email", "iban", "ipv4", "ipv6", "jwt", "payment_card", "pem_private_key",
            "phone", "us_ssn")
DETECTORS = DetectorSet.load()


def found(name, text):
    """The texts detector `name` matches (and confirms) in `text`."""
    hits = []

    def record(matched):
        hits.append(matched.decode())
        return b"#"

    Scanner([(DETECTORS.get(name), record)]).scan(text.encode())
    return hits


def with_luhn_digit(body):
    for check in "0123456789":
        if luhn_checks(body + check):
            return body + check
    raise AssertionError


def jwt(header, payload=None, signature="c2lnbmF0dXJl"):
    def part(value):
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()
    return f"{part(header)}.{part(payload or {'sub': 'alice'})}.{signature}"


# -- the registry ------------------------------------------------------------------------------


def test_builtins_are_registered_by_entry_point():
    assert DETECTORS.names == BUILTINS
    for name in BUILTINS:
        detector = DETECTORS.get(name)
        assert detector.name == name and detector.strategy == "redact" and detector.description


def test_the_installed_detectors_are_loaded_once():
    assert builtin_detectors() is builtin_detectors()
    assert builtin_detectors().names == BUILTINS


def test_unknown_detector_names_the_known_ones():
    with pytest.raises(DetectorError) as caught:
        DETECTORS.get("emial")
    message = str(caught.value)
    assert "no detector named `emial`" in message and "did you mean `email`" in message
    assert "payment_card" in message and "us_ssn" in message


def test_fallback_to_backtracking_re_is_disabled():
    with pytest.raises(Exception, match="Backreferences"):
        re2.compile(r"(a)\1")


def _fake_entry_points(monkeypatch, entries):
    real = importlib.metadata.entry_points

    def entry_points(**params):
        if params.get("group") == "brokerguard.detectors":
            return [importlib.metadata.EntryPoint(name, value, "brokerguard.detectors") for name, value in entries]
        return real(**params)

    monkeypatch.setattr(importlib.metadata, "entry_points", entry_points)


def _load_problems() -> list[str]:
    """What DetectorSet.load() refuses the installed plugins for, one problem a line."""
    with pytest.raises(DetectorError) as caught:
        DetectorSet.load()
    return str(caught.value).splitlines()


def _plugin_package(tmp_path, monkeypatch, name, source):
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(source))
    monkeypatch.syspath_prepend(str(tmp_path))


def test_third_party_detector_is_found_like_a_builtin(tmp_path, monkeypatch):
    _plugin_package(tmp_path, monkeypatch, "acme_detectors", """
        from brokerguard.content import Detector
        EmployeeId = Detector("employee_id", r"\\bEMP-[0-9]{6}\\b", validate=lambda text: text != "EMP-000000")
    """)
    _fake_entry_points(monkeypatch, [("email", "brokerguard.plugins.detectors.builtin:Email"),
                                     ("employee_id", "acme_detectors:EmployeeId")])
    detectors = DetectorSet.load()
    assert detectors.names == ("email", "employee_id")
    scanner = Scanner([(detectors.get("employee_id"), lambda matched: b"[id]")])
    assert scanner.scan(b"EMP-123456 and EMP-000000") == b"[id] and EMP-000000"


def test_third_party_pattern_re2_cannot_compile_is_refused_naming_it(tmp_path, monkeypatch):
    _plugin_package(tmp_path, monkeypatch, "acme_backref", """
        from brokerguard.content import Detector
        Doubled = Detector("doubled_word", r"\\b(\\w+) \\1\\b")
    """)
    _fake_entry_points(monkeypatch, [("doubled_word", "acme_backref:Doubled")])
    message = "\n".join(_load_problems())
    assert "doubled_word" in message and "acme_backref:Doubled" in message
    assert "RE2 cannot compile" in message and "Backreferences" in message


def test_every_broken_plugin_is_listed(tmp_path, monkeypatch):
    _plugin_package(tmp_path, monkeypatch, "acme_misc", """
        from brokerguard.content import Detector
        Named = Detector("other_name", r"x[0-9]+")
        NotOne = "a pattern"
    """)
    _fake_entry_points(monkeypatch, [("named", "acme_misc:Named"), ("not_one", "acme_misc:NotOne"),
                                     ("missing", "acme_nowhere:Thing"),
                                     ("email", "brokerguard.plugins.detectors.builtin:Email"),
                                     ("email", "acme_misc:Named")])
    lines = _load_problems()
    assert len(lines) == 4
    assert "calls itself `other_name`" in lines[0]
    assert "is str, not a brokerguard.content.Detector" in lines[1]
    assert "failed to load: ModuleNotFoundError" in lines[2]
    assert "two detectors are registered as `email`" in lines[3]


def test_the_same_entry_point_seen_twice_is_one_detector(monkeypatch):
    entry = ("email", "brokerguard.plugins.detectors.builtin:Email")
    _fake_entry_points(monkeypatch, [entry, entry])
    assert DetectorSet.load().names == ("email",)


def test_third_party_path_set_is_found_like_a_detector(tmp_path, monkeypatch):
    _plugin_package(tmp_path, monkeypatch, "acme_fields", """
        from brokerguard.content import PathSet
        Customer = PathSet("acme_customer", [{"path": "$.customer.tax_id", "strategy": "redact"},
                                             {"path": "$..iban", "strategy": "keep_last", "n": 4}])
    """)
    _fake_entry_points(monkeypatch, [("email", "brokerguard.plugins.detectors.builtin:Email"),
                                     ("acme_customer", "acme_fields:Customer")])
    plugins = DetectorSet.load()
    assert (plugins.names, plugins.path_set_names) == (("email",), ("acme_customer",))
    profile = compile_profile("p", {"paths": ["acme_customer"], "detectors": ["email"]}, detectors=plugins,
                              hash_key=None)
    [masked], _ = profile.mask_values([b'{"customer":{"tax_id":"T-1","mail":"a@b.io"},"pay":[{"iban":"DE0012345"}]}'])
    assert masked == b'{"customer":{"tax_id":"[REDACTED]","mail":"[REDACTED:email]"},"pay":[{"iban":"*****2345"}]}'


def test_broken_path_set_plugins_are_listed(tmp_path, monkeypatch):
    _plugin_package(tmp_path, monkeypatch, "acme_bad_fields", """
        from brokerguard.content import PathSet
        Renamed = PathSet("other_name", [{"path": "$.a", "strategy": "null"}])
    """)
    (tmp_path / "acme_import_time.py").write_text(
        "from brokerguard.content import PathSet\nBad = PathSet('bad', [{'path': '$.a', 'strategy': 'erase'}])\n")
    _fake_entry_points(monkeypatch, [("renamed", "acme_bad_fields:Renamed"), ("bad", "acme_import_time:Bad"),
                                     ("credentials", "brokerguard.plugins.detectors.pathsets:Credentials")])
    lines = _load_problems()
    assert len(lines) == 2
    assert "calls itself `other_name`" in lines[0]
    assert lines[1].startswith("detector plugin `bad` (acme_import_time:Bad) is refused: path set `bad`: "
                               "$.fields[0].strategy: unknown strategy")


@pytest.mark.parametrize("arguments, problem", [
    ({"name": "Bad-Name", "fields": [{"path": "$.a", "strategy": "null"}]}, "lowercase letters"),
    ({"name": "empty", "fields": []}, "non-empty list"),
    ({"name": "one", "fields": {"path": "$.a", "strategy": "null"}}, "non-empty list"),
    ({"name": "nopath", "fields": [{"strategy": "null"}]}, "$.fields[0]: this field rule has no `path`"),
    ({"name": "badpath", "fields": [{"path": "a.b", "strategy": "null"}]}, "$.fields[0].path: 'a.b' is not a path"),
    ({"name": "keep", "fields": [{"path": "$.a", "strategy": "keep_last"}]}, "needs `n`"),
    ({"name": "whole", "fields": [{"path": "$", "strategy": "drop"}]}, "cannot remove the whole value"),
    ({"name": "stray", "fields": [{"path": "$.a", "strategy": "null", "why": 1}]}, "unknown key `why`"),
])
def test_a_path_set_is_checked_when_built(arguments, problem):
    with pytest.raises(DetectorError) as caught:
        PathSet(**arguments)
    assert problem in str(caught.value)
    assert str(caught.value).startswith("path set ")


@pytest.mark.parametrize("arguments, problem", [
    ({"name": "Bad-Name", "pattern": "x"}, "lowercase letters"),
    ({"name": "look", "pattern": "a(?=b)"}, "RE2 cannot compile"),
    ({"name": "class", "pattern": r"[\S]+"}, "RE2 cannot compile"),
    ({"name": "empty", "pattern": "a*"}, "matches empty text"),
    ({"name": "bytes", "pattern": r"\C+"}, "split UTF-8"),
    ({"name": "mask", "pattern": "x", "strategy": "drop"}, "default strategy `drop`"),
    ({"name": "count", "pattern": "x", "n": -1}, "whole number"),
    ({"name": "check", "pattern": "x", "validate": "luhn"}, "validate must be a function"),
])
def test_a_detector_is_checked_when_built(arguments, problem):
    with pytest.raises(DetectorError, match=problem):
        Detector(**arguments)


# -- scanning ----------------------------------------------------------------------------------


def test_one_pass_first_detector_at_a_position_wins():
    scanner = Scanner([(DETECTORS.get("payment_card"), lambda m: b"[card]"),
                       (DETECTORS.get("email"), lambda m: b"[email]"),
                       (DETECTORS.get("ipv4"), lambda m: b"[ip]")])
    text = "pay 4111 1111 1111 1111 from a@b.io at 10.0.0.1, not 4111 1111 1111 1112"
    assert scanner.scan(text.encode()) == b"pay [card] from [email] at [ip], not 4111 1111 1111 1112"
    assert scanner.scan(b"nothing here") is None


def test_a_match_its_validator_refuses_falls_to_the_next_detector_there():
    anything_digits = Detector("digits", r"\b[0-9]{16}\b")
    scanner = Scanner([(DETECTORS.get("payment_card"), lambda m: b"[card]"),
                       (anything_digits, lambda m: b"[digits]")])
    assert scanner.scan(b"4111111111111112 4111111111111111") == b"[digits] [card]"


def test_a_validator_that_raises_counts_as_a_match():
    def broken(text):
        raise RuntimeError("bug")

    scanner = Scanner([(Detector("token", r"tok_[a-z]+", validate=broken), lambda m: b"[t]")])
    assert scanner.scan(b"a tok_abc b") == b"a [t] b"


def test_non_ascii_text_keeps_its_characters_and_scans_linearly():
    scanner = Scanner([(DETECTORS.get("email"), lambda m: b"[e]")])
    text = ("é ünïcødé jane@example.com " * 20000).encode()
    out = scanner.scan(text)
    assert out.decode().count("[e]") == 20000 and "jane" not in out.decode()


def test_scan_text_for_str():
    scanner = Scanner([(DETECTORS.get("us_ssn"), lambda m: b"[ssn]")])
    assert scanner.scan_text("ssn 078-05-1120 ✓") == "ssn [ssn] ✓"
    assert scanner.scan_text("none") is None


# -- each built-in: true positives and near misses ---------------------------------------------

CARD_19 = with_luhn_digit("622126" + "0" * 12)


@pytest.mark.parametrize("text, expected", [
    ("card 4111 1111 1111 1111 ok", ["4111 1111 1111 1111"]),
    ("4111-1111-1111-1111", ["4111-1111-1111-1111"]),
    ('{"pan":"5555555555554444"}', ["5555555555554444"]),
    ("amex 378282246310005", ["378282246310005"]),
    ("13 digits 4222222222222", ["4222222222222"]),
    (f"19 digits {CARD_19}", [CARD_19]),
    ("4111111111111112", []),  # Luhn fails
    ("5555555555554445", []),
    ("411111111111", []),  # 12 digits
    ("41111111111111111111", []),  # 20 digits
    ("id4111111111111111", []),  # glued to a word
    ("expiry 12/29 cvv 123", []),
])
def test_payment_card(text, expected):
    assert found("payment_card", text) == expected


def test_luhn():
    assert luhn_checks("4111 1111 1111 1111") and luhn_checks("6011111111111117")
    assert not luhn_checks("6011111111111118") and not luhn_checks("1234") and not luhn_checks("abc")


@pytest.mark.parametrize("text, expected", [
    ("ssn 078-05-1120", ["078-05-1120"]),
    ("123-45-6789.", ["123-45-6789"]),
    ("000-12-3456", []), ("666-12-3456", []), ("900-12-3456", []), ("999-12-3456", []),
    ("123-00-4567", []), ("123-45-0000", []),
    ("123456789", []), ("1234-56-7890", []), ("123-456-7890", []),
])
def test_us_ssn(text, expected):
    assert found("us_ssn", text) == expected


@pytest.mark.parametrize("text, expected", [
    ("write to jane.doe+tag@example.co.uk today", ["jane.doe+tag@example.co.uk"]),
    ("<a_b@sub.example.org>", ["a_b@sub.example.org"]),
    ("mailto:X.Y@Example.COM.", ["X.Y@Example.COM"]),
    ("jane@localhost", []), ("@example.com", []), ("jane at example.com", []), ("foo@bar.c", []),
])
def test_email(text, expected):
    assert found("email", text) == expected


@pytest.mark.parametrize("text, expected", [
    ("call +1 415 555 2671", ["+1 415 555 2671"]),
    ("+44 20 7946 0958", ["+44 20 7946 0958"]),
    ("+44 (0)20 7946 0958", ["+44 (0)20 7946 0958"]),
    ("tel:+4915112345678", ["+4915112345678"]),
    ("(415) 555-2671", ["(415) 555-2671"]),
    ("415-555-2671", ["415-555-2671"]),
    ("415.555.2671", ["415.555.2671"]),
    ("1-415-555-2671", ["1-415-555-2671"]),
    ("01 23 45 67 89", ["01 23 45 67 89"]),
    ("07700 900123", ["07700 900123"]),
    ("020 7946 0958", ["020 7946 0958"]),
    ("ssn 123-45-6789", []), ("2024-01-15", []), ("12345678901", []), ("+12", []), ("+1 415", []),
    ("415 555 2671", []), ("order 4111111111111111", []), ("v1.2.3", []), ("115-555-2671", []),
])
def test_phone(text, expected):
    assert found("phone", text) == expected


@pytest.mark.parametrize("text, expected", [
    ("DE89 3704 0044 0532 0130 00", ["DE89 3704 0044 0532 0130 00"]),
    ("iban DE89370400440532013000.", ["DE89370400440532013000"]),
    ("GB82 WEST 1234 5698 7654 32", ["GB82 WEST 1234 5698 7654 32"]),
    ("NL91ABNA0417164300", ["NL91ABNA0417164300"]),
    ("FR14 2004 1010 0505 0001 3M02 606", ["FR14 2004 1010 0505 0001 3M02 606"]),
    ("BE68 5390 0754 7034 EUR", ["BE68 5390 0754 7034"]),  # a following word is not swallowed
    ("DE88 3704 0044 0532 0130 00", []),  # wrong check digits
    ("GB82 WEST 1234 5698 7654 33", []),
    ("DE89 3704 0044 0532 0130 0", []),  # too short for DE
    ("XX00 1234 5678 9012", []),
])
def test_iban(text, expected):
    assert found("iban", text) == expected


def test_iban_checks():
    assert iban_checks("de89 3704 0044 0532 0130 00")
    assert not iban_checks("DE89 3704 0044 0532 0130 01") and not iban_checks("DE89") and not iban_checks("DE89!!")


@pytest.mark.parametrize("text, expected", [
    ("from 10.0.0.1:8080", ["10.0.0.1"]),
    ("192.168.1.254 and 255.255.255.255", ["192.168.1.254", "255.255.255.255"]),
    ("256.1.1.1", []), ("1.2.3", []), ("999.999.999.999", []), ("1.2.3.4567", []), ("v1.2.3a", []),
])
def test_ipv4(text, expected):
    assert found("ipv4", text) == expected


@pytest.mark.parametrize("text, expected", [
    ("peer 2001:db8::1 up", ["2001:db8::1"]),
    ("fe80::1ff:fe23:4567:890a", ["fe80::1ff:fe23:4567:890a"]),
    ("2001:0db8:85a3:0000:0000:8a2e:0370:7334", ["2001:0db8:85a3:0000:0000:8a2e:0370:7334"]),
    ("mapped ::ffff:192.0.2.128", ["::ffff:192.0.2.128"]),
    ("[2001:db8::1]:443", ["2001:db8::1"]),
    ("at 12:30:45", []), ("std::vector", []), ("a::b", []), ("aa:bb:cc:dd:ee:ff", []), ("::1", []),
])
def test_ipv6(text, expected):
    assert found("ipv6", text) == expected


@pytest.mark.parametrize("text, expected", [
    ("key AKIAIOSFODNN7EXAMPLE", ["AKIAIOSFODNN7EXAMPLE"]),
    ("ASIAY34FZKBOKMUTVV7A,", ["ASIAY34FZKBOKMUTVV7A"]),
    ("AKIAIOSFODNN7EXAMPL", []), ("AKIAIOSFODNN7EXAMPLEX", []), ("akiaiosfodnn7example", []),
    ("ABIAIOSFODNN7EXAMPLE", []),
])
def test_aws_access_key(text, expected):
    assert found("aws_access_key", text) == expected


def test_jwt():
    token = jwt({"alg": "HS256", "typ": "JWT"})
    assert found("jwt", f"Authorization: Bearer {token}") == [token]
    unsigned = jwt({"alg": "none"}, signature="")
    assert found("jwt", f"t={unsigned} next") == [unsigned]
    encrypted = jwt({"alg": "dir", "enc": "A128GCM"}) + ".aXY.dGFn"
    assert found("jwt", encrypted) == [encrypted]


@pytest.mark.parametrize("text", [
    jwt({"not": "a header"}),  # no alg
    "eyJhbGciOiJIUzI1NiJ9",  # one segment
    "eyJ!!!.abc.def",
    "xeyJhbGciOiJIUzI1NiJ9.e30.sig",
])
def test_jwt_near_misses(text):
    assert found("jwt", text) == []


KEY_BODY = "MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7\nVJTUt9Us8cKjMzEfYyjiWA4R4/M2bS1GB4t7NXp98C3SC6dV\n"


@pytest.mark.parametrize("kind", ["", "RSA ", "EC ", "OPENSSH ", "ENCRYPTED "])
def test_pem_private_key(kind):
    block = f"-----BEGIN {kind}PRIVATE KEY-----\n{KEY_BODY}-----END {kind}PRIVATE KEY-----"
    assert found("pem_private_key", f"key:\n{block}\nafter") == [block]


def test_pem_private_key_cut_off_before_its_end_is_still_found():
    text = f"-----BEGIN PRIVATE KEY-----\n{KEY_BODY}"
    assert found("pem_private_key", text) == [text]


@pytest.mark.parametrize("text", [
    f"-----BEGIN PUBLIC KEY-----\n{KEY_BODY}-----END PUBLIC KEY-----",
    f"-----BEGIN CERTIFICATE-----\n{KEY_BODY}-----END CERTIFICATE-----",
    "BEGIN PRIVATE KEY",
])
def test_pem_near_misses(text):
    assert found("pem_private_key", text) == []


def test_every_builtin_is_linear_on_hostile_text():
    scanner = Scanner([(DETECTORS.get(name), lambda m: b"#") for name in BUILTINS])
    for hostile in (b"1 " * 200_000, b"a" * 400_000 + b"@", b"-----BEGIN PRIVATE KEY-----" * 10_000,
                    b"1:" * 200_000, b"DE89 " * 80_000, b"+1" * 200_000):
        scanner.scan(hostile)  # finishes (the test timeout would catch a quadratic blow-up)


def test_builtin_module_exports_the_registered_objects():
    for name in BUILTINS:
        entry = next(e for e in importlib.metadata.entry_points(group="brokerguard.detectors") if e.name == name)
        assert getattr(builtin, entry.value.split(":")[1]) is DETECTORS.get(name)


ALL = Scanner([(DETECTORS.get(name), lambda m: b"#") for name in BUILTINS])
PIECES = st.sampled_from(["4111 1111 1111 1111", "a@b.io", "078-05-1120", "+44 20 7946 0958", "DE89370400440532013000",
                          "10.0.0.1", "2001:db8::1", "AKIAIOSFODNN7EXAMPLE", "-----BEGIN PRIVATE KEY-----", "::",
                          "-", " ", "é", "\n", "0", "eyJ", "."])


@random_inputs(300)
@given(st.lists(PIECES | st.text(max_size=8), max_size=12).map("".join))
def test_random_text_never_raises(text):
    out = ALL.scan(text.encode())
    assert out is None or isinstance(out.decode(), str)
    found = ALL.first(text.encode())
    assert (found is None) == (out is None)
