"""The PostgreSQL sink against a real PostgreSQL server: a trail written and verified, retried
batches, gateways writing at once, tampering caught, and a real gateway audited end to end."""

from __future__ import annotations

import asyncio
import json
import random
import socket
import threading
import uuid
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from brokerguard import registry
from brokerguard.audit import AuditBus, events
from brokerguard.audit.chain import verify
from brokerguard.audit.sinks import Sealed, SessionFilter, SinkContext
from brokerguard.errors import ConfigError
from brokerguard.plugins.sinks.postgres import AuditDatabaseError, PostgresSink
from devstack.postgres import PostgresServer
from harness import create_topics, eventually, produce_and_consume
from sealing import KEY, Stream

PASSWORD_ENV = "BROKERGUARD_TEST_AUDIT_DB_PASSWORD"


@pytest.fixture(scope="session")
def postgres(tmp_path_factory: pytest.TempPathFactory):
    """One real server for the run; one that fails to start fails the tests with its log."""
    with PostgresServer(work_dir=tmp_path_factory.mktemp("postgres"), keep_work_dir=False) as server:
        yield server


def unique() -> str:
    return f"t_{uuid.uuid4().hex[:12]}"


def context(gateway: str) -> SinkContext:
    return SinkContext(gateway=gateway, state_dir=Path(".brokerguard"))


def options(postgres: PostgresServer, schema: str, monkeypatch, **more) -> dict:
    monkeypatch.setenv(PASSWORD_ENV, postgres.password)
    return {"dsn": postgres.dsn, "password_env": PASSWORD_ENV, "schema": schema, **more}


def started(postgres: PostgresServer, schema: str, monkeypatch, gateway: str = "gw-a:1") -> PostgresSink:
    sink = PostgresSink.from_config(options(postgres, schema, monkeypatch), context(gateway))
    asyncio.run(sink.start())
    return sink


def admin(postgres: PostgresServer) -> psycopg.Connection:
    """The superuser, as someone who can edit the database would connect."""
    return psycopg.connect(postgres.superuser_dsn, password=postgres.superuser_password, autocommit=True)


def request(session: str, identity: str, topic: str, time: float, seq: int, denied: bool = False, **more) -> dict:
    decision = "deny" if denied else "allow"
    return {"kind": "request", "time": time, "session": session, "seq": seq, "identity": identity, "api": "Produce",
            "decision": decision, "operations": [{"action": "write", "resource": f"topic:{topic}",
                                                  "decision": decision}], **more}


def session(name: str, identity: str, topic: str, started: float, requests: int = 3, denied: int = 0) -> list[dict]:
    out = [events.session_start(name, "kafka", "10.0.0.7:5000", "main", started),
           {**events.login(name, identity, "SCRAM-SHA-512", True), "time": started + 0.1}]
    for seq in range(requests):
        out.append(request(name, identity, topic, started + 1 + seq, seq, denied=seq < denied,
                           client_id=f"app-{identity}"))
    end = events.session_end(name, identity, "client closed", requests, 10, 20, started)
    end["time"] = started + requests + 1
    return out + [end]


def stored_lines(postgres: PostgresServer, schema: str) -> dict[tuple[str, int], str]:
    with admin(postgres) as db:
        rows = db.execute(sql.SQL("SELECT stream, idx, line FROM {}.events").format(sql.Identifier(schema)))
        return {(stream, idx): line for stream, idx, line in rows}


def test_a_trail_is_stored_exactly_and_read_back_in_order(postgres, monkeypatch):
    schema = unique()
    sink = started(postgres, schema, monkeypatch)
    stream = Stream("gw-a:1")
    # Values JSONB would change or refuse: the stored line must be the hashed one.
    odd = request("s-1", "alice", "orders", 1003.5, 9, client_id="nul\x00in-id", note="nul \x00 é ☃",
                  numbers=[1e300, -0.0, 0.1, 2**63 - 1, 1.50], dup={"b": 1, "a": 2})
    written = (stream.start() + stream.seal(session("s-1", "alice", "orders", 1000.0)) + stream.seal([odd])
               + stream.end())
    try:
        sink.write(written)
    finally:
        asyncio.run(sink.close())

    assert list(sink.events()) == [sealed.event for sealed in written]
    assert stored_lines(postgres, schema) == {(s.event["stream"], s.event["index"]): s.line.decode() for s in written}
    result = verify(sink.events(), KEY)
    assert result.intact and result.events == 9 and result.streams == 1 and not result.open_streams
    [summary] = sink.sessions(SessionFilter())
    assert summary == {"session": "s-1", "started": 1000.0, "adapter": "kafka", "peer": "10.0.0.7:5000",
                       "listener": "main", "gateway": "gw-a:1", "identity": "alice", "auth": "SCRAM-SHA-512",
                       "client_id": "nul\ufffdin-id", "software": None, "ended": 1004.0,
                       "end_reason": "client closed", "requests": 4, "denied": 0, "topics": ["orders"]}


