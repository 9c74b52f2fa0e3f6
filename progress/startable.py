"""Which Celery tasks the HTTP API may start, and how their arguments are checked.

Only tasks registered here are startable over `POST /api/tasks/`: exposing
every task in the app to browsers would be a remote-execution hole.
"""

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from celery import Task


class BadArguments(ValueError):
    """The arguments do not fit the task; the message says what to send instead."""


Validator = Callable[..., None]
T = TypeVar("T", bound=Task)  # type: ignore[type-arg]


@dataclass(frozen=True, slots=True)
class Startable:
    task: Task  # type: ignore[type-arg]
    validate: Validator | None


_registry: dict[str, Startable] = {}


def startable(validate: Validator | None = None) -> Callable[[T], T]:
    """Class decorator-like marker: `startable(check)(task)` registers a task by name.

    `validate(*args, **kwargs)` raises BadArguments for values the task must not get.
    """

    def register(task: T) -> T:
        _registry[task.name] = Startable(task, validate)
        return task

    return register


def lookup(name: str) -> Startable | None:
    return _registry.get(name)


def check_arguments(entry: Startable, args: list[Any], kwargs: dict[str, Any]) -> None:
    """Raise BadArguments unless the call fits the task's signature and validator."""
    try:
        inspect.signature(entry.task.run).bind(*args, **kwargs)
    except TypeError as exc:
        raise BadArguments(f"arguments do not fit {entry.task.name}: {exc}") from None
    if entry.validate is not None:
        entry.validate(*args, **kwargs)
