"""Cancelling a task, for the HTTP API and the WebSocket `cancel` frame alike.

A queued task is revoked in the broker and marked REVOKED at once; a running
one is flagged, and its next progress call raises TaskCancelled.
"""

import logging
from enum import Enum

from progress import taskqueue
from progress.publisher import publish, store
from progress.store.records import EventDraft
from progress.wire.states import State, is_final

logger = logging.getLogger(__name__)


class CancelOutcome(Enum):
    ACCEPTED = "accepted"
    NOT_CANCELLABLE = "not_cancellable"
    UNKNOWN = "unknown"


def cancel(task_id: str) -> tuple[CancelOutcome, str | None]:
    state = store().request_cancel(task_id)
    if state is None:
        return CancelOutcome.UNKNOWN, None
    if is_final(state):
        return CancelOutcome.NOT_CANCELLABLE, state
    # The task system drops a queued task when a worker receives it; the record
    # is marked now so watchers do not wait for that.
    taskqueue.revoke(task_id)
    if state == State.PENDING:
        publish(EventDraft(task_id, State.REVOKED,
                           error={"type": "TaskRevokedError", "message": "task cancelled"}))
        return CancelOutcome.ACCEPTED, State.REVOKED.value
    return CancelOutcome.ACCEPTED, state
