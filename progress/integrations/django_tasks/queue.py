"""DjangoTasksQueue: the TaskQueue of Django's tasks framework.

Written against the framework's public surface only (`Task`, `TaskResult`,
`TaskContext`, the `task_enqueued`/`task_started`/`task_finished` signals), so
it serves `django.tasks` (Django 6) and the `django-tasks` backport (Django 5.2)
alike, with whichever backend the site configures.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import Any

from progress.integrations.django_tasks.framework import (
    DATABASE_BACKEND_APP,
    frameworks,
    task_classes,
    task_path,
)
from progress.taskqueue.base import TaskQueue
from progress.taskqueue.unavailable import CONNECTION_ERRORS, sending


class DjangoTasksQueue(TaskQueue):
    name = "django_tasks"

    def install(self) -> None:
        from progress.integrations.django_tasks import signals

        signals.connect(frameworks())

    def owns(self, task: Any) -> bool:
        return isinstance(task, task_classes())

    def task_name(self, task: Any) -> str:
        return task_path(task)

    def signature(self, task: Any) -> inspect.Signature:
        signature = inspect.signature(task.func)
        if getattr(task, "takes_context", False):  # the framework passes `context` itself
            params = list(signature.parameters.values())[1:]
            signature = signature.replace(parameters=params)
        return signature

    def start(self, task: Any, args: Sequence[Any], kwargs: dict[str, Any],
              task_id: str) -> None:
        from progress.integrations.django_tasks import signals

        # The backend picks the task's id; task_enqueued files it under `task_id`.
        # `enqueue` takes the function's arguments only (options come from
        # `task.using(...)`), so the client's keyword arguments can name no option.
        with (sending(self.name, CONNECTION_ERRORS), signals.starting_as(task_id),
              _enqueueing(task)):
            task.enqueue(*args, **kwargs)

    def revoke(self, task_id: str, terminate: bool = False) -> None:
        # The framework has no way to take a task back: a cancelled queued task is
        # refused by the worker that takes it (signals.on_started); a running one
        # stops at its next progress call. Nothing can end a running task that makes
        # no progress call: its worker (db_worker) runs it in its own main thread.
        return None


def _enqueueing(task: Any) -> AbstractContextManager[Any]:
    """For django-tasks-db's backend: enqueue in a transaction, so no worker can take
    the task before task_enqueued has filed it under TaskPulse's id."""
    from django.apps import apps

    backend = task.get_backend()
    if (not apps.is_installed(DATABASE_BACKEND_APP)
            or not type(backend).__module__.startswith(DATABASE_BACKEND_APP)):
        return nullcontext()
    from django.db import router, transaction

    config = next(c for c in apps.get_app_configs() if c.name == DATABASE_BACKEND_APP)
    model = config.get_model("DBTaskResult")
    return transaction.atomic(using=router.db_for_write(model))
