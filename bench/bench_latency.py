"""End-to-end latency: a progress call in a Celery worker -> the frame read by a
WebSocket client, at 100 events/s, daphne and uvicorn serving the same app.

    .venv/bin/python -m bench.bench_latency [--runs 5] [--events 500] [--rate 100]
"""

from __future__ import annotations

import argparse
import time
import uuid

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from bench import clients, report, stack
from tests import processes

PLOT = report.ROOT / "docs" / "bench-latency.png"
DIRECT = "Redis subscriber (no web server)"
KINDS = (*stack.SERVERS, DIRECT)


def one_run(url: str, events: int, rate: float) -> clients.WatchResult:
    from bench.tasks import paced
    from progress.tokens import issue_token

    task_id = f"lat-{uuid.uuid4().hex}"
    token = issue_token(task_id)

    def start() -> None:
        paced.apply_async(kwargs={"events": events, "rate": rate}, task_id=task_id)

    return clients.run_watchers(url, [[(task_id, token)]], 1, events / rate + 30, start)


async def redis_direct(control: clients.Control, redis_url: str, channel: str,
                       deadline_s: float) -> clients.WatchResult:
    """The floor: a plain Redis subscriber on the task's group channel, no web server."""
    import json

    import msgpack
    import redis.asyncio as aioredis

    result = clients.WatchResult(subscriptions=1)
    client = aioredis.Redis.from_url(redis_url)
    pubsub = client.pubsub()
    await pubsub.subscribe(channel)
    control.send(("ready", 1))
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
        if message is None:
            continue
        now = time.time()
        event = json.loads(msgpack.unpackb(message["data"])["data"])
        result.latencies_ms.append((now - clients.stamp_seconds(event["updated_at"])) * 1000)
        result.events += 1
        if event["final"]:
            break
    await client.aclose()
    return result


def one_direct_run(redis_url: str, events: int, rate: float) -> clients.WatchResult:
    from bench.tasks import paced
    from progress.store import keys

    task_id = f"lat-{uuid.uuid4().hex}"
    reader = clients.ClientProcess(redis_direct, redis_url, keys.group_channel(task_id),
                                   events / rate + 30)
    try:
        reader.expect("ready")
        paced.apply_async(kwargs={"events": events, "rate": rate}, task_id=task_id)
        result: clients.WatchResult = reader.expect("result", events / rate + 60)
        return result
    finally:
        reader.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--events", type=int, default=500)
    parser.add_argument("--rate", type=float, default=100.0)
    args = parser.parse_args()
    stack.raise_fd_limit()
    setup = report.machine()
    with stack.private_redis() as redis_server:
        env = stack.bench_env(redis_server.url)
        stack.setup_django(env)
        worker = processes.start_worker(env, f"{env['TASKPULSE_PREFIX']}-w", concurrency=1)
        servers = {kind: stack.start_web(kind, env) for kind in stack.SERVERS}
        per_run: dict[str, list[dict[str, float]]] = {k: [] for k in KINDS}
        pooled: dict[str, list[float]] = {k: [] for k in KINDS}
        lost: dict[str, int] = dict.fromkeys(KINDS, 0)
        try:
            one_run(f"ws://127.0.0.1:{servers['daphne'][1]}/ws/progress/", 50, args.rate)  # warm
            for r in range(args.runs):
                order = KINDS if r % 2 == 0 else KINDS[::-1]
                for kind in order:
                    if kind == DIRECT:
                        res = one_direct_run(redis_server.url, args.events, args.rate)
                    else:
                        url = f"ws://127.0.0.1:{servers[kind][1]}/ws/progress/"
                        res = one_run(url, args.events, args.rate)
                    lat = res.latencies_ms
                    per_run[kind].append(report.summary(lat))
                    pooled[kind] += lat
                    # PENDING, STARTED, the progress events and SUCCESS
                    lost[kind] += args.events + 3 - res.events
                    print(f"run {r} {kind}: {report.summary(lat)}", flush=True)
                    time.sleep(0.5)
        finally:
            for proc, _ in servers.values():
                proc.stop()
            worker.stop()

    rows = []
    for kind in KINDS:
        runs = per_run[kind]
        rows.append([kind, *(report.median([s[p] for s in runs]) for p in ("p50", "p90", "p99")),
                     max(s["p99"] for s in runs), report.percentile(pooled[kind], 99),
                     len(pooled[kind]), lost[kind]])
    plot(pooled)
    report.save_data("latency", {"per_run": per_run, "lost": lost, "args": vars(args)})
    d50 = rows[0][1]
    report.write_section("latency", f"""
## 1. End-to-end latency (worker progress call → WebSocket frame)

Set-up: {setup}. One Celery worker (prefork, concurrency 1) runs `bench.paced`,
which calls `track(self).update(i, total=n)` {args.events} times at {args.rate:g} events/s
(TASKPULSE_MIN_INTERVAL=0). One WebSocket client (its own process) is subscribed
through the server under test before the task is sent; latency, over every event
of the task (PENDING, STARTED, PROGRESSxn, SUCCESS), = time the frame is read - the event's
`updated_at` (stamped in the worker before its Redis call), same clock. Both
servers run the same ASGI app at the same time against a private redis-server;
runs alternate between them ({args.runs} runs each, {args.events} events per run).
The last row is the floor without any web server: a plain redis-py subscriber
(its own process) on the task's group channel, timed the same way.
Figures in ms; p50/p90/p99 are medians of the per-run values.

{report.table(["server", "p50", "p90", "p99", "worst run p99", "pooled p99", "events", "lost"],
              rows)}

Target on daphne: p50 ≤ 1 ms, p99 ≤ 3 ms — measured p50 {d50:.2f} ms, p99 {rows[0][3]:.2f} ms.

![latency CDF](bench-latency.png)

Command: `{report.command_line()}`
""")


def plot(pooled: dict[str, list[float]]) -> None:
    fig, ax = plt.subplots(figsize=(7, 4))
    for kind, values in pooled.items():
        xs = np.sort(np.asarray(values))
        ys = np.arange(1, len(xs) + 1) / len(xs)
        ax.plot(xs, ys, label=kind)
    ax.set_xscale("log")
    ax.set_xlabel("worker progress call → client frame (ms, log)")
    ax.set_ylabel("fraction of events")
    ax.set_title("End-to-end latency at 100 events/s")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    report.save_plot(fig, PLOT)


if __name__ == "__main__":
    main()
