"""The webhook sink against a real HTTP server on loopback, driven as the audit bus drives it."""

import asyncio
import base64
import hashlib
import hmac
import json
import logging
import os
import stat
import time

import pytest

from brokerguard.audit.chain import Chain, verify
from brokerguard.audit.sinks import Sealed, SinkContext
from brokerguard.errors import ConfigError
from brokerguard.plugins.sinks.webhook import OutboxFull, WebhookSink, verify_signature

from receiver import Receiver

SECRET = "hmac-key-for-tests-5d1e"
TOKEN = "hec-token-for-tests-9a7c"


@pytest.fixture
def receiver():
    receiver = Receiver()
    yield receiver
    if receiver._server is not None:
        receiver.stop()


@pytest.fixture
def context(tmp_path):
    return SinkContext(gateway="gw-test:4242", state_dir=tmp_path / "state")


def batch(chain: Chain, count: int, **fields) -> list[Sealed]:
    out = []
    for _ in range(count):
        event = {"kind": "request", "time": time.time(), "session": "s-1", "identity": "alice", "decision": "allow",
                 **fields}
        out.append(Sealed(event, chain.seal(event)))
    return out


def keys(events: list[dict]) -> list[tuple[str, int]]:
    return [(event["stream"], event["index"]) for event in events]


async def write(sink: WebhookSink, sealed: list[Sealed]) -> None:
    await asyncio.to_thread(sink.write, sealed)  # as the bus does: a sync write runs in a thread


async def eventually(condition, what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"still waiting for {what}")
        await asyncio.sleep(0.01)


def make(options: dict, context: SinkContext) -> WebhookSink:
    return WebhookSink.from_config(options, context, retry_first_s=0.01, retry_max_s=0.05)


# -- delivery ------------------------------------------------------------------------------------


def test_events_arrive_in_order_signed_and_once(receiver, context, monkeypatch):
    monkeypatch.setenv("AUDIT_HOOK_SECRET", SECRET)
    chain = Chain("s1", None)
    batches = [batch(chain, count) for count in (3, 9, 1)]

    async def run():
        sink = make({"url": receiver.url(), "secret_env": "AUDIT_HOOK_SECRET", "batch_max": 4}, context)
        await sink.start()
        for sealed in batches:
            await write(sink, sealed)
        assert sink.backlog() == 0
        await sink.close()

    asyncio.run(run())
    sent = [sealed for sealed_batch in batches for sealed in sealed_batch]
    received = receiver.events()
    assert keys(received) == [("s1", index) for index in range(13)]
    assert received == [json.loads(sealed.line) for sealed in sent]
    assert verify(received, None).intact
    assert all(status == 200 for status, _, _ in receiver.attempts)  # nothing needed a second attempt
    assert [len(json.loads(body)) for _, body in receiver.accepted] == [3, 4, 4, 1, 1]
    for headers, body in receiver.accepted:
        assert headers["content-type"] == "application/json"
        assert "authorization" not in headers
        assert verify_signature(SECRET.encode(), headers["x-brokerguard-timestamp"], body,
                                headers["x-brokerguard-signature"], max_age_s=300)
        events = json.loads(body)
        delivery = f"s1:{events[0]['index']}-s1:{events[-1]['index']}"
        assert headers["x-brokerguard-delivery"] == headers["idempotency-key"] == delivery


def test_a_signature_does_not_verify_for_another_body_secret_or_an_old_timestamp():
    body = b'[{"kind":"request"}]'
    now = str(int(time.time()))
    good = "sha256=" + hmac.new(b"k", now.encode() + b"." + body, hashlib.sha256).hexdigest()
    assert verify_signature(b"k", now, body, good)
    assert not verify_signature(b"k", now, body + b" ", good)
    assert not verify_signature(b"other", now, body, good)
    assert not verify_signature(b"k", str(int(now) + 1), body, good)
    old = str(int(now) - 3600)
    old_signature = "sha256=" + hmac.new(b"k", old.encode() + b"." + body, hashlib.sha256).hexdigest()
    assert verify_signature(b"k", old, body, old_signature)
    assert not verify_signature(b"k", old, body, old_signature, max_age_s=300)


def test_splunk_hec_format_wraps_each_event_and_sends_the_token(receiver, context, monkeypatch):
    monkeypatch.setenv("HEC_TOKEN", TOKEN)
    chain = Chain("s1", None)
    sent = batch(chain, 5)

    async def run():
        sink = make({"url": receiver.url("/services/collector/event"), "format": "splunk_hec",
                     "token_env": "HEC_TOKEN"}, context)
        await sink.start()
        await write(sink, sent)
        await sink.close()

    asyncio.run(run())
    [(headers, body)] = receiver.accepted
    assert headers["authorization"] == f"Splunk {TOKEN}"
    lines = [json.loads(line) for line in body.split(b"\n")]
    assert [line["event"] for line in lines] == [json.loads(sealed.line) for sealed in sent]
    for line, sealed in zip(lines, sent):
        assert line["time"] == sealed.event["time"]
        assert (line["host"], line["source"], line["sourcetype"]) == ("gw-test:4242", "brokerguard",
                                                                      "brokerguard:audit")


