"""The task-author API and the one place this process publishes events.

    from progress.publisher import track

    @app.task(bind=True)
    def export(self, rows):
        progress = track(self)
        for i, row in enumerate(rows, 1):
            write(row)
            progress.update(i, total=len(rows), message=f"row {i}")

A published event is one EVALSHA on a connection the process keeps open to
the task's shard (progress/store/shards.py); progress calls are throttled
(progress/publisher/reporter.py), so a hot loop may call them freely. Lifecycle states
(STARTED, SUCCESS, ...) are published by progress.integrations.celery.signals without the task
doing anything. docs/API.md has the rest.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import logging
import os
import threading
from collections.abc import Callable, Sequence
from contextvars import ContextVar, Token
from dataclasses import dataclass
from typing import Any, ParamSpec, Protocol, TypeVar, cast

import redis
from django.core.signals import setting_changed
from django.dispatch import receiver

from progress import taskqueue
from progress.publisher.heartbeat import heartbeat
from progress.publisher.reporter import KEEP, Keep, TaskCancelled, TaskProgress
from progress.store import groups, lua, shards
from progress.store.connections import SentinelScriptRunner, script_runner, sync_clients
from progress.store.outbox import outboxes
from progress.store.records import (
    EventDraft,
    PublishArgs,
    PublishOutcome,
    RecordStore,
    parse_publish,
    publish_args,
)
from progress.store.script_runner import ScriptRunner
from progress.wire.states import State, is_final

__all__ = [
    "KEEP", "EventDraft", "Keep", "NoRunningTask", "RunningTask", "TaskCancelled",
    "TaskProgress", "TaskScope", "carry", "current_progress", "enter_task", "forget",
    "note_group", "publish", "running_task", "store", "track", "with_progress",
]

PROGRESS_KEYWORD = "progress"
# Replies that say "not now" rather than "no": a replica or an old master
# (READONLY, NOREPLICAS: a fail-over is under way, docs/SCALING.md "Sentinel"),
# a server replaying its AOF after a restart (LOADING), one busy with a long
# script (BUSY), a master being elected (MASTERDOWN) or a slot moving
# (TRYAGAIN). Each is treated like an unreachable Redis: the event is kept,
# in order, and retried until it is recorded (docs/GUARANTEES.md).
TRANSIENT_REPLIES = ("READONLY", "NOREPLICAS", "LOADING", "BUSY", "MASTERDOWN", "TRYAGAIN")

logger = logging.getLogger(__name__)


class _BoundTask(Protocol):
    @property
    def request(self) -> Any: ...

    @property
    def name(self) -> str: ...


_store_of_clients: tuple[list[redis.Redis], RecordStore] | None = None


def store() -> RecordStore:
    """This process's record store, on its persistent connections (one per shard)."""
    global _store_of_clients
    clients = sync_clients()
    cached = _store_of_clients
    if cached is None or cached[0] is not clients:
        cached = _store_of_clients = (clients, RecordStore(*clients))
    return cached[1]


# -- publishing ----------------------------------------------------------------

_Runner = ScriptRunner | SentinelScriptRunner
_runners_of_this_process: list[_Runner] | None = None
# task id -> the last seq this process recorded for it, for tasks running here: a
# record found behind it lost writes in a fail-over (EventDraft.known_seq).
_recorded_seqs: dict[str, int] = {}
# task id -> its TaskPulse group (progress/store/groups.py), for tasks running here
_member_groups: dict[str, str] = {}


def _runners() -> list[_Runner]:
    """The PUBLISH script on this process's own connection to each shard."""
    global _runners_of_this_process
    runners = _runners_of_this_process
    if runners is None:
        runners = _runners_of_this_process = [
            script_runner(shard, lua.PUBLISH) for shard in range(shards.count())]
    return runners


def _forget_runners_after_fork() -> None:
    # A forked pool child opens its own connection, never writes to its parent's socket.
    global _runners_of_this_process
    _runners_of_this_process = None


