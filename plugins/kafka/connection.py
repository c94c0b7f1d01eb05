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
  write per read, whatever the number of frames in it. Only requests with a denied part, and
  responses that carry broker addresses or must hide or add entries, are encoded again.
- A request that must wait (authentication, topic ids to look up) holds every later request of
  the connection behind it, so the broker sees them in the client's order.
- Backpressure both ways: when one side's write buffer is full, the other side stops reading.
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

from brokerguard._native import FrameError, RequestScanner, ResponseScanner
from brokerguard.errors import BrokerGuardError, ProtocolError
from brokerguard.identity import AuthenticationFailed, Identity
from brokerguard.session import Session

from . import apis, authorize, produce
from .framebuffer import FrameBuffer
from .login import ClientLogin
from .protocol import codec
from .rewrite import request_frame, response_frame

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
    `merge` edits the broker's decoded response before it goes back (denied parts, hidden ones)."""

    __slots__ = ("correlation_id", "api_key", "api_version", "local", "merge")

    def __init__(self, correlation_id: int, api_key: int, api_version: int, local: bytes | None = None,
                 merge: Callable[[dict], None] | None = None):
        self.correlation_id = correlation_id
        self.api_key = api_key
        self.api_version = api_version
        self.local = local
        self.merge = merge


# What handling a request frame comes to: forward it as it is (None), forward these bytes instead
# (bytes), nothing more to send upstream (DONE), or first wait for this (a coroutine that returns
# one of the others).
DONE = object()
_WAIT = object()  # a frame that arrived while earlier ones wait: it waits behind them
Outcome = Union[None, bytes, object, Coroutine[Any, Any, Any]]
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
        certificate = transport.get_extra_info("peercert")
        if certificate:
            try:
                identity = self._login.from_certificate(certificate)
            except AuthenticationFailed as err:
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
        self._adapter.connections.discard(self)
        self._pipeline.ended(self.session)
        if self._expiry is not None:
            self._expiry.cancel()
        if self._transport is not None:
            self._transport.close()
        if self._upstream is not None:
            self._upstream.close()
        elif self._opening is not None and not self._opening.done():
            self._opening.cancel()
        if self._working is not None and self._working is not asyncio.current_task():
            self._working.cancel()
        self._backlog.clear()
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
            if self._working is not None:
                outcome: Outcome = _WAIT
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
        if api_key == apis.PRODUCE and 3 <= api_version <= produce.LAST_VERSION:
            if self._produce_allowed(data, frame):
                return None
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
            return self._after_resolving(frame, payload, header, body)
        return self._authorize(frame, payload, header, body)

    def _produce_allowed(self, data: bytearray | bytes, frame: tuple) -> bool:
        """The hot path: read a Produce request without its records. True when every part is
        allowed (it is then forwarded as it is); False: decode it whole, to split or refuse it."""
        try:
            client_id, body = produce.read(data, frame[0], frame[1])
        except ValueError:
            return False  # the codec's decoding names what is wrong
        self.session.client_id_is(client_id)
        session = self.session
        plan = authorize.plan(apis.PRODUCE, frame[3], body,
                              lambda action, resource: self._pipeline.decide(session, action, resource),
                              self._adapter.topic_names)
        if plan.forward is None or plan.changed or plan.merge is not None:
            return False
        if frame[5]:  # expects a response
            self._in_flight.append(InFlight(frame[4], apis.PRODUCE, frame[3]))
        return True

    async def _after_resolving(self, frame: tuple, payload: bytes,
                               header: codec.RequestHeader, body: dict) -> Outcome:
        await self._adapter.directory.refresh()  # learns every topic id the cluster has
        return self._authorize(frame, payload, header, body)

    def _authorize(self, frame: tuple, payload: bytes, header: codec.RequestHeader, body: dict) -> Outcome:
        _, _, api_key, api_version, correlation_id, expects_response = frame
        session = self.session
        plan = authorize.plan(api_key, api_version, body,
                              lambda action, resource: self._pipeline.decide(session, action, resource),
                              self._adapter.topic_names)
        for action, resource, decision in plan.denied:
            log.info("%s: %s on %s %s refused by %s: %s", session, action, resource.kind,
                     resource.name, decision.source, decision.reason)
        if plan.forward is None:
            if expects_response:
                self._answer(InFlight(correlation_id, api_key, api_version,
                                      local=response_frame(correlation_id, api_key, api_version, plan.response)))
            return DONE
        if expects_response:
            self._in_flight.append(InFlight(correlation_id, api_key, api_version, merge=plan.merge))
        if not plan.changed:
            return None
        return request_frame(payload[: header.body_offset], codec.encode_request(api_key, api_version, plan.forward))

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
        in_flight = self._in_flight
        out = []
        while in_flight and in_flight[0].local is not None:
            out.append(in_flight.popleft().local)
        if out and not self._closed:
            self._transport.writelines(out)
        if not in_flight and not self._backlog:
            self._idle.set()

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
            if request.merge is not None or request.api_key in decoded:
                rewritten = adapter.rewriter.response(request.api_key, request.api_version,
                                                      source.frame(frame_start, frame_end), request.merge)
                out.append(source.take(segment, frame_start))
                out.append(rewritten)
                segment = frame_end
            if in_flight and in_flight[0].local is not None:
                out.append(source.take(segment, frame_end))
                segment = frame_end
                while in_flight and in_flight[0].local is not None:
                    out.append(in_flight.popleft().local)
        out.append(source.take(segment, consumed_to))
        out = [chunk for chunk in out if chunk]
        self.session.bytes_out += sum(map(len, out))
        self._transport.writelines(out)
        if not in_flight and not self._backlog:
            self._idle.set()

    # -- flow control --------------------------------------------------------------------------

    def _pause_reading(self) -> None:
        if not self._reading_paused and not self._closed:
            self._reading_paused = True
            self._transport.pause_reading()

    def _resume_reading(self) -> None:
        if self._reading_paused and not self._closed:
            self._reading_paused = False
            self._transport.resume_reading()

    def pause_writing(self) -> None:  # the client reads slower than the broker answers
        if self._upstream is not None:
            self._upstream.pause_reading()

    def resume_writing(self) -> None:
        if self._upstream is not None:
            self._upstream.resume_reading()

    def upstream_paused_writing(self) -> None:  # the broker reads slower than the client sends
        self._pause_reading()

    def upstream_resumed_writing(self) -> None:
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
