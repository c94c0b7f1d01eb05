"""`rules test`, `rules eval` and `rules check`: outputs and exit codes, through the handlers."""

import argparse
import io
import json
import re
import shutil
import textwrap
from pathlib import Path

import pytest

from brokerguard.operations import Verdict
from brokerguard.policy import RulesError, cli, load, testing

RULES_DIR = Path(__file__).resolve().parents[2] / "rules"


def command(*argv: str) -> argparse.Namespace:
    top = argparse.ArgumentParser(prog="brokerguard")
    cli.add_parser(top.add_subparsers(dest="command"))
    return top.parse_args(["rules", *argv])


def run(capsys, *argv: str) -> tuple[int, str, str]:
    args = command(*argv)
    code = args.handler(args)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture
def rules(tmp_path) -> Path:
    """A copy of the shipped rules to add files to."""
    return Path(shutil.copytree(RULES_DIR, tmp_path / "rules"))


def write(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.write_text(textwrap.dedent(text))
    return path


def test_the_shipped_tests_pass_and_cover_every_rule(capsys):
    code, out, _ = run(capsys, "test", str(RULES_DIR), "--coverage")
    assert code == 0
    assert "coverage: 17/17 rules (100.0%)" in out
    assert re.search(r"^PASS: (\d+)/\1$", out, re.M)


def test_verbose_lists_each_test_with_its_time(capsys):
    code, out, _ = run(capsys, "test", str(RULES_DIR), "-v")
    assert code == 0
    assert re.search(r"^payments_test\.yaml: analyst reads card payments: PASS \(\d+\.\d(µs|ms)\)$", out, re.M)


def test_a_failure_shows_the_decision_actually_made(capsys, rules):
    write(rules, "extra_test.yaml", """\
        tests:
          - name: analysts produce
            input: {identity: {subject: alice, groups: [analysts]}, action: produce,
                    resource: {topic: payments.cards}}
            expect: {decision: allow, rule: payments.yaml:analysts-read}
        """)
    code, out, _ = run(capsys, "test", str(rules))
    assert code == 1
    lines = out.splitlines()
    first = lines.index(next(line for line in lines if line.startswith("extra_test.yaml: analysts produce: FAIL (")))
    assert lines[first + 1:first + 4] == [
        f"  at       {rules}/extra_test.yaml:2",
        "  expected allow by payments.yaml:analysts-read",
        "  actual   deny by default-deny: no rule allows produce on topic payments.cards for alice",
    ]
    assert re.search(r"^PASS: (\d+)/(\d+)\nFAIL: 1/\2$", out, re.M)


def test_json_output(capsys, rules):
    write(rules, "extra_test.yaml", """\
        tests:
          - name: wrong
            input: {identity: {subject: x}, action: describe, resource: {cluster: kafka-cluster}}
            expect: {decision: deny}
        """)
    code, out, _ = run(capsys, "test", str(rules), "--format", "json", "--coverage")
    assert code == 1
    document = json.loads(out)
    wrong = [test for test in document["tests"] if test["name"] == "wrong"][0]
    assert wrong["file"] == str(rules / "extra_test.yaml") and wrong["line"] == 2 and wrong["result"] == "fail"
    assert wrong["expected"] == {"decision": "deny", "rule": None, "reason": None}
    assert wrong["actual"] == {"decision": "allow", "file": "platform.yaml", "rule": "everyone-describes-cluster",
                               "reason": wrong["actual"]["reason"], "cacheable": True}
    assert document["summary"]["failed"] == 1
    assert document["coverage"]["percent"] == 100.0
    assert document["coverage"]["files"][str(rules / "payments.yaml")]["not_covered"] == []


def test_run_selects_tests_and_fail_on_empty(capsys):
    code, out, _ = run(capsys, "test", str(RULES_DIR), "--run", "svc|payments service", "-v")
    assert code == 0 and "PASS: 7/7" in out
    code, out, err = run(capsys, "test", str(RULES_DIR), "--run", "no such test")
    assert code == 0 and "PASS: 0/0" in out
    code, _, err = run(capsys, "test", str(RULES_DIR), "--run", "no such test", "--fail-on-empty")
    assert code == 1 and "no tests ran" in err
    code, _, err = run(capsys, "test", str(RULES_DIR), "--run", "(")
    assert code == 2 and "--run" in err


def test_coverage_names_rules_no_test_exercised(capsys, rules):
    write(rules, "extra.yaml", """\
        resources: {topics: ["extra.*"]}
        rules:
          - {name: lonely, allow: [produce], who: {subjects: [nobody]}}
        """)
    code, out, _ = run(capsys, "test", str(rules), "--coverage")
    assert code == 0
    assert "coverage: 17/18 rules (94.4%)" in out and "  not covered: extra.yaml:lonely (line 3)" in out


def test_test_files_with_mistakes_are_errors_with_locations(capsys, rules):
    write(rules, "broken_test.yaml", """\
        tests:
          - name: one
            input:
              identity: {subject: alice, groups: analysts}
              action: publish
              resource: {topic: a, group: b}
              time: "2026-01-01T10:00"
            expect: {decision: alow, rule: nope}
          - name: one
            input: {identity: {subject: a}, action: produce, resource: {group: g}}
            expect: {decision: deny, rule: "payments.yaml:no-such", reason: ~}
          - {name: two}
        """)
    code, out, _ = run(capsys, "test", str(rules))
    assert code == 2
    where = str(rules / "broken_test.yaml")
    for expected in [
        ":4:42: `identity.groups` must be a list: write [analysts]",
        ":5:15: unknown action `publish`",
        ":6:17: `resource` needs exactly one of `topic`, `group`, `transactional_id` or `cluster`",
        ":7:13: `2026-01-01T10:00` has no zone: end it with Z (UTC) or an offset such as +01:00",
        ":8:24: unknown decision `alow` (did you mean `allow`?)",
        ":8:36: no rule `nope` in any rules file",
        ":9:11: test name `one` is already used at line 2",
        ":10:45: `produce` is not an action on groups",
        ":11:36: no rule `no-such` in payments.yaml",
        ":11:69: `expect.reason` is empty",
        ":12:5: a test needs `input`",
    ]:
        assert where + expected in out, expected
    assert "ERROR: " in out


def test_broken_rules_are_errors(capsys, rules):
    write(rules, "bad.yaml", "resources: {topics: [a]}\nrules: [{name: x, allow: [fly]}]\n")
    code, out, _ = run(capsys, "test", str(rules))
    assert code == 2 and f"{rules}/bad.yaml:2:27: unknown action `fly`" in out


def test_several_directories(capsys, rules):
    code, out, _ = run(capsys, "test", str(RULES_DIR), str(rules))
    assert code == 0 and f"{rules}:" in out


def test_load_tests_checks_expectations_against_the_rules():
    rule_set = load(RULES_DIR)
    cases = testing.load_tests("t_test.yaml", textwrap.dedent("""\
        tests:
          - name: t
            input:
              identity: {subject: a, claims: {roles: [x], level: 3}, mechanism: mtls}
              action: consume
              resource: {transactional_id: x}
              client: {address: "::1", client_id: c, software: s}
              time: 1767607200
            expect: {decision: APPROVAL_REQUIRED, rule: default-deny}
        """).replace("consume", "describe"), rule_set)
    case = cases[0]
    assert case.request.identity.mechanism == "mTLS" and case.request.identity.claims == {"roles": ["x"], "level": 3}
    assert case.request.client == ("::1", "c", "s") and case.now == 1767607200.0
    assert case.expect.verdict is Verdict.APPROVAL_REQUIRED
    with pytest.raises(RulesError):
        testing.load_tests("t_test.yaml", "tests: [{name: t}]")


# -- eval ------------------------------------------------------------------------------------

SATURDAY_CREATE = """\
identity: {subject: dev, groups: [developers]}
action: create
resource: {topic: sandbox.x}
time: "2026-01-10T10:00:00Z"
"""


def test_eval_prints_the_decision(capsys, tmp_path):
    path = write(tmp_path, "in.yaml", SATURDAY_CREATE)
    code, out, _ = run(capsys, "eval", "--dir", str(RULES_DIR), "--input", str(path))
    assert code == 0
    assert out.splitlines() == [
        "decision:  approval_required",
        "rule:      sandbox.yaml:weekend-creates-need-approval",
        "reason:    new sandbox topics at weekends need a platform admin's approval",
        "cacheable: no (a time window took part)",
    ]


def test_eval_explains(capsys, tmp_path):
    path = write(tmp_path, "in.yaml", SATURDAY_CREATE)
    code, out, _ = run(capsys, "eval", "--dir", str(RULES_DIR), "--input", str(path), "--explain", "full")
    assert code == 0
    assert "  match sandbox.yaml:developers-build (allow)" in out
    assert ("  no    platform.yaml:admins-manage-topics (allow): who: groups (developers) include none of "
            "platform-admins") in out
    code, out, _ = run(capsys, "eval", "--dir", str(RULES_DIR), "--input", str(path), "--explain", "fails")
    assert "match" not in out.split("rules:")[1]


def test_eval_reads_json_from_stdin(capsys, monkeypatch):
    text = json.dumps({"identity": {"subject": "svc-payments"}, "action": "produce",
                       "resource": {"topic": "payments.cards"}}, indent="\t")
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(text.encode())))
    code, out, _ = run(capsys, "eval", "--dir", str(RULES_DIR), "--input", "-", "--format", "json",
                       "--explain", "fails")
    assert code == 0
    document = json.loads(out)
    assert (document["decision"], document["file"], document["rule"], document["cacheable"]) == \
        ("allow", "payments.yaml", "payments-service", True)
    assert len(document["explain"]) == 16 and set(document["explain"][0]) == {"file", "rule", "matched", "why_not"}


