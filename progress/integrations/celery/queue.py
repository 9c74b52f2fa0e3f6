"""CeleryQueue: the TaskQueue of Celery, on the host's own app (`current_app`)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from celery import Task, current_app
from kombu.exceptions import OperationalError

from progress.integrations.celery.compat import current_task
from progress.taskqueue.base import BoundTask, ProgressInfo, TaskQueue
from progress.taskqueue.unavailable import CONNECTION_ERRORS, sending


class CeleryQueue(TaskQueue):
    name = "celery"

    def install(self) -> None:
        from progress.integrations.celery import interop, signals

        signals.connect()
        # Task.update_state is streamed like track(self).update() (docs/API.md).
        interop.install()

    def owns(self, task: Any) -> bool:
        return isinstance(task, Task)

    def start(self, task: Any, args: Sequence[Any], kwargs: dict[str, Any],
              task_id: str) -> None:
        # before_task_publish records PENDING before the message reaches the broker.
        # The client's arguments travel as the message's `args` and `kwargs`, never
        # spread into apply_async's options (`queue`, `countdown`, `link`, ...). Kombu
        # raises a broker it cannot reach (and a Redis result backend) as its
        # OperationalError.
        with sending(self.name, (OperationalError, *CONNECTION_ERRORS)):
            task.apply_async(args=tuple(args), kwargs=dict(kwargs), task_id=task_id)

    def revoke(self, task_id: str, terminate: bool = False) -> None:
        # Workers remember revoked ids, so a queued task is dropped when received.
        if terminate:
            current_app.control.revoke(task_id, terminate=True, signal="SIGTERM")
        else:
            current_app.control.revoke(task_id)

    def current_task(self) -> BoundTask | None:
        task: BoundTask | None = current_task()  # progress/integrations/celery/compat.py
        if task is None or not getattr(task.request, "id", None):
            return None
        return task

    def group_of(self, task_id: str) -> str | None:
        from progress.integrations.celery.groups import member_group

        return member_group(task_id)

    def mirror_progress(self, task: Any, task_id: str, info: ProgressInfo) -> None:
        # The task object is whatever track() got: a Celery task, a test double
        # with a backend, or None when only the id is known (the app's backend).
        if task is None or self.owns(task) or hasattr(task, "backend"):
            _store_progress()(task, task_id, info)


_store_progress_fn: Callable[[Any, str, Any], None] | None = None


def _store_progress() -> Callable[[Any, str, Any], None]:
    """interop.store_progress, imported once (the mirror runs on every published call;
    importing interop here at load time would import the publisher with the registry)."""
    global _store_progress_fn
    if _store_progress_fn is None:
        from progress.integrations.celery.interop import store_progress

        _store_progress_fn = store_progress
    return _store_progress_fn
