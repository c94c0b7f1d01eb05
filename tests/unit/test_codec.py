"""The schema-driven Kafka codec: round trips for every API/version/direction, golden bytes laid
out by hand from the protocol guide, headers, error locations, and fuzzing (decode must only
ever raise DecodeError). Hypothesis prints the seed and a reproduction blob on failure."""
from __future__ import annotations

import functools
import struct
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fuzzing import random_inputs

from brokerguard.plugins.kafka.protocol import codec, generate, schema
from brokerguard.plugins.kafka.protocol.codec import DecodeError, EncodeError

UNKNOWN = codec.UNKNOWN_TAGS
METADATA, FIND_COORDINATOR, API_VERSIONS, FETCH = 3, 10, 18, 1

CASES = [
    (api.key, version, is_request)
    for api in codec.API_KEYS.values()
    for is_request in (True, False)
    for version in range((api.request if is_request else api.response).versions.lo,
                         (api.request if is_request else api.response).versions.hi + 1)
]


def case_id(case) -> str:
    key, version, is_request = case
    return f"{codec.API_KEYS[key].name}-v{version}-{'request' if is_request else 'response'}"


def encode(case, obj) -> bytes:
    key, version, is_request = case
    return (codec.encode_request if is_request else codec.encode_response)(key, version, obj)


def decode(case, data) -> dict:
    key, version, is_request = case
    return (codec.decode_request if is_request else codec.decode_response)(key, version, data)


# --- values drawn from the schema --------------------------------------------------------------

_INTS = {"int8": 8, "int16": 16, "int32": 32, "int64": 64}


def _primitive(kind: str) -> st.SearchStrategy:
    if kind in _INTS:
        bits = _INTS[kind]
        return st.integers(-(2 ** (bits - 1)), 2 ** (bits - 1) - 1)
    if kind in ("uint16", "uint32"):
        return st.integers(0, 2 ** int(kind[4:]) - 1)
    return {
        "bool": st.booleans(),
        "float64": st.floats(allow_nan=False),
        "string": st.text(max_size=8),
        "bytes": st.binary(max_size=8),
        "records": st.binary(max_size=8),
        "uuid": st.binary(min_size=16, max_size=16),
    }[kind]


def _value(f: schema.FieldSpec, version: int, flexible: bool) -> st.SearchStrategy:
    if f.is_struct:
        item = _struct(f.fields, version, flexible)
    else:
        item = _primitive(f.element_type)
    value = st.lists(item, max_size=2) if f.is_array else item
    return st.none() | value if f.nullable(version) else value


def _struct(fields, version: int, flexible: bool) -> st.SearchStrategy:
    required, optional = {}, {}
    for f in fields:
        if f.present(version):
            tagged = flexible and f.tagged(version)
            (optional if tagged else required)[f.key] = _value(f, version, flexible)
    if flexible:
        known = {f.tag for f in fields if f.present(version) and f.tagged(version)}
        tags = st.integers(0, 2 ** 31 - 1).filter(lambda tag: tag not in known)
        optional[UNKNOWN] = st.dictionaries(tags, st.binary(max_size=4), min_size=1, max_size=2)
    return st.fixed_dictionaries(required, optional=optional)


@functools.cache
def message_values(case) -> st.SearchStrategy:
    key, version, is_request = case
    api = codec.API_KEYS[key]
    spec = api.request if is_request else api.response
    return _struct(spec.fields, version, spec.flexible(version))


FAST = random_inputs(15)


# --- every API, every version, both directions --------------------------------------------------

@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_defaults_round_trip(case):
    data = encode(case, {})
    assert encode(case, decode(case, data)) == data


@pytest.mark.parametrize("case", CASES, ids=case_id)
@FAST
@given(data=st.data())
def test_round_trip(case, data):
    obj = data.draw(message_values(case), label="value")
    wire = encode(case, obj)
    back = decode(case, wire)
    assert back == obj
    assert encode(case, back) == wire


