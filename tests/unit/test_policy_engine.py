"""Deciding: default deny, deny > require_approval > allow, matchers, windows, the index and the cache."""

import textwrap
from datetime import datetime, timezone
from pathlib import Path

import pytest

from brokerguard.identity import Identity
from brokerguard.operations import CLUSTER, AccessRequest, Client, Decision, Resource, Verdict
from brokerguard.policy import DecisionCache, PolicyEngine, load, parse_files
from brokerguard.policy import engine as engine_module

RULES_DIR = Path(__file__).resolve().parents[2] / "rules"
MONDAY_NOON = datetime(2026, 1, 5, 12, 0, tzinfo=timezone.utc).timestamp()
SATURDAY_NOON = datetime(2026, 1, 10, 12, 0, tzinfo=timezone.utc).timestamp()


def engine_of(*files: str) -> PolicyEngine:
    sources = [(f"r/f{index}.yaml", textwrap.dedent(text)) for index, text in enumerate(files)]
    return PolicyEngine(parse_files(sources))


def ask(subject="alice", action="consume", topic="orders.eu", groups=(), mechanism="OAUTHBEARER", claims=None,
        client=Client("10.1.2.3"), resource=None) -> AccessRequest:
    identity = Identity(subject, mechanism, frozenset(groups), claims or {})
    return AccessRequest(identity, action, resource or Resource("topic", topic), client)


ORDERS = """\
resources: {topics: ["orders.*"], groups: ["orders-*"]}
rules:
"""


def test_nothing_matches_so_default_deny():
    decision = engine_of(ORDERS + "  - {name: r, allow: [consume], who: {subjects: [bob]}}").decide(ask())
    assert decision == Decision(Verdict.DENY, "", "default-deny",
                                "no rule allows consume on topic orders.eu for alice", True)
    assert decision.source == "default-deny" and not decision.allowed


def test_deny_beats_approval_beats_allow_whatever_the_order():
    rules = ORDERS + """\
      - {name: a, allow: [consume]}
      - {name: b, require_approval: [consume]}
      - {name: c, deny: [consume], who: {groups: [blocked]}}
    """
    engine = engine_of(textwrap.dedent(rules))
    assert engine.decide(ask()).rule == "b"
    assert engine.decide(ask(groups=["blocked"])).rule == "c"
    assert engine.decide(ask(action="describe")).verdict is Verdict.DENY  # not listed anywhere


def test_across_files_the_strongest_wins_and_ties_go_to_the_first_file():
    allow = ORDERS + "  - {name: a, allow: [consume]}"
    deny = ORDERS + "  - {name: d, deny: [consume]}"
    assert engine_of(allow, deny).decide(ask()).source == "f1.yaml:d"
    assert engine_of(deny, allow).decide(ask()).source == "f0.yaml:d"
    assert engine_of(allow, allow.replace("name: a", "name: z")).decide(ask()).source == "f0.yaml:a"


def test_files_only_decide_what_they_govern():
    engine = engine_of(ORDERS + "  - {name: a, allow: ['*']}")
    assert engine.decide(ask(topic="orders.eu")).allowed
    assert not engine.decide(ask(topic="billing.eu")).allowed
    assert engine.decide(ask(resource=Resource("group", "orders-x"))).allowed
    assert not engine.decide(ask(resource=Resource("transactional_id", "orders-x"), action="transaction")).allowed


def test_a_narrowed_rule_applies_only_to_the_kinds_and_names_it_names():
    engine = engine_of(ORDERS + "  - {name: a, allow: [consume], topics: ['orders.eu.*']}")
    assert engine.decide(ask(topic="orders.eu.cards")).allowed
    assert not engine.decide(ask(topic="orders.us.cards")).allowed
    assert not engine.decide(ask(resource=Resource("group", "orders-x"))).allowed


def test_default_reasons_name_the_rule():
    engine = engine_of(ORDERS + """\
  - {name: a, allow: [consume]}
  - {name: d, deny: [produce]}
  - {name: q, require_approval: [describe]}""")
    assert engine.decide(ask()).reason == "f0.yaml:a allows consume on topic orders.eu"
    assert engine.decide(ask(action="produce")).reason == "produce on topic orders.eu is denied by f0.yaml:d"
    assert engine.decide(ask(action="describe")).reason == "describe on topic orders.eu needs approval (f0.yaml:q)"


def test_written_reasons_are_used_as_written():
    engine = engine_of(ORDERS + "  - {name: d, deny: [produce], reason: orders are frozen}")
    assert engine.decide(ask(action="produce")).reason == "orders are frozen"


