"""A Fetch request read in place for what deciding it needs: the hot path of every consumer.

A consumer sends a Fetch per round trip, and the codec's general decoder builds a dict of every
partition's every field to tell the gateway which topics it names. This reader gives only that
(the client id, the replica, the session and each topic's name or id), in the codec's shape, for
the versions the gateway offers (4 to rewrite.VERSION_CAPS), as in Kafka's FetchRequest.json:

    RequestHeader v1|v2: api_key int16, api_version int16, correlation_id int32,
                         client_id nullable string (int16 length) [, tagged fields]
    FetchRequest:        replica_id int32 (v0-14), max_wait_ms int32, min_bytes int32,
                         max_bytes int32, isolation_level int8, session_id int32 (v7+),
                         session_epoch int32 (v7+), topics [topic string (v0-12) | topic_id uuid
                         (v13+), partitions [partition int32, current_leader_epoch int32 (v9+),
                         fetch_offset int64, last_fetched_epoch int32 (v12+), log_start_offset
                         int64 (v5+), partition_max_bytes int32 [, tags]] [, tags]],
                         forgotten_topics_data [topic | topic_id, partitions [int32] [, tags]]
                         (v7+), rack_id string (v11+) [, tags: cluster_id, replica_state (v15+)]

Anything it does not cover (the replica state a follower broker sends) raises ValueError, and
the codec decodes the request instead. Like the codec, it ignores bytes after the body, as the
broker does.
"""

from __future__ import annotations

from brokerguard._native.wire import I32, Truncated, array_length, request_header, skip_tags, string

from .apis import FETCH

FIRST = 4
LAST = 15
FLEXIBLE_FROM = 12
TOPIC_IDS_FROM = 13


def _partition_size(version: int) -> int:
    """The fixed bytes of one partition entry of that version."""
    size = 4 + 8 + 4  # partition, fetch_offset, partition_max_bytes
    if version >= 9:
        size += 4  # current_leader_epoch
    if version >= 12:
        size += 4  # last_fetched_epoch
    if version >= 5:
        size += 8  # log_start_offset
    return size


PARTITION_SIZES = {version: _partition_size(version) for version in range(FIRST, LAST + 1)}


def read(buf, start: int, end: int) -> tuple[str | None, dict]:
    """(client_id, body) of the Fetch request frame at buf[start:end] (size prefix included);
    body has the codec's keys replica_id, session_id and topics (each with `topic` or `topic_id`
    only). Raises ValueError for bytes this reader does not cover."""
    version, client_id, pos = request_header(buf, start, end, FETCH, "Fetch", range(FIRST, LAST + 1), FLEXIBLE_FROM)
    flexible = version >= FLEXIBLE_FROM
    by_id = version >= TOPIC_IDS_FROM
    replica_id = -1
    if version < 15:
        if pos + 4 > end:
            raise Truncated("replica id cut off")
        replica_id = I32.unpack_from(buf, pos)[0]
        pos += 4
    fixed = 13 + (8 if version >= 7 else 0)  # max_wait_ms, min_bytes, max_bytes, isolation_level, session
    if pos + fixed > end:
        raise Truncated("request fields cut off")
    session_id = I32.unpack_from(buf, pos + 13)[0] if version >= 7 else 0
    pos += fixed
    topics = []
    partition_size = PARTITION_SIZES[version]
    count, pos = array_length(buf, pos, end, flexible)
    for _ in range(count):
        topic, pos = _topic(buf, pos, end, by_id, flexible)
        topics.append({"topic_id": topic} if by_id else {"topic": topic})
        partitions, pos = array_length(buf, pos, end, flexible)
        for _ in range(partitions):
            pos += partition_size
            if pos > end:
                raise Truncated("partition cut off")
            if flexible:
                pos = skip_tags(buf, pos, end)
        if flexible:
            pos = skip_tags(buf, pos, end)
    if version >= 7:
        forgotten, pos = array_length(buf, pos, end, flexible)
        for _ in range(forgotten):
            _, pos = _topic(buf, pos, end, by_id, flexible)
            partitions, pos = array_length(buf, pos, end, flexible)
            pos += 4 * partitions
            if pos > end:
                raise Truncated("forgotten topic cut off")
            if flexible:
                pos = skip_tags(buf, pos, end)
    if version >= 11:
        _, pos = _not_null(buf, pos, end, flexible)  # rack_id
    if flexible:
        skip_tags(buf, pos, end, check=_top_level_tag)
    return client_id, {"replica_id": replica_id, "session_id": session_id, "topics": topics}


def _top_level_tag(buf, tag: int, start: int, stop: int) -> None:
    """One of the request's own tagged fields: a cluster id (tag 0) is a nullable string filling
    its field; a replica state (tag 1) is a follower's, left to the codec; others are skipped,
    as the broker skips them."""
    if tag == 1:
        raise ValueError("a replica state (a follower's fetch): left to the codec")
    if tag == 0 and string(buf, start, stop, True)[1] != stop:
        raise Truncated("the cluster id does not fill its tagged field")


def _topic(buf, pos: int, end: int, by_id: bool, flexible: bool) -> tuple[str | bytes, int]:
    """A topic's id (16 bytes) or name."""
    if by_id:
        if pos + 16 > end:
            raise Truncated("topic id cut off")
        return bytes(buf[pos : pos + 16]), pos + 16
    return _not_null(buf, pos, end, flexible)


def _not_null(buf, pos: int, end: int, flexible: bool) -> tuple[str, int]:
    text, pos = string(buf, pos, end, flexible)
    if text is None:
        raise Truncated(f"null string before offset {pos}, where the field is not nullable")
    return text, pos
