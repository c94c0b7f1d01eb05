"""The audit bus: events in from the data path in O(1), out to every sink in sealed batches.

`emit` only appends to a queue. A task of the worker's event loop takes batches from it, seals
them into the worker's hash chain (100 at a time, about a millisecond, between which the loop
serves traffic) and hands each sink its copy; every sink has its own queue and a writer task
that writes in a thread, so a slow or failing sink holds back no other. A failed write is
retried, the same batch, with backoff from 0.1 s up to 30 s.

Fail-open (the default): traffic never waits for the audit trail. Events are held in memory up
to `max_pending`; beyond that the oldest are dropped and a `dropped` event with their count is
sealed into the chain in their place, so the gap is on record.

Fail-closed (`audit.fail_closed: true`): while a sink is failing or more than `max_pending`
events wait, `accepting` is False and the adapters stop reading requests (clients wait, as
behind a slow broker); they resume when the trail has caught up. Nothing is dropped.
"""

from __future__ import annotations

import asyncio
import collections
import inspect
import logging
import os
import socket
import time
from collections.abc import Callable, Sequence
from typing import Any

from brokerguard import __version__
from brokerguard.audit import events
from brokerguard.audit.chain import Chain
from brokerguard.audit.sinks import Sealed, Sink

log = logging.getLogger("brokerguard.audit")

RETRY_FIRST_S = 0.1
RETRY_MAX_S = 30.0
WRITE_MAX = 5000  # events handed to a sink in one write, at most
SEAL_CHUNK = 100  # events sealed at a time on the event loop (about 1 ms)
OBSERVER_TICK_S = 1.0  # how often observers (the alerter) may close a window while no event comes


def gateway_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def new_stream_id(gateway: str) -> str:
    return f"{gateway}:{int(time.time() * 1000):x}:{os.urandom(3).hex()}"


