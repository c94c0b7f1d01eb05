import argparse
import asyncio
import json
import multiprocessing
import os
import sqlite3
import stat
import time

import pytest

from brokerguard import revocation
from brokerguard.state import (
    Change,
    SqliteStateStore,
    StateError,
    StateStore,
    StateWatcher,
)


@pytest.fixture
def store(tmp_path):
    with SqliteStateStore(tmp_path / "state" / "state.db") as store:
        yield store


def test_sqlite_store_satisfies_the_interface(store):
    assert isinstance(store, StateStore)


def test_revoke_restore_and_list(store):
    before = time.time()
    made = store.revoke("alice", reason="left the company", actor="ops")
    assert (made.subject, made.reason, made.actor) == ("alice", "left the company", "ops")
    assert before <= made.at <= time.time()
    store.revoke("bob")
    assert sorted(store.revocations()) == ["alice", "bob"]
    assert store.revocations()["alice"] == made

    assert store.restore("alice") is True
    assert store.restore("alice") is False
    assert store.restore("nobody") is False
    assert list(store.revocations()) == ["bob"]


def test_revoking_again_replaces_the_reason(store):
    store.revoke("alice", reason="first", actor="a")
    store.revoke("alice", reason="second", actor="b")
    assert store.revocations()["alice"].reason == "second"
    assert store.revocations()["alice"].actor == "b"


@pytest.mark.parametrize("subject", ["", "x" * 1025])
def test_bad_subjects_are_refused(store, subject):
    with pytest.raises(StateError):
        store.revoke(subject)


def test_change_feed_is_in_order_with_a_cursor(store):
    assert store.cursor() == 0
    assert store.changes(0) == (0, [])
    store.revoke("alice")
    reload = store.request_reload("rules")
    store.restore("alice")
    store.restore("alice")  # nothing to restore: no change
    store.revoke("bob")

    cursor, changes = store.changes(0)
    assert [(c.kind, c.key) for c in changes] == [
        ("revoke", "alice"), ("reload", "rules"), ("restore", "alice"), ("revoke", "bob")]
    assert [c.seq for c in changes] == sorted(c.seq for c in changes)
    assert cursor == changes[-1].seq == store.cursor()
    assert reload == changes[1]

    assert store.changes(changes[1].seq) == (cursor, changes[2:])
    assert store.changes(cursor) == (cursor, [])
    page_end, page = store.changes(0, limit=2)
    assert page == changes[:2] and page_end == changes[1].seq


def test_two_store_objects_share_one_file(tmp_path):
    path = tmp_path / "state.db"
    with SqliteStateStore(path) as one, SqliteStateStore(path) as two:
        one.revoke("alice")
        assert "alice" in two.revocations()
        assert two.cursor() == one.cursor() == 1
        two.restore("alice")
        assert one.revocations() == {}


def test_new_files_are_private(tmp_path):
    path = tmp_path / "new" / "dir" / "state.db"
    old_umask = os.umask(0)
    try:
        with SqliteStateStore(path) as store:
            store.revoke("alice")
            for name in (path, path.with_name("state.db-wal"), path.with_name("state.db-shm")):
                assert stat.S_IMODE(name.stat().st_mode) == 0o600, name
            assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    finally:
        os.umask(old_umask)


def test_schema_is_versioned_and_wal(tmp_path):
    path = tmp_path / "state.db"
    SqliteStateStore(path).close()
    db = sqlite3.connect(path)
    assert db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone() == ("1",)
    assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    db.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    db.commit()
    db.close()
    with pytest.raises(StateError, match="schema version 99.*upgrade brokerguard"):
        SqliteStateStore(path)


def test_a_file_that_is_not_a_database_is_a_state_error(tmp_path):
    path = tmp_path / "state.db"
    path.write_bytes(b"not sqlite at all" * 100)
    with pytest.raises(StateError, match=str(path)):
        SqliteStateStore(path)


def test_threads_can_share_a_store(store):
    import threading

    def revoke_many(prefix):
        for i in range(50):
            store.revoke(f"{prefix}-{i}")

    threads = [threading.Thread(target=revoke_many, args=(n,)) for n in "abcd"]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(store.revocations()) == 200
    assert store.cursor() == 200


def _revoke_in_forked_child(store):
    store.revoke("from-child")


def test_a_forked_process_opens_its_own_connection(store):
    store.revoke("from-parent")
    child = multiprocessing.get_context("fork").Process(target=_revoke_in_forked_child, args=(store,))
    child.start()
    child.join(10)
    assert child.exitcode == 0
    assert sorted(store.revocations()) == ["from-child", "from-parent"]