def test_eval_errors(capsys, tmp_path):
    path = write(tmp_path, "in.yaml", "identity: {subject: a}\naction: fly\nresource: {topic: t}\n")
    code, _, err = run(capsys, "eval", "--dir", str(RULES_DIR), "--input", str(path))
    assert code == 2 and f"{path}:2:9: unknown action `fly`" in err
    code, _, err = run(capsys, "eval", "--dir", str(RULES_DIR), "--input", str(tmp_path / "missing.yaml"))
    assert code == 2 and "cannot read" in err
    empty = tmp_path / "empty"
    empty.mkdir()
    code, _, err = run(capsys, "eval", "--dir", str(empty), "--input", str(path))
    assert code == 2 and "no rules files" in err


# -- check -----------------------------------------------------------------------------------


def test_check(capsys, rules):
    code, out, _ = run(capsys, "check", str(rules))
    assert (code, out) == (0, f"{rules}: OK (4 files, 17 rules)\n")
    write(rules, "warn.yaml", "resources: {topics: ['w.*']}\nrules: [{name: a, allow: [consume], topics: ['x.*']}]\n")
    code, out, _ = run(capsys, "check", str(rules))
    assert code == 0 and f"{rules}/warn.yaml:2:46: warning: `x.*` matches none of the topics" in out
    write(rules, "bad.yaml", "resources: {topics: [a]}\nrules: [{name: x, allow: [fly]}]\n")
    code, out, _ = run(capsys, "check", str(rules))
    assert code == 1 and out.startswith(f"{rules}/bad.yaml:2:27: unknown action `fly`")
    code, out, _ = run(capsys, "check", str(rules), "--format", "json")
    document = json.loads(out)
    assert code == 1 and document["ok"] is False
    assert document["problems"][0]["line"] == 2 and document["problems"][0]["col"] == 27
    assert document["warnings"][0]["file"] == str(rules / "warn.yaml")


@pytest.mark.parametrize(
    "claims, message",
    [
        ("&c {a: [*c]}", "nested deeper than 32 levels"),
        ("{a: " + "[" * 500 + "]" * 500 + "}", "nested deeper than 32 levels"),
        ("{a: &x [&y [&z [1, 2, 3, 4, 5, 6, 7, 8, 9], *z, *z, *z, *z, *z, *z, *z, *z, *z], *y, *y, *y, *y, *y, *y, *y,"
         " *y, *y, *y, *y], b: [*x, *x, *x, *x, *x, *x, *x, *x, *x, *x, *x, *x]}", "more than 10000 values"),
    ],
)
def test_hostile_aliases_in_inputs_are_refused_with_a_place(claims, message):
    text = ("tests: [{name: t, input: {identity: {subject: a, claims: " + claims + "}, action: produce, "
            "resource: {topic: x}}, expect: {decision: deny}}]")
    with pytest.raises(RulesError) as caught:
        testing.load_tests("t_test.yaml", text)
    assert caught.value.problems[0].line == 1 and message in caught.value.problems[0].message
