"""The integrations a site enabled: `TASKPULSE_TASK_QUEUES`, dotted paths of
TaskQueue subclasses; by default Celery's, when Celery is installed.

Integrations are imported by path when first needed, so a site without Celery
never imports it.
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Sequence
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.utils.module_loading import import_string

from progress import conf
from progress.process_state import ProcessSlot
from progress.taskqueue.base import BoundTask, ProgressInfo, TaskQueue

logger = logging.getLogger(__name__)

CELERY_QUEUE = "progress.integrations.celery.CeleryQueue"


def default_paths() -> list[str]:
    """Celery's integration when Celery is installed; nothing otherwise."""
    return [CELERY_QUEUE] if importlib.util.find_spec("celery") is not None else []


def enabled() -> tuple[TaskQueue, ...]:
    """The integrations TASKPULSE_TASK_QUEUES enables, imported once per setting."""
    return _enabled.get()


def _import_enabled() -> tuple[TaskQueue, ...]:
    paths = conf.task_queues()
    queues: list[TaskQueue] = []
    for path in default_paths() if paths is None else paths:
        try:
            cls = import_string(path)
        except ImportError as exc:
            raise ImproperlyConfigured(
                f"TASKPULSE_TASK_QUEUES names {path!r}, which cannot be imported ({exc}); "
                f"install the task system or remove it from the setting") from exc
        if not (isinstance(cls, type) and issubclass(cls, TaskQueue)):
            raise ImproperlyConfigured(
                f"TASKPULSE_TASK_QUEUES: {path!r} is not a progress.taskqueue.TaskQueue subclass")
        queues.append(cls())
    return tuple(queues)


_enabled: ProcessSlot[tuple[TaskQueue, ...]] = ProcessSlot(
    _import_enabled, settings={"TASKPULSE_TASK_QUEUES"})


def install() -> None:
    """Connect every enabled integration's lifecycle hooks (the app's ready())."""
    for queue in enabled():
        queue.install()


def integration_for(task: Any) -> TaskQueue:
    for queue in enabled():
        if queue.owns(task):
            return queue
    names = ", ".join(q.name for q in enabled()) or "none"
    raise ImproperlyConfigured(
        f"{task!r} is not a task of an enabled task system (enabled: {names}); "
        "add its integration to TASKPULSE_TASK_QUEUES")


def revoke(task_id: str, terminate: bool = False) -> None:
    """Ask every enabled system to drop (or stop) the task: the record does not say
    which system runs it, and revoking an id a system does not know is harmless."""
    for queue in enabled():
        queue.revoke(task_id, terminate=terminate)


def current_task() -> BoundTask | None:
    for queue in enabled():
        task = queue.current_task()
        if task is not None:
            return task
    return None


def group_of(task_id: str) -> str | None:
    for queue in enabled():
        group_id = queue.group_of(task_id)
        if group_id:
            return group_id
    return None


def mirror_progress(task: Any, task_id: str, info: ProgressInfo,
                    queues: Sequence[TaskQueue] | None = None) -> None:
    for queue in enabled() if queues is None else queues:
        queue.mirror_progress(task, task_id, info)
