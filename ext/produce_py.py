"""Pure-Python twin of produce.pyx: a Produce request read without its records, and a Produce
response checked for error codes, in place. The reference for differential tests, and the
fallback when BROKERGUARD_NO_EXTENSIONS=1.

The request reader gives what authorization needs (client id, transactional id, topics and
partitions) straight from the read buffer, without copying the record batches, which are most
of the bytes on the hot path; the response check tells whether every error code is zero, so
the audit trail needs the codec only for a response that has an error. Both cover the
versions the gateway offers (v3-v9; v9 is flexible: compact lengths and tagged fields), as in
Kafka's ProduceRequest.json and ProduceResponse.json:

    RequestHeader v1|v2: api_key int16, api_version int16, correlation_id int32,
                         client_id nullable string (int16 length) [, tagged fields]
    ProduceRequest:      transactional_id nullable string, acks int16, timeout_ms int32,
                         topic_data [name string, partition_data [index int32,
                         records nullable bytes [, tags]] [, tags]] [, tags]
    ResponseHeader v0|v1: correlation_id int32 [, tagged fields]
    ProduceResponse:     responses [name string, partition_responses [index int32,
                         error_code int16, base_offset int64, log_append_time_ms int64,
                         log_start_offset int64 (v5+), record_errors [...] (v8+),
                         error_message nullable string (v8+) [, tags]] [, tags]],
                         throttle_time_ms int32 [, tags]
"""

from __future__ import annotations

from brokerguard._native.wire import I16, I32, Truncated, array_length, length, request_header, skip, skip_tags, string

__all__ = ["FLEXIBLE_FROM", "LAST_VERSION", "read_request", "response_clean"]

FLEXIBLE_FROM = 9
LAST_VERSION = 9


def read_request(buf, start: int, end: int, spans: list | None = None) -> tuple[str | None, dict]:
    """(client_id, body) of the Produce request frame at buf[start:end] (size prefix included);
    body has the codec's shape, with `records` left out. Raises ValueError for bytes that are
    not a Produce request of a version the gateway offers.

    With `spans`, appends (topic, partition, records_start, records_end) for each partition
    that carries records, offsets into `buf`, for content checks to read them in place."""
    version, client_id, pos = request_header(buf, start, end, 0, "Produce", range(3, LAST_VERSION + 1), FLEXIBLE_FROM)
    flexible = version >= FLEXIBLE_FROM
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
            if size > end - pos:
                raise Truncated("records run past the frame")
            if spans is not None and size >= 0:
                spans.append((name, index, pos, pos + size))
            pos += max(size, 0)
            if flexible:
                pos = skip_tags(buf, pos, end)
            partitions.append({"index": index})
        if flexible:
            pos = skip_tags(buf, pos, end)
        topics.append({"name": name, "partition_data": partitions})
    if flexible:
        pos = skip_tags(buf, pos, end)
    return client_id, {"transactional_id": transactional_id, "acks": acks, "timeout_ms": timeout_ms,
                       "topic_data": topics}


def response_clean(frame, version: int) -> bool:
    """Whether the Produce response frame (size prefix included) of a version the gateway offers
    reads to its end with every error code zero and no record errors. False for anything else."""
    try:
        return _clean(frame, version)
    except Truncated:
        return False


def _clean(buf, version: int) -> bool:
    end = len(buf)
    flexible = version >= FLEXIBLE_FROM
    pos = 8  # size and correlation id
    if flexible:
        pos = skip_tags(buf, pos, end)
    topics, pos = array_length(buf, pos, end, flexible)
    for _ in range(topics):
        pos = skip(buf, pos, end, flexible, False)  # name
        partitions, pos = array_length(buf, pos, end, flexible)
        for _ in range(partitions):
            if pos + 6 > end or I16.unpack_from(buf, pos + 4)[0] != 0:
                return False
            pos += 22 if version < 5 else 30
            if version >= 8:
                errors, pos = array_length(buf, pos, end, flexible)
                if errors > 0:
                    return False
                pos = skip(buf, pos, end, flexible, False)  # error_message
            if flexible:
                pos = skip_tags(buf, pos, end)
        if flexible:
            pos = skip_tags(buf, pos, end)
    pos += 4  # throttle_time_ms
    if flexible:
        pos = skip_tags(buf, pos, end)
    return pos == end
