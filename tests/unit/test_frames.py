"""The Kafka frame scanner (brokerguard._native.frames) and its pure-Python twin.

Every behavioural test runs against both twins; the differential tests feed both the same
random, mutated and truncated input and require identical results or identical errors.
"""
import array
import os
import struct
import subprocess
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fuzzing import random_inputs

from brokerguard._native import errors, frames, frames_py
from brokerguard._native.errors import FrameError

TWINS = [pytest.param(frames, id="cython"), pytest.param(frames_py, id="python")]

# First flexible request version per api_key (Kafka 4.x message specs); -1: never flexible
# or not a client API.
FLEXIBLE_FROM = [-1] * 76
FLEXIBLE_FROM[0:4] = [9, 12, 6, 9]  # Produce, Fetch, ListOffsets, Metadata
FLEXIBLE_FROM[8:17] = [8, 6, 3, 6, 4, 4, 4, 5, 3]
FLEXIBLE_FROM[18:38] = [3, 5, 4, 2, 2, 4, 3, 3, 3, 1, 3, 2, 2, 2, 4, 2, 2, 2, 2, 2]  # 18: ApiVersions
FLEXIBLE_FROM[42:47] = [2, 2, 1, 0, 0]
FLEXIBLE_FROM[48:52] = [1, 1, 0, 0]
for _api_key in (55, 57, 60, 61, 65, 66, 74, 75):
    FLEXIBLE_FROM[_api_key] = 0

LIMIT = 100 * 1024 * 1024

RANDOM = random_inputs(400)


@pytest.fixture(params=TWINS)
def twin(request):
    return request.param


def requests_of(twin, limit=LIMIT):
    return twin.RequestScanner(FLEXIBLE_FROM, limit)


def outcome(call, *args):
    """A call's result, or its error as (type, message), so twins can be compared."""
    try:
        return ("ok", call(*args))
    except ValueError as err:
        return (type(err).__name__, str(err))


# An encoder written apart from the code under test.


def uvarint(value):
    out = bytearray()
    while True:
        if value < 0x80:
            out.append(value)
            return bytes(out)
        out.append(value & 0x7F | 0x80)
        value >>= 7


def string(text):
    if text is None:
        return b"\xff\xff"
    raw = text.encode()
    return struct.pack(">h", len(raw)) + raw


def compact_string(text):
    if text is None:
        return b"\x00"
    raw = text.encode()
    return uvarint(len(raw) + 1) + raw


def tagged_fields(fields):
    return uvarint(len(fields)) + b"".join(uvarint(tag) + uvarint(len(data)) + data for tag, data in fields)


def header(api_key, api_version, correlation_id, client_id, tags=None):
    out = struct.pack(">hhi", api_key, api_version, correlation_id) + string(client_id)
    return out if tags is None else out + tagged_fields(tags)


def frame(payload):
    return struct.pack(">i", len(payload)) + payload


def produce_body(api_version, flexible, transactional_id, acks, rest=b""):
    out = b""
    if api_version >= 3:
        out = compact_string(transactional_id) if flexible else string(transactional_id)
    return out + struct.pack(">h", acks) + rest


# Golden bytes. ApiVersions v3 as librdkafka 2.16 sent it on connect; the others as
# kafka-python 3.0's spec-driven encoder wrote them, split here field by field.

RDKAFKA_API_VERSIONS_V3 = bytes.fromhex(
    "00000047"  # size 71
    "0012" "0003" "00000001"  # ApiVersions v3, correlation_id 1
    "000e" + b"rdkafka-golden".hex() +  # client_id
    "00"  # header v2: no tagged fields
    "17" + b"confluent-kafka-python".hex() +  # client_software_name, compact
    "16" + b"2.16.1-rdkafka-2.16.0".hex() +  # client_software_version, compact
    "00"  # body tagged fields
)

METADATA_V12 = bytes.fromhex(
    "00000034"
    "0003" "000c" "00000007"  # Metadata v12, correlation_id 7
    "000d" + b"adminclient-1".hex() + "00"
    "02"  # topics: compact array of 1
    "00000000000000000000000000000000"  # topic_id (zero: by name)
    "07" + b"orders".hex() + "00"  # name, topic tagged fields
    "00"  # allow_auto_topic_creation false
    "01"  # include_topic_authorized_operations true
    "00"
)

