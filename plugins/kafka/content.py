"""Record content under the rules' obligations: Produce requests validated and masked before the
broker sees them, Fetch responses masked for the identity that reads them, and what both cost
against the rate limits.

Only partitions of topics with an obligation are read; their record batches are decoded, checked
and re-encoded by the record core (brokerguard._native.records), which keeps every batch header
field, so idempotent and transactional producers keep working. A batch nobody asked to look at
is never decoded, and a Produce whose records all pass unchanged is forwarded as the client's
own bytes.

Refusals are Kafka's own: INVALID_RECORD with record_errors (the record's index in its batch and
why) and an error message, CORRUPT_MESSAGE for a batch that cannot be read. Nothing is dropped
silently: a record is either forwarded, dead-lettered (where the validation says so), or refused
to the producer with its reason.
"""

from __future__ import annotations

import functools
import struct
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from brokerguard._native import RecordError, encode_batch, read_batches
from brokerguard.content import UNMASKABLE
from brokerguard.operations import Obligations

from . import fetchrecords

UNKNOWN_SERVER_ERROR = -1
CORRUPT_MESSAGE = 2
INVALID_RECORD = 87
RECORD_ERRORS_FROM = 8  # Produce v8 added record_errors and error_message (KIP-467)
# An error message lists this many records' reasons, then says how many more there were.
MESSAGE_RECORDS = 5
# Headers every dead-lettered record carries, for whoever reads the dead-letter topic.
DLQ_REASON = "brokerguard.reason"
DLQ_TOPIC = "brokerguard.topic"
DLQ_PARTITION = "brokerguard.partition"
DLQ_VALIDATION = "brokerguard.validation"

# Fetched records at least this large are masked on two threads: the consumer and the broker
# wait for each Fetch the gateway masks, and the masking loop runs without the GIL.
PARALLEL_MASK_BYTES = 256 * 1024

_BATCH_HEADER = 61
_LENGTH = struct.Struct(">i")
_COUNT = struct.Struct(">i")


def batch_counts(view: memoryview) -> int:
    """Records in the complete batches of `view`, read from the batch headers only (for limits)."""
    records = pos = 0
    end = len(view)
    while pos + _BATCH_HEADER <= end:
        size = 12 + _LENGTH.unpack_from(view, pos + 8)[0]
        if size < _BATCH_HEADER or pos + size > end:
            break
        records += max(0, _COUNT.unpack_from(view, pos + 57)[0])
        pos += size
    return records


# -- Produce -------------------------------------------------------------------------------------


@dataclass
class ProduceContent:
    """What content checks made of one Produce request."""

    records: dict[tuple[str, int], bytes] = field(default_factory=dict)  # new records per partition
    refused: dict[tuple[str, int], dict] = field(default_factory=dict)  # partition answers
    # dead-letter topic -> [(key, value, headers, timestamp)], and the partitions they came from
    dead: dict[str, list[tuple]] = field(default_factory=dict)
    dead_from: dict[str, list[tuple[str, int]]] = field(default_factory=dict)
    emptied: set[tuple[str, int]] = field(default_factory=set)  # every record dead-lettered

    @property
    def changed(self) -> bool:
        return bool(self.records or self.refused or self.dead)


def check_produce(partitions: Iterable[tuple[str, int, Any]], obligations: Mapping[str, Obligations],
                  max_uncompressed: int) -> ProduceContent:
    """Validate and mask the records (topic, partition, records buffer) of every partition whose
    topic has content obligations."""
    out = ProduceContent()
    for topic, index, records in partitions:
        wanted = obligations.get(topic)
        if wanted is None or (wanted.mask is None and not wanted.validations):
            continue
        try:
            _check_partition(out, topic, index, memoryview(records), wanted, max_uncompressed)
        except RecordError as err:
            out.refused[(topic, index)] = _refusal(CORRUPT_MESSAGE, f"brokerguard: record batch refused: {err}")
    return out


