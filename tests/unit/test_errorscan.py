"""The Produce and Fetch error scanners, held to the codec's reading of the same bytes: "clean"
only when the codec reads the frame and finds no error code set, and for every such frame the
broker sends (batch errors come only with an error code)."""

from __future__ import annotations

from hypothesis import given, strategies as st

from brokerguard._native import PRODUCE_LAST_VERSION
from brokerguard.plugins.kafka import apis, audit, errorscan, fetchrecords
from brokerguard.plugins.kafka.protocol import codec
from brokerguard.plugins.kafka.rewrite import response_frame

from fuzzing import random_inputs

names = st.text(st.characters(min_codepoint=32, max_codepoint=0x2FF), max_size=12)
codes = st.sampled_from([0, 0, 0, 1, 6, 87])
messages = st.one_of(st.none(), names)
batch_errors = st.lists(st.fixed_dictionaries({"batch_index": st.integers(0, 9), "batch_index_error_message": messages}),
                        max_size=2)
produce_partitions = st.lists(st.fixed_dictionaries({
    "index": st.integers(0, 99), "error_code": codes, "base_offset": st.integers(-1, 2**40),
    "log_append_time_ms": st.integers(-1, 2**40), "log_start_offset": st.integers(-1, 2**40),
    "record_errors": batch_errors, "error_message": messages}), max_size=3)
produce_bodies = st.fixed_dictionaries({
    "responses": st.lists(st.fixed_dictionaries({"name": names, "partition_responses": produce_partitions}), max_size=3),
    "throttle_time_ms": st.integers(0, 1000)})
aborted = st.one_of(st.none(), st.lists(st.fixed_dictionaries(
    {"producer_id": st.integers(0, 2**40), "first_offset": st.integers(0, 2**40)}), max_size=2))
fetch_partitions = st.lists(st.fixed_dictionaries({
    "partition_index": st.integers(0, 99), "error_code": codes, "high_watermark": st.integers(-1, 2**40),
    "last_stable_offset": st.integers(-1, 2**40), "log_start_offset": st.integers(-1, 2**40),
    "aborted_transactions": aborted, "preferred_read_replica": st.integers(-1, 3),
    "records": st.one_of(st.none(), st.binary(max_size=64))}), max_size=3)
fetch_bodies = st.fixed_dictionaries({
    "throttle_time_ms": st.integers(0, 1000), "error_code": codes, "session_id": st.integers(0, 9),
    "responses": st.lists(st.fixed_dictionaries({"topic": names, "topic_id": st.binary(min_size=16, max_size=16),
                                                 "partitions": fetch_partitions}), max_size=3)})
responses = st.one_of(
    st.tuples(st.just(apis.PRODUCE), st.integers(3, PRODUCE_LAST_VERSION), produce_bodies),
    st.tuples(st.just(apis.FETCH), st.integers(fetchrecords.FIRST, fetchrecords.LAST), fetch_bodies))


def codec_errors(api_key: int, version: int, frame: bytes) -> dict | None:
    try:
        _, offset = codec.decode_response_header(frame, 4, codec.response_header_version(api_key, version))
        return audit.errors_of(codec.decode_response(api_key, version, frame, offset))
    except codec.DecodeError:
        return None


@random_inputs(400)
@given(response=responses)
def test_clean_when_the_codec_finds_no_error(response):
    api_key, version, body = response
    frame = response_frame(7, api_key, version, body)
    batch_errors = any(p["record_errors"] for t in body.get("responses", ()) for p in t.get("partition_responses", ()))
    expected = codec_errors(api_key, version, frame) == {} and not (batch_errors and version >= 8)
    assert errorscan.clean(api_key, version, memoryview(frame)) == expected
    # What the audit trail records is the codec's reading, fast path or not.
    assert audit.response_errors(api_key, version, memoryview(frame)) == codec_errors(api_key, version, frame)


@random_inputs(600)
@given(response=responses, cut=st.integers(1, 60), junk=st.binary(max_size=40), at=st.integers(0, 200))
def test_hostile_bytes_are_never_called_clean_unless_the_codec_agrees(response, cut, junk, at):
    api_key, version, body = response
    frame = response_frame(7, api_key, version, body)
    at = min(at, len(frame))
    for candidate in (frame[: max(8, len(frame) - cut)], frame[:at] + junk + frame[at:], frame + junk, junk):
        if errorscan.clean(api_key, version, memoryview(candidate)):
            assert codec_errors(api_key, version, candidate) == {}


def test_other_apis_and_versions_are_left_to_the_codec():
    body = {"responses": [], "throttle_time_ms": 0}
    assert errorscan.clean(apis.PRODUCE, 9, memoryview(response_frame(1, apis.PRODUCE, 9, body)))
    assert not errorscan.clean(apis.PRODUCE, 10, memoryview(response_frame(1, apis.PRODUCE, 10, body)))
    assert not errorscan.clean(apis.METADATA, 9, memoryview(response_frame(1, apis.PRODUCE, 9, body)))
