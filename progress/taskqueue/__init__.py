"""The one interface between TaskPulse and a task system (Celery, Django-Q2,
Django's tasks framework): `TaskQueue` in base.py, and the registry of the
integrations this site enabled in registry.py.

The core (wire objects, record store, publisher, consumer) talks to task
systems only through these functions, so it imports no task-queue library.
"""

from progress.taskqueue.base import BoundTask, TaskQueue
from progress.taskqueue.registry import (
    current_task,
    enabled,
    group_of,
    install,
    integration_for,
    mirror_progress,
    revoke,
)

__all__ = [
    "BoundTask", "TaskQueue", "current_task", "enabled", "group_of", "install",
    "integration_for", "mirror_progress", "revoke",
]