def test_the_bus_writes_through_the_sink(postgres, monkeypatch):
    schema = unique()
    sink = PostgresSink.from_config(options(postgres, schema, monkeypatch), context("gw-a:1"))

    async def main() -> AuditBus:
        bus = AuditBus([(sink, False)], chain_key=KEY, batch_max=3, flush_interval_s=0.01, gateway="gw-a:1")
        await bus.start()
        for event in session("s-1", "alice", "orders", 100.0) + session("s-2", "bob", "payments", 200.0, denied=1):
            bus.emit(event)
        await bus.stop()
        return bus

    bus = asyncio.run(main())
    stored = list(sink.events())
    assert [e["kind"] for e in stored][:3] == ["stream_start", "session_start", "login"]
    assert stored[-1]["kind"] == "stream_end" and {e["stream"] for e in stored} == {bus.chain.stream}
    result = verify(stored, KEY)
    assert result.intact and result.events == 1 + 12 + 1 and not result.open_streams
    assert [(s["session"], s["requests"], s["denied"], s["gateway"]) for s in sink.sessions(SessionFilter())] == [
        ("s-2", 3, 1, "gw-a:1"), ("s-1", 3, 0, "gw-a:1")]


def test_a_retried_batch_is_stored_once_and_counted_once(postgres, monkeypatch):
    schema = unique()
    sink = started(postgres, schema, monkeypatch)
    stream = Stream("gw-a:1")
    first = stream.start() + stream.seal(session("s-1", "alice", "orders", 1000.0)[:3])
    retried = stream.seal(session("s-1", "alice", "orders", 1000.0)[3:])
    try:
        sink.write(first)
        sink.write(retried)
        sink.write(retried)  # the bus retries a batch whose commit it did not see confirmed
        sink.write(first + retried)  # and a retry may overlap what is in already
    finally:
        asyncio.run(sink.close())

    assert len(list(sink.events())) == 7
    [summary] = sink.sessions(SessionFilter())
    assert summary["requests"] == 3 and summary["ended"] == 1004.0 and summary["identity"] == "alice"
    assert verify(sink.events(), KEY).intact