RECORD_BATCH = bytes.fromhex(
    "0000000000000000" "0000003a" "00000000" "02" "732da6b6" "0010" "00000000"
    "0000018bcfe56800" "0000018bcfe56800" "0000000000000007" "0000" "00000000" "00000001"
    "10" "00" "00" "00" "02" "6b" "02" "76" "00"
)


def produce_v3(acks):
    return bytes.fromhex(
        "00000084"
        "0000" "0003" "0000002d"  # Produce v3, correlation_id 45
        "000a" + b"producer-1".hex() +
        "000a" + b"txn-orders".hex() +  # transactional_id, int16 length
        struct.pack(">h", acks).hex() +
        "00007530"  # timeout_ms 30000
        "00000001" "0006" + b"orders".hex() +
        "00000001" "00000000" "00000046"
    ) + RECORD_BATCH


def produce_v9(acks, header_tags=b"\x00"):
    payload = (
        bytes.fromhex("0000" "0009" "00000033" "000a") + b"producer-1" + header_tags
        + b"\x0b" + b"txn-orders"  # transactional_id, compact: length + 1
        + struct.pack(">h", acks)
        + bytes.fromhex("00007530" "02" "07") + b"orders"
        + bytes.fromhex("02" "00000000" "47") + RECORD_BATCH + b"\x00\x00\x00"
    )
    return frame(payload)


# Header v2 with two tagged fields: tag 0 = b"abc", tag 300 (2-byte varint) = 130 bytes.
HEADER_TAGS = b"\x02" + b"\x00\x03abc" + uvarint(300) + uvarint(130) + bytes(range(130))

GOLDEN = [
    # (frame, api_key, api_version, correlation_id, expects_response, client_id, header_len)
    (RDKAFKA_API_VERSIONS_V3, 18, 3, 1, True, "rdkafka-golden", 25),
    (METADATA_V12, 3, 12, 7, True, "adminclient-1", 24),
    (produce_v3(0), 0, 3, 45, False, "producer-1", 20),
    (produce_v3(1), 0, 3, 45, True, "producer-1", 20),
    (produce_v3(-1), 0, 3, 45, True, "producer-1", 20),
    (produce_v9(0), 0, 9, 51, False, "producer-1", 21),
    (produce_v9(1), 0, 9, 51, True, "producer-1", 21),
    (produce_v9(-1, HEADER_TAGS), 0, 9, 51, True, "producer-1", 20 + len(HEADER_TAGS)),
    (produce_v9(0, HEADER_TAGS), 0, 9, 51, False, "producer-1", 20 + len(HEADER_TAGS)),
]
GOLDEN_STREAM = b"".join(golden[0] for golden in GOLDEN)


def golden_tuples(base=0):
    out = []
    pos = base
    for raw, api_key, api_version, correlation_id, expects, _, _ in GOLDEN:
        out.append((pos, pos + len(raw), api_key, api_version, correlation_id, expects))
        pos += len(raw)
    return out


# The twins themselves


def test_cython_twin_is_the_compiled_extension():
    assert frames.__file__.endswith(".so"), frames.__file__
    assert frames.RequestScanner is not frames_py.RequestScanner
    assert frames.FrameError is frames_py.FrameError is errors.FrameError
    assert issubclass(FrameError, ValueError)


def test_unfilled_bytearray_is_a_writable_buffer_of_the_size(twin):
    buffer = twin.unfilled_bytearray(70000)
    assert type(buffer) is bytearray and len(buffer) == 70000
    buffer[-3:] = b"end"
    assert buffer[-3:] == b"end"
    assert twin.unfilled_bytearray(0) == bytearray()
    with pytest.raises(ValueError, match="not negative"):
        twin.unfilled_bytearray(-1)


@pytest.mark.parametrize("env, expected", [(None, "cython"), ("1", "python")])
def test_package_chooses_once_by_environment(env, expected):
    environ = {k: v for k, v in os.environ.items() if k != "BROKERGUARD_NO_EXTENSIONS"}
    if env is not None:
        environ["BROKERGUARD_NO_EXTENSIONS"] = env
    code = (
        "import brokerguard._native as n, brokerguard._native.frames_py as p;"
        "print(n.IMPLEMENTATION, n.RequestScanner is p.RequestScanner)"
    )
    out = subprocess.run([sys.executable, "-c", code], env=environ, capture_output=True, text=True, check=True)
    assert out.stdout.split() == [expected, str(expected == "python")]


