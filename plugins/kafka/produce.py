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

from .wire import I16, I32, Truncated, length, skip_tags, string

FLEXIBLE_FROM = 9
LAST_VERSION = 9


def read(buf, start: int, end: int, spans: list | None = None) -> tuple[str | None, dict]:
    """(client_id, body) of the Produce request frame at buf[start:end] (size prefix included);
    body has the codec's shape, with `records` left out. Raises ValueError for bytes that are
    not a Produce request of a version the gateway offers.

    With `spans`, appends (topic, partition, records_start, records_end) for each partition
    that carries records, offsets into `buf`, for content checks to read them in place."""
    pos = start + 4
    if pos + 8 > end:
        raise Truncated("request header cut off")
    api_key, version = I16.unpack_from(buf, pos)[0], I16.unpack_from(buf, pos + 2)[0]
    if api_key != 0 or not 3 <= version <= LAST_VERSION:
        raise ValueError(f"not a Produce request v3-v{LAST_VERSION}")
    flexible = version >= FLEXIBLE_FROM
    client_id, pos = string(buf, pos + 8, end, False)
    if flexible:
        pos = skip_tags(buf, pos, end)
    transactional_id, pos = string(buf, pos, end, flexible)
    if pos + 6 > end:
        raise Truncated("acks and timeout cut off")
    acks, timeout_ms = I16.unpack_from(buf, pos)[0], I32.unpack_from(buf, pos + 2)[0]
    pos += 6
    topics = []
    count, pos = length(buf, pos, end, flexible, True)
    for _ in range(max(count, 0)):
        name, pos = string(buf, pos, end, flexible)
        partitions = []
        n, pos = length(buf, pos, end, flexible, True)
        for _ in range(max(n, 0)):
            if pos + 4 > end:
                raise Truncated("partition index cut off")
            index = I32.unpack_from(buf, pos)[0]
            size, pos = length(buf, pos + 4, end, flexible, True)
            if spans is not None and size >= 0:
                spans.append((name, index, pos, pos + size))
            pos += max(size, 0)
            if pos > end:
                raise Truncated("records run past the frame")
            if flexible:
                pos = skip_tags(buf, pos, end)
            partitions.append({"index": index})
        if flexible:
            pos = skip_tags(buf, pos, end)
        topics.append({"name": name, "partition_data": partitions})
    if flexible:
        pos = skip_tags(buf, pos, end)
    if pos > end:
        raise Truncated("request runs past the frame")
    return client_id, {"transactional_id": transactional_id, "acks": acks, "timeout_ms": timeout_ms,
                       "topic_data": topics}
