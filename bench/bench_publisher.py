"""Cost of one progress call in a Celery task, side by side on one Redis:

- a raw Redis round trip (redis-py PING on a persistent connection; and a bare socket PING),
- the naive `async_to_sync(get_channel_layer().group_send)(group, message)`,
  with the project's layer (RedisPubSubChannelLayer) and channels_redis' default
  RedisChannelLayer,
- a TaskPulse published call (`track(id).update(...)` with TASKPULSE_MIN_INTERVAL=0),
  without and with the AsyncResult mirror (the default: written by the record
  script in the same round trip), and with the mirror as a round trip of its own
  (what the mirror costs where the result backend is not the record's Redis,
  and what every mirrored call cost before),
- Celery's `self.update_state(state="PROGRESS", meta=...)`: Celery's own (unwrapped)
  call, and the call TaskPulse streams, every call published and at the defaults,
- a TaskPulse throttled call (the default TASKPULSE_MIN_INTERVAL=0.1), 1,000,000 in a loop.

Within a round the fast cases take turns in slices of 50 calls, and the figures
are per-call medians over the rounds, so a noisy neighbour slows every case alike.

    .venv/bin/python -m bench.bench_publisher [--rounds 15] [--calls 2000]
"""

from __future__ import annotations

import argparse
import time
import uuid
from collections.abc import Callable
from typing import Any

from bench import report, stack

TARGET_PUBLISHED_RATIO = 1.5  # without the mirror, and with it (the default)
# A mirrored call before the mirror rode in the record script (this section, 2026-11-21):
# a second EVALSHA, and Celery's meta rebuilt and re-encoded on every call.
PREVIOUS_MIRROR_RATIO = 3.03
TARGET_THROTTLED_SECONDS = 1.0  # for 1,000,000 calls
THROTTLED_CALLS = 1_000_000
NAIVE_CALLS = 200  # a few ms each: fewer calls, same number of rounds
SLICE = 50  # calls per turn of the fast cases within a round
SERVER_SAMPLE = 2000  # published calls timed by Redis itself
REFERENCE = "raw round trip: redis-py PING"
PUBLISHED = "TaskPulse published call, no mirror (TASKPULSE_ASYNCRESULT=0)"
MIRRORED = "TaskPulse published call + AsyncResult mirror, one round trip (default)"
TWO_TRIPS = "TaskPulse published call + mirror as a 2nd round trip (the old path)"
CELERY_UPDATE_STATE = "Celery's own update_state (no TaskPulse)"
UPDATE_STATE = "update_state streamed by TaskPulse (TASKPULSE_MIN_INTERVAL=0)"
UPDATE_STATE_DEFAULT = "update_state streamed by TaskPulse (defaults)"
THROTTLED = "TaskPulse throttled call (TASKPULSE_MIN_INTERVAL=0.1)"


def seconds_for(fn: Callable[[], Any], calls: int) -> float:
    started = time.perf_counter()
    for _ in range(calls):
        fn()
    return time.perf_counter() - started


Case = tuple[Callable[[], Any], int]  # (one call, calls per round; 0: the --calls default)


