"""The task author's API: `track` a task's progress, or have it passed in.

    from progress.publisher import track

    @app.task(bind=True)
    def export(self, rows):
        progress = track(self)
        for i, row in enumerate(rows, 1):
            write(row)
            progress.update(i, total=len(rows), message=f"row {i}")
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any, Protocol, TypeVar, cast

from progress.publisher import context, reporters
from progress.publisher.context import NO_RUNNING_TASK, NoRunningTask, TaskContext
from progress.publisher.publish import publish
from progress.publisher.reporter import TaskProgress

__all__ = ["PROGRESS_KEYWORD", "current_progress", "track", "with_progress"]

PROGRESS_KEYWORD = "progress"

R = TypeVar("R")


class _BoundTask(Protocol):
    @property
    def request(self) -> Any: ...

    @property
    def name(self) -> str: ...


def track(task: _BoundTask | TaskContext | str | None = None,
          min_interval: float | None = None) -> TaskProgress:
    """The progress reporter of the task running here, or of the task given.

    `track()` finds the running task by itself: its integration announces it
    when a worker starts it (`enter_task`), for Celery, Django-Q2 and the
    tasks framework alike; threads the task starts take it along with
    `carry(fn)`. Outside a task it raises NoRunningTask, saying what to do.
    `track(self)` (a bound Celery task), `track(context)` (a tasks-framework
    task with takes_context=True) and `track(task_id)` name the task instead.

    The same object is returned for the same task id within a process, so a
    helper function that only knows the id continues where the task left off.
    `min_interval` overrides TASKPULSE_MIN_INTERVAL for this task (0: publish every call).
    """
    if task is None:
        running = context.running_task()
        if running is None:
            raise NoRunningTask(NO_RUNNING_TASK)
        task_id, name, bound = running.task_id, running.name, running.reporter_task()
    elif isinstance(task, str):
        task_id, name, bound = context.task_id_of_system_id(task), None, None
        running = context.announced_task()
        if running is not None and running.task_id == task_id:
            bound = running.reporter_task()
    elif hasattr(task, "task_result"):
        task_id, name, bound = context.context_task(cast(TaskContext, task))
    else:
        task_id, name, bound = task.request.id, task.name, task
        if not task_id:
            raise ValueError("track(self) needs a running task: self.request.id is empty")
    reporter = reporters.reporter_for(
        task_id, lambda: TaskProgress(task_id, publish, name, bound))
    if min_interval is not None:
        reporter.interval = max(0.0, min_interval)
    return reporter


def current_progress() -> TaskProgress:
    """The reporter of the task running here (for helpers that get no task): `track()`."""
    return track()


def with_progress(fn: Callable[..., R]) -> Callable[..., R]:
    """Decorator for a bound task: pass its reporter as the `progress` keyword.

        @shared_task(bind=True)
        @with_progress
        def export(self, rows, *, progress):
            ...

    Held-back values are published when the function returns.
    """
    signature = inspect.signature(fn)
    if PROGRESS_KEYWORD not in signature.parameters:
        raise TypeError(f"{fn.__name__} must accept a `{PROGRESS_KEYWORD}` keyword argument")

    @functools.wraps(fn)
    def run(self: _BoundTask, *args: Any, **kwargs: Any) -> R:
        with track(self) as progress:
            return fn(self, *args, **{PROGRESS_KEYWORD: progress}, **kwargs)

    # Celery checks call arguments against the signature: callers never pass `progress`.
    params = [p for name, p in signature.parameters.items() if name != PROGRESS_KEYWORD]
    run.__signature__ = signature.replace(parameters=params)  # type: ignore[attr-defined]
    return run