# --------------------------------------------------------------------------- watcher

def test_watcher_loads_revocations_and_follows_changes(store):
    seen: list[Change] = []

    async def scenario():
        store.revoke("old")
        watcher = StateWatcher(store, 0.02, seen.append)
        with pytest.raises(StateError, match="not started"):
            watcher.is_revoked("old")
        await watcher.start()
        assert watcher.is_revoked("old") and not watcher.is_revoked("new")
        store.revoke("new")
        store.request_reload("rules")
        store.restore("old")
        await _until(lambda: len(seen) == 3)
        assert watcher.is_revoked("new") and not watcher.is_revoked("old")
        assert watcher.cursor == store.cursor()
        await watcher.stop()

    asyncio.run(scenario())
    assert [(c.kind, c.key) for c in seen] == [("revoke", "new"), ("reload", "rules"), ("restore", "old")]


def test_the_revoked_set_is_current_when_on_change_runs(store):
    async def scenario():
        watcher = StateWatcher(store, 0.01)
        answers = []
        watcher.on_change = lambda change: answers.append(watcher.is_revoked(change.key))
        await watcher.start()
        store.revoke("alice")
        await watcher.poll()
        await watcher.stop()
        return answers

    assert asyncio.run(scenario()) == [True]


def test_watcher_catches_up_on_more_than_a_page(store, monkeypatch):
    from brokerguard import state

    monkeypatch.setattr(state, "POLL_PAGE", 3)

    async def scenario():
        watcher = StateWatcher(store, 10)
        await watcher.start()
        for i in range(10):
            store.revoke(f"s{i}")
        applied = await watcher.poll()
        await watcher.stop()
        return watcher, applied

    watcher, applied = asyncio.run(scenario())
    assert len(applied) == 10 and watcher.cursor == 10
    assert watcher.revoked == {f"s{i}" for i in range(10)}


class FlakyStore:
    """Delegates to a real store, but its feed fails a few times, as a locked or vanished file would."""

    def __init__(self, store, failures):
        self.store = store
        self.failures = failures
        self.calls = 0

    def changes(self, after, limit=1000):
        self.calls += 1
        if self.failures:
            self.failures -= 1
            raise StateError("state store x: database is locked")
        return self.store.changes(after, limit)

    def __getattr__(self, name):
        return getattr(self.store, name)


def test_watcher_survives_store_errors_and_a_failing_callback(store, caplog):
    flaky = FlakyStore(store, failures=5)
    seen = []

    def on_change(change):
        seen.append(change)
        if change.key == "boom":
            raise RuntimeError("callback bug")

    async def scenario():
        watcher = StateWatcher(flaky, 0.01, on_change)
        await watcher.start()
        store.revoke("boom")
        store.revoke("after")
        await _until(lambda: len(seen) == 2)
        await watcher.stop()
        return watcher

    with caplog.at_level("INFO", logger="brokerguard.state"):
        watcher = asyncio.run(scenario())
    assert flaky.calls > 5
    assert watcher.revoked == {"boom", "after"}
    messages = [r.getMessage() for r in caplog.records]
    # One warning per outage, not one per failed poll.
    assert sum("cannot read the state store" in m for m in messages) == 1
    assert any("readable again" in m for m in messages)
    assert any("handling state change" in m for m in messages)


class SlowStore(FlakyStore):
    def changes(self, after, limit=1000):
        time.sleep(0.3)
        return self.store.changes(after, limit)


def test_polling_never_blocks_the_event_loop(store):
    async def scenario():
        watcher = StateWatcher(SlowStore(store, 0), 0.01)
        await watcher.start()
        ticks = 0
        started = time.monotonic()
        while time.monotonic() - started < 0.5:
            await asyncio.sleep(0.01)
            ticks += 1
        await watcher.stop()
        return ticks

    assert asyncio.run(scenario()) > 20


def test_start_fails_when_the_store_cannot_be_read(store):
    class Broken(FlakyStore):
        def revocations(self):
            raise StateError("state store x: disk I/O error")

    with pytest.raises(StateError, match="disk I/O"):
        asyncio.run(StateWatcher(Broken(store, 0), 0.1).start())