def test_schema_covers_the_pinned_kafka():
    assert codec.KAFKA_VERSION == generate.kafka_version()
    assert len(CASES) > 500
    metadata = codec.API_KEYS[METADATA]
    assert (metadata.name, metadata.min_version) == ("Metadata", 0)
    assert metadata.max_version >= 12
    assert (metadata.request_flexible_from, metadata.response_flexible_from) == (9, 9)
    assert codec.API_KEYS[17].request_flexible_from is None  # SaslHandshake never went flexible
    assert codec.API_BY_NAME["FindCoordinator"].key == FIND_COORDINATOR
    assert metadata.response_has_field("host") and not metadata.request_has_field("host")
    assert {k for k, api in codec.API_KEYS.items() if api.response_has_field("port")} >= {
        METADATA, FIND_COORDINATOR, 60}  # DescribeCluster


@pytest.mark.parametrize("name, key", [
    ("ThrottleTimeMs", "throttle_time_ms"), ("IsInternal", "is_internal"),
    ("ProducerIdStart", "producer_id_start"), ("TopicID", "topic_id"),
    ("KRaftVersion", "kraft_version"), ("Enable2Pc", "enable2_pc"),
    ("V3AndBelowTopics", "v3_and_below_topics"),
])
def test_snake_case(name, key):
    assert schema.snake_case(name) == key


def test_defaults_follow_the_spec():
    assert codec.decode_request(METADATA, 4, codec.encode_request(METADATA, 4, {})) == {
        "topics": [], "allow_auto_topic_creation": True}
    wire = codec.encode_response(METADATA, 12, {"topics": [{}]})
    body = codec.decode_response(METADATA, 12, wire)
    assert body["controller_id"] == -1 and body["cluster_id"] is None
    assert body["topics"][0]["topic_id"] == bytes(16)
    assert body["topics"][0]["topic_authorized_operations"] == -2 ** 31


# --- golden bytes, laid out by hand from the protocol guide -------------------------------------

def test_api_versions_v0_response():
    wire = bytes.fromhex("0000" "00000002" "0000" "0000" "0009" "0003" "0000" "000c")
    body = {"error_code": 0, "api_keys": [
        {"api_key": 0, "min_version": 0, "max_version": 9},
        {"api_key": 3, "min_version": 0, "max_version": 12}]}
    assert codec.decode_response(API_VERSIONS, 0, wire) == body
    assert codec.encode_response(API_VERSIONS, 0, body) == wire


def test_metadata_v1_request():
    wire = bytes.fromhex("00000002" "0003") + b"foo" + bytes.fromhex("0004") + b"bars"
    body = {"topics": [{"name": "foo"}, {"name": "bars"}]}
    assert codec.decode_request(METADATA, 1, wire) == body
    assert codec.encode_request(METADATA, 1, body) == wire
    all_topics = bytes.fromhex("ffffffff")  # null: every topic, from v1 on
    assert codec.decode_request(METADATA, 1, all_topics) == {"topics": None}
    assert codec.encode_request(METADATA, 1, {"topics": None}) == all_topics
    with pytest.raises(DecodeError, match=r"Metadata request v0: \$\.topics: null .* not nullable"):
        codec.decode_request(METADATA, 0, all_topics)
    with pytest.raises(EncodeError, match=r"\$\.topics: null"):
        codec.encode_request(METADATA, 0, {"topics": None})


def test_find_coordinator_v4_response():
    wire = bytes.fromhex(
        "00000000"  # throttle_time_ms
        "02"  # coordinators: compact array of 1
        "04" "677270"  # key "grp"
        "00000001"  # node_id
        "06" "6b61666b61"  # host "kafka"
        "00002384"  # port 9092
        "0000"  # error_code
        "00"  # error_message null
        "00"  # coordinator's tagged fields
        "00"  # message's tagged fields
    )
    body = {"throttle_time_ms": 0, "coordinators": [
        {"key": "grp", "node_id": 1, "host": "kafka", "port": 9092, "error_code": 0,
         "error_message": None}]}
    assert codec.decode_response(FIND_COORDINATOR, 4, wire) == body
    assert codec.encode_response(FIND_COORDINATOR, 4, body) == wire


