"""Where a Fetch's time goes: the consumer's turn, the broker's and the gateway's, masked and not.

    .venv/bin/python bench/fetch_turns.py --records 3000000 --rounds 2

ConsumerPerformance's consumer has one Fetch in flight per partition, so the consumer, the
broker and the gateway take turns. This runs the bench's JSON records through one audited
gateway (as `make bench` does) to a topic whose records it masks and to one it leaves alone,
and times each turn from inside the worker: a sitecustomize module, found first on the worker's
PYTHONPATH, wraps the connection's callbacks with a clock and appends to a trace file. Nothing
in the gateway itself changes. Per topic it prints medians and 90th percentiles, over the
fetches of 256 KiB or more, of:

- consumer: from the answer written to the consumer's next Fetch read and forwarded;
- broker, first bytes: from then to the first bytes of the broker's answer;
- broker, the rest: from those to the last of the answer;
- gateway: from the whole answer read to the answer written (masked or not);
- masking: the part of that spent masking the batches; helper start: how long after the
  masking began the second masking thread took its first batch.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import kafka_tools as kt  # noqa: E402
from devstack.kafka import KafkaBroker  # noqa: E402
from harness import Gateway, java_client_properties  # noqa: E402
from run import Topics, audit_section  # noqa: E402

LARGE = 256 * 1024  # an answer at least this large is a full fetch, not a heartbeat's or a metadata one
TRACE_ENV = "BROKERGUARD_FETCH_TURNS"

# Each line: kind, a start clock or 0, the clock when written, a count. q: a request read from
# the client; u: bytes read from the broker; r: an answer delivered (its bytes); m: batches
# masked (from its start clock); h: the helper's first batch (at its start clock).
TRACER = '''
import os, time
from brokerguard.plugins.kafka import connection, content

_path, _lines, _helper_started = os.environ["%s"], [], []


def _note(kind, start, count):
    _lines.append(f"{kind} {start:.6f} {time.perf_counter():.6f} {count}\\n")
    if kind == "r":  # after each answer: the file is whole whenever the consumer is done
        with open(_path, "a") as out:
            out.write("".join(_lines))
        _lines.clear()


def _timed(cls, name, kind, count):
    method = getattr(cls, name)

    def wrapper(*args):
        start = time.perf_counter()
        try:
            return method(*args)
        finally:
            _note(kind, start, count(args))
    setattr(cls, name, wrapper)


_timed(connection.ClientConnection, "buffer_updated", "q", lambda args: args[1])
_timed(connection.UpstreamConnection, "buffer_updated", "u", lambda args: args[1])
_timed(connection.ClientConnection, "deliver", "r", lambda args: args[2])
_masked_batches, _helper = content._masked_batches, content._helper


def _masked(batches, *args):
    _helper_started.clear()
    start = time.perf_counter()
    out = _masked_batches(batches, *args)
    _note("m", start, len(batches))
    if _helper_started:
        _note("h", _helper_started[0], 0)
    return out


class _Helper:
    def submit(self, work):
        def started():
            _helper_started.append(time.perf_counter())
            return work()
        return _helper().submit(started)


content._masked_batches = _masked
content._helper = _Helper
''' % TRACE_ENV


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--records", type=int, default=3_000_000, help="JSON records per topic and round")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--tool-timeout", type=float, default=300)
    return p.parse_args(argv)


def main(argv=None) -> int:
    a = parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="fetch-turns-", dir=ROOT / ".devstack"))
    (work / "tracer").mkdir()
    (work / "tracer" / "sitecustomize.py").write_text(TRACER)
    broker = KafkaBroker(work / "kafka", keep_work_dir=False)
    broker.start()
    topics = Topics(broker.bootstrap)
    gateway = Gateway(broker, work / "gateway", workers=1, upstream="sasl", audit=audit_section())
    gateway.env["PYTHONPATH"] = str(work / "tracer")
    gateway.env[TRACE_ENV] = str(work / "trace")
    gateway.start()
    try:
        properties = java_client_properties(gateway.work_dir / "client.properties")
        payloads = work / "events.json"
        kt.write_json_payloads(payloads)
        traces: dict[str, list[Path]] = {"masked": [], "not masked": []}
        for round_no in range(a.rounds):
            for family, label in (("bench-content", "masked"), ("bench-json", "not masked")):
                topic = f"{family}.turns{round_no}"
                topics.create([topic])
                kt.run_tool(kt.PRODUCER_PERF, *kt.json_producer_args(broker.bootstrap, topic, a.records, payloads),
                            timeout=a.tool_timeout)
                trace = work / "trace"
                trace.unlink(missing_ok=True)
                out = kt.run_tool(kt.CONSUMER_PERF, *kt.consumer_args(
                    gateway.bootstrap, topic, a.records, f"{topic}-group", properties), timeout=a.tool_timeout)
                rate = kt.parse_consumer(out.stdout)["records_per_s"]
                print(f"round {round_no} {label:10} {rate:10.0f} records/s", flush=True)
                kept = work / f"trace-{round_no}-{family}"
                trace.rename(kept)
                traces[label].append(kept)
                topics.delete([topic])
    finally:
        topics.close()
        gateway.stop()
        broker.stop()
    for label, files in traces.items():
        _report(label, [turn for path in files for turn in turns(path)])
    return 0


def turns(path: Path) -> list[dict]:
    """One dict of durations (seconds) per large answer in a trace file."""
    out: list[dict] = []
    asked = first = masking = helper = answered = None
    for line in path.read_text().splitlines():
        kind, start, now, count = line.split()
        start, now = float(start), float(now)
        if kind == "q":
            consumer = now - answered if answered is not None else None
            asked, first = now, None
        elif kind == "u" and asked is not None and first is None:
            first = now
        elif kind == "m":
            masking, helper = (start, now), None
        elif kind == "h":
            helper = start
        elif kind == "r" and int(count) >= LARGE and asked is not None and first is not None:
            out.append({"consumer": consumer, "broker, first bytes": first - asked, "broker, the rest": start - first,
                        "gateway": now - start,
                        "masking": masking[1] - masking[0] if masking else None,
                        "helper start": helper - masking[0] if masking and helper else None})
            answered, asked, masking = now, None, None
    return out


def _report(label: str, rows: list[dict]) -> None:
    print(f"\n{label}: {len(rows)} fetches (ms: median, 90th percentile)")
    for key in (rows[0] if rows else {}):
        values = sorted(row[key] for row in rows if row[key] is not None)
        if values:
            print(f"  {key:20} {statistics.median(values) * 1e3:7.3f} {values[int(0.9 * len(values))] * 1e3:7.3f}")


if __name__ == "__main__":
    sys.exit(main())
