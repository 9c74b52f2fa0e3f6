"""§3 objects TaskPulse builds itself (the rest come from the record script)."""

from __future__ import annotations

from progress.wire.states import UNKNOWN
from progress.wire.types import TaskObject


def unknown_object(task_id: str) -> TaskObject:
    """The object of a task with no record (PROTOCOL.md §2 UNKNOWN)."""
    return {
        "task_id": task_id,
        "name": None,
        "epoch": None,
        "seq": 0,
        "state": UNKNOWN,
        "final": False,
        "progress": {"current": 0, "total": None, "percent": None, "message": None},
        "eta": None,
        "meta": {},
        "result": None,
        "error": None,
        "updated_at": None,
    }
