"""Fetch requests read for their topics alone (plugins/kafka/fetchrequest.py), against the codec:
what the reader gives is what the codec decodes, a request it does not cover (a top-level
tagged field, a follower's replica state) is left to the codec, and hostile bytes raise
ValueError and nothing else, never a reading the codec does not share."""

from __future__ import annotations

import pytest
from hypothesis import given, strategies as st

from brokerguard.plugins.kafka import apis, fetchrequest
from brokerguard.plugins.kafka.protocol import codec
from brokerguard.plugins.kafka.rewrite import VERSION_CAPS

from fuzzing import random_inputs

versions = st.integers(fetchrequest.FIRST, fetchrequest.LAST)
names = st.text(max_size=12)
topic_ids = st.binary(min_size=16, max_size=16)
partitions = st.lists(st.fixed_dictionaries({
    "partition": st.integers(-1, 9), "current_leader_epoch": st.integers(-1, 9), "fetch_offset": st.integers(-1, 2**40),
    "last_fetched_epoch": st.integers(-1, 9), "log_start_offset": st.integers(-1, 2**40),
    "partition_max_bytes": st.integers(0, 2**20)}), max_size=3)
bodies = st.fixed_dictionaries({
    "replica_id": st.sampled_from([-1, -1, 0, 3]), "max_wait_ms": st.integers(0, 500), "min_bytes": st.integers(0, 9),
    "max_bytes": st.integers(0, 2**26), "isolation_level": st.integers(0, 1), "session_id": st.integers(0, 9),
    "session_epoch": st.integers(-1, 9),
    "topics": st.lists(st.fixed_dictionaries({"topic": names, "topic_id": topic_ids, "partitions": partitions}),
                       max_size=3),
    "forgotten_topics_data": st.lists(st.fixed_dictionaries({
        "topic": names, "topic_id": topic_ids, "partitions": st.lists(st.integers(0, 9), max_size=3)}), max_size=2),
    "rack_id": names},
    # Top-level tagged fields (v12+), written only when given, as clients leave them out.
    optional={"cluster_id": st.one_of(st.none(), names),
              "replica_state": st.fixed_dictionaries({"replica_id": st.integers(-1, 3),
                                                      "replica_epoch": st.integers(-1, 9)})})


def frame(version: int, body: dict, client_id: str | None = "consumer-1") -> bytes:
    payload = codec.encode_request_header(apis.FETCH, version, 7, client_id) + codec.encode_request(apis.FETCH, version, body)
    return len(payload).to_bytes(4, "big") + payload


def codec_reading(data: bytes, version: int) -> tuple[str | None, dict]:
    """What deciding a Fetch takes from the codec's decoding of the request, in the reader's shape."""
    header = codec.decode_request_header(data[4:])
    body = codec.decode_request(apis.FETCH, version, data[4:], header.body_offset, trailing=True)
    state = body.get("replica_state")
    key = "topic_id" if version >= fetchrequest.TOPIC_IDS_FROM else "topic"
    return header.client_id, {"replica_id": state["replica_id"] if state else body.get("replica_id", -1),
                              "session_id": body.get("session_id", 0),
                              "topics": [{key: topic[key]} for topic in body["topics"]]}


def replica_state(version: int, body: dict) -> bool:
    """Whether the request carries a replica state (v15+), which the reader leaves to the codec."""
    return version >= 15 and "replica_state" in body


def test_it_covers_every_version_the_gateway_offers():
    """From the codec's first Fetch version to the cap the gateway offers clients."""
    assert (fetchrequest.FIRST, fetchrequest.LAST) == (codec.API_KEYS[apis.FETCH].request.versions.lo,
                                                       VERSION_CAPS[apis.FETCH])


@random_inputs(400)
@given(version=versions, body=bodies, client_id=st.one_of(st.none(), names))
def test_reads_what_the_codec_reads(version, body, client_id):
    data = frame(version, body, client_id)
    if replica_state(version, body):
        with pytest.raises(ValueError, match="replica state"):
            fetchrequest.read(data, 0, len(data))
        return
    assert fetchrequest.read(data, 0, len(data)) == codec_reading(data, version)
    # In place: the frame among others in one read buffer.
    buffer = b"\x00" * 5 + data + b"\xff" * 3
    assert fetchrequest.read(memoryview(buffer), 5, 5 + len(data)) == codec_reading(data, version)


def test_a_followers_replica_state_is_left_to_the_codec():
    body = {"max_wait_ms": 500, "min_bytes": 1, "max_bytes": 1 << 20, "isolation_level": 0, "session_id": 0,
            "session_epoch": -1, "topics": [], "forgotten_topics_data": [], "rack_id": "",
            "replica_state": {"replica_id": 2, "replica_epoch": 4}}
    data = frame(15, body)
    with pytest.raises(ValueError, match="replica state"):
        fetchrequest.read(data, 0, len(data))
    assert codec_reading(data, 15)[1]["replica_id"] == 2


@random_inputs(600)
@given(version=versions, body=bodies, cut=st.integers(1, 60), junk=st.binary(max_size=40), at=st.integers(0, 200))
def test_hostile_bytes_raise_value_error_or_read_as_the_codec_does(version, body, cut, junk, at):
    data = frame(version, body)
    at = min(at, len(data))
    for candidate in (data[: max(4, len(data) - cut)], data[:at] + junk + data[at:], data + junk, junk):
        try:
            read = fetchrequest.read(candidate, 0, len(candidate))
        except ValueError:
            continue
        # What this reader accepts is a Fetch request the codec reads alike (the size prefix is
        # the framer's business, so only what follows it counts).
        assert read == codec_reading(candidate, version)


def test_a_string_length_below_minus_one_is_refused_as_the_codec_refuses_it():
    data = bytearray(frame(4, {"replica_id": -1, "max_wait_ms": 0, "min_bytes": 0, "max_bytes": 0, "isolation_level": 0,
                               "topics": []}))
    data[12:14] = (-32764).to_bytes(2, "big", signed=True)  # the client id's length: only -1 is null
    with pytest.raises(ValueError, match="string length -32764 .* is neither -1"):
        fetchrequest.read(bytes(data), 0, len(data))
    with pytest.raises(codec.DecodeError, match="negative length -32764"):
        codec_reading(bytes(data), 4)


def test_other_apis_versions_and_ranges_are_refused():
    body = {"replica_id": -1, "max_wait_ms": 0, "min_bytes": 0, "max_bytes": 0, "isolation_level": 0,
            "topics": [{"topic": "t", "partitions": []}]}
    data = frame(4, body)
    for other in (data[:6] + b"\x00\x03" + data[8:], data[:6] + b"\x00\x10" + data[8:],  # v3, v16
                  data[:4] + b"\x00\x00" + data[6:]):  # a Produce
        with pytest.raises(ValueError, match="not a Fetch request"):
            fetchrequest.read(other, 0, len(other))
    with pytest.raises(ValueError, match="outside"):
        fetchrequest.read(data, 0, len(data) + 1)
