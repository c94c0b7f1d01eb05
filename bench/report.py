"""Summarise the runs of bench/run.py: results.json (everything) and RESULTS.md (for people)."""

from __future__ import annotations

import platform
import statistics
import subprocess
from pathlib import Path

import kafka_tools as kt

ROOT = Path(__file__).resolve().parent.parent
DIRECT = "direct"
PRIMARY = "gateway-scram"
UNAUDITED = "gateway-noaudit"  # the primary route with the audit trail switched off
FOUNDATION = "foundation"  # the pass-through gateway of an older commit (bench/foundation.py)
# The JSON runs these routes also make to a topic no content rule covers: what the gateway's
# path costs before any validation or masking.
UNCHECKED_ROUTES = (FOUNDATION, PRIMARY)
# audit.digest as the report names it; runs recorded before the setting existed used SHA-256
_DIGESTS = {"blake3": "BLAKE3, the default `audit.digest`", "sha256": "SHA-256"}
# The pytest-benchmark files run in the same run, for the hot paths table.
MICRO_BENCHMARKS = ["bench/bench_policy.py", "bench/bench_authorize.py", "bench/bench_records.py",
                    "bench/bench_jsonmask.py", "bench/bench_content.py", "bench/bench_audit.py",
                    "bench/bench_produce_path.py", "bench/bench_fetch_path.py"]
TARGETS = {"throughput_ratio_min": 0.9, "cpu_s_per_gb_max": 1.5, "added_p50_ms_max": 0.3,
           "validated_produce_ratio_min": 0.8, "masked_consume_ratio_min": 0.6, "audited_ratio_min": 0.9}


# --------------------------------------------------------------------------- collecting

def machine() -> dict:
    cpuinfo = Path("/proc/cpuinfo").read_text()
    model = next((line.split(":", 1)[1].strip() for line in cpuinfo.splitlines()
                  if line.startswith("model name")), platform.processor() or "?")
    meminfo = Path("/proc/meminfo").read_text()
    mem_kib = int(next(line.split()[1] for line in meminfo.splitlines() if line.startswith("MemTotal:")))
    return {"cpu_model": model, "cores": len(__import__("os").sched_getaffinity(0)),
            "memory_gib": round(mem_kib / 1024 / 1024, 1), "kernel": platform.release()}


def _run(*cmd: str) -> str:
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=30, cwd=ROOT)
    except OSError:
        return "?"
    return (proc.stdout + proc.stderr).strip()


def versions(broker) -> dict:
    import confluent_kafka
    import uvloop

    commit = _run("git", "rev-parse", "--short=12", "HEAD")
    if _run("git", "status", "--porcelain", "--untracked-files=no"):
        commit += " (with uncommitted changes)"
    return {"kafka": broker.kafka_version, "java": _run("java", "-version").splitlines()[0],
            "python": platform.python_version(), "uvloop": uvloop.__version__,
            "confluent_kafka": confluent_kafka.__version__,
            "librdkafka": confluent_kafka.libversion()[0], "brokerguard_commit": commit}


def tool_arguments(args) -> dict:
    b, t = "<bootstrap>", "<topic>"
    return {
        "produce": f"ProducerPerformance {' '.join(kt.producer_args(b, t, args.records, args.record_size))}",
        "consume": f"ConsumerPerformance {' '.join(kt.consumer_args(b, t, args.records, '<topic>-group'))}",
        "e2e": f"EndToEndLatency {' '.join(kt.end_to_end_args(b, t, args.latency_records, args.record_size))}",
        "produce-json": "ProducerPerformance " + " ".join(
            kt.json_producer_args(b, t, args.json_records, Path("<events.json>"))),
        "consume-json": f"ConsumerPerformance {' '.join(kt.consumer_args(b, t, args.json_records, '<topic>-group'))}",
        "probe": f"confluent-kafka loop: {args.probe_records} records of {args.record_size} B after 200 "
                 "warm-up; produce (acks=1, linger.ms=0), flush, poll until it returns "
                 "(fetch.wait.max.ms=100, fetch.min.bytes=1)",
    }


def _stats(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values)}


