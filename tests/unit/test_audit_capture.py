"""What a Produce's records leave in its audit event: the digest of the bytes as sent, by the
configured hash, and the records themselves only at the levels that keep them."""
import hashlib

import blake3
import pytest

from brokerguard._native import encode_batch
from brokerguard.plugins.kafka.audit import produce_payload

MAX = 1 << 20


def batch(values: list[bytes]) -> bytes:
    return encode_batch([None] * len(values), values, [[] for _ in values], [1_700_000_000_000] * len(values))


@pytest.mark.parametrize("digest, hash_of", [("blake3", blake3.blake3), ("sha256", hashlib.sha256)])
def test_a_digest_is_the_hash_of_the_records_as_sent(digest, hash_of):
    first, second = batch([b'{"a": 1}', b'{"a": 2}']), batch([b"plain text"])
    payload = produce_payload("digest", [("orders", 0, first), ("orders", 3, memoryview(second))], {}, MAX, digest)
    assert payload == {"capture": "digest", "partitions": [
        {"topic": "orders", "partition": 0, "bytes": len(first), digest: hash_of(first).hexdigest()},
        {"topic": "orders", "partition": 3, "bytes": len(second), digest: hash_of(second).hexdigest()}]}


def test_full_capture_keeps_the_records_beside_the_digest():
    data = batch([b'{"card": "4111 1111 1111 1111"}'])
    [entry] = produce_payload("full", [("orders", 1, data)], {}, MAX, "blake3")["partitions"]
    assert entry["blake3"] == blake3.blake3(data).hexdigest() and entry["records"] == 1
    assert entry["records_data"][0]["value"] == "eyJjYXJkIjogIjQxMTEgMTExMSAxMTExIDExMTEifQ=="


def test_nothing_is_kept_without_capture():
    assert produce_payload("none", [("orders", 0, batch([b"x"]))], {}, MAX, "blake3") is None
