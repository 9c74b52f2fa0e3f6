"""Against polling: the same 500 watched tasks served by TaskPulse (push over
WebSocket) and by celery-progress 0.5 (its JS polls every 500 ms).

    .venv/bin/python -m bench.bench_polling [--tasks 500] [--seconds 20] [--runs 3]

Both sides run the same publishing schedule (1 update/s per task), in daphne,
against the same private redis-server; runs alternate between them.
"""

from __future__ import annotations

import argparse
import time
import uuid

from bench import clients, report, stack

CLIENT_PROCESSES = 2
POLL_INTERVAL_S = 0.5  # celery-progress's default pollInterval
RATE = 1.0  # updates per second per task


def run_taskpulse(env: dict[str, str], port: int, pid: int, tasks: int,
                  seconds: float) -> dict[str, float]:
    from progress.publisher import publish
    from progress.store.records import EventDraft
    from progress.tokens import issue_token
    from progress.wire.states import State

    task_ids = [f"push-{uuid.uuid4().hex}" for _ in range(tasks)]
    for t in task_ids:
        publish(EventDraft(t, State.PENDING, name="bench.polling"))
    pub = clients.ClientProcess(clients.publish_paced, env, task_ids, RATE, seconds)
    cpu: dict[str, float] = {}
    try:
        pub.expect("ready")

        def go() -> None:
            cpu["start"], cpu["t0"] = stack.cpu_seconds(pid), time.monotonic()
            pub.send("go")

        res = clients.run_watchers(f"ws://127.0.0.1:{port}/ws/progress/",
                                   [[(t, issue_token(t))] for t in task_ids],
                                   CLIENT_PROCESSES, seconds + 60, go)
        server_cpu = stack.cpu_seconds(pid) - cpu["start"]
        published: clients.PublishResult = pub.expect("result", 120)
    finally:
        pub.stop()
    return outcome("TaskPulse", res.latencies_ms, res.events, published.published + tasks,
                   server_cpu, 0)


def run_polling(env: dict[str, str], port: int, pid: int, tasks: int,
                seconds: float) -> dict[str, float]:
    task_ids = [str(uuid.uuid4()) for _ in range(tasks)]
    pub = clients.ClientProcess(clients.publish_polled, env, task_ids, RATE, seconds)
    pollers = [clients.ClientProcess(clients.poll, port, "/celery-progress/{task_id}/", part,
                                     POLL_INTERVAL_S, seconds + 30)
               for part in clients.split(task_ids, CLIENT_PROCESSES)]
    try:
        for p in [pub, *pollers]:
            p.expect("ready")
        start = stack.cpu_seconds(pid)
        for p in [pub, *pollers]:
            p.send("go")
        results: list[clients.PollResult] = [p.expect("result", seconds + 90) for p in pollers]
        server_cpu = stack.cpu_seconds(pid) - start
        published: clients.PublishResult = pub.expect("result", 60)
    finally:
        for p in [pub, *pollers]:
            p.stop()
    latencies = [x for r in results for x in r.latencies_ms]
    seen = sum(r.updates_seen for r in results)
    requests = sum(r.requests for r in results)
    return outcome("celery-progress", latencies, seen, published.published, server_cpu,
                   requests, sum(r.errors for r in results))


def outcome(name: str, latencies: list[float], delivered: int, published: int,
            server_cpu: float, requests: int, errors: int = 0) -> dict[str, float]:
    s = report.summary(latencies)
    out = {"p50": s["p50"], "p99": s["p99"], "delivered": delivered, "published": published,
           "server_cpu_s": server_cpu, "cpu_ms_per_update": 1000 * server_cpu / max(1, delivered),
           "requests": requests, "errors": errors}
    print(f"{name}: {out}", flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tasks", type=int, default=500)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    stack.raise_fd_limit()
    setup = report.machine()
    results: dict[str, list[dict[str, float]]] = {"TaskPulse": [], "celery-progress": []}
    with stack.private_redis() as redis_server:
        env = stack.bench_env(redis_server.url)
        stack.setup_django(env)
        push, push_port = stack.start_web("daphne", env)
        poll_env = {**env, "DJANGO_SETTINGS_MODULE": "bench.polling_settings"}
        poll, poll_port = stack.start_web("daphne", poll_env)
        try:
            for r in range(args.runs):
                order = ["TaskPulse", "celery-progress"]
                for name in (order if r % 2 == 0 else order[::-1]):
                    if name == "TaskPulse":
                        out = run_taskpulse(env, push_port, push.pid, args.tasks, args.seconds)
                    else:
                        out = run_polling(poll_env, poll_port, poll.pid, args.tasks,
                                          args.seconds)
                    results[name].append(out)
                    time.sleep(1)
        finally:
            push.stop()
            poll.stop()

    def med(name: str, field: str) -> float:
        return report.median([r[field] for r in results[name]])

    rows = [[name, med(name, "p50"), med(name, "p99"), med(name, "delivered"),
             med(name, "published"), med(name, "server_cpu_s"), med(name, "cpu_ms_per_update"),
             med(name, "requests")] for name in results]
    lat_ratio = med("celery-progress", "p50") / med("TaskPulse", "p50")
    cpu_ratio = med("celery-progress", "cpu_ms_per_update") / med("TaskPulse", "cpu_ms_per_update")
    report.save_data("polling", {"results": results, "args": vars(args)})
    report.write_section("polling", f"""
## 5. Against polling (celery-progress 0.5)

Set-up: {setup}. {args.tasks} tasks, each updated {RATE:g}x/s for {args.seconds:g} s, each
watched by one client, in {args.runs} alternating runs:
- **TaskPulse**: `track(task_id).update(...)` (publisher API, no Celery worker), one
  WebSocket per task to daphne.
- **celery-progress**: its `ProgressRecorder.set_progress` (Celery's result
  backend on the same Redis), and one client per task doing what its JS does:
  GET `/celery-progress/<id>/`, then the next GET {POLL_INTERVAL_S * 1000:.0f} ms after the answer
  (HTTP keep-alive), served by daphne with celery_progress added to the same
  project (`bench/polling_settings.py`).
Latency: publish time (in `updated_at`, or in the `description` for
celery-progress) → the client reading the new value. Server CPU: the web
process's CPU seconds during the run, per update delivered to a client.

{report.table(["server", "p50 ms", "p99 ms", "updates delivered", "updates published",
               "server CPU s", "CPU ms/update", "HTTP requests"], rows)}

- Latency p50: celery-progress / TaskPulse = **{lat_ratio:.0f}x** (target ≥ 100x).
- Server CPU per delivered update: celery-progress / TaskPulse = **{cpu_ratio:.1f}x**
  (target ≥ 10x).

Command: `{report.command_line()}`
""")


if __name__ == "__main__":
    main()
