"""The JSON lines sink: per-worker files, rotation and retention, torn lines, retried batches, and
the reader's answers, all on real files (a full disk is a real file-size limit in a subprocess)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap

import orjson
import pytest

from brokerguard.audit import events
from brokerguard.audit.chain import verify
from brokerguard.audit.sinks import SessionFilter, SinkContext
from brokerguard.errors import ConfigError
from brokerguard.audit.sessions import in_stream_order
from brokerguard.plugins.sinks.jsonl import JsonLinesSink
from sealing import KEY, Stream



def context(tmp_path, gateway: str = "gw-host:101") -> SinkContext:
    return SinkContext(gateway=gateway, state_dir=tmp_path / "state")


def sink_for(tmp_path, gateway: str = "gw-host:101", **options) -> JsonLinesSink:
    sink = JsonLinesSink.from_config({"type": "jsonl", "dir": str(tmp_path / "audit"), **options},
                                     context(tmp_path, gateway))
    asyncio.run(sink.start())
    return sink


def reader_for(tmp_path) -> JsonLinesSink:
    """A reader as `brokerguard audit verify` builds one: from the config, never started."""
    return JsonLinesSink.from_config({"dir": str(tmp_path / "audit")}, context(tmp_path, "cli:1"))


def session(name: str, identity: str, topic: str, *, denied: bool = False, started: float = 1000.0) -> list[dict]:
    request = {"kind": "request", "time": started + 1, "session": name, "identity": identity, "client_id": "app",
               "api": "Produce", "decision": "deny" if denied else "allow",
               "operations": [{"action": "write", "resource": f"topic:{topic}",
                               "decision": "deny" if denied else "allow"}]}
    end = events.session_end(name, identity, "client closed", 1, 10, 20, started)
    end["time"] = started + 2
    return [events.session_start(name, "kafka", "10.0.0.7:5000", "main", started),
            {**events.login(name, identity, "SCRAM-SHA-512", True), "time": started + 0.5}, request, end]


def padded(n: int, size: int = 600) -> list[dict]:
    return [{"kind": "request", "time": 1000.0 + i, "session": "s-pad", "note": "x" * size} for i in range(n)]


def files(tmp_path) -> list[str]:
    return sorted(os.listdir(tmp_path / "audit"))


# --------------------------------------------------------------------------- writing

def test_each_event_is_one_line_of_the_workers_own_file(tmp_path):
    sink, stream = sink_for(tmp_path), Stream("gw-host:101")
    written = stream.start() + stream.seal(session("s1", "alice", "orders")) + stream.end()
    sink.write(written[:3])
    sink.write(written[3:])
    asyncio.run(sink.close())

    assert files(tmp_path) == ["audit-gw_host_101.jsonl"]
    lines = (tmp_path / "audit" / "audit-gw_host_101.jsonl").read_bytes().splitlines(keepends=True)
    assert lines == [sealed.line + b"\n" for sealed in written]
    read = list(reader_for(tmp_path).events())
    assert read == [sealed.event for sealed in written]
    result = verify(read, KEY)
    assert result.intact and result.events == 6 and not result.open_streams


def test_fsync_after_each_batch_still_writes_every_line(tmp_path):
    sink, stream = sink_for(tmp_path, fsync=True, max_bytes=4096), Stream("gw-host:101")
    for _ in range(4):
        sink.write(stream.seal(padded(3)))
    asyncio.run(sink.close())
    assert len(list(reader_for(tmp_path).events())) == 12


def test_rotates_before_a_file_would_exceed_max_bytes_and_keeps_the_newest(tmp_path):
    sink, stream = sink_for(tmp_path, max_bytes=4096, keep=2), Stream("gw-host:101")
    for _ in range(8):
        sink.write(stream.seal(padded(3)))  # about 2 KiB a batch: a new file every other batch or so
    asyncio.run(sink.close())

    names = files(tmp_path)
    rotated = [name for name in names if name != "audit-gw_host_101.jsonl"]
    assert "audit-gw_host_101.jsonl" in names and len(rotated) == 2
    for name in rotated:
        writer, stamp, n = name[len("audit-"):-len(".jsonl")].split("-")
        assert writer == "gw_host_101" and len(stamp) == 16 and stamp.endswith("Z") and int(n) > 2
    for name in names:
        assert 0 < os.path.getsize(tmp_path / "audit" / name) <= 4096
    # The oldest files are gone: what is left is the end of the stream, in order, without gaps.
    indexes = [event["index"] for event in reader_for(tmp_path).events()]
    assert indexes == list(range(indexes[0], 24)) and indexes[0] > 0
    problems = verify(reader_for(tmp_path).events(), KEY).problems
    assert [problem.what for problem in problems] == [f"events 0 to {indexes[0] - 1} removed "
                                                      f"(the stream jumps to {indexes[0]})"]


def test_keep_zero_deletes_rotated_files_at_once(tmp_path):
    sink, stream = sink_for(tmp_path, max_bytes=4096, keep=0), Stream("gw-host:101")
    for _ in range(6):
        sink.write(stream.seal(padded(3)))
    asyncio.run(sink.close())
    assert files(tmp_path) == ["audit-gw_host_101.jsonl"]


def test_an_event_larger_than_max_bytes_gets_a_file_of_its_own(tmp_path):
    sink, stream = sink_for(tmp_path, max_bytes=4096), Stream("gw-host:101")
    sink.write(stream.seal(padded(1, 100)))
    sink.write(stream.seal(padded(1, 10_000)))
    sink.write(stream.seal(padded(1, 100)))
    asyncio.run(sink.close())
    sizes = sorted(os.path.getsize(tmp_path / "audit" / name) for name in files(tmp_path))
    assert len(sizes) == 3 and sizes[-1] > 10_000
    assert [e["index"] for e in reader_for(tmp_path).events()] == [0, 1, 2]


# --------------------------------------------------------------------------- several workers

def test_two_workers_write_their_own_files_and_one_reader_reads_both(tmp_path):
    one, two = sink_for(tmp_path, "gw-a:1"), sink_for(tmp_path, "gw-b:2")
    first, second = Stream("gw-a:1"), Stream("gw-b:2")
    one.write(first.start())
    two.write(second.start())
    one.write(first.seal(session("s1", "alice", "orders", started=1000)))
    two.write(second.seal(session("s2", "bob", "payments", denied=True, started=2000)))
    one.write(first.end())
    two.write(second.end())
    for sink in (one, two):
        asyncio.run(sink.close())

    assert files(tmp_path) == ["audit-gw_a_1.jsonl", "audit-gw_b_2.jsonl"]
    read = list(reader_for(tmp_path).events())
    for stream in (first.chain.stream, second.chain.stream):
        assert [e["index"] for e in read if e["stream"] == stream] == list(range(6))
    result = verify(read, KEY)
    assert result.intact and result.streams == 2 and result.events == 12


def test_a_second_writer_under_the_same_name_is_refused(tmp_path):
    sink_for(tmp_path, "gw-a:1")
    with pytest.raises(ConfigError, match=r"audit-gw_a_1\.jsonl is in use by another writer"):
        sink_for(tmp_path, "gw-a:1")


def test_a_starting_worker_retires_the_files_of_workers_that_are_gone(tmp_path):
    gone, stream = sink_for(tmp_path, "gw-a:1"), Stream("gw-a:1")
    gone.write(stream.start() + stream.seal(session("s1", "alice", "orders")))
    asyncio.run(gone.close())  # as when its process exits: the lock goes with it
    last_write = 1_767_225_600  # 2026-01-01T00:00:00Z
    os.utime(tmp_path / "audit" / "audit-gw_a_1.jsonl", (last_write, last_write))
    (tmp_path / "audit" / "audit-gw_c_3.jsonl").touch()  # one that died before writing
    live = sink_for(tmp_path, "gw-b:2")

    names = files(tmp_path)
    assert "audit-gw_a_1.jsonl" not in names and "audit-gw_c_3.jsonl" not in names
    assert "audit-gw_b_2.jsonl" in names
    assert "audit-gw_a_1-20260101T000000Z-1.jsonl" in names  # dated by its last write
    assert len(list(reader_for(tmp_path).events())) == 5
    asyncio.run(live.close())


def test_a_live_workers_file_is_not_retired(tmp_path):
    sink_for(tmp_path, "gw-a:1")
    sink_for(tmp_path, "gw-b:2")
    assert files(tmp_path) == ["audit-gw_a_1.jsonl", "audit-gw_b_2.jsonl"]


WRITER = textwrap.dedent("""
    import asyncio, sys
    from brokerguard.audit.chain import Chain
    from brokerguard.audit.sinks import Sealed, SinkContext
    from brokerguard.plugins.sinks.jsonl import JsonLinesSink

    directory, gateway, key = sys.argv[1], sys.argv[2], sys.argv[3].encode()
    sink = JsonLinesSink.from_config({"dir": directory, "max_bytes": 8192, "keep": 10000},
                                     SinkContext(gateway, directory))
    asyncio.run(sink.start())
    chain = Chain(gateway + ":18f:abcdef", key)
    for batch in range(150):
        events = [{"kind": "request", "time": batch + i / 10, "session": gateway, "note": "x" * 150 * i}
                  for i in range(5)]
        sink.write([Sealed(event, chain.seal(event)) for event in events])
    event = {"kind": "stream_end", "time": 999.0, "gateway": gateway}
    sink.write([Sealed(event, chain.seal(event))])
    asyncio.run(sink.close())
