# Kafka wire format read and written here (integers big-endian, two's complement):
#
#   record batch      baseOffset:int64 batchLength:int32 partitionLeaderEpoch:int32 magic:int8
#     (magic 2)       crc:uint32 attributes:int16 lastOffsetDelta:int32 baseTimestamp:int64
#                     maxTimestamp:int64 producerId:int64 producerEpoch:int16 baseSequence:int32
#                     count:int32 records
#                     batchLength counts from partitionLeaderEpoch to the end, so it is at least
#                     49; crc is the CRC-32C of attributes..end
#   attributes        bits 0-2 codec (0 none, 1 gzip, 2 snappy, 3 lz4, 4 zstd), bit 3 timestamp
#                     type (1: log-append time), bit 4 transactional, bit 5 control
#   records           count records back to back, compressed as a whole unless the codec is none
#   record            length:varint attributes:int8 timestampDelta:varlong offsetDelta:varint
#                     keyLength:varint key valueLength:varint value headerCount:varint header*
#                     length counts the bytes after itself; a negative key or value length is null
#   header            keyLength:varint key (utf-8) valueLength:varint value (negative: null)
#   varint, varlong   zigzag-signed; 7 bits per byte, low group first, high bit set on all but the
#                     last; at most 5 bytes and 32 bits (varlong: 10 bytes, 64 bits)
#   gzip              a gzip stream (members may follow one another)
#   snappy            xerial framing, as the Java client writes it: magic 82 53 4e 41 50 50 59 00,
#                     version:int32 compatibleVersion:int32, then blocks {length:int32 raw-snappy};
#                     or one raw snappy block, as librdkafka may write it. Both are read; a batch
#                     is written back in the framing it was read in, a new batch in xerial.
#   lz4               the LZ4 frame format; written as the Java client writes it (independent
#                     64 KiB blocks, no checksums, no content size): Java reads no linked blocks
#   zstd              a zstd frame
#
# A Fetch response's records may end with a partial batch; it is left for the next fetch.
"""Pure-Python twin of records.pyx: the reference for differential tests, and the fallback
when BROKERGUARD_NO_EXTENSIONS=1."""
import struct
import sys
import zlib

import cramjam
import google_crc32c

from brokerguard._native import errors
from brokerguard._native.errors import RecordError

__all__ = [
    "GZIP",
    "LZ4",
    "NONE",
    "SNAPPY",
    "ZSTD",
    "Batch",
    "RecordError",
    "Records",
    "encode_batch",
    "read_batches",
]

NONE, GZIP, SNAPPY, LZ4, ZSTD = 0, 1, 2, 3, 4

_HEADER = struct.Struct(">qiibIhiqqqhii")
_HEADER_SIZE = 61
_PREFIX = 12  # baseOffset and batchLength: outside batchLength's count
_MIN_LENGTH = _HEADER_SIZE - _PREFIX
_LENGTH_AT = 8
_MAGIC_AT = 16
_CRC_AT = 17
_ATTRIBUTES_AT = 21  # the CRC covers from here to the end
_I32 = struct.Struct(">i")
_U32 = struct.Struct(">I")
_U32LE = struct.Struct("<I")
_INT32_MAX = 0x7FFFFFFF
_INT64_MIN = -(1 << 63)
_INT64_MAX = (1 << 63) - 1

# Record fields, by their index in errors.RECORD_FIELDS.
(_LENGTH, _ATTRIBUTES, _TIMESTAMP_DELTA, _OFFSET_DELTA, _KEY_LENGTH, _KEY, _VALUE_LENGTH, _VALUE,
 _HEADER_COUNT, _HEADER_KEY_LENGTH, _HEADER_KEY, _HEADER_VALUE_LENGTH, _HEADER_VALUE) = range(13)