def one_round(cases: dict[str, Case], calls: int) -> dict[str, float]:
    """µs per call of every case in one round.

    The sub-millisecond cases run in slices of SLICE calls, taking turns, so a
    burst of load from another process falls on all of them rather than on one.
    """
    spent = dict.fromkeys(cases, 0.0)
    taking_turns = [name for name, (_, fixed) in cases.items() if not fixed]
    for _ in range(max(1, calls // SLICE)):
        for name in taking_turns:
            spent[name] += seconds_for(cases[name][0], SLICE)
    result = {name: spent[name] * 1e6 / (max(1, calls // SLICE) * SLICE)
              for name in taking_turns}
    for name, (fn, fixed) in cases.items():
        if fixed:
            result[name] = seconds_for(fn, fixed) * 1e6 / fixed
    return result


def build_cases(redis_url: str) -> tuple[dict[str, Case], Callable[[], None]]:
    import redis
    from asgiref.sync import async_to_sync
    from celery import Task, current_app
    from channels.layers import get_channel_layer
    from channels_redis.core import RedisChannelLayer
    from django.test import override_settings

    from progress.integrations.celery import interop
    from progress.publisher import forget, track

    client = redis.Redis.from_url(redis_url)
    client.ping()
    bare = client.connection_pool.make_connection()
    bare.connect()

    def bare_ping() -> None:
        bare.send_command("PING")
        bare.read_response()

    from consumers.channel_layer import ensure_alias

    project_layer = get_channel_layer(ensure_alias())  # TaskPulse's own layer alias
    assert project_layer is not None
    core_layer = RedisChannelLayer(hosts=[redis_url], prefix="tpbenchcore")
    message = {"type": "task.event", "task_id": "bench", "seq": 1, "data": "{}"}
    project_send = async_to_sync(project_layer.group_send)
    core_send = async_to_sync(core_layer.group_send)

    with override_settings(TASKPULSE_MIN_INTERVAL=0, TASKPULSE_ASYNCRESULT=False):
        published = track(f"bench-published-{uuid.uuid4()}")
    with override_settings(TASKPULSE_MIN_INTERVAL=0, TASKPULSE_ASYNCRESULT=True):
        mirrored = track(f"bench-mirrored-{uuid.uuid4()}")
    with override_settings(TASKPULSE_MIN_INTERVAL=0, TASKPULSE_ASYNCRESULT=False):
        two_trips = track(f"bench-two-trips-{uuid.uuid4()}")
    counter = {"i": 0}

    def publish_once() -> None:
        counter["i"] += 1
        published.update(counter["i"], total=10**9, message="bench")

    def mirror_once() -> None:
        counter["i"] += 1
        mirrored.update(counter["i"], total=10**9, message="bench")

    def two_trips_once() -> None:
        # The event, then the mirror's own EVALSHA: what a mirrored call does when the
        # result backend is not the task's Redis server (and what each one did before).
        counter["i"] += 1
        two_trips.update(counter["i"], total=10**9, message="bench")
        interop.store_progress(None, two_trips.task_id, {
            "current": counter["i"], "total": 10**9, "percent": 0.0, "message": "bench",
            "eta": None, "meta": {}})

    # Real bound tasks of the host's app, each with a running request, as in a worker.
    def body(self: Any) -> None:
        return None

    def bound_task(name: str, min_interval: float) -> Any:
        task = current_app.task(bind=True, name=name)(body)
        task.push_request(id=f"{name}-{uuid.uuid4()}")
        with override_settings(TASKPULSE_MIN_INTERVAL=min_interval):
            track(task)  # its reporter, with this interval
        return task

    streamed = bound_task("bench.update_state", 0)
    streamed_default = bound_task("bench.update_state_default", 0.1)
    unwrapped = bound_task("bench.update_state_celery", 0)
    celery_update_state = Task.update_state.__wrapped__  # type: ignore[attr-defined]

    def update_state_once(task: Any) -> Callable[[], None]:
        def call() -> None:
            counter["i"] += 1
            task.update_state(state="PROGRESS", meta={"current": counter["i"], "total": 10**9})
        return call

    def celery_update_state_once() -> None:
        counter["i"] += 1
        celery_update_state(unwrapped, state="PROGRESS",
                            meta={"current": counter["i"], "total": 10**9})

    cases: dict[str, Case] = {
        REFERENCE: (client.ping, 0),
        "raw round trip: bare-socket PING": (bare_ping, 0),
        "naive group_send, project layer (pub/sub)": (
            lambda: project_send("task.bench", message), NAIVE_CALLS),
        "naive group_send, RedisChannelLayer": (
            lambda: core_send("task.bench", message), NAIVE_CALLS),
        PUBLISHED: (publish_once, 0),
        MIRRORED: (mirror_once, 0),
        TWO_TRIPS: (two_trips_once, 0),
        CELERY_UPDATE_STATE: (celery_update_state_once, 0),
        UPDATE_STATE: (update_state_once(streamed), 0),
        UPDATE_STATE_DEFAULT: (update_state_once(streamed_default), 0),
    }

    def cleanup() -> None:
        for reporter in (published, mirrored, two_trips):
            forget(reporter.task_id)
        for task in (streamed, streamed_default, unwrapped):
            forget(task.request.id)
            task.pop_request()
        bare.disconnect()

    return cases, cleanup


# -- one row per task system (issue 12) ---------------------------------------------

SYSTEM_CELERY = "Celery task: track(self).update(), published (mirror on)"
SYSTEM_DJANGO_Q = "Django-Q2 task: track().update(), published"
SYSTEM_DJANGO_TASKS = "tasks-framework task: track(context).update(), published"
SYSTEM_ROWS = (SYSTEM_CELERY, SYSTEM_DJANGO_Q, SYSTEM_DJANGO_TASKS)


def build_system_cases() -> tuple[dict[str, Case], Callable[[], None]]:
    """A published progress call (TASKPULSE_MIN_INTERVAL=0, other settings at their
    defaults) in a running task of each task system, reported the way its tasks
    report: a bound Celery task with a running request (`track(self)`; its
    AsyncResult mirror rides in the same round trip); a Django-Q2 task announced as
    the integration's pre_execute hook announces it (`track()`); a tasks-framework
    task announced as its task_started hook does, under an id of TaskPulse's while
    the backend has its own (`track(context)`)."""
    from dataclasses import dataclass

    from celery import current_app
    from django.test import override_settings

    from progress.publisher import enter_task, forget, track

    @dataclass
    class Result:
        id: str

    @dataclass
    class Context:  # what the framework passes a task with takes_context=True
        task_result: Result

    def body(self: Any) -> None:
        return None

    celery_task = current_app.task(bind=True, name="bench.system_celery")(body)
    celery_task.push_request(id=f"bench-system-celery-{uuid.uuid4()}")
    q_id, tasks_id = f"bench-system-q-{uuid.uuid4()}", f"bench-system-tasks-{uuid.uuid4()}"
    with override_settings(TASKPULSE_MIN_INTERVAL=0):
        reporters = {SYSTEM_CELERY: track(celery_task)}
        q_scope = enter_task(q_id, "bench.system_django_q", system_id=uuid.uuid4().hex)
        reporters[SYSTEM_DJANGO_Q] = track()
        tasks_scope = enter_task(tasks_id, "bench.system_django_tasks",
                                 system_id=f"backend-{tasks_id}")
        reporters[SYSTEM_DJANGO_TASKS] = track(Context(Result(f"backend-{tasks_id}")))
    assert reporters[SYSTEM_DJANGO_Q].task_id == q_id
    assert reporters[SYSTEM_DJANGO_TASKS].task_id == tasks_id
    counter = {"i": 0}

    def calling(name: str) -> Callable[[], None]:
        update = reporters[name].update

        def call() -> None:
            counter["i"] += 1
            update(counter["i"], total=10**9, message="bench")
        return call

    cases: dict[str, Case] = {name: (calling(name), 0) for name in SYSTEM_ROWS}

    def cleanup() -> None:
        tasks_scope.leave()
        q_scope.leave()
        for reporter in reporters.values():
            forget(reporter.task_id)
        celery_task.pop_request()

    return cases, cleanup


def throttled_seconds() -> float:
    """Seconds for THROTTLED_CALLS calls at the default interval (interop on: the default)."""
    from django.test import override_settings

    from progress.publisher import forget, track

    with override_settings(TASKPULSE_MIN_INTERVAL=0.1, TASKPULSE_ASYNCRESULT=True):
        progress = track(f"bench-throttled-{uuid.uuid4()}")
    update = progress.update
    started = time.perf_counter()
    for i in range(THROTTLED_CALLS):
        update(i, total=THROTTLED_CALLS)
    elapsed = time.perf_counter() - started
    forget(progress.task_id)
    return elapsed


def server_side(client: Any, publish_once: Callable[[], Any]) -> tuple[float, float]:
    """(µs Redis itself spends per EVALSHA of the record script, EVALSHA calls per
    published call) from INFO commandstats: the private server runs nothing else."""
    client.config_resetstat()
    seconds_for(publish_once, SERVER_SAMPLE)
    stats = client.info("commandstats")["cmdstat_evalsha"]
    return float(stats["usec_per_call"]), stats["calls"] / SERVER_SAMPLE


def verdict(met: bool) -> str:
    return "met" if met else "NOT met in this run"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--calls", type=int, default=2000, help="calls per case per round")
    parser.add_argument("--no-write", action="store_true", help="print, leave the doc alone")
    opts = parser.parse_args()

    setup = report.machine()
    with stack.private_redis() as server:
        env = stack.bench_env(server.url)
        stack.setup_django(env)
        import project.celery  # noqa: F401  (the app whose result backend the mirror writes)

        cases, cleanup = build_cases(server.url)
        system_cases, system_cleanup = build_system_cases()
        cases.update(system_cases)
        samples: dict[str, list[float]] = {name: [] for name in cases}
        throttled: list[float] = []
        for _ in range(opts.rounds):
            for name, per_call in one_round(cases, opts.calls).items():
                samples[name].append(per_call)
            throttled.append(throttled_seconds())
        server_us, _ = server_side(server.client(), cases[PUBLISHED][0])
        mirror_us, mirror_calls = server_side(server.client(), cases[MIRRORED][0])
        cleanup()
        system_cleanup()

    pings = samples[REFERENCE]
    samples[THROTTLED] = [s * 1e6 / THROTTLED_CALLS for s in throttled]

    def ratio(name: str) -> float:
        # Per round, then the median: both sides of a ratio saw the same noise.
        return report.median([v / p for v, p in zip(samples[name], pings, strict=True)])

    rows: list[list[Any]] = [
        [name, report.median(values), ratio(name), min(values), max(values)]
        for name, values in samples.items()
    ]
    throttled_s = report.median(throttled)
    published_ratio = ratio(PUBLISHED)
    mirrored_ratio = ratio(MIRRORED)

    def rounds_met(name: str) -> int:
        return sum(v / p <= TARGET_PUBLISHED_RATIO
                   for v, p in zip(samples[name], pings, strict=True))

    def versus(name: str, base: str) -> float:
        return report.median([v / b for v, b in zip(samples[name], samples[base], strict=True)])

    rows.append(["one-round-trip mirror vs the old 2nd round trip (per-round ratio)",
                 "", versus(MIRRORED, TWO_TRIPS), "", ""])
    report.save_data("publisher", {"setup": setup, "samples_us": samples,
                                   "throttled_seconds": throttled, "rounds": opts.rounds})
    markdown = f"""## Publisher: the cost of one progress call

Set-up: {setup}. One process, a private redis-server, {opts.rounds} rounds; in
each round every fast case runs {opts.calls} calls in slices of {SLICE}, the cases
taking turns, so noise hits them alike ({NAIVE_CALLS} calls each for the naive
paths, {THROTTLED_CALLS:,} for the throttled call). Figures are per call, median
over the rounds (µs), and the ratio to the redis-py PING round trip (median of
the per-round ratios).

{report.table(["path", "µs per call", "x round trip", "best round", "worst round"], rows)}

- The round trip: redis-py `PING` on a persistent connection, what "one Redis
  round trip" costs a Python process using the usual client (the reference of
  the targets); the bare-socket `PING` (redis-py's connection object, no client
  layer) shows the floor under it.
- Published call: `track(id).update(...)` with `TASKPULSE_MIN_INTERVAL=0` and
  `TASKPULSE_ASYNCRESULT=0`: one EVALSHA (seq, record, history, expiry, cancel flag
  and the PUBLISH to the task's channel-layer group) on the worker's own
  connection; target ≤ {TARGET_PUBLISHED_RATIO}x the round trip — measured
  {published_ratio:.2f}x ({verdict(published_ratio <= TARGET_PUBLISHED_RATIO)}; within the
  target in {rounds_met(PUBLISHED)} of {opts.rounds} rounds).
- With the AsyncResult mirror (`TASKPULSE_ASYNCRESULT=1`, the default), the same
  EVALSHA also writes Celery's result key (GET to keep a stored final state, SET with
  expiry, PUBLISH for waiting `.get()` calls) when the result backend is the task's
  own Redis server, as it is by default: {mirror_calls:.2f} EVALSHA per published call
  (INFO commandstats), no other command. Target ≤ {TARGET_PUBLISHED_RATIO}x the round
  trip — measured {mirrored_ratio:.2f}x
  ({verdict(mirrored_ratio <= TARGET_PUBLISHED_RATIO)}; within the target in
  {rounds_met(MIRRORED)} of {opts.rounds} rounds). The mirror as a second round trip
  (its own EVALSHA after the event's: how every mirrored call was written before,
  and still the path when the result backend is on another server; here with
  Celery's meta built once per task, as now in both paths) costs
  {ratio(TWO_TRIPS):.2f}x: the one-round-trip mirror takes
  {versus(MIRRORED, TWO_TRIPS):.2f} of its time (the previous implementation, which also
  rebuilt and re-encoded Celery's meta on every call, measured
  {PREVIOUS_MIRROR_RATIO:.2f}x). Throttled calls never mirror.
- Of a published call, Redis itself spends {server_us:.1f} µs running the record
  script, {mirror_us:.1f} µs with the mirror (INFO commandstats); the rest is the round
  trip and the worker's Python.
- `self.update_state(state="PROGRESS", meta={{"current", "total"}})`: Celery's own call
  writes its result backend (a GET, then SET + PUBLISH in a pipeline: two round trips
  through Celery's client), {ratio(CELERY_UPDATE_STATE):.2f}x the round trip. Streamed by
  TaskPulse it also goes through the task's reporter (one EVALSHA when published, no
  second backend write): {ratio(UPDATE_STATE):.2f}x with every call published,
  {ratio(UPDATE_STATE_DEFAULT):.2f}x at the defaults (published at most every 0.1 s;
  Celery's own write, on every call, is most of it).
- One row per task system, side by side in this run: the published call as a task of
  each system makes it (`track(self)` in a Celery task, `track()` in a Django-Q2
  task, `track(context)` in a tasks-framework task): {ratio(SYSTEM_CELERY):.2f}x,
  {ratio(SYSTEM_DJANGO_Q):.2f}x and {ratio(SYSTEM_DJANGO_TASKS):.2f}x the round trip. Finding
  the running task costs nothing per call (the reporter is looked up once); only Celery's
  tasks have an AsyncResult to mirror into.
- Throttled call: {THROTTLED_CALLS:,} `update()` calls at the defaults took
  {throttled_s:.2f} s (median round); target ≤ {TARGET_THROTTLED_SECONDS:.0f} s
  ({verdict(throttled_s <= TARGET_THROTTLED_SECONDS)}).
- The naive paths open an event loop and a Redis connection per call.

Command: `{report.command_line()}`"""
    if opts.no_write:
        print(markdown)
    else:
        report.write_section("publisher", markdown)


if __name__ == "__main__":
    main()