""")


def test_worker_processes_write_one_dir_while_it_is_read(tmp_path):
    directory = tmp_path / "audit"
    directory.mkdir()
    workers = [subprocess.Popen([sys.executable, "-c", WRITER, str(directory), f"gw-{n}:{n}", KEY.decode()],
                                stderr=subprocess.PIPE, text=True) for n in (1, 2)]
    reads = 0
    while any(worker.poll() is None for worker in workers) or reads == 0:
        # Files rotate under the reader: what it returns is always each stream's unbroken start.
        result = verify(reader_for(tmp_path).events(), KEY)
        assert result.intact, result.problems
        reads += 1
    for worker in workers:
        assert worker.wait(60) == 0, worker.stderr.read()
    read = list(reader_for(tmp_path).events())
    result = verify(read, KEY)
    assert result.intact and result.events == 2 * 751 and not result.open_streams
    assert len(os.listdir(directory)) > 10  # it did rotate


# --------------------------------------------------------------------------- damage and repeats

def test_a_torn_last_line_is_skipped_and_the_next_writer_starts_a_new_line(tmp_path):
    sink, stream = sink_for(tmp_path), Stream("gw-host:101")
    sink.write(stream.start() + stream.seal(session("s1", "alice", "orders")))
    asyncio.run(sink.close())
    path = tmp_path / "audit" / "audit-gw_host_101.jsonl"
    torn = stream.seal(padded(1))[0]
    with open(path, "ab") as file:
        file.write(torn.line[:40])  # the crash came mid-write

    assert [e["index"] for e in reader_for(tmp_path).events()] == [0, 1, 2, 3, 4]

    # The same host:pid after a restart (a container's pid 1) continues the same file.
    again, restarted = sink_for(tmp_path), Stream("gw-host:101", "1a0:123456")
    started = restarted.start()
    again.write(started)
    asyncio.run(again.close())
    assert path.read_bytes().endswith(torn.line[:40] + b"\n" + started[0].line + b"\n")
    read = list(reader_for(tmp_path).events())
    assert len(read) == 6 and started[0].event in read
    # The torn event is lost, not hidden: its stream has no end, and nothing else is wrong.
    result = verify(read, KEY)
    assert result.intact and sorted(result.open_streams) == sorted([stream.chain.stream, restarted.chain.stream])


def test_a_retried_batch_is_read_once(tmp_path):
    sink, stream = sink_for(tmp_path), Stream("gw-host:101")
    batch = stream.start() + stream.seal(session("s1", "alice", "orders"))
    sink.write(batch)
    sink.write(batch)  # the bus retries a batch whose write raised after part of it was stored
    sink.write(stream.end())
    asyncio.run(sink.close())

    read = list(reader_for(tmp_path).events())
    assert [e["index"] for e in read] == list(range(6))
    assert verify(read, KEY).intact


def test_a_partly_written_batch_is_retried_on_a_line_of_its_own(tmp_path):
    """A full disk, for real: a file-size limit stops the write midway, the bus retries."""
    script = textwrap.dedent(f"""
        import asyncio, resource, signal
        from brokerguard.audit.chain import Chain
        from brokerguard.audit.sinks import Sealed, SinkContext
        from brokerguard.plugins.sinks.jsonl import JsonLinesSink

        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of being killed
        sink = JsonLinesSink.from_config({{"dir": {str(tmp_path / "audit")!r}}},
                                         SinkContext("gw-host:101", {str(tmp_path)!r}))
        asyncio.run(sink.start())
        chain = Chain("gw-host:101:18f:abcdef", {KEY!r})
        events = [{{"kind": "request", "time": 1000.0 + i, "session": "s", "note": "x" * 300}} for i in range(10)]
        batch = [Sealed(event, chain.seal(event)) for event in events]
        soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
        resource.setrlimit(resource.RLIMIT_FSIZE, (1500, hard))
        try:
            sink.write(batch)
        except OSError as err:
            print("write failed:", err.strerror)
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        sink.write(batch)
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "write failed: File too large" in result.stdout
    data = (tmp_path / "audit" / "audit-gw_host_101.jsonl").read_bytes()
    # The limit cut a line; the retry ended that piece first, then wrote the whole batch again.
    assert data[1499:1500] != b"\n" and data[1500:1501] == b"\n" and data[1501:].count(b"\n") == 10
    read = list(reader_for(tmp_path).events())
    assert [e["index"] for e in read] == list(range(10))
    assert verify(read, KEY).intact


