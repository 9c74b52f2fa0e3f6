"""Runaway text a task hands us, cut to TASKPULSE_MESSAGE_MAX_CHARS before it is
recorded: a progress message, and an error's type and message however the error
was reported (an exception, a FAILURE declared through update_state, a hook)."""

from __future__ import annotations

import dataclasses

from progress import conf
from progress.store.records import EventDraft
from progress.wire.types import ErrorInfo

ELLIPSIS = "\u2026"


def capped(text: str) -> str:
    # Kept in every history entry (TASKPULSE_HISTORY_LENGTH of them) and sent to
    # every watcher: a runaway text must not cost that many times over.
    limit = conf.message_max_chars()
    return text if len(text) <= limit else text[:limit - 1] + ELLIPSIS


def with_capped_error(draft: EventDraft) -> EventDraft:
    """`draft` with its error's type and message capped (a traceback keeps its own,
    longer cap); `draft` itself when nothing was too long."""
    error = draft.error
    if error is None:
        return draft
    cut: ErrorInfo = {**error}
    if "type" in error:
        cut["type"] = capped(str(error["type"]))
    if "message" in error:
        cut["message"] = capped(str(error["message"]))
    return draft if cut == error else dataclasses.replace(draft, error=cut)
