"""A/B of the gateway: this working tree against a git ref, on one broker, rounds interleaved.

    .venv/bin/python bench/ab.py --ref HEAD~1 --rounds 6
    .venv/bin/python bench/ab.py --ref main --tools produce-json --audit '{"enabled": false}'

On a small shared host the speed of one run moves by more than most changes to the data path
(the broker, the client and the gateway share the cores, and the host itself speeds up and
slows down). So both gateways run at once against one broker, each round runs every tool once
through each (which one goes first alternating by round), and what is compared is the median
of each side and the median of the per-round ratios. A change is only visible if it is larger
than the spread of those ratios, which is printed too. For scale: with the same data path on
both sides, 4 rounds of a million validated records on a 2-core host gave per-round rate ratios
from 0.78 to 1.02. Each run also prints how much of the machine's CPU the hypervisor gave to
other guests meanwhile (steal): on a shared VM a run with a large share is slower for that alone.

The ref is installed beside this tree the way bench/foundation.py installs its pass-through
gateway; both sides run the current test rules and config (tests/harness.py), one worker each.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import foundation  # noqa: E402
import kafka_tools as kt  # noqa: E402
from devstack.kafka import KafkaBroker  # noqa: E402
from harness import Gateway, java_client_properties  # noqa: E402
from run import Topics, audit_section, cpu_seconds, host_shares, host_ticks, worker_pid  # noqa: E402

TOOLS = ("produce-json", "consume-json")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--ref", required=True, help="git ref of side B (side A is this working tree)")
    p.add_argument("--rounds", type=int, default=6)
    p.add_argument("--records", type=int, default=3_000_000, help="JSON records per run (as bench/run.py)")
    p.add_argument("--tools", default=",".join(TOOLS), help=f"comma-separated, of {', '.join(TOOLS)}")
    p.add_argument("--audit", type=json.loads,
                   default=audit_section(),
                   help="both gateways' audit section, JSON (default: as the bench's audited gateway)")
    p.add_argument("--tool-timeout", type=float, default=300)
    return p.parse_args(argv)


def main(argv=None) -> int:
    a = parse_args(argv)
    tools = a.tools.split(",")
    if unknown := set(tools) - set(TOOLS):
        raise SystemExit(f"unknown tools: {', '.join(sorted(unknown))}")
    work = Path(tempfile.mkdtemp(prefix="bench-ab-", dir=ROOT / ".devstack"))
    print(f"installing {a.ref} in {work / 'ref'}", flush=True)
    site = foundation.build(a.ref, work / "ref")
    broker = KafkaBroker(work / "kafka", keep_work_dir=False)
    broker.start()
    sides: dict[str, Gateway] = {}
    topics = Topics(broker.bootstrap)
    try:
        for side in ("A", "B"):
            gateway = Gateway(broker, work / side, workers=1, upstream="sasl", audit=a.audit)
            if side == "B":
                gateway.env["PYTHONPATH"] = str(site)  # found before this tree's editable install
            sides[side] = gateway.start()
        payloads = work / "events.json"
        size = kt.write_json_payloads(payloads)
        runs = _rounds(a, tools, sides, broker, topics, payloads, size)
    finally:
        topics.close()
        for gateway in sides.values():
            gateway.stop()
        broker.stop()
    _summary(runs, tools)
    return 0


def _rounds(a, tools, sides, broker, topics, payloads: Path, size: int) -> list[dict]:
    runs = []
    for round_no in range(a.rounds + 1):  # round 0 warms both sides up and is not counted
        order = ("A", "B") if round_no % 2 else ("B", "A")
        for side in order:
            gateway = sides[side]
            properties = java_client_properties(gateway.work_dir / "client.properties")
            topic = f"bench-content.ab{round_no}{side}"
            topics.create([topic])
            for tool in tools:
                pid = worker_pid(gateway)
                before, host_before = cpu_seconds(pid), host_ticks()
                if tool == "produce-json":
                    out = kt.run_tool(kt.PRODUCER_PERF, *kt.json_producer_args(
                        gateway.bootstrap, topic, a.records, payloads, properties), timeout=a.tool_timeout)
                    rate = kt.parse_producer(out.stdout, size)["records_per_s"]
                else:
                    if "produce-json" not in tools:  # something to read: written directly
                        kt.run_tool(kt.PRODUCER_PERF, *kt.json_producer_args(
                            broker.bootstrap, topic, a.records, payloads), timeout=a.tool_timeout)
                    out = kt.run_tool(kt.CONSUMER_PERF, *kt.consumer_args(
                        gateway.bootstrap, topic, a.records, f"{topic}-group", properties), timeout=a.tool_timeout)
                    rate = kt.parse_consumer(out.stdout)["records_per_s"]
                cpu = cpu_seconds(pid) - before
                _, stolen = host_shares(host_before)
                print(f"round {round_no} {tool:12} {side}  {rate:10.0f} records/s  gateway {cpu:5.2f} CPU-s"
                      f"  stolen {stolen:.0%}" + ("  (warm-up)" if round_no == 0 else ""), flush=True)
                if round_no:
                    runs.append({"round": round_no, "tool": tool, "side": side, "rate": rate, "cpu": cpu,
                                 "stolen": stolen})
            topics.delete([topic])
    return runs


def _summary(runs: list[dict], tools: list[str]) -> None:
    for tool in tools:
        mine = [r for r in runs if r["tool"] == tool]
        by = {(r["round"], r["side"]): r for r in mine}
        rounds = sorted({r["round"] for r in mine})
        print(f"\n{tool}:")
        for key, unit in (("rate", "records/s"), ("cpu", "gateway CPU-s")):
            a = statistics.median(by[n, "A"][key] for n in rounds)
            b = statistics.median(by[n, "B"][key] for n in rounds)
            ratios = sorted(by[n, "A"][key] / by[n, "B"][key] for n in rounds)
            print(f"  {unit:14} A {a:10.2f}  B {b:10.2f}  A/B {a / b:.3f};  per round: median "
                  f"{statistics.median(ratios):.3f}, range {ratios[0]:.3f}–{ratios[-1]:.3f}")
        stolen = [r["stolen"] for r in mine]
        print(f"  CPU the hypervisor gave to other guests: median {statistics.median(stolen):.0%}, "
              f"at most {max(stolen):.0%} (runs with much of it compare poorly)")


if __name__ == "__main__":
    sys.exit(main())