def test_a_different_event_under_the_same_index_is_shown_not_hidden(tmp_path):
    sink, stream = sink_for(tmp_path), Stream("gw-host:101")
    sealed = stream.start() + stream.seal(session("s1", "alice", "orders")) + stream.end()
    sink.write(sealed)
    asyncio.run(sink.close())
    forged = {**sealed[3].event, "decision": "deny"}  # someone rewrites what the request was
    with open(tmp_path / "audit" / "audit-gw_host_101.jsonl", "ab") as file:
        file.write(orjson.dumps(forged) + b"\n")

    read = list(reader_for(tmp_path).events())
    assert [e["index"] for e in read] == [0, 1, 2, 3, 3, 4, 5]
    assert read[3] == sealed[3].event and read[4] == forged
    result = verify(read, KEY)
    assert [str(problem) for problem in result.problems] == [
        f"stream {stream.chain.stream} event 3: appears twice (a copy was inserted)"]


def test_in_stream_order_keeps_one_of_equal_copies_and_every_different_one():
    a = {"stream": "s", "index": 0, "hash": "1"}
    b = {"stream": "s", "index": 1, "hash": "2"}
    forged = {"stream": "s", "index": 1, "hash": "3"}
    stray = {"kind": "note"}
    assert in_stream_order([b, stray, a, dict(b), forged, {"stream": "r", "index": 0}]) == [
        {"stream": "r", "index": 0}, a, b, forged, stray]


