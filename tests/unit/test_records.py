"""Kafka record batches v2 (brokerguard._native.records) and its pure-Python twin.

Every behavioural test runs against both twins. aiokafka and kafka-python serve as independent
readers and writers; the differential tests feed both twins the same valid, mutated and
truncated batches and require identical results or identical RecordError messages.
Hypothesis prints the seed and a reproduction blob on failure.
"""
import array
import gzip
import os
import struct
import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor

import google_crc32c
import lz4.block
import lz4.frame
import pytest
import snappy
import zstandard
from aiokafka.record.default_records import DefaultRecordBatch as AioBatch
from aiokafka.record.default_records import DefaultRecordBatchBuilder as AioBuilder
from hypothesis import given
from hypothesis import strategies as st

from fuzzing import random_inputs
from kafka import codec as kafka_codec
from kafka.record.default_records import DefaultRecordBatch as KafkaBatch
from kafka.record.default_records import DefaultRecordBatchBuilder as KafkaBuilder

from brokerguard._native import errors, jsonmask, jsonmask_py, records, records_py
from brokerguard._native.errors import RecordError

TWINS = [pytest.param(records, id="cython"), pytest.param(records_py, id="python")]
CODECS = [0, 1, 2, 3, 4]
CODEC_IDS = ["none", "gzip", "snappy", "lz4", "zstd"]
LIMIT = 64 * 1024 * 1024
MIB = 1024 * 1024

RANDOM = random_inputs(300)


@pytest.fixture(params=TWINS)
def twin(request):
    return request.param


# An encoder written apart from the code under test, with independent codecs.


def uvarint(value):
    out = bytearray()
    while True:
        if value < 0x80:
            out.append(value)
            return bytes(out)
        out.append(value & 0x7F | 0x80)
        value >>= 7


def varint(value):
    return uvarint((value << 1) ^ (value >> 63))


def blob(data):
    return varint(-1) if data is None else varint(len(data)) + data


def record_body(offset_delta=0, timestamp_delta=0, key=None, value=b"v", headers=(), attributes=0):
    return (
        bytes([attributes])
        + varint(timestamp_delta)
        + varint(offset_delta)
        + blob(key)
        + blob(value)
        + varint(len(headers))
        + b"".join(varint(len(name.encode())) + name.encode() + blob(data) for name, data in headers)
    )


def record(*args, **kwargs):
    body = record_body(*args, **kwargs)
    return varint(len(body)) + body


def compress(codec, data, snappy_raw=False):
    if codec == 1:
        return gzip.compress(data)
    if codec == 2:
        return snappy.compress(data) if snappy_raw else kafka_codec.snappy_encode(data)
    if codec == 3:
        return lz4.frame.compress(data, block_linked=False, content_checksum=False)
    if codec == 4:
        return zstandard.ZstdCompressor().compress(data)
    return data


def batch(
    section,
    count,
    attributes=0,
    base_offset=0,
    leader_epoch=-1,
    magic=2,
    last_offset_delta=None,
    base_timestamp=0,
    max_timestamp=0,
    producer_id=-1,
    producer_epoch=-1,
    base_sequence=-1,
    crc=None,
):
    """A batch around an already compressed (or plain) records section."""
    if last_offset_delta is None:
        last_offset_delta = max(count - 1, -(2**31))
    body = struct.pack(
        ">hiqqqhii", attributes, last_offset_delta, base_timestamp, max_timestamp, producer_id,
        producer_epoch, base_sequence, count,
    ) + section
    if crc is None:
        crc = google_crc32c.value(body)
    rest = struct.pack(">ibI", leader_epoch, magic, crc) + body
    return struct.pack(">qi", base_offset, len(rest)) + rest


def with_crc(raw):
    raw = bytearray(raw)
    struct.pack_into(">I", raw, 17, google_crc32c.value(bytes(raw[21:])))
    return bytes(raw)


def outcome(call, *args):
    try:
        return ("ok", call(*args))
    except RecordError as err:
        return ("RecordError", str(err))


def both(call):
    results = [outcome(call, twin) for twin in (records, records_py)]
    assert results[0] == results[1]
    return results[0]


def header_of(b):
    return (
        b.base_offset, b.partition_leader_epoch, b.magic, b.crc, b.attributes, b.last_offset_delta,
        b.base_timestamp, b.max_timestamp, b.producer_id, b.producer_epoch, b.base_sequence, b.count,
        b.compression, b.timestamp_type, b.is_transactional, b.is_control, b.raw,
    )


def columns_of(r):
    return (len(r), r.keys(), r.values(), r.headers(), r.offset_deltas(), r.timestamp_deltas(), r.sizes())


def only_batch(twin, raw, limit=LIMIT):
    batches, end = twin.read_batches(raw, limit)
    assert end == len(raw) and len(batches) == 1
    return batches[0]


def reference(raw, reader):
    """(offset, timestamp, key, value, headers) per record, as aiokafka or kafka-python read them."""
    it = reader(bytes(raw))
    assert it.validate_crc()
    return [(r.offset, r.timestamp, r.key, r.value, [tuple(h) for h in r.headers]) for r in it]


def ours(b, r):
    return [
        (b.base_offset + od, b.base_timestamp + td, k, v, h)
        for od, td, k, v, h in zip(r.offset_deltas(), r.timestamp_deltas(), r.keys(), r.values(), r.headers())
    ]


def json_value(i):
    return b'{"id": %d, "user": "user-%06d", "note": "%s"}' % (i, i * 7919 % 10**6, b"x" * (i % 40))


SAMPLE = [
    (b"k0", json_value(0), [("trace", b"abc"), ("empty", b""), ("gone", None)], 1_700_000_000_000),
    (None, json_value(1), [], 1_700_000_000_005),
    (b"k2", None, [("h", b"\x00\xff")], 1_699_999_999_990),
    (b"", b"", [], 1_700_000_000_001),
] + [(b"key-%d" % i, json_value(i), [("i", b"%d" % i)] if i % 3 else [], 1_700_000_000_000 + i) for i in range(4, 60)]


def sample_columns():
    return [list(column) for column in zip(*SAMPLE)]


# The twins themselves


def test_cython_twin_is_the_compiled_extension():
    assert records.__file__.endswith(".so"), records.__file__
    assert records.Batch is not records_py.Batch
    assert records.read_batches is not records_py.read_batches
    assert records.RecordError is records_py.RecordError is errors.RecordError
    assert issubclass(RecordError, ValueError)
    assert (records.NONE, records.GZIP, records.SNAPPY, records.LZ4, records.ZSTD) == (0, 1, 2, 3, 4)
    assert sorted(records.__all__) == sorted(records_py.__all__)


@pytest.mark.parametrize("env, expected", [(None, "cython"), ("1", "python")])
def test_package_chooses_once_by_environment(env, expected):
    environ = {k: v for k, v in os.environ.items() if k != "BROKERGUARD_NO_EXTENSIONS"}
    if env is not None:
        environ["BROKERGUARD_NO_EXTENSIONS"] = env
    code = (
        "import brokerguard._native as n, brokerguard._native.records_py as p;"
        "print(n.IMPLEMENTATION, n.read_batches is p.read_batches, n.Batch is p.Batch, n.RecordError.__name__)"
    )
    out = subprocess.run([sys.executable, "-c", code], env=environ, capture_output=True, text=True, check=True)
    same = str(expected == "python")
    assert out.stdout.split() == [expected, same, same, "RecordError"]