# Codecs. Decompression never produces more than max_uncompressed_bytes + 1 bytes.
_OUTPUT_FULL = "failed to write whole buffer"  # cramjam's error when the output buffer is too small
_FIRST_CAPACITY = 1 << 18
_CAPACITY_RATIO = 16  # first guess of the decompressed size, times the compressed size
_CAPACITY_GROWTH = 4
_XERIAL_MAGIC = b"\x82SNAPPY\x00"
_XERIAL_HEADER = _XERIAL_MAGIC + b"\x00\x00\x00\x01\x00\x00\x00\x01"  # version 1, compatible with 1
_XERIAL_BLOCK = 32 * 1024
# Magic, FLG (version 1, independent blocks), BD (64 KiB blocks), descriptor checksum.
_LZ4_FRAME_HEADER = b"\x04\x22\x4d\x18\x60\x40\x82"
_LZ4_BLOCK = 64 * 1024
_LZ4_UNCOMPRESSED = 0x80000000
_ZSTD_LEVEL = 3  # the Java client's default
_GZIP_WBITS = 16 + zlib.MAX_WBITS


def _varint(data, pos: int, end: int, last: int, top: int):
    """(zigzag value, next pos), or (None, fault code); `last` is the index of the last byte
    allowed and `top` the largest value it may hold."""
    raw = 0
    shift = 0
    for index in range(last + 1):
        if pos >= end:
            return None, errors.RECORD_TRUNCATED
        byte = data[pos]
        pos += 1
        if index == last:
            if byte & 0x80:
                return None, errors.RECORD_VARINT_TOO_LONG
            if byte > top:
                return None, errors.RECORD_VARINT_TOO_LARGE
        raw |= (byte & 0x7F) << shift
        if byte < 0x80:
            return (raw >> 1) ^ -(raw & 1), pos
        shift += 7


def _varint32(data, pos: int, end: int):
    return _varint(data, pos, end, 4, 0x0F)


def _varint64(data, pos: int, end: int):
    return _varint(data, pos, end, 9, 0x01)


def _put_varint(out: bytearray, value: int) -> None:
    raw = (value << 1) ^ (value >> 63)  # zigzag; for an int32 the same as the 32-bit form
    while raw > 0x7F:
        out.append((raw & 0x7F) | 0x80)
        raw >>= 7
    out.append(raw)


def _varint_bytes(value: int) -> bytes:
    out = bytearray()
    _put_varint(out, value)
    return bytes(out)


def _bytes_or_none(column: str, index: int, value):
    if value is None or type(value) is bytes:
        return value
    try:
        view = memoryview(value)
    except TypeError:
        raise errors.not_bytes(column, index, value) from None
    with view:
        if not view.c_contiguous:
            raise errors.not_bytes(column, index, value)
        return view.tobytes()


def _crc32c(data) -> int:
    # google_crc32c takes bytes, not views: the twin pays for a copy.
    return google_crc32c.value(bytes(data))