def test_both_twins_start_with_the_same_wire_format_comment():
    here = os.path.dirname(frames_py.__file__)
    with open(os.path.join(here, "frames_py.py")) as source:
        python_lines = source.read().splitlines()
    with open(os.path.join(here, "frames.pyx")) as source:
        cython_lines = source.read().splitlines()
    comment = python_lines[: next(i for i, line in enumerate(python_lines) if not line.startswith("#"))]
    assert comment[0].startswith("# Kafka wire format")
    assert cython_lines[: len(comment)] == comment


# Golden bytes


@pytest.mark.parametrize("index", range(len(GOLDEN)), ids=lambda i: f"golden{i}")
def test_golden_request(twin, index):
    raw, api_key, api_version, correlation_id, expects, client_id, header_len = GOLDEN[index]
    assert requests_of(twin).scan(raw, 0, len(raw)) == (
        [(0, len(raw), api_key, api_version, correlation_id, expects)],
        len(raw),
        0,
    )
    assert twin.parse_request_header(raw, 4, len(raw), FLEXIBLE_FROM) == (
        api_key,
        api_version,
        correlation_id,
        client_id,
        4 + header_len,
    )


def test_golden_bodies_start_where_the_header_ends(twin):
    raw = RDKAFKA_API_VERSIONS_V3
    body = twin.parse_request_header(raw, 4, len(raw), FLEXIBLE_FROM)[4]
    assert raw[body : body + 23] == b"\x17confluent-kafka-python"
    raw = produce_v9(1, HEADER_TAGS)
    body = twin.parse_request_header(raw, 4, len(raw), FLEXIBLE_FROM)[4]
    assert raw[body : body + 11] == b"\x0btxn-orders"


def test_golden_stream_inside_a_larger_buffer(twin):
    buf = bytearray(b"\xee" * 7 + GOLDEN_STREAM + b"\x00\x00\x00")
    end = 7 + len(GOLDEN_STREAM)
    assert requests_of(twin).scan(buf, 7, end) == (golden_tuples(7), end, 0)
    # The three trailing bytes cannot hold a size yet.
    assert requests_of(twin).scan(buf, 7, len(buf)) == (golden_tuples(7), end, 0)


@pytest.mark.parametrize(
    "make",
    [bytes, bytearray, memoryview, lambda b: memoryview(bytearray(b)).toreadonly(), lambda b: array.array("B", b)],
    ids=["bytes", "bytearray", "memoryview", "readonly", "array"],
)
def test_any_contiguous_buffer(twin, make):
    buf = make(GOLDEN_STREAM)
    assert requests_of(twin).scan(buf, 0, len(GOLDEN_STREAM)) == (golden_tuples(), len(GOLDEN_STREAM), 0)


def test_bytearray_can_be_resized_after_scan_and_after_error(twin):
    buf = bytearray(GOLDEN_STREAM)
    requests_of(twin).scan(buf, 0, len(buf))
    buf += b"\xff\xff\xff\xfb"
    with pytest.raises(FrameError) as caught:
        requests_of(twin).scan(buf, 0, len(buf))
    del buf[: len(GOLDEN_STREAM)]  # would raise BufferError if a view were still held
    assert caught.value is not None


def test_split_at_every_offset_resumes(twin):
    scanner = requests_of(twin)
    stream = GOLDEN_STREAM
    for cut in range(len(stream) + 1):
        # Bytes past the cut have not arrived: garbage there must never be read.
        buf = bytearray(stream[:cut] + b"\xff" * (len(stream) - cut))
        first, consumed, pending = scanner.scan(buf, 0, cut)
        assert first == [t for t in golden_tuples() if t[1] <= cut]
        assert consumed == max([t[1] for t in first], default=0)
        waiting = cut - consumed
        assert pending == (0 if waiting < 4 else next(t[1] - t[0] for t in golden_tuples() if t[0] == consumed))
        buf[cut:] = stream[cut:]
        rest, consumed, pending = scanner.scan(buf, consumed, len(stream))
        assert (first + rest, consumed, pending) == (golden_tuples(), len(stream), 0), f"cut at {cut}"