class _SinkWriter:
    """One sink's queue of sealed batches and the task that writes them in order."""

    def __init__(self, sink: Sink, alerts_only: bool, changed: Callable[[], None]) -> None:
        self.sink = sink
        self.alerts_only = alerts_only
        self.queue: collections.deque[list[Sealed]] = collections.deque()
        self.failing = False
        self.written = 0
        self._changed = changed
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._is_coroutine = inspect.iscoroutinefunction(sink.write)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name=f"audit sink {self.sink.name}")

    def put(self, batch: list[Sealed]) -> None:
        if self.alerts_only:
            batch = [sealed for sealed in batch if sealed.event["kind"] == "alert"]
        if batch:
            self.queue.append(batch)
            self._wake.set()

    @property
    def backlog(self) -> int:
        return sum(map(len, self.queue))

    async def _run(self) -> None:
        delay = RETRY_FIRST_S
        while True:
            if not self.queue:
                self._wake.clear()
                await self._wake.wait()
                continue
            if len(self.queue) > 1 and len(self.queue[0]) < WRITE_MAX:
                # One write for what queued meanwhile: a store's cost is mostly per write (a
                # SQLite commit, a POST), not per event.
                merged: list[Sealed] = []
                while self.queue and len(merged) + len(self.queue[0]) <= WRITE_MAX:
                    merged.extend(self.queue.popleft())
                self.queue.appendleft(merged)
            batch = self.queue[0]
            try:
                if self._is_coroutine:
                    await self.sink.write(batch)
                else:
                    await asyncio.to_thread(self.sink.write, batch)
            except asyncio.CancelledError:
                raise
            except Exception as err:
                if not self.failing:
                    log.error("audit sink %s failed, retrying (events wait in memory): %s", self.sink.name, err)
                    self.failing = True
                    self._changed()
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX_S)
                continue
            self.queue.popleft()
            self.written += len(batch)
            delay = RETRY_FIRST_S
            if self.failing:
                log.warning("audit sink %s recovered", self.sink.name)
                self.failing = False
            self._changed()

    async def drain(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while self.queue and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        return not self.queue

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass


class AuditBus:
    def __init__(self, sinks: Sequence[tuple[Sink, bool]], *, chain_key: bytes | None, fail_closed: bool = False,
                 batch_max: int = 500, flush_interval_s: float = 0.05, max_pending: int = 100_000,
                 gateway: str | None = None, observers: Sequence[Callable[[dict[str, Any]], None]] = ()) -> None:
        """sinks: (sink, alerts only). observers see every event as it is emitted (alerts)."""
        self.gateway = gateway or gateway_name()
        self.chain = Chain(new_stream_id(self.gateway), chain_key)
        self.fail_closed = fail_closed
        self.batch_max = batch_max
        self.flush_interval_s = flush_interval_s
        self.max_pending = max_pending
        self.observers = list(observers)
        self.dropped = 0
        self._pending: collections.deque[dict[str, Any]] = collections.deque()
        self._writers = [_SinkWriter(sink, alerts_only, self._health_changed) for sink, alerts_only in sinks]
        self._sealed = 0
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        self._accepting = True
        self._resume: list[Callable[[], None]] = []
        self._stopping = False
        self._timer: asyncio.TimerHandle | None = None  # the flush an event is waiting for

    # -- the data path's side ------------------------------------------------------------------

    def emit(self, event: dict[str, Any]) -> None:
        """Queue one event (a dict of JSON values); never blocks, never raises for a sink."""
        pending = self._pending
        pending.append(event)
        for observe in self.observers:
            observe(event)
        if len(pending) > self.max_pending:
            if self.fail_closed:
                self._health_changed()
            else:
                pending.popleft()
                self.dropped += 1
        wake = self._wake
        if wake is not None and not wake.is_set():
            if len(pending) >= self.batch_max:
                wake.set()
            elif self._timer is None:  # the first event since the last flush: flush within the interval
                self._timer = asyncio.get_running_loop().call_later(self.flush_interval_s, wake.set)

    @property
    def accepting(self) -> bool:
        """False while fail-closed auditing cannot keep up: adapters stop reading requests."""
        return self._accepting

    async def caught_up(self) -> None:
        """Returns once accepting is True again (at once, if it is)."""
        if self._accepting:
            return
        resumed = asyncio.get_running_loop().create_future()
        self._resume.append(lambda: resumed.done() or resumed.set_result(None))
        await resumed

    def _health_changed(self) -> None:
        if not self.fail_closed:
            return
        backlog = len(self._pending) + sum(writer.backlog for writer in self._writers)
        accepting = backlog <= self.max_pending and not any(writer.failing for writer in self._writers)
        if accepting == self._accepting:
            return
        self._accepting = accepting
        if accepting:
            log.warning("audit trail caught up: reading requests again")
            resume, self._resume = self._resume, []
            for callback in resume:
                callback()
        else:
            log.error("audit trail cannot keep up and auditing is fail-closed: requests wait")

    # -- the bus's own task --------------------------------------------------------------------

    async def start(self) -> None:
        for writer in self._writers:
            await writer.sink.start()
            writer.start()
        self._wake = asyncio.Event()
        self.emit(events.stream_start(self.gateway, os.getpid(), __version__))
        self._task = asyncio.get_running_loop().create_task(self._run(), name="audit bus")

    async def stop(self, timeout: float = 10.0) -> None:
        """Write stream_end and everything pending (up to timeout), then close the sinks."""
        self._flush_observers(final=True)  # e.g. the alerter's last window of counts
        self.emit(events.stream_end(self.gateway, self._sealed + len(self._pending) + 1))
        self._stopping = True
        if self._task is not None and self._wake is not None:
            self._wake.set()
            await self._task  # it seals what is pending, then ends
        for writer in self._writers:
            if not await writer.drain(timeout):
                log.error("audit sink %s: %d events not written at shutdown", writer.sink.name, writer.backlog)
            await writer.stop()
            await writer.sink.close()

    async def _run(self) -> None:
        """Flush when an event has waited flush_interval_s or a batch is full; an idle gateway
        wakes only for the observers' tick (an alert window closing)."""
        assert self._wake is not None
        while not self._stopping:
            try:
                await asyncio.wait_for(self._wake.wait(), OBSERVER_TICK_S)
            except asyncio.TimeoutError:
                pass
            self._wake.clear()
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            self._flush_observers(final=False)
            await self._flush()
        while self._pending:  # what came with the stop
            await self._flush()

    async def _flush(self) -> None:
        """Seal what is pending now and hand it to the sinks. Events emitted meanwhile wait for
        the next flush: chasing them would seal and write a few at a time under steady traffic,
        and a store's cost is mostly per write."""
        left = len(self._pending)
        while left > 0 and self._pending:
            if self.dropped:
                self._pending.appendleft({"kind": "dropped", "time": time.time(), "events": self.dropped})
                left += 1
                log.error("audit: %d events dropped, the sinks could not keep up (recorded in the chain)",
                          self.dropped)
                self.dropped = 0
            # Sealed here, in chunks between which the loop serves traffic: a thread would hold
            # the GIL for as long and make the loop wait its turn for every socket call.
            batch = [self._pending.popleft() for _ in range(min(SEAL_CHUNK, left, len(self._pending)))]
            left -= len(batch)
            sealed = self._seal(batch)
            for writer in self._writers:
                writer.put(sealed)
            self._health_changed()
            await asyncio.sleep(0)

    def _flush_observers(self, final: bool) -> None:
        for observer in self.observers:
            flush = getattr(observer, "flush", None)
            if flush is not None:
                flush(final=final)

    def _seal(self, batch: list[dict[str, Any]]) -> list[Sealed]:
        seal = self.chain.seal
        out = [Sealed(event, seal(event)) for event in batch]
        self._sealed += len(out)
        return out

    def stats(self) -> dict[str, Any]:
        return {"stream": self.chain.stream, "pending": len(self._pending), "sealed": self._sealed,
                "sinks": {w.sink.name: {"written": w.written, "backlog": w.backlog, "failing": w.failing}
                          for w in self._writers}}


def from_config(config: Any) -> AuditBus:
    """The bus of an `audit` config section (brokerguard.config.AuditConfig), its sinks loaded
    by entry point; alerts are derived from the events as they are emitted."""
    from pathlib import Path

    from brokerguard import registry
    from brokerguard.audit.alerts import Alerter
    from brokerguard.audit.sinks import SinkContext

    gateway = gateway_name()
    context = SinkContext(gateway, Path(config.dir))
    sinks = []
    for spec in config.sinks:
        options = {key: value for key, value in spec.items() if key not in ("type", "events")}
        plugin = registry.load("sinks", spec["type"])
        sinks.append((plugin.from_config(options, context), spec.get("events", "all") == "alerts"))
    key = config.chain_key()
    bus = AuditBus(sinks, chain_key=key.reveal().encode() if key is not None else None,
                   fail_closed=config.fail_closed, batch_max=config.batch_max,
                   flush_interval_s=config.flush_interval_ms / 1000, max_pending=config.max_pending,
                   gateway=gateway)
    alerts = config.alerts
    bus.observers.append(Alerter(bus.emit, window_s=alerts.window_s, max_per_window=alerts.max_per_window,
                                 auth_failure_threshold=alerts.auth_failure_threshold))
    return bus
