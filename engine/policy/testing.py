"""`brokerguard rules test`: run the tests written beside the rules, the way `opa test` does.

A test file (`*_test.yaml` in the rules directory) lists inputs and the decision each must get:

    tests:
      - name: analyst reads card payments
        input: {identity: {subject: alice, groups: [analysts]}, action: consume,
                resource: {topic: payments.cards.eu}}
        expect: {decision: allow, rule: analysts-read}

Every test goes through a `PolicyEngine` built from the same directory. Results carry the time
`decide` took; coverage counts a rule as exercised when it matched at least one test's input,
whether or not a stronger rule made the decision.
"""

from __future__ import annotations

import json
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

from yaml.nodes import Node

from brokerguard.operations import AccessRequest, Decision, Verdict
from brokerguard.policy import loader
from brokerguard.policy.engine import DEFAULT_DENY, PolicyEngine
from brokerguard.policy.inputs import read_input
from brokerguard.policy.model import RuleSet
from brokerguard.policy.problems import Problem, RulesError
from brokerguard.policy.source import Reader, suggest

TEST_FILE_KEYS = ("tests",)
TEST_KEYS = ("name", "input", "expect")
EXPECT_KEYS = ("decision", "rule", "reason", "mask", "validate")
VERDICTS = {verdict.value: verdict for verdict in Verdict}


@dataclass(frozen=True, slots=True)
class Expectation:
    verdict: Verdict
    rule: str | None = None  # "file:rule" or "rule"
    reason: str | None = None  # a part of the reason
    mask: tuple[str, ...] | None = None  # the mask profiles applied, in any order; [] for none
    validate: tuple[str, ...] | None = None  # likewise the validations


@dataclass(frozen=True, slots=True)
class TestCase:
    __test__ = False  # not a pytest class, whatever its name
    file: str  # path of the test file
    line: int
    name: str
    request: AccessRequest
    now: float | None  # None: the clock
    expect: Expectation


@dataclass(frozen=True, slots=True)
class TestResult:
    __test__ = False
    case: TestCase
    decision: Decision
    duration_ns: int

    @property
    def passed(self) -> bool:
        return not self.mismatches

    @property
    def mismatches(self) -> list[str]:
        expect, decision = self.case.expect, self.decision
        out = []
        if decision.verdict is not expect.verdict:
            out.append("decision")
        if expect.rule is not None:
            actual = decision.source if ":" in expect.rule else decision.rule
            if actual != expect.rule:
                out.append("rule")
        if expect.reason is not None and expect.reason not in decision.reason:
            out.append("reason")
        obligations = decision.obligations
        if expect.mask is not None and set(expect.mask) != set(obligations.masks if obligations else ()):
            out.append("mask")
        if expect.validate is not None and set(expect.validate) != {
                v.name for v in (obligations.validations if obligations else ())}:
            out.append("validate")
        return out


@dataclass
class Report:
    """The outcome of one directory's tests."""

    directory: str
    rules: RuleSet | None = None
    results: list[TestResult] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)  # rules or test files that could not be used
    covered: set[tuple[str, str]] = field(default_factory=set)  # (file, rule) matched by some test

    @property
    def failed(self) -> list[TestResult]:
        return [result for result in self.results if not result.passed]

    def uncovered(self) -> dict[str, list[tuple[str, int]]]:
        """Per rules file, the (rule, line) pairs no test's input matched."""
        out: dict[str, list[tuple[str, int]]] = {}
        if self.rules is not None:
            for rules_file, rule in self.rules.rules():
                if (rules_file.name, rule.name) not in self.covered:
                    out.setdefault(rules_file.name, []).append((rule.name, rule.line))
        return out

    def rule_count(self) -> int:
        return sum(1 for _ in self.rules.rules()) if self.rules is not None else 0


def load_tests(path: str, data: bytes | str, rules: RuleSet | None = None) -> list[TestCase]:
    """The tests in one file; raise RulesError listing every problem in it. With `rules`, rule names
    in `expect` are checked to exist."""
    reader = Reader(path)
    cases = _read_tests(reader, data, rules)
    if reader.problems:
        raise RulesError(sorted(reader.problems, key=lambda problem: (problem.line, problem.col)))
    return cases


def _read_tests(reader: Reader, data: bytes | str, rules: RuleSet | None) -> list[TestCase]:
    root = reader.compose(data)
    if root is None:
        return []
    entries = reader.mapping(root, "a test file", TEST_FILE_KEYS)
    if entries is None:
        return []
    if "tests" not in entries:
        reader.error(root, "a test file needs `tests`, a list of tests")
        return []
    items = reader.sequence(entries["tests"][1], "`tests`")
    cases = []
    names: dict[str, int] = {}
    for item in items or ():
        case = _read_test(reader, item, rules, names)
        if case is not None:
            cases.append(case)
    return cases