def test_response_split_at_every_offset_resumes(twin):
    responses = [frame(struct.pack(">i", cid) + b"x" * n) for cid, n in ((1, 0), (-7, 3), (2**31 - 1, 40))]
    stream = b"".join(responses)
    expected = []
    pos = 0
    for raw in responses:
        expected.append((pos, pos + len(raw), struct.unpack_from(">i", raw, 4)[0]))
        pos += len(raw)
    scanner = twin.ResponseScanner(LIMIT)
    for cut in range(len(stream) + 1):
        first, consumed, pending = scanner.scan(stream, 0, cut)
        assert first == [t for t in expected if t[1] <= cut]
        assert pending == (0 if cut - consumed < 4 else next(t[1] - t[0] for t in expected if t[0] == consumed))
        rest, consumed, pending = scanner.scan(stream, consumed, len(stream))
        assert (first + rest, consumed, pending) == (expected, len(stream), 0)


# Sizes and malformed input


@pytest.mark.parametrize(
    "data, message",
    [
        (b"\x7f\xff\xff\xff", "frame size 2147483647 exceeds the limit of 104857600 bytes"),
        (b"\x06\x40\x00\x01", "frame size 104857601 exceeds the limit of 104857600 bytes"),
        (b"\xff\xff\xff\xfb", "negative frame size -5"),
        (b"\x80\x00\x00\x00", "negative frame size -2147483648"),
        (b"\x00\x00\x00\x06" + b"\x00" * 6, "request header truncated: frame of 6 bytes"),
        (b"\x00\x00\x00\x00", "request header truncated: frame of 0 bytes"),
    ],
)
def test_bad_sizes_are_refused_as_soon_as_known(twin, data, message):
    with pytest.raises(FrameError) as caught:
        requests_of(twin).scan(data, 0, len(data))
    assert str(caught.value) == message


def test_bad_size_after_good_frames_is_refused(twin):
    data = METADATA_V12 + b"\xff\xff\xff\xfb"
    with pytest.raises(FrameError, match="negative frame size -5"):
        requests_of(twin).scan(data, 0, len(data))


def test_pending_size_counts_the_prefix(twin):
    data = METADATA_V12[:10]
    assert requests_of(twin).scan(data, 0, 10) == ([], 0, len(METADATA_V12))
    assert requests_of(twin).scan(data, 0, 3) == ([], 0, 0)
    assert requests_of(twin).scan(data, 5, 5) == ([], 5, 0)


def test_response_sizes(twin):
    scanner = twin.ResponseScanner(1000)
    for data, message in [
        (b"\x00\x00\x03\xe9", "frame size 1001 exceeds the limit of 1000 bytes"),
        (b"\xff\xff\xff\xff", "negative frame size -1"),
        (b"\x00\x00\x00\x03abc", "response header truncated: frame of 3 bytes"),
    ]:
        with pytest.raises(FrameError) as caught:
            scanner.scan(data, 0, len(data))
        assert str(caught.value) == message
    assert scanner.scan(b"\x00\x00\x00\x04\x00\x00\x00\x09", 0, 8) == ([(0, 8, 9)], 8, 0)


def produce_frame(api_version, after_header):
    flexible = api_version >= 9
    return frame(header(0, api_version, 5, "p", [] if flexible else None) + after_header)


@pytest.mark.parametrize(
    "raw, message",
    [
        (frame(header(0, 3, 5, "p")[:8]), "request header truncated: frame of 8 bytes"),
        (frame(struct.pack(">hhih", 0, 3, 5, -2)), "request header invalid: client_id length -2"),
        (
            frame(struct.pack(">hhih", 0, 3, 5, 10) + b"abc"),
            "request header truncated: client_id of 10 bytes runs past the end of a frame of 13 bytes",
        ),
        (frame(header(0, 9, 5, "p")), "request header truncated: tagged fields run past the end of a frame of 11 bytes"),
        (
            frame(header(0, 9, 5, "p") + b"\x01\x00\x05ab"),
            "request header truncated: tagged fields run past the end of a frame of 16 bytes",
        ),
        (
            frame(header(0, 9, 5, "p") + b"\x80\x80\x80\x80\x80\x00"),
            "request header invalid: tagged fields varint is longer than 5 bytes",
        ),
        (
            frame(header(0, 9, 5, "p") + b"\x01\x00\xff\xff\xff\xff\x1f"),
            "request header invalid: tagged fields varint exceeds 32 bits",
        ),
        (produce_frame(3, b""), "Produce v3 body truncated before acks"),
        (produce_frame(3, b"\x00"), "Produce v3 body truncated before acks"),
        (produce_frame(3, b"\x00\x05abcde\x00"), "Produce v3 body truncated before acks"),
        (produce_frame(3, b"\x00\x09abc\x00\x01"), "Produce v3 body truncated before acks"),
        (produce_frame(3, b"\xff\xfd\x00\x01"), "Produce v3 body invalid: transactional_id length -3"),
        (produce_frame(9, b""), "Produce v9 body truncated before acks"),
        (produce_frame(9, b"\x80"), "Produce v9 body truncated before acks"),
        (produce_frame(9, b"\x0babc\x00\x01"), "Produce v9 body truncated before acks"),
        (
            produce_frame(9, b"\xff\xff\xff\xff\xff\x01"),
            "Produce v9 body invalid: transactional_id varint is longer than 5 bytes",
        ),
        (produce_frame(9, b"\xff\xff\xff\xff\x7f"), "Produce v9 body invalid: transactional_id varint exceeds 32 bits"),
        (produce_frame(2, b"\x00"), "Produce v2 body truncated before acks"),
    ],
)
def test_malformed_produce(twin, raw, message):
    with pytest.raises(FrameError) as caught:
        requests_of(twin).scan(raw, 0, len(raw))
    assert str(caught.value) == message


