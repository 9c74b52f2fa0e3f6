"""Server-Sent Events beside the WebSocket, side by side in one run on each server:
latency (worker progress call -> message read), memory per idle subscribed
stream/socket, and server CPU per delivered event.

    .venv/bin/python -m bench.bench_sse [--runs 3] [--events 300] [--idle 500]
        [--clients 200] [--seconds 5] [--servers daphne,uvicorn]
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid
from typing import Any

from bench import clients, report, stack
from bench.bench_idle import WARM_CONNECTIONS, hold, make_tasks, release
from tests import processes
from tests.sse_client import events_query

TRANSPORTS = ("websocket", "sse")
SETTLE_S = 3.0
FANOUT_RATE = 10.0  # events/s of the fan-out task


# -------------------------------------------------------------- SSE clients


async def _open_sse(port: int, subs: list[tuple[str, str]]) -> tuple[Any, Any]:
    """One stream for `subs`, its response head read; (reader, writer)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=2 ** 20)
    writer.write((f"GET /api/events/?{events_query(subs)} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                  "Accept: text/event-stream\r\n\r\n").encode())
    status = await asyncio.wait_for(reader.readline(), clients.CONNECT_TIMEOUT)
    if b" 200 " not in status:
        raise RuntimeError(f"stream refused: {status!r}")
    while (await reader.readline()).strip():
        pass
    return reader, writer


async def _read_events(reader: Any, result: clients.WatchResult, last: dict[str, int]) -> None:
    """Tally the stream's `event` messages until every task on it is final. Lines are
    read as they come (chunk-size lines of a chunked body are skipped: they are no
    SSE field)."""
    import json

    open_subs = len(last)
    kind = ""
    while open_subs:
        line = await reader.readline()
        if not line:
            return
        if line.startswith(b"event: "):
            kind = line[7:].strip().decode()
        elif line.startswith(b"data: ") and kind in ("event", "snapshot"):
            now = time.time()
            frame = json.loads(line[6:])
            task_id, seq = frame["task_id"], frame["seq"]
            if kind == "snapshot":
                last[task_id] = seq
                continue
            result.latencies_ms.append((now - clients.stamp_seconds(frame["updated_at"])) * 1000)
            result.events += 1
            if seq > last.get(task_id, seq - 1) + 1:
                result.gaps += seq - last[task_id] - 1
            last[task_id] = seq
            if frame["final"]:
                result.finals += 1
                open_subs -= 1


async def sse_watch(control: clients.Control, port: int, conns: list[list[tuple[str, str]]],
                    deadline_s: float) -> clients.WatchResult:
    """clients.watch over SSE: one stream per entry of `conns`; ready once every
    stream has its snapshots; read until all are final or the deadline."""
    result = clients.WatchResult(subscriptions=sum(len(c) for c in conns))
    streams = await clients._gather_limited([_open_sse(port, c) for c in conns], 200)
    lasts: list[dict[str, int]] = [{} for _ in conns]
    # The snapshots come first on each stream: read them before saying ready.
    for (reader, _), last, subs in zip(streams, lasts, conns, strict=True):
        while len(last) < len(subs):
            line = await asyncio.wait_for(reader.readline(), clients.CONNECT_TIMEOUT)
            if line.startswith(b"data: {\"type\":\"snapshot\""):
                import json

                frame = json.loads(line[6:])
                last[frame["task_id"]] = frame["seq"]
    control.send(("ready", len(streams)))
    cpu_start = time.process_time()
    readers = [asyncio.create_task(_read_events(r, result, last))
               for (r, _), last in zip(streams, lasts, strict=True)]
    await asyncio.wait(readers, timeout=deadline_s)
    result.cpu_s = time.process_time() - cpu_start
    for task in readers:
        task.cancel()
    for _, writer in streams:
        writer.transport.abort()
    return result


async def sse_hold_idle(control: clients.Control, port: int, subs: list[tuple[str, str]]) -> int:
    """clients.hold_idle over SSE: one stream per task, held until told to close."""
    streams = await clients._gather_limited([_open_sse(port, [s]) for s in subs], 200)
    for reader, _ in streams:
        while not (await asyncio.wait_for(reader.readline(),
                                          clients.CONNECT_TIMEOUT)).startswith(b"data: "):
            pass
    control.send(("ready", len(streams)))
    await control.recv()
    for _, writer in streams:
        writer.close()
    return len(streams)


def watchers(transport: str, port: int, conns: list[list[tuple[str, str]]],
             deadline_s: float) -> clients.ClientProcess:
    if transport == "sse":
        return clients.ClientProcess(sse_watch, port, conns, deadline_s)
    return clients.ClientProcess(clients.watch, f"ws://127.0.0.1:{port}/ws/progress/", conns,
                                 deadline_s)


# -------------------------------------------------------------- measurements


def latency_run(port: int, events: int, rate: float) -> dict[str, clients.WatchResult]:
    """One paced task watched over both transports at once, each in its own process."""
    from bench.tasks import paced
    from progress.tokens import issue_token

    task_id = f"sse-lat-{uuid.uuid4().hex}"
    subs = [[(task_id, issue_token(task_id))]]
    deadline = events / rate + 30
    procs = {t: watchers(t, port, subs, deadline) for t in TRANSPORTS}
    try:
        for proc in procs.values():
            proc.expect("ready")
        paced.apply_async(kwargs={"events": events, "rate": rate}, task_id=task_id)
        return {t: proc.expect("result", deadline + 60) for t, proc in procs.items()}
    finally:
        for proc in procs.values():
            proc.stop()


def fanout_run(transport: str, proc: processes.Proc, port: int, count: int,
               seconds: float) -> dict[str, float]:
    """One task at FANOUT_RATE ev/s watched by `count` clients over one transport: the
    server's CPU seconds per delivered event."""
    from bench.tasks import paced
    from progress.tokens import issue_token

    task_id = f"sse-fan-{uuid.uuid4().hex}"
    token = issue_token(task_id)
    events = int(seconds * FANOUT_RATE)
    conns = [[(task_id, token)] for _ in range(count)]
    groups = [g for g in clients.split(conns, 2) if g]
    procs = [watchers(transport, port, g, seconds + 30) for g in groups]
    try:
        for p in procs:
            p.expect("ready")
        cpu0 = stack.cpu_seconds(proc.pid)
        paced.apply_async(kwargs={"events": events, "rate": FANOUT_RATE}, task_id=task_id)
        merged = clients.merge_watch([p.expect("result", seconds + 90) for p in procs])
        cpu = stack.cpu_seconds(proc.pid) - cpu0
    finally:
        for p in procs:
            p.stop()
    return {"cpu_us_per_event": cpu / max(1, merged.events) * 1e6, "events": merged.events,
            "lost": count * (events + 3) - merged.events - merged.gaps}


def idle_run(transport: str, kind: str, env: dict[str, str], subs: list[tuple[str, str]],
             count: int) -> float:
    """KB of server RSS per idle subscribed socket/stream (a fresh server process)."""
    proc, port = stack.start_web(kind, env)
    url = f"ws://127.0.0.1:{port}/ws/progress/"

    def held(part: list[tuple[str, str]]) -> list[clients.ClientProcess]:
        if transport == "websocket":
            return hold(url, part)
        procs = [clients.ClientProcess(sse_hold_idle, port, part)]
        for p in procs:
            p.expect("ready", 300)
        return procs

    try:
        warm = held(subs[:WARM_CONNECTIONS])
        time.sleep(SETTLE_S)
        rss0 = stack.rss_bytes(proc.pid)
        idle = held(subs[WARM_CONNECTIONS:WARM_CONNECTIONS + count])
        time.sleep(SETTLE_S)
        rss1 = stack.rss_bytes(proc.pid)
        release(idle)
        release(warm)
    finally:
        proc.stop()
    return (rss1 - rss0) / count / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--events", type=int, default=300)
    parser.add_argument("--rate", type=float, default=100.0)
    parser.add_argument("--idle", type=int, default=500)
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--servers", default=",".join(stack.SERVERS))
    args = parser.parse_args()
    stack.raise_fd_limit()
    setup = report.machine()
    kinds = args.servers.split(",")
    results: dict[tuple[str, str], dict[str, list[float]]] = {
        (k, t): {"p50": [], "p99": [], "kb": [], "cpu_us": [], "lost": []}
        for k in kinds for t in TRANSPORTS}
    with stack.private_redis() as redis_server:
        env = stack.bench_env(redis_server.url)
        stack.setup_django(env)
        subs = make_tasks(WARM_CONNECTIONS + args.idle)
        worker = processes.start_worker(env, f"{env['TASKPULSE_PREFIX']}-w", concurrency=1)
        try:
            for r in range(args.runs):
                for kind in kinds if r % 2 == 0 else kinds[::-1]:
                    proc, port = stack.start_web(kind, env)
                    try:
                        latency_run(port, 50, args.rate)  # warm-up
                        lat = latency_run(port, args.events, args.rate)
                        for t in TRANSPORTS if r % 2 == 0 else TRANSPORTS[::-1]:
                            s = report.summary(lat[t].latencies_ms)
                            results[kind, t]["p50"].append(s["p50"])
                            results[kind, t]["p99"].append(s["p99"])
                            fan = fanout_run(t, proc, port, args.clients, args.seconds)
                            results[kind, t]["cpu_us"].append(fan["cpu_us_per_event"])
                            results[kind, t]["lost"].append(fan["lost"])
                            print(f"run {r} {kind} {t}: {s} {fan}", flush=True)
                    finally:
                        proc.stop()
                    for t in TRANSPORTS:
                        kb = idle_run(t, kind, env, subs, args.idle)
                        results[kind, t]["kb"].append(kb)
                        print(f"run {r} {kind} {t}: {kb:.1f} KB idle", flush=True)
        finally:
            worker.stop()

    rows = [[kind, t, report.median(v["p50"]), report.median(v["p99"]), report.median(v["kb"]),
             report.median(v["cpu_us"]), int(sum(v["lost"]))]
            for (kind, t), v in results.items()]
    report.save_data("sse", {"results": {f"{k}/{t}": v for (k, t), v in results.items()},
                             "args": vars(args)})
    report.write_section("sse", f"""
## 8. Server-Sent Events beside the WebSocket

Set-up: {setup}. Each server (the tuned daphne launcher, uvicorn) serves the
same app, one server process at a time, against a private redis-server and one
Celery worker; WebSocket and SSE are measured in the same run, alternating
({args.runs} runs; figures are medians of the per-run values).

- **latency**: one `bench.paced` task ({args.events} events at {args.rate:g}/s) watched
  at the same time by one WebSocket client and one SSE client (each its own
  process); time the message is read - the event's `updated_at`, in ms.
- **idle**: {args.idle} sockets / streams (after {WARM_CONNECTIONS} warm-up ones), each
  subscribed to its own PENDING task, then idle; server RSS growth per one, in KB
  (a fresh server process per measurement).
- **CPU per event**: one task at {FANOUT_RATE:g} events/s for {args.seconds:g} s watched by
  {args.clients} clients over one transport; the server process's CPU time / the
  event messages delivered, in µs. `lost` counts events neither delivered nor
  coalesced (0 expected).

{report.table(["server", "transport", "p50 ms", "p99 ms", "KB per idle", "CPU µs per event",
               "lost"], rows)}

An idle SSE stream costs more than an idle WebSocket: it is an HTTP request held
open (Django's request and response objects, the ASGI handler's two tasks, the
stream's reader task and queue, the server's request state), where the WebSocket
path was slimmed for idleness (§3). Its events go through the same channel layer
as the WebSockets' (one Redis subscription per task and process, whatever the
number of streams), and each is written once per stream, as a frame is per socket.

Command: `{report.command_line()}`
""")


if __name__ == "__main__":
    main()