def _watch_in_other_process(path, poll_interval_s, ready, report):
    async def watch():
        seen = asyncio.Event()

        def on_change(change):
            report.put((change.kind, change.key, time.time()))
            seen.set()

        watcher = StateWatcher(SqliteStateStore(path), poll_interval_s, on_change)
        await watcher.start()
        ready.set()
        await asyncio.wait_for(seen.wait(), 10)
        report.put(watcher.is_revoked("mallory"))
        await watcher.stop()

    asyncio.run(watch())


def test_another_process_sees_a_revocation_within_one_poll(tmp_path):
    path = tmp_path / "state.db"
    poll_interval_s = 0.1
    spawn = multiprocessing.get_context("spawn")
    ready, report = spawn.Event(), spawn.Queue()
    child = spawn.Process(target=_watch_in_other_process, args=(path, poll_interval_s, ready, report))
    child.start()
    try:
        assert ready.wait(30), "the watching process did not start"
        with SqliteStateStore(path) as store:
            revoked_at = time.time()
            store.revoke("mallory", reason="offboarded", actor="test")
        kind, key, seen_at = report.get(timeout=10)
        assert (kind, key) == ("revoke", "mallory")
        assert report.get(timeout=10) is True
        # One poll interval, plus a margin for scheduling on a busy machine.
        assert seen_at - revoked_at < poll_interval_s + 0.4
    finally:
        child.join(10)
        if child.is_alive():
            child.kill()
    assert child.exitcode == 0


async def _until(condition, timeout=5.0):
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.005)


# --------------------------------------------------------------------------- CLI

def run_cli(*argv):
    top = argparse.ArgumentParser(prog="brokerguard")
    revocation.add_parser(top.add_subparsers(dest="command", required=True))
    args = top.parse_args(argv)
    return args.handler(args)


def test_cli_revoke_list_restore(tmp_path, capsys):
    path = str(tmp_path / "state.db")
    assert run_cli("identities", "list", "--state", path) == 0
    assert "no identity is revoked" in capsys.readouterr().out
    assert not os.path.exists(path)

    assert run_cli("identities", "revoke", "alice", "--reason", "left", "--state", path) == 0
    assert capsys.readouterr().out.startswith("revoked alice at ")
    assert run_cli("identities", "list", "--state", path) == 0
    out = capsys.readouterr().out
    assert "alice" in out and "left" in out

    assert run_cli("identities", "list", "--format", "json", "--state", path) == 0
    [entry] = json.loads(capsys.readouterr().out)
    assert entry["subject"] == "alice" and entry["reason"] == "left"
    assert entry["actor"] and entry["at"].endswith("Z")

    assert run_cli("identities", "restore", "alice", "--state", path) == 0
    assert run_cli("identities", "restore", "alice", "--state", path) == 1
    assert "alice is not revoked" in capsys.readouterr().err


def test_cli_takes_the_path_from_the_gateway_config(tmp_path, capsys):
    state = tmp_path / "shared" / "state.db"
    gateway = tmp_path / "gateway.yaml"
    gateway.write_text(f"state: {{sqlite_path: {state}}}\n"
                       "identity: {credentials_file: users.yaml}\nkafka: {}\n")
    assert run_cli("identities", "revoke", "bob", "--config", str(gateway)) == 0
    assert "bob" in SqliteStateStore(state).revocations()


def test_cli_needs_a_store(capsys):
    with pytest.raises(SystemExit):
        run_cli("identities", "list")
    assert "--config" in capsys.readouterr().err


def test_cli_shows_control_characters_escaped(tmp_path, capsys):
    path = str(tmp_path / "state.db")
    run_cli("identities", "revoke", "evil\x1b[2J", "--state", path)
    run_cli("identities", "list", "--state", path)
    assert "\x1b" not in capsys.readouterr().out


def _open_and_revoke(path: str, start, subject: str) -> None:
    start.wait()
    with SqliteStateStore(path) as store:
        store.revoke(subject, "opened together", "test")


def test_workers_opening_a_new_store_at_once_all_succeed(tmp_path):
    """Workers start together on a store nobody has created yet: switching it to WAL needs the
    file alone, so each must wait its turn rather than fail."""
    context = multiprocessing.get_context("fork")
    path = str(tmp_path / "new" / "state.db")
    for attempt in range(5):
        start = context.Event()
        children = [context.Process(target=_open_and_revoke, args=(f"{path}{attempt}", start, f"s{i}"))
                    for i in range(6)]
        for child in children:
            child.start()
        start.set()
        for child in children:
            child.join(30)
        assert [c.exitcode for c in children] == [0] * 6
        with SqliteStateStore(f"{path}{attempt}") as store:
            assert set(store.revocations()) == {f"s{i}" for i in range(6)}
