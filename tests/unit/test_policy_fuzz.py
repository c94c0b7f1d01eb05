"""Random rule sets, requests and YAML: nothing crashes, deny precedence holds, every problem has a place.

hypothesis prints the failing example and the seed to replay it (`--hypothesis-seed`).
"""

import functools
import itertools

import yaml
from hypothesis import given
from hypothesis import strategies as st

from fuzzing import random_inputs

from brokerguard.identity import Identity
from brokerguard.operations import ACTIONS, AccessRequest, Client, Resource
from brokerguard.policy import PolicyEngine, RuleSet, RulesError, parse_files, testing
from brokerguard.policy.globs import compile_glob, overlaps
from brokerguard.policy.inputs import read_input
from brokerguard.policy.model import PRECEDENCE
from brokerguard.policy.source import Reader

FUZZ = random_inputs(200)
KIND_KEYS = {"topic": "topics", "group": "groups", "transactional_id": "transactional_ids"}
NAMES = st.text(alphabet="ab.", min_size=1, max_size=4)
GLOBS = st.text(alphabet="ab.*?", min_size=1, max_size=4)
SUBJECTS = st.sampled_from(["alice", "bob", "svc-a", "svc-b"])
GROUPS = st.sampled_from(["red", "blue", "green"])
MECHANISMS = ["OAUTHBEARER", "SCRAM-SHA-512", "PLAIN", "mTLS"]
ADDRESSES = ["10.0.0.1", "10.1.0.1", "192.0.2.7", "::1", "2001:db8::9"]
# 2025-12-29 (a Monday) to 2026-08-01: covers every weekday and both sides of a DST change.
NOW = st.floats(min_value=1_766_966_400, max_value=1_785_542_400, allow_nan=False)


@st.composite
def identity_matchers(draw):
    matcher = {}
    if draw(st.booleans()):
        matcher["subjects"] = draw(st.lists(st.sampled_from(["alice", "bob", "svc-*", "*"]), min_size=1, max_size=2))
    if draw(st.booleans()):
        matcher["groups"] = draw(st.lists(st.sampled_from(["red", "blue", "gr*"]), min_size=1, max_size=2))
    if draw(st.booleans()):
        matcher["claims"] = {"tier": draw(st.sampled_from(["gold", ["gold", "silver"], 1]))}
    if draw(st.booleans()):
        matcher["mechanisms"] = draw(st.lists(st.sampled_from(MECHANISMS), min_size=1, max_size=2))
    return matcher or {"subjects": ["*"]}


@st.composite
def windows(draw):
    window = {}
    if draw(st.booleans()):
        window["days"] = draw(st.lists(st.sampled_from(["mon", "tue", "sat", "sun"]), min_size=1, max_size=3))
    if draw(st.booleans()) or not window:
        start, end = draw(st.tuples(st.integers(0, 23), st.integers(1, 24)).filter(lambda pair: pair[0] != pair[1]))
        window["hours"] = f"{start:02d}:00-{end:02d}:00"
    window["timezone"] = draw(st.sampled_from(["UTC", "Europe/Berlin", "America/New_York"]))
    return window


@st.composite
def rules_files(draw, index):
    kinds = draw(st.lists(st.sampled_from(["topic", "group", "transactional_id", "cluster"]), min_size=1,
                          max_size=4, unique=True))
    resources = {KIND_KEYS[kind]: draw(st.lists(GLOBS, min_size=1, max_size=3)) for kind in kinds if kind != "cluster"}
    if "cluster" in kinds:
        resources["cluster"] = True
    rules = []
    for number in range(draw(st.integers(0, 5))):
        rule = {"name": f"r{number}"}
        rule_kinds = kinds
        if draw(st.booleans()):
            rule_kinds = draw(st.lists(st.sampled_from(kinds), min_size=1, max_size=len(kinds), unique=True))
            for kind in rule_kinds:
                if kind == "cluster":
                    rule["cluster"] = True
                else:
                    rule[KIND_KEYS[kind]] = draw(st.lists(GLOBS, min_size=1, max_size=2))
        possible = sorted(set().union(*(ACTIONS[kind] for kind in rule_kinds)))
        actions = ["*"] if draw(st.booleans()) else draw(st.lists(st.sampled_from(possible), min_size=1, max_size=4))
        rule[draw(st.sampled_from(["allow", "deny", "require_approval"]))] = actions
        if draw(st.booleans()):
            rule["who"] = draw(identity_matchers())
        if draw(st.integers(0, 3)) == 0:
            rule["except"] = draw(identity_matchers())
        if draw(st.integers(0, 3)) == 0:
            rule["client"] = {"addresses": draw(st.lists(st.sampled_from(["10.0.0.0/8", "::1/128", "192.0.2.0/24"]),
                                                         min_size=1, max_size=2))}
        if draw(st.integers(0, 3)) == 0:
            rule["when"] = draw(windows())
        rules.append(rule)
    return (f"r/f{index}.yaml", yaml.safe_dump({"resources": resources, "rules": rules}))


@st.composite
def rule_sets(draw):
    return [draw(rules_files(index)) for index in range(draw(st.integers(1, 4)))]


