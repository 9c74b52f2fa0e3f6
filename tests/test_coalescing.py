"""One coalescing rule (progress/wire/coalescing.py) for the worker's outbox and a slow
reader's send queue."""

from __future__ import annotations

from progress.wire.coalescing import replaceable

Item = tuple[str, bool]  # (task id, progress-only)


def _task(item: Item) -> str:
    return item[0]


def _progress_only(item: Item) -> bool:
    return item[1]


def test_a_newer_progress_replaces_the_tasks_newest_queued_progress() -> None:
    """The task's newest queued item is progress-only: it is the one replaced."""
    queue = [("a", True), ("b", True), ("a", True)]
    assert replaceable(queue, "a", _task, _progress_only) == 2


def test_a_state_change_queued_after_it_is_never_overtaken() -> None:
    """Progress queued before the task's state change stays: append after it."""
    queue = [("a", True), ("a", False), ("b", True)]
    assert replaceable(queue, "a", _task, _progress_only) is None


def test_nothing_of_the_task_queued() -> None:
    """No item of the task: append."""
    assert replaceable([("b", True)], "a", _task, _progress_only) is None
    assert replaceable([], "a", _task, _progress_only) is None