def _check_partition(out: ProduceContent, topic: str, index: int, view: memoryview, wanted: Obligations,
                     max_uncompressed: int) -> None:
    batches, consumed = read_batches(view, max_uncompressed)
    if consumed != len(view) or not batches:
        raise RecordError(f"the records of {topic}-{index} end in the middle of a batch")
    parts: list[bytes] = []
    dead: list[tuple[str, tuple]] = []  # (dead-letter topic, record): written only if nothing is refused
    changed = False
    base = 0  # record_errors count records across the partition's batches
    for batch in batches:
        if batch.is_control:
            parts.append(batch.raw)
            continue
        records = batch.decode(max_uncompressed)
        # Records become Python objects only where a check or the general masking path reads
        # them: a batch whose values a native check passes where they lie makes none.
        values = keys = headers = None
        errors: dict[int, str] = {}
        dead_letter: dict[int, tuple[str, str]] = {}  # index -> (dead-letter topic, validation)
        unsure = [validation for validation in wanted.validations if not validation.passes_in_place(records)]
        if unsure:
            values = records.values()
            keys = records.keys() if any(v.reads_keys for v in unsure) else None
            headers = records.headers() if any(v.reads_headers for v in unsure) else None
            sizes = records.sizes() if any(v.max_record_bytes is not None for v in unsure) else None
            for validation in unsure:
                for at, message in validation.check(keys, values, headers, sizes):
                    if at in errors:
                        continue
                    errors[at] = message
                    if validation.dead_letter is not None:
                        dead_letter[at] = (validation.dead_letter, validation.name)
        rejected = {at: message for at, message in errors.items() if at not in dead_letter}
        new_values = values
        whole = None  # the masked batch, made in one pass where no record needs the general path
        if wanted.mask is not None:
            if wanted.mask.batch_masker is not None and not errors:
                whole = batch.with_masked_values(records, wanted.mask.batch_masker)
            if whole is None:
                values = records.values() if values is None else values
                new_values, failures = wanted.mask.mask_values(values)
                for at, reason in failures:
                    rejected.setdefault(at, f"cannot be masked, so it is not written: {reason}")
        if dead_letter and batch.producer_id >= 0 and not rejected:
            # Taking records out of an idempotent batch would break its sequence numbers.
            rejected = {at: f"{errors[at]} (dead-lettering needs a producer without idempotence)"
                        for at in dead_letter}
        if rejected:
            out.refused[(topic, index)] = _invalid(topic, index, {**errors, **rejected}, base)
            return
        if dead_letter:
            keys = records.keys() if keys is None else keys
            headers = records.headers() if headers is None else headers
            keep = [at for at in range(len(values)) if at not in dead_letter]
            timestamps = [batch.base_timestamp + delta for delta in records.timestamp_deltas()]
            for at, (dlq, validation) in dead_letter.items():
                reason_headers = [(DLQ_REASON, errors[at].encode()), (DLQ_TOPIC, topic.encode()),
                                  (DLQ_PARTITION, str(index).encode()), (DLQ_VALIDATION, validation.encode())]
                dead.append((dlq, (keys[at], new_values[at], [*headers[at], *reason_headers], timestamps[at])))
            if keep:
                parts.append(encode_batch([keys[at] for at in keep], [new_values[at] for at in keep],
                                          [headers[at] for at in keep], [timestamps[at] for at in keep],
                                          compression=batch.compression))
            changed = True
        elif whole is not None:
            parts.append(whole)
            changed = changed or whole is not batch.raw
        elif new_values is not values and any(a is not b for a, b in zip(new_values, values)):
            parts.append(batch.with_values(records, new_values))
            changed = True
        else:
            parts.append(batch.raw)
        base += len(records)
    for dlq, record in dead:
        out.dead.setdefault(dlq, []).append(record)
        sources = out.dead_from.setdefault(dlq, [])
        if (topic, index) not in sources:
            sources.append((topic, index))
    if not parts:
        out.emptied.add((topic, index))
    elif changed:
        out.records[(topic, index)] = b"".join(parts)


def dead_letter_batches(content: ProduceContent) -> dict[str, bytes]:
    """One batch per dead-letter topic (Produce v3+ takes one batch per partition), partition 0."""
    return {topic: encode_batch([r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows],
                                [r[3] for r in rows])
            for topic, rows in content.dead.items()}


def _refusal(error: int, message: str, record_errors: list[dict] | None = None) -> dict:
    return {"error_code": error, "error_message": message, "record_errors": record_errors or []}


def _invalid(topic: str, index: int, errors: Mapping[int, str], base: int) -> dict:
    ordered = sorted(errors.items())
    shown = "; ".join(f"record {base + at}: {message}" for at, message in ordered[:MESSAGE_RECORDS])
    more = f"; and {len(ordered) - MESSAGE_RECORDS} more" if len(ordered) > MESSAGE_RECORDS else ""
    message = (f"brokerguard: {len(ordered)} invalid record{'s' * (len(ordered) != 1)} in {topic}-{index}, "
               f"batch refused: {shown}{more}")
    record_errors = [{"batch_index": base + at, "batch_index_error_message": why} for at, why in ordered]
    return _refusal(INVALID_RECORD, message, record_errors)


