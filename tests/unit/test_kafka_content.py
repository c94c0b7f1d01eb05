"""Produce content checks on their own: which partitions are refused, rewritten or dead-lettered,
and how the broker's answer is merged so the producer is acknowledged only for what the broker
acknowledged."""

import orjson
import pytest

from brokerguard._native import RecordError, encode_batch, read_batches
from brokerguard.content import compile_validation
from brokerguard.operations import Obligations
from brokerguard.plugins.kafka import content

LIMIT = 1 << 20
REJECT = compile_validation("order", {"value": {"json": True}}, ".")
DEAD_LETTER = compile_validation("order", {"value": {"json": True}, "on_invalid": {"dead_letter": "dlq"}}, ".")


def records(*values, producer_id=-1) -> bytes:
    return encode_batch([None] * len(values), list(values), [[] for _ in values], [1000 + n for n in range(len(values))],
                        producer_id=producer_id, producer_epoch=0 if producer_id >= 0 else -1,
                        base_sequence=0 if producer_id >= 0 else -1)


def check(partitions, validation) -> content.ProduceContent:
    return content.check_produce(partitions, {"orders": Obligations(validations=(validation,))}, LIMIT)


def test_valid_records_leave_the_request_untouched():
    checked = check([("orders", 0, records(b"{}", b"[1]"))], REJECT)
    assert not checked.changed


def test_an_invalid_record_refuses_its_partition_only():
    checked = check([("orders", 0, records(b"{}", b"{oops")), ("orders", 1, records(b"{}")),
                     ("other", 0, records(b"not checked"))], REJECT)
    assert list(checked.refused) == [("orders", 0)]
    refused = checked.refused[("orders", 0)]
    assert refused["error_code"] == content.INVALID_RECORD
    assert [e["batch_index"] for e in refused["record_errors"]] == [1]
    assert refused["error_message"].startswith("brokerguard: 1 invalid record in orders-0, batch refused: record 1:")
    body = {"acks": -1, "topic_data": [{"name": "orders", "partition_data": [{"index": 0, "records": b"x"},
                                                                            {"index": 1, "records": b"y"}]}]}
    assert content.rewrite_produce(body, checked)["topic_data"] == [
        {"name": "orders", "partition_data": [{"index": 1, "records": b"y"}]}]


def test_dead_letters_move_and_the_answer_follows_the_dead_letter_write():
    checked = check([("orders", 0, records(b"{}", b"{oops", b"[]")), ("orders", 1, records(b"bad"))], DEAD_LETTER)
    kept, _ = read_batches(checked.records[("orders", 0)], LIMIT)
    assert kept[0].decode(LIMIT).values() == [b"{}", b"[]"]
    assert checked.emptied == {("orders", 1)}
    body = {"acks": -1, "topic_data": [{"name": "orders", "partition_data": [
        {"index": 0, "records": b"x"}, {"index": 1, "records": b"y"}]}]}
    forward = content.rewrite_produce(body, checked)
    assert [t["name"] for t in forward["topic_data"]] == ["orders", "dlq"]
    [dead] = read_batches(forward["topic_data"][1]["partition_data"][0]["records"], LIMIT)[0]
    dead_records = dead.decode(LIMIT)
    assert dead_records.values() == [b"{oops", b"bad"]
    assert dict(dead_records.headers()[0])["brokerguard.topic"] == b"orders"

    def broker_answer(dlq_error: int) -> dict:
        return {"throttle_time_ms": 0, "responses": [
            {"name": "orders", "partition_responses": [{"index": 0, "error_code": 0, "base_offset": 5}]},
            {"name": "dlq", "partition_responses": [{"index": 0, "error_code": dlq_error, "base_offset": 9}]}]}

    ok = broker_answer(0)
    content.produce_merge(checked, 9)(ok)
    assert [entry["name"] for entry in ok["responses"]] == ["orders"]  # the producer never sees the dead-letter topic
    assert [(p["index"], p["error_code"]) for p in ok["responses"][0]["partition_responses"]] == [(0, 0), (1, 0)]

    failed = broker_answer(6)  # NOT_LEADER_OR_FOLLOWER at the dead-letter partition
    content.produce_merge(checked, 9)(failed)
    answers = {p["index"]: p for p in failed["responses"][0]["partition_responses"]}
    assert answers[0]["error_code"] == 6 and "could not be dead-lettered" in answers[0]["error_message"]
    assert answers[1]["error_code"] == 6


