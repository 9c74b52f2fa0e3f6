"""A task system that could not take a task because its broker (or database) is
unreachable: the task was never sent. An integration's `start` raises
QueueUnavailable; the HTTP API answers 503 and ends the task's record FAILURE
(progress/control/startable.py), so no watcher waits on it."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import redis
from django.db import InterfaceError, OperationalError

# What a broker or database that cannot be reached raises, whichever holds the queue:
# a socket error, redis-py's connection errors (not OSErrors), and Django's database
# errors for a connection (not IntegrityError or a missing table: a developer's to fix).
CONNECTION_ERRORS: tuple[type[Exception], ...] = (
    OSError, redis.ConnectionError, redis.TimeoutError, OperationalError, InterfaceError)


class QueueUnavailable(Exception):
    """The task system could not reach its broker: the task was never sent."""

    def __init__(self, system: str, cause: BaseException) -> None:
        super().__init__(f"{system} could not reach its broker "
                         f"({type(cause).__name__}: {cause})")
        self.system = system


@contextmanager
def sending(system: str, unreachable: tuple[type[Exception], ...]) -> Iterator[None]:
    """Enqueue in this block: an `unreachable` error becomes QueueUnavailable."""
    try:
        yield
    except unreachable as exc:
        raise QueueUnavailable(system, exc) from exc