def test_gateways_writing_at_once_neither_deadlock_nor_lose_counts(postgres, monkeypatch):
    """Two gateways (two streams) write batches that touch the same sessions in random orders, and
    a third writer repeats every batch of the first (a retry racing the original)."""
    seed = random.randrange(2**32)
    print(f"seed {seed}")
    rng = random.Random(seed)
    schema = unique()
    sinks = [started(postgres, schema, monkeypatch, gateway) for gateway in ("gw-a:1", "gw-b:2", "gw-a:1")]
    names = [f"shared-{n}" for n in range(8)]
    streams = {"a": Stream("gw-a:1"), "b": Stream("gw-b:2")}
    batches: dict[str, list[list[Sealed]]] = {}
    expected = {name: {"requests": 0, "denied": 0, "topics": set()} for name in names}
    for key, stream in streams.items():
        batches[key] = [stream.start()]
        for number in range(40):
            batch = []
            for name in rng.sample(names, 5):
                denied = rng.random() < 0.3
                topic = f"topic-{key}-{rng.randrange(3)}"
                batch.append(request(name, "svc", topic, 1000.0 + number, number, denied=denied))
                expected[name]["requests"] += 1
                expected[name]["denied"] += denied
                expected[name]["topics"].add(topic)
            batches[key].append(stream.seal(batch))
        batches[key].append(stream.end())
    barrier = threading.Barrier(3)
    failures: list[BaseException] = []

    def gateway(sink: PostgresSink, todo: list[list[Sealed]]) -> None:
        try:
            barrier.wait()
            for batch in todo:
                sink.write(batch)
        except BaseException as err:  # noqa: BLE001 - reported by the test below
            failures.append(err)

    threads = [threading.Thread(target=gateway, args=(sink, batches[key]))
               for sink, key in zip(sinks, ("a", "b", "a"))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    for sink in sinks:
        asyncio.run(sink.close())
    assert not failures, f"seed {seed}: {failures!r}"

    reader = sinks[0]
    result = verify(reader.events(), KEY)
    assert result.intact and result.streams == 2 and result.events == 2 * (1 + 40 * 5 + 1)
    assert not result.open_streams
    found = {s["session"]: s for s in reader.sessions(SessionFilter(limit=100))}
    assert set(found) == set(names)
    for name in names:
        assert (found[name]["requests"], found[name]["denied"], found[name]["topics"]) == (
            expected[name]["requests"], expected[name]["denied"], sorted(expected[name]["topics"])), f"seed {seed}"


def test_gateways_starting_together_make_the_tables_once(postgres, monkeypatch):
    schema = unique()
    sinks = [PostgresSink.from_config(options(postgres, schema, monkeypatch), context(f"gw-{n}:1")) for n in range(4)]
    barrier = threading.Barrier(len(sinks))
    failures: list[BaseException] = []

    def start(sink: PostgresSink) -> None:
        try:
            barrier.wait()
            asyncio.run(sink.start())
        except BaseException as err:  # noqa: BLE001 - reported by the test below
            failures.append(err)

    threads = [threading.Thread(target=start, args=(sink,)) for sink in sinks]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    for sink in sinks:
        asyncio.run(sink.close())
    assert not failures
    assert list(sinks[0].events()) == []


def test_sessions_are_listed_newest_first_and_filtered(postgres, monkeypatch):
    schema = unique()
    sink = started(postgres, schema, monkeypatch)
    stream = Stream("gw-a:1")
    try:
        sink.write(stream.start())
        sink.write(stream.seal(session("s-1", "alice", "orders", 100.0)))
        sink.write(stream.seal(session("s-2", "bob", "payments", 200.0, denied=2)))
        sink.write(stream.seal(session("s-3", "alice", "payments", 300.0, requests=1)[:3]))  # still open
    finally:
        asyncio.run(sink.close())

    def listed(**where) -> list[str]:
        return [s["session"] for s in sink.sessions(SessionFilter(**where))]

    assert listed() == ["s-3", "s-2", "s-1"]
    assert listed(identity="alice") == ["s-3", "s-1"]
    assert listed(topic="payments") == ["s-3", "s-2"]
    assert listed(decision="deny") == ["s-2"]
    assert listed(since=150.0) == ["s-3", "s-2"]
    assert listed(until=250.0) == ["s-2", "s-1"]
    assert listed(since=150.0, until=250.0, identity="bob", topic="payments", decision="deny") == ["s-2"]
    assert listed(limit=1) == ["s-3"]
    assert listed(identity="nobody") == []
    open_one = sink.sessions(SessionFilter(limit=1))[0]
    assert open_one["ended"] is None and open_one["end_reason"] is None and open_one["requests"] == 1
    assert [e["kind"] for e in sink.session_events("s-2")] == ["session_start", "login", "request", "request",
                                                               "request", "session_end"]
    assert sink.session_events("nope") == []


def tampered(postgres, monkeypatch) -> tuple[PostgresSink, str, str]:
    schema = unique()
    sink = started(postgres, schema, monkeypatch)
    stream = Stream("gw-a:1")
    try:
        sink.write(stream.start() + stream.seal(session("s-1", "alice", "orders", 100.0)) + stream.end())
    finally:
        asyncio.run(sink.close())
    assert verify(sink.events(), KEY).intact
    return sink, schema, stream.chain.stream


def test_an_edited_line_is_named_by_verify(postgres, monkeypatch):
    sink, schema, stream = tampered(postgres, monkeypatch)
    with admin(postgres) as db:
        [(line,)] = db.execute(sql.SQL("SELECT line FROM {}.events WHERE stream = %s AND idx = 3")
                               .format(sql.Identifier(schema)), (stream,)).fetchall()
        edited = json.loads(line)
        edited["decision"] = "deny"
        db.execute(sql.SQL("UPDATE {}.events SET line = %s WHERE stream = %s AND idx = 3").format(
            sql.Identifier(schema)), (json.dumps(edited), stream))
    result = verify(sink.events(), KEY)
    assert [str(problem) for problem in result.problems] == [
        f"stream {stream} event 3: edited: its content does not match its hash"]


def test_a_deleted_row_is_named_by_verify(postgres, monkeypatch):
    sink, schema, stream = tampered(postgres, monkeypatch)
    with admin(postgres) as db:
        db.execute(sql.SQL("DELETE FROM {}.events WHERE stream = %s AND idx = 4").format(sql.Identifier(schema)),
                   (stream,))
    result = verify(sink.events(), KEY)
    assert [str(problem) for problem in result.problems] == [
        f"stream {stream} event 4: event 4 removed (the stream jumps to 5)"]


def test_a_line_that_is_not_json_is_named_where_it_is(postgres, monkeypatch):
    sink, schema, stream = tampered(postgres, monkeypatch)
    with admin(postgres) as db:
        db.execute(sql.SQL("UPDATE {}.events SET line = 'gone' WHERE stream = %s AND idx = 2").format(
            sql.Identifier(schema)), (stream,))
    result = verify(sink.events(), KEY)
    assert [problem.index for problem in result.problems] == [2]


def test_a_lost_connection_fails_one_write_and_the_retry_reconnects(postgres, monkeypatch):
    schema = unique()
    sink = started(postgres, schema, monkeypatch)
    stream = Stream("gw-a:1")
    batch = stream.start() + stream.seal(session("s-1", "alice", "orders", 100.0))
    try:
        with admin(postgres) as db:  # as a restart or a failover would; waits until it is gone
            [(cut,)] = db.execute("SELECT count(pg_terminate_backend(pid, 10000)) FROM pg_stat_activity "
                                  "WHERE application_name = 'brokerguard-audit'").fetchall()
        assert cut == 1
        with pytest.raises(AuditDatabaseError, match=f"audit sink postgres at {postgres.host}:{postgres.port}: "
                                                     "7 events not stored"):
            sink.write(batch)
        sink.write(batch)  # the bus's retry
    finally:
        asyncio.run(sink.close())
    assert verify(sink.events(), KEY).intact and sink.sessions(SessionFilter())[0]["requests"] == 3


def test_a_role_without_create_writes_to_tables_made_for_it(postgres, monkeypatch):
    schema = unique()
    asyncio.run(started(postgres, schema, monkeypatch).close())  # the tables, made by their owner
    role, password = unique(), uuid.uuid4().hex
    with admin(postgres) as db:
        db.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(sql.Identifier(role), sql.Literal(password)))
        for grant in ("GRANT USAGE ON SCHEMA {s} TO {r}",
                      "GRANT SELECT, INSERT ON {s}.events, {s}.session_topics TO {r}",
                      "GRANT SELECT, INSERT, UPDATE ON {s}.sessions TO {r}"):
            db.execute(sql.SQL(grant).format(s=sql.Identifier(schema), r=sql.Identifier(role)))
    monkeypatch.setenv(PASSWORD_ENV, password)
    dsn = f"host={postgres.host} port={postgres.port} dbname={postgres.database} user={role}"
    sink = PostgresSink.from_config({"dsn": dsn, "password_env": PASSWORD_ENV, "schema": schema}, context("gw-a:1"))
    stream = Stream("gw-a:1")
    asyncio.run(sink.start())
    try:
        sink.write(stream.start() + stream.seal(session("s-1", "alice", "orders", 100.0)))
    finally:
        asyncio.run(sink.close())
    assert verify(sink.events(), KEY).intact and sink.sessions(SessionFilter())[0]["requests"] == 3

    other = PostgresSink.from_config({"dsn": dsn, "password_env": PASSWORD_ENV, "schema": unique()},
                                     context("gw-a:1"))
    with pytest.raises(AuditDatabaseError, match="the role needs CREATE on the database"):
        asyncio.run(other.start())


