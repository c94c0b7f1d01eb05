import logging

import pytest
from hypothesis import given
from hypothesis import strategies as st

from brokerguard.audit import events
from brokerguard.audit.alerts import Alerter
from brokerguard.audit.events import ALERT_SUPPRESSED
from brokerguard.errors import ConfigError
from fuzzing import random_inputs


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make(**options):
    clock = Clock()
    emitted: list[dict] = []
    alerter = Alerter(emitted.append, clock=clock, **options)
    return alerter, emitted, clock


def request(identity="alice", decision="allow", operations=(), **fields):
    return {"kind": "request", "time": 1_700_000_000.0, "session": "s-1", "identity": identity, "api": "Produce",
            "client_id": "app", "operations": list(operations), "decision": decision, "rule": "orders.allow",
            "reason": "producers may write", "outcome": "ok", **fields}


def operation(resource="topic:orders", decision="deny", rule="orders.deny", reason="not a producer"):
    return {"action": "produce", "resource": resource, "decision": decision, "rule": rule, "reason": reason}


def failed_login(identity="mallory", peer=None, reason="bad password"):
    event = events.login("s-2", identity, "SCRAM-SHA-512", False, reason)
    if peer is not None:
        event["peer"] = peer
    return event


def kinds(emitted):
    return [alert["alert"] for alert in emitted]


# -- each trigger ------------------------------------------------------------------------------


def test_a_denied_operation_raises_an_alert_naming_its_resource_and_keeping_the_payload():
    alerter, emitted, _ = make()
    payload = {"capture": "digest", "partitions": [{"topic": "orders", "partition": 0, "records": 1}]}
    alerter(request(decision="partial", operations=[operation(), operation("topic:audit", decision="allow")],
                    payload=payload))
    [raised] = emitted
    assert raised["kind"] == "alert" and raised["alert"] == events.ALERT_DENIED
    assert (raised["identity"], raised["session"], raised["resource"]) == ("alice", "s-1", "topic:orders")
    assert (raised["rule"], raised["reason"]) == ("orders.deny", "not a producer")
    assert raised["payload"] == payload
    assert "count" not in raised


def test_a_request_denied_without_operations_still_raises_one_alert():
    alerter, emitted, _ = make()
    alerter(request(decision="deny", rule="default", reason="no rule allows it"))
    assert kinds(emitted) == [events.ALERT_DENIED]
    assert emitted[0]["rule"] == "default"


def test_invalid_records_raise_one_alert_per_topic():
    alerter, emitted, _ = make()
    alerter(request(outcome="error", errors={"topic:orders[0]": "INVALID_RECORD", "topic:orders[1]": "INVALID_RECORD",
                                             "topic:audit[0]": "NOT_LEADER_OR_FOLLOWER"}))
    assert kinds(emitted) == [events.ALERT_INVALID]
    assert emitted[0]["resource"] == "topic:orders"
    assert emitted[0]["errors"]["topic:orders[0]"] == "INVALID_RECORD"


def test_throttling_raises_an_alert_and_no_throttle_raises_none():
    alerter, emitted, _ = make()
    alerter(request(throttle_ms=0))
    alerter(request())
    assert emitted == []
    alerter(request(throttle_ms=250))
    assert kinds(emitted) == [events.ALERT_THROTTLED]
    assert "250" in emitted[0]["reason"]


def test_an_operation_waiting_for_approval_raises_an_alert():
    alerter, emitted, _ = make()
    alerter(request(operations=[operation("topic:payments", decision="approval_required", rule="payments.delete",
                                          reason="deletes need a second person")]))
    assert kinds(emitted) == [events.ALERT_APPROVAL]
    assert emitted[0]["resource"] == "topic:payments"


def test_failed_logins_from_one_address_raise_one_alert_at_the_threshold():
    alerter, emitted, clock = make(auth_failure_threshold=3, window_s=60)
    for port, name in zip((50001, 50002), ("a", "b")):
        alerter(failed_login(name, peer=f"10.0.0.5:{port}"))
    alerter(failed_login("c", peer="10.0.0.6:50003"))  # another address: counted apart
    assert emitted == []
    alerter(failed_login("d", peer="10.0.0.5:50004"))
    assert kinds(emitted) == [events.ALERT_AUTH_FAILURES]
    assert emitted[0]["resource"] == "peer:10.0.0.5"
    assert emitted[0]["peer"] == "10.0.0.5:50004"


def test_failed_logins_spread_wider_than_the_window_raise_nothing():
    alerter, emitted, clock = make(auth_failure_threshold=3, window_s=60)
    for _ in range(6):
        alerter(failed_login(peer="[::1]:4000"))
        clock.now += 31
    assert emitted == []


