"""Recording lifecycle events from a task system's hooks, for every integration:
a hook never raises into the task system (a recording problem is logged, and
the task and its worker carry on)."""

from __future__ import annotations

import logging
from collections.abc import Callable

from progress import publisher
from progress.store.records import EventDraft, PublishOutcome

logger = logging.getLogger(__name__)


def record(draft: EventDraft) -> PublishOutcome | None:
    """Publish `draft`; None (logged) when that failed."""
    try:
        return publisher.publish(draft)
    except Exception:
        logger.exception("TaskPulse could not record %s for task %s", draft.state.value,
                         draft.task_id)
        return None


def record_final(task_id: str, draft: Callable[[], EventDraft]) -> None:
    """Publish the final event `draft()` builds (reading how the task ended may fail)."""
    try:
        final = draft()
    except Exception:
        logger.exception("TaskPulse could not tell how task %s ended", task_id)
        return
    record(final)
