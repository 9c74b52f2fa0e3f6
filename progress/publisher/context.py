"""The running task: what `track()` with no argument finds.

A task system's integration announces the task a worker starts (`enter_task`)
and leaves it when it ends; threads the task starts take it along with `carry`.
A context variable holds it, so `asyncio.to_thread` carries it too.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from contextvars import ContextVar, Token
from dataclasses import dataclass
from typing import Any, ParamSpec, Protocol, TypeVar

from progress import taskqueue

__all__ = ["NO_RUNNING_TASK", "NoRunningTask", "RunningTask", "TaskContext", "TaskScope",
           "carry", "context_task", "enter_task", "running_task", "task_id_of_system_id"]

NO_RUNNING_TASK = (
    "track() was called without a task, and no task is running here. In a task, call it "
    "in the task's own thread, or in a thread started with "
    "progress.publisher.carry(function): a task run by a worker of an enabled task "
    "system (TASKPULSE_TASK_QUEUES: Celery, Django-Q2, Django's tasks framework) is "
    "found by itself. Anywhere else, name the task: track(self) in a bound Celery task, "
    "track(context) in a tasks-framework task with takes_context=True, or track(task_id)."
)

P = ParamSpec("P")
R = TypeVar("R")


class NoRunningTask(RuntimeError):
    """`track()` (`current_progress()`, `carry()`) with no task running here."""


class TaskContext(Protocol):
    """A Django tasks-framework task's `context` (takes_context=True)."""

    @property
    def task_result(self) -> Any: ...


@dataclass(frozen=True, slots=True)
class RunningTask:
    """A task running in this context, as its integration announced it (`enter_task`)."""

    task_id: str  # TaskPulse's id: the record's
    name: str | None = None
    # The task system's own id, when it differs from TaskPulse's (a task the HTTP API
    # started under an id of TaskPulse's choosing): track(system_id) finds the record.
    system_id: str | None = None
    # The system's task object, handed to the progress mirror (Celery's bound task);
    # None: the running task itself, which no mirror takes for one of its own.
    task: Any = None

    def reporter_task(self) -> Any:
        return self if self.task is None else self.task


_running: ContextVar[RunningTask | None] = ContextVar("taskpulse_running_task", default=None)
# The system's id -> TaskPulse's, for tasks running in this process whose ids differ.
_system_ids: dict[str, str] = {}


class TaskScope:
    """A running task announced with `enter_task`: `leave()` it in the same thread when
    the task ends."""

    __slots__ = ("_token", "running")

    def __init__(self, running: RunningTask, token: Token[RunningTask | None]) -> None:
        self.running = running
        self._token = token

    def leave(self) -> None:
        try:
            _running.reset(self._token)
        except ValueError:  # left from another context than it was entered in
            if _running.get() is self.running:
                _running.set(None)
        system_id = self.running.system_id
        if system_id is not None and _system_ids.get(system_id) == self.running.task_id:
            del _system_ids[system_id]


def enter_task(task_id: str, name: str | None = None, system_id: str | None = None,
               task: Any = None) -> TaskScope:
    """For integrations: the task `task_id` starts running in this thread (context), so
    `track()` with no argument finds it until the returned scope is left."""
    running = RunningTask(task_id, name, system_id if system_id != task_id else None, task)
    if running.system_id is not None:
        _system_ids[running.system_id] = task_id
    return TaskScope(running, _running.set(running))


def announced_task() -> RunningTask | None:
    """The task its integration announced in this context, if any."""
    return _running.get()


def running_task() -> RunningTask | None:
    """The task running here: the one its integration announced in this context, else
    the task a system reports for this thread (Celery's current task)."""
    running = _running.get()
    if running is not None:
        return running
    task = taskqueue.current_task()
    if task is None:
        return None
    return RunningTask(task.request.id, task.name, task=task)


def task_id_of_system_id(system_id: str) -> str:
    """TaskPulse's id of a task running here under the system's id `system_id`."""
    return _system_ids.get(system_id, system_id)


def context_task(context: TaskContext) -> tuple[str, str | None, Any]:
    """(TaskPulse's id, name, the task for the reporter) of a tasks-framework context."""
    result = context.task_result
    system_id = str(result.id)
    running = _running.get()
    if running is not None and system_id in (running.system_id, running.task_id):
        return running.task_id, running.name, running.reporter_task()
    task_id = task_id_of_system_id(system_id)
    name = getattr(getattr(result, "task", None), "module_path", None)
    return task_id, name, RunningTask(task_id, name, system_id)


def carry(fn: Callable[P, R]) -> Callable[P, R]:
    """`fn`, run as part of the task running here: for threads the task starts.

        threading.Thread(target=carry(copy_chunk), args=(chunk,)).start()
        pool.submit(carry(copy_chunk), chunk)

    A new thread starts with no running task, so `track()` there raises
    NoRunningTask; `carry` captures the task now (raising the same when there is
    none) and announces it around each call of `fn`, in whatever thread.
    (`asyncio.to_thread` needs no help: it carries context variables along.)
    """
    running = running_task()
    if running is None:
        raise NoRunningTask(NO_RUNNING_TASK)

    @functools.wraps(fn)
    def run(*args: P.args, **kwargs: P.kwargs) -> R:
        token = _running.set(running)
        try:
            return fn(*args, **kwargs)
        finally:
            _running.reset(token)

    return run