def test_json_format_sends_a_bearer_token(receiver, context, monkeypatch):
    monkeypatch.setenv("HOOK_TOKEN", TOKEN)

    async def run():
        sink = make({"url": receiver.url(), "token_env": "HOOK_TOKEN"}, context)
        await sink.start()
        await write(sink, batch(Chain("s1", None), 1))
        await sink.close()

    asyncio.run(run())
    [(headers, _)] = receiver.accepted
    assert headers["authorization"] == f"Bearer {TOKEN}"


# -- outages ---------------------------------------------------------------------------------------


def test_a_receiver_that_goes_away_and_comes_back_gets_every_event_once(receiver, context, caplog):
    chain = Chain("s1", None)

    async def run():
        sink = make({"url": receiver.url(), "batch_max": 3}, context)
        await sink.start()
        await write(sink, batch(chain, 4))
        receiver.stop()
        for _ in range(5):  # each returns normally: the events are on disk
            await write(sink, batch(chain, 2))
        assert sink.backlog() == 10
        receiver.start()  # the same port
        await eventually(lambda: sink.backlog() == 0, "the outbox to empty")
        assert len(receiver.events()) == 14
        await write(sink, batch(chain, 2))  # and it is back to delivering at once
        await eventually(lambda: len(receiver.events()) == 16, "the last 2 events")
        await sink.close()

    with caplog.at_level(logging.WARNING, logger="brokerguard.audit.webhook"):
        asyncio.run(run())
    assert keys(receiver.events()) == [("s1", index) for index in range(16)]  # in order, none twice
    assert "delivery failed" in caplog.text and "delivering again" in caplog.text


def test_503_answers_are_retried_with_the_same_idempotency_key(receiver, context):
    receiver.refuse = 3
    chain = Chain("s1", None)

    async def run():
        sink = make({"url": receiver.url()}, context)
        await sink.start()
        await write(sink, batch(chain, 2))  # refused: returns normally all the same
        await write(sink, batch(chain, 2))
        await eventually(lambda: len(receiver.events()) == 4, "all 4 events")
        await sink.close()

    asyncio.run(run())
    statuses = [status for status, _, _ in receiver.attempts]
    assert statuses[:3] == [503, 503, 503] and statuses[3] == 200
    assert keys(receiver.events()) == [("s1", index) for index in range(4)]
    # The POST that failed is the one that succeeds: a receiver can tell a repeat by its key.
    first_key = receiver.attempts[0][1]["idempotency-key"]
    assert first_key == "s1:0-s1:1"
    assert all(headers["idempotency-key"] == first_key for _, headers, _ in receiver.attempts[:4])


def test_what_is_left_at_shutdown_is_delivered_by_the_next_sink(receiver, context):
    receiver.stop()
    first_run = Chain("s1", None)

    async def before_restart():
        sink = make({"url": receiver.url()}, context)
        await sink.start()
        await write(sink, batch(first_run, 3))
        await write(sink, batch(first_run, 3))
        await sink.close()  # its last attempt fails too
        return sink.outbox

    outbox = asyncio.run(before_restart())
    assert outbox.exists()
    assert receiver.attempts == []
    receiver.start()
    second_run = Chain("s2", None)

    async def after_restart():
        sink = make({"url": receiver.url()}, context)
        assert sink.outbox == outbox
        await sink.start()  # delivers what the last run left, without waiting for a write
        await eventually(lambda: len(receiver.events()) == 6, "the 6 events left over")
        await write(sink, batch(second_run, 2))
        await sink.close()

    asyncio.run(after_restart())
    assert keys(receiver.events()) == [("s1", index) for index in range(6)] + [("s2", 0), ("s2", 1)]


def test_a_batch_written_again_is_sent_once(receiver, context):
    chain = Chain("s1", None)
    sealed = batch(chain, 3)

    async def run():
        sink = make({"url": receiver.url()}, context)
        await sink.start()
        await write(sink, sealed)
        await write(sink, sealed)  # the bus retries a batch it believes failed
        receiver.stop()
        more = batch(chain, 2)
        await write(sink, more)
        await write(sink, more)  # retried while it waits in the outbox
        receiver.start()
        await eventually(lambda: len(receiver.events()) == 5, "all 5 events")
        await write(sink, sealed)
        await sink.close()

    asyncio.run(run())
    assert keys(receiver.events()) == [("s1", index) for index in range(5)]


def test_a_full_outbox_refuses_batches_until_the_receiver_catches_up(receiver, context):
    receiver.stop()
    chain = Chain("s1", None)

    async def run():
        sink = make({"url": receiver.url(), "max_outbox_events": 4}, context)
        await sink.start()
        await write(sink, batch(chain, 2))
        await write(sink, batch(chain, 2))
        refused = batch(chain, 1)
        with pytest.raises(OutboxFull, match="max_outbox_events"):
            await write(sink, refused)
        assert sink.backlog() == 4
        receiver.start()
        await eventually(lambda: sink.backlog() == 0, "the outbox to empty")
        await write(sink, refused)  # the bus's retry of the refused batch
        await sink.close()

    asyncio.run(run())
    assert keys(receiver.events()) == [("s1", index) for index in range(5)]