class Batch:
    """One record batch as read: its header fields and its own bytes (raw)."""

    __slots__ = ("_fields", "_raw", "_unchecked_at")  # where it was read, while its CRC is not checked yet

    def __init__(self, *args, **kwargs):
        raise errors.not_constructible("Batch", "read_batches")

    base_offset = property(lambda self: self._fields[0])
    partition_leader_epoch = property(lambda self: self._fields[2])
    magic = property(lambda self: self._fields[3])
    crc = property(lambda self: self._fields[4])
    attributes = property(lambda self: self._fields[5])
    last_offset_delta = property(lambda self: self._fields[6])
    base_timestamp = property(lambda self: self._fields[7])
    max_timestamp = property(lambda self: self._fields[8])
    producer_id = property(lambda self: self._fields[9])
    producer_epoch = property(lambda self: self._fields[10])
    base_sequence = property(lambda self: self._fields[11])
    count = property(lambda self: self._fields[12])
    compression = property(lambda self: self._fields[5] & 7)
    timestamp_type = property(lambda self: (self._fields[5] >> 3) & 1)
    is_transactional = property(lambda self: bool(self._fields[5] & 0x10))
    is_control = property(lambda self: bool(self._fields[5] & 0x20))
    raw = property(lambda self: self._raw)

    def __repr__(self) -> str:
        return (
            f"Batch(base_offset={self.base_offset}, count={self.count}, compression={self.compression}, "
            f"bytes={len(self._raw)})"
        )

    def _check_crc(self) -> None:
        if self._unchecked_at is not None:
            computed = _crc32c(self._raw[_ATTRIBUTES_AT:])
            if computed != self._fields[4]:
                raise errors.batch_crc_mismatch(self._unchecked_at, self._fields[4], computed)
            self._unchecked_at = None

    def decode(self, max_uncompressed_bytes: int) -> "Records":
        limit = errors.check_limit(max_uncompressed_bytes)
        self._check_crc()
        raw = self._raw
        base_offset = self._fields[0]
        codec = self._fields[5] & 7
        if codec == NONE:
            if len(raw) - _HEADER_SIZE > limit:
                raise errors.records_oversized(base_offset, NONE, limit)
            return _parse(self, raw, _HEADER_SIZE)
        with memoryview(raw) as view:
            data = _decompress(codec, view[_HEADER_SIZE:], limit, base_offset)
        return _parse(self, data, 0)

    def with_values(self, records: "Records", values) -> bytes:
        if not isinstance(records, Records) or records._batch is not self:
            raise errors.records_of_another_batch()
        count = len(records._starts)
        if len(values) != count:
            raise errors.values_count_mismatch(len(values), count)
        data = records._data
        out = bytearray()
        for index in range(count):
            value = _bytes_or_none("values", index, values[index])
            start = records._starts[index]
            value_at = records._value_ats[index]
            headers_at = records._headers_ats[index]
            end = records._ends[index]
            length = _varint_bytes(-1 if value is None else len(value))
            size = (value_at - start) + len(length) + (0 if value is None else len(value)) + (end - headers_at)
            if size > _INT32_MAX:
                raise errors.record_too_large(index, size)
            _put_varint(out, size)
            out += data[start:value_at]
            out += length
            if value is not None:
                out += value
            out += data[headers_at:end]
        codec = self._fields[5] & 7
        xerial = codec == SNAPPY and self._raw[_HEADER_SIZE : _HEADER_SIZE + 8] == _XERIAL_MAGIC
        return _seal(self._raw[:_HEADER_SIZE], out, codec, xerial)

    def with_masked_values(self, records: "Records", masker) -> bytes | None:
        if not isinstance(records, Records) or records._batch is not self:
            raise errors.records_of_another_batch()
        values = records.values()
        masked = [value if value is None else masker.mask(value) for value in values]
        if any(value is not None and type(result) is not bytes for value, result in zip(values, masked)):
            return None
        if all(result is value for value, result in zip(values, masked)):
            return self._raw
        return self.with_values(records, masked)

    def masked(self, masker, max_uncompressed_bytes: int) -> bytes | None:
        return self.with_masked_values(self.decode(max_uncompressed_bytes), masker)


class Records:
    """The records of one batch, column by column; nothing per record is built until asked."""

    __slots__ = (
        "_batch",
        "_data",
        "_starts",
        "_ends",
        "_key_ats",
        "_key_lengths",
        "_value_ats",
        "_value_data_ats",
        "_value_lengths",
        "_headers_ats",
        "_timestamp_deltas",
        "_offset_deltas",
    )

    def __init__(self, *args, **kwargs):
        raise errors.not_constructible("Records", "Batch.decode")

    def __len__(self) -> int:
        return len(self._starts)

    def __repr__(self) -> str:
        return f"Records({len(self._starts)} of the batch at offset {self._batch.base_offset})"

    def keys(self) -> list:
        data = self._data
        return [
            None if length < 0 else data[at : at + length] for at, length in zip(self._key_ats, self._key_lengths)
        ]

    def values(self) -> list:
        data = self._data
        return [
            None if length < 0 else data[at : at + length]
            for at, length in zip(self._value_data_ats, self._value_lengths)
        ]

    def values_pass(self, check, allow_none: bool) -> bool:
        return check.passes_all(self.values(), allow_none)

    def headers(self) -> list:
        data = self._data
        out = []
        for at, end in zip(self._headers_ats, self._ends):
            count, at = _varint32(data, at, end)
            pairs = []
            for _ in range(count):
                length, at = _varint32(data, at, end)
                key = data[at : at + length].decode("utf-8", "surrogateescape")
                at += length
                length, at = _varint32(data, at, end)
                if length < 0:
                    pairs.append((key, None))
                else:
                    pairs.append((key, data[at : at + length]))
                    at += length
            out.append(pairs)
        return out

    def offset_deltas(self) -> list:
        return list(self._offset_deltas)

    def timestamp_deltas(self) -> list:
        return list(self._timestamp_deltas)

    def sizes(self) -> list:
        return [end - start for start, end in zip(self._starts, self._ends)]