def test_both_twins_start_with_the_same_wire_format_comment():
    here = os.path.dirname(records_py.__file__)
    with open(os.path.join(here, "records_py.py")) as source:
        python_lines = source.read().splitlines()
    with open(os.path.join(here, "records.pyx")) as source:
        cython_lines = source.read().splitlines()
    comment = python_lines[: next(i for i, line in enumerate(python_lines) if not line.startswith("#"))]
    assert comment[0].startswith("# Kafka wire format")
    assert cython_lines[: len(comment)] == comment


def test_batches_and_records_come_only_from_reading(twin):
    with pytest.raises(TypeError, match="Batch objects are made by read_batches"):
        twin.Batch()
    with pytest.raises(TypeError, match="Records objects are made by Batch.decode"):
        twin.Records()


# Round trips


@pytest.mark.parametrize("codec", CODECS, ids=CODEC_IDS)
def test_round_trip_every_codec(twin, codec):
    keys, values, headers, stamps = sample_columns()
    raw = twin.encode_batch(keys, values, headers, stamps, compression=codec)
    b = only_batch(twin, raw)
    assert b.raw == raw
    assert (b.compression, b.count, b.last_offset_delta) == (codec, len(SAMPLE), len(SAMPLE) - 1)
    assert (b.base_timestamp, b.max_timestamp) == (stamps[0], max(stamps))
    assert (b.base_offset, b.partition_leader_epoch, b.magic) == (0, -1, 2)
    assert (b.producer_id, b.producer_epoch, b.base_sequence) == (-1, -1, -1)
    assert (b.timestamp_type, b.is_transactional, b.is_control) == (0, False, False)
    r = b.decode(LIMIT)
    assert len(r) == len(SAMPLE)
    assert r.keys() == keys
    assert r.values() == values
    assert r.headers() == [[(name, data) for name, data in h] for h in headers]
    assert r.offset_deltas() == list(range(len(SAMPLE)))
    assert r.timestamp_deltas() == [stamp - stamps[0] for stamp in stamps]
    assert r.sizes() == [len(record_body(i, stamps[i] - stamps[0], *SAMPLE[i][:3])) for i in range(len(SAMPLE))]
    if codec == 0:
        assert raw[61:] == b"".join(record(i, stamps[i] - stamps[0], *SAMPLE[i][:3]) for i in range(len(SAMPLE)))


def test_sizes_are_the_length_varints(twin):
    section = record(0, 0, b"k", b"value") + record(1, 5, None, b"x" * 300, [("a", None)])
    raw = batch(section, 2)
    r = only_batch(twin, raw).decode(LIMIT)
    assert r.sizes() == [len(record_body(0, 0, b"k", b"value")), len(record_body(1, 5, None, b"x" * 300, [("a", None)]))]


@pytest.mark.parametrize("codec", CODECS, ids=CODEC_IDS)
def test_with_the_same_values(twin, codec):
    keys, values, headers, stamps = sample_columns()
    raw = twin.encode_batch(keys, values, headers, stamps, compression=codec, producer_id=77, producer_epoch=3,
                            base_sequence=1000, base_offset=4242, partition_leader_epoch=9, attributes_extra=0x10)
    b = only_batch(twin, raw)
    r = b.decode(LIMIT)
    again = b.with_values(r, r.values())
    if codec == 0:
        assert again == raw  # byte for byte
    b2 = only_batch(twin, again)
    assert header_of(b2)[:3] == header_of(b)[:3]
    assert header_of(b2)[4:12] == header_of(b)[4:12]
    assert columns_of(b2.decode(LIMIT)) == columns_of(r)


@pytest.mark.parametrize("codec", CODECS, ids=CODEC_IDS)
def test_with_new_values_keeps_everything_else(twin, codec):
    keys, values, headers, stamps = sample_columns()
    raw = twin.encode_batch(keys, values, headers, stamps, compression=codec, producer_id=5, producer_epoch=1,
                            base_sequence=17, base_offset=10_000, partition_leader_epoch=3)
    b = only_batch(twin, raw)
    r = b.decode(LIMIT)
    new = [None if i % 5 == 0 else b"#" * (i * 13) for i in range(len(r))]
    out = b.with_values(r, new)
    b2 = only_batch(twin, out)
    same = ("base_offset", "partition_leader_epoch", "magic", "attributes", "last_offset_delta", "base_timestamp",
            "max_timestamp", "producer_id", "producer_epoch", "base_sequence", "count")
    assert [getattr(b2, name) for name in same] == [getattr(b, name) for name in same]
    r2 = b2.decode(LIMIT)
    assert r2.values() == new
    assert (r2.keys(), r2.headers(), r2.offset_deltas(), r2.timestamp_deltas()) == (
        r.keys(), r.headers(), r.offset_deltas(), r.timestamp_deltas())
    for reader in (AioBatch, KafkaBatch):
        assert reference(out, reader) == [row[:3] + (value,) + row[4:] for row, value in zip(ours(b, r), new)]


# Masking a batch's values in one pass: the compiled FieldMasker is called on each value in
# place; any other masker (the pure-Python twin) through its mask method. Either way the result
# is what with_values makes of the masked values.

MASK_RULES = [(("card", "number"), jsonmask.KEEP_LAST, 4, None), (("email",), jsonmask.REDACT, 0, b'"[R]"'),
              (("drop",), jsonmask.DROP, 0, None), (("h",), jsonmask.HASH, 0, None)]
MASKERS = [pytest.param(jsonmask, id="native-masker"), pytest.param(jsonmask_py, id="python-masker")]


def masker_of(module, hash_function=lambda text: b'"h:' + str(len(text)).encode() + b'"'):
    return module.FieldMasker(MASK_RULES, hash_function)


@pytest.mark.parametrize("masking", MASKERS)
@pytest.mark.parametrize("codec", CODECS, ids=CODEC_IDS)
def test_with_masked_values_is_with_values_of_the_masked_values(twin, masking, codec):
    values = [b'{"card":{"number":"4111111111111111"},"email":"a@b.c","drop":1,"h":"x"}', None, b'{"other":1}',
              b'{"email":"\\u00e9@x", "k": [1, {"email": "kept"}]}', b'{"h":"pseudonym"}'] * 7
    keys, _, headers, stamps = sample_columns()
    count = len(values)
    raw = twin.encode_batch(keys[:count], values, headers[:count], stamps[:count], compression=codec,
                            producer_id=9, producer_epoch=2, base_sequence=40, base_offset=77)
    b = only_batch(twin, raw)
    r = b.decode(LIMIT)
    masker = masker_of(masking)
    out = b.with_masked_values(r, masker)
    assert out == b.with_values(r, [None if v is None else masker.mask(v) for v in values])
    r2 = only_batch(twin, out).decode(LIMIT)
    assert r2.values()[0] == b'{"card":{"number":"************1111"},"email":"[R]","h":"h:3"}'
    assert (r2.keys(), r2.headers(), r2.timestamp_deltas()) == (r.keys(), r.headers(), r.timestamp_deltas())