def test_lines_that_are_not_events_are_skipped(tmp_path, caplog):
    sink, stream = sink_for(tmp_path), Stream("gw-host:101")
    sink.write(stream.start())
    asyncio.run(sink.close())
    with open(tmp_path / "audit" / "audit-gw_host_101.jsonl", "ab") as file:
        file.write(b'{"kind": "req\n[1, 2]\n\n')
    assert len(list(reader_for(tmp_path).events())) == 1
    assert "audit-gw_host_101.jsonl line 2 is not an event; skipped" in caplog.text


# --------------------------------------------------------------------------- reading

def test_sessions_are_summarized_newest_first_and_filtered(tmp_path):
    one, two = sink_for(tmp_path, "gw-a:1"), sink_for(tmp_path, "gw-b:2")
    first, second = Stream("gw-a:1"), Stream("gw-b:2")
    one.write(first.start() + first.seal(session("s1", "alice", "orders", started=1000)))
    two.write(second.start() + second.seal(session("s2", "bob", "payments", denied=True, started=2000)))
    one.write(first.seal(session("s3", "alice", "payments", started=3000)))
    reader = reader_for(tmp_path)

    everything = reader.sessions(SessionFilter())
    assert [s["session"] for s in everything] == ["s3", "s2", "s1"]
    s2 = everything[1]
    assert s2 == {"session": "s2", "started": 2000, "adapter": "kafka", "peer": "10.0.0.7:5000",
                  "listener": "main", "gateway": "gw-b:2", "identity": "bob", "auth": "SCRAM-SHA-512",
                  "client_id": "app", "software": None, "ended": 2002, "end_reason": "client closed",
                  "requests": 1, "denied": 1, "topics": ["payments"]}
    assert [s["session"] for s in reader.sessions(SessionFilter(identity="alice"))] == ["s3", "s1"]
    assert [s["session"] for s in reader.sessions(SessionFilter(topic="payments"))] == ["s3", "s2"]
    assert [s["session"] for s in reader.sessions(SessionFilter(decision="deny"))] == ["s2"]
    assert [s["session"] for s in reader.sessions(SessionFilter(since=1500, limit=1))] == ["s3"]

    kinds = [e["kind"] for e in reader.session_events("s2")]
    assert kinds == ["session_start", "login", "request", "session_end"]
    assert reader.session_events("nobody") == []


