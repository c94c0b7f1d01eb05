"""The Produce request reader and response check (brokerguard._native.produce and its
pure-Python twin), held to the codec's reading of the same bytes and to each other."""

from __future__ import annotations

import pytest
from hypothesis import given, strategies as st

from brokerguard._native import produce, produce_py
from brokerguard.plugins.kafka.protocol import codec
from brokerguard.plugins.kafka.rewrite import response_frame

from fuzzing import random_inputs

TWINS = [pytest.param(produce, id="cython"), pytest.param(produce_py, id="python")]

names = st.text(st.characters(min_codepoint=32, max_codepoint=0x2FF), max_size=20)
records = st.one_of(st.none(), st.binary(max_size=64))
partitions = st.lists(st.fixed_dictionaries({"index": st.integers(-1, 2**31 - 1), "records": records}), max_size=4)
topics = st.lists(st.fixed_dictionaries({"name": names, "partition_data": partitions}), max_size=4)
versions = st.integers(3, produce.LAST_VERSION)
codes = st.sampled_from([0, 0, 0, 1, 6, 87])
messages = st.one_of(st.none(), names)
answers = st.fixed_dictionaries({
    "responses": st.lists(st.fixed_dictionaries({"name": names, "partition_responses": st.lists(
        st.fixed_dictionaries({
            "index": st.integers(0, 99), "error_code": codes, "base_offset": st.integers(-1, 2**40),
            "log_append_time_ms": st.integers(-1, 2**40), "log_start_offset": st.integers(-1, 2**40),
            "record_errors": st.lists(st.fixed_dictionaries(
                {"batch_index": st.integers(0, 9), "batch_index_error_message": messages}), max_size=2),
            "error_message": messages}), max_size=3)}), max_size=3),
    "throttle_time_ms": st.integers(0, 1000)})


def frame(version: int, body: dict, client_id: str | None) -> bytes:
    payload = codec.encode_request_header(0, version, 7, client_id) + codec.encode_request(0, version, body)
    return len(payload).to_bytes(4, "big") + payload


def outcome(call, *args):
    """A call's result, or the type of what it raised, so the twins can be compared."""
    try:
        return call(*args)
    except ValueError as err:
        return type(err)


def test_the_twins_cover_the_same_versions():
    assert (produce.FLEXIBLE_FROM, produce.LAST_VERSION) == (produce_py.FLEXIBLE_FROM, produce_py.LAST_VERSION)


@pytest.mark.parametrize("twin", TWINS)
@random_inputs(300)
@given(version=versions, txn=st.one_of(st.none(), names), acks=st.sampled_from([-1, 0, 1]), data=topics,
       client_id=st.one_of(st.none(), names))
def test_reads_what_the_codec_reads(twin, version, txn, acks, data, client_id):
    body = {"transactional_id": txn, "acks": acks, "timeout_ms": 1500, "topic_data": data}
    raw = frame(version, body, client_id)
    buffer = bytearray(b"xx" + raw)
    spans: list = []
    got_client, got = twin.read_request(buffer, 2, 2 + len(raw), spans)
    header = codec.decode_request_header(raw, 4)
    full = codec.decode_request(0, version, raw, header.body_offset)
    assert got_client == header.client_id
    assert (got["transactional_id"], got["acks"], got["timeout_ms"]) == (
        full["transactional_id"], full["acks"], full["timeout_ms"])
    assert [(t["name"], [p["index"] for p in t["partition_data"]]) for t in got["topic_data"]] == \
        [(t["name"], [p["index"] for p in t["partition_data"]]) for t in full["topic_data"]]
    # The spans point at exactly the records the codec reads (null records have none).
    assert [(topic, index, bytes(buffer[start:end])) for topic, index, start, end in spans] == \
        [(t["name"], p["index"], bytes(p["records"])) for t in full["topic_data"] for p in t["partition_data"]
         if p["records"] is not None]


@pytest.mark.parametrize("twin", TWINS)
@pytest.mark.parametrize("at", [12, 15])  # the client id's length; the transactional id's (v3, client id "c")
def test_a_string_length_below_minus_one_is_refused_as_the_codec_refuses_it(twin, at):
    raw = bytearray(frame(3, {"transactional_id": None, "acks": 1, "timeout_ms": 1, "topic_data": []}, "c"))
    raw[at:at + 2] = (-2).to_bytes(2, "big", signed=True)  # only -1 is null
    with pytest.raises(ValueError, match="string length -2 .* is neither -1"):
        twin.read_request(raw, 0, len(raw))
    with pytest.raises(codec.DecodeError, match="negative length -2"):
        header = codec.decode_request_header(bytes(raw), 4)
        codec.decode_request(0, 3, bytes(raw), header.body_offset)


@random_inputs(500)
@given(version=versions, data=topics, cut=st.integers(0, 200), junk=st.binary(max_size=40), at=st.integers(0, 99))
def test_hostile_requests_raise_value_error_alike(version, data, cut, junk, at):
    raw = frame(version, {"transactional_id": None, "acks": 1, "timeout_ms": 1, "topic_data": data}, "c")
    at = min(at, len(raw))
    for candidate in (raw[: max(4, len(raw) - cut)], raw[:12] + junk, raw[:at] + junk + raw[at:], junk):
        spans_c: list = []
        spans_py: list = []
        compiled = outcome(produce.read_request, candidate, 0, len(candidate), spans_c)
        assert compiled == outcome(produce_py.read_request, candidate, 0, len(candidate), spans_py)
        if not isinstance(compiled, type):
            assert spans_c == spans_py


@pytest.mark.parametrize("twin", TWINS)
def test_other_apis_versions_and_ranges_are_refused(twin):
    raw = frame(9, {"transactional_id": None, "acks": 1, "timeout_ms": 1, "topic_data": []}, None)
    assert twin.read_request(raw, 0, len(raw)) == (None, {"transactional_id": None, "acks": 1, "timeout_ms": 1,
                                                          "topic_data": []})
    with pytest.raises(ValueError):
        twin.read_request(raw[:4] + b"\x00\x01" + raw[6:], 0, len(raw))  # Fetch's key
    with pytest.raises(ValueError):
        twin.read_request(raw[:6] + b"\x00\x0a" + raw[8:], 0, len(raw))  # v10
    with pytest.raises(ValueError):
        twin.read_request(raw, 0, len(raw) + 1)


@pytest.mark.parametrize("twin", TWINS)
@random_inputs(300)
@given(version=versions, body=answers)
def test_a_response_is_clean_when_the_codec_finds_no_error(twin, version, body):
    raw = response_frame(7, 0, version, body)
    parts = [p for t in body["responses"] for p in t["partition_responses"]]
    expected = not any(p["error_code"] for p in parts) and not (version >= 8 and any(p["record_errors"] for p in parts))
    assert twin.response_clean(memoryview(raw), version) is expected


@random_inputs(600)
@given(version=versions, body=answers, cut=st.integers(1, 60), junk=st.binary(max_size=40), at=st.integers(0, 200))
def test_hostile_responses_are_judged_alike(version, body, cut, junk, at):
    raw = response_frame(7, 0, version, body)
    at = min(at, len(raw))
    for candidate in (raw[: max(8, len(raw) - cut)], raw[:at] + junk + raw[at:], raw + junk, junk):
        assert produce.response_clean(candidate, version) is produce_py.response_clean(candidate, version)