@pytest.mark.parametrize("rules", [MASK_RULES[:3], MASK_RULES], ids=["no-hash", "hash"])
@pytest.mark.parametrize("masking", MASKERS)
@pytest.mark.parametrize("codec", CODECS, ids=CODEC_IDS)
def test_masked_is_with_masked_values_of_the_decoded_batch(twin, masking, rules, codec):
    """Without hash rules the compiled masker masks an uncompressed batch in one pass without
    the GIL; whichever way, the same bytes (sealed: read_batches checks the CRC), the raw batch
    itself when nothing changed, None when a value is left to the caller."""
    masker = masking.FieldMasker(rules, lambda text: b'"h"')
    changed = [b'{"card":{"number":"4111111111111111"},"email":"a@b.c","drop":1,"h":"x"}', None, b'{"a":[]}'] * 40
    for values in (changed, [b'{"a":1}', None] * 3, changed + [b'{"card":{"number":12}}'], [b'{"email":'], []):
        raw = twin.encode_batch([b"k"] * len(values), values, [[("h", b"v")]] * len(values), list(range(len(values))),
                                compression=codec)
        b = only_batch(twin, raw)
        expected = b.with_masked_values(b.decode(LIMIT), masker)
        out = b.masked(masker, LIMIT)
        assert out == expected
        assert (out is b.raw) == (expected is b.raw)
        if out is not None and out is not b.raw:
            assert only_batch(twin, out).decode(LIMIT).values()[0] == b'{"card":{"number":"************1111"},"email":"[R]"' + (
                b',"h":"h"}' if len(rules) == 4 else b',"h":"x"}')
    b = only_batch(twin, twin.encode_batch([None], [b'{"email":"x"}'], [[]], [1]))
    with pytest.raises(RecordError, match="its records exceed the limit of 10 bytes"):
        b.masked(masker, 10)


@pytest.mark.parametrize("masking", MASKERS)
def test_with_masked_values_runs_path_automata(twin, masking):
    # $..email: redact, $.k[*]: drop, as a profile compiles them: states that loop and reach into arrays.
    states = [(None, (("email", 2), ("k", 3)), (), 1), (None, (("email", 2),), (), 1),
              ((jsonmask.REDACT, 0, b'"[R]"'), (), (), -1), (None, (), (), 4), ((jsonmask.DROP, 0, None), (), (), -1)]
    masker = masking.FieldMasker(states=states)
    values = [b'{"email":"a@b.c","k":[1,{"email":"x"}],"l":[[{"email":"y"}]]}', None, b'{"k":{"a":1}}', b"[{}]"] * 9
    raw = twin.encode_batch([None] * len(values), values, [[]] * len(values), list(range(len(values))))
    b = only_batch(twin, raw)
    r = b.decode(LIMIT)
    out = b.with_masked_values(r, masker)
    assert out == b.with_values(r, [None if v is None else masker.mask(v) for v in values])
    assert only_batch(twin, out).decode(LIMIT).values()[:3] == [b'{"email":"[R]","k":[],"l":[[{"email":"[R]"}]]}',
                                                                 None, b'{"k":{}}']


def test_batches_masked_on_several_threads_at_once_come_out_as_one_thread_makes_them():
    """One batch at a time writes its masked values to a buffer kept from batch to batch, any
    other masked meanwhile to a buffer of its own: four threads at the same time make what one
    thread makes, by either method. The batches differ in size, so two sharing a buffer would show."""
    masker = jsonmask.FieldMasker(MASK_RULES[:2])  # no hash: masks without the GIL, the threads overlap
    batches = []
    for n in range(4):
        values = [b'{"card":{"number":"4111%012d"},"email":"c%d@x.y","pad":"%s"}' % (i, n, b"x" * (40 * n))
                  for i in range(300)]
        batches.append(only_batch(records, records.encode_batch([None] * 300, values, [[]] * 300, list(range(300)))))
    decoded = [b.decode(LIMIT) for b in batches]
    alone = [b.with_masked_values(r, masker) for b, r in zip(batches, decoded)]
    assert all(out is not b.raw for out, b in zip(alone, batches))
    assert records._native_crc32c() != 0  # so masked() reads, writes and seals without the GIL too
    with ThreadPoolExecutor(4) as pool:
        for _ in range(40):
            assert list(pool.map(lambda i: batches[i].with_masked_values(decoded[i], masker), range(4))) == alone
            assert list(pool.map(lambda i: batches[i].masked(masker, LIMIT), range(4))) == alone


@pytest.mark.parametrize("masking", MASKERS)
def test_with_masked_values_unchanged_is_the_raw_batch_and_left_values_say_none(twin, masking):
    masker = masker_of(masking)
    raw = twin.encode_batch([None, None], [b'{"a":1}', None], [[], []], [1, 2], compression=3)
    b = only_batch(twin, raw)
    assert b.with_masked_values(b.decode(LIMIT), masker) is b.raw
    for left in (b'{"card":{"number":12}}', b'{"email":', b"\xff"):  # FALLBACK, invalid, not UTF-8
        raw = twin.encode_batch([None, None], [b'{"email":"x"}', left], [[], []], [1, 2])
        b = only_batch(twin, raw)
        assert b.with_masked_values(b.decode(LIMIT), masker) is None


@pytest.mark.parametrize("masking", MASKERS)
def test_with_masked_values_passes_on_what_masking_raises(twin, masking):
    def broken(text):
        raise KeyError("no hash key")

    raw = twin.encode_batch([None], [b'{"h":"x"}'], [[]], [1])
    b = only_batch(twin, raw)
    with pytest.raises(KeyError, match="no hash key"):
        b.with_masked_values(b.decode(LIMIT), masker_of(masking, broken))
    with pytest.raises(ValueError, match="these records were decoded from another batch"):
        only_batch(twin, raw).with_masked_values(b.decode(LIMIT), masker_of(masking))


def test_the_native_mask_capsule_works_only_with_its_own_masker():
    class Impostor:
        native_mask_value = masker_of(jsonmask).native_mask_value

        def mask(self, value):
            return value

    b = only_batch(records, records.encode_batch([None], [b'{"email":"x"}'], [[]], [1]))
    with pytest.raises(TypeError, match="native_mask_value needs its FieldMasker, not Impostor"):
        b.with_masked_values(b.decode(LIMIT), Impostor())


def test_with_masked_values_inside_another_masking(twin):
    """A hash function that masks a batch itself (as a second thread could, while the first waits
    on the GIL) gets a buffer of its own: both batches come out whole."""
    inner_raw = twin.encode_batch([None] * 3, [b'{"email":"in%d"}' % i for i in range(3)], [[]] * 3, [1, 2, 3])
    inner = only_batch(twin, inner_raw)
    inner_results = []

    def hashing(text):
        inner_results.append(inner.with_masked_values(inner.decode(LIMIT), masker_of(jsonmask)))
        return b'"h"'

    outer = only_batch(twin, twin.encode_batch([None] * 2, [b'{"email":"a","h":"x"}', b'{"h":"y"}'], [[]] * 2,
                                               [1, 2]))
    out = outer.with_masked_values(outer.decode(LIMIT), masker_of(jsonmask, hashing))
    assert only_batch(twin, out).decode(LIMIT).values() == [b'{"email":"[R]","h":"h"}', b'{"h":"h"}']
    assert [only_batch(twin, raw).decode(LIMIT).values() for raw in inner_results] == [[b'{"email":"[R]"}'] * 3] * 2


