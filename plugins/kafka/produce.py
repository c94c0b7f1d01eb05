"""Produce requests read without their records: what authorization needs (client id,
transactional id, topics and partitions) straight from the read buffer, without copying the
record batches, which are most of the bytes on the hot path.

Only a request with a denied part is then decoded whole by the codec, to be split. Covers the
versions the gateway offers (v3-v9; v9 is flexible: compact lengths and tagged fields).

    RequestHeader v1|v2: api_key int16, api_version int16, correlation_id int32,
                         client_id nullable string (int16 length) [, tagged fields]
    ProduceRequest:      transactional_id nullable string, acks int16, timeout_ms int32,
                         topic_data [name string, partition_data [index int32,
                         records nullable bytes [, tags]] [, tags]] [, tags]
"""

from __future__ import annotations

import struct

_I16 = struct.Struct(">h")
_I32 = struct.Struct(">i")
FLEXIBLE_FROM = 9
LAST_VERSION = 9


class Truncated(ValueError):
    """The bytes do not hold the Produce request they announce."""


def _uvarint(buf, pos: int, end: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= end or shift > 28:
            raise Truncated(f"bad varint at offset {pos}")
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7


def _skip_tags(buf, pos: int, end: int) -> int:
    count, pos = _uvarint(buf, pos, end)
    for _ in range(count):
        _, pos = _uvarint(buf, pos, end)
        size, pos = _uvarint(buf, pos, end)
        pos += size
    if pos > end:
        raise Truncated("tagged fields run past the frame")
    return pos


def _length(buf, pos: int, end: int, compact: bool, wide: bool) -> tuple[int, int]:
    if compact:
        n, pos = _uvarint(buf, pos, end)
        return n - 1, pos
    fmt = _I32 if wide else _I16
    if pos + fmt.size > end:
        raise Truncated(f"length cut off at offset {pos}")
    return fmt.unpack_from(buf, pos)[0], pos + fmt.size


def _string(buf, pos: int, end: int, compact: bool) -> tuple[str | None, int]:
    n, pos = _length(buf, pos, end, compact, False)
    if n < 0:
        return None, pos
    if pos + n > end:
        raise Truncated(f"string runs past the frame at offset {pos}")
    return bytes(buf[pos : pos + n]).decode("utf-8"), pos + n


def read(buf, start: int, end: int, spans: list | None = None) -> tuple[str | None, dict]:
    """(client_id, body) of the Produce request frame at buf[start:end] (size prefix included);
    body has the codec's shape, with `records` left out. Raises ValueError for bytes that are
    not a Produce request of a version the gateway offers.

    With `spans`, appends (topic, partition, records_start, records_end) for each partition
    that carries records, offsets into `buf`, for content checks to read them in place."""
    pos = start + 4
    if pos + 8 > end:
        raise Truncated("request header cut off")
    api_key, version = _I16.unpack_from(buf, pos)[0], _I16.unpack_from(buf, pos + 2)[0]
    if api_key != 0 or not 3 <= version <= LAST_VERSION:
        raise ValueError(f"not a Produce request v3-v{LAST_VERSION}")
    flexible = version >= FLEXIBLE_FROM
    client_id, pos = _string(buf, pos + 8, end, False)
    if flexible:
        pos = _skip_tags(buf, pos, end)
    transactional_id, pos = _string(buf, pos, end, flexible)
    if pos + 6 > end:
        raise Truncated("acks and timeout cut off")
    acks, timeout_ms = _I16.unpack_from(buf, pos)[0], _I32.unpack_from(buf, pos + 2)[0]
    pos += 6
    topics = []
    count, pos = _length(buf, pos, end, flexible, True)
    for _ in range(max(count, 0)):
        name, pos = _string(buf, pos, end, flexible)
        partitions = []
        n, pos = _length(buf, pos, end, flexible, True)
        for _ in range(max(n, 0)):
            if pos + 4 > end:
                raise Truncated("partition index cut off")
            index = _I32.unpack_from(buf, pos)[0]
            size, pos = _length(buf, pos + 4, end, flexible, True)
            if spans is not None and size >= 0:
                spans.append((name, index, pos, pos + size))
            pos += max(size, 0)
            if pos > end:
                raise Truncated("records run past the frame")
            if flexible:
                pos = _skip_tags(buf, pos, end)
            partitions.append({"index": index})
        if flexible:
            pos = _skip_tags(buf, pos, end)
        topics.append({"name": name, "partition_data": partitions})
    if flexible:
        pos = _skip_tags(buf, pos, end)
    if pos > end:
        raise Truncated("request runs past the frame")
    return client_id, {"transactional_id": transactional_id, "acks": acks, "timeout_ms": timeout_ms,
                       "topic_data": topics}
