"""`make bench`: Kafka's own performance tools, direct to the broker and through the gateway.

One real broker, one gateway worker per upstream variant (SCRAM-SHA-512 to the SASL listener;
PLAINTEXT to the plain listener unless --no-plain-upstream), and the foundation's pass-through
gateway built from a git ref (bench/foundation.py), all in one run; then the pytest-benchmark
cases of the decision path (bench_policy.py, bench_authorize.py). The tools log in
to each gateway as the test account (SASL SCRAM-SHA-512; tests/rules lets it do everything, so
every request is authorized and allowed); the direct baseline uses the broker's PLAINTEXT
listener without logging in. Each round runs
every tool once per path, the order of the paths rotating from round to round, so a slow
moment on a shared machine hits every path alike; the report gives the median and the range.
The gateway's CPU time comes from /proc/<worker pid>/stat around each run, how busy the machine
was and how much of its time the hypervisor gave to other guests from /proc/stat.

    .venv/bin/python bench/run.py                                  # the full run (~10 min)
    .venv/bin/python bench/run.py --records 50000 --rounds 1 \\
        --latency-records 1000 --probe-records 300 --out-dir /tmp/bench   # a quick look
    .venv/bin/python bench/run.py --only content --rounds 9      # the data-protection targets

Writes results.json (every run) and RESULTS.md (the summary) to --out-dir. `--only content`
runs just the JSON rounds (validated produce, masked consume) through direct and the audited
and audit-off gateways, and the same records through the audited gateway and the pass-through
to a topic without content rules (what the path costs before any content work), about 150 s a
round: more rounds in the same time narrow the per-round ratios those targets are judged on.
It writes to .devstack/bench-content unless --out-dir says otherwise, so bench/RESULTS.md keeps
the full run.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import resource
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import foundation  # noqa: E402
import kafka_tools as kt  # noqa: E402
import report  # noqa: E402
from devstack.kafka import KafkaBroker  # noqa: E402
from harness import Gateway, auth, free_port_range, java_client_properties  # noqa: E402

from brokerguard.config import AuditConfig  # noqa: E402

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
AUDIT_FLUSH_MS = AuditConfig().flush_interval_ms
AUDIT_DIGEST = AuditConfig().digest


def audit_section(flush_ms: int = AUDIT_FLUSH_MS, digest: str = AUDIT_DIGEST) -> dict:
    """An audited gateway's audit config: SQLite, a digest of each produce's records."""
    return {"capture": "digest", "digest": digest, "flush_interval_ms": flush_ms}


@dataclass
class Route:
    """One way for the clients to reach the broker, and how its clients log in (if they must)."""
    name: str
    label: str
    bootstrap: str
    gateway: Gateway | None = None
    pid: int | None = None  # the gateway worker's
    java_config: Path | None = None  # the Java tools' --command-config
    security: dict = field(default_factory=dict)  # librdkafka settings for the probe


def cpu_seconds(pid: int) -> float:
    """utime + stime of every thread of `pid` so far."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2:].split()  # the name may hold spaces and parentheses
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def tool_cpu_seconds() -> float:
    """User + system CPU seconds of this process's finished children: the Java tools, which are
    waited for when they end (the broker and the gateways run on, so they are not in it)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def host_ticks() -> tuple[int, int, int]:
    """(all, idle, stolen) clock ticks of the whole machine so far, from /proc/stat. Stolen ticks
    are those the hypervisor gave to other guests while this one had work: on a shared VM they
    slow every route, by a share that changes from minute to minute."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    # user nice system idle iowait irq softirq steal (guest times are inside user already)
    return sum(fields[:8]), fields[3] + fields[4], fields[7]


def host_shares(before: tuple[int, int, int]) -> tuple[float | None, float | None]:
    """(busy, stolen): the machine's shares of its clock ticks since host_ticks() gave `before`."""
    ticks, idle, stolen = (after - start for start, after in zip(before, host_ticks()))
    return (round(1 - idle / ticks, 3), round(stolen / ticks, 3)) if ticks else (None, None)