def summarise(runs: list[dict]) -> dict:
    """{tool: {route: {metric: {median, min, max, n}}}} over rounds, numeric metrics only."""
    summary: dict = {}
    for row in runs:
        for key, value in row.items():
            if key in ("round", "route", "tool") or not isinstance(value, (int, float)):
                continue
            summary.setdefault(row["tool"], {}).setdefault(row["route"], {}).setdefault(key, []).append(value)
    return {tool: {route: {k: _stats(v) for k, v in metrics.items()} for route, metrics in routes.items()}
            for tool, routes in summary.items()}


def _median(summary: dict, tool: str, route: str, metric: str) -> float | None:
    try:
        return summary[tool][route][metric]["median"]
    except KeyError:
        return None


def paired_ratios(runs: list[dict], tool: str, route: str, metric: str, direct_tool: str | None = None) -> dict | None:
    """The route's metric over direct's (in `direct_tool`'s runs, by default the same tool) in
    each round, both measured minutes apart: on a machine whose speed drifts between rounds, a
    steadier reading than the ratio of the medians."""
    by_round: dict = {}
    for row in runs:
        if metric in row and ((row["tool"] == tool and row["route"] == route)
                              or (row["tool"] == (direct_tool or tool) and row["route"] == DIRECT)):
            by_round.setdefault(row["round"], {})[row["route"]] = row[metric]
    ratios = [pair[route] / pair[DIRECT] for pair in by_round.values() if len(pair) == 2 and pair[DIRECT]]
    return _stats(ratios) if ratios else None


