"""Replay for forensics: the produce records a session's audit events captured, published again
to a sandbox topic, keys, headers and timestamps intact.

Only records captured `masked` or `full` can be replayed (a digest keeps no records); with
`full` the replayed records are byte-identical to what the session sent. The replay is an
ordinary client of the gateway: it logs in as whoever runs it and the rules decide whether it
may write to the target, exactly as for any other producer.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

__all__ = ["CapturedRecord", "Replayed", "captured_records", "replay"]


@dataclass(frozen=True)
class CapturedRecord:
    topic: str  # where the session wrote it
    partition: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes | None]]
    timestamp: int  # ms
    capture: str  # "masked" or "full"
    request: int  # the seq of the produce request in its session


@dataclass
class Replayed:
    records: int = 0
    requests: int = 0  # produce requests whose records were replayed
    skipped: list[str] = field(default_factory=list)  # why some produce requests could not be


def _bytes(text: str | None) -> bytes | None:
    return None if text is None else base64.b64decode(text)


def captured_records(events: Iterable[dict[str, Any]], skipped: list[str] | None = None) -> Iterator[CapturedRecord]:
    """The records of a session's produce events, in the order the session sent them."""
    for event in events:
        if event.get("kind") != "request" or event.get("api") != "Produce":
            continue
        payload = event.get("payload")
        where = f"request #{event.get('seq')}"
        if not payload:
            if skipped is not None:
                skipped.append(f"{where}: no payload captured")
            continue
        for partition in payload.get("partitions") or ():
            if "records_data" not in partition:
                if skipped is not None:
                    reason = partition.get("unreadable") or f"captured as {payload.get('capture')}, without records"
                    skipped.append(f"{where} {partition.get('topic')}[{partition.get('partition')}]: {reason}")
                continue
            for record in partition["records_data"]:
                yield CapturedRecord(partition["topic"], partition["partition"], _bytes(record.get("key")),
                                     _bytes(record.get("value")),
                                     [(name, _bytes(value)) for name, value in record.get("headers") or ()],
                                     record["timestamp"], payload["capture"], event.get("seq", 0))


async def replay(events: list[dict[str, Any]], target: str, producer_config: dict[str, Any]) -> Replayed:
    """Publish the captured records of `events` (one session's, in order) to `target` with an
    aiokafka producer built from `producer_config` (bootstrap_servers, security settings)."""
    from aiokafka import AIOKafkaProducer

    result = Replayed()
    records = list(captured_records(events, result.skipped))
    result.requests = len({r.request for r in records})
    if not records:
        return result
    producer = AIOKafkaProducer(acks="all", enable_idempotence=True, **producer_config)
    await producer.start()
    try:
        sent = [await producer.send(target, value=r.value, key=r.key, headers=r.headers, timestamp_ms=r.timestamp)
                for r in records]
        await asyncio.gather(*sent)  # every record acknowledged, or the error of the first that was not
    finally:
        await producer.stop()
    result.records = len(records)
    return result
