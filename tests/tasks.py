"""Tasks only the test suite's worker loads (CELERY_IMPORTS=tests.tasks)."""

import datetime
import time
from typing import Any

from celery import shared_task

from progress.publisher import track


@shared_task(bind=True, name="tests.returns_datetime")
def returns_datetime(self: Any) -> datetime.datetime:
    track(self).update(1, total=1, message="done")
    return datetime.datetime(2026, 11, 21, 12, 0, tzinfo=datetime.UTC)


@shared_task(bind=True, name="tests.returns_huge")
def returns_huge(self: Any) -> str:
    return "x" * 200_000


@shared_task(bind=True, name="tests.slow_steps")
def slow_steps(self: Any, steps: int = 50, delay: float = 0.1) -> dict[str, Any]:
    """Reports progress every step; a cancel stops it at the next update."""
    progress = track(self)
    for i in range(1, steps + 1):
        time.sleep(delay)
        progress.update(i, total=steps)
    return {"steps": steps}
