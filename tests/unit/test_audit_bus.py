"""The audit bus with the SQLite sink: batches off the data path, retries, fail-open and
fail-closed, and what the SQLite store answers."""
import asyncio
import sqlite3

import pytest

from brokerguard.audit import AuditBus, SessionFilter, verify
from brokerguard.audit import events as ev
from brokerguard.audit.sinks import SinkContext
from brokerguard.errors import ConfigError
from brokerguard.plugins.sinks.sqlite import SqliteSink

KEY = b"k" * 32


class Flaky:
    """A sink of our own interface that fails its first `failures` writes."""

    def __init__(self, failures: int) -> None:
        self.name = "flaky"
        self.failures = failures
        self.batches: list[list] = []

    async def start(self) -> None:
        pass

    def write(self, batch) -> None:
        if self.failures:
            self.failures -= 1
            raise OSError("disk on fire")
        self.batches.append([sealed.event for sealed in batch])

    async def close(self) -> None:
        pass


def session_events(session: str, identity: str, topic: str, denied: bool, started: float) -> list[dict]:
    request = {"kind": "request", "time": started + 1, "session": session, "seq": 1, "identity": identity,
               "api": "Produce", "api_version": 9, "decision": "deny" if denied else "allow", "outcome": "ok",
               "operations": [{"action": "produce", "resource": f"topic:{topic}",
                               "decision": "deny" if denied else "allow", "rule": "r", "reason": "why"}]}
    login = ev.login(session, identity, "SCRAM-SHA-512", True, peer="10.0.0.1:5000")
    login["time"] = started + 0.5
    return [ev.session_start(session, "kafka", "10.0.0.1:5000", "127.0.0.1:9092", started), login, request,
            ev.session_end(session, identity, "client closed the connection", 3, 100, 50, started)]


def run(coroutine):
    return asyncio.run(coroutine)


def test_events_reach_sqlite_sealed_and_in_order(tmp_path):
    sink = SqliteSink(tmp_path / "audit.db")

    async def main():
        bus = AuditBus([(sink, False)], chain_key=KEY, batch_max=3, flush_interval_s=0.01)
        await bus.start()
        for event in session_events("s1", "alice", "orders", False, 100.0):
            bus.emit(event)
        await bus.stop()
        return bus

    bus = run(main())
    reader = SqliteSink.open(tmp_path / "audit.db")
    stored = list(reader.events())
    assert [e["kind"] for e in stored] == ["stream_start", "session_start", "login", "request", "session_end",
                                           "stream_end"]
    assert {e["stream"] for e in stored} == {bus.chain.stream}
    result = verify(stored, KEY)
    assert result.intact and result.open_streams == []


def test_sessions_are_listed_and_filtered(tmp_path):
    sink = SqliteSink(tmp_path / "audit.db")

    async def main():
        bus = AuditBus([(sink, False)], chain_key=None)
        await bus.start()
        for event in (session_events("s1", "alice", "orders", False, 100.0)
                      + session_events("s2", "bob", "payments", True, 200.0)):
            bus.emit(event)
        await bus.stop()

    run(main())
    reader = SqliteSink.open(tmp_path / "audit.db")
    every = reader.sessions(SessionFilter())
    assert [s["session"] for s in every] == ["s2", "s1"]  # newest first
    assert every[0]["identity"] == "bob" and every[0]["denied"] == 1 and every[0]["topics"] == ["payments"]
    assert every[1]["end_reason"] == "client closed the connection" and every[1]["requests"] == 1
    assert [s["session"] for s in reader.sessions(SessionFilter(identity="alice"))] == ["s1"]
    assert [s["session"] for s in reader.sessions(SessionFilter(topic="payments"))] == ["s2"]
    assert [s["session"] for s in reader.sessions(SessionFilter(decision="deny"))] == ["s2"]
    assert [s["session"] for s in reader.sessions(SessionFilter(since=150.0))] == ["s2"]
    assert [s["session"] for s in reader.sessions(SessionFilter(until=150.0))] == ["s1"]
    assert [e["kind"] for e in reader.session_events("s1")] == ["session_start", "login", "request", "session_end"]
    assert reader.session_events("nope") == []


def test_a_retried_batch_is_stored_once(tmp_path):
    sink = SqliteSink.open(tmp_path / "audit.db")
    from brokerguard.audit import Chain, Sealed

    chain = Chain("s", None)
    batch = [Sealed(event, chain.seal(event)) for event in session_events("s1", "a", "t", False, 1.0)]
    sink.write(batch)
    sink.write(batch)
    assert len(list(sink.events())) == 4
    assert sink.sessions(SessionFilter())[0]["requests"] == 1


