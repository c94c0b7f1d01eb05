"""Produce and Fetch responses checked for errors without decoding them.

The audit trail records the errors of every response the gateway forwards. Most are Produce
and Fetch answers that carry none, and the codec would build a dict of every field (and copy
every fetched record batch) to say so. These readers walk the bytes in place and only tell
whether every error code is zero: Produce responses in the record-free reader of ext/produce.pyx,
Fetch responses through fetchrecords' walk. A response with an error, or one they cannot read,
is left to the codec, which names the errors or the fault.

Covers the versions the gateway offers (rewrite.VERSION_CAPS); layouts as in Kafka's
ProduceResponse.json and FetchResponse.json.
"""

from __future__ import annotations

from brokerguard._native import PRODUCE_LAST_VERSION, produce_response_clean
from brokerguard._native.wire import Truncated

from . import apis, fetchrecords


def clean(api_key: int, version: int, frame) -> bool:
    """Whether the response frame (size prefix included) is one these readers cover and every
    error code in it is zero."""
    try:
        if api_key == apis.PRODUCE and 3 <= version <= PRODUCE_LAST_VERSION:
            return produce_response_clean(frame, version)
        if api_key == apis.FETCH and fetchrecords.FIRST <= version <= fetchrecords.LAST:
            return _fetch(frame, version)
    except Truncated:
        pass
    return False


def _fetch(buf, version: int) -> bool:
    error, partitions = fetchrecords.partitions(buf, version)
    return error == 0 and not any(partition.error_code for partition in partitions)
