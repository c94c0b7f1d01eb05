"""Fetch responses read and rebuilt in place (plugins/kafka/fetchrecords.py), against the codec:
every partition it finds is the one the codec decodes, a rebuilt frame decodes to the body with
exactly the changes asked for, and hostile bytes raise Truncated and nothing else."""

from __future__ import annotations

import pytest
from hypothesis import given, strategies as st

from brokerguard.plugins.kafka import apis, fetchrecords
from brokerguard.plugins.kafka.protocol import codec
from brokerguard.plugins.kafka.rewrite import response_frame
from brokerguard._native.wire import Truncated

from fuzzing import random_inputs
from test_errorscan import fetch_bodies

versions = st.integers(fetchrecords.FIRST, fetchrecords.LAST)


def decoded(frame: bytes, version: int) -> dict:
    _, offset = codec.decode_response_header(frame, 4, codec.response_header_version(apis.FETCH, version))
    return codec.decode_response(apis.FETCH, version, frame, offset)


def codec_partitions(body: dict, version: int) -> list[tuple]:
    """(topic, index, error code, records) of every partition, as the codec reads them."""
    return [(topic["topic_id"] if version >= fetchrecords.TOPIC_IDS_FROM else topic["topic"],
             partition["partition_index"], partition["error_code"], partition["records"] or b"")
            for topic in body["responses"] for partition in topic["partitions"]]


@random_inputs(300)
@given(version=versions, body=fetch_bodies)
def test_partitions_are_the_codecs(version, body):
    frame = response_frame(7, apis.FETCH, version, body)
    error, partitions = fetchrecords.partitions(memoryview(frame), version)
    again = decoded(frame, version)
    assert error == again.get("error_code", 0)
    assert [(p.topic, p.index, p.error_code, frame[p.start : p.end]) for p in partitions] == \
        codec_partitions(again, version)


@random_inputs(300)
@given(version=versions, body=fetch_bodies, data=st.data())
def test_a_rebuilt_frame_has_exactly_the_changes_asked_for(version, body, data):
    frame = response_frame(7, apis.FETCH, version, body)
    _, partitions = fetchrecords.partitions(memoryview(frame), version)
    chosen = data.draw(st.sets(st.integers(0, max(len(partitions) - 1, 0))) if partitions else st.just(set()))
    records = {at: data.draw(st.one_of(st.none(), st.lists(st.binary(max_size=300), max_size=3))) for at in chosen}
    errors = {at: data.draw(st.sampled_from([2, 87])) for at in chosen if data.draw(st.booleans())}
    source = bytearray(frame)
    chunks = fetchrecords.rebuilt(memoryview(source), version, records, errors, partitions)
    source[:] = bytes(len(source))  # the buffer a next read would reuse: the chunks must not share it
    rebuilt = b"".join(chunks)
    expected = decoded(frame, version)
    flat = [partition for topic in expected["responses"] for partition in topic["partitions"]]
    for at, new in records.items():
        flat[at]["records"] = None if new is None else b"".join(new)
    for at, code in errors.items():
        flat[at]["error_code"] = code
    assert decoded(rebuilt, version) == expected
    assert int.from_bytes(rebuilt[:4], "big") == len(rebuilt) - 4
    if not records and not errors:
        assert rebuilt == frame


@random_inputs(500)
@given(version=versions, body=fetch_bodies, cut=st.integers(1, 60), junk=st.binary(max_size=40),
       at=st.integers(0, 200))
def test_hostile_bytes_raise_truncated_or_read_as_the_codec_does(version, body, cut, junk, at):
    frame = response_frame(7, apis.FETCH, version, body)
    at = min(at, len(frame))
    for candidate in (frame[: max(8, len(frame) - cut)], frame[:at] + junk + frame[at:], frame + junk, junk):
        try:
            error, partitions = fetchrecords.partitions(memoryview(candidate), version)
        except Truncated:
            continue
        again = decoded(candidate, version)  # what this reader accepts, the codec reads the same
        assert [(p.topic, p.index, p.error_code, candidate[p.start : p.end]) for p in partitions] == \
            codec_partitions(again, version)


@pytest.mark.parametrize("version", [12, 15])
def test_a_partitions_tagged_structs_are_checked_as_the_codec_checks_them(version):
    """diverging_epoch, current_leader and snapshot_id are skipped only when they fill exactly
    the bytes they declare, and tags must ascend: what the walk accepts the codec reads."""
    body = {"throttle_time_ms": 0, "error_code": 0, "session_id": 0, "responses": [
        {"topic": "t", "topic_id": b"\x01" * 16, "partitions": [
            {"partition_index": 3, "error_code": 0, "high_watermark": 9, "last_stable_offset": 9,
             "log_start_offset": 0, "aborted_transactions": None, "preferred_read_replica": -1,
             "diverging_epoch": {"epoch": 2, "end_offset": 77}, "current_leader": {"leader_id": 1, "leader_epoch": 4},
             "snapshot_id": {"end_offset": 50, "epoch": 3}, "records": b"abc"}]}]}
    frame = response_frame(7, apis.FETCH, version, body)
    _, partitions = fetchrecords.partitions(memoryview(frame), version)
    assert [(p.index, frame[p.start : p.end]) for p in partitions] == [(3, b"abc")]
    tags = frame.index(b"abc") + 3  # the partition's tagged fields: count, then tag 0
    assert frame[tags : tags + 3] == b"\x03\x00\x0d"  # three fields; diverging_epoch, 13 bytes
    padded = frame[: tags + 2] + b"\x0e" + frame[tags + 3 : tags + 16] + b"\x00" + frame[tags + 16 :]
    for broken in (len(padded[4:]).to_bytes(4, "big") + padded[4:],  # a byte more than the struct fills
                   frame[: tags + 1] + b"\x01" + frame[tags + 2 :]):  # tag 1 twice: not ascending
        with pytest.raises(Truncated):
            fetchrecords.partitions(memoryview(broken), version)
        with pytest.raises(codec.DecodeError):
            decoded(broken, version)


@pytest.mark.parametrize("version", [4, 11, 12, 15])
def test_null_and_empty_records_have_no_span(version):
    body = {"throttle_time_ms": 0, "error_code": 0, "session_id": 0, "responses": [
        {"topic": "t", "topic_id": b"\x01" * 16, "partitions": [
            {"partition_index": 0, "error_code": 0, "high_watermark": 0, "last_stable_offset": 0,
             "log_start_offset": 0, "aborted_transactions": None, "preferred_read_replica": -1, "records": None},
            {"partition_index": 1, "error_code": 6, "high_watermark": 0, "last_stable_offset": 0,
             "log_start_offset": 0, "aborted_transactions": [], "preferred_read_replica": -1, "records": b""}]}]}
    frame = response_frame(3, apis.FETCH, version, body)
    error, partitions = fetchrecords.partitions(memoryview(frame), version)
    assert error == 0
    assert [(p.index, p.error_code, p.end - p.start) for p in partitions] == [(0, 0, 0), (1, 6, 0)]
