"""Cancelling a task, for the HTTP API and the WebSocket `cancel` frame alike.

The record script decides on the task's state as it is at that moment
(progress/store/lua.py REQUEST_CANCEL): a queued task is REVOKED at once, a
running one is flagged and its next progress call raises TaskCancelled. Only
the first request tells the task system to revoke it: repeating a cancel
broadcasts nothing more. Cancelling a watched group or chord cancels each of
its members.
"""

import logging
from enum import Enum

from progress import taskqueue
from progress.publisher import store
from progress.store.groups import member_ids
from progress.wire.states import is_final

logger = logging.getLogger(__name__)


class CancelOutcome(Enum):
    ACCEPTED = "accepted"
    NOT_CANCELLABLE = "not_cancellable"
    UNKNOWN = "unknown"


def cancel(task_id: str) -> tuple[CancelOutcome, str | None]:
    request = store().request_cancel(task_id)
    if request.state is None:
        return CancelOutcome.UNKNOWN, None
    if not request.first:
        if is_final(request.state):
            return CancelOutcome.NOT_CANCELLABLE, request.state
        return CancelOutcome.ACCEPTED, request.state  # already asked: nothing more to send
    # The task system drops a queued task when a worker receives it and stops a
    # running one it can; the record already says what watchers need to know.
    taskqueue.revoke(task_id)
    for member in member_ids(task_id):
        cancel(member)
    return CancelOutcome.ACCEPTED, request.state
