"""Produce and Fetch responses checked for errors without decoding them.

The audit trail records the errors of every response the gateway forwards. Most are Produce
and Fetch answers that carry none, and the codec would build a dict of every field (and copy
every fetched record batch) to say so; these readers walk the bytes in place and only tell
whether every error code is zero. A response with an error, or one they cannot read, is left
to the codec, which names the errors or the fault.

Covers the versions the gateway offers (rewrite.VERSION_CAPS); layouts as in Kafka's
ProduceResponse.json and FetchResponse.json.
"""

from __future__ import annotations

from . import apis
from .wire import I16, Truncated, length, skip, skip_tags

PRODUCE_FLEXIBLE_FROM = 9
FETCH_FLEXIBLE_FROM = 12
LAST_PRODUCE = 9
LAST_FETCH = 15


def clean(api_key: int, version: int, frame) -> bool:
    """Whether the response frame (size prefix included) is one these readers cover and every
    error code in it is zero."""
    try:
        if api_key == apis.PRODUCE and 3 <= version <= LAST_PRODUCE:
            return _produce(frame, version)
        if api_key == apis.FETCH and 4 <= version <= LAST_FETCH:
            return _fetch(frame, version)
    except Truncated:
        pass
    return False


def _count(buf, pos: int, end: int, flexible: bool, nullable: bool = False) -> tuple[int, int]:
    """An array's length; null (-1) only where the field is nullable, counted as empty."""
    n, pos = length(buf, pos, end, flexible, True)
    if n < (-1 if nullable else 0):
        raise Truncated(f"bad array length {n}")
    return n, pos


def _partition_head(buf, pos: int, end: int, version: int) -> int:
    """Past the fixed head of a partition, the same size in both APIs: index int32, error_code
    int16, two int64 (Produce: base_offset, log_append_time_ms; Fetch: high_watermark,
    last_stable_offset) and from v5 log_start_offset. -1 when its error code is set."""
    if pos + 6 > end:
        raise Truncated("partition cut off")
    if I16.unpack_from(buf, pos + 4)[0] != 0:
        return -1
    return pos + (22 if version < 5 else 30)


def _produce(buf, version: int) -> bool:
    end = len(buf)
    flexible = version >= PRODUCE_FLEXIBLE_FROM
    pos = 8  # size and correlation id
    if flexible:
        pos = skip_tags(buf, pos, end)
    topics, pos = _count(buf, pos, end, flexible)
    for _ in range(topics):
        pos = skip(buf, pos, end, flexible, False)  # name
        partitions, pos = _count(buf, pos, end, flexible)
        for _ in range(partitions):
            pos = _partition_head(buf, pos, end, version)
            if pos < 0:
                return False
            if version >= 8:
                errors, pos = _count(buf, pos, end, flexible)
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


def _fetch(buf, version: int) -> bool:
    end = len(buf)
    flexible = version >= FETCH_FLEXIBLE_FROM
    pos = 8
    if flexible:
        pos = skip_tags(buf, pos, end)
    pos += 4  # throttle_time_ms
    if version >= 7:  # error_code, session_id
        if pos + 6 > end:
            raise Truncated("header cut off")
        if I16.unpack_from(buf, pos)[0] != 0:
            return False
        pos += 6
    topics, pos = _count(buf, pos, end, flexible)
    for _ in range(topics):
        pos = pos + 16 if version >= 13 else skip(buf, pos, end, flexible, False)  # topic_id or topic
        partitions, pos = _count(buf, pos, end, flexible)
        for _ in range(partitions):
            pos = _partition_head(buf, pos, end, version)
            if pos < 0:
                return False
            aborted, pos = _count(buf, pos, end, flexible, nullable=True)
            if not flexible:  # producer_id, first_offset each
                pos += 16 * max(aborted, 0)
            for _ in range(aborted if flexible else 0):
                pos = skip_tags(buf, pos + 16, end)
            if version >= 11:
                pos += 4  # preferred_read_replica
            pos = skip(buf, pos, end, flexible, True)  # records
            if flexible:
                pos = skip_tags(buf, pos, end)
        if flexible:
            pos = skip_tags(buf, pos, end)
    if flexible:
        pos = skip_tags(buf, pos, end)
    return pos == end
