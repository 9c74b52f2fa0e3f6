"""A/B of a server-side change: the same fan-out load on two daphne processes side
by side, one running a copy of the tree from before the change, one this tree.

    rsync -a --exclude .venv --exclude .git ./ /tmp/tp-baseline/   # before the change
    .venv/bin/python -m bench.bench_ab --baseline /tmp/tp-baseline [--runs 4]

Reports, per variant, the web process's CPU µs per delivered frame (the figure
least disturbed by other load on the machine), delivered/s and latency.
"""

from __future__ import annotations

import argparse

from bench import bench_fanout, report, stack
from tests import processes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--baseline", required=True, help="path of the tree before the change")
    parser.add_argument("--runs", type=int, default=4)
    parser.add_argument("--scenario", type=int, default=1, help="index into SCENARIOS")
    parser.add_argument("--rate", type=float, default=3.0)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--storm", type=int, default=0,
                        help="instead of fan-out: a connection storm of this many clients")
    args = parser.parse_args()
    stack.raise_fd_limit()
    if args.storm:
        storm_ab(args)
        return
    scenario = bench_fanout.SCENARIOS[args.scenario]
    results: dict[str, list[dict[str, float]]] = {"baseline": [], "current": []}
    with stack.private_redis() as redis_server:
        env = stack.bench_env(redis_server.url)
        stack.setup_django(env)
        base_port = processes.free_port()
        base = stack.daphne_from(args.baseline, env, base_port).start()
        processes.wait_http_ok(f"http://127.0.0.1:{base_port}/healthz", proc=base)
        cur, cur_port = stack.start_web("daphne", env)
        servers = {"baseline": (base, base_port), "current": (cur, cur_port)}
        try:
            for r in range(args.runs):
                for name in (["baseline", "current"] if r % 2 == 0 else ["current", "baseline"]):
                    proc, port = servers[name]
                    results[name].append(bench_fanout.one_run(
                        name, port, proc.pid, env, scenario, args.rate, args.seconds))
        finally:
            base.stop()
            cur.stop()
    rows = []
    for name, runs in results.items():
        rows.append([name, report.median([r["cpu_us_per_frame"] for r in runs]),
                     report.median([r["delivered_per_s"] for r in runs]),
                     report.median([r["p50"] for r in runs]),
                     report.median([r["p99"] for r in runs]),
                     sum(r["lost"] for r in runs)])
    ratio = rows[0][1] / rows[1][1]
    print(f"\n{scenario.name} @ {args.rate:g}/s, {args.runs} runs each (medians)")
    print(report.table(["variant", "CPU µs/frame", "delivered/s", "p50 ms", "p99 ms", "lost"],
                       rows))
    print(f"baseline/current CPU per frame: {ratio:.2f}x")


def storm_ab(args: argparse.Namespace) -> None:
    from bench import bench_idle, bench_storm

    with stack.private_redis() as redis_server:
        env = stack.bench_env(redis_server.url)
        stack.setup_django(env)
        subs = bench_idle.make_tasks(args.storm)

        def start_baseline() -> tuple[processes.Proc, int]:
            port = processes.free_port()
            proc = stack.daphne_from(args.baseline, env, port).start()
            processes.wait_http_ok(f"http://127.0.0.1:{port}/healthz", proc=proc)
            return proc, port

        for r in range(args.runs):
            for name in (["baseline", "current"] if r % 2 == 0 else ["current", "baseline"]):
                start = start_baseline if name == "baseline" else (
                    lambda: stack.start_web("daphne", env))
                bench_storm.one_run(name, env, subs, start)


if __name__ == "__main__":
    main()