def test_with_values_accepts_buffers_and_tuples(twin):
    raw = twin.encode_batch([b"a", b"b", b"c"], [b"1", b"2", b"3"], [[], [], []], [1, 2, 3])
    b = only_batch(twin, raw)
    r = b.decode(LIMIT)
    out = b.with_values(r, (bytearray(b"x"), memoryview(b"yy"), array.array("B", b"zzz")))
    assert only_batch(twin, out).decode(LIMIT).values() == [b"x", b"yy", b"zzz"]


def test_with_values_keeps_record_attributes_and_odd_deltas(twin):
    section = (
        record(0, -5, b"k", b"old", [("h", b"1")], attributes=0xFF)
        + record(7, 2**40, None, None, [], attributes=1)
        + record(-3, -(2**62), b"", b"", [("", None)])
    )
    raw = batch(section, 3, base_offset=100, base_timestamp=2**50)
    b = only_batch(twin, raw)
    r = b.decode(LIMIT)
    assert r.offset_deltas() == [0, 7, -3]
    assert r.timestamp_deltas() == [-5, 2**40, -(2**62)]
    assert b.with_values(r, r.values()) == raw
    out = b.with_values(r, [b"new", b"n", None])
    expected = (
        record(0, -5, b"k", b"new", [("h", b"1")], attributes=0xFF)
        + record(7, 2**40, None, b"n", [], attributes=1)
        + record(-3, -(2**62), b"", None, [("", None)])
    )
    assert out == batch(expected, 3, base_offset=100, base_timestamp=2**50)


def test_null_keys_values_and_header_values(twin):
    section = record(0, 0, None, None, [("a", None), ("b", b"")]) + record(1, 0, b"", b"", [])
    r = only_batch(twin, batch(section, 2)).decode(LIMIT)
    assert r.keys() == [None, b""]
    assert r.values() == [None, b""]
    assert r.headers() == [[("a", None), ("b", b"")], []]


def test_header_keys_keep_any_bytes(twin):
    # A key that is not UTF-8 comes back as surrogates and is written back unchanged.
    body = b"\x00\x00\x00" + varint(-1) + varint(0) + varint(1) + varint(3) + b"ab\xff" + varint(-1)
    raw = batch(varint(len(body)) + body, 1)
    b = only_batch(twin, raw)
    r = b.decode(LIMIT)
    (key, _), = r.headers()[0]
    assert key == "ab\udcff"
    assert b.with_values(r, r.values()) == raw
    again = twin.encode_batch([None], [b""], r.headers(), [0])
    assert only_batch(twin, again).decode(LIMIT).headers() == r.headers()


@pytest.mark.parametrize("codec", CODECS, ids=CODEC_IDS)
def test_empty_batches(twin, codec):
    raw = twin.encode_batch([], [], [], [], compression=codec)
    b = only_batch(twin, raw)
    assert (b.count, b.last_offset_delta, b.base_timestamp, b.max_timestamp) == (0, -1, -1, -1)
    r = b.decode(LIMIT)
    assert len(r) == 0 and columns_of(r) == (0, [], [], [], [], [], [])
    out = b.with_values(r, [])
    assert len(only_batch(twin, out).decode(LIMIT)) == 0
    # A count-0 batch from elsewhere, no records at all.
    empty = batch(compress(codec, b""), 0, attributes=codec)
    assert len(only_batch(twin, empty).decode(LIMIT)) == 0


def test_transactional_and_idempotent_fields_are_kept(twin):
    raw = twin.encode_batch(
        [b"k"], [b"v"], [[]], [123], producer_id=2**40, producer_epoch=32767, base_sequence=2**31 - 1,
        base_offset=2**62, partition_leader_epoch=2**31 - 1, attributes_extra=0x10,
    )
    b = only_batch(twin, raw)
    assert (b.producer_id, b.producer_epoch, b.base_sequence) == (2**40, 32767, 2**31 - 1)
    assert (b.base_offset, b.partition_leader_epoch) == (2**62, 2**31 - 1)
    assert b.is_transactional and not b.is_control and b.attributes == 0x10
    r = b.decode(LIMIT)
    out = only_batch(twin, b.with_values(r, [b"masked"]))
    assert header_of(out)[:3] == header_of(b)[:3]
    assert header_of(out)[4:12] == header_of(b)[4:12]
    aio = AioBatch(bytes(out.raw))
    assert (aio.producer_id, aio.producer_epoch, aio.base_sequence, aio.is_transactional) == (2**40, 32767, 2**31 - 1, True)


def test_control_batches_are_readable(twin):
    # A commit marker as the broker writes it: key (version 0, type 1), value (version 0, epoch 5).
    section = record(0, 0, b"\x00\x00\x00\x01", b"\x00\x00\x00\x00\x00\x05")
    raw = batch(section, 1, attributes=0x30, producer_id=9, producer_epoch=0, base_timestamp=7, max_timestamp=7)
    b = only_batch(twin, raw)
    assert b.is_control and b.is_transactional
    r = b.decode(LIMIT)
    assert r.keys() == [b"\x00\x00\x00\x01"]
    assert b.with_values(r, r.values()) == raw
    assert list(KafkaBatch(raw))[0].commit  # a commit, as kafka-python reads it too


def test_log_append_time_is_reported(twin):
    raw = batch(record(), 1, attributes=0x08)
    assert only_batch(twin, raw).timestamp_type == 1


def test_snappy_framing_is_kept(twin):
    plain = b"".join(record(i, i, b"k", json_value(i)) for i in range(40))
    for raw_framing in (False, True):
        section = compress(2, plain, snappy_raw=raw_framing)
        assert section.startswith(b"\x82SNAPPY\x00") is not raw_framing
        b = only_batch(twin, batch(section, 40, attributes=2))
        r = b.decode(LIMIT)
        assert r.values() == [json_value(i) for i in range(40)]
        out = b.with_values(r, [b"m"] * 40)
        written = out[61:]
        assert written.startswith(b"\x82SNAPPY\x00") is not raw_framing
        expected = b"".join(record(i, i, b"k", b"m") for i in range(40))
        assert (snappy.decompress(written) if raw_framing else kafka_codec.snappy_decode(written)) == expected


def test_lz4_is_written_as_the_java_client_reads_it(twin):
    # Independent 64 KiB blocks, no checksums, no content size (Java refuses linked blocks).
    values = [bytes([i % 251]) * 1000 + os.urandom(200) for i in range(300)]
    raw = twin.encode_batch([None] * 300, values, [[]] * 300, [0] * 300, compression=3)
    frame = raw[61:]
    assert frame[:7] == bytes.fromhex("04224d18604082")
    plain = lz4.frame.decompress(frame)
    pos, parts = 7, []
    while True:
        (size,) = struct.unpack_from("<I", frame, pos)
        pos += 4
        if size == 0:
            break
        block = frame[pos : pos + (size & 0x7FFFFFFF)]
        parts.append(block if size & 0x80000000 else lz4.block.decompress(block, uncompressed_size=65536))
        pos += size & 0x7FFFFFFF
    assert pos == len(frame) and len(parts) > 1
    assert b"".join(parts) == plain


def test_lz4_with_linked_blocks_and_checksums_is_read(twin):
    plain = b"".join(record(i, 0, None, json_value(i) * 20) for i in range(100))
    section = lz4.frame.compress(plain, block_linked=True, content_checksum=True, block_size=lz4.frame.BLOCKSIZE_MAX64KB)
    r = only_batch(twin, batch(section, 100, attributes=3)).decode(LIMIT)
    assert r.values() == [json_value(i) * 20 for i in range(100)]


