"""Connection storm: 5,000 clients connect and subscribe at the same moment.

    .venv/bin/python -m bench.bench_storm [--clients 5000] [--runs 3]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

from bench import bench_idle, clients, report, stack
from tests.processes import Proc

CLIENT_PROCESSES = 4
TARGET_S = 5.0


def one_run(kind: str, env: dict[str, str], subs: list[tuple[str, str]],
            start: Callable[[], tuple[Proc, int]] | None = None) -> dict[str, object]:
    proc, port = start() if start else stack.start_web(kind, env)
    url = f"ws://127.0.0.1:{port}/ws/progress/"
    start_at = time.time() + 3.0  # after every client process has started
    procs = [clients.ClientProcess(clients.storm, url, g, start_at, 1.0)
             for g in clients.split(subs, CLIENT_PROCESSES)]
    try:
        for p in procs:
            p.expect("ready")
        results = [p.expect("result", 180) for p in procs]
    finally:
        for p in procs:
            p.stop()
        # Counted before the stop: shutdown cancels every open connection's tasks.
        errors = [line for line in proc.lines if '" 500 ' in line or "Traceback" in line]
        proc.stop()
    accepted = [t for r in results for t in r.accepted_s]
    subscribed = [t for r in results for t in r.subscribed_s]
    failures: dict[str, int] = {}
    for r in results:
        for key, n in r.failures.items():
            failures[key] = failures.get(key, 0) + n
    out: dict[str, object] = {
        "clients": len(subs), "accepted": len(accepted), "subscribed": len(subscribed),
        "accepted_p50": report.percentile(accepted, 50),
        "accepted_p99": report.percentile(accepted, 99),
        "all_accepted_s": max(accepted) if accepted else float("nan"),
        "all_subscribed_s": max(subscribed) if subscribed else float("nan"),
        "within_target": sum(1 for t in accepted if t <= TARGET_S),
        "failures": failures, "server_errors": len(errors)}
    print(f"{kind}: {out}", flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--clients", type=int, default=5000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--servers", default=",".join(stack.SERVERS))
    args = parser.parse_args()
    kinds = args.servers.split(",")
    stack.raise_fd_limit()
    setup = report.machine()
    results: dict[str, list[dict[str, object]]] = {k: [] for k in kinds}
    with stack.private_redis() as redis_server:
        env = stack.bench_env(redis_server.url)
        stack.setup_django(env)
        subs = bench_idle.make_tasks(args.clients)
        for r in range(args.runs):
            for kind in (kinds if r % 2 == 0 else kinds[::-1]):
                results[kind].append(one_run(kind, env, subs))
                time.sleep(2)
    rows = []
    for kind, runs in results.items():
        def med(field: str, runs: list[dict[str, object]] = runs) -> float:
            return report.median([float(r[field]) for r in runs])  # type: ignore[arg-type]
        failures: dict[str, int] = {}
        for r in runs:
            for key, n in r["failures"].items():  # type: ignore[attr-defined]
                failures[key] = failures.get(key, 0) + n
        rows.append([kind, args.clients, med("accepted"), med("accepted_p50"),
                     med("accepted_p99"), med("all_accepted_s"),
                     max(float(r["all_accepted_s"]) for r in runs),  # type: ignore[arg-type]
                     med("all_subscribed_s"),
                     ", ".join(f"{k}: {v}" for k, v in failures.items()) or "none",
                     sum(int(r["server_errors"]) for r in runs)])  # type: ignore[call-overload]
    report.save_data("storm", {"results": results, "args": vars(args)})
    report.write_section("storm", f"""
## 4. Connection storm

Set-up: {setup}. A fresh server process per run; {args.clients} clients in
{CLIENT_PROCESSES} client processes all start their handshake at the same wall-clock
instant, then each subscribes to its own task and reads the snapshot. Times in
seconds from that instant; medians of {args.runs} runs ("worst" is the slowest run).
Failures are summed over all runs; "server 500/tracebacks" counts such lines in
the server's log.

{report.table(["server", "clients", "accepted", "accept p50 s", "accept p99 s",
               "all accepted s", "worst run all accepted s", "all subscribed s",
               "failures", "server 500/tracebacks"], rows)}

Target: every client accepted within {TARGET_S:g} s, none refused or answered 500.

Command: `{report.command_line()}`
""")


if __name__ == "__main__":
    main()
