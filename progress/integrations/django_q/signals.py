"""Django-Q2 signal hooks: every task's lifecycle is recorded and pushed without
the task author doing anything.

- `pre_enqueue` (the process that calls `async_task`): PENDING, so the id
  `async_task` returns can be watched at once.
- `post_spawn` (each cluster worker process, as it starts): the stall sweeper.
- `pre_execute` (the worker, just before the call): STARTED, which arms the stall
  deadline; this process's heartbeat keeps it alive, and `track()` finds the
  task. A task cancelled while it was queued is refused here: the call raises
  TaskCancelled before the function is entered, so it never runs.
- `post_execute_in_worker` (the worker, right after the call): SUCCESS with the
  return value, FAILURE with the error's type and message (REVOKED when the task
  stopped on TaskCancelled), or RETRY when the broker will present the task again
  (brokers with acknowledgement, `max_attempts` not reached).

A hook never raises into Django-Q2: a recording problem is logged, and the task
(and the worker) carry on.
"""

from __future__ import annotations

import functools
import logging
import multiprocessing
import os
import pydoc
import signal
import sys
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from django_q import signals
from django_q.conf import Conf
from django_q.utils import get_func_repr

from progress import conf, publisher
from progress.integrations import lifecycle
from progress.integrations.django_q.results import CANCELLED_TYPE, error_of
from progress.process_state import ProcessSlot
from progress.store.records import EventDraft
from progress.store.sweeper import Sweeper
from progress.wire.encoding import error_info
from progress.wire.states import State

logger = logging.getLogger(__name__)

# The task package's key for TaskPulse's id, when the HTTP API chose it (Django-Q2
# picks its own ids): set at pre_enqueue, it travels with the task to the worker.
ID_KEY = "taskpulse_id"
# Where on_pre_execute keeps the arguments of a refused task while the call fails.
HELD_ARGS_KEY = "taskpulse_held_args"
OPT_OUT_ATTRIBUTE = "track_progress"

_start_as: ContextVar[str | None] = ContextVar("taskpulse_django_q_start_as", default=None)


def _started_sweeper() -> Sweeper:
    sweeper = Sweeper()
    sweeper.start()
    return sweeper


# This process's sweeper, started on first use (a forked worker starts its own).
_sweeper: ProcessSlot[Sweeper] = ProcessSlot(_started_sweeper)


@contextmanager
def starting_as(task_id: str) -> Iterator[None]:
    """The task `async_task` enqueues in this block is TaskPulse's `task_id`."""
    token = _start_as.set(task_id)
    try:
        yield
    finally:
        _start_as.reset(token)


def taskpulse_id(task: dict[str, Any]) -> str:
    """The id of a task package's record: TaskPulse's, else Django-Q2's own."""
    return str(task.get(ID_KEY) or task["id"])


def is_tracked(func: Any) -> bool:
    """Unless the task's function says `track_progress = False` (a dotted path is
    looked up, as the worker will)."""
    if isinstance(func, str):
        func = _function_at(func)
    return bool(getattr(func, OPT_OUT_ATTRIBUTE, True))


@functools.lru_cache(maxsize=1024)
def _function_at(path: str) -> Any:
    try:
        return pydoc.locate(path)
    except Exception:  # the worker reports a function it cannot import
        return None


def on_pre_enqueue(sender: Any = None, task: dict[str, Any] | None = None, **_: Any) -> None:
    if not task or not is_tracked(task.get("func")):
        return
    start_as = _start_as.get()
    if start_as is not None:
        task[ID_KEY] = start_as
    lifecycle.queued(taskpulse_id(task), get_func_repr(task.get("func")))


def on_post_spawn(sender: Any = None, **_: Any) -> None:
    """A cluster worker process starts: it sweeps for stalled tasks too (as Celery's
    workers do), so a site served without consumers.serve still sees LOST."""
    if not in_cluster_worker():
        return  # `sync` tasks run the worker loop in the caller's own process
    _sweeper.get()


def in_cluster_worker() -> bool:
    """Whether this process is a worker of a cluster (not a `sync` run in the caller)."""
    return multiprocessing.parent_process() is not None