def test_idempotent_batches_are_refused_whole_even_with_a_dead_letter_topic():
    checked = check([("orders", 0, records(b"{}", b"{oops", producer_id=7))], DEAD_LETTER)
    refused = checked.refused[("orders", 0)]
    assert refused["error_code"] == content.INVALID_RECORD
    assert "dead-lettering needs a producer without idempotence" in refused["error_message"]
    assert not checked.dead


@pytest.mark.parametrize("damage", ["crc", "truncated"])
def test_unreadable_batches_are_corrupt_messages(damage):
    raw = bytearray(records(b"{}"))
    if damage == "crc":
        raw[-1] ^= 1
    else:
        raw = raw[:-3]
    refused = check([("orders", 0, bytes(raw))], REJECT).refused[("orders", 0)]
    assert refused["error_code"] == content.CORRUPT_MESSAGE


def test_fetched_records_are_masked_and_partial_batches_left_out():
    from brokerguard.content import builtin_detectors, compile_profile

    profile = compile_profile("p", {"fields": [{"path": "$.card", "strategy": "keep_last", "n": 2}]},
                              detectors=builtin_detectors(), hash_key=None)
    whole = records(b'{"card": "123456"}', b'{ "id": 1 }', b"not JSON")
    response = {"responses": [{"topic": "orders", "partitions": [
        {"partition_index": 0, "error_code": 0, "records": whole + whole[:20]}]}]}
    content.mask_fetch(response, {"orders": profile}, lambda entry: entry["topic"], LIMIT, lambda *a: None)
    [batch] = read_batches(response["responses"][0]["partitions"][0]["records"], LIMIT)[0]
    values = batch.decode(LIMIT).values()
    assert orjson.loads(values[0]) == {"card": "****56"}
    assert values[1] == b'{ "id": 1 }'  # nothing to mask: byte-identical
    assert values[2] == content.UNMASKABLE  # fields cannot be found in it: never delivered raw
    assert content.fetch_usage(response, lambda entry: entry["topic"])["orders"][0] == 3


@pytest.mark.parametrize("hashed", [False, True])
def test_large_fetches_are_masked_on_two_threads_to_the_same_bytes(monkeypatch, hashed):
    from brokerguard.content import builtin_detectors, compile_profile

    strategy = {"strategy": "hash"} if hashed else {"strategy": "keep_last", "n": 2}
    profile = compile_profile("p", {"fields": [{"path": "$.card", **strategy}]},
                              detectors=builtin_detectors(), hash_key=b"k" * 32 if hashed else None)
    # The second thread is for maskers that run without the GIL only: pseudonyms are made in C.
    assert profile.batch_masker.native_mask_plain is not None
    # Big enough to share, with a batch the one-pass masker gives up on (not JSON: the general
    # path marks it unmaskable), whichever thread takes it.
    batches = [records(*[b'{"card": "%d", "pad": "%s"}' % (1_000_000 + n * 100 + i, b"x" * 200) for i in range(100)])
               for n in range(14)]
    batches[9] = records(b'{"card": "123456"}', b"not JSON")
    data = b"".join(batches)
    assert len(data) >= content.PARALLEL_MASK_BYTES
    corrupt = bytearray(data)
    corrupt[-10] ^= 1  # in the last batch, which either thread may take: its CRC no longer matches
    unmaskable = []
    split = content._mask_records(memoryview(data), profile, LIMIT, "orders", lambda *a: unmaskable.append(a))
    with pytest.raises(RecordError, match=f"record batch at byte {len(data) - len(batches[-1])}: CRC-32C mismatch"):
        content._mask_records(memoryview(corrupt), profile, LIMIT, "orders", lambda *a: None)
    monkeypatch.setattr(content, "PARALLEL_MASK_BYTES", len(data) + 1)
    alone = content._mask_records(memoryview(data), profile, LIMIT, "orders", lambda *a: None)
    assert split == alone
    masked = [b.decode(LIMIT).values() for b in read_batches(b"".join(split), LIMIT)[0]]
    assert masked[9][1] == content.UNMASKABLE and len(unmaskable) == 1
    for first, last in ((0, 1), (13, 99)):  # the first batch and the last
        value = masked[first][last]
        assert b"%d" % (1_000_000 + first * 100 + last) not in value
        assert value.startswith(b'{"card": "h:' if hashed else b'{"card": "*****%02d"' % last)


