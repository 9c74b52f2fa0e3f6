"""Fan-out on one server process: 1,000 tasks each watched by one client, and one
task watched by 1,000 clients, each task publishing 10 events/s.

    .venv/bin/python -m bench.bench_fanout [--runs 3] [--seconds 10] [--rates 10]
"""

from __future__ import annotations

import argparse
import json
import os
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from bench import clients, report, stack

PLOT = report.ROOT / "docs" / "bench-fanout.png"
CLIENT_PROCESSES = 3
PUBLISHER_PROCESSES = 2


@dataclass
class Scenario:
    name: str
    tasks: int
    watchers_per_task: int


SCENARIOS = [Scenario("1000 tasks x 1 client", 1000, 1), Scenario("1 task x 1000 clients", 1, 1000)]


PUBLISHERS = {
    "batched": "`--publisher batched`: every 5 ms, the events then due go to Redis in one "
               "pipeline, `progress.publisher.publish_many`; each is still its own record-script "
               "run and PUBLISH, as if many workers published at once, and `updated_at` is "
               "stamped before the pipeline is sent",
    "api": "`--publisher api`: one `track(task_id).update(...)` call per event, the "
           "project's publisher API, TASKPULSE_MIN_INTERVAL=0 and TASKPULSE_ASYNCRESULT=0",
}