def test_gzip_members_may_follow_one_another(twin):
    first = b"".join(record(i, 0, None, b"a") for i in range(3))
    second = b"".join(record(i, 0, None, b"b") for i in range(3, 5))
    raw = batch(gzip.compress(first) + gzip.compress(second), 5, attributes=1)
    assert only_batch(twin, raw).decode(LIMIT).values() == [b"a"] * 3 + [b"b"] * 2


@pytest.mark.parametrize(
    "make",
    [bytes, bytearray, memoryview, lambda b: memoryview(bytearray(b)).toreadonly(), lambda b: array.array("B", b)],
    ids=["bytes", "bytearray", "memoryview", "readonly", "array"],
)
def test_any_contiguous_buffer(twin, make):
    raw = twin.encode_batch([b"k"], [b"v"], [[]], [1]) + twin.encode_batch([b"k2"], [b"v2"], [[]], [2])
    batches, end = twin.read_batches(make(raw), LIMIT)
    assert end == len(raw) and [b.decode(LIMIT).values() for b in batches] == [[b"v"], [b"v2"]]


def test_bytearray_can_be_resized_after_reading_and_after_error(twin):
    buf = bytearray(twin.encode_batch([b"k"], [b"v"], [[]], [1]))
    batches, _ = twin.read_batches(buf, LIMIT)
    buf[17] ^= 1
    with pytest.raises(RecordError):
        twin.read_batches(buf, LIMIT)
    del buf[:10]  # would raise BufferError if a view were still held
    assert batches[0].decode(LIMIT).values() == [b"v"]


def test_a_partial_batch_at_the_end_is_left_for_later(twin):
    first = twin.encode_batch([b"a"], [b"1" * 50], [[]], [1])
    second = twin.encode_batch([b"b", b"c"], [b"2" * 70, b"3"], [[], []], [2, 3], base_offset=1)
    stream = first + second
    for cut in range(len(stream) + 1):
        # Bytes past the cut have not arrived: garbage there must never be read.
        buf = bytearray(stream[:cut] + b"\xff" * (len(stream) - cut))
        found, end = twin.read_batches(memoryview(buf)[:cut], LIMIT)
        expected = [b for b in (first, stream) if len(b) <= cut]
        assert [b.raw for b in found] == [first, second][: len(expected)]
        assert end == (len(expected[-1]) if expected else 0)


# Differential against aiokafka and kafka-python


def build_with(builder_class, codec, rows, transactional=False):
    builder = builder_class(
        magic=2, compression_type=codec, is_transactional=transactional, producer_id=(7 if transactional else -1),
        producer_epoch=(1 if transactional else -1), base_sequence=(0 if transactional else -1), batch_size=1 << 22,
    )
    for offset, (key, value, headers, stamp) in enumerate(rows):
        builder.append(offset, timestamp=stamp, key=key, value=value, headers=headers)
    return bytes(builder.build())


@pytest.mark.parametrize("codec", CODECS, ids=CODEC_IDS)
@pytest.mark.parametrize("builder", [AioBuilder, KafkaBuilder], ids=["aiokafka", "kafka-python"])
@pytest.mark.parametrize("transactional", [False, True], ids=["plain", "transactional"])
def test_their_batches_read_the_same(twin, codec, builder, transactional):
    raw = build_with(builder, codec, SAMPLE, transactional)
    b = only_batch(twin, raw)
    assert b.compression == codec  # the sample compresses, so they did not fall back to none
    assert b.is_transactional is transactional
    aio = AioBatch(raw)
    assert (b.base_offset, b.crc, b.attributes, b.last_offset_delta, b.base_timestamp, b.max_timestamp,
            b.producer_id, b.producer_epoch, b.base_sequence) == (
        aio.base_offset, aio.crc, aio.attributes, aio.last_offset_delta, aio.first_timestamp, aio.max_timestamp,
        aio.producer_id, aio.producer_epoch, aio.base_sequence)
    r = b.decode(LIMIT)
    assert ours(b, r) == reference(raw, AioBatch) == reference(raw, KafkaBatch)
    again = b.with_values(r, r.values())
    if codec == 0:
        assert again == raw
    assert reference(again, AioBatch) == reference(again, KafkaBatch) == reference(raw, AioBatch)


@pytest.mark.parametrize("codec", CODECS, ids=CODEC_IDS)
def test_our_batches_read_the_same_by_them(twin, codec):
    keys, values, headers, stamps = sample_columns()
    raw = twin.encode_batch(keys, values, headers, stamps, compression=codec, base_offset=500)
    expected = [(500 + i, stamp, key, value, [tuple(h) for h in hs]) for i, (key, value, hs, stamp) in enumerate(SAMPLE)]
    assert reference(raw, AioBatch) == reference(raw, KafkaBatch) == expected
    assert AioBatch(raw).compression_type == codec
    # Without producer state, NONE batches are the same bytes the builders write.
    if codec == 0:
        assert twin.encode_batch(keys, values, headers, stamps, partition_leader_epoch=0) == build_with(
            KafkaBuilder, 0, SAMPLE)


# Errors


def test_read_batches_errors(twin):
    good = twin.encode_batch([b"k"], [b"v"], [[]], [1])

    def error(data, limit=LIMIT):
        with pytest.raises(RecordError) as caught:
            twin.read_batches(data, limit)
        return str(caught.value)

    bad_crc = bytearray(good)
    bad_crc[-1] ^= 0xFF
    stored = struct.unpack_from(">I", good, 17)[0]
    computed = google_crc32c.value(bytes(bad_crc[21:]))
    assert error(good + bad_crc) == (
        f"record batch at byte {len(good)}: CRC-32C mismatch: the batch says {stored:#010x}, "
        f"its bytes give {computed:#010x}"
    )
    for magic in (0, 1, 3, -1):
        raw = bytearray(good)
        raw[16] = magic & 0xFF
        assert error(bytes(raw)) == f"record batch at byte 0: magic {magic} is not supported, only magic 2"
    for length in (48, 0, -1, -(2**31)):
        raw = good[:8] + struct.pack(">i", length) + good[12:]
        assert error(raw) == f"record batch at byte 0: batch length {length} is too small for the 49-byte header"
    # Only the 12-byte prefix is needed to refuse a length.
    assert error(good[:8] + struct.pack(">i", 20)) == "record batch at byte 0: batch length 20 is too small for the 49-byte header"
    for codec in (5, 6, 7):
        raw = bytearray(good)
        struct.pack_into(">h", raw, 21, codec | 0x10)
        assert error(with_crc(raw)) == f"record batch at byte 0: unknown compression codec {codec}"
    assert error(good, len(good) - 1) == (
        f"record batch at byte 0: its {len(good)} bytes exceed the limit of {len(good) - 1} bytes"
    )
    assert twin.read_batches(good, len(good))[1] == len(good)


def test_a_crc_checked_later_is_checked_when_the_records_are_read(twin):
    good = twin.encode_batch([None], [b'{"email":"x"}'], [[]], [1])
    bad = bytearray(good)
    bad[-2] ^= 1
    stream = good + bytes(bad)
    with pytest.raises(RecordError) as eager:
        twin.read_batches(stream, LIMIT)
    assert str(eager.value).startswith(f"record batch at byte {len(good)}: CRC-32C mismatch")
    first, second = twin.read_batches(stream, LIMIT, check_crc=False)[0]
    assert first.decode(LIMIT).values() == [b'{"email":"x"}']
    masker = jsonmask.FieldMasker(MASK_RULES[:3])
    for read in (lambda: second.decode(LIMIT), lambda: second.masked(masker, LIMIT)):
        with pytest.raises(RecordError) as later:
            read()
        assert str(later.value) == str(eager.value)
    assert second.raw == bytes(bad)  # what is not read is not refused: it goes on as it came