def test_known_and_unknown_tagged_fields_survive():
    wire = bytes.fromhex(
        "0000"  # error_code
        "02" "0012" "0000" "0004"  # api_keys: [ApiVersions 0-4 ...
        "01" "07" "02" "beef"  # ... with unknown tag 7 in the element]
        "00000000"  # throttle_time_ms
        "02"  # two tagged fields:
        "01" "08" "0000000000000005"  # tag 1 finalized_features_epoch = 5 (known)
        "05" "03" "aabbcc"  # tag 5, unknown to these specs
    )
    body = codec.decode_response(API_VERSIONS, 3, wire)
    assert body == {
        "error_code": 0,
        "api_keys": [{"api_key": 18, "min_version": 0, "max_version": 4,
                      UNKNOWN: {7: b"\xbe\xef"}}],
        "throttle_time_ms": 0, "finalized_features_epoch": 5, UNKNOWN: {5: b"\xaa\xbb\xcc"}}
    assert codec.encode_response(API_VERSIONS, 3, body) == wire
    # tagged fields left out stay out, and a tag from a newer version is only "unknown" here
    assert "zk_migration_ready" not in body and "supported_features" not in body
    fetch_v12 = codec.encode_request(FETCH, 12, {"cluster_id": "c", UNKNOWN: {1: b"\x01"}})
    assert codec.decode_request(FETCH, 12, fetch_v12)[UNKNOWN] == {1: b"\x01"}
    assert "replica_state" in codec.decode_request(FETCH, 15, codec.encode_request(
        FETCH, 15, {"replica_state": {"replica_id": 3, "replica_epoch": 4}}))


def test_tags_are_written_in_order_and_nullable_tagged_structs_use_0_and_1():
    # no spec in 4.4 has a tag gap or a tagged nullable struct, so build one
    def field(name, kind, tag=None, nullable=None, fields=()):
        every = schema.parse_versions("0+")
        return schema.FieldSpec(name, schema.snake_case(name), kind, every,
                                schema.parse_versions(nullable), every if tag is not None else None,
                                tag, schema.MISSING, schema.MISSING, fields)
    inner = (field("Id", "int32"),)
    fields = (field("A", "int8"), field("B", "int16", tag=2),
              field("C", "Thing", tag=5, nullable="0+", fields=inner))
    write, read = codec._encode_struct(fields, 0, True), codec._decode_struct(fields, 0, True)
    obj = {"a": 1, "b": 7, "c": None, UNKNOWN: {9: b"z", 0: b"", 3: b"yy"}}
    buf = bytearray()
    write(obj, buf)
    assert bytes(buf) == bytes.fromhex(
        "01" "05" "0000" "0202" "0007" "0302" "7979" "0501" "00" "0901" "7a")
    assert read(bytes(buf), 0) == (obj, len(buf))
    buf = bytearray()
    write({"c": {"id": 1}}, buf)
    assert bytes(buf) == bytes.fromhex("00" "01" "05" "06" "01" "00000001" "00")


def _uvarint(n: int) -> bytes:
    return bytes([n]) if n < 0x80 else bytes([n & 0x7F | 0x80, n >> 7])  # n < 2**14 here


@pytest.mark.parametrize("n", [0, 1, 31, 32, 33, 126, 127, 128, 300])
def test_length_prefix_boundaries(n):
    """Where one-byte varints and the codec's inline paths end."""
    key = "k" * n
    compact = bytes.fromhex("00" "02") + _uvarint(n + 1) + key.encode() + b"\x00"
    body = {"key_type": 0, "coordinator_keys": [key]}
    assert codec.decode_request(FIND_COORDINATOR, 4, compact) == body
    assert codec.encode_request(FIND_COORDINATOR, 4, body) == compact
    classic = struct.pack(">h", n) + key.encode() + b"\x00"
    assert codec.decode_request(FIND_COORDINATOR, 1, classic) == {"key": key, "key_type": 0}
    nodes = list(range(n))
    for version, compact in ((12, True), (8, False)):
        body = {"brokers": [{"host": key}], "topics": [{"partitions": [{"replica_nodes": nodes}]}]}
        wire = codec.encode_response(METADATA, version, body)
        host = (_uvarint(n + 1) if compact else struct.pack(">h", n)) + key.encode()
        count = _uvarint(n + 1) if compact else struct.pack(">i", n)
        replicas = count + struct.pack(f">{n}i", *nodes)
        assert host in wire and replicas in wire
        back = codec.decode_response(METADATA, version, wire)
        assert back["brokers"][0]["host"] == key
        assert back["topics"][0]["partitions"][0]["replica_nodes"] == nodes