def test_reading_a_directory_that_does_not_exist_says_so(tmp_path):
    with pytest.raises(ConfigError, match=r"`dir` .*audit is not a directory"):
        list(reader_for(tmp_path).events())


# --------------------------------------------------------------------------- options

@pytest.mark.parametrize(
    "options, message",
    [
        ({}, "audit sink jsonl: `dir` is required"),
        ({"dir": 7}, "audit sink jsonl: `dir` must be text, not 7"),
        ({"dir": ""}, "audit sink jsonl: `dir` must name a directory"),
        ({"dir": "a", "max_bytes": "1M"}, "audit sink jsonl: `max_bytes` must be a whole number, not '1M'"),
        ({"dir": "a", "max_bytes": 100}, "audit sink jsonl: `max_bytes` must be at least 4096, not 100"),
        ({"dir": "a", "keep": -1}, "audit sink jsonl: `keep` must be 0 or more, not -1"),
        ({"dir": "a", "keep": True}, "audit sink jsonl: `keep` must be a whole number, not True"),
        ({"dir": "a", "fsync": "yes"}, "audit sink jsonl: `fsync` must be true or false, not 'yes'"),
        ({"dir": "a", "rotate": 1}, "audit sink jsonl: unknown option rotate (it takes dir, max_bytes, keep, fsync)"),
    ],
)
def test_option_mistakes_name_the_option_and_why(tmp_path, options, message):
    with pytest.raises(ConfigError) as caught:
        JsonLinesSink.from_config(options, context(tmp_path))
    assert str(caught.value) == message


def test_a_directory_that_cannot_be_created_fails_at_start(tmp_path):
    (tmp_path / "file").write_text("")
    sink = JsonLinesSink.from_config({"dir": str(tmp_path / "file" / "audit")}, context(tmp_path))
    with pytest.raises(ConfigError, match="cannot create `dir` .*file/audit"):
        asyncio.run(sink.start())
