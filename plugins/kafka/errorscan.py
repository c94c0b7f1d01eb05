"""Produce and Fetch responses checked for errors without decoding them.

The audit trail records the errors of every response the gateway forwards. Most are Produce
and Fetch answers that carry none, and the codec would build a dict of every field (and copy
every fetched record batch) to say so; these readers walk the bytes in place and only tell
whether every error code is zero (Fetch responses through fetchrecords' walk). A response with an error, or one they cannot read, is left
to the codec, which names the errors or the fault.

Covers the versions the gateway offers (rewrite.VERSION_CAPS); layouts as in Kafka's
ProduceResponse.json and FetchResponse.json.
"""

from __future__ import annotations

from . import apis, fetchrecords
from .wire import I16, Truncated, array_length, skip, skip_tags

PRODUCE_FLEXIBLE_FROM = 9
LAST_PRODUCE = 9


def clean(api_key: int, version: int, frame) -> bool:
    """Whether the response frame (size prefix included) is one these readers cover and every
    error code in it is zero."""
    try:
        if api_key == apis.PRODUCE and 3 <= version <= LAST_PRODUCE:
            return _produce(frame, version)
        if api_key == apis.FETCH and fetchrecords.FIRST <= version <= fetchrecords.LAST:
            return _fetch(frame, version)
    except Truncated:
        pass
    return False


def _partition_head(buf, pos: int, end: int, version: int) -> int:
    """Past the fixed head of a Produce partition: index int32, error_code int16, base_offset and
    log_append_time_ms int64, and from v5 log_start_offset. -1 when its error code is set."""
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
    topics, pos = array_length(buf, pos, end, flexible)
    for _ in range(topics):
        pos = skip(buf, pos, end, flexible, False)  # name
        partitions, pos = array_length(buf, pos, end, flexible)
        for _ in range(partitions):
            pos = _partition_head(buf, pos, end, version)
            if pos < 0:
                return False
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


def _fetch(buf, version: int) -> bool:
    error, partitions = fetchrecords.partitions(buf, version)
    return error == 0 and not any(partition.error_code for partition in partitions)