os.register_at_fork(after_in_child=_forget_runners_after_fork)


@receiver(setting_changed)
def _forget_runners(setting: str = "", **_: Any) -> None:
    if setting in shards.SETTINGS:
        _forget_runners_after_fork()


def publish(draft: EventDraft, fraction: float | None = None) -> PublishOutcome:
    """Record and push one event: every event of this process goes through here.

    A state change first publishes progress the throttle still holds, so the
    last values are delivered before it. `fraction` (0-1, None when unknown)
    feeds the task's group, if it belongs to one. Buffered in order while
    Redis is unreachable.
    """
    if draft.state is not State.PROGRESS:
        _flush_held_back(draft.task_id)
        if draft.state is State.STARTED:
            _note_group(draft.task_id)
    known = _recorded_seqs.get(draft.task_id)
    if known is not None:
        draft = dataclasses.replace(draft, known_seq=known)
    boxes = outboxes()  # one per shard; with one, no shard to look up
    box = boxes[0] if len(boxes) == 1 else boxes[shards.shard_of(draft.task_id)]
    outcome = box.publish(draft, _publish_now)
    if outcome.accepted and (known is not None or draft.state is State.STARTED):
        _recorded_seqs[draft.task_id] = outcome.seq
    group_id = _member_groups.get(draft.task_id)
    if group_id is not None:
        final = is_final(draft.state)
        # A final state the record already had (a queued member cancelled from the
        # web, then revoked by the worker) still has to reach the group.
        if outcome.accepted or final:
            _aggregate(group_id, draft, fraction)
        if final:
            _member_groups.pop(draft.task_id, None)
    return outcome


def publish_many(drafts: Sequence[EventDraft]) -> list[PublishOutcome]:
    """Record and push several events with one pipelined round trip per shard, for a
    process that publishes for many tasks at once (a batch job, a load generator).

    Each event is its own record-script run and PUBLISH, as with `publish`, in
    the order given. Unlike `publish` it neither buffers (a Redis error is
    raised, and events from the failed batch may or may not be recorded) nor
    aggregates groups: use it for plain tasks' events.
    """
    runners = _runners()
    on_shard: dict[int, list[tuple[int, PublishArgs]]] = {}
    for i, draft in enumerate(drafts):
        args = publish_args(draft)
        on_shard.setdefault(args.shard, []).append((i, args))
    outcomes: dict[int, PublishOutcome] = {}
    for shard, items in on_shard.items():
        replies = runners[shard].many([(a.keys, a.varying, a.leading) for _, a in items])
        for (i, _), raw in zip(items, replies, strict=True):
            outcomes[i] = parse_publish(raw)
    return [outcomes[i] for i in range(len(drafts))]


def _publish_now(draft: EventDraft) -> PublishOutcome:
    args = publish_args(draft)
    runner = _runners()[args.shard]
    try:
        outcome = parse_publish(runner(args.keys, args.varying, leading=args.leading))
    except redis.ResponseError as exc:
        if not str(exc).startswith(TRANSIENT_REPLIES):
            raise
        # Reconnect (a new master may be behind the address now), and let the
        # outbox keep the event and retry, in order, until Redis takes it.
        runner.close()
        raise redis.ConnectionError(f"Redis cannot record events right now: {exc}") from exc
    if outcome.accepted and is_final(draft.state):
        # Here rather than in publish(): a final the outbox delivers later is kept too.
        # A fail-over may still lose it with nothing after it to tell; the heartbeat
        # re-checks it and records it again then (progress/publisher/finals.py).
        heartbeat().keep_final(draft, outcome.seq, publish)
    return outcome


def _note_group(task_id: str) -> None:
    note_group(task_id, taskqueue.group_of(task_id))


