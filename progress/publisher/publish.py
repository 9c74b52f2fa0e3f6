"""The publish pipeline: every event this process publishes goes through `publish`.

It readies a draft (held-back progress first, a capped error, the seq this
process last recorded, the member's group), records it (recording.py: the
record script, through the outbox while Redis is away), then counts a group
member's event in its group (progress/store/groups.py).
"""

from __future__ import annotations

import dataclasses
import logging

from progress import taskqueue
from progress.publisher import reporters
from progress.publisher.capping import with_capped_error
from progress.publisher.heartbeat import heartbeat
from progress.publisher.recording import deliver
from progress.store import groups
from progress.store.records import EventDraft, PublishOutcome
from progress.wire.states import State, is_final

__all__ = ["forget", "note_group", "publish"]

logger = logging.getLogger(__name__)

# task id -> the last seq this process recorded for it, for tasks running here: a
# record found behind it lost writes in a fail-over (EventDraft.known_seq).
_recorded_seqs: dict[str, int] = {}
# task id -> its TaskPulse group (progress/store/groups.py), for tasks running here
_member_groups: dict[str, str] = {}


def publish(draft: EventDraft, fraction: float | None = None) -> PublishOutcome:
    """Record and push one event: every event of this process goes through here.

    A state change first publishes progress the throttle still holds, so the
    last values are delivered before it. `fraction` (0-1, None when unknown)
    feeds the task's group, if it belongs to one. Buffered in order while
    Redis is unreachable.
    """
    if draft.state is not State.PROGRESS:
        reporters.publish_held_back(draft.task_id)
        if draft.state is State.STARTED:
            note_group(draft.task_id, taskqueue.group_of(draft.task_id))
        # Whoever reported it (an exception, update_state, a hook): a runaway message
        # would be kept in every history entry and sent to every watcher.
        draft = with_capped_error(draft)
    known = _recorded_seqs.get(draft.task_id)
    if known is not None:
        draft = dataclasses.replace(draft, known_seq=known)
    group_id = _member_groups.get(draft.task_id)
    final = is_final(draft.state)
    member_final = group_id is not None and final
    if member_final:  # kept with the final: a repair counts it in the group too (finals.py)
        draft = dataclasses.replace(draft, group_id=group_id)
    outcome = deliver(draft)
    if final and (outcome.accepted or outcome.buffered):
        # Recorded (now or once Redis is back), the final is kept and re-checked at
        # every beat, with a thread beating even after the process's last task ended.
        heartbeat().watch_finals()
    if outcome.accepted and (known is not None or draft.state is State.STARTED):
        _recorded_seqs[draft.task_id] = outcome.seq
    if group_id is not None:
        # A final state the record already had (a queued member cancelled from the
        # web, then revoked by the worker) still has to reach the group.
        if outcome.accepted or member_final:
            _aggregate(group_id, draft, fraction)
        if member_final:
            _member_groups.pop(draft.task_id, None)
    return outcome


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


def forget(task_id: str) -> None:
    """The task ended: publish what its reporter held back, then drop it."""
    reporters.close(task_id)
    _member_groups.pop(task_id, None)
    _recorded_seqs.pop(task_id, None)
