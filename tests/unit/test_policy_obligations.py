"""Obligations in the rules language: masks, validations and limits on what rules allow, `apply`
rules, the mistakes the loader reports, and how the engine combines them."""

import textwrap

import orjson
import pytest

from brokerguard.identity import Identity
from brokerguard.operations import AccessRequest, Client, Resource, Verdict
from brokerguard.policy import PolicyEngine, RulesError, parse_files
from brokerguard.policy.model import Limit

DEFINITIONS = """\
resources: {topics: ["orders.*"], groups: ["orders-*"]}
masks:
  contact:
    fields: [{path: "$.email", strategy: redact}]
  cards:
    fields: [{path: "$.card", strategy: keep_last, n: 4}]
validations:
  order:
    value: {json: true, schema: {type: object, required: [id]}}
rules:
"""


def engine(rules: str, extra: tuple[tuple[str, str], ...] = ()) -> PolicyEngine:
    return PolicyEngine(parse_files([("r/orders.yaml", DEFINITIONS + textwrap.dedent(rules)), *extra]))


def problems_of(rules: str) -> list[str]:
    with pytest.raises(RulesError) as caught:
        engine(rules)
    return [str(problem) for problem in caught.value.problems]


def ask(subject="alice", action="consume", topic="orders.eu", groups=()) -> AccessRequest:
    return AccessRequest(Identity(subject, "SCRAM-SHA-512", frozenset(groups), {}), action,
                         Resource("topic", topic), Client("10.0.0.1"))


def test_an_allow_rule_carries_its_obligations():
    decision = engine("""\
      - name: analysts
        allow: [consume]
        who: {groups: [analysts]}
        mask: contact
        limit: {records_per_s: 100}
    """).decide(ask(groups=["analysts"]))
    assert decision.verdict is Verdict.ALLOW
    obligations = decision.obligations
    assert obligations.masks == ("contact",) and obligations.validations == ()
    assert obligations.limits == (("orders.yaml:analysts", Limit(records_per_s=100.0)),)
    masked, failures = obligations.mask.mask_values([b'{"email": "a@b.c", "id": 1}'])
    assert (orjson.loads(masked[0]), failures) == ({"email": "[REDACTED]", "id": 1}, [])


def test_apply_rules_add_to_what_others_allow_and_grant_nothing():
    policy = engine("""\
      - name: readers
        allow: [consume, produce]
        who: {groups: [analysts, writers]}
      - name: validate-everything
        apply: [produce]
        validate: order
      - name: analysts-masked
        apply: [consume]
        who: {groups: [analysts]}
        mask: [contact, cards]
    """)
    analyst = policy.decide(ask(groups=["analysts"]))
    assert analyst.rule == "readers" and set(analyst.obligations.masks) == {"contact", "cards"}
    masked, _ = analyst.obligations.mask.mask_values([b'{"email": "a@b.c", "card": "4111111111111111"}'])
    assert orjson.loads(masked[0]) == {"email": "[REDACTED]", "card": "************1111"}
    assert policy.decide(ask(groups=["writers"])).obligations is None
    produce = policy.decide(ask(groups=["writers"], action="produce"))
    assert [v.name for v in produce.obligations.validations] == ["order"]
    # An apply rule alone allows nothing.
    assert policy.decide(ask(groups=["nobody"], action="produce")).verdict is Verdict.DENY


def test_obligations_from_several_files_combine():
    other = ("r/audit.yaml", textwrap.dedent("""\
        resources: {topics: ["*"]}
        rules:
          - name: everyone-limited
            apply: [consume]
            limit: {bytes_per_s: 1000, per: identity}
            mask: contact
    """))
    policy = engine("""\
      - name: readers
        allow: [consume]
        mask: cards
        limit: {records_per_s: 5}
    """, (other,))
    obligations = policy.decide(ask()).obligations
    assert set(obligations.masks) == {"contact", "cards"}
    assert [source for source, _ in obligations.limits] == ["orders.yaml:readers", "audit.yaml:everyone-limited"]
    assert obligations.describe()["limits"][1] == {"rule": "audit.yaml:everyone-limited", "bytes_per_s": 1000.0,
                                                   "per": "identity"}
    assert policy.decide(ask()).obligations is obligations  # combined once, then reused


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        ("  - {name: a, allow: [consume], mask: nope}", "r/orders.yaml:11:37: no mask named `nope`"),
        ("  - {name: a, allow: [consume], validate: [ordr]}",
         "r/orders.yaml:11:42: no validation named `ordr` (did you mean `order`?)"),
        ("  - {name: a, deny: [consume], mask: contact}", "r/orders.yaml:11:30: `mask` applies to what a rule allows"),
        ("  - {name: a, apply: [consume]}", "r/orders.yaml:11:3: rule `a` is an `apply` rule without"),
        ("  - {name: a, allow: [consume], limit: {per: identity}}", "r/orders.yaml:11:38: `limit` needs"),
        ("  - {name: a, allow: [consume], limit: {records_per_s: -1}}",
         "r/orders.yaml:11:54: `limit.records_per_s` must be a number above 0"),
        ("  - {name: a, allow: [consume], limit: {bytes_per_s: 5, per: topic}}", "r/orders.yaml:11:60: `limit.per`"),
        ("  - {name: a, allow: [consume], limit: {bytes: 5}}", "r/orders.yaml:11:39: unknown key `bytes`"),
    ],
)
def test_mistakes_in_obligations_are_reported_where_they_are(rule, message):
    found = problems_of(rule + "\n")
    assert any(problem.startswith(message) for problem in found), found


def test_mistakes_in_definitions_point_into_the_spec():
    with pytest.raises(RulesError) as caught:
        parse_files([("r/x.yaml", textwrap.dedent("""\
            resources: {topics: ["x.*"]}
            masks:
              bad:
                fields:
                  - {path: "$.a", strategy: redact}
                  - {path: "$.b", strategy: scramble}
              Bad-Name: {fields: []}
            validations:
              v: {value: {schema: {type: nonsense}}}
            rules:
              - {name: a, allow: [consume], mask: bad}
        """))])
    found = [str(problem) for problem in caught.value.problems]
    assert any(p.startswith("r/x.yaml:6:") and "mask `bad`, at $.fields[1]" in p for p in found), found
    assert any(p.startswith("r/x.yaml:7:3: mask name `Bad-Name`") for p in found), found
    assert any(p.startswith("r/x.yaml:9:") and "validation `v`" in p for p in found), found


def test_a_name_is_defined_once_in_the_whole_set():
    with pytest.raises(RulesError) as caught:
        engine("  - {name: a, allow: [consume]}\n", (("r/more.yaml", DEFINITIONS + "  - {name: b, allow: [consume]}\n"),))
    found = [str(problem) for problem in caught.value.problems]
    assert any("mask `contact` is already defined in" in p for p in found), found


def test_capture_levels_combine_to_the_most_kept():
    policy = engine("""\
      - name: writers
        allow: [produce]
        capture: digest
      - name: evidence
        apply: [produce]
        who: {subjects: [contractor]}
        capture: full
    """)
    assert policy.decide(ask("alice", "produce")).obligations.capture == "digest"
    contractor = policy.decide(ask("contractor", "produce")).obligations
    assert contractor.capture == "full" and contractor.describe()["capture"] == "full"


@pytest.mark.parametrize("rule, message", [
    ("- {name: a, allow: [produce], capture: everything}", "`capture` is one of none, digest, masked, full"),
    ("- {name: a, deny: [produce], capture: full}", "`capture` applies to what a rule allows"),
])
def test_capture_mistakes(rule, message):
    assert any(message in problem for problem in problems_of(rule))