# --- headers -------------------------------------------------------------------------------------

def test_header_versions():
    assert codec.request_header_version(METADATA, 8) == 1
    assert codec.request_header_version(METADATA, 9) == 2
    assert codec.request_header_version(API_VERSIONS, 2) == 1
    assert codec.request_header_version(API_VERSIONS, 99) == 2  # a newer client's first request
    assert codec.request_header_version(17, 1) == 1  # SaslHandshake
    assert codec.response_header_version(METADATA, 8) == 0
    assert codec.response_header_version(METADATA, 9) == 1
    assert codec.response_header_version(API_VERSIONS, 3) == 0  # always v0
    with pytest.raises(ValueError, match="API key 999"):
        codec.request_header_version(999, 0)


def test_request_header_v1_and_v2():
    v1 = codec.encode_request_header(METADATA, 1, 7, "abc")
    assert v1 == bytes.fromhex("0003" "0001" "00000007" "0003") + b"abc"
    # v2 is flexible, but ClientId keeps its int16 length so any broker can read it
    v2 = codec.encode_request_header(API_VERSIONS, 3, 7, "abc")
    assert v2 == bytes.fromhex("0012" "0003" "00000007" "0003") + b"abc" + b"\x00"
    assert codec.encode_request_header(METADATA, 1, 7, None).endswith(b"\xff\xff")
    header = codec.decode_request_header(b"xx" + v2 + b"body", 2)
    assert header == codec.RequestHeader(API_VERSIONS, 3, 7, "abc", 2 + len(v2), {})
    tagged = codec.encode_request_header(API_VERSIONS, 3, 7, "abc", tags={4: b"hi"})
    assert codec.decode_request_header(tagged).tags == {4: b"hi"}
    with pytest.raises(DecodeError, match="API key 999"):
        codec.decode_request_header(struct.pack(">hhi", 999, 0, 1))
    with pytest.raises(DecodeError, match="needs 4 bytes"):
        codec.decode_request_header(b"\x00\x03")


def test_response_headers():
    assert codec.encode_response_header(7, 0) == bytes.fromhex("00000007")
    assert codec.encode_response_header(7, 1) == bytes.fromhex("00000007" "00")
    assert codec.decode_response_header(bytes.fromhex("00000007" "00") + b"body", 0, 1) == (7, 5)
    assert codec.decode_response_header(bytearray(b"..\x00\x00\x00\x07"), 2, 0) == (7, 6)
    assert codec.decode_response_header(memoryview(b"\x00\x00\x00\x07\x00body"), 0, 1) == (7, 5)
    tagged = bytes.fromhex("00000007" "01" "03" "01" "ff")  # a tag no spec defines yet
    assert codec.decode_response_header(tagged, 0, 1) == (7, 8)
    with pytest.raises(DecodeError, match="ResponseHeader v1"):
        codec.decode_response_header(bytes.fromhex("00000007"), 0, 1)
    with pytest.raises(EncodeError, match="unsupported version"):
        codec.encode_response_header(7, 5)


# --- errors say where ----------------------------------------------------------------------------

def test_decode_error_names_message_path_and_offset():
    wire = bytes.fromhex("00000001" "00000001" "0064") + b"0123456789"
    with pytest.raises(DecodeError) as err:
        codec.decode_response(METADATA, 1, wire)
    assert str(err.value) == (
        "Metadata response v1: $.brokers[0].host: needs 100 bytes at offset 10, 10 left")
    assert (err.value.path, err.value.offset) == ("$.brokers[0].host", 10)


def test_trailing_bytes_unknown_apis_and_versions():
    with pytest.raises(DecodeError, match=r"Metadata request v1: \$: 1 bytes left over .* 4"):
        codec.decode_request(METADATA, 1, b"\x00\x00\x00\x00!")
    with pytest.raises(DecodeError, match="API key 999 is unknown"):
        codec.decode_request(999, 0, b"")
    with pytest.raises(DecodeError, match="unsupported version"):
        codec.decode_response(METADATA, 99, b"")
    with pytest.raises(EncodeError, match=r"LeaderAndIsr \(API key 4\) has no versions left"):
        codec.encode_request(4, 0, {})


