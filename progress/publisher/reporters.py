"""The progress reporters of the tasks publishing in this process, one per task id.

`track()` hands out the same reporter for the same task id, so a helper that only
knows the id continues where the task left off; the publish pipeline flushes a
task's held-back progress before its next state change, and `forget` drops it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from progress.publisher.reporter import TaskProgress

_reporters: dict[str, TaskProgress] = {}
_lock = threading.Lock()


def reporter_for(task_id: str, make: Callable[[], TaskProgress]) -> TaskProgress:
    """The task's reporter, made by `make()` the first time."""
    with _lock:
        reporter = _reporters.get(task_id)
        if reporter is None:
            reporter = _reporters[task_id] = make()
        return reporter


def publish_held_back(task_id: str) -> None:
    """Publish the progress the task's throttle still holds, if it has a reporter."""
    reporter = _reporters.get(task_id)
    if reporter is not None:
        reporter.publish_held_back()


def close(task_id: str) -> None:
    """The task ended: publish what its reporter held back, then drop it."""
    with _lock:
        reporter = _reporters.pop(task_id, None)
    if reporter is not None:
        reporter.close(flush=True)