def _fault(base_offset: int, index: int, code: int, field: int, a: int = 0, b: int = 0) -> RecordError:
    return errors.record_fault(base_offset, index, code, field, a, b)


def _parse(batch: Batch, data: bytes, pos: int) -> Records:
    """Every record of data[pos:], checked against the batch's count."""
    base_offset = batch._fields[0]
    count = batch._fields[12]
    end = len(data)
    records = object.__new__(Records)
    records._batch = batch
    records._data = data
    starts = records._starts = []
    ends = records._ends = []
    key_ats = records._key_ats = []
    key_lengths = records._key_lengths = []
    value_ats = records._value_ats = []
    value_data_ats = records._value_data_ats = []
    value_lengths = records._value_lengths = []
    headers_ats = records._headers_ats = []
    timestamp_deltas = records._timestamp_deltas = []
    offset_deltas = records._offset_deltas = []
    index = 0
    while index < count and pos < end:
        size, at = _varint32(data, pos, end)
        if size is None:
            raise _fault(base_offset, index, at, _LENGTH, 0, 0)
        if size < 0:
            raise _fault(base_offset, index, errors.RECORD_NEGATIVE, _LENGTH, size)
        if size > end - at:
            raise _fault(base_offset, index, errors.RECORD_PAST_END, _LENGTH, size, end - at)
        start = at
        stop = at + size
        if at >= stop:
            raise _fault(base_offset, index, errors.RECORD_TRUNCATED, _ATTRIBUTES, size)
        at += 1
        timestamp_delta, at = _varint64(data, at, stop)
        if timestamp_delta is None:
            raise _fault(base_offset, index, at, _TIMESTAMP_DELTA, size)
        offset_delta, at = _varint32(data, at, stop)
        if offset_delta is None:
            raise _fault(base_offset, index, at, _OFFSET_DELTA, size)
        key_length, at = _varint32(data, at, stop)
        if key_length is None:
            raise _fault(base_offset, index, at, _KEY_LENGTH, size)
        key_at = at
        if key_length >= 0:
            if key_length > stop - at:
                raise _fault(base_offset, index, errors.RECORD_TRUNCATED, _KEY, size)
            at += key_length
        else:
            key_length = -1
        value_at = at
        value_length, at = _varint32(data, at, stop)
        if value_length is None:
            raise _fault(base_offset, index, at, _VALUE_LENGTH, size)
        value_data_at = at
        if value_length >= 0:
            if value_length > stop - at:
                raise _fault(base_offset, index, errors.RECORD_TRUNCATED, _VALUE, size)
            at += value_length
        else:
            value_length = -1
        headers_at = at
        header_count, at = _varint32(data, at, stop)
        if header_count is None:
            raise _fault(base_offset, index, at, _HEADER_COUNT, size)
        if header_count < 0:
            raise _fault(base_offset, index, errors.RECORD_NEGATIVE, _HEADER_COUNT, header_count)
        # Each header takes at least 2 bytes, so a huge count ends at the record's end quickly.
        for _ in range(header_count):
            length, at = _varint32(data, at, stop)
            if length is None:
                raise _fault(base_offset, index, at, _HEADER_KEY_LENGTH, size)
            if length < 0:
                raise _fault(base_offset, index, errors.RECORD_NEGATIVE, _HEADER_KEY_LENGTH, length)
            if length > stop - at:
                raise _fault(base_offset, index, errors.RECORD_TRUNCATED, _HEADER_KEY, size)
            at += length
            length, at = _varint32(data, at, stop)
            if length is None:
                raise _fault(base_offset, index, at, _HEADER_VALUE_LENGTH, size)
            if length >= 0:
                if length > stop - at:
                    raise _fault(base_offset, index, errors.RECORD_TRUNCATED, _HEADER_VALUE, size)
                at += length
        if at != stop:
            raise _fault(base_offset, index, errors.RECORD_UNUSED_BYTES, _LENGTH, size, at - start)
        starts.append(start)
        ends.append(stop)
        key_ats.append(key_at)
        key_lengths.append(key_length)
        value_ats.append(value_at)
        value_data_ats.append(value_data_at)
        value_lengths.append(value_length)
        headers_ats.append(headers_at)
        timestamp_deltas.append(timestamp_delta)
        offset_deltas.append(offset_delta)
        pos = stop
        index += 1
    if index != count or pos < end:
        raise errors.record_count_mismatch(base_offset, count, index, end - pos)
    return records