@pytest.mark.parametrize("version", [4, 11, 12, 13, 15])
def test_fetch_frames_are_masked_in_place_as_the_decoded_response_is(version):
    """The undecoded path (mask_fetch_frame) makes byte for byte the frame the codec path makes:
    masked records, a partial batch left out, a corrupt batch withheld, other topics untouched."""
    from brokerguard.content import builtin_detectors, compile_profile
    from brokerguard.plugins.kafka import apis
    from brokerguard.plugins.kafka.protocol import codec
    from brokerguard.plugins.kafka.rewrite import response_frame

    profile = compile_profile("p", {"fields": [{"path": "$.card", "strategy": "keep_last", "n": 2}]},
                              detectors=builtin_detectors(), hash_key=None)
    whole = records(b'{"card": "123456"}', b'{ "id": 1 }', b"not JSON")
    clean = records(b'{"id": 2}')
    corrupt = bytearray(whole)
    corrupt[-1] ^= 1

    def partition(index, data):
        return {"partition_index": index, "error_code": 0, "high_watermark": 9, "last_stable_offset": 9,
                "log_start_offset": 0, "aborted_transactions": [], "preferred_read_replica": -1, "records": data}

    ids = {"orders": b"\x01" * 16, "other": b"\x02" * 16}
    body = {"throttle_time_ms": 0, "error_code": 0, "session_id": 0, "responses": [
        {"topic": "orders", "topic_id": ids["orders"], "partitions": [
            partition(0, whole + whole[:20]), partition(1, clean), partition(2, bytes(corrupt)), partition(3, None)]},
        {"topic": "other", "topic_id": ids["other"], "partitions": [partition(0, whole)]}]}
    frame = response_frame(5, apis.FETCH, version, body)
    by_id = {value: key for key, value in ids.items()}
    withheld = []

    def note(*args):
        withheld.append(args[:2])

    _, offset = codec.decode_response_header(frame, 4, codec.response_header_version(apis.FETCH, version))
    response = codec.decode_response(apis.FETCH, version, frame, offset)
    content.mask_fetch(response, {"orders": profile}, lambda entry: entry.get("topic") or by_id[entry["topic_id"]],
                       LIMIT, note)
    expected = response_frame(5, apis.FETCH, version, response)
    by_frame, clean = content.mask_fetch_frame(memoryview(frame), version, {"orders": profile},
                                               lambda topic: by_id.get(topic, topic), LIMIT, note)
    assert b"".join(by_frame) == expected
    assert not clean  # the corrupt batch's CORRUPT_MESSAGE
    assert withheld[: len(withheld) // 2] == withheld[len(withheld) // 2 :]  # the same records withheld
    assert ("orders", 2) in withheld  # the corrupt batch


@pytest.mark.parametrize("error_code", [0, 6])
def test_a_fetch_frame_with_nothing_to_mask_is_left_as_the_broker_sent_it(error_code):
    """No record changes: no new frame (the broker's bytes go on), and whether it carries an
    error is told without a second walk."""
    from brokerguard.content import builtin_detectors, compile_profile
    from brokerguard.plugins.kafka import apis
    from brokerguard.plugins.kafka.rewrite import response_frame

    profile = compile_profile("p", {"fields": [{"path": "$.card", "strategy": "redact"}]},
                              detectors=builtin_detectors(), hash_key=None)
    body = {"throttle_time_ms": 0, "error_code": 0, "session_id": 0, "responses": [
        {"topic": "orders", "partitions": [
            {"partition_index": 0, "error_code": error_code, "high_watermark": 9, "last_stable_offset": 9,
             "log_start_offset": 0, "aborted_transactions": [], "preferred_read_replica": -1,
             "records": records(b'{"id": 2}')}]}]}
    frame = response_frame(5, apis.FETCH, 12, body)
    assert content.mask_fetch_frame(memoryview(frame), 12, {"orders": profile}, lambda topic: topic, LIMIT,
                                    lambda *args: None) == (None, error_code == 0)
