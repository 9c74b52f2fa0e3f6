"""Tasks-framework signal hooks: every task's lifecycle is recorded and pushed
without the task author doing anything.

- `task_enqueued` (the process that enqueues): PENDING, so the id of the
  returned `TaskResult` can be watched at once.
- `task_started` (the worker, just before the call): STARTED, which arms the
  stall deadline; this process's heartbeat keeps it alive, and `track()` finds
  the task. A task cancelled while it was queued is refused here: the hook
  raises TaskCancelled, which the worker records as the task's failure without
  calling the function.
- `task_finished`: SUCCESS with the return value, FAILURE with the error's type
  and message, REVOKED when the task stopped on TaskCancelled.

Apart from that refusal, a hook never raises into the framework: a recording
problem is logged, and the task (and the worker) carry on.
"""

from __future__ import annotations

import importlib
import logging
import sys
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from types import ModuleType
from typing import Any

import redis

from progress import conf, publisher
from progress.integrations import lifecycle
from progress.integrations.django_tasks.framework import task_path
from progress.process_state import ProcessSlot
from progress.store import shards
from progress.store.connections import sync_client
from progress.store.records import EventDraft
from progress.store.sweeper import Sweeper
from progress.wire.encoding import REPR_LIMIT, error_info
from progress.wire.types import ErrorInfo

logger = logging.getLogger(__name__)

OPT_OUT_ATTRIBUTE = "track_progress"
SUCCESSFUL = "SUCCESSFUL"
FAILED = "FAILED"
# Backends that run a task inside the enqueue call, in the caller's process (a web
# process, a test): no worker there to sweep for stalled tasks.
IN_CALLER_BACKENDS = frozenset({"ImmediateBackend"})
CANCELLED_PATH = f"{publisher.TaskCancelled.__module__}.{publisher.TaskCancelled.__qualname__}"

# TaskPulse's id for the task enqueued in this context, and the backend ids filed under it.
_start_as: ContextVar[tuple[str, list[str]] | None] = ContextVar(
    "taskpulse_django_tasks_start_as", default=None)
# The framework's task id -> TaskPulse's, while this process needs it: during the
# enqueue (a backend that runs the task inside it), and for a task refused at start.
_aliases: dict[str, str] = {}
# The framework's task id -> TaskPulse's, for tasks running in this process.
_running: dict[str, str] = {}


def _started_sweeper() -> Sweeper:
    sweeper = Sweeper()
    sweeper.start()
    return sweeper


# This process's sweeper, started on first use (a forked worker starts its own).
_sweeper: ProcessSlot[Sweeper] = ProcessSlot(_started_sweeper)


@contextmanager
def starting_as(task_id: str) -> Iterator[None]:
    """The task enqueued in this block is TaskPulse's `task_id`."""
    filed: list[str] = []
    token = _start_as.set((task_id, filed))
    try:
        yield
    finally:
        _start_as.reset(token)
        for system_id in filed:
            _aliases.pop(system_id, None)


# -- TaskPulse's id of a task ----------------------------------------------------------
# A task the HTTP API starts already has TaskPulse's id (its token names it), and the
# backend picks another. task_enqueued files the task under TaskPulse's id and leaves
# the pair in Redis for the worker, which looks it up at task_started.


def alias_key(system_id: str) -> str:
    return f"{conf.key_prefix()}:alias:{{{system_id}}}"


def _remember(system_id: str, task_id: str) -> None:
    _aliases[system_id] = task_id
    client = sync_client(shards.shard_of(system_id))
    client.set(alias_key(system_id), task_id, ex=max(conf.active_ttl(), conf.final_ttl()))


def taskpulse_id(system_id: str) -> str:
    """TaskPulse's id of the framework's task `system_id` (the same, unless the HTTP
    API started it)."""
    known = _aliases.get(system_id)
    if known is not None:
        return known
    try:
        raw = sync_client(shards.shard_of(system_id)).get(alias_key(system_id))
    except redis.RedisError as exc:
        logger.warning("TaskPulse could not look up task %s: %s", system_id, exc)
        return system_id
    if raw is None:
        return system_id
    return raw.decode() if isinstance(raw, bytes) else str(raw)


# -- the hooks ---------------------------------------------------------------------


def is_tracked(task: Any) -> bool:
    return bool(getattr(getattr(task, "func", None), OPT_OUT_ATTRIBUTE, True))