def one_run(kind: str, port: int, pid: int, env: dict[str, str], sc: Scenario, rate: float,
            seconds: float, on_go: Callable[[], None] | None = None,
            redis_pid: int | None = None, publisher: str = "api") -> dict[str, float]:
    from progress.publisher import publish
    from progress.store.records import EventDraft
    from progress.tokens import issue_token
    from progress.wire.states import State

    task_ids = [f"fan-{uuid.uuid4().hex}" for _ in range(sc.tasks)]
    for task_id in task_ids:
        publish(EventDraft(task_id, State.PENDING, name="bench.fanout"))
    subs = [(t, issue_token(t)) for t in task_ids]
    conns = [[s] for s in subs for _ in range(sc.watchers_per_task)]
    publish = clients.publish_batched if publisher == "batched" else clients.publish_paced
    pubs = [clients.ClientProcess(publish, env, part, rate, seconds)
            for part in clients.split(task_ids, min(PUBLISHER_PROCESSES, len(task_ids)))]
    cpu: dict[str, float] = {}
    machine: dict[str, tuple[int, int]] = {}
    try:
        for p in pubs:
            p.expect("ready")

        def go() -> None:
            cpu["start"] = stack.cpu_seconds(pid)
            cpu["redis"] = stack.cpu_seconds(redis_pid) if redis_pid else 0.0
            cpu["pubs"] = sum(stack.cpu_seconds(p.proc.pid) for p in pubs)
            machine["start"] = stack.machine_jiffies()
            cpu["t0"] = time.monotonic()
            if on_go is not None:
                on_go()
            for p in pubs:
                p.send("go")

        res = clients.run_watchers(f"ws://127.0.0.1:{port}/ws/progress/", conns,
                                   CLIENT_PROCESSES, seconds + 60, go)
        wall = time.monotonic() - cpu["t0"]
        server_cpu = stack.cpu_seconds(pid) - cpu["start"]
        redis_cpu = stack.cpu_seconds(redis_pid) - cpu["redis"] if redis_pid else float("nan")
        pubs_cpu = sum(stack.cpu_seconds(p.proc.pid) for p in pubs) - cpu["pubs"]
        cores = stack.busy_cores(machine["start"], stack.machine_jiffies())
        published = [p.expect("result", 120) for p in pubs]
    finally:
        for p in pubs:
            p.stop()
    steps = max(1, round(rate * seconds))
    expected = (steps + 1) * sc.tasks * sc.watchers_per_task  # progress events + SUCCESS
    s = report.summary(res.latencies_ms)
    out = {"delivered": res.events, "expected": expected, "lost": expected - res.events,
           "gaps": res.gaps, "dups": res.duplicates, "p50": s["p50"], "p99": s["p99"],
           "max": s["max"], "delivered_per_s": res.events / wall, "server_cpu_s": server_cpu,
           "wall_s": wall, "pub_lag_ms": max(p.worst_lag_ms for p in published),
           "cpu_us_per_frame": 1e6 * server_cpu / max(1, res.events),
           "redis_us_per_event": 1e6 * redis_cpu / (sum(p.published for p in published)
                                                    + sc.tasks),
           "pub_us_per_event": 1e6 * pubs_cpu / max(1, sum(p.published for p in published)),
           "client_us_per_frame": 1e6 * res.cpu_s / max(1, res.events),
           "machine_cores": cores}
    print(f"{kind} {sc.name} @{rate}/s: {out}", flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rates", default="10", help="events/s per task, comma-separated")
    parser.add_argument("--servers", default=",".join(stack.SERVERS))
    parser.add_argument("--publisher", default="batched", choices=["batched", "api"],
                        help="batched: each tick's events in one pipeline (progress."
                             "publisher.publish_many); api: one track().update() call per event")
    parser.add_argument("--plot-only", action="store_true",
                        help="redraw the plot from docs/bench-data/fanout.json")
    args = parser.parse_args()
    if args.plot_only:
        plot(json.loads((report.DATA / "fanout.json").read_text())["results"])
        return
    rates = [float(r) for r in args.rates.split(",")]
    kinds = args.servers.split(",")
    stack.raise_fd_limit()
    setup = report.machine()
    results: dict[str, list[dict[str, float]]] = {}
    with stack.private_redis() as redis_server:
        # The Celery result-backend mirror costs the publishers a second round
        # trip per event (see "Publisher") and nothing on the server side.
        env = stack.bench_env(redis_server.url, {"TASKPULSE_ASYNCRESULT": "0"})
        stack.setup_django(env)
        servers = {kind: stack.start_web(kind, env) for kind in kinds}
        try:
            for r in range(args.runs):
                for sc in SCENARIOS:
                    for rate in rates:
                        for kind in (kinds if r % 2 == 0 else kinds[::-1]):
                            proc, port = servers[kind]
                            key = f"{kind}|{sc.name}|{rate:g}"
                            out = one_run(kind, port, proc.pid, env, sc, rate, args.seconds,
                                          redis_pid=redis_server.popen.pid,
                                          publisher=args.publisher)
                            results.setdefault(key, []).append(out)
        finally:
            for proc, _ in servers.values():
                proc.stop()

    rows = []
    for key, runs in results.items():
        kind, name, rate = key.split("|")
        med = {f: report.median([run[f] for run in runs]) for f in runs[0]}
        rows.append([kind, name, rate, med["delivered_per_s"], sum(r["lost"] for r in runs),
                     med["p50"], med["p99"], max(r["p99"] for r in runs),
                     med["server_cpu_s"] / med["wall_s"], med["cpu_us_per_frame"],
                     med["redis_us_per_event"], med["pub_us_per_event"],
                     med["client_us_per_frame"], med["pub_lag_ms"], med["machine_cores"]])
    plot(results)
    report.save_data("fanout", {"results": results, "args": vars(args)})
    report.write_section("fanout", f"""
## 2. Fan-out on one server process

Set-up: {setup}. One web process per server kind, a private redis-server,
{PUBLISHER_PROCESSES} publisher processes publishing PROGRESS events for the tasks on a fixed
schedule, **no Celery worker** ({PUBLISHERS[args.publisher]}), then
SUCCESS for every task; {CLIENT_PROCESSES} client processes hold the sockets. Each run lasts
{args.seconds:g} s of publishing; {args.runs} runs per row, alternating servers. "lost" counts
events never delivered over all runs (progress events + the final one, per
subscription); latency from `updated_at` in ms; "server CPU" is the web process's
CPU seconds per wall second (1.0 = one core) and "CPU µs/frame" its CPU time
per delivered frame; "Redis µs/event" the private redis-server's CPU per published
event (record + history + PUBLISH + fan-out to the subscribed process, plus the
Celery result-backend mirror when on; meaningful in the 1,000-task rows only: with one
task a run publishes ~50 events and Redis's own housekeeping dominates);
"publisher µs/event" the publisher processes' CPU per event and "client µs/frame"
the client processes' per frame read (the load generators' own cost); "pub lag"
is how far the publishers fell behind their schedule (if large, the offered rate was
not reached); "machine cores" how many of the machine's {os.cpu_count()} cores were busy
during the run, counting everything on it (server, Redis, publishers, clients, and
other users of this shared machine).

{report.table(["server", "scenario", "events/s per task", "delivered/s", "lost", "p50",
               "p99", "worst run p99", "server CPU", "CPU µs/frame", "Redis µs/event",
               "publisher µs/event", "client µs/frame", "pub lag ms", "machine cores"],
              rows)}

Target: 0 lost and p99 ≤ 50 ms for 1,000 tasks x 1 client on one server process.

![fan-out latency](bench-fanout.png)

Command: `{report.command_line()}`
""")


def plot(results: dict[str, list[dict[str, float]]]) -> None:
    fig, ax = plt.subplots(figsize=(9, 4.5))
    labels, p50s, p99s = [], [], []
    for key, runs in results.items():
        kind, name, rate = key.split("|")
        tasks, clients_per_task = (part.split()[0] for part in name.split(" x "))
        labels.append(f"{kind}\n{tasks}x{clients_per_task}\n@{rate}/s")
        p50s.append(report.median([r["p50"] for r in runs]))
        p99s.append(report.median([r["p99"] for r in runs]))
    xs = range(len(labels))
    ax.bar([x - 0.2 for x in xs], p50s, width=0.4, label="p50")
    ax.bar([x + 0.2 for x in xs], p99s, width=0.4, label="p99")
    ax.axhline(50, color="red", linestyle="--", linewidth=1,
               label="p99 target 50 ms\n(1000 tasks x 1)")
    ax.set_xticks(list(xs), labels, fontsize=7)
    ax.set_yscale("log")
    ax.set_ylabel("latency (ms, log)")
    ax.set_title("Fan-out: publish → frame latency, one server process\n"
                 "(tasks x clients per task @ events/s per task)")
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))  # beside the bars, not on them
    report.save_plot(fig, PLOT)


if __name__ == "__main__":
    main()