@pytest.mark.parametrize(
    "who, request_, matches",
    [
        ("{subjects: ['svc-*']}", ask(subject="svc-orders"), True),
        ("{subjects: ['svc-*']}", ask(subject="alice"), False),
        ("{groups: [a, b]}", ask(groups=["x", "b"]), True),
        ("{groups: [a, b]}", ask(groups=["x"]), False),
        ("{groups: ['team-*']}", ask(groups=["team-red"]), True),
        ("{subjects: [alice], groups: [a]}", ask(groups=["b"]), False),
        ("{claims: {tier: gold}}", ask(claims={"tier": "gold"}), True),
        ("{claims: {tier: gold}}", ask(claims={"tier": "silver"}), False),
        ("{claims: {tier: gold}}", ask(), False),
        ("{claims: {roles: [admin, ops]}}", ask(claims={"roles": ["dev", "ops"]}), True),
        ("{claims: {roles: [admin]}}", ask(claims={"roles": [{"nested": 1}, "dev"]}), False),
        ("{claims: {level: 3}}", ask(claims={"level": 3}), True),
        ("{claims: {level: 3}}", ask(claims={"level": "3"}), False),
        ("{claims: {verified: true}}", ask(claims={"verified": True}), True),
        ("{mechanisms: [mTLS, scram-sha-512]}", ask(mechanism="SCRAM-SHA-512"), True),
        ("{mechanisms: [mTLS]}", ask(mechanism="PLAIN"), False),
    ],
)
def test_who(who, request_, matches):
    engine = engine_of(ORDERS + f"  - {{name: a, allow: [consume], who: {who}}}")
    assert engine.decide(request_).allowed is matches


def test_except_exempts_from_any_rule():
    engine = engine_of(ORDERS + """\
  - {name: a, allow: [consume, delete]}
  - {name: d, deny: [delete], except: {groups: [admins]}}""")
    assert engine.decide(ask(action="delete")).rule == "d"
    assert engine.decide(ask(action="delete", groups=["admins"])).rule == "a"


@pytest.mark.parametrize(
    "client, client_, matches",
    [
        ("{addresses: [10.0.0.0/8]}", Client("10.200.0.1"), True),
        ("{addresses: [10.0.0.0/8]}", Client("11.0.0.1"), False),
        ("{addresses: [10.0.0.0/8]}", Client("::ffff:10.0.0.1"), True),
        ("{addresses: [10.0.0.0/8]}", Client("2001:db8::1"), False),
        ("{addresses: [10.0.0.0/8]}", Client("not-an-ip"), False),
        ("{addresses: ['2001:db8::/32', 192.0.2.7]}", Client("[2001:db8::5]"), True),
        ("{addresses: ['2001:db8::/32', 192.0.2.7]}", Client("192.0.2.7"), True),
        ("{client_ids: ['ops-*']}", Client("10.0.0.1", "ops-console"), True),
        ("{client_ids: ['ops-*']}", Client("10.0.0.1", None), False),
        ("{software: ['apache-kafka-java*']}", Client("10.0.0.1", "x", "apache-kafka-java 3.9.0"), True),
        ("{software: ['apache-kafka-java*']}", Client("10.0.0.1", "x", None), False),
        ("{addresses: [10.0.0.0/8], client_ids: [a]}", Client("10.0.0.1", "b"), False),
    ],
)
def test_client(client, client_, matches):
    engine = engine_of(ORDERS + f"  - {{name: a, allow: [consume], client: {client}}}")
    assert engine.decide(ask(client=client_)).allowed is matches


