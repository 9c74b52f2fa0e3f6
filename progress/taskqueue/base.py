"""What a task system provides to TaskPulse.

An integration records a task's lifecycle (PENDING, STARTED, SUCCESS, ...)
from the system's own hooks in `install()`, and answers the few questions the
core asks: how to revoke or terminate a task, which task runs in this thread,
which group a task belongs to, how to start a task the HTTP API may start.
"""

from __future__ import annotations

import inspect
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, Protocol

# What AsyncResult-style readers see while a task reports progress (the mirror).
ProgressInfo = dict[str, Any]


class BoundTask(Protocol):
    """The running task as its body sees it (Celery's bound `self`)."""

    @property
    def request(self) -> Any: ...

    @property
    def name(self) -> str: ...


class TaskQueue(ABC):
    """One task system. Subclasses live in progress/integrations/<system>/."""

    #: Short name used in settings and logs ("celery", "django_q", ...).
    name: str = ""

    @abstractmethod
    def install(self) -> None:
        """Connect the system's hooks (signals) that record each task's lifecycle."""

    @abstractmethod
    def owns(self, task: Any) -> bool:
        """Whether `task` (a task object of some system) belongs to this one."""

    @abstractmethod
    def start(self, task: Any, args: Sequence[Any], kwargs: dict[str, Any],
              task_id: str) -> None:
        """Enqueue `task(*args, **kwargs)` under `task_id` (the HTTP API's start)."""

    def task_name(self, task: Any) -> str:
        return str(getattr(task, "name", None) or getattr(task, "__name__", repr(task)))

    def signature(self, task: Any) -> inspect.Signature:
        """The call signature a start request's arguments are checked against."""
        return inspect.signature(getattr(task, "run", task))

    @abstractmethod
    def revoke(self, task_id: str, terminate: bool = False) -> None:
        """Stop a queued task from running; with `terminate`, stop a running one too."""

    def current_task(self) -> BoundTask | None:
        """The task running in this thread, if this system runs one here."""
        return None

    def group_of(self, task_id: str) -> str | None:
        """The system's group id of `task_id` when it runs in this thread as a group member."""
        return None

    def mirror_progress(self, task: Any, task_id: str, info: ProgressInfo) -> None:
        """Copy published progress where the system's own readers look (optional)."""
        return None