def on_enqueued(sender: Any = None, task_result: Any = None, **_: Any) -> None:
    if task_result is None or not is_tracked(task_result.task):
        return
    system_id = str(task_result.id)
    starting = _start_as.get()
    task_id = starting[0] if starting is not None else system_id
    if starting is not None and task_id != system_id:
        starting[1].append(system_id)
        try:
            _remember(system_id, task_id)
        except Exception:
            logger.exception("TaskPulse could not file task %s under %s", system_id, task_id)
    lifecycle.queued(task_id, task_path(task_result.task))


def on_started(sender: Any = None, task_result: Any = None, **_: Any) -> None:
    if task_result is None or not is_tracked(task_result.task):
        return
    system_id = str(task_result.id)
    task_id = taskpulse_id(system_id)
    _aliases.pop(system_id, None)
    name = task_path(task_result.task)
    if getattr(sender, "__name__", "") not in IN_CALLER_BACKENDS:
        _start_sweeper()
    if not lifecycle.started(task_id, name, system_id=system_id):
        if task_id != system_id:
            _aliases[system_id] = task_id  # for task_finished
        # The worker records this as the task's failure and never calls the function.
        raise publisher.TaskCancelled(f"task {task_id} was cancelled before it started")
    _running[system_id] = task_id


def on_finished(sender: Any = None, task_result: Any = None, **_: Any) -> None:
    if task_result is None or not is_tracked(task_result.task):
        return
    system_id = str(task_result.id)
    task_id = (_running.pop(system_id, None)  # refused at task_started, or started elsewhere:
               or _aliases.pop(system_id, "") or taskpulse_id(system_id))
    lifecycle.finish(task_id, lambda: final_event(task_id, task_result))


def final_event(task_id: str, task_result: Any) -> EventDraft:
    status = str(getattr(task_result.status, "value", task_result.status))
    if status == SUCCESSFUL:
        return lifecycle.success(task_id, task_result.return_value)
    error, cancelled = error_of(task_result)
    return lifecycle.failure(task_id, error, cancelled)


def error_of(task_result: Any) -> tuple[ErrorInfo, bool]:
    """(the error, whether it is TaskCancelled) of a failed task.

    Backends send task_finished while they handle the exception, so it is at hand;
    otherwise the task's last recorded error (its class path and traceback) tells.
    """
    errors = list(getattr(task_result, "errors", None) or [])
    last = errors[-1] if errors else None
    path = str(getattr(last, "exception_class_path", "") or "")
    exc = sys.exc_info()[1]
    if exc is not None and (not path or path.endswith(type(exc).__qualname__)):
        text = traceback.format_exc() if conf.send_traceback() else None
        return error_info(exc, text), isinstance(exc, publisher.TaskCancelled)
    traceback_text = str(getattr(last, "traceback", "") or "")
    info: ErrorInfo = {"type": path.rsplit(".", 1)[-1] or "Error",
                       "message": message_of(path, traceback_text)}
    if conf.send_traceback() and traceback_text:
        info["traceback"] = traceback_text[-8000:]
    return info, path == CANCELLED_PATH


def message_of(path: str, traceback_text: str) -> str:
    """The exception's message from the end of its traceback: `Type: message`."""
    lines = traceback_text.rstrip("\n").split("\n")
    names = {path, path.removeprefix("builtins."), path.rsplit(".", 1)[-1]} - {""}
    for i in range(len(lines) - 1, -1, -1):
        for name in names:
            if lines[i] == name:
                return ""
            if lines[i].startswith(f"{name}: "):
                message = "\n".join([lines[i][len(name) + 2:], *lines[i + 1:]])
                return message[:REPR_LIMIT]
    return ""


def _start_sweeper() -> None:
    """A worker sweeps for stalled tasks too (as Celery's do), so a site served
    without consumers.serve still sees LOST; one sweeper per process."""
    _sweeper.get()


HOOKS = (("task_enqueued", on_enqueued), ("task_started", on_started),
         ("task_finished", on_finished))


def connect(frameworks: list[ModuleType]) -> None:
    for framework in frameworks:
        signals = importlib.import_module(f"{framework.__name__}.signals")
        for signal_name, hook in HOOKS:
            getattr(signals, signal_name).connect(
                hook, weak=False, dispatch_uid=_uid(framework, hook.__name__))


def disconnect(frameworks: list[ModuleType]) -> None:
    for framework in frameworks:
        signals = importlib.import_module(f"{framework.__name__}.signals")
        for signal_name, hook in HOOKS:
            getattr(signals, signal_name).disconnect(dispatch_uid=_uid(framework, hook.__name__))


def _uid(framework: ModuleType, hook: str) -> str:
    return f"taskpulse.{framework.__name__}.{hook}"