def test_reading_a_schema_nobody_wrote_says_so(postgres, monkeypatch):
    schema = unique()
    reader = PostgresSink.from_config(options(postgres, schema, monkeypatch), context("cli"))
    with pytest.raises(AuditDatabaseError, match=f"no audit tables in schema {schema}"):
        list(reader.events())
    with pytest.raises(AuditDatabaseError, match=f"no audit tables in schema {schema}"):
        reader.sessions(SessionFilter())


def test_a_wrong_password_fails_at_start_without_showing_it(postgres, monkeypatch):
    secret = "not-the-password-4242"
    given = options(postgres, unique(), monkeypatch)
    monkeypatch.setenv(PASSWORD_ENV, secret)
    sink = PostgresSink.from_config(given, context("gw-a:1"))
    with pytest.raises(AuditDatabaseError) as caught:
        asyncio.run(sink.start())
    message = str(caught.value)
    assert message.startswith(f"audit sink postgres at {postgres.host}:{postgres.port}: cannot connect to database "
                              f"{postgres.database}")
    assert "password authentication failed" in message
    for shown in (message, repr(caught.value), str(caught.value.__cause__), repr(sink), sink.name):
        assert secret not in shown and postgres.password not in shown


def test_an_unreachable_server_fails_at_start_naming_it():
    with socket.socket() as bound:
        bound.bind(("127.0.0.1", 0))  # bound, not listening: connections to it are refused
        port = bound.getsockname()[1]
        sink = PostgresSink.from_config({"dsn": f"host=127.0.0.1 port={port} dbname=audit user=gateway",
                                         "connect_timeout_s": 2}, context("gw-a:1"))
        with pytest.raises(AuditDatabaseError, match=f"at 127.0.0.1:{port}: cannot connect to database audit"):
            asyncio.run(sink.start())


