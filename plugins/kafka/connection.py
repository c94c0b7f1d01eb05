"""One client connection and the one upstream connection opened for it.

Guarantees:
- Nothing reaches the broker before the client has authenticated: until then only ApiVersions,
  SaslHandshake and SaslAuthenticate are answered (by the gateway) and anything else closes the
  connection. After, every request is decided per resource (authorize.py) before it is forwarded.
- Responses reach the client in the order of its requests, each exactly once. Every request that
  expects a response has an entry in one FIFO; a response from the broker must match the head
  entry's correlation id, and answers the gateway makes itself wait in the same FIFO for their
  turn.
- Requests every rule allows pass through untouched: one copy out of the read buffer and one
  write per read, whatever the number of frames in it. Only requests with a denied part or
  records an obligation changed, and responses that carry broker addresses, must hide or add
  entries, or carry records to mask, are encoded again (content.py).
- A rate limit's throttle holds the response that long, and every later one behind it; a
  request without a response (acks=0) holds the client's next requests instead.
- A request that must wait (authentication, topic ids to look up) holds every later request of
  the connection behind it, so the broker sees them in the client's order.
- Backpressure both ways: when one side's write buffer is full, the other side stops reading.
  With fail-closed auditing, a request read while the trail cannot keep up waits, with every
  later one, until it has caught up; reading stops meanwhile.
- Each request's audit event (audit.py) is started when it is read and finished when its
  answer leaves; the audit bus takes it without waiting.
- A frame the gateway cannot accept (oversized, malformed) closes this connection only, with the
  reason in the log.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, Union

from brokerguard._native import (PRODUCE_LAST_VERSION, FrameError, RequestScanner, ResponseScanner,
                                 read_produce_request)
from brokerguard.audit import events
from brokerguard.errors import BrokerGuardError, ProtocolError
from brokerguard.identity import AuthenticationFailed, Identity
from brokerguard.operations import Decision, Obligations, Resource
from brokerguard.session import Session

from . import answers, apis, audit, authorize, content, fetchrecords, fetchrequest
from .framebuffer import FrameBuffer
from .login import ClientLogin
from .protocol import codec
from .rewrite import request_frame, response_frame
from .split import chain

if TYPE_CHECKING:
    from .adapter import KafkaAdapter

log = logging.getLogger("brokerguard.kafka")

CLIENT_BUFFER = 64 * 1024
UPSTREAM_BUFFER = 256 * 1024
# While the upstream connection is still being opened, at most this much is held for it.
MAX_HELD_BYTES = 4 * 1024 * 1024


def _peer(transport: asyncio.BaseTransport) -> str:
    address = transport.get_extra_info("peername")
    return f"{address[0]}:{address[1]}" if address else "?"


class InFlight:
    """A request waiting for its response. `local` holds an answer the gateway made itself;
    `merge` edits the broker's decoded response before it goes back (denied parts, hidden ones,
    masked records), or `recast` its frame without decoding it (masked records only); `throttle_s`
    holds the response that long (a rate limit's debt); `audit` is the request's audit event,
    finished when the response leaves."""

    __slots__ = ("correlation_id", "api_key", "api_version", "local", "merge", "recast", "throttle_s", "audit")

    def __init__(self, correlation_id: int, api_key: int, api_version: int, local: bytes | None = None,
                 merge: Callable[[dict], None] | None = None, throttle_s: float = 0.0,
                 audit: dict | None = None):
        self.correlation_id = correlation_id
        self.api_key = api_key
        self.api_version = api_version
        self.local = local
        self.merge = merge
        # rewrites the response frame undecoded: (the new frame as chunks or None if unchanged,
        # no error in it)
        self.recast: Callable[[memoryview], tuple[list | None, bool]] | None = None
        self.throttle_s = throttle_s
        self.audit = audit


def _produce_partitions(body: dict, names: authorize.TopicNames) -> list[tuple[str, int, Any]]:
    """(topic, partition, records) of a decoded Produce request body (topics by name or by id)."""
    out = []
    for topic in body["topic_data"]:
        name = topic.get("name") or (names.name(topic["topic_id"]) if topic.get("topic_id") else None) or "?"
        out += [(name, partition["index"], partition["records"]) for partition in topic["partition_data"]
                if partition.get("records") is not None]
    return out


def _throttle_merge(seconds: float) -> Callable[[dict], None]:
    def merge(response: dict) -> None:
        response["throttle_time_ms"] = max(response.get("throttle_time_ms") or 0, int(seconds * 1000))
    return merge


# What handling a request frame comes to: forward it as it is (None), forward these bytes instead
# (bytes), nothing more to send upstream (DONE), or first wait for this (a coroutine that returns
# one of the others).
DONE = object()
_DECODE = object()  # the Produce or Fetch hot path could not decide: decode the request whole
_WAIT = object()  # a frame that arrived while earlier ones wait: it waits behind them
Outcome = Union[None, bytes, object, Coroutine[Any, Any, Any]]
# Responses that carry records to the client: masked and charged to consume limits alike.
RECORDS_OUT = frozenset({apis.FETCH, apis.SHARE_FETCH})
# Requests a client may send before it has authenticated; anything else closes the connection.
BEFORE_AUTHENTICATION = frozenset({apis.API_VERSIONS, apis.SASL_HANDSHAKE, apis.SASL_AUTHENTICATE})


class ClientConnection(asyncio.BufferedProtocol):
    """The client's side. `node_id` is None on the bootstrap port, else the broker it stands for.

    The upstream connection is opened only once the client has authenticated, so a client that
    cannot log in never makes the gateway reach the broker.
    """

    def __init__(self, adapter: KafkaAdapter, node_id: int | None) -> None:
        self._adapter = adapter
        self._pipeline = adapter.pipeline
        self._node_id = node_id
        self._buffer = FrameBuffer(CLIENT_BUFFER)
        self._scanner = RequestScanner(adapter.versions.flexible_from, adapter.config.max_frame_bytes)
        self._in_flight: collections.deque[InFlight] = collections.deque()
        self._upstream: UpstreamConnection | None = None
        self._opening: asyncio.Task | None = None
        self._held: list[bytes | bytearray] = []  # for the upstream, until it is ready
        self._held_bytes = 0
        # Frames waiting behind one that needs to wait (authentication, unknown topic ids).
        self._backlog: collections.deque[tuple[bytes, tuple]] = collections.deque()
        self._working: asyncio.Task | None = None
        self._transport: asyncio.Transport | None = None
        self._closed = False
        self._draining = False
        self._reading_paused = False
        self._idle = asyncio.Event()
        self._expiry: asyncio.TimerHandle | None = None
        # Responses held for a throttle: (monotonic release time, chunks), in client order.
        self._held_out: collections.deque[tuple[float, list]] = collections.deque()
        self._muted_until = 0.0  # reading paused for a throttle (acks=0 produces) until then
        self._upstream_full = False
        self._audit = adapter.pipeline.audit  # the audit bus, or None
        self._auditing: dict | None = None  # the audit event of the request being handled
        self._audited = 0  # requests given an audit event: the next one's seq
        self.session: Session
        self._login: ClientLogin

    # -- lifecycle ---------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("sockname")
        self.session = Session(peer=_peer(transport), listener=f"{sock[0]}:{sock[1]}")
        self.session.close = lambda reason: self.close(reason, level=logging.WARNING)
        self._login = ClientLogin(self._adapter, self.session, tls=transport.get_extra_info("sslcontext") is not None)
        self._adapter.connections.add(self)
        self._idle.set()
        if self._audit is not None:
            session = self.session
            self._audit.emit(events.session_start(session.id, "kafka", session.peer, session.listener,
                                                  session.started))
        certificate = transport.get_extra_info("peercert")
        if certificate:
            try:
                identity = self._login.from_certificate(certificate)
            except AuthenticationFailed as err:
                self._audit_login(None, "mTLS", f"client certificate refused: {err.detail}")
                self.close(f"client certificate refused: {err.detail}", level=logging.WARNING)
                return
            self._authenticated(identity)

    def _authenticated(self, identity: Identity) -> None:
        first = self.session.identity is None
        self._pipeline.authenticated(self.session, identity)
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None
        expires = self._login.session_expiry
        if expires is not None:
            self._expiry = asyncio.get_running_loop().call_later(
                max(0.0, expires - time.time()), self.close,
                "session expired without re-authentication", logging.INFO)
        log.info("%s: logged in%s", self.session, "" if first else " again")
        self._audit_login(identity.subject, identity.mechanism, None)
        if first:
            self._opening = asyncio.get_running_loop().create_task(self._open_upstream())

    async def _open_upstream(self) -> None:
        try:
            upstream = await self._adapter.open_upstream(self._node_id)
        except BrokerGuardError as err:
            self.close(str(err), level=logging.WARNING)
            return
        except Exception:
            log.exception("%s: opening the upstream connection failed", self.session)
            self.close("internal error while opening the upstream connection")
            return
        if self._closed:
            upstream.close()
            return
        upstream.attach(self)
        self._upstream = upstream
        if self._held:
            upstream.transport.writelines(self._held)
        self._held.clear()
        self._held_bytes = 0
        if self._reading_paused and not self._draining and self._working is None:
            self._resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        self.close("client closed the connection" if exc is None else f"client connection lost: {exc}",
                   level=logging.DEBUG)

    def close(self, reason: str, level: int = logging.INFO) -> None:
        if self._closed:
            return
        self._closed = True
        log.log(level, "%s closed: %s", self.session, reason)
        if self._audit is not None:
            session = self.session
            subject = session.identity.subject if session.identity is not None else None
            self._audit.emit(events.session_end(session.id, subject, reason, session.requests, session.bytes_in,
                                                session.bytes_out, session.started))
        self._adapter.connections.discard(self)
        self._pipeline.ended(self.session)
        if self._expiry is not None:
            self._expiry.cancel()
        if self._transport is not None:
            if self._held_out and not self._transport.is_closing():
                self._transport.writelines([chunk for _, chunks in self._held_out for chunk in chunks])
            self._held_out.clear()
            self._transport.close()
        if self._upstream is not None:
            self._upstream.close()
        elif self._opening is not None and not self._opening.done():
            self._opening.cancel()
        if self._working is not None and self._working is not asyncio.current_task():
            self._working.cancel()
        self._backlog.clear()
        if self._audit is not None:
            for request in self._in_flight:
                if request.audit is not None:
                    self._audit.emit(audit.finish(request.audit, outcome="unanswered"))
        self._in_flight.clear()
        self._idle.set()

    async def drain(self) -> None:
        """Stop reading requests; return once every request already read has its response."""
        self._draining = True
        self._pause_reading()
        if self._in_flight or self._backlog:
            self._idle.clear()
        await self._idle.wait()
        self.close("gateway shutting down")

    # -- requests: client -> upstream ----------------------------------------------------------

    def get_buffer(self, sizehint: int) -> memoryview:
        return self._buffer.writable()

    def buffer_updated(self, nbytes: int) -> None:
        buffer = self._buffer
        buffer.end += nbytes
        try:
            frames, consumed_to, pending = self._scanner.scan(buffer.buf, 0, buffer.end)
        except FrameError as err:
            self.close(f"bad request frame: {err}", level=logging.WARNING)
            return
        if frames:
            self._route(frames, consumed_to)
        buffer.settle(consumed_to, pending)

    def _route(self, frames: list, consumed_to: int) -> None:
        """Handle the complete frames of one read in order. Frames forwarded unchanged are sent as
        one run of bytes; once a frame must wait, it and every later one wait in the backlog."""
        session = self.session
        session.requests += len(frames)
        session.bytes_in += consumed_to
        data = self._buffer.buf
        segment = 0  # start of the bytes not yet forwarded or dropped
        for index, frame in enumerate(frames):
            start, end = frame[0], frame[1]
            if self._working is not None or (self._audit is not None and not self._audit.accepting):
                outcome: Outcome = _WAIT  # behind earlier frames, or fail-closed auditing
            else:
                outcome = self._handle(data, frame)
            if outcome is None:
                continue
            self._forward(segment, start)
            segment = end
            if self._closed:
                return
            if outcome.__class__ is bytes:
                self._send_upstream(outcome)
            elif outcome is not DONE:
                self._wait(None if outcome is _WAIT else outcome, data, frames[index:], consumed_to)
                return
        self._forward(segment, consumed_to)

    def _handle(self, data: bytearray | bytes, frame: tuple) -> Outcome:
        start, end, api_key, api_version, correlation_id, expects_response = frame
        if api_key in BEFORE_AUTHENTICATION:
            return self._handle_login(data, frame)
        if self.session.identity is None:
            name = codec.API_KEYS[api_key].name if api_key in codec.API_KEYS else f"API key {api_key}"
            self.close(f"{name} request before authentication", level=logging.WARNING)
            return DONE
        if self._audit is None:
            return self._handle_request(data, frame)
        self._audited += 1
        self._auditing = event = audit.start(self.session, self._audited, api_key, api_version, correlation_id)
        try:
            outcome = self._handle_request(data, frame)
        finally:
            self._auditing = None
        if not expects_response and not asyncio.iscoroutine(outcome):
            self._audit.emit(audit.finish(event, outcome="no_response"))
        return outcome

    def _handle_request(self, data: bytearray | bytes, frame: tuple) -> Outcome:
        """A request of an authenticated client: decided, then forwarded or answered."""
        start, end, api_key, api_version, correlation_id, expects_response = frame
        if (api_key == apis.PRODUCE and 3 <= api_version <= PRODUCE_LAST_VERSION
                or api_key == apis.FETCH and fetchrequest.FIRST <= api_version <= fetchrequest.LAST):
            outcome = self._produce(data, frame) if api_key == apis.PRODUCE else self._fetch(data, frame)
            if outcome is not _DECODE:
                return outcome
            if self._auditing is not None:
                self._auditing["operations"].clear()  # decided again below, from the decoded request
        try:
            payload = bytes(memoryview(data)[start + 4 : end])
            header = codec.decode_request_header(payload)
            # The broker ignores bytes after a request body, and librdkafka 2.x sends some after
            # Metadata v13: read requests exactly as the broker will.
            body = codec.decode_request(api_key, api_version, payload, header.body_offset, trailing=True)
        except codec.DecodeError as err:
            self.close(f"bad request: {err}", level=logging.WARNING)
            return DONE
        self.session.client_id_is(header.client_id)
        names = self._adapter.topic_names
        if any(names.name(i) is None for i in authorize.topic_ids(api_key, api_version, body)):
            return self._after_resolving(frame, payload, header, body, self._auditing)
        return self._authorize(frame, payload, header, body)

    def _decider(self, obligations: dict[tuple[str, str], Obligations]) -> authorize.Decide:
        """The pipeline's decisions, noting the obligations of each allowed topic in `obligations`
        and each decision in the request's audit event."""
        pipeline, session, event = self._pipeline, self.session, self._auditing

        def decide(action: str, resource: Resource) -> Decision:
            decision = pipeline.decide(session, action, resource)
            if event is not None:
                audit.record_decision(event, action, resource, decision)
                if session.client_id and "client_id" not in event:  # read with this request's header
                    event["client_id"] = session.client_id
            if decision.obligations is not None and resource.kind == "topic" and decision.allowed:
                obligations[(action, resource.name)] = decision.obligations
            return decision

        return decide

    def _produce(self, data: bytearray | bytes, frame: tuple) -> Outcome:
        """The hot path: read a Produce request without its records and decide it. Every part
        allowed and no obligation: forwarded as it is. Obligations: only the partitions of those
        topics are read. A denied part, or bytes this reader refuses: _DECODE, for the codec."""
        start, end, _, version, correlation_id, expects_response = frame
        spans: list[tuple[str, int, int, int]] = []
        try:
            client_id, body = read_produce_request(data, start, end, spans)
        except ValueError:
            return _DECODE  # the codec's decoding names what is wrong
        self.session.client_id_is(client_id)
        obligations: dict[tuple[str, str], Obligations] = {}
        plan = authorize.plan(apis.PRODUCE, version, body, self._decider(obligations), self._adapter.topic_names)
        if self._auditing is not None:
            audit.note_refusals(self._auditing, plan.denied)
        if plan.forward is None or plan.changed or plan.merge is not None:
            return _DECODE
        view = memoryview(data)
        by_topic = {name: o for (action, name), o in obligations.items() if action == "produce"}
        if not obligations:
            if self._auditing is not None:
                self._audit_payload(((t, i, view[a:b]) for t, i, a, b in spans), by_topic, refused=False)
            if expects_response:
                self._in_flight.append(InFlight(correlation_id, apis.PRODUCE, version, audit=self._auditing))
            return None
        throttle = self._charge_produce(by_topic, ((t, view[a:b]) for t, _, a, b in spans))
        checked = content.check_produce(((t, i, view[a:b]) for t, i, a, b in spans), by_topic,
                                        self._pipeline.config.content.max_uncompressed_bytes)
        if self._auditing is not None:
            self._audit_payload(((t, i, view[a:b]) for t, i, a, b in spans), by_topic,
                                refused=bool(checked.refused or checked.dead))
        if not checked.changed:
            if expects_response:
                self._in_flight.append(InFlight(correlation_id, apis.PRODUCE, version, throttle_s=throttle,
                                                merge=_throttle_merge(throttle) if throttle else None,
                                                audit=self._auditing))
            elif throttle:
                self._mute(throttle)
            return None
        payload = bytes(view[start + 4 : end])
        header = codec.decode_request_header(payload)
        full = codec.decode_request(apis.PRODUCE, version, payload, header.body_offset, trailing=True)
        return self._forward_checked(frame, payload[: header.body_offset], full, checked, None, throttle)

    def _forward_checked(self, frame: tuple, header: bytes, body: dict, checked: content.ProduceContent,
                         merge: Callable[[dict], None] | None, throttle: float) -> Outcome:
        """Forward a Produce whose records content checks changed; answer what they refused."""
        _, _, _, version, correlation_id, expects_response = frame
        for (topic, index), answer in checked.refused.items():
            log.info("%s: produce to %s-%d refused: %s", self.session, topic, index, answer["error_message"])
        try:
            forward = content.rewrite_produce(body, checked)
        except ValueError as err:
            self.close(f"bad request: {err}", level=logging.WARNING)
            return DONE
        steps = [merge, content.produce_merge(checked, version), _throttle_merge(throttle) if throttle else None]
        if forward is None:
            if expects_response:
                answer = answers.answer(apis.PRODUCE, version)
                chain(steps)(answer)
                self._audit_answered(answer, throttle)
                self._answer(InFlight(correlation_id, apis.PRODUCE, version, throttle_s=throttle,
                                      local=response_frame(correlation_id, apis.PRODUCE, version, answer)))
            elif throttle:
                self._mute(throttle)
            return DONE
        if expects_response:
            self._in_flight.append(InFlight(correlation_id, apis.PRODUCE, version, merge=chain(steps),
                                            throttle_s=throttle, audit=self._auditing))
        elif throttle:
            self._mute(throttle)
        return request_frame(header, codec.encode_request(apis.PRODUCE, version, forward))

    def _charge_produce(self, obligations: dict[str, Obligations], records) -> float:
        """Charge a Produce's records to the limits of their topics; the throttle in seconds."""
        throttle = 0.0
        subject = self.session.identity.subject  # type: ignore[union-attr]
        limiter = self._pipeline.limiter
        for topic, view in records:
            wanted = obligations.get(topic)
            if wanted is not None and wanted.limits:
                throttle = max(throttle, limiter.charge(subject, topic, wanted.limits, 1,
                                                        content.batch_counts(view), len(view)))
        return throttle

    async def _after_resolving(self, frame: tuple, payload: bytes, header: codec.RequestHeader, body: dict,
                               event: dict | None) -> Outcome:
        await self._adapter.directory.refresh()  # learns every topic id the cluster has
        self._auditing = event
        try:
            outcome = self._authorize(frame, payload, header, body)
        finally:
            self._auditing = None
        if event is not None and not frame[5]:
            self._audit.emit(audit.finish(event, outcome="no_response"))  # type: ignore[union-attr]
        return outcome

    def _authorize(self, frame: tuple, payload: bytes, header: codec.RequestHeader, body: dict) -> Outcome:
        _, _, api_key, api_version, correlation_id, expects_response = frame
        session = self.session
        obligations: dict[tuple[str, str], Obligations] = {}
        plan = authorize.plan(api_key, api_version, body, self._decider(obligations), self._adapter.topic_names)
        if self._auditing is not None:
            audit.note_refusals(self._auditing, plan.denied)
        for action, resource, decision in plan.denied:
            log.info("%s: %s on %s %s refused by %s: %s", session, action, resource.kind,
                     resource.name, decision.source, decision.reason)
        if plan.forward is None:
            if expects_response:
                self._audit_answered(plan.response, 0.0)
                self._answer(InFlight(correlation_id, api_key, api_version,
                                      local=response_frame(correlation_id, api_key, api_version, plan.response)))
            return DONE
        if api_key == apis.PRODUCE and self._auditing is not None:
            allowed = {name: o for (action, name), o in obligations.items() if action == "produce"}
            self._audit_payload(_produce_partitions(body, self._adapter.topic_names), allowed,
                                refused=bool(plan.denied))
        if obligations and api_key == apis.PRODUCE:
            by_topic = {name: o for (action, name), o in obligations.items() if action == "produce"}
            partitions = _produce_partitions(plan.forward, self._adapter.topic_names)
            throttle = self._charge_produce(by_topic, ((t, memoryview(r)) for t, _, r in partitions))
            checked = content.check_produce(partitions, by_topic, self._pipeline.config.content.max_uncompressed_bytes)
            if checked.changed or throttle:
                return self._forward_checked(frame, payload[: header.body_offset], plan.forward, checked,
                                             plan.merge, throttle)
        request = InFlight(correlation_id, api_key, api_version, merge=plan.merge, audit=self._auditing)
        if obligations and api_key in RECORDS_OUT:
            self._oblige_records_out(request, obligations)
        if expects_response:
            self._in_flight.append(request)
        if not plan.changed:
            return None
        return request_frame(payload[: header.body_offset], codec.encode_request(api_key, api_version, plan.forward))

    def _fetch(self, data: bytearray | bytes, frame: tuple) -> Outcome:
        """The hot path of consumers: a Fetch read for its topics alone and decided. Every topic
        allowed: forwarded as it is, its records masked on the way back where the rules say. A
        denied topic, an unknown topic id, or bytes this reader leaves to the codec: _DECODE."""
        start, end, _, version, correlation_id, expects_response = frame
        try:
            client_id, body = fetchrequest.read(data, start, end)
        except ValueError:
            return _DECODE
        names = self._adapter.topic_names
        # The reader's topics hold a name or an id and nothing else: no need for the generic
        # authorize.topic_ids walk (about 9 µs a request) to find the ids.
        if any("topic_id" in topic and names.name(topic["topic_id"]) is None for topic in body["topics"]):
            return _DECODE  # the codec's path learns the cluster's topic ids first
        self.session.client_id_is(client_id)
        obligations: dict[tuple[str, str], Obligations] = {}
        plan = authorize.plan(apis.FETCH, version, body, self._decider(obligations), names)
        if plan.forward is None or plan.changed or plan.merge is not None or plan.denied:
            return _DECODE
        request = InFlight(correlation_id, apis.FETCH, version, audit=self._auditing)
        if obligations:
            self._oblige_records_out(request, obligations)
        if expects_response:
            self._in_flight.append(request)
        return None

    def _oblige_records_out(self, request: InFlight, obligations: dict[tuple[str, str], Obligations]) -> None:
        """The records a Fetch (or ShareFetch) brings back masked and charged to the consume
        limits as the obligations of its topics say: in the response frame itself where only
        masking applies, else through the decoded response."""
        by_topic = {name: o for (action, name), o in obligations.items() if action == "consume"}
        version = request.api_version
        if (request.merge is None and request.api_key == apis.FETCH
                and fetchrecords.FIRST <= version <= fetchrecords.LAST
                and (apis.FETCH, version) not in self._adapter.decoded_responses
                and not any(o.limits for o in by_topic.values())):
            request.recast = self._fetch_recast(by_topic, version)
        else:
            request.merge = chain([self._fetch_merge(by_topic, request), request.merge])

    def _fetch_recast(self, obligations: dict[str, Obligations],
                      version: int) -> Callable[[memoryview], tuple[list | None, bool]] | None:
        """Masks the fetched records of topics with a mask obligation in the response frame
        itself: what _fetch_merge does when nothing else needs the response decoded."""
        masks = {topic: o.mask for topic, o in obligations.items() if o.mask is not None}
        if not masks:
            return None
        names = self._adapter.topic_names
        max_uncompressed = self._pipeline.config.content.max_uncompressed_bytes
        unmaskable = self._unmaskable

        def topic_name(topic: str | bytes) -> str | None:
            return topic if type(topic) is str else names.name(topic)

        def recast(frame: memoryview) -> tuple[list | None, bool]:
            return content.mask_fetch_frame(frame, version, masks, topic_name, max_uncompressed, unmaskable)

        return recast

    def _unmaskable(self, topic: str, where: object, reason: str) -> None:
        log.warning("%s: a record of %s (%s) could not be masked and was withheld: %s",
                    self.session, topic, where, reason)

    def _fetch_merge(self, obligations: dict[str, Obligations], request: InFlight) -> Callable[[dict], None]:
        """Masks the fetched records of topics with a mask obligation and charges what the
        response delivers to the consume limits, holding the response for the throttle."""
        masks = {topic: o.mask for topic, o in obligations.items() if o.mask is not None}
        limited = {topic: o.limits for topic, o in obligations.items() if o.limits}
        names = self._adapter.topic_names
        session = self.session
        max_uncompressed = self._pipeline.config.content.max_uncompressed_bytes
        limiter = self._pipeline.limiter

        def topic_name(entry: dict) -> str | None:
            name = entry.get("topic")
            return name if name is not None else names.name(entry["topic_id"])

        def merge(response: dict) -> None:
            if masks:
                content.mask_fetch(response, masks, topic_name, max_uncompressed, self._unmaskable)
            if limited:
                subject = session.identity.subject  # type: ignore[union-attr]
                for topic, (records, size) in content.fetch_usage(response, topic_name).items():
                    if topic in limited:
                        request.throttle_s = max(request.throttle_s,
                                                 limiter.charge(subject, topic, limited[topic], 1, records, size))
                if request.throttle_s:
                    _throttle_merge(request.throttle_s)(response)

        return merge

    def _handle_login(self, data: bytearray | bytes, frame: tuple) -> Outcome:
        start, end, api_key, api_version, correlation_id, expects_response = frame
        payload = bytes(memoryview(data)[start + 4 : end])
        try:
            if api_key == apis.API_VERSIONS:
                answer = self._login.api_versions(api_version, correlation_id, payload)
            elif api_key == apis.SASL_HANDSHAKE:
                answer = self._login.handshake(api_version, correlation_id, payload)
            else:
                return self._authenticate(api_version, correlation_id, payload)
        except BrokerGuardError as err:
            self.close(str(err), level=logging.WARNING)
            return DONE
        if answer.__class__ is not bytes:
            return self._answer_later(api_key, api_version, correlation_id, answer)
        self._answer(InFlight(correlation_id, api_key, api_version, local=answer))
        if self._login.failed:
            self._audit_login(None, "SASL", self._login.failed)
            self.close(self._login.failed, level=logging.WARNING)
        return DONE

    async def _answer_later(self, api_key: int, api_version: int, correlation_id: int,
                            answer: Coroutine[Any, Any, bytes]) -> Outcome:
        try:
            local = await answer
        except BrokerGuardError as err:
            self.close(str(err), level=logging.WARNING)
            return DONE
        self._answer(InFlight(correlation_id, api_key, api_version, local=local))
        return DONE

    async def _authenticate(self, api_version: int, correlation_id: int, payload: bytes) -> Outcome:
        try:
            answer, identity = await self._login.authenticate(api_version, correlation_id, payload)
        except BrokerGuardError as err:
            self.close(str(err), level=logging.WARNING)
            return DONE
        if identity is not None:
            self._authenticated(identity)
        self._answer(InFlight(correlation_id, apis.SASL_AUTHENTICATE, api_version, local=answer))
        if self._login.failed:
            self._audit_login(None, "SASL", self._login.failed)
            self.close(self._login.failed, level=logging.WARNING)
        return DONE

    # -- frames that must wait -----------------------------------------------------------------

    def _wait(self, first: Coroutine | None, data: bytearray, frames: list, consumed_to: int) -> None:
        """Keep `frames` (copied out of the read buffer) until `first` is done, reading nothing
        more meanwhile; then handle them in order."""
        base = frames[0][0]
        kept = bytes(memoryview(data)[base:consumed_to])
        for frame in frames:
            self._backlog.append((kept, (frame[0] - base, frame[1] - base, *frame[2:])))
        self._idle.clear()
        self._pause_reading()
        if self._working is None:
            self._working = asyncio.get_running_loop().create_task(self._work(first))

    async def _work(self, first: Coroutine | None) -> None:
        try:
            backlog = self._backlog
            pending = first
            while backlog and not self._closed:
                data, frame = backlog[0]
                if self._audit is not None and not self._audit.accepting:
                    await self._audit.caught_up()
                    continue
                outcome = pending if pending is not None else self._handle(data, frame)
                pending = None
                if outcome is not None and outcome is not DONE and outcome.__class__ is not bytes:
                    outcome = await outcome
                if self._closed:
                    return
                backlog.popleft()
                if outcome is None:
                    self._send_upstream(data[frame[0] : frame[1]])
                elif outcome.__class__ is bytes:
                    self._send_upstream(outcome)
        except Exception:
            log.exception("%s: internal error while handling a request", self.session)
            self.close("internal error")
            return
        finally:
            self._working = None
        if not self._in_flight:
            self._idle.set()
        if not self._draining and self._held_bytes <= MAX_HELD_BYTES:
            self._resume_reading()

    # -- sending -------------------------------------------------------------------------------

    def _forward(self, start: int, end: int) -> None:
        if start == end:
            return
        self._send_upstream(self._buffer.take(start, end))

    def _send_upstream(self, data: bytes | bytearray) -> None:
        if self._upstream is not None:
            self._upstream.transport.write(data)
            return
        self._held.append(data)
        self._held_bytes += len(data)
        if self._held_bytes > MAX_HELD_BYTES:
            self._pause_reading()

    def _answer(self, request: InFlight) -> None:
        """Queue an answer the gateway made itself; it leaves when every earlier response has."""
        self._in_flight.append(request)
        out: list = []
        self._flush_local(out)
        if out and not self._closed:
            self._write_out(out)
        if not self._in_flight and not self._backlog:
            self._idle.set()

    def _flush_local(self, out: list) -> None:
        """Move the gateway's own answers now at the head of the FIFO to `out`; one held for a
        throttle sends what came before it and holds itself and the rest."""
        in_flight = self._in_flight
        while in_flight and in_flight[0].local is not None:
            request = in_flight.popleft()
            if request.throttle_s:
                self._write_out(out)
                out.clear()
                self._write_out([request.local], time.monotonic() + request.throttle_s)
            else:
                out.append(request.local)

    def _write_out(self, chunks: list, release_at: float = 0.0) -> None:
        """Write to the client now, or at `release_at`; nothing overtakes what is held."""
        if not chunks or self._closed:
            return
        held = self._held_out
        if not held and release_at <= time.monotonic():
            self._transport.writelines(chunks)
            return
        if held and release_at <= held[-1][0]:
            held[-1][1].extend(chunks)
            return
        held.append((release_at, list(chunks)))
        asyncio.get_running_loop().call_later(max(0.0, release_at - time.monotonic()), self._release)

    def _release(self) -> None:
        held = self._held_out
        now = time.monotonic() + 0.001
        while held and held[0][0] <= now and not self._closed:
            self._transport.writelines(held.popleft()[1])

    # -- responses: upstream -> client ---------------------------------------------------------

    def deliver(self, frames: list, consumed_to: int, source: UpstreamConnection) -> None:
        """Called by the upstream side with the complete response frames of one read."""
        in_flight = self._in_flight
        adapter = self._adapter
        decoded = adapter.decoded_responses
        out: list = []
        segment = 0
        for frame_start, frame_end, correlation_id in frames:
            if not in_flight or in_flight[0].local is not None:
                raise ProtocolError(source.peer, f"response {correlation_id} to no request")
            request = in_flight.popleft()
            if request.correlation_id != correlation_id:
                raise ProtocolError(
                    source.peer, f"response {correlation_id} out of order: expected {request.correlation_id}")
            if request.recast is not None:
                rewritten = self._recast(request, source.frame(frame_start, frame_end))
                if rewritten is not None:  # else the broker's bytes go on with the rest of the read
                    out.append(source.take(segment, frame_start))
                    out += rewritten
                    segment = frame_end
            elif request.merge is not None or (request.api_key, request.api_version) in decoded:
                rewritten = adapter.rewriter.response(request.api_key, request.api_version,
                                                      source.frame(frame_start, frame_end), request.merge,
                                                      self._audit_response(request))
                out.append(source.take(segment, frame_start))
                if request.throttle_s:
                    self._count_out(out)
                    self._write_out(out)
                    out = []
                    self._write_out([rewritten], time.monotonic() + request.throttle_s)
                else:
                    out.append(rewritten)
                segment = frame_end
            elif request.audit is not None:
                errors = audit.response_errors(request.api_key, request.api_version,
                                               source.frame(frame_start, frame_end))
                self._audit.emit(audit.finish(request.audit, errors=errors,  # type: ignore[union-attr]
                                              outcome=None if errors is not None else "unreadable_response"))
            if in_flight and in_flight[0].local is not None:
                out.append(source.take(segment, frame_end))
                segment = frame_end
                self._flush_local(out)
        out.append(source.take(segment, consumed_to))
        self._count_out(out)
        self._write_out(out)
        if not in_flight and not self._backlog:
            self._idle.set()

    def _recast(self, request: InFlight, frame: memoryview) -> list | None:
        """A response frame rewritten undecoded by request.recast, as chunks (None: unchanged),
        its audit event finished."""
        try:
            rewritten, clean = request.recast(frame)  # type: ignore[misc]
        except ValueError as err:
            raise ProtocolError("upstream", f"bad Fetch response: {err}") from err
        if request.audit is not None:
            errors = {} if clean else audit.response_errors(
                request.api_key, request.api_version, frame if rewritten is None else memoryview(b"".join(rewritten)))
            self._audit.emit(audit.finish(request.audit, errors=errors,  # type: ignore[union-attr]
                                          outcome=None if errors is not None else "unreadable_response"))
        return rewritten

    # -- the audit trail -----------------------------------------------------------------------

    def _audit_login(self, subject: str | None, mechanism: str, failure: str | None) -> None:
        if self._audit is not None:
            self._audit.emit(events.login(self.session.id, subject, mechanism, failure is None, failure,
                                          peer=self.session.peer))

    def _audit_payload(self, partitions, obligations: dict[str, Obligations], refused: bool) -> None:
        """Keep a Produce's records in its audit event, as much as the rules and config say."""
        event = self._auditing
        assert event is not None
        settings = self._pipeline.config.audit
        levels = [settings.capture_refused if refused else settings.capture,
                  *(o.capture for o in obligations.values() if o.capture)]
        level = max(levels, key=events.CAPTURES.index)
        if level != "none":
            masks = {topic: o.mask for topic, o in obligations.items() if o.mask is not None}
            event["payload"] = audit.produce_payload(level, partitions, masks,
                                                     self._pipeline.config.content.max_uncompressed_bytes,
                                                     settings.digest)

    def _audit_answered(self, body: dict, throttle_s: float) -> None:
        """The request being handled is answered by the gateway itself with body."""
        if self._auditing is not None:
            self._audit.emit(audit.finish(self._auditing, outcome="refused",  # type: ignore[union-attr]
                                          errors=audit.errors_of(body), throttle_s=throttle_s))
            self._auditing = None

    def _audit_response(self, request: InFlight) -> Callable[[dict], None] | None:
        """What reads the decoded response for the request's audit event, if it has one."""
        event = request.audit
        if event is None:
            return None
        bus = self._audit

        def observe(body: dict) -> None:
            bus.emit(audit.finish(event, errors=audit.errors_of(body),  # type: ignore[union-attr]
                                  throttle_s=request.throttle_s))

        return observe

    def _count_out(self, out: list) -> None:
        out[:] = [chunk for chunk in out if chunk]
        self.session.bytes_out += sum(map(len, out))

    # -- flow control --------------------------------------------------------------------------

    def _pause_reading(self) -> None:
        if not self._reading_paused and not self._closed:
            self._reading_paused = True
            self._transport.pause_reading()

    def _resume_reading(self) -> None:
        if self._reading_paused and not self._closed and time.monotonic() >= self._muted_until:
            self._reading_paused = False
            self._transport.resume_reading()

    def _mute(self, seconds: float) -> None:
        """Read nothing from this client for `seconds`: the throttle of a request that gets no
        response (acks=0) to hold back instead."""
        self._muted_until = max(self._muted_until, time.monotonic() + seconds)
        self._pause_reading()
        asyncio.get_running_loop().call_later(seconds, self._unmute)

    def _unmute(self) -> None:
        if (not self._draining and not self._upstream_full and self._held_bytes <= MAX_HELD_BYTES
                and self._working is None):
            self._resume_reading()

    def pause_writing(self) -> None:  # the client reads slower than the broker answers
        if self._upstream is not None:
            self._upstream.pause_reading()

    def resume_writing(self) -> None:
        if self._upstream is not None:
            self._upstream.resume_reading()

    def upstream_paused_writing(self) -> None:  # the broker reads slower than the client sends
        self._upstream_full = True
        self._pause_reading()

    def upstream_resumed_writing(self) -> None:
        self._upstream_full = False
        if not self._draining and self._held_bytes <= MAX_HELD_BYTES and self._working is None:
            self._resume_reading()


class UpstreamConnection(asyncio.BufferedProtocol):
    """The broker's side, opened with the gateway's credentials.

    Before attach() it serves the gateway's own requests (SASL login, metadata) through call();
    after, every response frame goes to its client connection.
    """

    def __init__(self, adapter: KafkaAdapter) -> None:
        self._adapter = adapter
        self._buffer = FrameBuffer(UPSTREAM_BUFFER, trusted=True)
        self._scanner = ResponseScanner(adapter.config.max_response_bytes)
        self._client: ClientConnection | None = None
        self._calls: dict[int, asyncio.Future] = {}
        self._next_correlation_id = 0
        self.transport: asyncio.Transport
        self.peer = "?"
        self._closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.peer = _peer(transport)

    def attach(self, client: ClientConnection) -> None:
        self._client = client

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        error = ProtocolError(self.peer, "the broker closed the connection" if exc is None else f"lost: {exc}")
        for future in self._calls.values():
            if not future.done():
                future.set_exception(error)
        self._calls.clear()
        if self._client is not None:
            self._client.close(f"upstream {self.peer}: {'closed' if exc is None else exc}")

    # -- the gateway's own requests ------------------------------------------------------------

    def call(self, request: bytes) -> asyncio.Future:
        """Send one request frame body (header included, size excluded); the future gets the
        response frame's payload after the size."""
        correlation_id = int.from_bytes(request[4:8], "big", signed=True)
        future = asyncio.get_running_loop().create_future()
        self._calls[correlation_id] = future
        self.transport.write(len(request).to_bytes(4, "big") + request)
        return future

    def next_correlation_id(self) -> int:
        self._next_correlation_id += 1
        return self._next_correlation_id

    # -- reading -------------------------------------------------------------------------------

    def get_buffer(self, sizehint: int) -> memoryview:
        return self._buffer.writable()

    def buffer_updated(self, nbytes: int) -> None:
        buffer = self._buffer
        buffer.end += nbytes
        try:
            frames, consumed_to, pending = self._scanner.scan(buffer.buf, 0, buffer.end)
            if frames:
                if self._client is not None:
                    self._client.deliver(frames, consumed_to, self)
                else:
                    self._answer_calls(frames)
        except (FrameError, ProtocolError) as err:
            message = f"bad response from upstream {self.peer}: {err}"
            if self._client is not None:
                self._client.close(message, level=logging.ERROR)
            else:
                log.error("%s", message)
            self.close()
            return
        buffer.settle(consumed_to, pending)

    def frame(self, start: int, end: int) -> memoryview:
        return memoryview(self._buffer.buf)[start:end]

    def take(self, start: int, end: int) -> bytes | bytearray:
        return self._buffer.take(start, end) if end > start else b""

    def _answer_calls(self, frames: list) -> None:
        for frame_start, frame_end, correlation_id in frames:
            future = self._calls.pop(correlation_id, None)
            if future is None:
                raise ProtocolError(self.peer, f"response {correlation_id} to no request")
            if not future.done():
                future.set_result(bytes(self.frame(frame_start + 4, frame_end)))

    # -- flow control --------------------------------------------------------------------------

    def pause_reading(self) -> None:
        if not self._closed:
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if not self._closed:
            self.transport.resume_reading()

    def pause_writing(self) -> None:
        if self._client is not None:
            self._client.upstream_paused_writing()

    def resume_writing(self) -> None:
        if self._client is not None:
            self._client.upstream_resumed_writing()
