"""DjangoQQueue: the TaskQueue of Django-Q2 (`django-q2`: a cluster started with
`manage.py qcluster`), and `QTask`, a Django-Q2 task the HTTP API may start.

Django-Q2 has no task objects: a task is a function (or its dotted path) handed
to `async_task`. A function the HTTP API may start is registered as a `QTask`:

    from progress.control.startable import startable
    from progress.integrations.django_q import q_task

    startable(check_export)(q_task(export, name="reports.export"))
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from django.utils.module_loading import import_string

from progress.taskqueue.base import TaskQueue
from progress.taskqueue.unavailable import CONNECTION_ERRORS, sending


@dataclass(frozen=True)
class QTask:
    """A Django-Q2 task: the dotted path `async_task` gets (a worker imports it), the
    name the HTTP API starts it by, and `async_task` options (`q_options`: group,
    timeout, cluster, hook, ...)."""

    func: str
    name: str
    options: Mapping[str, Any] = field(default_factory=dict)

    def function(self) -> Callable[..., Any]:
        found: Callable[..., Any] = import_string(self.func)
        return found


def q_task(func: Callable[..., Any] | str, *, name: str | None = None,
           **options: Any) -> QTask:
    """`func` (a module-level function, or its dotted path) as a Django-Q2 task named
    `name` (default: the dotted path), started with these `async_task` options."""
    if isinstance(func, str):
        path = func
    else:
        module, qualname = getattr(func, "__module__", None), getattr(func, "__qualname__", "")
        if not module or "<" in qualname or "." in qualname:
            raise ValueError(f"{func!r} is not a module-level function: a Django-Q2 worker "
                             "imports a task by its dotted path")
        path = f"{module}.{qualname}"
    return QTask(path, name or path, dict(options))


class DjangoQQueue(TaskQueue):
    name = "django_q"

    def install(self) -> None:
        from progress.integrations.django_q import arguments, signals

        signals.connect()
        arguments.connect()

    def owns(self, task: Any) -> bool:
        return isinstance(task, QTask)

    def task_name(self, task: Any) -> str:
        return str(task.name) if isinstance(task, QTask) else super().task_name(task)

    def signature(self, task: Any) -> inspect.Signature:
        return inspect.signature(task.function() if isinstance(task, QTask) else task)

    def start(self, task: Any, args: Sequence[Any], kwargs: dict[str, Any],
              task_id: str) -> None:
        from django_q.tasks import async_task

        from progress.integrations.django_q import arguments, signals

        # A copy: async_task pops `task_name` from the options it is given.
        q_options = dict(task.options) if isinstance(task, QTask) else {}
        func = task.func if isinstance(task, QTask) else task
        # Django-Q2 picks its own id; pre_enqueue files the task under `task_id`. The
        # client's keyword arguments go into the package there, never through
        # async_task's keywords, where `sync`, `hook`, `chain`... are its options
        # (arguments.py); positional arguments are only ever the function's.
        with (sending(self.name, CONNECTION_ERRORS), signals.starting_as(task_id),
              arguments.passing(kwargs) as pending):
            async_task(func, *args, q_options=q_options)
        if not pending.passed:
            raise RuntimeError(
                "TaskPulse's Django-Q2 pre_enqueue hook did not run, so the task was sent "
                "without its keyword arguments: keep DjangoQQueue.install() connected")

    def revoke(self, task_id: str, terminate: bool = False) -> None:
        # Django-Q2 cannot take a message back from its broker, nor from the
        # cluster's prefetch queue: a cancelled queued task is refused by the
        # worker that takes it (signals.on_pre_execute). A running one stops at its
        # next progress call; `terminate` (a cancelled task that ignored the request
        # for TASKPULSE_CANCEL_GRACE) ends the cluster worker running it.
        if terminate:
            from progress.integrations.django_q import signals

            signals.terminate(task_id)