@pytest.mark.parametrize(
    "given, message",
    [
        ({}, "audit sink postgres: `dsn` is required"),
        ({"dsn": 5}, "audit sink postgres: `dsn` must be text, not 5"),
        ({"dsn": "  "}, "audit sink postgres: `dsn` cannot be empty"),
        ({"dsn": "host=db password=hunter2"}, "audit sink postgres: `dsn` must not hold the password: name an "
                                              "environment variable that holds it in `password_env`"),
        ({"dsn": "postgresql://gw:hunter2@db/audit"}, "audit sink postgres: `dsn` must not hold the password"),
        ({"dsn": "host=db dbname"}, "audit sink postgres: `dsn` is not a libpq connection string: missing \"=\" "
                                    "after \"dbname\""),
        ({"dsn": "host=db password hunter2"}, "audit sink postgres: `dsn` is not a libpq connection string (e.g."),
        ({"dsn": "host=db", "password_env": "BG_UNSET_AUDIT_DB_VAR"},
         "audit sink postgres: environment variable BG_UNSET_AUDIT_DB_VAR (`password_env`) is not set"),
        ({"dsn": "host=db", "schema": "Audit-Trail"},
         "audit sink postgres: `schema` 'Audit-Trail' must be a plain name: lower-case letters, digits and `_`"),
        ({"dsn": "host=db", "schema": "x" * 64}, "audit sink postgres: `schema` 'xxxx"),
        ({"dsn": "host=db", "connect_timeout_s": 0}, "audit sink postgres: `connect_timeout_s` must be at least 1, "
                                                     "not 0"),
        ({"dsn": "host=db", "connect_timeout_s": 2.5}, "audit sink postgres: `connect_timeout_s` must be a whole "
                                                       "number, not 2.5"),
        ({"dsn": "host=db", "table": "x"},
         "audit sink postgres: unknown option table (it takes dsn, password_env, schema, connect_timeout_s)"),
    ],
)
def test_option_mistakes_name_the_option_and_why(given, message):
    with pytest.raises(ConfigError) as caught:
        PostgresSink.from_config(given, context("gw-a:1"))
    assert message in str(caught.value)
    assert "hunter2" not in str(caught.value)


def test_the_name_shows_where_and_never_the_password(monkeypatch):
    monkeypatch.setenv(PASSWORD_ENV, "hunter2")
    sink = PostgresSink.from_config({"dsn": "host=db.example port=6432 dbname=passwords_vault user=gw",
                                     "password_env": PASSWORD_ENV, "schema": "trail"}, context("gw-a:1"))
    assert sink.name == "postgres passwords_vault.trail at db.example:6432"
    assert "hunter2" not in repr(sink) and "hunter2" not in sink.dsn


def test_the_sink_is_found_by_its_entry_point():
    assert registry.load("sinks", "postgres") is PostgresSink


@pytest.mark.kafka
def test_a_gateway_audits_to_postgres_and_the_cli_reads_it_back(own_gateway, kafka, postgres):
    schema = unique()
    gateway = own_gateway(audit={"sinks": [{"type": "postgres", "dsn": postgres.dsn, "password_env": PASSWORD_ENV,
                                            "schema": schema}]})
    gateway.env[PASSWORD_ENV] = postgres.password
    gateway.start()
    topic = f"pg-audit-{uuid.uuid4().hex[:8]}"
    create_topics(kafka, topic)
    produce_and_consume(gateway.bootstrap, topic, [b"one", b"two"])

    def listed() -> list[dict]:
        return json.loads(gateway.cli("sessions", "list", "--sink", "postgres", "--format", "json").stdout)

    found = eventually(listed, lambda sessions: any(topic in s["topics"] and s["ended"] for s in sessions))
    mine = [s for s in found if topic in s["topics"]]
    assert mine and all(s["identity"] == "tester" and s["requests"] >= 1 for s in mine)
    assert all(s["gateway"] and s["ended"] for s in mine)
    shown = json.loads(gateway.cli("sessions", "show", mine[0]["session"], "--sink", "postgres",
                                   "--format", "json").stdout)
    assert shown[0]["kind"] == "session_start" and shown[-1]["kind"] == "session_end"

    result = gateway.cli("audit", "verify", "--sink", "postgres")
    assert "intact:" in result.stdout and "NOT intact" not in result.stdout
    assert postgres.password not in gateway.log()