def test_a_write_of_many_statements_stores_every_event(tmp_path):
    """A batch is inserted ROWS_PER_INSERT rows per statement; the last statement is shorter."""
    from brokerguard.audit import Chain, Sealed
    from brokerguard.plugins.sinks.sqlite import ROWS_PER_INSERT

    sink = SqliteSink.open(tmp_path / "audit.db")
    chain = Chain("s", KEY)
    count = 2 * ROWS_PER_INSERT + 7
    requests = [{**session_events("s1", "a", f"t{n % 3}", n % 5 == 0, 1.0)[2], "seq": n} for n in range(count)]
    sink.write([Sealed(event, chain.seal(event)) for event in requests])
    stored = list(sink.events())
    assert [e["seq"] for e in stored] == list(range(count))
    assert verify(stored, KEY).intact
    [listed] = sink.sessions(SessionFilter())
    assert listed["requests"] == count and listed["denied"] == len(range(0, count, 5))
    assert listed["topics"] == ["t0", "t1", "t2"]


def test_a_failing_sink_is_retried_and_holds_back_no_other(tmp_path):
    flaky = Flaky(failures=2)
    sqlite = SqliteSink(tmp_path / "audit.db")

    async def main():
        bus = AuditBus([(flaky, False), (sqlite, False)], chain_key=None, flush_interval_s=0.01)
        await bus.start()
        for i in range(10):
            bus.emit({"kind": "request", "time": float(i), "session": "s", "seq": i})
        await asyncio.sleep(0.05)
        written_meanwhile = len(list(SqliteSink.open(tmp_path / "audit.db").events()))
        await bus.stop()
        return written_meanwhile

    assert run(main()) == 11  # stream_start and ten requests, while the flaky sink still failed
    delivered = [event for batch in flaky.batches for event in batch]
    assert [e["index"] for e in delivered] == list(range(12))  # everything, once, in order


def test_fail_open_drops_the_oldest_and_says_so_in_the_chain(tmp_path):
    sqlite = SqliteSink(tmp_path / "audit.db")

    async def main():
        bus = AuditBus([(sqlite, False)], chain_key=None, batch_max=5, max_pending=5, flush_interval_s=10)
        await bus.start()
        for i in range(20):  # faster than the bus takes them: nothing awaited in between
            bus.emit({"kind": "request", "time": float(i), "session": "s", "seq": i})
        await bus.stop()

    run(main())
    stored = list(SqliteSink.open(tmp_path / "audit.db").events())
    dropped = [e for e in stored if e["kind"] == "dropped"]
    assert dropped and sum(e["events"] for e in dropped) == 20 + 1 + 1 - (len(stored) - len(dropped))
    assert verify(stored, None).intact


def test_fail_closed_stops_traffic_until_the_sink_recovers():
    flaky = Flaky(failures=3)

    async def main():
        bus = AuditBus([(flaky, False)], chain_key=None, fail_closed=True, flush_interval_s=0.005)
        await bus.start()
        bus.emit({"kind": "request", "time": 1.0, "session": "s", "seq": 1})
        states = []
        for _ in range(400):
            states.append(bus.accepting)
            if not bus.accepting:
                break
            await asyncio.sleep(0.005)
        await asyncio.wait_for(bus.caught_up(), 10)
        states.append(bus.accepting)
        await bus.stop()
        return states

    states = run(main())
    assert False in states and states[-1] is True
    assert sum(len(batch) for batch in flaky.batches) == 3  # start, request, end: nothing dropped


def test_alerts_only_sinks_get_alerts_only(tmp_path):
    alerts = Flaky(failures=0)

    async def main():
        bus = AuditBus([(alerts, True)], chain_key=None, flush_interval_s=0.01)
        await bus.start()
        bus.emit({"kind": "request", "time": 1.0, "session": "s"})
        bus.emit({"kind": "alert", "time": 1.0, "alert": "denied", "session": "s"})
        await bus.stop()

    run(main())
    assert [e["kind"] for batch in alerts.batches for e in batch] == ["alert"]


def test_sqlite_options_are_checked(tmp_path):
    context = SinkContext("gw", tmp_path)
    assert SqliteSink.from_config({}, context).path == tmp_path / "audit.db"
    with pytest.raises(ConfigError, match="unknown option colour"):
        SqliteSink.from_config({"colour": "red"}, context)
    with pytest.raises(ConfigError, match="`path` must be text"):
        SqliteSink.from_config({"path": 3}, context)


def test_the_store_is_plain_sqlite(tmp_path):
    sink = SqliteSink.open(tmp_path / "audit.db")
    from brokerguard.audit import Chain, Sealed

    chain = Chain("s", None)
    sink.write([Sealed(e, chain.seal(e)) for e in session_events("s1", "a", "t", False, 1.0)])
    db = sqlite3.connect(tmp_path / "audit.db")
    assert db.execute("SELECT count(*) FROM events").fetchone() == (4,)
    assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