def _read_test(reader: Reader, node: Node, rules: RuleSet | None, names: dict[str, int]) -> TestCase | None:
    entries = reader.mapping(node, "a test", TEST_KEYS)
    if entries is None:
        return None
    before = len(reader.problems)
    for key in TEST_KEYS:
        if key not in entries:
            reader.error(node, f"a test needs `{key}`")
    name = reader.text(entries["name"][1], "`name`") if "name" in entries else None
    if name is not None:
        if name in names:
            reader.error(entries["name"][1], f"test name `{name}` is already used at line {names[name]}")
        names[name] = entries["name"][1].start_mark.line + 1
    read = read_input(reader, entries["input"][1]) if "input" in entries else None
    expect = _read_expect(reader, entries["expect"][1], rules) if "expect" in entries else None
    if len(reader.problems) > before or name is None or read is None or expect is None:
        return None
    request, now = read
    return TestCase(reader.path, node.start_mark.line + 1, name, request, now, expect)


def _read_expect(reader: Reader, node: Node, rules: RuleSet | None) -> Expectation | None:
    entries = reader.mapping(node, "`expect`", EXPECT_KEYS)
    if entries is None:
        return None
    if "decision" not in entries:
        reader.error(node, f"`expect` needs `decision`: one of {', '.join(VERDICTS)}")
        return None
    value_node = entries["decision"][1]
    written = reader.text(value_node, "`expect.decision`")
    verdict = VERDICTS.get((written or "").lower())
    if written is not None and verdict is None:
        reader.error(value_node, f"unknown decision `{written}`{suggest(written.lower(), VERDICTS)}; "
                                 f"use {', '.join(VERDICTS)}")
    rule = None
    if "rule" in entries:
        rule_node = entries["rule"][1]
        rule = reader.text(rule_node, "`expect.rule`")
        if rule is not None and rules is not None:
            problem = _unknown_rule(rule, rules)
            if problem:
                reader.error(rule_node, problem)
    reason = reader.text(entries["reason"][1], "`expect.reason`") if "reason" in entries else None
    named: dict[str, tuple[str, ...] | None] = {"mask": None, "validate": None}
    for key in named:
        if key in entries:
            value = reader.value(entries[key][1], f"`expect.{key}`")
            if isinstance(value, str):
                value = [value]
            if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
                reader.error(entries[key][1], f"`expect.{key}` must be a name or a list of names ([] for none)")
            else:
                named[key] = tuple(value)
    if verdict is None:
        return None
    return Expectation(verdict, rule, reason, named["mask"], named["validate"])


def _unknown_rule(written: str, rules: RuleSet) -> str | None:
    if written == DEFAULT_DENY:
        return None
    file, _, name = written.rpartition(":")
    candidates = {(rules_file.name, rule.name) for rules_file, rule in rules.rules()}
    if file:
        if rules.file(file) is None:
            return f"no rules file `{file}` in {rules.directory or 'the rule set'}"
        if (file, name) not in candidates:
            return f"no rule `{name}` in {file}{suggest(name, [rule for f, rule in candidates if f == file])}"
        return None
    if not any(rule == name for _, rule in candidates):
        return f"no rule `{name}` in any rules file{suggest(name, [rule for _, rule in candidates])}"
    return None


def run(directory: str | os.PathLike[str], pattern: re.Pattern[str] | None = None) -> Report:
    """Run every test in `directory` (those whose "file: name" `pattern` finds, if given)."""
    report = Report(str(directory))
    try:
        report.rules = loader.load(directory)
    except RulesError as err:
        report.problems.extend(err.problems)
        return report
    engine = PolicyEngine(report.rules)
    for path in loader.test_paths(directory):
        try:
            cases = load_tests(str(path), path.read_bytes(), report.rules)
        except RulesError as err:
            report.problems.extend(err.problems)
            continue
        except OSError as err:
            report.problems.append(Problem(str(path), 0, 0, f"cannot read: {err.strerror}"))
            continue
        for case in cases:
            if pattern is not None and not pattern.search(f"{path.name}: {case.name}"):
                continue
            report.results.append(run_case(engine, case))
            for explanation in engine.explain(case.request, case.now):
                if explanation.matched:
                    report.covered.add((explanation.file, explanation.rule))
    return report


def run_case(engine: PolicyEngine, case: TestCase) -> TestResult:
    now = case.now if case.now is not None else time.time()
    engine.decide(case.request, now)  # once to warm the engine's memo, as the data path would be
    started = time.perf_counter_ns()
    decision = engine.decide(case.request, now)
    return TestResult(case, decision, time.perf_counter_ns() - started)


# -- output ----------------------------------------------------------------------------------