def rewrite_produce(body: dict, content: ProduceContent) -> dict | None:
    """The Produce body to forward: new records in, refused and emptied partitions out, one
    batch per dead-letter topic added. None when nothing is left to forward."""
    topics = []
    taken_dlq = set()
    for entry in body["topic_data"]:
        name = entry["name"]
        partitions = []
        for partition in entry["partition_data"]:
            key = (name, partition["index"])
            if key in content.refused or key in content.emptied:
                continue
            if key in content.records:
                partition = {**partition, "records": content.records[key]}
            partitions.append(partition)
            if name in content.dead and partition["index"] == 0:
                taken_dlq.add(name)
        if partitions:
            topics.append({**entry, "partition_data": partitions})
    for topic, records in dead_letter_batches(content).items():
        if topic in taken_dlq:
            raise ValueError(f"the request itself writes to dead-letter partition {topic}-0")
        topics.append({"name": topic, "partition_data": [{"index": 0, "records": records}]})
    if not topics:
        return None
    return {**body, "topic_data": topics}


def produce_merge(content: ProduceContent, version: int):
    """Edits the broker's Produce response: dead-letter partitions leave it, the partitions the
    gateway refused or emptied join it, and a failed dead-letter write fails its sources."""

    def merge(response: dict) -> None:
        dead_errors = _take_dead_letter_answers(response, content.dead)
        failed = {source: dead_errors.get(dlq, UNKNOWN_SERVER_ERROR)
                  for dlq, sources in content.dead_from.items() for source in sources}
        failed = {source: error for source, error in failed.items() if error}
        entries = {entry["name"]: entry for entry in response["responses"]}
        for (topic, index), error in failed.items():
            for partition in entries.get(topic, {}).get("partition_responses", ()):
                if partition["index"] == index and not partition["error_code"]:
                    partition["error_code"] = error
                    if version >= RECORD_ERRORS_FROM:
                        partition["error_message"] = ("brokerguard: the valid records were written, but the "
                                                      "invalid ones could not be dead-lettered")
        answers = dict(content.refused)
        for source in content.emptied:
            answers[source] = {"error_code": failed.get(source, 0), "error_message": None}
        for (topic, index), answer in answers.items():
            entry = entries.get(topic)
            if entry is None:
                entry = entries[topic] = {"name": topic, "partition_responses": []}
                response["responses"].append(entry)
            entry["partition_responses"].append(_partition_answer(index, answer, version))

    return merge


def _take_dead_letter_answers(response: dict, dead: Mapping[str, list]) -> dict[str, int]:
    """Remove the gateway's own dead-letter partitions from the response; their error codes."""
    errors: dict[str, int] = {}
    kept = []
    for entry in response.get("responses") or ():
        if entry["name"] in dead:
            partitions = entry["partition_responses"]
            errors.update((entry["name"], p["error_code"]) for p in partitions if p["index"] == 0)
            entry["partition_responses"] = [p for p in partitions if p["index"] != 0]
            if not entry["partition_responses"]:
                continue
        kept.append(entry)
    response["responses"] = kept
    return errors


def _partition_answer(index: int, answer: dict, version: int) -> dict:
    out: dict[str, Any] = {"index": index, "error_code": answer["error_code"], "base_offset": -1,
                           "log_append_time_ms": -1}
    if version >= 5:
        out["log_start_offset"] = -1
    if version >= RECORD_ERRORS_FROM:
        out["record_errors"] = answer.get("record_errors") or []
        out["error_message"] = answer.get("error_message")
    return out


# -- Fetch ---------------------------------------------------------------------------------------


def mask_fetch(response: dict, masks: Mapping[str, Any], topic_name, max_uncompressed: int,
               on_unmaskable) -> None:
    """Mask, in place, the records of every topic in `masks` (topic -> MaskProfile).

    A partial batch at the end of a partition's records (the broker cuts at the fetch size) is
    left out: the consumer fetches it again from its offset, and its records were not masked. A
    batch that cannot be read gets CORRUPT_MESSAGE instead of its records: fail closed, never the
    raw bytes."""
    for entry in response.get("responses") or ():
        name = topic_name(entry)
        profile = masks.get(name) if name is not None else None
        if profile is None:
            continue
        for partition in entry.get("partitions") or ():
            records = partition.get("records")
            if not records:
                continue
            try:
                masked = _mask_records(records, profile, max_uncompressed, name, on_unmaskable)
            except RecordError as err:
                partition["records"] = None
                partition["error_code"] = CORRUPT_MESSAGE
                on_unmaskable(name, partition.get("partition_index"), f"record batch unreadable: {err}")
                continue
            if masked is not None:
                partition["records"] = b"".join(masked)


