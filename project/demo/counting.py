"""The demo task's work and its argument check (PROTOCOL.md §7), shared by the
demo task of every task system (tasks.py: Celery; tasks_django_q.py;
tasks_django_tasks.py)."""

import time
from typing import Any

from progress.control.startable import BadArguments
from progress.publisher import TaskProgress

MAX_STEPS = 100_000
MAX_DELAY = 10.0
# A visitor may not hold a worker longer than this (steps x delay, PROTOCOL.md §7).
MAX_SECONDS = 600


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def validate_count(steps: Any = 10, delay: Any = 0.5, fail_at: Any = None) -> None:
    if not (isinstance(steps, int) and not isinstance(steps, bool) and 1 <= steps <= MAX_STEPS):
        raise BadArguments(f"steps must be a whole number from 1 to {MAX_STEPS}")
    if not (_is_number(delay) and 0 <= delay <= MAX_DELAY):
        raise BadArguments(f"delay must be a number of seconds from 0 to {MAX_DELAY:g}")
    if fail_at is not None and not (isinstance(fail_at, int) and not isinstance(fail_at, bool)):
        raise BadArguments("fail_at must be a whole number (the step to fail at) or null")
    if steps * delay > MAX_SECONDS:
        raise BadArguments(
            f"steps x delay must be at most {MAX_SECONDS} seconds (got {steps * delay:g}): "
            "fewer steps or a shorter delay")


def count_with(progress: TaskProgress, steps: int = 10, delay: float = 0.5,
               fail_at: int | None = None) -> dict[str, int]:
    """Count 1..steps, sleeping `delay` per step; fail at step `fail_at` if given."""
    for i in range(1, steps + 1):
        time.sleep(delay)
        if fail_at is not None and i == fail_at:
            raise ValueError(f"failed at step {i}")
        progress.update(i, total=steps, message=f"step {i} of {steps}")
    return {"steps": steps}
