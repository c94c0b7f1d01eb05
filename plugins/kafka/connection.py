"""One client connection and the one upstream connection opened for it.

Guarantees:
- Responses reach the client in the order of its requests, each exactly once. Every request that
  expects a response has an entry in one FIFO; a response from the broker must match the head
  entry's correlation id, and answers the gateway makes itself wait in the same FIFO for their
  turn.
- Bytes nobody needs pass through untouched: one copy out of the read buffer and one write per
  read, whatever the number of frames in it. Only responses that carry broker addresses or API
  versions are decoded and re-encoded (see rewrite.py).
- Backpressure both ways: when one side's write buffer is full, the other side stops reading.
- A frame the gateway cannot accept (oversized, malformed) closes this connection only, with the
  reason in the log.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from typing import TYPE_CHECKING

from brokerguard._native import FrameError, RequestScanner, ResponseScanner
from brokerguard.errors import BrokerGuardError, ProtocolError
from brokerguard.session import Session

from . import apis
from .framebuffer import FrameBuffer

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
    """A request waiting for its response. `local` holds an answer the gateway made itself."""

    __slots__ = ("correlation_id", "api_key", "api_version", "local")

    def __init__(self, correlation_id: int, api_key: int, api_version: int, local: bytes | None = None):
        self.correlation_id = correlation_id
        self.api_key = api_key
        self.api_version = api_version
        self.local = local


class ClientConnection(asyncio.BufferedProtocol):
    """The client's side. `node_id` is None on the bootstrap port, else the broker it stands for."""

    def __init__(self, adapter: KafkaAdapter, node_id: int | None) -> None:
        self._adapter = adapter
        self._node_id = node_id
        self._buffer = FrameBuffer(CLIENT_BUFFER)
        self._scanner = RequestScanner(adapter.versions.flexible_from, adapter.config.max_frame_bytes)
        self._in_flight: collections.deque[InFlight] = collections.deque()
        self._upstream: UpstreamConnection | None = None
        self._held: list[bytes | bytearray] = []  # for the upstream, until it is ready
        self._held_bytes = 0
        self._transport: asyncio.Transport | None = None
        self._closed = False
        self._draining = False
        self._reading_paused = False
        self._idle = asyncio.Event()
        self.session: Session

    # -- lifecycle ---------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("sockname")
        self.session = Session(peer=_peer(transport), listener=f"{sock[0]}:{sock[1]}")
        self._adapter.connections.add(self)
        self._idle.set()
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
        if self._reading_paused and not self._draining:
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
        if self._transport is not None:
            self._transport.close()
        if self._upstream is not None:
            self._upstream.close()
        elif not self._opening.done():
            self._opening.cancel()
        self._in_flight.clear()
        self._idle.set()

    async def drain(self) -> None:
        """Stop reading requests; return once every request already read has its response."""
        self._draining = True
        self._pause_reading()
        if self._in_flight:
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
        session = self.session
        session.requests += len(frames)
        session.bytes_in += consumed_to
        pipeline = self._adapter.pipeline
        segment = 0
        for frame_start, frame_end, api_key, api_version, correlation_id, expects_response in frames:
            operation = apis.operation(api_key)
            pipeline.decide(session, operation)
            answer = self._adapter.answer_locally(api_key, api_version, correlation_id)
            if answer is not None:
                self._forward(segment, frame_start)
                segment = frame_end
                self._in_flight.append(InFlight(correlation_id, api_key, api_version, answer))
                self._flush_local_answers()
            elif expects_response:
                self._in_flight.append(InFlight(correlation_id, api_key, api_version))
        self._forward(segment, consumed_to)

    def _forward(self, start: int, end: int) -> None:
        if start == end:
            return
        data = self._buffer.take(start, end)
        if self._upstream is not None:
            self._upstream.transport.write(data)
            return
        self._held.append(data)
        self._held_bytes += len(data)
        if self._held_bytes > MAX_HELD_BYTES:
            self._pause_reading()

    # -- responses: upstream -> client ---------------------------------------------------------

    def deliver(self, frames: list, consumed_to: int, source: UpstreamConnection) -> None:
        """Called by the upstream side with the complete response frames of one read."""
        in_flight = self._in_flight
        rewriter = self._adapter.rewriter
        out: list = []
        segment = 0
        for frame_start, frame_end, correlation_id in frames:
            if not in_flight or in_flight[0].local is not None:
                raise ProtocolError(source.peer, f"response {correlation_id} to no request")
            request = in_flight.popleft()
            if request.correlation_id != correlation_id:
                raise ProtocolError(
                    source.peer, f"response {correlation_id} out of order: expected {request.correlation_id}")
            if request.api_key in rewriter.apis:
                rewritten = rewriter.response(request.api_key, request.api_version,
                                              source.frame(frame_start, frame_end))
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
        if not in_flight:
            self._idle.set()

    def _flush_local_answers(self) -> None:
        in_flight = self._in_flight
        out = []
        while in_flight and in_flight[0].local is not None:
            out.append(in_flight.popleft().local)
        if out:
            self._transport.writelines(out)
        if not in_flight:
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
        if not self._draining and self._held_bytes <= MAX_HELD_BYTES:
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
