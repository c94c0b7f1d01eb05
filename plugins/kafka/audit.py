"""What the Kafka adapter tells the audit trail: one `request` event per request.

A request's event is started when the request is read (who, which API, what each decision
was), travels with the request in the connection's FIFO, and is finished when its answer
leaves: the errors that answer carries (read from the decoded response, whoever made it), the
throttle, the latency. A request without a response (acks=0 Produce) is finished when forwarded.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import time
from collections.abc import Iterable
from typing import Any

import blake3

from brokerguard._native import RecordError, read_batches
from brokerguard.content import DetectorSet, compile_profile
from brokerguard.operations import Decision, Resource
from brokerguard.session import Session

from . import errorscan
from .errors import error_name
from .protocol import codec

__all__ = ["errors_of", "finish", "note_refusals", "produce_payload", "record_decision", "response_errors", "start"]

# Where in a response an error code belongs: the keys that name what the entry is about.
_NAME_KINDS = (("name", "topic"), ("topic", "topic"), ("topic_name", "topic"), ("group_id", "group"),
               ("transactional_id", "transactional_id"), ("resource_name", "resource"), ("topic_id", "topic_id"))
_PARTITION_KEYS = ("partition_index", "index", "partition")
_API_NAMES = {key: spec.name for key, spec in codec.API_KEYS.items()}
DIGESTS = {"blake3": blake3.blake3, "sha256": hashlib.sha256}  # audit.digest: its hash function


def start(session: Session, seq: int, api_key: int, api_version: int, correlation_id: int) -> dict[str, Any]:
    identity = session.identity
    event: dict[str, Any] = {
        "kind": "request", "time": time.time(), "session": session.id, "seq": seq,
        "identity": identity.subject if identity is not None else None,
        "api": _API_NAMES.get(api_key) or str(api_key),
        "api_version": api_version, "correlation_id": correlation_id, "operations": [],
        "started_ns": time.perf_counter_ns(),
    }
    if session.client_id:
        event["client_id"] = session.client_id
    if session.software:
        event["software"] = session.software
    return event


def record_decision(event: dict[str, Any], action: str, resource: Resource, decision: Decision) -> None:
    event["operations"].append({"action": action, "resource": f"{resource.kind}:{resource.name}",
                                "decision": decision.verdict.value, "rule": decision.source,
                                "reason": decision.reason})


def note_refusals(event: dict[str, Any], refused: Iterable[tuple[str, Resource, Decision]]) -> None:
    """Denied decisions that refused nothing (a topic left out of a listing, auto-creation
    turned off) become "hidden": the request was served, adjusted."""
    refusals = {(action, f"{resource.kind}:{resource.name}") for action, resource, _ in refused}
    for op in event["operations"]:
        if op["decision"] != "allow" and (op["action"], op["resource"]) not in refusals:
            op["decision"] = "hidden"


def finish(event: dict[str, Any], *, outcome: str | None = None, errors: dict[str, str] | None = None,
           throttle_s: float = 0.0) -> dict[str, Any]:
    """Complete the event: decision summary, outcome, latency. Returns it, ready to emit."""
    operations = event["operations"]
    allowed = False
    refused = None  # the first operation refused
    for op in operations:
        verdict = op["decision"]
        if verdict == "allow":
            allowed = True
        elif verdict != "hidden" and refused is None:
            refused = op
    event["decision"] = "allow" if refused is None else "partial" if allowed else "deny"
    shown = refused or (operations[0] if operations else None)
    if shown is not None:
        event["rule"] = shown["rule"]
        event["reason"] = shown["reason"]
    if errors:
        event["errors"] = errors
    event["outcome"] = outcome or ("error" if errors else "ok")
    if throttle_s:
        event["throttle_ms"] = int(throttle_s * 1000)
    started = event.pop("started_ns", None)
    if started is not None:
        event["latency_ms"] = round((time.perf_counter_ns() - started) / 1e6, 3)
    return event


def errors_of(body: dict[str, Any], limit: int = 100) -> dict[str, str]:
    """Every non-zero error code in a decoded response, by where it applies: "request",
    "topic:orders[3]", "group:billing"... At most `limit` are named; the rest are counted."""
    found: dict[str, str] = {}
    hidden = _walk(body, "request", found, limit)
    if hidden:
        found["..."] = f"{hidden} more"
    return found


def _walk(value: Any, where: str, found: dict[str, str], limit: int) -> int:
    """Fills found; returns how many errors did not fit."""
    if isinstance(value, list):
        return sum(_walk(item, where, found, limit) for item in value)
    if not isinstance(value, dict):
        return 0
    for key, kind in _NAME_KINDS:
        name = value.get(key)
        if isinstance(name, str):
            where = f"{kind}:{name}"
            break
    else:
        partition = next((value[key] for key in _PARTITION_KEYS if isinstance(value.get(key), int)), None)
        if partition is not None and where != "request":
            where = f"{where.partition('[')[0]}[{partition}]"
    hidden = 0
    code = value.get("error_code")
    if isinstance(code, int) and code != 0:
        if len(found) < limit:
            message = value.get("error_message")
            found[where] = error_name(code) + (f": {message}" if isinstance(message, str) and message else "")
        else:
            hidden += 1
    for item in value.values():
        if isinstance(item, (list, dict)):
            hidden += _walk(item, where, found, limit)
    return hidden


def response_errors(api_key: int, api_version: int, frame: memoryview) -> dict[str, str] | None:
    """The errors of a response frame the gateway forwards without decoding; None if unreadable."""
    if errorscan.clean(api_key, api_version, frame):
        return {}
    try:
        _, offset = codec.decode_response_header(frame, 4, codec.response_header_version(api_key, api_version))
        return errors_of(codec.decode_response(api_key, api_version, frame, offset))
    except codec.DecodeError:
        return None


def produce_payload(capture: str, partitions: Iterable[tuple[str, int, Any]], masks: dict[str, Any],
                    max_uncompressed: int, digest: str) -> dict[str, Any] | None:
    """What a Produce's records leave in its event at a capture level: per partition its size and
    the hex digest of its records as sent, under the name of the hash (`digest`: "blake3" or
    "sha256"), plus the records themselves ("masked": values through the topic's mask profile,
    or every detector where it has none; "full": as sent). Keys and values base64."""
    if capture == "none":
        return None
    hash_of = DIGESTS[digest]
    out = []
    for topic, index, data in partitions:
        view = memoryview(data)
        entry: dict[str, Any] = {"topic": topic, "partition": index, "bytes": len(view),
                                 digest: hash_of(view).hexdigest()}
        if capture in ("masked", "full"):
            try:
                entry["records_data"] = _records(view, masks.get(topic) or _detectors() if capture == "masked"
                                                 else None, max_uncompressed)
                entry["records"] = len(entry["records_data"])
            except RecordError as err:
                entry["unreadable"] = str(err)
        out.append(entry)
    return {"capture": capture, "partitions": out}


def _records(view: memoryview, mask: Any, max_uncompressed: int) -> list[dict[str, Any]]:
    out = []
    for batch in read_batches(view, max_uncompressed)[0]:
        if batch.is_control:
            continue
        records = batch.decode(max_uncompressed)
        values = records.values()
        if mask is not None:
            values, failures = mask.mask_values(values)
            for at, _ in failures:
                values[at] = None  # what cannot be masked is not kept
        for delta, stamp, key, value, headers in zip(records.offset_deltas(), records.timestamp_deltas(),
                                                     records.keys(), values, records.headers()):
            out.append({"offset_delta": delta, "timestamp": batch.base_timestamp + stamp, "key": b64(key),
                        "value": b64(value),
                        "headers": [[name, b64(data if data is None or type(data) is bytes else bytes(data))]
                                    for name, data in headers or ()]})
    return out


@functools.cache
def _detectors() -> Any:
    """The profile that masks with every installed detector: for topics without a mask of their own."""
    detectors = DetectorSet.load()
    return compile_profile("audit-capture", {"detectors": list(detectors.names)}, detectors=detectors, hash_key=None)


def b64(data: bytes | None) -> str | None:
    return None if data is None else base64.b64encode(data).decode()