class _Refused:
    """The arguments of a task cancelled while it was queued: unpacking them for the
    call raises TaskCancelled, so the worker records a failure without entering the
    task's function."""

    def __init__(self, task_id: str) -> None:
        self.task_id = task_id

    def __iter__(self) -> Iterator[Any]:
        raise publisher.TaskCancelled(f"task {self.task_id} was cancelled before it started")


def on_pre_execute(sender: Any = None, func: Any = None, task: dict[str, Any] | None = None,
                   **_: Any) -> None:
    if not task or not is_tracked(func if func is not None else task.get("func")):
        return
    task_id = taskpulse_id(task)
    if not lifecycle.started(task_id, get_func_repr(task.get("func")), system_id=str(task["id"])):
        task[HELD_ARGS_KEY] = task.get("args", ())
        task["args"] = _Refused(task_id)


def on_post_execute_in_worker(sender: Any = None, func: Any = None,
                              task: dict[str, Any] | None = None, **_: Any) -> None:
    if not task:
        return
    if HELD_ARGS_KEY in task:  # the monitor saves the task's own arguments
        task["args"] = task.pop(HELD_ARGS_KEY)
    if not is_tracked(func if func is not None else task.get("func")):
        return
    task_id = taskpulse_id(task)
    lifecycle.finish(task_id, lambda: final_event(task_id, task))


def final_event(task_id: str, task: dict[str, Any]) -> EventDraft:
    """SUCCESS, FAILURE, REVOKED (stopped on TaskCancelled) or RETRY, from the package
    the worker hands to its monitor."""
    if task.get("success"):
        return lifecycle.success(task_id, task.get("result"))
    if "success" in task:
        error = error_of(task.get("result"))
    else:
        # A `sync` task that raised: the hook runs while the worker handles the
        # exception, before it fills in the package.
        error = error_info(sys.exc_info()[1], _traceback_text())
    if error["type"] != CANCELLED_TYPE and will_retry(task):
        return EventDraft(task_id, State.RETRY, error=error)
    return lifecycle.failure(task_id, error, cancelled=error["type"] == CANCELLED_TYPE)


def _traceback_text() -> str | None:
    return traceback.format_exc() if conf.send_traceback() else None


def will_retry(task: dict[str, Any]) -> bool:
    """Whether the broker presents the failed task again: a broker that acknowledges
    (Django-Q2's ORM, SQS, MongoDB; never Redis), a task not acknowledged on failure,
    `max_attempts` not reached."""
    if not task.get("ack_id") or task.get("ack_failure") or task.get("sync"):
        return False
    max_attempts = int(Conf.MAX_ATTEMPTS or 0)
    if max_attempts <= 0:
        return True
    try:
        from django_q.models import Task

        done = Task.objects.filter(id=task["id"]).values_list("attempt_count", flat=True).first()
    except Exception:
        logger.warning("TaskPulse could not read the attempts of task %s", task.get("id"),
                       exc_info=True)
        return False
    # The monitor counts this attempt when it saves the result, after this hook.
    return int(done or 0) + 1 < max_attempts


def terminate(task_id: str) -> None:
    """End the cluster worker running `task_id` (a cancelled task that ignored the
    request): REVOKED first; the cluster's guard starts a new worker in its place."""
    if not lifecycle.is_running(task_id) or not in_cluster_worker():
        return  # not running here, or in the caller's own process (`sync`): never killed
    logger.warning("TaskPulse: terminating the Django-Q2 worker %d running cancelled task %s",
                   os.getpid(), task_id)
    lifecycle.terminated(task_id)
    os.kill(os.getpid(), signal.SIGKILL)


HOOKS = [
    (signals.pre_enqueue, on_pre_enqueue),
    (signals.post_spawn, on_post_spawn),
    (signals.pre_execute, on_pre_execute),
    (signals.post_execute_in_worker, on_post_execute_in_worker),
]


def connect() -> None:
    for hook_signal, hook in HOOKS:
        hook_signal.connect(hook, weak=False, dispatch_uid=f"taskpulse.django_q.{hook.__name__}")