def test_bytes_like_input_and_offset():
    wire = b"\x00\x00\x00\x00"
    assert codec.decode_request(METADATA, 1, bytearray(b"hdr" + wire), 3) == {"topics": []}
    assert codec.decode_request(METADATA, 1, memoryview(b"hdr" + wire), 3) == {"topics": []}
    with pytest.raises(DecodeError, match="offset 9 is outside"):
        codec.decode_request(METADATA, 1, wire, 9)


def test_encode_takes_tuples_and_bytes_likes():
    loose = {"topics": [{"topic_id": bytearray(16), "partitions": ({"isr_nodes": (1, 2)},)}]}
    strict = {"topics": [{"topic_id": bytes(16), "partitions": [{"isr_nodes": [1, 2]}]}]}
    assert codec.encode_response(METADATA, 12, loose) == codec.encode_response(METADATA, 12, strict)
    records = {"records": memoryview(b"batch")}
    produce = {"topic_data": [{"name": "t", "partition_data": [{"index": 0, **records}]}]}
    back = codec.decode_request(0, 9, codec.encode_request(0, 9, produce))
    assert back["topic_data"][0]["partition_data"][0]["records"] == b"batch"


@pytest.mark.parametrize("obj, where", [
    ({"brokers": [{"node_id": "1"}]}, r"\$\.brokers\[0\]\.node_id: int32 cannot hold str"),
    ({"brokers": [{"host": None}]}, r"\$\.brokers\[0\]\.host: null"),
    ({"throttle_time_ms": 2 ** 31}, r"\$\.throttle_time_ms: int32 cannot hold"),
    ({"topics": [{"topic_id": b"short"}]}, r"\$\.topics\[0\]\.topic_id: uuid must be 16 bytes"),
    ({"topics": [{"is_internal": "yes"}]}, r"\$\.topics\[0\]\.is_internal: expected bool"),
    ({"topics": [{"partitions": [{"isr_nodes": [1, "2"]}]}]},
     r"\$\.topics\[0\]\.partitions\[0\]\.isr_nodes\[1\]: int32"),
    ({"brokerz": []}, r"\$: unknown keys brokerz"),
    ({"topics": {}}, r"\$\.topics: expected a list"),
    ([], r"\$: expected a dict"),
])
def test_encode_error_names_the_field(obj, where):
    with pytest.raises(EncodeError, match=r"^Metadata response v12: " + where):
        codec.encode_response(METADATA, 12, obj)


def test_unknown_tags_may_not_shadow_known_ones():
    known = r"\$\._unknown_tags: tag 1 is the known field finalized_features_epoch"
    with pytest.raises(EncodeError, match=known):
        codec.encode_response(API_VERSIONS, 3, {UNKNOWN: {1: b"x"}})


def test_keys_of_other_versions_are_ignored():
    v1 = codec.encode_response(METADATA, 1, {"throttle_time_ms": 5})  # throttle_time_ms is v3+
    assert v1 == codec.encode_response(METADATA, 1, {})


# --- hostile input -------------------------------------------------------------------------------

@pytest.mark.parametrize("case, wire", [
    ((METADATA, 1, True), bytes.fromhex("7fffffff")),  # 2 billion topics
    ((METADATA, 12, True), bytes.fromhex("ffffffff0f")),  # compact array of 2**32 - 2
    ((FIND_COORDINATOR, 4, True), bytes.fromhex("00 ffffff7f")),  # compact array, 2**28 keys
    ((FIND_COORDINATOR, 4, True), bytes.fromhex("00 02 ffffff7f")),  # compact string, 256 MiB
    ((FIND_COORDINATOR, 4, True), bytes.fromhex("00 ffffffffffff")),  # varint over 5 bytes
    ((METADATA, 12, True), bytes.fromhex("01 00 00 ffffff7f")),  # 2**28 tagged fields
    ((METADATA, 12, True), bytes.fromhex("01 00 00 02 05 00 03 00")),  # tags out of order
    ((METADATA, 12, True), bytes.fromhex("01 00 00 01 00 02 0000")),  # an unknown tag: fine
    ((METADATA, 12, True), bytes.fromhex("01 00 00 01 00 09 00")),  # tag longer than the data
    ((METADATA, 1, False), bytes.fromhex("00000001 00000001 0002 fffe 00000000 ffff 00000000")),
    ((METADATA, 1, True), bytes.fromhex("fffffffe")),  # length -2
])
def test_hostile_lengths_fail_fast(case, wire):
    try:
        decode(case, wire)
    except DecodeError as err:
        assert "unexpected" not in str(err)
    else:
        assert encode(case, decode(case, wire)) is not None


