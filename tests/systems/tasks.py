"""Tasks the integration tests start over the HTTP API, on Django-Q2 and on the tasks
framework (each registered when its integration is enabled)."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any

from progress.control.startable import anyone, startable
from progress.publisher import NoRunningTask, carry, track
from project.demo import systems


def work(steps: int = 3, delay: float = 0.05, fail: str | None = None,
         mark: str | None = None, pid: bool = False, block: float = 0.0,
         outside: bool = False) -> dict[str, Any]:
    """`steps` progress calls `delay` apart; then fails with `fail`, if given.

    mark: a file created when the task runs (a cancelled queued task never does);
    pid: the worker's process id in `meta`; block: seconds spent without a progress
    call first; outside: what track() says in a thread started without carry()."""
    if mark:
        Path(mark).write_text(str(os.getpid()))
    result: dict[str, Any] = {"steps": steps}
    if outside:
        result.update(outside_task_probe())
    time.sleep(block)
    progress = track()
    for i in range(1, steps + 1):
        time.sleep(delay)
        progress.update(i, total=steps, message=f"step {i}",
                        meta={"pid": os.getpid()} if pid else None)
    if fail:
        raise RuntimeError(fail)
    return result


def outside_task_probe() -> dict[str, Any]:
    """track() in a plain thread (no running task there) and in a carried one."""
    seen: dict[str, Any] = {}

    def plain() -> None:
        try:
            track()
        except NoRunningTask as exc:
            seen["plain"] = str(exc)

    def carried() -> None:
        seen["carried"] = track().task_id

    for target in (plain, carry(carried)):
        thread = threading.Thread(target=target)
        thread.start()
        thread.join(10)
    return {"outside_error": seen.get("plain"), "carried_id": seen.get("carried"),
            "task_id": track().task_id}


if systems.DJANGO_Q in systems.active_systems():
    from progress.integrations.django_q import q_task

    q_work = startable(allow=anyone)(q_task(work, name="tests.work.django_q"))


if systems.DJANGO_TASKS in systems.active_systems():
    task = systems.task_decorator()

    @startable(allow=anyone)
    @task(takes_context=True)
    def work_task(context: Any, **kwargs: Any) -> dict[str, Any]:
        result = work(**kwargs)
        # track(context) and track() name the same task (TaskPulse's id).
        result["context_id"] = track(context).task_id
        return result


# -- issue 15: a start request's arguments reach the function and nothing else -------

# The file leave_trace appends to (the stack's environment names it).
TRACE_ENV = "TASKPULSE_TEST_TRACE"
TRACE = "tests.systems.tasks.leave_trace"


def leave_trace(*args: Any, **kwargs: Any) -> None:
    """Importable, never startable: a start request that makes a task system call it
    (as a hook, a chain's next task, a link) leaves a line with this process's id."""
    with open(os.environ[TRACE_ENV], "a") as trace:
        trace.write(f"{os.getpid()}\n")


def echo(*args: Any, **kwargs: Any) -> dict[str, Any]:
    """What the function got, and the process it ran in."""
    return {"pid": os.getpid(), "args": list(args), "kwargs": kwargs}


if systems.DJANGO_Q in systems.active_systems():
    q_echo = startable(allow=anyone)(q_task(echo, name="tests.echo.django_q"))


if systems.DJANGO_TASKS in systems.active_systems():

    @startable(allow=anyone)
    @task()
    def echo_task(*args: Any, **kwargs: Any) -> dict[str, Any]:
        return echo(*args, **kwargs)


if systems.CELERY in systems.active_systems():
    from celery import shared_task

    @startable(allow=anyone)
    @shared_task(name="tests.echo.celery")
    def echo_celery(*args: Any, **kwargs: Any) -> dict[str, Any]:
        return echo(*args, **kwargs)
