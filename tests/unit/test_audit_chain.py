"""The hash chain: a sealed stream verifies; any edit, removal, insertion or reordering is named."""
import copy
import hashlib
import hmac

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fuzzing import random_inputs

from brokerguard.audit.chain import Chain, canonical, verify

KEY = b"chain-key-0123456789abcdef"


def stream(count: int, name: str = "gw:1:a", key: bytes | None = KEY, end: bool = True) -> list[dict]:
    chain = Chain(name, key)
    events = [{"kind": "stream_start", "time": 1.0, "gateway": "gw"}]
    events += [{"kind": "request", "time": 2.0 + i, "session": "s1", "seq": i, "api": "Produce",
                "operations": [{"action": "produce", "resource": "topic:orders", "decision": "allow"}]}
               for i in range(count)]
    if end:
        events.append({"kind": "stream_end", "time": 99.0, "gateway": "gw"})
    for event in events:
        chain.seal(event)
    return events


def test_a_sealed_stream_is_intact():
    events = stream(5)
    result = verify(events, KEY)
    assert result.intact and result.events == 7 and result.streams == 1 and result.open_streams == []
    assert [e["index"] for e in events] == list(range(7))
    assert events[0]["prev"] == "" and all(b["prev"] == a["hash"] for a, b in zip(events, events[1:]))


def test_the_line_is_the_event_and_the_hash_covers_the_rest():
    chain = Chain("s", None)
    event = {"kind": "login", "time": 1.5, "session": "x", "ok": True}
    line = chain.seal(event)
    assert orjson.loads(line) == event
    assert canonical(event) == canonical(orjson.loads(line))


@pytest.mark.parametrize("key", [KEY, None])
def test_the_hash_is_the_documented_one(key):
    """HMAC-SHA256 under the key (SHA-256 without one) of prev, a newline and the canonical
    JSON: what an auditor's own tool recomputes."""
    events = stream(2, key=key)
    for event in events:
        data = event["prev"].encode() + b"\n" + canonical(event)
        expected = hmac.new(key, data, "sha256").hexdigest() if key else hashlib.sha256(data).hexdigest()
        assert event["hash"] == expected


def test_streams_of_several_workers_verify_together_in_any_order():
    events = stream(3, "a") + stream(4, "b")
    mixed = events[::2] + events[1::2]
    assert verify(mixed, KEY).intact


def test_an_edit_is_named():
    events = stream(5)
    events[3]["operations"][0]["decision"] = "deny"
    [problem] = verify(events, KEY).problems
    assert (problem.stream, problem.index) == ("gw:1:a", 3)
    assert "edited" in str(problem)


def test_an_edit_with_the_hashes_recomputed_needs_the_key():
    events = stream(5)
    events[3]["seq"] = 42
    forged = Chain("gw:1:a", b"a guess")  # a forger without the key reseals from the edit on
    forged._index, forged._prev = 3, events[2]["hash"]
    for event in events[3:]:
        forged.seal(event)
    [problem] = verify(events, KEY).problems
    assert problem.index == 3 and "edited" in problem.what


def test_without_a_key_only_naive_edits_are_caught():
    events = stream(5, key=None)
    events[2]["seq"] = 7
    assert not verify(events, None).intact


def test_a_removal_is_named():
    events = stream(5)
    del events[2]
    [problem] = verify(events, KEY).problems
    assert problem.index == 2 and "event 2 removed" in problem.what


def test_removing_the_tail_leaves_an_open_stream():
    events = stream(5)[:-2]
    result = verify(events, KEY)
    assert result.intact and result.open_streams == ["gw:1:a"]


def test_a_copy_is_named():
    events = stream(3)
    events.append(copy.deepcopy(events[1]))
    [problem] = verify(events, KEY).problems
    assert problem.index == 1 and "twice" in problem.what


def test_a_swap_is_named():
    events = stream(4)
    events[1]["index"], events[2]["index"] = 2, 1
    [problem] = verify(events, KEY).problems
    assert problem.index == 1


def test_events_without_a_chain_are_named():
    events = stream(2) + [{"kind": "request", "time": 3.0}]
    result = verify(events, KEY)
    assert not result.intact and "without stream and index" in str(result.problems[0])


@random_inputs(200)
@given(count=st.integers(1, 12), data=st.data())
def test_any_single_tampering_is_caught(count, data):
    events = stream(count)
    how = data.draw(st.sampled_from(["edit", "remove", "duplicate", "swap", "rekey"]))
    at = data.draw(st.integers(0, len(events) - 2))  # the last event: see test_removing_the_tail
    if how == "edit":
        field = data.draw(st.sampled_from(["time", "kind", "session", "gateway", "seq"]))
        events[at][field] = data.draw(st.integers(-5, 5) | st.text(max_size=3))
        if canonical(events[at]) == canonical(stream(count)[at]):
            return  # drew the same value
    elif how == "remove":
        del events[at]
    elif how == "duplicate":
        events.insert(at, copy.deepcopy(events[at]))
    elif how == "swap":
        events[at], events[at + 1] = events[at + 1], events[at]
        events[at]["index"], events[at + 1]["index"] = events[at + 1]["index"], events[at]["index"]
    else:
        events[at]["hash"] = "0" * 64
    assert not verify(events, KEY).intact


@pytest.mark.parametrize("key", [None, KEY])
def test_verification_of_an_empty_store(key):
    result = verify([], key)
    assert result.intact and result.events == 0
