"""Which tasks the HTTP API may start, who may start them, and how their
arguments are checked.

    @startable(check_arguments)                 # logged-in users (the default)
    @startable(check_arguments, allow=anyone)   # anonymous visitors too
    @startable(allow=lambda request: request.user.is_staff)

Only tasks registered here are startable over `POST /api/tasks/`: exposing
every task in the app to browsers would be a remote-execution hole. A task of
any enabled task system can be registered (progress/taskqueue/).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from progress import publisher, taskqueue
from progress.store.records import EventDraft
from progress.taskqueue.base import TaskQueue
from progress.taskqueue.unavailable import QueueUnavailable
from progress.wire.states import State
from progress.wire.types import ErrorInfo

logger = logging.getLogger(__name__)


class BadArguments(ValueError):
    """The arguments do not fit the task; the message says what to send instead."""


Validator = Callable[..., None]
# Who may start a task: a check of the request (Django's HttpRequest).
Allow = Callable[[Any], bool]
T = TypeVar("T")


def authenticated(request: Any) -> bool:
    """A logged-in user (needs Django's auth middleware); the default."""
    user = getattr(request, "user", None)
    return bool(user is not None and user.is_authenticated)


def anyone(request: Any) -> bool:
    """Anyone, logged in or not: only for cheap, bounded tasks (the demo)."""
    return True


@dataclass(frozen=True, slots=True)
class Startable:
    name: str
    task: Any
    queue: TaskQueue
    validate: Validator | None
    allow: Allow

    def start(self, args: list[Any], kwargs: dict[str, Any], task_id: str) -> None:
        """Enqueue the task under `task_id`. When that raises (QueueUnavailable: its
        broker is down), the record the enqueue may have left PENDING ends FAILURE."""
        try:
            self.queue.start(self.task, args, kwargs, task_id)
        except Exception as exc:
            _never_started(task_id, self.name, exc)
            raise


def _never_started(task_id: str, name: str, exc: Exception) -> None:
    """End the record of a task whose enqueue raised, so no watcher waits on a task
    that never runs. The error says what happened without the broker's address (the
    log has the details)."""
    logger.error("TaskPulse could not start %s (%s): %s", name, task_id, exc)
    error: ErrorInfo
    if isinstance(exc, QueueUnavailable):
        error = {"type": type(exc).__name__,
                 "message": f"never sent: {exc.system} could not reach its broker; "
                            "start the task again later"}
    else:
        error = {"type": type(exc).__name__, "message": f"{name} could not be started"}
    try:
        # name=None keeps the name the system recorded with PENDING.
        publisher.publish(EventDraft(task_id, State.FAILURE, error=error))
    except Exception:
        logger.exception("TaskPulse could not record that task %s never started", task_id)


_registry: dict[str, Startable] = {}


def startable(validate: Validator | None = None, *,
              allow: Allow = authenticated) -> Callable[[T], T]:
    """Decorator: `@startable(check)` above a task registers it by name.

    `validate(*args, **kwargs)` raises BadArguments for values the task must not get;
    `allow(request)` says who may start it (by default, logged-in users).
    """

    def register(task: T) -> T:
        queue = taskqueue.integration_for(task)
        name = queue.task_name(task)
        _registry[name] = Startable(name, task, queue, validate, allow)
        return task

    return register


def lookup(name: str) -> Startable | None:
    return _registry.get(name)


def check_arguments(entry: Startable, args: list[Any], kwargs: dict[str, Any]) -> None:
    """Raise BadArguments unless the call fits the task's signature and validator."""
    try:
        entry.queue.signature(entry.task).bind(*args, **kwargs)
    except TypeError as exc:
        raise BadArguments(f"arguments do not fit {entry.name}: {exc}") from None
    if entry.validate is not None:
        entry.validate(*args, **kwargs)
