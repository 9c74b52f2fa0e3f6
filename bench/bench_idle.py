"""Idle connections: memory per idle subscribed connection at 1,000 and 10,000
connections in one server process.

    .venv/bin/python -m bench.bench_idle [--counts 1000,10000] [--runs 2] [--probe]

`--probe` runs daphne under tracemalloc (bench/memprobe.py) and prints the
source lines that allocated the most per connection.
"""

from __future__ import annotations

import argparse
import gc
import os
import signal
import sys
import time
import tracemalloc
import uuid

from bench import clients, report, stack
from tests import processes

BASELINE = "daphne@"  # "daphne@/path/to/tree": daphne running another copy of the project
WARM_CONNECTIONS = 100
CLIENTS_PER_PROCESS = 2500
SETTLE_S = 3.0


def make_tasks(n: int) -> list[tuple[str, str]]:
    from progress.publisher import publish
    from progress.store.records import EventDraft
    from progress.tokens import issue_token
    from progress.wire.states import State

    subs = []
    for _ in range(n):
        task_id = f"idle-{uuid.uuid4().hex}"
        publish(EventDraft(task_id, State.PENDING, name="bench.idle"))
        subs.append((task_id, issue_token(task_id)))
    return subs


def hold(url: str, subs: list[tuple[str, str]]) -> list[clients.ClientProcess]:
    groups = clients.split(subs, max(1, -(-len(subs) // CLIENTS_PER_PROCESS)))
    procs = [clients.ClientProcess(clients.hold_idle, url, g) for g in groups]
    for p in procs:
        p.expect("ready", 300)
    return procs


def release(procs: list[clients.ClientProcess]) -> None:
    for p in procs:
        p.send("close")
    for p in procs:
        p.expect("result", 120)
        p.stop()


def probed_web(kind: str, env: dict[str, str], port: int) -> processes.Proc:
    boot = f"import bench.memprobe as m; m.run({kind!r})"
    args = (["--bind", "127.0.0.1", "--port", str(port)] if kind == "daphne" else
            ["--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"])
    return processes.Proc(f"{kind}-probe:{port}", [sys.executable, "-c", boot, *args], env)


def measure(kind: str, env: dict[str, str], redis_client: object, subs: list[tuple[str, str]],
            count: int, probe: bool) -> dict[str, float]:
    port = processes.free_port()
    if kind.startswith(BASELINE):

        proc = stack.daphne_from(kind.removeprefix(BASELINE), env, port)
    elif probe:
        proc = probed_web(kind, env, port)
    else:
        proc = stack.web(kind, env, port)
    url = f"ws://127.0.0.1:{port}/ws/progress/"
    try:
        proc.start()
        processes.wait_http_ok(f"http://127.0.0.1:{port}/healthz", proc=proc)
        warm = hold(url, subs[:WARM_CONNECTIONS])
        time.sleep(SETTLE_S)
        rss0 = stack.rss_bytes(proc.pid)
        redis0 = redis_client.info("memory")["used_memory"]  # type: ignore[attr-defined]
        if probe:
            dump_probe(proc.pid)
        t0 = time.monotonic()
        held = hold(url, subs[WARM_CONNECTIONS:WARM_CONNECTIONS + count])
        connect_s = time.monotonic() - t0
        time.sleep(SETTLE_S)
        rss1 = stack.rss_bytes(proc.pid)
        redis1 = redis_client.info("memory")["used_memory"]  # type: ignore[attr-defined]
        channels = redis_client.pubsub_numpat(), len(redis_client.pubsub_channels())  # type: ignore[attr-defined]
        if probe:
            dump_probe(proc.pid)
        release(held)
        release(warm)
    finally:
        proc.stop()
    out = {"connections": count, "server_kb_per_conn": (rss1 - rss0) / count / 1024,
           "redis_kb_per_conn": (redis1 - redis0) / count / 1024, "rss_mb": rss1 / 2**20,
           "redis_channels": channels[1], "connect_s": connect_s}
    print(f"{kind} {count}: {out}", flush=True)
    return out


def dump_probe(pid: int) -> None:
    """Have the probed server write a snapshot, and wait until it has (it blocks meanwhile)."""
    from bench.memprobe import OUT

    before = len(list(OUT.parent.glob(OUT.name + "-*.snap")))
    os.kill(pid, signal.SIGUSR1)
    deadline = time.monotonic() + 120
    while len(list(OUT.parent.glob(OUT.name + "-*.snap"))) == before:
        if time.monotonic() > deadline:
            raise TimeoutError("the probed server wrote no snapshot")
        time.sleep(0.5)
    time.sleep(2)


def print_probe(count: int, top: int = 20) -> list[tuple[str, float]]:
    from bench.memprobe import OUT

    snaps = sorted(OUT.parent.glob(OUT.name + "-*.snap"), key=os.path.getmtime)
    snapshot = tracemalloc.Snapshot.load(str(snaps[-1]))
    root = str(report.ROOT) + "/"
    lines = [(f"{s.traceback[0].filename.split('site-packages/')[-1].replace(root, '')}"
              f":{s.traceback[0].lineno}", s.size / count)
             for s in snapshot.statistics("lineno")[:top]]
    lines.append(("total traced", sum(s.size for s in snapshot.statistics("filename")) / count))
    print(f"\nbytes still allocated per connection, by line ({count} connections):")
    for where, size in lines:
        print(f"{size:8.0f} B  {where}")
    for s in snaps:
        s.unlink()
    return lines


def write_probe(lines: list[tuple[str, float]], count: int, setup: str) -> None:
    rows = [[f"`{where}`", round(size)] for where, size in lines]
    report.write_section("idleprobe", f"""
### Where an idle connection's memory goes (daphne, tracemalloc)

Set-up: {setup}. daphne run under `bench/memprobe.py`: tracing starts after the
warm-up connections and a snapshot is taken once {count} more are subscribed and
idle; bytes still allocated per connection, by the source line that allocated
them (top lines, then the total traced).

{report.table(["allocated at", "bytes/conn"], rows)}

Command: `{report.command_line()}`
""")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--counts", default="1000,10000")
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--servers", default=",".join(stack.SERVERS),
                        help=f"daphne, uvicorn, or {BASELINE}TREE for an A/B against a copy")
    parser.add_argument("--probe", action="store_true")
    args = parser.parse_args()
    counts = [int(c) for c in args.counts.split(",")]
    kinds = args.servers.split(",")
    stack.raise_fd_limit()
    setup = report.machine()
    results: dict[str, list[dict[str, float]]] = {}
    with stack.private_redis() as redis_server:
        env = stack.bench_env(redis_server.url)
        stack.setup_django(env)
        subs = make_tasks(WARM_CONNECTIONS + max(counts))
        client = redis_server.client()
        gc.collect()
        for r in range(args.runs):
            for count in counts:
                for kind in (kinds if r % 2 == 0 else kinds[::-1]):
                    out = measure(kind, env, client, subs, count, args.probe)
                    results.setdefault(f"{kind}|{count}", []).append(out)
                    if args.probe:
                        probe_lines = print_probe(count)
    if args.probe:
        write_probe(probe_lines, counts[-1], setup)
        return
    rows = []
    for key, runs in results.items():
        kind, count = key.split("|")
        rows.append([kind, int(count),
                     report.median([r["server_kb_per_conn"] for r in runs]),
                     report.median([r["redis_kb_per_conn"] for r in runs]),
                     report.median([r["rss_mb"] for r in runs]),
                     report.median([r["connect_s"] for r in runs])])
    report.save_data("idle", {"results": results, "args": vars(args)})
    report.write_section("idle", f"""
## 3. Idle subscribed connections: memory

Set-up: {setup}. A fresh server process per measurement; {WARM_CONNECTIONS} connections
are opened first (warm-up, baseline), then N more, each subscribed to its own
task (a PENDING record) and then idle. Per-connection cost = (server RSS after -
RSS before) / N, measured {SETTLE_S:g} s after the last subscription; Redis's own
`used_memory` growth is reported apart. Clients: up to {CLIENTS_PER_PROCESS} sockets per
client process. Medians of {args.runs} runs.

{report.table(["server", "connections", "server KB/conn", "Redis KB/conn",
               "server RSS MB", "connect+subscribe s"], rows)}

Target: ≤ 20 KB per connection in the server process.

Command: `{report.command_line()}`
""")


if __name__ == "__main__":
    main()