def worker_pid(gateway: Gateway) -> int:
    # With one worker the `brokerguard run` process serves itself; the log names it either way.
    for line in reversed(gateway.log().splitlines()):  # the log file may hold earlier runs
        if line.endswith(" ready") and " worker " in line:
            return int(line.rsplit(" ", 2)[-2])
    return gateway.process.pid


class Topics:
    """Topics created on the broker's PLAINTEXT listener, one partition each."""

    def __init__(self, bootstrap: str) -> None:
        from confluent_kafka.admin import AdminClient

        self.admin = AdminClient({"bootstrap.servers": bootstrap})

    def create(self, names: list[str]) -> None:
        from confluent_kafka.admin import NewTopic

        futures = self.admin.create_topics([NewTopic(n, 1, 1) for n in names], operation_timeout=30)
        for future in futures.values():
            future.result(60)
        # Metadata may lag the controller by a moment; wait until every name is listed.
        deadline = time.monotonic() + 30
        while set(names) - set(self.admin.list_topics(timeout=10).topics):
            if time.monotonic() > deadline:
                raise RuntimeError(f"topics not visible after 30 s: {names}")
            time.sleep(0.1)

    def delete(self, names: list[str]) -> None:
        for future in self.admin.delete_topics(names, operation_timeout=30).values():
            future.result(60)

    def close(self) -> None:
        # librdkafka handles close when collected; before the broker stops, so nothing logs.
        del self.admin