def duration(nanoseconds: int) -> str:
    if nanoseconds < 1_000_000:
        return f"{nanoseconds / 1000:.1f}µs"
    if nanoseconds < 1_000_000_000:
        return f"{nanoseconds / 1_000_000:.1f}ms"
    return f"{nanoseconds / 1_000_000_000:.2f}s"


def _expected_words(expect: Expectation) -> str:
    words = expect.verdict.value
    if expect.rule:
        words += f" by {expect.rule}"
    if expect.reason:
        words += f", reason containing {expect.reason!r}"
    for key in ("mask", "validate"):
        names = getattr(expect, key)
        if names is not None:
            words += f", {key} [{', '.join(names)}]"
    return words


def render_text(reports: list[Report], verbose: bool = False, coverage: bool = False) -> str:
    lines: list[str] = []
    several = len(reports) > 1
    for report in reports:
        if several:
            lines.append(f"{report.directory}:")
        for problem in report.problems:
            lines.append(str(problem))
        for result in report.results:
            case = result.case
            label = f"{Path(case.file).name}: {case.name}"
            if result.passed:
                if verbose:
                    lines.append(f"{label}: PASS ({duration(result.duration_ns)})")
                continue
            decision = result.decision
            lines.append(f"{label}: FAIL ({duration(result.duration_ns)})")
            lines.append(f"  at       {case.file}:{case.line}")
            lines.append(f"  expected {_expected_words(case.expect)}")
            lines.append(f"  actual   {decision.verdict.value} by {decision.source}: {decision.reason}")
            if decision.obligations is not None:
                described = decision.obligations.describe()
                lines.append(f"           mask [{', '.join(described['mask'])}], "  # type: ignore[arg-type]
                             f"validate [{', '.join(described['validate'])}]")  # type: ignore[arg-type]
        if coverage and report.rules is not None:
            total = report.rule_count()
            hit = total - sum(len(missed) for missed in report.uncovered().values())
            percent = 100.0 * hit / total if total else 100.0
            lines.append(f"coverage: {hit}/{total} rules ({percent:.1f}%)")
            for file, missed in report.uncovered().items():
                for rule, line in missed:
                    lines.append(f"  not covered: {file}:{rule} (line {line})")
    results = [result for report in reports for result in report.results]
    failed = sum(1 for result in results if not result.passed)
    problems = sum(len(report.problems) for report in reports)
    if results or not problems:
        if lines:
            lines.append("-" * 80)
        lines.append(f"PASS: {len(results) - failed}/{len(results)}")
        if failed:
            lines.append(f"FAIL: {failed}/{len(results)}")
    if problems:
        lines.append(f"ERROR: {problems} problem{'s' if problems != 1 else ''} in rules or test files")
    return "\n".join(lines)


def render_json(reports: list[Report], coverage: bool = False) -> str:
    tests = []
    for report in reports:
        for result in report.results:
            case, decision = result.case, result.decision
            tests.append({
                "file": case.file,
                "line": case.line,
                "name": case.name,
                "result": "pass" if result.passed else "fail",
                "duration_ns": result.duration_ns,
                "expected": {"decision": case.expect.verdict.value, "rule": case.expect.rule,
                             "reason": case.expect.reason},
                "actual": decision_json(decision),
            })
    out: dict[str, object] = {
        "tests": tests,
        "problems": [problem_json(problem) for report in reports for problem in report.problems],
        "summary": {"total": len(tests), "passed": sum(1 for test in tests if test["result"] == "pass"),
                    "failed": sum(1 for test in tests if test["result"] == "fail")},
    }
    if coverage:
        files = {}
        for report in reports:
            if report.rules is None:
                continue
            missed = report.uncovered()
            for rules_file in report.rules.files:
                not_covered = [rule for rule, _ in missed.get(rules_file.name, [])]
                files[rules_file.path] = {
                    "covered": [rule.name for rule in rules_file.rules if rule.name not in not_covered],
                    "not_covered": not_covered,
                }
        total = sum(len(entry["covered"]) + len(entry["not_covered"]) for entry in files.values())
        hit = sum(len(entry["covered"]) for entry in files.values())
        out["coverage"] = {"covered": hit, "total": total,
                           "percent": round(100.0 * hit / total, 1) if total else 100.0, "files": files}
    return json.dumps(out, indent=2, ensure_ascii=False)


def decision_json(decision: Decision) -> dict[str, object]:
    out: dict[str, object] = {"decision": decision.verdict.value, "file": decision.file, "rule": decision.rule,
                              "reason": decision.reason, "cacheable": decision.cacheable}
    if decision.obligations is not None:
        out["obligations"] = decision.obligations.describe()
    return out


def problem_json(problem: Problem) -> dict[str, object]:
    return {"file": problem.file, "line": problem.line, "col": problem.col, "message": problem.message}