@pytest.mark.parametrize(
    "version, after_header, expects",
    [
        (3, b"\xff\xff\x00\x00", False),  # null transactional_id, acks 0
        (3, b"\x00\x00\x00\x01", True),  # empty transactional_id, acks 1
        (9, b"\x00\x00\x00", False),  # compact null, acks 0
        (9, b"\x01\xff\xff", True),  # compact empty, acks -1
        (9, b"\x01\x00\x00", False),
        (13, b"\x02x\x00\x00", False),  # newest version, same layout
    ],
)
def test_produce_acks_edges(twin, version, after_header, expects):
    raw = produce_frame(version, after_header)
    assert requests_of(twin).scan(raw, 0, len(raw))[0][0][5] is expects


def test_produce_before_v3_has_no_transactional_id(twin):
    raw = produce_frame(2, b"\x00\x00\x00\x00\x75\x30")
    assert requests_of(twin).scan(raw, 0, len(raw))[0][0][5] is False


def test_non_produce_frames_are_read_only_to_correlation_id(twin):
    # A client_id that runs past the frame is the broker's to refuse; the scanner passes it on.
    raw = frame(struct.pack(">hhih", 3, 12, 9, 100))
    assert requests_of(twin).scan(raw, 0, len(raw))[0] == [(0, len(raw), 3, 12, 9, True)]
    with pytest.raises(FrameError, match="client_id of 100 bytes runs past"):
        twin.parse_request_header(raw, 4, len(raw), FLEXIBLE_FROM)


def test_parse_request_header_errors(twin):
    def error(raw, table=FLEXIBLE_FROM):
        with pytest.raises(FrameError) as caught:
            twin.parse_request_header(raw, 4, len(raw), table)
        return str(caught.value)

    assert error(frame(header(3, 1, 1, "a"))[:10]) == "request header truncated: frame of 6 bytes"
    assert error(frame(header(99, 0, 1, "a"))) == "request header of unknown api_key 99: its header version is not known"
    assert error(frame(header(-1, 0, 1, "a"))) == "request header of unknown api_key -1: its header version is not known"
    bad_utf8 = frame(struct.pack(">hhih", 3, 1, 1, 3) + b"a\xffb")
    assert error(bad_utf8) == "request header invalid: client_id is not valid UTF-8 (invalid start byte at byte 1)"
    with pytest.raises(FrameError) as caught:
        twin.parse_request_header(bad_utf8, 4, len(bad_utf8), FLEXIBLE_FROM)
    assert isinstance(caught.value.__cause__, UnicodeDecodeError)
    # Below the table's first flexible version, no tagged fields are read.
    raw = frame(header(3, 8, 1, None))
    assert twin.parse_request_header(raw, 4, len(raw), FLEXIBLE_FROM) == (3, 8, 1, None, len(raw))
    raw = frame(header(3, 9, 1, "", []))
    assert twin.parse_request_header(raw, 4, len(raw), FLEXIBLE_FROM) == (3, 9, 1, "", len(raw))


