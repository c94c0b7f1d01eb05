"""`brokerguard rules ...`: test, evaluate and check a rules directory from a shell or CI.

    rules test DIR...    run the tests beside the rules (exit 0 all pass, 1 failures, 2 errors)
    rules eval --dir DIR --input FILE|-   decide one input and print the decision
    rules check DIR      load the rules and report every problem (exit 1 if any)

Handlers print and return the exit code; the top-level command adds this group with `add_parser`.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path
from typing import TextIO

from brokerguard.policy import loader, testing
from brokerguard.policy.engine import PolicyEngine
from brokerguard.policy.inputs import read_input
from brokerguard.policy.problems import Problem, RulesError
from brokerguard.policy.source import Reader

OK, FAILED, ERROR = 0, 1, 2


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add `rules` and its subcommands. The returned parser's `_bg_commands` is where other parts
    add subcommands of their own (`rules reload` belongs to the running gateway)."""
    rules = subparsers.add_parser("rules", help="test, evaluate and check rules",
                                  description="Test, evaluate and check a rules directory.")
    commands = rules.add_subparsers(dest="rules_command", required=True, metavar="COMMAND")
    rules._bg_commands = commands  # type: ignore[attr-defined]

    test = commands.add_parser("test", help="run the *_test.yaml files beside the rules, like `opa test`",
                               description="Run the tests beside the rules. Exit 0 when all pass, 1 when "
                                           "some fail, 2 when rules or tests cannot be read.")
    test.add_argument("dirs", nargs="+", metavar="DIR", help="rules directory with its *_test.yaml files")
    test.add_argument("--format", choices=["text", "json"], default="text")
    test.add_argument("--run", metavar="REGEX", help="run only tests whose 'file: name' this finds")
    test.add_argument("--fail-on-empty", action="store_true", help="exit 1 when no test ran")
    test.add_argument("--coverage", action="store_true", help="report rules no test's input matched")
    test.add_argument("-v", "--verbose", action="store_true", help="list passing tests too")
    test.set_defaults(handler=run_tests)

    evaluate = commands.add_parser("eval", help="decide one input, like `opa eval`",
                                   description="Decide one input (a test's `input`, in YAML or JSON) and "
                                               "print the decision.")
    evaluate.add_argument("--dir", required=True, help="rules directory")
    evaluate.add_argument("--input", required=True, metavar="FILE|-", help="the input; - reads stdin")
    evaluate.add_argument("--explain", choices=["fails", "full"],
                          help="also list the rules that did not match and why (fails), or every rule (full)")
    evaluate.add_argument("--format", choices=["text", "json"], default="text")
    evaluate.set_defaults(handler=run_eval)

    check = commands.add_parser("check", help="report every problem in a rules directory",
                                description="Load a rules directory and report every problem as "
                                            "file:line:col: message. Exit 1 if there is any.")
    check.add_argument("dir", metavar="DIR")
    check.add_argument("--format", choices=["text", "json"], default="text")
    check.set_defaults(handler=run_check)
    return rules


def run_tests(args: argparse.Namespace, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    pattern = None
    if args.run:
        try:
            pattern = re.compile(args.run)
        except re.error as err:
            print(f"--run: not a regular expression: {err}", file=sys.stderr)
            return ERROR
    reports = [testing.run(directory, pattern) for directory in args.dirs]
    if args.format == "json":
        print(testing.render_json(reports, coverage=args.coverage), file=out)
    else:
        print(testing.render_text(reports, verbose=args.verbose, coverage=args.coverage), file=out)
    if any(report.problems for report in reports):
        return ERROR
    if any(report.failed for report in reports):
        return FAILED
    if args.fail_on_empty and not any(report.results for report in reports):
        if args.format == "text":
            print("no tests ran", file=sys.stderr)
        return FAILED
    return OK


def run_eval(args: argparse.Namespace, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    try:
        rules = loader.load(args.dir)
    except RulesError as err:
        _print_problems(err.problems, sys.stderr)
        return ERROR
    name = "<stdin>" if args.input == "-" else args.input
    try:
        data = sys.stdin.buffer.read() if args.input == "-" else Path(args.input).read_bytes()
    except OSError as err:
        print(f"{name}: cannot read: {err.strerror}", file=sys.stderr)
        return ERROR
    reader = Reader(name)
    root = reader.compose(data)
    read = read_input(reader, root) if root is not None else None
    if read is None:
        _print_problems(reader.problems, sys.stderr)
        return ERROR
    request, now = read
    now = time.time() if now is None else now
    engine = PolicyEngine(rules)
    decision = engine.decide(request, now)
    explanations = engine.explain(request, now) if args.explain else []
    if args.explain == "fails":
        explanations = [item for item in explanations if not item.matched]
    if args.format == "json":
        document: dict[str, object] = testing.decision_json(decision)
        if args.explain:
            document["explain"] = [item._asdict() for item in explanations]
        print(json.dumps(document, indent=2, ensure_ascii=False), file=out)
        return OK
    print(f"decision:  {decision.verdict.value}", file=out)
    print(f"rule:      {decision.source}", file=out)
    print(f"reason:    {decision.reason}", file=out)
    print(f"cacheable: {'yes' if decision.cacheable else 'no (a time window took part)'}", file=out)
    if decision.obligations is not None:
        described = decision.obligations.describe()
        for key in ("mask", "validate"):
            if described[key]:
                print(f"{key + ':':<10} {', '.join(described[key])}", file=out)  # type: ignore[arg-type]
        for limit in described["limits"]:  # type: ignore[union-attr]
            rates = ", ".join(f"{k} {v}" for k, v in limit.items() if k != "rule")
            print(f"limit:     {rates} (by {limit['rule']})", file=out)
    if args.explain:
        print("rules:", file=out)
        for item in explanations:
            rule = engine.rule(item.file, item.rule)
            effect = "?" if rule is None else rule.verdict.value if rule.verdict is not None else "apply"
            mark = "match" if item.matched else "no   "
            why = f": {item.why_not}" if item.why_not else ""
            print(f"  {mark} {item.file}:{item.rule} ({effect}){why}", file=out)
    return OK


def run_check(args: argparse.Namespace, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    try:
        rules = loader.load(args.dir)
    except RulesError as err:
        if args.format == "json":
            print(json.dumps({"ok": False, "problems": [testing.problem_json(p) for p in err.problems],
                              "warnings": [testing.problem_json(p) for p in err.warnings]}, indent=2), file=out)
        else:
            _print_problems(err.problems, out)
            _print_problems(err.warnings, out, "warning: ")
        return FAILED
    count = sum(1 for _ in rules.rules())
    if args.format == "json":
        print(json.dumps({"ok": True, "problems": [], "warnings": [testing.problem_json(p) for p in rules.warnings],
                          "files": len(rules.files), "rules": count}, indent=2), file=out)
    else:
        _print_problems(rules.warnings, out, "warning: ")
        files = len(rules.files)
        print(f"{args.dir}: OK ({files} file{'s' * (files != 1)}, {count} rule{'s' * (count != 1)})", file=out)
    return OK


def _print_problems(problems: tuple[Problem, ...] | list[Problem], stream: TextIO, prefix: str = "") -> None:
    for problem in problems:
        if prefix:
            problem = Problem(problem.file, problem.line, problem.col, prefix + problem.message)
        print(problem, file=stream)
