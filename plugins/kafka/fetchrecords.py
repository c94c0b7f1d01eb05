"""A Fetch response's record sets found in place, and the response rebuilt with some replaced.

Masking a Fetch response changes only its record sets (and, for a batch that cannot be read, a
partition's error code). Decoding the whole response into dicts and encoding it again would copy
every record twice more to change nothing else; here the frame is walked once for where each
partition's records lie, and the new frame is the old bytes with those spans swapped, as chunks.

Covers the versions the gateway offers (rewrite.VERSION_CAPS); layout as in Kafka's
FetchResponse.json. Anything else is the codec's.
"""

from __future__ import annotations

from dataclasses import dataclass

from brokerguard._native import write_uvarint
from brokerguard._native.wire import I16, I32, Truncated, array_length, length, skip_tags, string

FIRST = 4
LAST = 15
FLEXIBLE_FROM = 12
TOPIC_IDS_FROM = 13
# A partition's tagged fields the codec reads (v12+), by tag: the fixed part of each struct:
# diverging_epoch (epoch, end_offset), current_leader (leader_id, leader_epoch), snapshot_id
# (end_offset, epoch). Checked as the codec checks them, so the two accept the same frames.
PARTITION_TAGS = {0: 12, 1: 8, 2: 12}


@dataclass(slots=True)
class Partition:
    topic: str | bytes  # the name, or from v13 the topic id
    index: int
    error_code: int
    error_at: int  # where its error code lies in the frame
    records_at: int  # where its records' length lies
    start: int  # its records: frame[start:end], none when null or empty
    end: int


def partitions(frame, version: int) -> tuple[int, list[Partition]]:
    """The response's own error code (0 before v7) and every partition, in order; Truncated if
    the frame (size prefix included) does not hold a whole Fetch response of that version."""
    end = len(frame)
    flexible = version >= FLEXIBLE_FROM
    pos = 8  # size and correlation id
    if flexible:
        pos = skip_tags(frame, pos, end)
    pos += 4  # throttle_time_ms
    error = 0
    if version >= 7:  # error_code, session_id
        if pos + 6 > end:
            raise Truncated("header cut off")
        error = I16.unpack_from(frame, pos)[0]
        pos += 6
    out = []
    topics, pos = array_length(frame, pos, end, flexible)
    for _ in range(topics):
        if version >= TOPIC_IDS_FROM:
            topic, pos = bytes(frame[pos : pos + 16]), pos + 16
        else:
            topic, pos = string(frame, pos, end, flexible)
        count, pos = array_length(frame, pos, end, flexible)
        for _ in range(count):
            if pos + 6 > end:
                raise Truncated("partition cut off")
            index = I32.unpack_from(frame, pos)[0]
            error_at = pos + 4
            pos += 22 if version < 5 else 30  # index, error_code, watermarks, log_start_offset
            aborted, pos = array_length(frame, pos, end, flexible, nullable=True)
            if not flexible:  # producer_id, first_offset each
                pos += 16 * max(aborted, 0)
            for _ in range(aborted if flexible else 0):
                pos = skip_tags(frame, pos + 16, end)
            if version >= 11:
                pos += 4  # preferred_read_replica
            records_at = pos
            size, start = length(frame, pos, end, flexible, True)
            pos = start + max(size, 0)
            if pos > end:
                raise Truncated(f"records run past the frame at offset {start}")
            out.append(Partition(topic, index, I16.unpack_from(frame, error_at)[0], error_at, records_at, start, pos))
            if flexible:
                pos = skip_tags(frame, pos, end, PARTITION_TAGS)
        if flexible:
            pos = skip_tags(frame, pos, end)
    if flexible:
        pos = skip_tags(frame, pos, end)
    if pos != end:
        raise Truncated(f"{end - pos} bytes after the response" if pos < end else "response cut off")
    return error, out


def rebuilt(frame, version: int, records: dict[int, list | None], errors: dict[int, int],
            parts: list[Partition]) -> list:
    """The frame (size prefix included) with parts[i]'s records replaced by the concatenation
    of records[i] (None: null) and its error code by errors[i], every other byte as it was: as
    a list of chunks for the transport's writelines, so the records are not copied into one
    frame first. The frame's own bytes are copied out: it may lie in a buffer the next read
    reuses."""
    flexible = version >= FLEXIBLE_FROM
    edits = []  # (start, end, what goes there instead), in frame order
    for i, data in records.items():
        size = 0 if data is None else sum(map(len, data))
        if flexible:
            head = write_uvarint(0 if data is None else size + 1)
        else:
            head = I32.pack(-1 if data is None else size)
        edits.append((parts[i].records_at, parts[i].end, (head, *(data or ()))))
    edits += [(parts[i].error_at, parts[i].error_at + 2, (I16.pack(code),)) for i, code in errors.items()]
    edits.sort(key=lambda edit: edit[0])
    chunks = [b""]  # the size prefix, set below
    pos = 4
    for start, end, pieces in edits:
        if start > pos:
            chunks.append(bytes(frame[pos:start]))
        chunks += pieces
        pos = end
    if len(frame) > pos:
        chunks.append(bytes(frame[pos:]))
    chunks[0] = I32.pack(sum(map(len, chunks)))
    return chunks
