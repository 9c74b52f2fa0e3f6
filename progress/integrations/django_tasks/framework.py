"""Where Django's tasks framework lives (Django 6's `django.tasks`, the
`django-tasks` backport, or both) and what TaskPulse calls its tasks."""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType
from typing import Any

# Where the framework lives: Django 6's own, then the backport (both, when both
# are installed: a site may define tasks with either).
FRAMEWORK_MODULES = ("django.tasks", "django_tasks")
DATABASE_BACKEND_APP = "django_tasks_db"  # django-tasks-db's app


def frameworks() -> list[ModuleType]:
    """The installed tasks-framework packages (`django.tasks`, `django_tasks`)."""
    found = []
    for name in FRAMEWORK_MODULES:
        try:
            spec = importlib.util.find_spec(name)
        except ModuleNotFoundError:
            spec = None
        if spec is not None:
            found.append(importlib.import_module(name))
    return found


def task_classes() -> tuple[type, ...]:
    """The frameworks' Task classes (defined in `<framework>.base` in both)."""
    return tuple(importlib.import_module(f"{module.__name__}.base").Task
                 for module in frameworks())


def task_path(task: Any) -> str:
    """A task's name in TaskPulse (records, the HTTP API): its dotted path."""
    return str(getattr(task, "module_path", None) or getattr(task, "name", repr(task)))