# Decompression, bounded by the limit


def _decompress(codec: int, src, limit: int, base_offset: int) -> bytes:
    try:
        if codec == GZIP:
            out = _gunzip(src, limit, base_offset)
        elif codec == SNAPPY:
            out = _unsnappy(src, limit, base_offset)
        elif codec == LZ4:
            out = _decompress_capped(cramjam.lz4.decompress_into, src, limit, base_offset, codec)
        else:
            out = _decompress_capped(cramjam.zstd.decompress_into, src, limit, base_offset, codec)
    except (cramjam.DecompressionError, zlib.error) as err:
        raise errors.records_undecompressable(base_offset, codec, str(err)) from err
    return out


def _decompress_capped(decompress_into, src, limit: int, base_offset: int, codec: int) -> bytes:
    # The codecs cannot say the decompressed size up front, so guess, and grow the guess
    # (each try starts over) up to one byte past the limit: filling that proves a bomb.
    ceiling = min(limit, sys.maxsize - 1) + 1
    capacity = min(ceiling, max(_FIRST_CAPACITY, len(src) * _CAPACITY_RATIO))
    while True:
        out = bytearray(capacity)
        try:
            size = decompress_into(src, out)
        except cramjam.DecompressionError as err:
            if str(err) != _OUTPUT_FULL:
                raise
            if capacity == ceiling:
                raise errors.records_oversized(base_offset, codec, limit) from None
            capacity = min(ceiling, capacity * _CAPACITY_GROWTH)
            continue
        if size > limit:
            raise errors.records_oversized(base_offset, codec, limit)
        del out[size:]
        return bytes(out)


def _gunzip(src, limit: int, base_offset: int) -> bytes:
    ceiling = min(limit, sys.maxsize - 1) + 1
    parts = []
    total = 0
    while True:
        member = zlib.decompressobj(_GZIP_WBITS)
        part = member.decompress(src, ceiling - total)
        total += len(part)
        if total > limit:
            raise errors.records_oversized(base_offset, GZIP, limit)
        parts.append(part)
        if not member.eof:
            raise errors.records_undecompressable(base_offset, GZIP, errors.gzip_truncated())
        src = member.unused_data
        if not src:
            return b"".join(parts)