@pytest.mark.parametrize("start, end", [(-1, 4), (5, 4), (0, 10**6), (2**40, 2**40)])
def test_ranges_outside_the_buffer_are_refused(twin, start, end):
    data = bytes(64)
    for call in (
        requests_of(twin).scan,
        twin.ResponseScanner(LIMIT).scan,
        lambda b, s, e: twin.parse_request_header(b, s, e, FLEXIBLE_FROM),
    ):
        with pytest.raises(ValueError) as caught:
            call(data, start, end)
        assert not isinstance(caught.value, FrameError)
        assert "outside a buffer of 64 bytes" in str(caught.value)


def test_configuration_mistakes_fail_when_built(twin):
    with pytest.raises(ValueError, match="flexible_from is empty"):
        twin.RequestScanner([], LIMIT)
    with pytest.raises(ValueError, match=r"flexible_from\[2\] is -2"):
        twin.RequestScanner([9, 12, -2], LIMIT)
    with pytest.raises(ValueError, match="max_frame_bytes is 7: a frame needs at least 8 bytes"):
        twin.RequestScanner(FLEXIBLE_FROM, 7)
    with pytest.raises(ValueError, match="max_frame_bytes is 3: a frame needs at least 4 bytes"):
        twin.ResponseScanner(3)
    with pytest.raises(TypeError):
        twin.RequestScanner(FLEXIBLE_FROM, 1.5)
    scanner = twin.RequestScanner(FLEXIBLE_FROM, 2**40)  # above any int32 size: no limit
    assert scanner.flexible_from == tuple(FLEXIBLE_FROM)
    assert scanner.max_frame_bytes == 2**40
    assert scanner.scan(b"\x7f\xff\xff\xff", 0, 4) == ([], 0, 2**31 + 3)


# Varints


@pytest.mark.parametrize(
    "value, encoded",
    [(0, "00"), (1, "01"), (127, "7f"), (128, "8001"), (300, "ac02"), (2**28 - 1, "ffffff7f"), (2**32 - 1, "ffffffff0f")],
)
def test_varint_vectors(twin, value, encoded):
    assert twin.write_uvarint(value) == bytes.fromhex(encoded)
    assert twin.read_uvarint(b"\xaa" + bytes.fromhex(encoded) + b"\xaa", 1) == (value, 1 + len(encoded) // 2)


@pytest.mark.parametrize(
    "data, offset, message",
    [
        (b"", 0, "varint at offset 0 runs past the end of the buffer"),
        (b"\x00\x80\x80", 1, "varint at offset 1 runs past the end of the buffer"),
        (b"\x80\x80\x80\x80\x80\x00", 0, "varint at offset 0 is longer than 5 bytes"),
        (b"\xff\xff\xff\xff\x10", 0, "varint at offset 0 exceeds 32 bits"),
    ],
)
def test_varint_errors(twin, data, offset, message):
    with pytest.raises(FrameError) as caught:
        twin.read_uvarint(data, offset)
    assert str(caught.value) == message


@pytest.mark.parametrize("value", [-1, 2**32, 2**70])
def test_write_uvarint_range(twin, value):
    with pytest.raises(FrameError, match=f"value {value} does not fit an unsigned 32-bit varint"):
        twin.write_uvarint(value)


@RANDOM
@given(st.integers(0, 2**32 - 1))
def test_varint_round_trip_both_twins(value):
    encoded = uvarint(value)
    for twin in (frames, frames_py):
        assert twin.write_uvarint(value) == encoded
        assert twin.read_uvarint(encoded, 0) == (value, len(encoded))


# Random valid streams: both twins must agree with a model of the wire format.


ANY_API_KEY = st.sampled_from([0, 0, 0, 1, 3, 18, 36]) | st.integers(-(2**15), 2**15 - 1)


@st.composite
def requests(draw, api_keys=ANY_API_KEY):
    api_key = draw(api_keys)
    api_version = draw(st.integers(0, 15) | st.integers(-(2**15), 2**15 - 1))
    first = FLEXIBLE_FROM[api_key] if 0 <= api_key < len(FLEXIBLE_FROM) else -1
    flexible = 0 <= first <= api_version
    correlation_id = draw(st.integers(-(2**31), 2**31 - 1))
    client_id = draw(st.none() | st.text(max_size=12))
    tags = None
    if flexible:
        tags = draw(st.lists(st.tuples(st.integers(0, 2**32 - 1), st.binary(max_size=140)), max_size=3))
    expects = True
    body = b""
    if api_key == 0:
        acks = draw(st.sampled_from([-1, 0, 1]) | st.integers(-(2**15), 2**15 - 1))
        transactional_id = draw(st.none() | st.text(max_size=3) | st.text(min_size=130, max_size=140))
        body = produce_body(api_version, flexible, transactional_id, acks)
        expects = acks != 0
    body += draw(st.binary(max_size=40))
    head = header(api_key, api_version, correlation_id, client_id, tags)
    return frame(head + body), (api_key, api_version, correlation_id, expects), client_id, 4 + len(head)


def expected_scan(made):
    out = []
    pos = 0
    for raw, fields, _, _ in made:
        out.append((pos, pos + len(raw), *fields))
        pos += len(raw)
    return out


@RANDOM
@given(made=st.lists(requests(), max_size=8), data=st.data())
def test_random_valid_streams(made, data):
    stream = b"".join(m[0] for m in made)
    expected = expected_scan(made)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=4)))
    for twin in (frames, frames_py):
        scanner = requests_of(twin)
        assert scanner.scan(stream, 0, len(stream)) == (expected, len(stream), 0)
        # Bytes arriving in pieces: each scan resumes at consumed_to.
        found = []
        consumed = 0
        for cut in cuts + [len(stream)]:
            more, consumed, _ = scanner.scan(stream, consumed, max(cut, consumed))
            found += more
        assert found == expected
        for (raw, fields, client_id, header_end), (start, *_) in zip(made, expected):
            if 0 <= fields[0] < len(FLEXIBLE_FROM):
                parsed = twin.parse_request_header(stream, start + 4, start + len(raw), FLEXIBLE_FROM)
                assert parsed == (*fields[:3], client_id, start + header_end)


