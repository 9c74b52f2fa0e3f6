"""The one interface between a task system's hooks and TaskPulse: what happened to a
task, in the task's terms. An integration translates its system's signals into these
calls and keeps no bookkeeping of its own:

    lifecycle.queued(task_id, name)                 # PENDING, in the enqueuing process
    if not lifecycle.started(task_id, name):        # STARTED; heartbeat; track() finds it
        ...refuse the call: the task was cancelled while it was queued
    lifecycle.retried(task_id, error)               # RETRY (the system runs it again)
    lifecycle.finish(task_id, lambda: draft)        # SUCCESS / FAILURE / REVOKED, then ended
    lifecycle.revoked(task_id, why)                 # REVOKED without having run
    lifecycle.terminated(task_id)                   # REVOKED; its process is about to die

`finish` is `finished` (the final event) then `ended` (the bookkeeping: the
heartbeat stops, the reporter's held-back values are published and dropped, the
running task's scope is left); a system that reports the outcome and the end in
two hooks (Celery: task_success, then task_postrun) calls the two separately.
`success` and `failure` build the final events the same way for
every system. LOST is not an integration's to report: the sweeper
(progress/store/sweeper.py) marks a task whose heartbeat stopped.

A call never raises into the task system: a recording problem is logged, and the
task and its worker carry on. docs/TASK_SYSTEMS.md shows how to add a system.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from progress import conf, publisher
from progress.publisher.heartbeat import heartbeat
from progress.store.records import EventDraft, PublishOutcome
from progress.wire.encoding import encode_json_value
from progress.wire.states import State
from progress.wire.types import ErrorInfo

logger = logging.getLogger(__name__)

# TaskPulse id -> the running task's scope (track() with no argument), for the tasks
# running in this process.
_scopes: dict[str, publisher.TaskScope] = {}


def record(draft: EventDraft) -> PublishOutcome | None:
    """Publish `draft`; None (logged) when that failed."""
    try:
        return publisher.publish(draft)
    except Exception:
        logger.exception("TaskPulse could not record %s for task %s", draft.state.value,
                         draft.task_id)
        return None


def queued(task_id: str, name: str | None) -> None:
    """The task was handed to its system (PENDING): watchable from now on."""
    record(EventDraft(task_id, State.PENDING, name=name))


def refused(outcome: PublishOutcome | None) -> bool:
    """Whether STARTED found the task cancelled: flagged, or already REVOKED."""
    if outcome is None:
        return False
    return outcome.cancel_requested or (not outcome.accepted and outcome.state == State.REVOKED)


def started(task_id: str, name: str | None, system_id: str | None = None,
            task: Any = None, refusable: bool = True) -> bool:
    """The task starts running in this thread: STARTED (which arms its stall deadline),
    this process's heartbeat keeps it alive, and `track()` finds it.

    False: it was cancelled while queued. A system that can refuse the call
    (`refusable`) must then not run it, and nothing is kept for it (`finish` still
    records how the system ended it); one that runs it regardless (Celery, whose own
    revoke stops a queued task) keeps the bookkeeping, and the task stops at its
    first progress call."""
    outcome = record(EventDraft(task_id, State.STARTED, name=name,
                                stall_timeout=conf.stall_timeout()))
    if refusable and refused(outcome):
        return False
    heartbeat().begin(task_id)
    _scopes[task_id] = publisher.enter_task(task_id, name, system_id=system_id, task=task)
    return not refused(outcome)


def is_running(task_id: str) -> bool:
    """Whether `started` admitted the task in this process and it has not ended."""
    return task_id in _scopes


def retried(task_id: str, error: ErrorInfo) -> None:
    """The attempt failed and the system will run the task again (RETRY)."""
    record(EventDraft(task_id, State.RETRY, error=error))


def finished(task_id: str, draft: EventDraft | Callable[[], EventDraft]) -> None:
    """How the task ended (the draft, or a function building it: reading the outcome
    from the system may fail, and that is logged like a failed recording)."""
    try:
        final = draft() if callable(draft) else draft
    except Exception:
        logger.exception("TaskPulse could not tell how task %s ended", task_id)
        return
    record(final)


def ended(task_id: str) -> None:
    """The task is no longer running here: stop its heartbeat, publish what its
    reporter held back, leave its scope."""
    heartbeat().end(task_id)
    publisher.forget(task_id)
    scope = _scopes.pop(task_id, None)
    if scope is not None:
        scope.leave()


def finish(task_id: str, draft: EventDraft | Callable[[], EventDraft]) -> None:
    """`finished`, then `ended` whatever happened."""
    try:
        finished(task_id, draft)
    finally:
        ended(task_id)


def revoked(task_id: str, why: str, group_id: str | None = None) -> None:
    """The system revoked the task without running it (or stopped it): REVOKED."""
    publisher.note_group(task_id, group_id)  # a member of a group that never ran
    record(EventDraft(task_id, State.REVOKED,
                      error={"type": "TaskRevokedError", "message": f"task {why}"}))


def terminated(task_id: str) -> None:
    """The process running the (cancelled) task is about to be killed: REVOKED now,
    since nothing will report it after."""
    revoked(task_id, "terminated")
    heartbeat().end(task_id)


# -- the final events, built alike for every system ------------------------------------


def success(task_id: str, result: Any) -> EventDraft:
    return EventDraft(task_id, State.SUCCESS,
                      result_json=encode_json_value(result, conf.result_max_bytes()))


def failure(task_id: str, error: ErrorInfo, cancelled: bool = False) -> EventDraft:
    """FAILURE, or REVOKED when the task stopped on TaskCancelled (a user's cancel)."""
    return EventDraft(task_id, State.REVOKED if cancelled else State.FAILURE, error=error)