def _over(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a / b


def _minus(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


def comparisons(summary: dict, routes: list[str], runs: list[dict] = ()) -> dict:
    """Per gateway route: throughput ratios, added latencies, CPU per GB, against direct (None
    where a run measured no such thing: `--only content`)."""
    out = {}
    for route in routes:
        if route == DIRECT:
            continue
        m = lambda tool, metric, r=route: _median(summary, tool, r, metric)  # noqa: E731
        d = lambda tool, metric: _median(summary, tool, DIRECT, metric)  # noqa: E731
        out[route] = {
            "produce_ratio": _over(m("produce", "mb_per_s"), d("produce", "mb_per_s")),
            "consume_ratio": _over(m("consume", "mb_per_s"), d("consume", "mb_per_s")),
            "e2e_added_avg_ms": _minus(m("e2e", "avg_ms"), d("e2e", "avg_ms")),
            "e2e_added_p50_ms": _minus(m("e2e", "p50_ms"), d("e2e", "p50_ms")),
            "e2e_added_p99_ms": _minus(m("e2e", "p99_ms"), d("e2e", "p99_ms")),
            "probe_added_p50_ms": _minus(m("probe", "p50_ms"), d("probe", "p50_ms")),
            "probe_added_p99_ms": _minus(m("probe", "p99_ms"), d("probe", "p99_ms")),
            "produce_cpu_s_per_gb": m("produce", "gateway_cpu_s_per_gb"),
            "consume_cpu_s_per_gb": m("consume", "gateway_cpu_s_per_gb"),
        }
        if m("produce-json", "mb_per_s") is not None:
            out[route]["produce_json_ratio"] = m("produce-json", "mb_per_s") / d("produce-json", "mb_per_s")
            # Records, not MB: a masked record is shorter than the original, so MB/s would count
            # the masking itself as slowness.
            out[route]["consume_json_ratio"] = m("consume-json", "records_per_s") / d("consume-json", "records_per_s")
            out[route]["produce_json_paired"] = paired_ratios(runs, "produce-json", route, "mb_per_s")
            out[route]["consume_json_paired"] = paired_ratios(runs, "consume-json", route, "records_per_s")
        if m("produce-json-unchecked", "mb_per_s") is not None:
            # The same records to a topic without content rules, against the same direct runs.
            out[route]["produce_json_unchecked_ratio"] = _over(m("produce-json-unchecked", "mb_per_s"),
                                                               d("produce-json", "mb_per_s"))
            out[route]["consume_json_unmasked_ratio"] = _over(m("consume-json-unmasked", "records_per_s"),
                                                              d("consume-json", "records_per_s"))
            out[route]["produce_json_unchecked_paired"] = paired_ratios(
                runs, "produce-json-unchecked", route, "mb_per_s", "produce-json")
            out[route]["consume_json_unmasked_paired"] = paired_ratios(
                runs, "consume-json-unmasked", route, "records_per_s", "consume-json")
    return out


def collect(args, broker, routes, runs: list[dict], *, load_before, seconds: float) -> dict:
    for row in runs:
        # How much of one core the gateway used while data moved (the tool's own timing).
        if "gateway_cpu_s" in row and row["tool"] == "produce":
            row["gateway_core_share"] = round(row["gateway_cpu_s"] * row["records_per_s"] / row["records"], 3)
        elif "gateway_cpu_s" in row and row["tool"] == "consume" and row["fetch_ms"]:
            row["gateway_core_share"] = round(row["gateway_cpu_s"] / (row["fetch_ms"] / 1000), 3)
        if row["tool"] in ("produce", "consume"):
            row["broker_cpu_s_per_gb"] = round(row["broker_cpu_s"] / (row["bytes"] / 1e9), 3)
        if "tool_cpu_s" in row and row.get("bytes"):
            row["tool_cpu_s_per_gb"] = round(row["tool_cpu_s"] / (row["bytes"] / 1e9), 3)
    summary = summarise(runs)
    names = [r.name for r in routes]
    return {
        "command": "make bench" if args.only == "all" else "bench/run.py --only content",
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "tool_arguments": tool_arguments(args),
        "machine": machine(), "versions": versions(broker),
        "load_average_before": [round(x, 2) for x in load_before],
        "seconds": round(seconds, 1),
        "routes": {r.name: r.label for r in routes},
        "targets": TARGETS,
        "summary": summary,
        "comparisons": comparisons(summary, names, runs),
        "runs": runs,
    }


# --------------------------------------------------------------------------- RESULTS.md

INTRO = """\
# Benchmarks: Kafka's own tools, direct and through brokerguard

Benchmarks are hard, and these numbers are narrow. They come from one machine, over loopback,
with one Kafka node and one gateway worker, using Kafka's own `ProducerPerformance`,
`ConsumerPerformance` and `EndToEndLatency` plus a small latency probe of our own. The broker,
the tool's JVM and the gateway all share the same few cores, so whatever CPU the gateway uses
is taken from the broker and the client too; on a larger machine, or with the gateway on its
own host, the ratios would differ. Every path runs in the same process tree in the same run,
rounds rotate the order of the paths, and each cell is the median of the rounds with the
range in parentheses: a difference smaller than that range is noise. These are measurements,
not a pass/fail gate.
"""


def _fmt(value: float | None, digits: int) -> str:
    return "n/a" if value is None else f"{value:,.{digits}f}"


def _cell(summary: dict, tool: str, route: str, metric: str, digits: int) -> str:
    try:
        s = summary[tool][route][metric]
    except KeyError:
        return "—"
    text = _fmt(s["median"], digits)
    if s["n"] > 1:
        text += f" ({_fmt(s['min'], digits)}–{_fmt(s['max'], digits)})"
    return text


def _signed(value: float | None, digits: int, unit: str = "") -> str:
    return "n/a" if value is None else f"{value:+.{digits}f}{unit}"


def _mark(ok: bool) -> str:
    return "met" if ok else "NOT met"


def _ratio(value: float, floor: float) -> str:
    """A ratio judged against `floor`, to 2 decimals, or to 3 where 2 would put it on the other
    side: 0.597 against 0.6 is not "0.60"."""
    text = f"{value:.2f}"
    return text if (float(text) >= floor) == (value >= floor) else f"{value:.3f}"


def _both_at_least(produce: float, consume: float, floor: float) -> str:
    """'produce 0.96, consume 0.74 (target ≥ 0.9: NOT met)': judged on the lower."""
    return (f"produce {_ratio(produce, floor)}, consume {_ratio(consume, floor)} "
            f"(target ≥ {floor}: {_mark(min(produce, consume) >= floor)})")


def _of_direct_at_least(value: float, floor: float) -> str:
    return f"{_ratio(value, floor)} of direct (target ≥ {floor}: {_mark(value >= floor)})"


ROWS = [
    # label, tool, metric, digits, how the comparison column reads
    ("Produce MB/s", "produce", "mb_per_s", 1, "produce_ratio"),
    ("Produce records/s", "produce", "records_per_s", 0, "produce_ratio"),
    ("Consume MB/s (fetch phase)", "consume", "mb_per_s", 1, "consume_ratio"),
    ("Consume records/s (fetch phase)", "consume", "records_per_s", 0, "consume_ratio"),
    ("EndToEndLatency avg, ms", "e2e", "avg_ms", 3, "e2e_added_avg_ms"),
    ("EndToEndLatency p50, ms (whole ms)", "e2e", "p50_ms", 0, "e2e_added_p50_ms"),
    ("EndToEndLatency p99, ms (whole ms)", "e2e", "p99_ms", 0, "e2e_added_p99_ms"),
    ("Probe p50, ms", "probe", "p50_ms", 3, "probe_added_p50_ms"),
    ("Probe p99, ms", "probe", "p99_ms", 3, "probe_added_p99_ms"),
    ("Gateway CPU-s per GB, produce", "produce", "gateway_cpu_s_per_gb", 2, None),
    ("Gateway CPU-s per GB, consume", "consume", "gateway_cpu_s_per_gb", 2, None),
    ("Gateway share of one core, produce", "produce", "gateway_core_share", 2, None),
    ("Gateway share of one core, consume", "consume", "gateway_core_share", 2, None),
    ("Broker CPU-s per GB, produce", "produce", "broker_cpu_s_per_gb", 2, None),
    ("Broker CPU-s per GB, consume", "consume", "broker_cpu_s_per_gb", 2, None),
    ("Tool CPU-s per GB, produce", "produce", "tool_cpu_s_per_gb", 2, None),
    ("Tool CPU-s per GB, consume", "consume", "tool_cpu_s_per_gb", 2, None),
    ("JSON produce MB/s (gateway: validated)", "produce-json", "mb_per_s", 1, "produce_json_ratio"),
    ("JSON produce records/s (gateway: validated)", "produce-json", "records_per_s", 0, "produce_json_ratio"),
    ("JSON consume MB/s (gateway: masked)", "consume-json", "mb_per_s", 1, None),
    ("JSON consume records/s (gateway: masked)", "consume-json", "records_per_s", 0, "consume_json_ratio"),
    ("Gateway CPU-s per GB, validated produce", "produce-json", "gateway_cpu_s_per_gb", 2, None),
    ("Gateway CPU-s per GB, masked consume", "consume-json", "gateway_cpu_s_per_gb", 2, None),
    ("JSON produce records/s, topic without content rules", "produce-json-unchecked", "records_per_s", 0,
     "produce_json_unchecked_ratio"),
    ("JSON consume records/s, topic without content rules", "consume-json-unmasked", "records_per_s", 0,
     "consume_json_unmasked_ratio"),
    ("Gateway CPU-s per GB, JSON produce without content rules", "produce-json-unchecked",
     "gateway_cpu_s_per_gb", 2, None),
    ("Gateway CPU-s per GB, JSON consume without content rules", "consume-json-unmasked",
     "gateway_cpu_s_per_gb", 2, None),
    ("Tool CPU-s per GB, JSON produce", "produce-json", "tool_cpu_s_per_gb", 2, None),
    ("Tool CPU-s per GB, JSON consume", "consume-json", "tool_cpu_s_per_gb", 2, None),
    ("Machine busy, JSON produce", "produce-json", "machine_busy", 2, None),
    ("Machine busy, JSON consume", "consume-json", "machine_busy", 2, None),
]


def _table(results: dict) -> list[str]:
    summary, comps = results["summary"], results["comparisons"]
    gateways = [r for r in results["routes"] if r != DIRECT]
    head = ["", "direct"]
    for r in gateways:
        head += [results["routes"][r], "vs direct"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for label, tool, metric, digits, comp in ROWS:
        if tool not in summary:
            continue  # not measured in this run (--only content)
        cells = [label, _cell(summary, tool, DIRECT, metric, digits)]
        for r in gateways:
            cells.append(_cell(summary, tool, r, metric, digits))
            value = comps[r].get(comp) if comp else None
            if comp is None or (value is None and comp.endswith("_ratio")):
                cells.append("")
            elif comp.endswith("_ratio"):
                cells.append(f"× {value:.2f}")
            else:
                cells.append(_signed(value, digits if digits else 0, " ms"))
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _target_lines(results: dict) -> list[str]:
    t = results["targets"]
    lines = []
    for route, c in results["comparisons"].items():
        if c["produce_ratio"] is None:
            continue  # --only content: no plain produce and consume runs
        cpu = [v for v in (c["produce_cpu_s_per_gb"], c["consume_cpu_s_per_gb"]) if v is not None]
        lines.append(
            f"- **{results['routes'][route]}**: "
            f"throughput ratio {_both_at_least(c['produce_ratio'], c['consume_ratio'], t['throughput_ratio_min'])}; "
            f"CPU produce {_fmt(c['produce_cpu_s_per_gb'], 2)}, consume {_fmt(c['consume_cpu_s_per_gb'], 2)} "
            f"CPU-s/GB (target ≤ {t['cpu_s_per_gb_max']}: "
            f"{_mark(bool(cpu) and max(cpu) <= t['cpu_s_per_gb_max'])}); "
            f"added p50 latency {c['probe_added_p50_ms']:+.3f} ms by the probe, "
            f"{c['e2e_added_p50_ms']:+.0f} ms in EndToEndLatency's whole milliseconds "
            f"(target < {t['added_p50_ms_max']} ms, judged on the probe: "
            f"{_mark(c['probe_added_p50_ms'] < t['added_p50_ms_max'])})")
    comps = results["comparisons"]
    if PRIMARY in comps and "produce_json_ratio" in comps[PRIMARY]:
        c = comps[PRIMARY]
        lines.append(
            f"- **data protection ({results['routes'][PRIMARY]})**: JSON produce with schema validation "
            f"{_of_direct_at_least(c['produce_json_ratio'], t['validated_produce_ratio_min'])}; "
            f"JSON consume with three masked fields "
            f"{_of_direct_at_least(c['consume_json_ratio'], t['masked_consume_ratio_min'])}. "
            f"Round by round (each gateway run over the direct run of the same round): produce "
            f"{_paired(c.get('produce_json_paired'))}, consume {_paired(c.get('consume_json_paired'))}")
    unchecked = [(r, comps[r]) for r in UNCHECKED_ROUTES if comps.get(r, {}).get("produce_json_unchecked_ratio")]
    if unchecked:
        lines.append(
            "- **the same JSON runs to a topic without content rules** (what the path costs before any "
            "validation or masking; the same direct runs): " + "; ".join(
                f"{results['routes'][r]}: produce {c['produce_json_unchecked_ratio']:.2f}, consume "
                f"{c['consume_json_unmasked_ratio']:.2f} of direct (round by round: produce "
                f"{_paired(c.get('produce_json_unchecked_paired'))}, consume "
                f"{_paired(c.get('consume_json_unmasked_paired'))})" for r, c in unchecked))
    if UNAUDITED in comps and PRIMARY in comps and comps[PRIMARY]["produce_ratio"] is not None:
        ours, base = comps[PRIMARY], comps[UNAUDITED]
        produce, consume = ours["produce_ratio"] / base["produce_ratio"], ours["consume_ratio"] / base["consume_ratio"]
        lines.append(
            f"- **audit trail (every request audited, digest payloads, SQLite sink) against audit off**: "
            f"throughput {_both_at_least(produce, consume, t['audited_ratio_min'])}; added p50 "
            f"{ours['probe_added_p50_ms'] - base['probe_added_p50_ms']:+.3f} ms by the probe"
            + (f"; validated JSON produce {ours['produce_json_ratio'] / base['produce_json_ratio']:.2f}"
               if "produce_json_ratio" in ours and "produce_json_ratio" in base else ""))
    if FOUNDATION in comps and PRIMARY in comps and comps[PRIMARY]["produce_ratio"] is not None:
        ours, base = comps[PRIMARY], comps[FOUNDATION]
        lines.append(
            f"- **identity and rules against the pass-through**: throughput produce "
            f"{ours['produce_ratio'] / base['produce_ratio']:.2f}, consume "
            f"{ours['consume_ratio'] / base['consume_ratio']:.2f} of the pass-through's; added p50 "
            f"{ours['probe_added_p50_ms'] - base['probe_added_p50_ms']:+.3f} ms by the probe")
    return lines


def _paired(stats: dict | None) -> str:
    if not stats:
        return "—"
    return f"median {stats['median']:.2f} ({stats['min']:.2f}–{stats['max']:.2f})"


def markdown(results: dict) -> str:
    m, v, s = results["machine"], results["versions"], results["settings"]
    args = results["tool_arguments"]
    out = [INTRO]
    out += ["## Machine and versions", "",
            f"- CPU: {m['cpu_model']}, {m['cores']} cores usable; memory {m['memory_gib']} GiB; "
            f"Linux {m['kernel']}; load average before the run "
            f"{' / '.join(map(str, results['load_average_before']))}",
            f"- Kafka {v['kafka']} (one KRaft node, `devstack.kafka.KafkaBroker`, fresh work dir); "
            f"{v['java']}",
            f"- Python {v['python']}, uvloop {v['uvloop']}, confluent-kafka {v['confluent_kafka']} "
            f"(librdkafka {v['librdkafka']}); brokerguard commit {v['brokerguard_commit']}"]
    stolen = [row["stolen"] for row in results["runs"] if row.get("stolen") is not None]
    if stolen:
        out += [f"- Steal (CPU time the hypervisor gave to other guests, from /proc/stat) during the "
                f"measured runs: median {statistics.median(stolen):.0%} ({min(stolen):.0%}–"
                f"{max(stolen):.0%}) of the machine's CPU time"]
    out += [""]
    if stolen and statistics.median(stolen) > 0.05:
        out += ["The host was shared: other guests took a noticeable part of its CPU while the "
                "tools ran, so every route ran slower by a share that changed from run to run.", ""]
    busy = results["load_average_before"][0]
    if busy > 0.5 * m["cores"]:
        out += [f"Other work was running when this started (load average {busy:.2f} on "
                f"{m['cores']} cores): expect these numbers to be noisy.", ""]
    content_only = s.get("only") == "content"
    command = ("`.venv/bin/python bench/run.py --only content` (the JSON rounds only)" if content_only
               else "`make bench` (`.venv/bin/python bench/run.py`)")
    out += ["## How it was run", "",
            f"{command}, {s['rounds']} rounds, "
            f"{results['seconds']:.0f} s in all. Routes: "
            + "; ".join(f"`{k}` = {label}" for k, label in results["routes"].items())
            + ". Each gateway is `brokerguard run` with one worker. Clients log in to the current "
            "gateway over plaintext with SASL SCRAM-SHA-512 as the test account (its routes add "
            "`--command-config <client.properties>` to the tool arguments below) and every request "
            "is decoded and authorized by the test rules, which allow that account everything. "
            "The audited gateways keep a SQLite audit trail with a digest of each produce's "
            f"records ({_DIGESTS[s.get('audit_digest', 'sha256')]}), flushed every {s['audit_flush_ms']} ms. "
            + ("The `foundation` route is the pass-through gateway of that git ref (no login, no "
               "rules; bench/foundation.py builds it beside the current one). "
               if FOUNDATION in results["routes"] else "")
            + "The direct route uses the broker's PLAINTEXT listener without authentication. Before round 1 "
            "every route runs each tool once, a tenth of a run's records and unmeasured, so "
            "that the broker's and the client's JIT and the gateway's paths are warm. Each round "
            "creates fresh one-partition topics for "
            "every route, runs each tool once per route (the route order rotating by round), "
            "then deletes them; ConsumerPerformance reads the topic the same route just produced. "
            "Before each run the page cache is synced. Gateway CPU is utime + stime of the worker "
            "from `/proc/<pid>/stat` across the tool run.", ""]
    plain = [] if content_only else [f"- produce: `{args['produce']}`", f"- consume: `{args['consume']}`"]
    out += [*plain,
            f"- JSON produce (direct, `{PRIMARY}` and `{UNAUDITED}` only, to a `bench-content.*` topic whose records "
            f"the gateway validates against a JSON Schema): `{args['produce-json']}`. "
            "ProducerPerformance's rate counts from before its first send, so it includes "
            "connecting and logging in. In 2,000-record runs a gateway route took 0.34 s longer "
            "than direct, and direct with the client's own SCRAM-SHA-512 login 0.27 s longer: "
            "that is the Java client's SCRAM, not the gateway. The JSON runs are long enough for "
            "it to be a few percent of a run.",
            f"- JSON consume (the same topics; the gateway masks three fields of every record): "
            f"`{args['consume-json']}`. Each run is a new JVM that compiles its hot code as it goes; "
            "in runs of a million records the direct consumer had not reached its speed "
            "(0.55–0.74 M records/s, against 0.93–1.19 M in runs of three million the same hour).",
            *([f"- JSON produce and consume to a topic without content rules (`bench-json.*`: allowed, "
               "nothing validated or masked), through "
               + " and ".join(f"`{r}`" for r in UNCHECKED_ROUTES if r in results["routes"])
               + " in the same rounds with the same arguments (the gateway's right after its "
               "validated or masked run), compared with the direct runs above: what the gateway's "
               "path costs these records before any content work."]
              if any(r in results["routes"] for r in UNCHECKED_ROUTES) else []),
            *([] if content_only else [f"- end to end: `{args['e2e']}`", f"- probe: {args['probe']}"]), ""]
    out += ["## Results", ""] + _table(results) + [""]
    out += ["## Targets", ""] + _target_lines(results) + [""]
    if results.get("micro"):
        out += ["## Hot paths (pytest-benchmark, medians)", "",
                f"`.venv/bin/python -m pytest {' '.join(MICRO_BENCHMARKS)} --benchmark-group-by=group`, in the same "
                "run. Targets: a cached decision at most 1 µs, an uncached one at most 20 µs; the "
                "record core masks at least 350k records/s per core (a 1000-record batch of ~300-byte "
                "JSON, three masked fields, decode, mask, encode and CRC: at most 2.86 µs per record).",
                "", "| group | case | median µs | per record µs |", "|---|---|---|---|"]
        out += [f"| {m['group']} | {m['name']} | {m['median_us']:.2f} | "
                f"{_fmt(m.get('us_per_record'), 3) if m.get('us_per_record') else ''} |"
                for m in results["micro"]]
        out += [""]
    out += ["## Reading the table", "",
            "- MB is Kafka's tools' MB, 2^20 bytes of record values. GB in CPU-s per GB is 10^9 bytes "
            "of record values (produce: records × record size; consume: the tool's MB consumed); "
            "wire bytes are a little more (batch headers).",
            "- Consume throughput is the tool's fetch phase (`fetch.MB.sec`), without the consumer "
            "group join; results.json also has the figures with the join.",
            "- JSON consume is compared in records/s: the gateway's masked values are shorter than "
            "the originals, so its MB/s is lower for the same records.",
            "- EndToEndLatency keeps each latency in whole milliseconds (truncated), so its p50/p99 "
            "cannot show a sub-millisecond difference; its average is exact. Its consumer uses "
            "`fetch.max.wait.ms=0`, i.e. it spins on empty fetches, all of which cross the gateway. "
            "The probe times the same send-ack-poll loop with a nanosecond clock and a long-polling "
            "consumer, which is what the added-latency target is judged on.",
            "- Gateway share of one core: gateway CPU seconds over the time the tool reports for "
            "moving the data; near 1.0 means the single worker was the bottleneck.",
            "- Tool CPU: user + system CPU seconds of the tool's JVM (the client), from the rusage of "
            "the finished child process. Machine busy: the share of the machine's CPU time that was "
            "not idle during the run, from /proc/stat; near 1.0 means broker, client and gateway "
            "together used every core, so any CPU the gateway takes is taken from the other two.",
            "- Every run, with all fields the tools print, is in `bench/results.json`.", ""]
    return "\n".join(out)


def summary_lines(results: dict) -> str:
    return "\n".join(["", *_table(results), "", *_target_lines(results)])