def mask_fetch_frame(frame: memoryview, version: int, masks: Mapping[str, Any], topic_name,
                     max_uncompressed: int, on_unmaskable) -> tuple[list | None, bool]:
    """mask_fetch on a Fetch response frame (size prefix included) without decoding it: the new
    frame as chunks to write one after the other (None when nothing changed), and whether every
    error code in it is zero (the audit trail then needs no second walk). `topic_name` gets a
    partition's topic as the frame has it, a name or an id. Raises Truncated (a ValueError) for
    a frame that is not a whole Fetch response."""
    error, partitions = fetchrecords.partitions(frame, version)
    records: dict[int, list | None] = {}
    errors: dict[int, int] = {}
    for at, partition in enumerate(partitions):
        name = topic_name(partition.topic)
        profile = masks.get(name) if name is not None else None
        if profile is None or partition.end == partition.start:
            continue
        try:
            masked = _mask_records(frame[partition.start : partition.end], profile, max_uncompressed, name,
                                   on_unmaskable)
        except RecordError as err:
            records[at], errors[at] = None, CORRUPT_MESSAGE
            on_unmaskable(name, partition.index, f"record batch unreadable: {err}")
            continue
        if masked is not None:
            records[at] = masked
    clean = error == 0 and not errors and not any(partition.error_code for partition in partitions)
    if not records:
        return None, clean
    return fetchrecords.rebuilt(frame, version, records, errors, partitions), clean


def _mask_records(records, profile: Any, max_uncompressed: int, topic: str, on_unmaskable) -> list | None:
    """The masked records as their batches, one bytes each, or None when they are unchanged (no
    value masked, no partial batch). A batch's CRC is checked where its records are read, on
    whichever thread masks it; a control batch goes on as the broker sent it."""
    batches, consumed = read_batches(records, max_uncompressed, check_crc=False)
    changed = consumed != len(records)
    masker = profile.batch_masker
    passes = ([None] * len(batches) if masker is None  # each batch masked in one pass, where it can be
              else _masked_batches(batches, masker, max_uncompressed, len(records) >= PARALLEL_MASK_BYTES))
    parts = []
    for batch, whole in zip(batches, passes):
        if batch.is_control:
            parts.append(batch.raw)
            continue
        if whole is None:
            decoded = batch.decode(max_uncompressed)
            values = decoded.values()
            masked, failures = profile.mask_values(values)
            if failures:
                masked = list(masked)
                for at, reason in failures:
                    masked[at] = UNMASKABLE
                    on_unmaskable(topic, batch.base_offset + at, reason)
            whole = batch.with_values(decoded, masked) if any(a is not b for a, b in zip(masked, values)) else batch.raw
        changed = changed or whole is not batch.raw
        parts.append(whole)
    return parts if changed else None


def _masked_batches(batches: list, masker: Any, max_uncompressed: int, large: bool) -> list:
    """Each batch masked in one pass where that can be done (Batch.masked), else None (and for
    a control batch). A large run is shared with the helper thread, where the masker runs
    without the GIL: both take the next batch until none is left, so neither waits on a fixed
    half while the other is busy or not yet awake."""
    out: list = [None] * len(batches)
    pending = iter(range(len(batches)))

    def work() -> None:
        for at in pending:  # one iterator shared by both threads: each batch is taken once
            batch = batches[at]
            if not batch.is_control:
                out[at] = batch.masked(masker, max_uncompressed)

    if large and len(batches) > 1 and getattr(masker, "native_mask_plain", None) is not None:
        helping = _helper().submit(work)
        try:
            work()
        finally:
            helping.result()
    else:
        work()
    return out


@functools.cache
def _helper() -> ThreadPoolExecutor:
    """The second thread that masks large Fetches; started when first needed (in the worker)."""
    return ThreadPoolExecutor(max_workers=1, thread_name_prefix="brokerguard-mask")


def fetch_usage(response: dict, topic_name) -> dict[str, tuple[int, int]]:
    """topic -> (records, bytes) the response delivers, for consume limits."""
    usage: dict[str, tuple[int, int]] = {}
    for entry in response.get("responses") or ():
        name = topic_name(entry)
        if name is None:
            continue
        records = size = 0
        for partition in entry.get("partitions") or ():
            data = partition.get("records")
            if data:
                records += batch_counts(memoryview(data))
                size += len(data)
        if size:
            old = usage.get(name, (0, 0))
            usage[name] = (old[0] + records, old[1] + size)
    return usage