def test_magic_is_checked_only_on_complete_batches(twin):
    legacy = struct.pack(">qi", 0, 60) + b"\x00" * 4 + b"\x01" + b"\x00" * 30  # magic 1, not all here
    assert twin.read_batches(legacy, LIMIT) == ([], 0)


@pytest.mark.parametrize(
    "section, count, message",
    [
        (record() * 2, 3, "the header declares 3 records but the records end after 2"),
        (record() * 3, 2, f"the header declares 2 records but {len(record())} bytes follow the last one"),
        (b"", 1, "the header declares 1 records but the records end after 0"),
        (b"", -1, "the header declares a negative record count -1"),
        (record(), -5, "the header declares a negative record count -5"),
        (record() + b"\x80", 2, "record 1: its length varint runs past the end of the records"),
        (record() + varint(40) + b"\x00" * 10, 2, "record 1 of 40 bytes runs past the end of the records (10 bytes left)"),
        (varint(-3) + b"\x00" * 10, 1, "record 0: field 'length' is negative (-3)"),
        (varint(0), 1, "record 0: field 'attributes' runs past the end of the record (0 bytes)"),
        (varint(2) + b"\x00\x80", 1, "record 0: field 'timestamp delta' runs past the end of the record (2 bytes)"),
        (varint(12) + b"\x00" + b"\xff" * 10 + b"\x00", 1, "record 0: field 'timestamp delta' is a varint longer than 10 bytes"),
        (varint(11) + b"\x00" + b"\xff" * 9 + b"\x02", 1, "record 0: field 'timestamp delta' is a varint over 64 bits"),
        (varint(7) + b"\x00\x00" + b"\xff" * 5, 1, "record 0: field 'offset delta' is a varint longer than 5 bytes"),
        (varint(7) + b"\x00\x00" + b"\xff" * 4 + b"\x1f", 1, "record 0: field 'offset delta' is a varint over 32 bits"),
        (varint(5) + b"\x00\x00\x00" + varint(5) + b"k", 1, "record 0: field 'key' runs past the end of the record (5 bytes)"),
        (varint(4) + b"\x00\x00\x00\x01", 1, "record 0: field 'value length' runs past the end of the record (4 bytes)"),
        (varint(6) + b"\x00\x00\x00\x01" + varint(9) + b"v", 1, "record 0: field 'value' runs past the end of the record (6 bytes)"),
        (varint(5) + b"\x00\x00\x00\x01\x01", 1, "record 0: field 'header count' runs past the end of the record (5 bytes)"),
        (varint(6) + b"\x00\x00\x00\x01\x01" + varint(-2), 1, "record 0: field 'header count' is negative (-2)"),
        (varint(6) + b"\x00\x00\x00\x01\x01\x02", 1, "record 0: field 'header key length' runs past the end of the record (6 bytes)"),
        (varint(7) + b"\x00\x00\x00\x01\x01\x02" + varint(-1), 1, "record 0: field 'header key length' is negative (-1)"),
        (varint(8) + b"\x00\x00\x00\x01\x01\x02\x04k", 1, "record 0: field 'header key' runs past the end of the record (8 bytes)"),
        (varint(8) + b"\x00\x00\x00\x01\x01\x02\x02k", 1, "record 0: field 'header value length' runs past the end of the record (8 bytes)"),
        (varint(9) + b"\x00\x00\x00\x01\x01\x02\x02k\x04", 1, "record 0: field 'header value' runs past the end of the record (9 bytes)"),
        # A huge header count ends at the record's end, quickly.
        (varint(10) + b"\x00\x00\x00\x01\x01" + b"\xfe\xff\xff\xff\x0f" + b"\x00", 1,
         "record 0: field 'header key length' runs past the end of the record (10 bytes)"),
        (varint(8) + b"\x00\x00\x00\x01\x01\x00\x00\x00", 1, "record 0: its fields end after 6 of its 8 bytes"),
    ],
)
def test_records_that_do_not_parse(twin, section, count, message):
    b = only_batch(twin, batch(section, count, base_offset=77))
    for read in (lambda: b.decode(LIMIT), lambda: b.masked(jsonmask.FieldMasker(MASK_RULES[:3]), LIMIT)):
        with pytest.raises(RecordError) as caught:
            read()
        assert str(caught.value) == "record batch at offset 77: " + message