def at(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


@pytest.mark.parametrize(
    "when, moment, inside",
    [
        ("{days: [mon]}", "2026-01-05T23:59:00+00:00", True),
        ("{days: [mon]}", "2026-01-06T00:00:00+00:00", False),
        ("{hours: '08:00-18:00'}", "2026-01-06T08:00:00+00:00", True),
        ("{hours: '08:00-18:00'}", "2026-01-06T18:00:00+00:00", False),
        ("{hours: '08:00-24:00'}", "2026-01-06T23:59:59+00:00", True),
        ("{hours: '08:00-18:00', timezone: Europe/Berlin}", "2026-01-06T07:30:00+00:00", True),  # 08:30 CET
        ("{hours: '08:00-18:00', timezone: Europe/Berlin}", "2026-07-06T16:30:00+00:00", False),  # 18:30 CEST
        ("{hours: '08:00-18:00', timezone: Europe/Berlin}", "2026-07-06T06:30:00+00:00", True),  # 08:30 CEST
        # A window past midnight: its small hours belong to the day it started.
        ("{days: [fri], hours: '22:00-06:00'}", "2026-01-09T23:00:00+00:00", True),
        ("{days: [fri], hours: '22:00-06:00'}", "2026-01-10T05:59:00+00:00", True),
        ("{days: [fri], hours: '22:00-06:00'}", "2026-01-09T05:00:00+00:00", False),
        ("{days: [fri], hours: '22:00-06:00'}", "2026-01-10T12:00:00+00:00", False),
    ],
)
def test_time_windows(when, moment, inside):
    engine = engine_of(ORDERS + f"  - {{name: a, allow: [consume], when: {when}}}")
    decision = engine.decide(ask(), now=at(moment))
    assert decision.allowed is inside
    assert decision.cacheable is False


def test_only_a_window_that_was_evaluated_makes_a_decision_uncacheable():
    engine = engine_of(ORDERS + """\
  - {name: d, deny: [produce]}
  - {name: q, require_approval: [consume], who: {groups: [night]}, when: {hours: '22:00-06:00'}}
  - {name: a, allow: [consume, produce]}""")
    assert engine.decide(ask(action="produce"), now=MONDAY_NOON).cacheable  # the deny came first
    assert engine.decide(ask(), now=MONDAY_NOON) == Decision(Verdict.ALLOW, "f0.yaml", "a",
                                                            "f0.yaml:a allows consume on topic orders.eu", True)
    decided = engine.decide(ask(groups=["night"]), now=MONDAY_NOON)
    assert decided.rule == "a" and decided.cacheable is False  # the window was checked and could change it
    assert engine.decide(ask(groups=["night"]), now=MONDAY_NOON - 13 * 3600).rule == "q"


def test_the_clock_is_read_only_for_windows(monkeypatch):
    calls = []
    monkeypatch.setattr(engine_module.time, "time", lambda: calls.append(1) or SATURDAY_NOON)
    engine = engine_of(ORDERS + """\
  - {name: a, allow: [consume]}
  - {name: w, require_approval: [produce], when: {days: [sat]}}""")
    engine.decide(ask())
    assert calls == []
    assert engine.decide(ask(action="produce")).rule == "w" and calls == [1]


def test_unknown_actions_and_kinds_are_denied():
    engine = engine_of(ORDERS + "  - {name: a, allow: ['*']}")
    assert engine.decide(ask(action="teleport")).rule == "default-deny"
    assert engine.decide(ask(resource=Resource("schema", "orders.eu"))).rule == "default-deny"


def test_cluster_rules():
    engine = engine_of("resources: {cluster: true}\nrules:\n  - {name: c, allow: [describe]}")
    assert engine.decide(ask(action="describe", resource=CLUSTER)).allowed
    assert not engine.decide(ask(action="alter", resource=CLUSTER)).allowed
    assert not engine.decide(ask(action="describe", topic="orders")).allowed


def test_exact_names_and_globs_are_both_indexed():
    engine = engine_of(
        "resources: {topics: [orders, 'orders.*', 'orders?']}\nrules:\n"
        "  - {name: exact, allow: [consume], topics: [orders]}\n"
        "  - {name: glob, allow: [consume, produce], topics: ['orders.*']}\n"
        "  - {name: one, deny: [consume], topics: ['orders?']}\n"
        "  - {name: any, require_approval: [produce]}\n")
    assert engine.decide(ask(topic="orders")).rule == "exact"
    assert engine.decide(ask(topic="orders.eu")).rule == "glob"
    assert engine.decide(ask(topic="orders1")).rule == "one"
    assert engine.decide(ask(topic="orders.eu", action="produce")).rule == "any"
    assert engine.decide(ask(topic="billing")).rule == "default-deny"


def test_the_memo_of_unseen_names_is_bounded(monkeypatch):
    monkeypatch.setattr(engine_module, "MEMO_LIMIT", 3)
    engine = engine_of(ORDERS + "  - {name: a, allow: [consume]}")
    for index in range(10):
        assert engine.decide(ask(topic=f"orders.{index}")).allowed
    assert 1 <= len(engine._buckets[("topic", "consume")].memo) <= 3


def test_explain_names_every_rule_and_why_not():
    engine = PolicyEngine(load(RULES_DIR))
    request = ask(subject="alice", groups=["analysts"], action="produce", topic="payments.cards")
    explained = engine.explain(request, now=MONDAY_NOON)
    assert len(explained) == 17 and not any(item.matched for item in explained)
    by_rule = {(item.file, item.rule): item.why_not for item in explained}
    assert by_rule[("payments.yaml", "payments-service")] == "who: subject alice is not one of svc-payments"
    assert by_rule[("payments.yaml", "analysts-read")] == \
        "produce is not among its actions on topics (consume, describe)"
    assert by_rule[("platform.yaml", "everyone-describes-cluster")] == "the rule applies to cluster only"
    assert by_rule[("sandbox.yaml", "developers-build")] == \
        "topic payments.cards is not governed by sandbox.yaml (topics: sandbox.*)"
    weekend = engine.explain(ask(subject="dev", groups=["developers"], action="create", topic="sandbox.x"),
                             now=MONDAY_NOON)
    assert [item.why_not for item in weekend if item.rule == "weekend-creates-need-approval"] == [
        "when: it is mon 13:00 in Europe/Berlin, outside sat,sun"]
    exempt = engine.explain(ask(subject="root", groups=["platform-admins"], action="delete", topic="payments.x"))
    assert ("payments.yaml", "no-deletes", False, "except: root is exempt") in exempt


def test_shipped_rules_decide_the_documented_cases():
    engine = PolicyEngine(load(RULES_DIR))
    analyst = dict(subject="alice", groups=["analysts"])
    assert engine.decide(ask(**analyst, topic="payments.cards.eu")).allowed
    assert engine.decide(ask(**analyst, action="produce", topic="payments.cards.eu")).rule == "default-deny"
    assert engine.decide(ask(subject="svc-payments", action="produce", topic="payments.cards.eu")).allowed
    for action, resource in [("produce", Resource("topic", "payments.x")), ("consume", Resource("group", "payments-x")),
                             ("transaction", Resource("transactional_id", "payments-x")),
                             ("create", Resource("topic", "sandbox.x")), ("alter", CLUSTER)]:
        assert engine.decide(ask(subject="nobody", action=action, resource=resource)).rule == "default-deny"
    admin = ask(subject="root", groups=["platform-admins"], action="delete", topic="payments.x")
    assert engine.decide(admin).source == "platform.yaml:admins-manage-topics"


def test_fifty_rules_over_ten_files_decide_like_the_explanation():
    engine = PolicyEngine(parse_files(fifty_rules()))
    names = {(rule.file, rule.name): rule for _, rule in engine.rules.rules()}
    for family in range(10):
        for subject, groups in [("svc-f3", []), ("bob", ["readers"]), ("eve", []), ("ops", ["admins"])]:
            for action in ("produce", "consume", "delete", "create"):
                request = ask(subject=subject, groups=groups, action=action, topic=f"f{family}.orders")
                decision = engine.decide(request, now=MONDAY_NOON)
                matched = [names[(item.file, item.rule)] for item in engine.explain(request, now=MONDAY_NOON)
                           if item.matched]
                assert decision.verdict is (min((rule.verdict for rule in matched),
                                                key=lambda verdict: ["deny", "approval_required", "allow"].index(
                                                    verdict.value), default=Verdict.DENY))


def fifty_rules() -> list[tuple[str, str]]:
    """Ten families of five rules, the shape bench/bench_policy.py measures."""
    files = []
    for family in range(10):
        files.append((f"r/f{family}.yaml", textwrap.dedent(f"""\
            resources: {{topics: ["f{family}.*"], groups: ["f{family}-*"], transactional_ids: ["f{family}-*"]}}
            rules:
              - {{name: service, allow: [produce, consume, describe, transaction], who: {{subjects: [svc-f{family}]}}}}
              - {{name: readers, allow: [consume, describe], who: {{groups: [readers, f{family}-team]}}}}
              - {{name: office, require_approval: [create], who: {{groups: [devs]}}, when: {{days: [sat, sun]}}}}
              - {{name: ops-net, allow: ['*'], who: {{groups: [admins]}}, client: {{addresses: [10.0.0.0/8]}}}}
              - {{name: no-deletes, deny: [delete, delete_records], except: {{groups: [admins]}}}}
            """)))
    return files


# -- the cache -------------------------------------------------------------------------------


def test_the_cache_keeps_cacheable_decisions_only():
    engine = engine_of(ORDERS + """\
  - {name: a, allow: [consume]}
  - {name: w, allow: [produce], when: {days: [mon, tue, wed, thu, fri, sat, sun]}}""")
    cache = DecisionCache(engine, max_entries=10)
    request = ask()
    assert cache.decide(("alice", "consume"), request).allowed and len(cache) == 1
    assert cache.decide(("alice", "consume"), ask(subject="someone else")).allowed  # the key decides
    assert cache.decide(("alice", "produce"), ask(action="produce")).allowed and len(cache) == 1


def test_the_cache_is_emptied_when_full_cleared_and_reloaded():
    engine = engine_of(ORDERS + "  - {name: a, allow: [consume]}")
    cache = DecisionCache(engine, max_entries=3)
    for index in range(3):
        cache.decide(index, ask())
    assert len(cache) == 3
    cache.decide(3, ask())
    assert len(cache) == 1
    cache.clear()
    assert len(cache) == 0
    cache.decide("k", ask())
    stricter = engine_of(ORDERS + "  - {name: d, deny: [consume]}")
    cache.reload(stricter)
    assert cache.engine is stricter and cache.decide("k", ask()).rule == "d"
    with pytest.raises(ValueError):
        DecisionCache(engine, max_entries=0)