def test_workers_sharing_an_outbox_never_send_an_event_twice(receiver, context):
    chains = [Chain("w1", None), Chain("w2", None)]

    async def worker(chain: Chain) -> None:
        sink = make({"url": receiver.url(), "batch_max": 7}, context)
        await sink.start()
        for _ in range(15):
            await write(sink, batch(chain, 5))
        await eventually(lambda: sink.backlog() == 0, "the shared outbox to empty")
        await sink.close()

    async def run():
        await asyncio.gather(*(worker(chain) for chain in chains))

    asyncio.run(run())
    received = keys(receiver.events())
    assert len(received) == len(set(received)) == 150
    for stream in ("w1", "w2"):
        assert [index for name, index in received if name == stream] == list(range(75))


def test_the_outbox_is_private_to_its_owner(receiver, context):
    async def run():
        sink = make({"url": receiver.url()}, context)
        await sink.start()
        await sink.close()
        return sink.outbox

    outbox = asyncio.run(run())
    assert outbox.parent == context.state_dir and outbox.name.startswith("webhook-outbox-")
    assert stat.S_IMODE(os.stat(outbox).st_mode) == 0o600


# -- configuration and secrets ---------------------------------------------------------------


@pytest.mark.parametrize(("options", "message"), [
    ({}, "`url` is required"),
    ({"url": "ftp://example.com/x"}, "http:// or https://"),
    ({"url": "https:///path"}, "no host"),
    ({"url": "https://example.com:99999/x"}, "port"),
    ({"url": "https://example.com", "format": "xml"}, "`format` must be one of json, splunk_hec"),
    ({"url": "https://example.com", "format": "splunk_hec"}, "needs the HEC token"),
    ({"url": "https://example.com", "token_env": "NOT_SET_ANYWHERE_4711"}, "NOT_SET_ANYWHERE_4711, which is not set"),
    ({"url": "https://example.com", "timeout_s": 0}, "`timeout_s` must be above 0"),
    ({"url": "https://example.com", "batch_max": "10"}, "`batch_max` must be a whole number"),
    ({"url": "https://example.com", "max_outbox_events": 0}, "`max_outbox_events` must be at least 1"),
    ({"url": "https://example.com", "retries": 3}, "unknown option retries"),
    ({"url": "https://u:p@example.com", "token_env": "HOOK_TOKEN"}, "either in `url` or through `token_env`"),
])
def test_bad_options_are_refused_with_a_sentence(options, message, context, monkeypatch):
    monkeypatch.setenv("HOOK_TOKEN", TOKEN)
    monkeypatch.delenv("NOT_SET_ANYWHERE_4711", raising=False)
    with pytest.raises(ConfigError, match="audit sink webhook") as refused:
        WebhookSink.from_config(options, context)
    assert message in str(refused.value)


def test_a_token_pasted_instead_of_a_variable_name_is_not_repeated(context):
    with pytest.raises(ConfigError, match="name of an environment variable") as refused:
        WebhookSink.from_config({"url": "https://example.com", "token_env": "Bearer abc.def-ghi"}, context)
    assert "abc.def-ghi" not in str(refused.value)


def test_tokens_secrets_and_url_credentials_stay_out_of_names_and_logs(receiver, context, monkeypatch, caplog):
    monkeypatch.setenv("HOOK_TOKEN", TOKEN)
    monkeypatch.setenv("HOOK_SECRET", SECRET)
    password = "pa55-w0rd-for-tests"
    receiver.refuse = 2
    chain = Chain("s1", None)

    async def run():
        with_token = make({"url": receiver.url("/hook?key=query-secret-31"), "token_env": "HOOK_TOKEN",
                           "secret_env": "HOOK_SECRET"}, context)
        with_credentials = make({"url": f"http://ops:{password}@127.0.0.1:{receiver.port}/hook"}, context)
        sinks = (with_token, with_credentials)
        for sink in sinks:
            await sink.start()
            await write(sink, batch(chain, 1))
        await eventually(lambda: len(receiver.accepted) == 2, "both POSTs")
        receiver.stop()
        for sink in sinks:
            await write(sink, batch(chain, 1))
            await sink.close()
        return [sink.name for sink in sinks]

    with caplog.at_level(logging.DEBUG):
        names = asyncio.run(run())
    port = receiver.port
    assert names == [f"webhook http://127.0.0.1:{port}/hook"] * 2
    assert "delivery failed" in caplog.text
    for secret in (TOKEN, SECRET, password, "query-secret-31"):
        assert secret not in caplog.text
        assert all(secret not in name for name in names)
    credentials = {headers["authorization"] for headers, _ in receiver.accepted}
    assert credentials == {f"Bearer {TOKEN}", "Basic " + base64.b64encode(f"ops:{password}".encode()).decode()}