def _only_decode_error(case, wire):
    """Decode either fails with a located DecodeError, or its result encodes canonically."""
    try:
        body = decode(case, wire)
    except DecodeError as err:
        assert "unexpected" not in str(err), err  # every failure is one the codec foresaw
        assert "offset" in str(err), err
        return
    canonical = encode(case, body)
    assert encode(case, decode(case, canonical)) == canonical


@random_inputs(2000)
@given(case=st.sampled_from(CASES), wire=st.binary(max_size=48))
def test_random_bytes(case, wire):
    _only_decode_error(case, wire)


@random_inputs(500)
@given(case=st.sampled_from(CASES), data=st.data())
def test_truncated(case, data):
    wire = encode(case, data.draw(message_values(case), label="value"))
    for cut in range(len(wire)):
        with pytest.raises(DecodeError):
            decode(case, wire[:cut])


@random_inputs(1000)
@given(case=st.sampled_from(CASES), data=st.data())
def test_mutated(case, data):
    wire = bytearray(encode(case, data.draw(message_values(case), label="value")))
    for _ in range(data.draw(st.integers(1, 4), label="edits")):
        at = data.draw(st.integers(0, len(wire)), label="at")
        edit = data.draw(st.sampled_from(["set", "insert", "delete"]), label="edit")
        byte = data.draw(st.sampled_from([0x00, 0x01, 0x7F, 0x80, 0xFF]) | st.integers(0, 255))
        if edit == "insert":
            wire.insert(at, byte)
        elif at < len(wire):
            if edit == "set":
                wire[at] = byte
            else:
                del wire[at]
    _only_decode_error(case, bytes(wire))


# --- the generator -------------------------------------------------------------------------------

def test_strip_comments_leaves_strings_alone():
    text = '{ "a": "http://x//y", // gone\n  "b": "q\\"//" // also gone\n}'
    assert generate.strip_comments(text) == '{ "a": "http://x//y", \n  "b": "q\\"//" \n}'


def test_kafka_version_comes_from_the_pom(tmp_path: Path):
    pom = tmp_path / "pom.xml"
    assert generate.kafka_version(pom) == generate.DEFAULT_KAFKA_VERSION
    pom.write_text("<project><properties>\n  <kafka.version>3.9.1</kafka.version>\n</properties>")
    assert generate.kafka_version(pom) == "3.9.1"
    pom.write_text("<project/>")
    with pytest.raises(generate.SchemaError, match="kafka.version"):
        generate.kafka_version(pom)


def test_missing_jar_says_what_is_needed(tmp_path: Path, monkeypatch):
    monkeypatch.delenv(generate.JAR_ENV, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("PATH", str(tmp_path))  # no mvn
    needed = r"kafka-clients 0\.0\.1.*BROKERGUARD_KAFKA_CLIENTS_JAR"
    with pytest.raises(generate.SchemaError, match=needed):
        with generate.clients_jar("0.0.1"):
            pass
    monkeypatch.setenv(generate.JAR_ENV, str(tmp_path / "nope.jar"))
    with pytest.raises(generate.SchemaError, match="is not a file"):
        with generate.clients_jar("0.0.1"):
            pass


def test_generated_schema_is_current():
    stamp = (generate.FORMAT, generate.kafka_version())
    assert generate._stamp(generate.OUTPUT) == stamp, (
        f"regenerate with {sys.executable} plugins/kafka/protocol/generate.py")