@st.composite
def requests(draw):
    identity = Identity(draw(SUBJECTS), draw(st.sampled_from(MECHANISMS)), frozenset(draw(st.lists(GROUPS, max_size=2))),
                        {"tier": draw(st.sampled_from(["gold", "bronze", 1, ["silver"], {"x": 1}]))})
    kind = draw(st.sampled_from(["topic", "group", "transactional_id", "cluster"]))
    name = "kafka-cluster" if kind == "cluster" else draw(NAMES)
    action = draw(st.sampled_from(sorted(ACTIONS[kind]) + ["teleport"]))
    return AccessRequest(identity, action, Resource(kind, name), Client(draw(st.sampled_from(ADDRESSES))))


@FUZZ
@given(sources=rule_sets(), batch=st.lists(st.tuples(requests(), NOW), min_size=1, max_size=10))
def test_decisions_agree_with_the_slow_explanation(sources, batch):
    rules = parse_files(sources)
    engine = PolicyEngine(rules)
    by_name = {(rule.file, rule.name): rule for _, rule in rules.rules()}
    windowed = any(rule.when is not None for rule in by_name.values())
    for request, now in batch:
        decision = engine.decide(request, now)
        matched = [by_name[(item.file, item.rule)] for item in engine.explain(request, now) if item.matched]
        if not matched:
            assert (decision.file, decision.rule) == ("", "default-deny")
            assert decision.verdict.value == "deny"
        else:
            strongest = min(matched, key=lambda rule: PRECEDENCE[rule.verdict])  # first of the strongest
            assert (decision.file, decision.rule, decision.verdict) == (strongest.file, strongest.name,
                                                                        strongest.verdict)
            if any(rule.verdict.value == "deny" for rule in matched):
                assert decision.verdict.value == "deny"
        assert decision.reason
        if not windowed:
            assert decision.cacheable


def _assert_located(error: RulesError, path: str) -> None:
    assert error.problems
    for problem in error.problems:
        assert problem.file == path and problem.line >= 1 and problem.col >= 1 and problem.message


@FUZZ
@given(st.one_of(st.text(max_size=300), st.binary(max_size=300)))
def test_any_text_gives_rules_or_located_problems(data):
    try:
        result = parse_files([("r/x.yaml", data)])
    except RulesError as err:
        _assert_located(err, "r/x.yaml")
    else:
        assert isinstance(result, RuleSet)


VOCABULARY = st.sampled_from([
    "description", "resources", "rules", "topics", "groups", "transactional_ids", "cluster", "name", "allow", "deny",
    "require_approval", "who", "except", "client", "when", "reason", "subjects", "claims", "mechanisms", "addresses",
    "client_ids", "software", "days", "hours", "timezone", "produce", "consume", "delete", "transaction", "*",
    "payments.*", "a?", "^x$", "10.0.0.0/8", "10.0.0.1/8", "mon", "funday", "08:00-18:00", "24:00-01:00",
    "Europe/Berlin", "Mars/Base", "mTLS", "tests", "input", "expect", "identity", "action", "resource", "topic",
    "group", "time", "decision", "2026-01-05T10:00:00Z", "allow", "approval_required",
])
VALUES = st.recursive(
    st.one_of(VOCABULARY, st.booleans(), st.integers(-2, 2), st.none(), st.text(max_size=5)),
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(VOCABULARY, inner, max_size=5)),
    max_leaves=30,
)


@FUZZ
@given(document=st.dictionaries(VOCABULARY, VALUES, max_size=4), cut=st.integers(0, 2000))
def test_structured_nonsense_gives_rules_or_located_problems(document, cut):
    text = yaml.safe_dump(document)
    for candidate in (text, text[:cut]):
        try:
            parse_files([("r/x.yaml", candidate)])
        except RulesError as err:
            _assert_located(err, "r/x.yaml")


@FUZZ
@given(document=st.dictionaries(VOCABULARY, VALUES, max_size=4),
       tests=st.lists(st.dictionaries(VOCABULARY, VALUES, max_size=4), max_size=3))
def test_test_files_and_inputs_give_cases_or_located_problems(document, tests):
    rules = _shipped_rules()
    for text in (yaml.safe_dump(document), yaml.safe_dump({"tests": tests})):
        try:
            testing.load_tests("t_test.yaml", text, rules)
        except RulesError as err:
            _assert_located(err, "t_test.yaml")
        reader = Reader("in.yaml")
        root = reader.compose(text)
        if root is not None and read_input(reader, root) is None:
            _assert_located(RulesError(reader.problems), "in.yaml")


@functools.cache
def _shipped_rules() -> RuleSet:
    from pathlib import Path

    from brokerguard.policy import load

    return load(Path(__file__).resolve().parents[2] / "rules")


def _glob_reference(pattern: str, name: str) -> bool:
    if not pattern:
        return not name
    head = pattern[0]
    if head == "*":
        return any(_glob_reference(pattern[1:], name[skip:]) for skip in range(len(name) + 1))
    return bool(name) and (head == "?" or head == name[0]) and _glob_reference(pattern[1:], name[1:])


@random_inputs(500)
@given(pattern=st.text(alphabet="ab.*?", max_size=7), name=st.text(alphabet="ab.", max_size=9))
def test_globs_match_like_the_textbook_definition(pattern, name):
    assert compile_glob(pattern)(name) is _glob_reference(pattern, name)


@random_inputs(300)
@given(first=st.text(alphabet="ab*?", max_size=4), second=st.text(alphabet="ab*?", max_size=4))
def test_overlap_finds_every_shared_name(first, second):
    shared = any(_glob_reference(first, name) and _glob_reference(second, name)
                 for size in range(9) for name in map("".join, itertools.product("abc", repeat=size)))
    if shared:
        assert overlaps(first, second)
    if not overlaps(first, second):
        assert not shared