# Differential: hostile input gives the same result or the same error from both twins.


def both(make_call, *args):
    results = [outcome(make_call(twin), *args) for twin in (frames, frames_py)]
    assert results[0] == results[1]
    return results[0]


LIMITS = st.just(LIMIT) | st.sampled_from([8, 64, 4096])


@RANDOM
@given(data=st.binary(max_size=200), limit=LIMITS, bounds=st.tuples(st.integers(0, 200), st.integers(0, 200)))
def test_differential_random_bytes(data, limit, bounds):
    start, end = min(bounds), max(bounds)
    both(lambda t: t.RequestScanner(FLEXIBLE_FROM, limit).scan, data, start, end)
    both(lambda t: t.ResponseScanner(limit).scan, data, start, end)
    both(lambda t: lambda *a: t.parse_request_header(*a, FLEXIBLE_FROM), data, start, end)
    both(lambda t: t.read_uvarint, data, start)


@st.composite
def mutated_frame(draw):
    raw = draw(requests(st.just(0) | ANY_API_KEY))[0]
    payload = bytearray(raw[4:])
    how = draw(st.sampled_from(["keep", "bytes", "bytes", "cut", "cut", "size"]))
    if how == "bytes":  # garbled fields inside a well-sized frame
        for _ in range(draw(st.integers(1, 3))):
            payload[draw(st.integers(0, len(payload) - 1))] = draw(st.integers(0, 255))
    elif how == "cut":  # a well-sized frame whose header or body ends early
        del payload[draw(st.integers(0, len(payload))) :]
    elif how == "size":
        return draw(st.binary(min_size=4, max_size=4)) + bytes(payload)
    return frame(bytes(payload))


@st.composite
def mutated_streams(draw):
    stream = b"".join(draw(st.lists(mutated_frame(), min_size=1, max_size=4)))
    if draw(st.booleans()):
        stream = stream[: draw(st.integers(0, len(stream)))]
    return stream


@RANDOM
@given(stream=mutated_streams(), limit=LIMITS, start=st.just(0) | st.integers(0, 40))
def test_differential_mutated_and_truncated_streams(stream, limit, start):
    start = min(start, len(stream))
    result = both(lambda t: t.RequestScanner(FLEXIBLE_FROM, limit).scan, stream, start, len(stream))
    both(lambda t: t.ResponseScanner(limit).scan, stream, start, len(stream))
    if result[0] == "ok":
        for frame_start, frame_end, *_ in result[1][0]:
            both(lambda t: lambda *a: t.parse_request_header(*a, FLEXIBLE_FROM), stream, frame_start + 4, frame_end)
