"""The Produce reader that skips records, held to the codec's reading of the same bytes."""

from __future__ import annotations

import pytest
from hypothesis import given, settings, strategies as st

from brokerguard.plugins.kafka import produce
from brokerguard.plugins.kafka.protocol import codec

names = st.text(st.characters(min_codepoint=32, max_codepoint=0x2FF), max_size=20)
records = st.one_of(st.none(), st.binary(max_size=64))
partitions = st.lists(st.fixed_dictionaries({"index": st.integers(-1, 2**31 - 1), "records": records}), max_size=4)
topics = st.lists(st.fixed_dictionaries({"name": names, "partition_data": partitions}), max_size=4)


def frame(version: int, body: dict, client_id: str | None) -> bytes:
    payload = codec.encode_request_header(0, version, 7, client_id) + codec.encode_request(0, version, body)
    return len(payload).to_bytes(4, "big") + payload


@settings(max_examples=300, deadline=None)
@given(version=st.integers(3, produce.LAST_VERSION), txn=st.one_of(st.none(), names),
       acks=st.sampled_from([-1, 0, 1]), data=topics, client_id=st.one_of(st.none(), names))
def test_reads_what_the_codec_reads(version, txn, acks, data, client_id):
    body = {"transactional_id": txn, "acks": acks, "timeout_ms": 1500, "topic_data": data}
    raw = frame(version, body, client_id)
    buffer = bytearray(b"xx" + raw)
    spans: list = []
    got_client, got = produce.read(buffer, 2, 2 + len(raw), spans)
    header = codec.decode_request_header(raw, 4)
    full = codec.decode_request(0, version, raw, header.body_offset)
    assert got_client == header.client_id
    assert got["transactional_id"] == full["transactional_id"] and got["acks"] == full["acks"]
    assert [(t["name"], [p["index"] for p in t["partition_data"]]) for t in got["topic_data"]] == \
        [(t["name"], [p["index"] for p in t["partition_data"]]) for t in full["topic_data"]]
    # The spans point at exactly the records the codec reads (null records have none).
    assert [(topic, index, bytes(buffer[start:end])) for topic, index, start, end in spans] == \
        [(t["name"], p["index"], bytes(p["records"])) for t in full["topic_data"] for p in t["partition_data"]
         if p["records"] is not None]


@settings(max_examples=500, deadline=None)
@given(version=st.integers(3, produce.LAST_VERSION), data=topics, cut=st.integers(0, 200), junk=st.binary(max_size=40))
def test_hostile_bytes_only_raise_value_error(version, data, cut, junk):
    raw = frame(version, {"transactional_id": None, "acks": 1, "timeout_ms": 1, "topic_data": data}, "c")
    for candidate in (raw[: max(4, len(raw) - cut)], raw[:12] + junk, junk):
        try:
            produce.read(candidate, 0, len(candidate))
        except ValueError:
            pass


def test_other_apis_and_versions_are_refused():
    raw = frame(9, {"transactional_id": None, "acks": 1, "timeout_ms": 1, "topic_data": []}, None)
    with pytest.raises(ValueError):
        produce.read(raw[:4] + b"\x00\x01" + raw[6:], 0, len(raw))  # Fetch's key