class Bench:
    def __init__(self, args: argparse.Namespace, broker: KafkaBroker, routes: list[Route]) -> None:
        self.args = args
        self.broker = broker
        self.routes = routes
        self.topics = Topics(broker.bootstrap)
        self.runs: list[dict] = []
        # JSON records for the content runs: validated on produce and masked on consume by the
        # gateway (tests/rules/content.yaml's bench-content.* topics), plain JSON direct.
        self.payloads = Path(tempfile.mkdtemp(prefix="bench-payloads-")) / "events.json"
        self.payload_size = kt.write_json_payloads(self.payloads)
        # The audit-off gateway too: the audit trail's share of a validated produce.
        self.content_routes = [r for r in routes if r.name in (report.DIRECT, report.PRIMARY, report.UNAUDITED)]
        # And to a topic without content rules: the path's own cost, before any content work.
        self.unchecked_routes = [r for r in routes if r.name in report.UNCHECKED_ROUTES]

    def warm_up(self) -> None:
        """Unmeasured: the broker's JIT and every route's code paths (the JSON ones too), before
        round 1."""
        a = self.args
        records, json_records = max(1000, a.records // 10), max(1000, a.json_records // 10)
        plain_routes = self.routes if a.only == "all" else []
        names = {r.name: f"bench-warmup-{r.name}" for r in plain_routes}
        json_names = {r.name: f"bench-content.warmup-{r.name}" for r in self.content_routes}
        self.topics.create([*names.values(), *json_names.values()])
        for r in plain_routes:
            kt.run_tool(kt.PRODUCER_PERF, *kt.producer_args(r.bootstrap, names[r.name], records, a.record_size,
                                                            r.java_config), timeout=a.tool_timeout)
            kt.run_tool(kt.CONSUMER_PERF, *kt.consumer_args(r.bootstrap, names[r.name], records,
                                                            f"{names[r.name]}-group", r.java_config),
                        timeout=a.tool_timeout)
        for r in self.content_routes:
            self._produce_json(r, json_names[r.name], json_records)
            self._consume(r, json_names[r.name], json_records)
        self.topics.delete([*names.values(), *json_names.values()])

    def close(self) -> None:
        self.topics.close()

    def measure(self, tool: str, route: Route, round_no: int, work) -> dict:
        """Run `work()` (returns metrics); add wall time and gateway/broker CPU seconds."""
        os.sync()  # the previous run's dirty pages are written back now, not during this one
        gw0 = cpu_seconds(route.pid) if route.pid else None
        broker0 = cpu_seconds(self.broker.pid)
        host0 = host_ticks()
        tool0 = tool_cpu_seconds()
        started = time.monotonic()
        metrics = work()
        seconds = time.monotonic() - started
        busy, stolen = host_shares(host0)
        tool_cpu = tool_cpu_seconds() - tool0
        row = {"round": round_no, "route": route.name, "tool": tool, **metrics,
               "wall_s": round(seconds, 3),
               "broker_cpu_s": round(cpu_seconds(self.broker.pid) - broker0, 3),
               "machine_busy": busy, "stolen": stolen}
        if tool_cpu:  # the probe runs in this process, not as a tool
            row["tool_cpu_s"] = round(tool_cpu, 3)
        if route.gateway is not None:
            if route.gateway.process.poll() is not None:
                raise RuntimeError(f"gateway {route.name} exited:\n{route.gateway.log()[-4000:]}")
            row["gateway_cpu_s"] = round(cpu_seconds(route.pid) - gw0, 3)
            if "bytes" in metrics:
                row["gateway_cpu_s_per_gb"] = round(row["gateway_cpu_s"] / (metrics["bytes"] / 1e9), 3)
        self.runs.append(row)
        print(f"  round {round_no} {tool:8} {route.name:13} {_brief(row)}", flush=True)
        return row

    def round(self, round_no: int) -> None:
        a = self.args
        if a.only == "content":
            self.content_round(round_no)
            return
        shift = (round_no - 1) % len(self.routes)
        order = self.routes[shift:] + self.routes[:shift]
        data = {r.name: f"bench-{round_no}-{r.name}" for r in order}
        e2e = {r.name: f"bench-{round_no}-{r.name}-e2e" for r in order}
        probe = {r.name: f"bench-{round_no}-{r.name}-probe" for r in order}
        names = [*data.values(), *e2e.values(), *probe.values()]
        self.topics.create(names)
        for r in order:
            self.measure("produce", r, round_no, lambda r=r: kt.parse_producer(kt.run_tool(
                kt.PRODUCER_PERF, *kt.producer_args(r.bootstrap, data[r.name], a.records, a.record_size,
                                                    r.java_config),
                timeout=a.tool_timeout).stdout, a.record_size))
        for r in order:
            self.measure("consume", r, round_no, lambda r=r: self._consume(r, data[r.name], a.records))
        for r in order:
            self.measure("e2e", r, round_no, lambda r=r: kt.parse_end_to_end(kt.run_tool(
                kt.END_TO_END, *kt.end_to_end_args(r.bootstrap, e2e[r.name], a.latency_records,
                                                   a.record_size, r.java_config),
                timeout=a.tool_timeout).stdout))
        for r in order:
            self.measure("probe", r, round_no, lambda r=r: kt.latency_probe(
                r.bootstrap, probe[r.name], a.probe_records, a.record_size, security=r.security))
        self.topics.delete(names)  # 500 MB per data topic: keep the disk and page cache small
        self.content_round(round_no)

    def content_round(self, round_no: int) -> None:
        """JSON produce (validated by the gateway) and consume (masked by it) against direct."""
        a = self.args
        routes = self.content_routes + [r for r in self.unchecked_routes if r not in self.content_routes]
        shift = (round_no - 1) % len(routes)
        order = routes[shift:] + routes[:shift]
        topics = {r.name: f"bench-content.{round_no}-{r.name}" for r in self.content_routes}
        plain = {r.name: f"bench-json.{round_no}-{r.name}" for r in self.unchecked_routes}
        self.topics.create([*topics.values(), *plain.values()])
        # Every produce before any consume: each consumer reads what its route just produced.
        for run, tools in ((self._produce_json, ("produce-json", "produce-json-unchecked")),
                           (self._consume, ("consume-json", "consume-json-unmasked"))):
            for r in order:
                for tool, names in zip(tools, (topics, plain)):
                    if r.name in names:
                        self.measure(tool, r, round_no, functools.partial(run, r, names[r.name], a.json_records))
        self.topics.delete([*topics.values(), *plain.values()])

    def _produce_json(self, route: Route, topic: str, records: int) -> dict:
        out = kt.run_tool(kt.PRODUCER_PERF, *kt.json_producer_args(
            route.bootstrap, topic, records, self.payloads, route.java_config), timeout=self.args.tool_timeout)
        return kt.parse_producer(out.stdout, self.payload_size)

    def _consume(self, route: Route, topic: str, records: int) -> dict:
        out = kt.run_tool(kt.CONSUMER_PERF, *kt.consumer_args(
            route.bootstrap, topic, records, f"{topic}-group", route.java_config),
            timeout=self.args.tool_timeout)
        metrics = kt.parse_consumer(out.stdout)
        if metrics["records"] < records:
            raise kt.ToolError(f"ConsumerPerformance read {metrics['records']} of {records} "
                               f"records via {route.name}:\n{out.stdout[-3000:]}")
        return metrics


def _brief(row: dict) -> str:
    if "mb_per_s" in row:
        text = f"{row['mb_per_s']:8.1f} MB/s {row['records_per_s']:10.0f} rec/s"
    else:
        text = f"avg {row['avg_ms']:.3f} ms  p50 {row['p50_ms']} ms  p99 {row['p99_ms']} ms"
    if "gateway_cpu_s" in row:
        text += f"  gateway {row['gateway_cpu_s']:.2f} CPU-s"
    if "tool_cpu_s" in row:
        text += f"  tool {row['tool_cpu_s']:.2f} CPU-s"
    if row.get("stolen") is not None:
        text += f"  machine busy {row['machine_busy']:.0%}, stolen {row['stolen']:.0%}"
    return text + f"  ({row['wall_s']:.1f} s)"


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--records", type=int, default=500_000, help="records per produce/consume run")
    p.add_argument("--record-size", type=int, default=1024, help="bytes per record value")
    p.add_argument("--rounds", type=int, default=3)
    # Each tool's clock starts before its first login, and each run is a new JVM that compiles its
    # hot code as it goes: three million records reach the direct consumer's speed, one million
    # did not (the report's JSON consume line says by how much).
    p.add_argument("--json-records", type=int, default=3_000_000,
                   help="JSON records (~300 bytes) per validated-produce and masked-consume run")
    p.add_argument("--latency-records", type=int, default=3_000, help="EndToEndLatency records per run")
    p.add_argument("--probe-records", type=int, default=2_000, help="latency probe records per run")
    p.add_argument("--no-plain-upstream", action="store_true",
                   help="only the gateway with the SCRAM-SHA-512 upstream")
    p.add_argument("--tool-timeout", type=float, default=300, help="seconds before a tool run fails")
    # The product's default, not the test harness's shorter interval: every flush is a write to
    # the store, and its cost is mostly per write.
    p.add_argument("--audit-flush-ms", type=int, default=AUDIT_FLUSH_MS,
                   help="the audited gateways' audit.flush_interval_ms")
    p.add_argument("--audit-digest", default=AUDIT_DIGEST, choices=("blake3", "sha256"),
                   help="the audited gateways' audit.digest")
    p.add_argument("--foundation", default=foundation.DEFAULT_REF,
                   help="git ref of the pass-through gateway to compare with ('none' to skip)")
    p.add_argument("--only", choices=("all", "content"), default="all",
                   help="content: only the JSON rounds (direct, the SCRAM-upstream gateways, the pass-through)")
    p.add_argument("--out-dir", type=Path, default=None,
                   help="where results go (default bench/, or .devstack/bench-content with --only content)")
    args = p.parse_args(argv)
    if args.out_dir is None:
        args.out_dir = ROOT / "bench" if args.only == "all" else ROOT / ".devstack" / "bench-content"
    return args


def micro_benchmarks() -> list[dict]:
    """The pytest-benchmark cases of the decision path, each with its median in µs."""
    import subprocess

    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *report.MICRO_BENCHMARKS,
                        f"--benchmark-json={out.name}"], cwd=ROOT, check=True, capture_output=True)
        data = json.loads(Path(out.name).read_text())
    return [{"group": b["group"], "name": b["name"], "median_us": b["stats"]["median"] * 1e6,
             "rounds": b["stats"]["rounds"], "us_per_record": b.get("extra_info", {}).get("us_per_record")}
            for b in data["benchmarks"]]


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def main(argv=None) -> int:
    args = parse_args(argv)
    # Also when started with SIGINT ignored (a background job): Ctrl-C must still clean up.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _interrupt)
    started = time.monotonic()
    load_before = os.getloadavg()
    (ROOT / ".devstack").mkdir(exist_ok=True)
    work_dir = Path(tempfile.mkdtemp(prefix="bench-", dir=ROOT / ".devstack"))
    broker = KafkaBroker(work_dir / "kafka", keep_work_dir=False)
    gateways: list[Gateway] = []
    try:
        print(f"starting Kafka in {work_dir}", flush=True)
        broker.start()
        routes = [Route("direct", "direct (PLAINTEXT listener)", broker.bootstrap)]
        if args.foundation != "none":
            print(f"building the pass-through gateway of {args.foundation}", flush=True)
            site = foundation.build(args.foundation, work_dir / "foundation")
            passthrough = foundation.FoundationGateway(site, broker, work_dir / "foundation",
                                                       free_port_range(5)).start()
            gateways.append(passthrough)
            routes.append(Route(report.FOUNDATION,
                                f"pass-through ({args.foundation}, no login or rules, SCRAM upstream)",
                                passthrough.bootstrap, passthrough, worker_pid(passthrough)))
        # Every gateway keeps an audit trail but the one that shows what auditing costs.
        audited = audit_section(args.audit_flush_ms, args.audit_digest)
        variants = [("gateway-scram", "gateway, SCRAM-SHA-512 upstream", "sasl", audited),
                    (report.UNAUDITED, "gateway, SCRAM-SHA-512 upstream, audit off", "sasl", {"enabled": False})]
        if not args.no_plain_upstream and args.only == "all":
            variants.append(("gateway-plain", "gateway, PLAINTEXT upstream", "plain", audited))
        for name, label, upstream, audit in variants:
            gateway = Gateway(broker, work_dir / name, workers=1, upstream=upstream, audit=audit)
            gateways.append(gateway)
            gateway.start()
            routes.append(Route(name, label, gateway.bootstrap, gateway, worker_pid(gateway),
                                java_client_properties(gateway.work_dir / "client.properties"),
                                auth("confluent")))
        bench = Bench(args, broker, routes)
        try:
            print("warming up", flush=True)
            bench.warm_up()
            for round_no in range(1, args.rounds + 1):
                print(f"round {round_no} of {args.rounds}", flush=True)
                bench.round(round_no)
        finally:
            bench.close()
        print("decision micro-benchmarks", flush=True)
        micro = micro_benchmarks()
        results = report.collect(args, broker, routes, bench.runs,
                                 load_before=load_before, seconds=time.monotonic() - started)
        results["micro"] = micro
        args.out_dir.mkdir(parents=True, exist_ok=True)
        (args.out_dir / "results.json").write_text(json.dumps(results, indent=2) + "\n")
        (args.out_dir / "RESULTS.md").write_text(report.markdown(results))
        print(report.summary_lines(results))
        print(f"wrote {args.out_dir / 'RESULTS.md'} and results.json "
              f"in {time.monotonic() - started:.0f} s", flush=True)
        return 0
    except KeyboardInterrupt:
        print("interrupted; stopping the gateway and Kafka", file=sys.stderr, flush=True)
        return 130
    except BaseException:
        # The work dir goes below; keep what explains the failure.
        for gateway in gateways:
            print(f"--- last lines of {gateway.log_file}:\n{gateway.log()[-3000:]}", file=sys.stderr)
        raise
    finally:
        # A second Ctrl-C must not leave a broker or gateway behind.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        for gateway in gateways:
            try:
                gateway.stop()
            except Exception as err:  # still stop the rest
                print(f"stopping a gateway: {err}", file=sys.stderr)
        broker.stop()
        shutil.rmtree(work_dir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