def test_failed_logins_without_an_address_are_counted_per_identity():
    alerter, emitted, _ = make(auth_failure_threshold=2)
    alerter(failed_login("mallory"))
    alerter(failed_login("trudy"))
    assert emitted == []
    alerter(failed_login("mallory"))
    assert [(a["alert"], a["resource"]) for a in emitted] == [(events.ALERT_AUTH_FAILURES, "identity:mallory")]


def test_a_successful_login_counts_for_nothing():
    alerter, emitted, _ = make(auth_failure_threshold=1)
    alerter(events.login("s-3", "alice", "OAUTHBEARER", True))
    assert emitted == []


def test_revoked_identities_raise_alerts_at_login_and_when_their_session_is_cut():
    alerter, emitted, _ = make()
    alerter(failed_login("contractor", reason="identity revoked"))
    alerter(events.session_end("s-4", "intern", "revoked by ops", 3, 100, 200, started=0.0))
    alerter(events.session_end("s-5", "alice", "client closed", 3, 100, 200, started=0.0))
    assert kinds(emitted) == [events.ALERT_REVOKED, events.ALERT_REVOKED]
    assert [(a["session"], a["identity"]) for a in emitted] == [("s-2", "contractor"), ("s-4", "intern")]


def test_alert_events_never_raise_alerts():
    alerter, emitted, _ = make(auth_failure_threshold=1)
    raised = events.alert(events.ALERT_DENIED, request(decision="deny"))
    raised.update(decision="deny", operations=[operation()], throttle_ms=5, ok=False)
    alerter(raised)
    assert emitted == []


def test_alerts_fed_back_through_the_bus_do_not_loop():
    emitted: list[dict] = []

    def emit(event):  # what AuditBus.emit does: queue it, then show it to every observer
        emitted.append(event)
        alerter(event)

    clock = Clock()
    alerter = Alerter(emit, clock=clock, window_s=10)
    alerter(request(operations=[operation()]))
    alerter(request(operations=[operation()]))
    clock.now += 10
    alerter.flush()
    assert [(a["alert"], a.get("count")) for a in emitted] == [(events.ALERT_DENIED, None), (events.ALERT_DENIED, 1)]


def test_an_unreadable_event_is_logged_and_raises_nothing(caplog):
    alerter, emitted, _ = make()
    with caplog.at_level(logging.ERROR, logger="brokerguard.audit.alerts"):
        alerter({"kind": "request", "operations": 5})
    assert emitted == []
    assert "could not be checked" in caplog.text


def test_bad_settings_are_refused_with_a_sentence():
    with pytest.raises(ConfigError, match="window_s"):
        Alerter(print, window_s=0)
    with pytest.raises(ConfigError, match="max_per_window"):
        Alerter(print, max_per_window=0)
    with pytest.raises(ConfigError, match="auth_failure_threshold"):
        Alerter(print, auth_failure_threshold=0)


# -- merging and limits ------------------------------------------------------------------------


def test_repeats_within_the_window_become_one_summary_when_it_closes():
    alerter, emitted, clock = make(window_s=60)
    for second in range(5):
        event = request(operations=[operation()], payload={"capture": "digest", "partitions": [{"records": second}]})
        event["time"] = 1_700_000_000.0 + second
        alerter(event)
        clock.now += 1
    assert len(emitted) == 1
    clock.now += 55
    alerter(request())  # any later event closes the window
    first, summary = emitted
    assert first["payload"]["partitions"] == [{"records": 0}]
    assert summary["alert"] == events.ALERT_DENIED and summary["resource"] == "topic:orders"
    assert (summary["count"], summary["first_time"], summary["time"]) == (4, 1_700_000_001.0, 1_700_000_004.0)
    assert summary["payload"]["partitions"] == [{"records": 1}]  # the first repeat's


def test_different_resources_identities_or_rules_are_not_merged():
    alerter, emitted, _ = make()
    alerter(request(operations=[operation("topic:a")]))
    alerter(request(operations=[operation("topic:b")]))
    alerter(request("bob", operations=[operation("topic:a")]))
    alerter(request(operations=[operation("topic:a", rule="other.rule")]))
    alerter(request(operations=[operation("topic:a")]))
    assert len(emitted) == 4


def test_flush_closes_only_a_window_whose_time_is_up_unless_final():
    alerter, emitted, clock = make(window_s=60)
    alerter(request(operations=[operation()]))
    alerter(request(operations=[operation()]))
    alerter.flush()
    assert len(emitted) == 1
    clock.now += 30
    alerter.flush(final=True)
    assert [a.get("count") for a in emitted] == [None, 1]
    alerter.flush(final=True)  # nothing open: nothing more
    assert len(emitted) == 2