def _unsnappy(src, limit: int, base_offset: int) -> bytes:
    if src[: len(_XERIAL_MAGIC)] != _XERIAL_MAGIC:
        size = cramjam.snappy.decompress_raw_len(src)
        if size > limit:
            raise errors.records_oversized(base_offset, SNAPPY, limit)
        out = bytearray(size)
        cramjam.snappy.decompress_raw_into(src, out)
        return bytes(out)
    end = len(src)
    if end < len(_XERIAL_HEADER):
        raise errors.records_undecompressable(base_offset, SNAPPY, errors.xerial_truncated(end))
    # Every block states its decompressed size: add them up before decompressing any.
    blocks = []
    total = 0
    pos = len(_XERIAL_HEADER)
    while pos < end:
        if end - pos < 4:
            raise errors.records_undecompressable(base_offset, SNAPPY, errors.xerial_truncated(end - pos))
        (length,) = _U32.unpack_from(src, pos)
        pos += 4
        if length > end - pos:
            raise errors.records_undecompressable(
                base_offset, SNAPPY, errors.xerial_block_past_end(length, end - pos)
            )
        block = src[pos : pos + length]
        size = cramjam.snappy.decompress_raw_len(block)
        total += size
        if total > limit:
            raise errors.records_oversized(base_offset, SNAPPY, limit)
        blocks.append((block, size))
        pos += length
    out = bytearray(total)
    with memoryview(out) as view:
        at = 0
        for block, size in blocks:
            cramjam.snappy.decompress_raw_into(block, view[at : at + size])
            at += size
    return bytes(out)


# Writing


def _compress(codec: int, data, xerial: bool):
    if codec == GZIP:
        gzip = zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, _GZIP_WBITS)
        return gzip.compress(data) + gzip.flush()
    if codec == SNAPPY:
        if not xerial:
            return cramjam.snappy.compress_raw(data)
        out = bytearray(_XERIAL_HEADER)
        with memoryview(data) as view:
            for pos in range(0, len(view), _XERIAL_BLOCK):
                block = cramjam.snappy.compress_raw(view[pos : pos + _XERIAL_BLOCK])
                out += _U32.pack(len(block))
                out += block
        return out
    if codec == LZ4:
        out = bytearray(_LZ4_FRAME_HEADER)
        with memoryview(data) as view:
            for pos in range(0, len(view), _LZ4_BLOCK):
                chunk = view[pos : pos + _LZ4_BLOCK]
                block = cramjam.lz4.compress_block(chunk, store_size=False)
                if len(block) < len(chunk):
                    out += _U32LE.pack(len(block))
                    out += block
                else:  # incompressible: stored as is, flagged in the block size
                    out += _U32LE.pack(len(chunk) | _LZ4_UNCOMPRESSED)
                    out += chunk
        out += b"\x00\x00\x00\x00"  # end mark
        return out
    return cramjam.zstd.compress(data, level=_ZSTD_LEVEL)


def _seal(header: bytes, records, codec: int, xerial: bool) -> bytes:
    """header (61 bytes, length and CRC still to be set) + the records, compressed if asked."""
    out = bytearray(header)
    out += records if codec == NONE else _compress(codec, records, xerial)
    _I32.pack_into(out, _LENGTH_AT, len(out) - _PREFIX)
    with memoryview(out) as view:
        crc = _crc32c(view[_ATTRIBUTES_AT:])
    _U32.pack_into(out, _CRC_AT, crc)
    return bytes(out)


def read_batches(data, max_uncompressed_bytes: int, check_crc: bool = True) -> tuple:
    """(the complete batches in data, the end of the last one). A partial batch at the end
    is not an error: it is left out, and starts where the returned end is."""
    limit = errors.check_limit(max_uncompressed_bytes)
    with memoryview(data) as outer, outer.cast("B") as view:
        return _read_batches(view, limit, check_crc)


