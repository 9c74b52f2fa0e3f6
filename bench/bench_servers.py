"""The tuned launcher against stock servers serving the same site, side by side in one run:
`python -m consumers.serve` (daphne), the launcher with every guard forced off
(TASKPULSE_UNTESTED=*: the public code paths of docs/GUARANTEES.md "Stock daphne and
uvicorn"), `daphne project.asgi:application` and `uvicorn project.asgi:application`.

    .venv/bin/python -m bench.bench_servers [--runs 2] [--seconds 5] [--rate 5] [--idle 1000]

Fan-out (bench_fanout's two scenarios, no Celery worker) with runs alternating
between the servers, then the memory of --idle idle subscribed connections per
server (bench_idle's measurement, one fresh process each). Writes its own section
of docs/BENCHMARKS.md.
"""

from __future__ import annotations

import argparse

from bench import bench_fanout, bench_idle, report, stack

KINDS = ("daphne", "daphne-untested", "daphne-stock", "uvicorn")
LABELS = {"daphne": "daphne, tuned launcher (`python -m consumers.serve`)",
          "daphne-untested": "daphne, launcher with every guard off (`TASKPULSE_UNTESTED=*`)",
          "daphne-stock": "daphne, stock (`daphne project.asgi:application`)",
          "uvicorn": "uvicorn (`uvicorn project.asgi:application`)"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rate", type=float, default=5.0)
    parser.add_argument("--idle", type=int, default=1000, help="idle connections (0: skip)")
    args = parser.parse_args()
    stack.raise_fd_limit()
    setup = report.machine()
    fanout: dict[tuple[str, str], list[dict[str, float]]] = {}
    idle: dict[str, dict[str, float]] = {}
    with stack.private_redis() as redis_server:
        # One client address holds every socket: lift the per-client cap (consumers/sockets.py).
        env = stack.bench_env(redis_server.url, {"TASKPULSE_ASYNCRESULT": "0",
                                                 "TASKPULSE_MAX_SOCKETS_PER_CLIENT": "0"})
        stack.setup_django(env)
        servers = {kind: stack.start_web(kind, env) for kind in KINDS}
        try:
            for r in range(args.runs):
                for sc in bench_fanout.SCENARIOS:
                    for kind in (KINDS if r % 2 == 0 else KINDS[::-1]):
                        proc, port = servers[kind]
                        fanout.setdefault((kind, sc.name), []).append(bench_fanout.one_run(
                            kind, port, proc.pid, env, sc, args.rate, args.seconds,
                            redis_pid=redis_server.popen.pid, publisher="batched"))
        finally:
            for proc, _ in servers.values():
                proc.stop()
        if args.idle:
            subs = bench_idle.make_tasks(args.idle + bench_idle.WARM_CONNECTIONS)
            for kind in KINDS:
                idle[kind] = bench_idle.measure(kind, env, redis_server.client(), subs,
                                                args.idle, probe=False)

    def med(kind: str, scenario: str, field: str) -> float:
        return report.median([run[field] for run in fanout[(kind, scenario)]])

    many, one = (sc.name for sc in bench_fanout.SCENARIOS)
    rows, ratios = [], []
    for kind in KINDS:
        lost = sum(run["lost"] for runs in (fanout[(kind, many)], fanout[(kind, one)])
                   for run in runs)
        rows.append([LABELS[kind], med(kind, many, "cpu_us_per_frame"), med(kind, many, "p50"),
                     med(kind, many, "p99"), med(kind, one, "cpu_us_per_frame"),
                     med(kind, one, "p50"), med(kind, one, "p99"), lost,
                     idle[kind]["server_kb_per_conn"] if idle else float("nan")])
    def ratio(kind: str, scenario: str) -> str:
        base = med("daphne", scenario, "cpu_us_per_frame")
        return f"{med(kind, scenario, 'cpu_us_per_frame') / base:.2f}x"

    for kind in KINDS[1:]:
        memory = (f"{idle[kind]['server_kb_per_conn'] / idle['daphne']['server_kb_per_conn']:.2f}x"
                  if idle else "")
        ratios.append([LABELS[kind], ratio(kind, many), ratio(kind, one), memory])
    report.save_data("servers", {"fanout": {f"{k}|{s}": v for (k, s), v in fanout.items()},
                                 "idle": idle, "args": vars(args)})
    report.write_section("servers", f"""
### The tuned launcher against stock servers

Set-up: {setup}. The same site (`project.asgi:application`) served four ways at the
same time against one private redis-server; fan-out as in §2 (batched publishers, no
Celery worker) at {args.rate:g} events/s per task, {args.seconds:g} s per run,
{args.runs} runs per row alternating between the servers (medians); then
{args.idle} idle subscribed connections on a fresh process of each (§3's measure,
one run). "guards off" is the launcher on releases it does not know: every tuning of
consumers/server/compat.py and progress/store/tuned/ replaced by its public path (daphne's
protocol and input queue, Twisted's buffered writes and producer pause, Channels' own
consumer loop, redis-py's PubSub for the channel layer).

{report.table(["server", f"CPU µs/frame, {many}", "p50 ms", "p99 ms",
               f"CPU µs/frame, {one}", "p50 ms", "p99 ms", "lost", "KB per idle conn"],
              rows)}

Against the tuned launcher (CPU per delivered frame; memory per idle connection):

{report.table(["server", many, one, "KB per idle conn"], ratios)}

Command: `{report.command_line()}`
""")


if __name__ == "__main__":
    main()