def note_group(task_id: str, group_id: str | None) -> None:
    """Remember Celery's group id of a task this process publishes for (None: no group)."""
    if group_id:
        _member_groups[task_id] = group_id


def _aggregate(group_id: str, draft: EventDraft, fraction: float | None) -> None:
    try:
        member = groups.member_event(group_id, draft, fraction)
    except Exception:
        # The member's own event is recorded; its group catches up at the next one.
        logger.warning("TaskPulse could not update group %s for task %s", group_id,
                       draft.task_id, exc_info=True)
        return
    if not member:
        _member_groups.pop(draft.task_id, None)  # a plain Celery group: nothing to aggregate


# -- the task author's API -----------------------------------------------------

_reporters: dict[str, TaskProgress] = {}
_reporters_lock = threading.Lock()


class _TaskContext(Protocol):
    """A Django tasks-framework task's `context` (takes_context=True)."""

    @property
    def task_result(self) -> Any: ...


def track(task: _BoundTask | _TaskContext | str | None = None,
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
    `min_interval` overrides PROGRESS_MIN_INTERVAL for this task (0: publish every call).
    """
    if task is None:
        running = running_task()
        if running is None:
            raise NoRunningTask(NO_RUNNING_TASK)
        task_id, name, bound = running.task_id, running.name, running.reporter_task()
    elif isinstance(task, str):
        task_id, name, bound = _system_ids.get(task, task), None, None
        running = _running.get()
        if running is not None and running.task_id == task_id:
            bound = running.reporter_task()
    elif hasattr(task, "task_result"):
        task_id, name, bound = _context_task(cast(_TaskContext, task))
    else:
        task_id, name, bound = task.request.id, task.name, task
        if not task_id:
            raise ValueError("track(self) needs a running task: self.request.id is empty")
    with _reporters_lock:
        reporter = _reporters.get(task_id)
        if reporter is None:
            reporter = _reporters[task_id] = TaskProgress(task_id, publish, name, bound)
    if min_interval is not None:
        reporter.interval = max(0.0, min_interval)
    return reporter


def current_progress() -> TaskProgress:
    """The reporter of the task running here (for helpers that get no task): `track()`."""
    return track()


# -- the running task: what track() with no argument finds ------------------------

NO_RUNNING_TASK = (
    "track() was called without a task, and no task is running here. In a task, call it "
    "in the task's own thread, or in a thread started with "
    "progress.publisher.carry(function): a task run by a worker of an enabled task "
    "system (TASKPULSE_TASK_QUEUES: Celery, Django-Q2, Django's tasks framework) is "
    "found by itself. Anywhere else, name the task: track(self) in a bound Celery task, "
    "track(context) in a tasks-framework task with takes_context=True, or track(task_id)."
)


class NoRunningTask(RuntimeError):
    """`track()` (`current_progress()`, `carry()`) with no task running here."""


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


def _context_task(context: _TaskContext) -> tuple[str, str | None, Any]:
    """(TaskPulse's id, name, the task for the reporter) of a tasks-framework context."""
    result = context.task_result
    system_id = str(result.id)
    running = _running.get()
    if running is not None and system_id in (running.system_id, running.task_id):
        return running.task_id, running.name, running.reporter_task()
    task_id = _system_ids.get(system_id, system_id)
    name = getattr(getattr(result, "task", None), "module_path", None)
    return task_id, name, RunningTask(task_id, name, system_id)


P = ParamSpec("P")
R = TypeVar("R")


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


def _flush_held_back(task_id: str) -> None:
    reporter = _reporters.get(task_id)
    if reporter is not None:
        reporter.publish_held_back()


def forget(task_id: str) -> None:
    """The task ended: publish what its reporter held back, then drop it."""
    with _reporters_lock:
        reporter = _reporters.pop(task_id, None)
    if reporter is not None:
        reporter.close(flush=True)
    _member_groups.pop(task_id, None)
    _recorded_seqs.pop(task_id, None)

