"""Coalescing a queue of a task's events: a newer progress-only event replaces the
task's queued one, when nothing of that task is queued after it (PROTOCOL.md §4
rule 5). A state change is never replaced, nor overtaken: the order of a task's
events is kept.

One rule for every queue that holds events back: the worker's outbox while Redis
is away (progress/store/outbox.py) and a slow reader's send queue
(consumers/outbox.py).
"""

from collections.abc import Callable, Sequence
from typing import TypeVar

T = TypeVar("T")


def replaceable(queue: Sequence[T], task_id: str | None, task_of: Callable[[T], str | None],
                progress_only: Callable[[T], bool]) -> int | None:
    """The index of the queued item a newer progress-only event of `task_id` replaces:
    the task's newest queued item, if it is progress-only too; None: append instead."""
    last = len(queue) - 1
    for offset, item in enumerate(reversed(queue)):
        if task_of(item) == task_id:
            return last - offset if progress_only(item) else None
    return None