def test_a_truncated_batch_with_a_fixed_length_is_refused(twin):
    plain = b"".join(record(i, 0, b"k", b"value %d" % i) for i in range(5))
    for codec in CODECS:
        section = compress(codec, plain)
        raw = batch(section[: len(section) * 2 // 3], 5, attributes=codec)
        with pytest.raises(RecordError) as caught:
            only_batch(twin, raw).decode(LIMIT)
        assert str(caught.value).startswith("record batch at offset 0: ")


@pytest.mark.parametrize(
    "codec, section, message",
    [
        (1, b"\x1f\x8b" + b"\x00" * 20, "its gzip records cannot be decompressed: Error -3 while decompressing data: unknown compression method"),
        (1, gzip.compress(b"abc")[:-3], "its gzip records cannot be decompressed: the gzip stream ends before its end"),
        (1, gzip.compress(b"") + b"junk", "its gzip records cannot be decompressed: Error -3 while decompressing data: incorrect header check"),
        (2, b"\x82SNAPPY\x00\x00\x00\x00\x01", "its snappy records cannot be decompressed: xerial snappy stream truncated (12 bytes left where a header or block length was due)"),
        (2, b"\x82SNAPPY\x00" + b"\x00\x00\x00\x01" * 2 + b"\x00\x00", "its snappy records cannot be decompressed: xerial snappy stream truncated (2 bytes left where a header or block length was due)"),
        (2, b"\x82SNAPPY\x00" + b"\x00\x00\x00\x01" * 2 + b"\xff\xff\xff\xff" + b"ab", "its snappy records cannot be decompressed: xerial snappy block of 4294967295 bytes runs past the end (2 bytes left)"),
        (3, b"\x04\x22\x4d\x18\x60\x40\x82" + b"\x05\x00\x00\x00" + b"\xff" * 5, None),
        (4, b"\x28\xb5\x2f\xfd" + b"\x00" * 8, None),
    ],
)
def test_records_that_do_not_decompress(codec, section, message):
    raw = batch(section, 1, attributes=codec)
    result = both(lambda t: only_batch(t, raw).decode(LIMIT))
    assert result[0] == "RecordError"
    if message is None:
        assert result[1].startswith(f"record batch at offset 0: its {CODEC_IDS[codec]} records cannot be decompressed: ")
    else:
        assert result[1] == "record batch at offset 0: " + message


@pytest.fixture(scope="module")
def bombs():
    """100 MB of zeros, compressed by each codec into a batch (the records never parse)."""
    zeros = bytes(100 * 1024 * 1024)
    sections = {
        1: gzip.compress(zeros, compresslevel=1),
        2: kafka_codec.snappy_encode(zeros),
        "raw-snappy": snappy.compress(zeros),
        3: lz4.frame.compress(zeros, block_linked=False),
        4: zstandard.ZstdCompressor().compress(zeros),
    }
    return {name: batch(section, 1, attributes=name if isinstance(name, int) else 2) for name, section in sections.items()}


@pytest.mark.parametrize("name", [1, 2, "raw-snappy", 3, 4], ids=["gzip", "snappy", "raw-snappy", "lz4", "zstd"])
def test_decompression_bombs_stop_at_the_limit(bombs, name):
    raw = bombs[name]
    codec = CODEC_IDS[name if isinstance(name, int) else 2]
    result = both(lambda t: only_batch(t, raw).decode(MIB))
    assert result == (
        "RecordError",
        f"record batch at offset 0: its {codec} records decompress to more than the limit of {MIB} bytes",
    )


def test_decompression_bombs_never_allocate_much_more_than_the_limit():
    code = textwrap.dedent(
        """
        import gzip, resource, sys
        import lz4.frame, snappy, zstandard
        from kafka import codec
        import struct, google_crc32c

        def batch(section, count, attributes):
            body = struct.pack(">hiqqqhii", attributes, 0, 0, 0, -1, -1, -1, count) + section
            rest = struct.pack(">ibI", -1, 2, google_crc32c.value(body)) + body
            return struct.pack(">qi", 0, len(rest)) + rest
        from brokerguard._native import records, records_py
        zeros = bytes(100 * 1024 * 1024)
        bombs = [batch(s, 1, attributes=c) for c, s in [
            (1, gzip.compress(zeros, compresslevel=1)), (2, codec.snappy_encode(zeros)), (2, snappy.compress(zeros)),
            (3, lz4.frame.compress(zeros, block_linked=False)), (4, zstandard.ZstdCompressor().compress(zeros))]]
        del zeros
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        for twin in (records, records_py):
            for raw in bombs:
                (b,), _ = twin.read_batches(raw, 1 << 30)
                try:
                    b.decode(1 << 20)
                except records.RecordError:
                    pass
                else:
                    sys.exit("no error")
        print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before)
        """
    )
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True)
    grown_kib = int(out.stdout)
    assert grown_kib < 24 * 1024, f"peak memory grew by {grown_kib} KiB decoding bombs with a 1 MiB limit"


def test_uncompressed_records_over_the_limit(twin):
    raw = batch(record(0, 0, None, b"x" * 100), 1)
    size = len(raw) - 61
    assert len(only_batch(twin, raw).decode(size).values()[0]) == 100
    with pytest.raises(RecordError) as caught:
        only_batch(twin, raw).decode(size - 1)
    assert str(caught.value) == f"record batch at offset 0: its records exceed the limit of {size - 1} bytes"


def test_compressed_records_at_exactly_the_limit(twin):
    plain = b"".join(record(i, 0, None, b"y" * 1000) for i in range(300))
    for codec in (1, 2, 3, 4):
        raw = batch(compress(codec, plain), 300, attributes=codec)
        assert len(only_batch(twin, raw).decode(len(plain))) == 300
        with pytest.raises(RecordError, match=f"decompress to more than the limit of {len(plain) - 1} bytes"):
            only_batch(twin, raw).decode(len(plain) - 1)


def test_caller_mistakes(twin):
    raw = twin.encode_batch([b"a", b"b"], [b"1", b"2"], [[], []], [1, 2])
    b = only_batch(twin, raw)
    r = b.decode(LIMIT)
    with pytest.raises(ValueError, match="2 values given for 1 records|1 values given for 2 records"):
        b.with_values(r, [b"x"])
    other = only_batch(twin, raw)
    with pytest.raises(ValueError, match="these records were decoded from another batch"):
        other.with_values(r, [b"x", b"y"])
    with pytest.raises(TypeError, match=r"values\[1\] is str, not bytes or None"):
        b.with_values(r, [b"x", "y"])
    with pytest.raises(TypeError, match=r"values\[0\] is memoryview, not bytes or None"):
        b.with_values(r, [memoryview(b"abcd")[::2], b"y"])
    for limit in (-1, -(2**70)):
        with pytest.raises(ValueError, match=f"max_uncompressed_bytes is {limit}: it must be 0 or more"):
            twin.read_batches(raw, limit)
        with pytest.raises(ValueError, match=f"max_uncompressed_bytes is {limit}"):
            b.decode(limit)
    with pytest.raises(TypeError):
        b.decode(1.5)


@pytest.mark.parametrize(
    "kwargs, columns, error, message",
    [
        ({"compression": 5}, None, ValueError, "compression 5 is not a codec"),
        ({"compression": -1}, None, ValueError, "compression -1 is not a codec"),
        ({"producer_epoch": 2**15}, None, ValueError, "producer_epoch 32768 does not fit a signed 16-bit integer"),
        ({"base_sequence": -(2**31) - 1}, None, ValueError, "base_sequence -2147483649 does not fit a signed 32-bit"),
        ({"producer_id": 2**63}, None, ValueError, "producer_id 9223372036854775808 does not fit a signed 64-bit"),
        ({"partition_leader_epoch": 2**31}, None, ValueError, "partition_leader_epoch 2147483648 does not fit"),
        ({"base_offset": -(2**63) - 1}, None, ValueError, "base_offset -9223372036854775809 does not fit"),
        ({"attributes_extra": 0x13}, None, ValueError, "attributes_extra 0x13 sets codec bits"),
        ({"attributes_extra": 0x10000}, None, ValueError, "attributes_extra 65536 does not fit a signed 16-bit"),
        ({}, ([b"a"], [b"1", b"2"], [[]], [0]), ValueError, "must be as long as each other, not 1, 2, 1 and 1"),
        ({}, ([b"a"], [b"1"], [[]], [2**63]), ValueError, r"timestamps\[0\] 9223372036854775808 does not fit"),
        ({}, ([b"a", b"b"], [b"1", b"2"], [[], []], [2**62, -(2**62) - 2**61]), ValueError,
         r"timestamps\[1\] is -11529215046068469760 ms from the first: the delta does not fit 64 bits"),
        ({}, ([b"a"], [1], [[]], [0]), TypeError, r"values\[0\] is int, not bytes or None"),
        ({}, (["a"], [b"1"], [[]], [0]), TypeError, r"keys\[0\] is str, not bytes or None"),
        ({}, ([b"a"], [b"1"], [[("k",)]], [0]), TypeError, r"headers\[0\]\[0\] is \('k',\)"),
        ({}, ([b"a"], [b"1"], [[(1, b"v")]], [0]), TypeError, r"headers\[0\]\[0\] is \(1, b'v'\)"),
        ({}, ([b"a"], [b"1"], [[("k", b"v"), ("k", "v")]], [0]), TypeError, r"headers\[0\]\[1\] is \('k', 'v'\)"),
    ],
)
def test_encode_batch_argument_errors(twin, kwargs, columns, error, message):
    columns = columns or ([b"a"], [b"1"], [[]], [0])
    with pytest.raises(error, match=message):
        twin.encode_batch(*columns, **kwargs)


def test_encode_batch_header_forms(twin):
    raw = twin.encode_batch(
        [None, None, None], [b"1", b"2", b"3"],
        [None, (("k", bytearray(b"v")),), [(b"raw", None)]], [5, 6, 7],
    )
    assert only_batch(twin, raw).decode(LIMIT).headers() == [[], [("k", b"v")], [("raw", None)]]


# Random batches: both twins must agree with each other, and with aiokafka, on valid input.

HEADER_ROWS = st.lists(st.tuples(st.text(max_size=6), st.none() | st.binary(max_size=12)), max_size=3)
ROWS = st.lists(
    st.tuples(
        st.none() | st.binary(max_size=24),
        st.none() | st.binary(max_size=200) | st.just(b'{"card": "4111111111111111", "name": "x"}' * 4),
        HEADER_ROWS,
        st.integers(-(2**40), 2**40),
    ),
    max_size=10,
)


@st.composite
def valid_batches(draw):
    rows = draw(ROWS)
    codec = draw(st.sampled_from(CODECS))
    base_timestamp = draw(st.integers(-(2**50), 2**50))
    section = b"".join(
        # Record attributes are int8 and unused; aiokafka misreads 0x80 and above, so those are
        # covered by the explicit tests only.
        record(i, stamp, key, value, [(name, data) for name, data in headers], draw(st.integers(0, 127)))
        for i, (key, value, headers, stamp) in enumerate(rows)
    )
    return rows, codec, section, dict(
        attributes=codec | draw(st.sampled_from([0, 0x08, 0x10, 0x20, 0x30, -32768])),
        base_offset=draw(st.integers(-(2**63), 2**63 - 1)),
        leader_epoch=draw(st.integers(-(2**31), 2**31 - 1)),
        base_timestamp=base_timestamp,
        max_timestamp=draw(st.integers(-(2**63), 2**63 - 1)),
        producer_id=draw(st.integers(-(2**63), 2**63 - 1)),
        producer_epoch=draw(st.integers(-(2**15), 2**15 - 1)),
        base_sequence=draw(st.integers(-(2**31), 2**31 - 1)),
    )


FUZZ_MASKER = jsonmask.FieldMasker([(("a",), jsonmask.REDACT, 0, b"0"), (("b", "c"), jsonmask.KEEP_FIRST, 1, None)])


def pipeline(twin, data, limit):
    """Everything a twin makes of data: headers, columns, and the batches it writes back."""
    batches, end = twin.read_batches(data, limit)
    out = [end]
    for b in batches:
        in_one_pass = outcome(b.masked, FUZZ_MASKER, limit)
        try:
            r = b.decode(limit)
        except RecordError as err:
            assert in_one_pass == ("RecordError", str(err))
            out.append((header_of(b), str(err)))
            continue
        values = r.values()
        same = b.with_values(r, values)
        changed = b.with_values(r, [None if v is None else v[:3] + b"\xff" * 5 for v in values])
        masked = b.with_masked_values(r, FUZZ_MASKER)
        assert in_one_pass == ("ok", masked)
        reread = twin.read_batches(same, LIMIT)[0][0].decode(LIMIT)
        # The value's length is written anew, as the shortest varint, so a record that spelled
        # it with a longer (valid, non-minimal) varint may shrink: every other column is kept.
        assert columns_of(reread)[:-1] == columns_of(r)[:-1]
        out.append((header_of(b), columns_of(r), same, changed, masked))
    return out


@RANDOM
@given(made=valid_batches())
def test_random_valid_batches(made):
    rows, codec, section, fields = made
    raw = batch(compress(codec, section), len(rows), **fields)
    result = both(lambda t: pipeline(t, raw, LIMIT))
    assert result[0] == "ok"
    end, (header, columns, same, changed, _) = result[1]
    assert end == len(raw) and header[-1] == raw
    assert columns[1:4] == (
        [row[0] for row in rows],
        [row[1] for row in rows],
        [[(name, data) for name, data in row[2]] for row in rows],
    )
    assert columns[4:6] == (list(range(len(rows))), [row[3] for row in rows])
    if codec == 0:
        assert same == raw
    # aiokafka reads control records its own way, and takes an empty xerial stream for raw snappy.
    if rows and fields["attributes"] & 0x20 == 0:
        aio = reference(raw, AioBatch)
        assert [(row[2], row[3], row[4]) for row in aio] == [(row[0], row[1], row[2]) for row in zip(*columns[1:4])]
        assert reference(same, AioBatch) == aio


@st.composite
def mutated(draw):
    rows, codec, section, fields = draw(valid_batches())
    count = len(rows)
    how = draw(st.sampled_from(["records", "records", "compressed", "bytes", "cut", "count", "tail", "none"]))
    if how == "records" and section:  # garbled records, then compressed: only the parser can object
        section = bytearray(section)
        for _ in range(draw(st.integers(1, 3))):
            section[draw(st.integers(0, len(section) - 1))] = draw(st.integers(0, 255))
        if draw(st.booleans()):
            del section[draw(st.integers(0, len(section))) :]
        section = bytes(section)
    section = compress(codec, section, snappy_raw=draw(st.booleans()))
    if how == "compressed" and section:  # garbled codec output, CRC made right
        section = bytearray(section)
        section[draw(st.integers(0, len(section) - 1))] ^= draw(st.integers(1, 255))
        if draw(st.booleans()):
            del section[draw(st.integers(0, len(section))) :]
        section = bytes(section)
    if how == "count":
        count = draw(st.integers(-3, count + 3) | st.integers(-(2**31), 2**31 - 1))
    raw = bytearray(batch(section, count, **fields))
    if how == "bytes":  # anywhere, CRC left wrong or made right
        for _ in range(draw(st.integers(1, 3))):
            raw[draw(st.integers(0, len(raw) - 1))] = draw(st.integers(0, 255))
        if draw(st.booleans()):
            raw = bytearray(with_crc(raw))
    elif how == "cut":
        del raw[draw(st.integers(0, len(raw))) :]
    elif how == "tail":
        raw += draw(st.binary(max_size=80))
    return bytes(raw)


def read_later(twin, data, limit, check_crc):
    """Each batch's records, read (and masked) by a twin after read_batches(check_crc=...)."""
    batches, end = twin.read_batches(data, limit, check_crc)
    return end, [(outcome(lambda: columns_of(b.decode(limit))), outcome(b.masked, FUZZ_MASKER, limit))
                 for b in batches]


@RANDOM
@given(
    stream=st.lists(mutated(), min_size=1, max_size=3).map(b"".join),
    limit=st.one_of(st.just(LIMIT), st.just(LIMIT), st.integers(0, 4096)),
)
def test_differential_mutated_batches(stream, limit):
    # Anything but RecordError escaping either twin fails the test.
    both(lambda t: pipeline(t, stream, limit))
    # With CRCs checked as records are read, a batch's records read the same, and a bad CRC
    # is the same error, raised by decode and masked instead of read_batches.
    checked, later = (both(lambda t: read_later(t, stream, limit, check_crc)) for check_crc in (True, False))
    if checked[0] == "ok":
        assert later == checked
    elif "CRC-32C mismatch" in checked[1] and later[0] == "ok":
        assert checked[1] in [text for row in later[1][1] for kind, text in row if kind == "RecordError"]


@RANDOM
@given(data=st.binary(max_size=300), limit=st.just(LIMIT) | st.integers(0, 300))
def test_differential_random_bytes(data, limit):
    both(lambda t: pipeline(t, data, limit))
    # Random bytes behind a valid header and CRC reach the record parser and the codecs.
    for codec in CODECS:
        both(lambda t: pipeline(t, batch(data, len(data) % 7, attributes=codec), limit))