def test_a_new_window_emits_the_first_alert_again():
    alerter, emitted, clock = make(window_s=60)
    alerter(request(operations=[operation()]))
    clock.now += 60
    alerter(request(operations=[operation()]))
    assert [a.get("count") for a in emitted] == [None, None]


def test_alerts_past_the_limit_are_counted_in_one_suppressed_alert():
    alerter, emitted, clock = make(window_s=60, max_per_window=3)
    for topic in range(10):
        alerter(request(operations=[operation(f"topic:t{topic}")]))
    alerter(request(throttle_ms=100))
    alerter(request(operations=[operation("topic:t0")]))  # a repeat of an emitted one: merged, not suppressed
    assert [a["resource"] for a in emitted] == ["topic:t0", "topic:t1", "topic:t2"]
    clock.now += 60
    alerter.flush()
    summary, suppressed = emitted[3:]
    assert (summary["resource"], summary["count"]) == ("topic:t0", 1)
    assert suppressed["alert"] == ALERT_SUPPRESSED
    assert suppressed["count"] == 8
    assert "denied 7" in suppressed["reason"] and "throttled 1" in suppressed["reason"]


# -- the promise, for any sequence ---------------------------------------------------------------

EVENTS = {
    "deny": lambda who, where: request(who, operations=[operation(where)]),
    "deny_two": lambda who, where: request(who, decision="deny", operations=[operation(where), operation("topic:x")]),
    "invalid": lambda who, where: request(who, errors={f"{where}[0]": "INVALID_RECORD"}),
    "throttled": lambda who, where: request(who, throttle_ms=10),
    "approval": lambda who, where: request(who, operations=[operation(where, decision="approval_required")]),
    "allowed": lambda who, where: request(who, operations=[operation(where, decision="allow")]),
    "login_failed": lambda who, where: failed_login(who, peer=f"{where}:5000"),
    "login_revoked": lambda who, where: failed_login(who, reason="revoked"),
    "cut": lambda who, where: events.session_end("s", who, "revoked", 1, 1, 1, started=0.0),
    "alert": lambda who, where: events.alert(events.ALERT_DENIED, request(who, decision="deny")),
}

steps = st.lists(st.tuples(st.sampled_from([0.0, 0.5, 7.0, 30.0, 61.0]), st.sampled_from(sorted(EVENTS)),
                           st.sampled_from(["alice", "bob"]), st.sampled_from(["topic:a", "topic:b"])),
                 max_size=120)


@random_inputs(300)
@given(steps, st.integers(1, 6), st.integers(1, 4))
def test_every_violation_is_emitted_or_counted_in_a_later_summary(sequence, max_per_window, threshold):
    clock = Clock()
    emitted: list[dict] = []
    alerter = Alerter(emitted.append, window_s=60, max_per_window=max_per_window,
                      auth_failure_threshold=threshold, clock=clock)
    # A twin with the same clock tells what each event raises before merging and limits.
    reference = Alerter(lambda event: None, window_s=60, auth_failure_threshold=threshold, clock=clock)
    violations = 0
    for advance, name, who, where in sequence:
        clock.now += advance
        event = EVENTS[name](who, where)
        if event["kind"] != "alert":
            violations += len(reference.violations(event))
        alerter(event)
    alerter.flush(final=True)

    assert all(a["kind"] == "alert" for a in emitted)
    assert sum(a.get("count", 1) for a in emitted) == violations
    at_once = [a for a in emitted if "count" not in a]
    summaries = [a for a in emitted if "count" in a and a["alert"] != ALERT_SUPPRESSED]
    assert len(summaries) <= len(at_once)


@random_inputs(200)
@given(steps, st.integers(1, 5))
def test_no_window_emits_more_first_alerts_than_the_limit(sequence, max_per_window):
    clock = Clock()
    emitted: list[tuple[float, dict]] = []
    alerter = Alerter(lambda event: emitted.append((clock.now, event)), window_s=60, max_per_window=max_per_window,
                      clock=clock)
    for advance, name, who, where in sequence:
        clock.now += advance
        alerter(EVENTS[name](who, where))
    # Windows open with an alert at once and last 60 s: count the first alerts in each.
    window_start = None
    in_window = 0
    for at, event in emitted:
        if "count" in event:
            continue
        if window_start is None or at >= window_start + 60:
            window_start, in_window = at, 0
        in_window += 1
        assert in_window <= max_per_window