def _read_batches(view, limit: int, check_crc: bool) -> tuple:
    batches = []
    end = len(view)
    pos = 0
    while end - pos >= _PREFIX:
        (length,) = _I32.unpack_from(view, pos + _LENGTH_AT)
        if length < _MIN_LENGTH:
            raise errors.batch_length_too_small(pos, length, _MIN_LENGTH)
        size = _PREFIX + length
        if end - pos < size:
            break
        magic = view[pos + _MAGIC_AT]
        if magic != 2:
            raise errors.batch_magic(pos, magic - 256 if magic > 127 else magic)
        if size > limit:
            raise errors.batch_oversized(pos, size, limit)
        raw = view[pos : pos + size].tobytes()
        fields = _HEADER.unpack_from(raw)
        batch = object.__new__(Batch)
        batch._fields = fields
        batch._raw = raw
        batch._unchecked_at = pos
        if check_crc or fields[5] & 7 > ZSTD:  # a bad CRC is the likelier story
            batch._check_crc()
        if fields[5] & 7 > ZSTD:
            raise errors.batch_unknown_codec(pos, fields[5] & 7)
        batches.append(batch)
        pos += size
    return batches, pos


def encode_batch(
    keys,
    values,
    headers,
    timestamps,
    *,
    compression: int = NONE,
    producer_id: int = -1,
    producer_epoch: int = -1,
    base_sequence: int = -1,
    base_offset: int = 0,
    partition_leader_epoch: int = -1,
    attributes_extra: int = 0,
) -> bytes:
    """A new batch of these records: offset deltas 0..n-1, create-time timestamps as deltas
    from the first one."""
    codec = errors.check_codec(compression)
    producer_id = errors.check_int("producer_id", producer_id, 64)
    producer_epoch = errors.check_int("producer_epoch", producer_epoch, 16)
    base_sequence = errors.check_int("base_sequence", base_sequence, 32)
    base_offset = errors.check_int("base_offset", base_offset, 64)
    partition_leader_epoch = errors.check_int("partition_leader_epoch", partition_leader_epoch, 32)
    extra = errors.check_attributes_extra(attributes_extra)
    count = len(keys)
    if not len(values) == len(headers) == len(timestamps) == count:
        raise errors.columns_mismatch(count, len(values), len(headers), len(timestamps))
    stamps = [errors.check_int(f"timestamps[{index}]", stamp, 64) for index, stamp in enumerate(timestamps)]
    first = stamps[0] if count else -1
    out = bytearray()
    body = bytearray()
    for index in range(count):
        key = _bytes_or_none("keys", index, keys[index])
        value = _bytes_or_none("values", index, values[index])
        pairs = _header_pairs(index, headers[index])
        delta = stamps[index] - first
        if not _INT64_MIN <= delta <= _INT64_MAX:
            raise errors.timestamp_delta_out_of_range(index, delta)
        body.clear()
        body.append(0)  # attributes
        _put_varint(body, delta)
        _put_varint(body, index)
        for blob in (key, value):
            if blob is None:
                _put_varint(body, -1)
            else:
                _put_varint(body, len(blob))
                body += blob
        _put_varint(body, len(pairs))
        for name, blob in pairs:
            _put_varint(body, len(name))
            body += name
            if blob is None:
                _put_varint(body, -1)
            else:
                _put_varint(body, len(blob))
                body += blob
        if len(body) > _INT32_MAX:
            raise errors.record_too_large(index, len(body))
        _put_varint(out, len(body))
        out += body
    header = _HEADER.pack(
        base_offset,
        0,
        partition_leader_epoch,
        2,
        0,
        codec | extra,
        count - 1,
        first,
        max(stamps) if count else -1,
        producer_id,
        producer_epoch,
        base_sequence,
        count,
    )
    return _seal(header, out, codec, True)


def _header_pairs(index: int, pairs) -> list:
    out = []
    if pairs is None:
        return out
    for position, pair in enumerate(pairs):
        try:
            name, value = pair
        except (TypeError, ValueError):
            raise errors.header_invalid(index, position, pair) from None
        if type(name) is str:
            name = name.encode("utf-8", "surrogateescape")
        elif type(name) is not bytes:
            raise errors.header_invalid(index, position, pair)
        if value is not None and type(value) is not bytes:
            try:
                view = memoryview(value)
            except TypeError:
                raise errors.header_invalid(index, position, pair) from None
            with view:
                if not view.c_contiguous:
                    raise errors.header_invalid(index, position, pair)
                value = view.tobytes()
        out.append((name, value))
    return out
