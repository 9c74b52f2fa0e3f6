"""A start request's keyword arguments reach the Django-Q2 function, and nothing else.

`async_task(func, *args, **kwargs)` takes keywords named like its options (`sync`,
`hook`, `chain`, `group`, `timeout`, `cluster`, `task_name`, `q_options`, ...) as
options, even beside `q_options`: a client's keyword argument must never pass through
it. DjangoQQueue.start calls `async_task(func, *args, q_options=...)` inside
`passing(kwargs)`, and the `pre_enqueue` hook here puts those keyword arguments in
the task package, as its `kwargs`: the package is signed after this hook, and the
worker calls `func(*args, **kwargs)`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from django_q import signals

DISPATCH_UID = "taskpulse.django_q.pass_arguments"


@dataclass
class Passing:
    """The keyword arguments of the next task enqueued in this context."""

    kwargs: dict[str, Any]
    passed: bool = field(default=False)


_passing: ContextVar[Passing | None] = ContextVar("taskpulse_django_q_passing", default=None)


@contextmanager
def passing(kwargs: dict[str, Any]) -> Iterator[Passing]:
    """The task `async_task` enqueues in this block gets `kwargs` as its keyword
    arguments (a task that task enqueues, run in this process by `sync`, does not)."""
    pending = Passing(dict(kwargs))
    token = _passing.set(pending)
    try:
        yield pending
    finally:
        _passing.reset(token)


def on_pre_enqueue(sender: Any = None, task: dict[str, Any] | None = None, **_: Any) -> None:
    pending = _passing.get()
    if task is None or pending is None or pending.passed:
        return
    pending.passed = True
    task["kwargs"] = pending.kwargs


def connect() -> None:
    signals.pre_enqueue.connect(on_pre_enqueue, weak=False, dispatch_uid=DISPATCH_UID)
