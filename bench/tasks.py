"""Tasks only a benchmark's worker loads (CELERY_IMPORTS=bench.tasks)."""

import time
from typing import Any

from celery import shared_task

from progress.publisher import track


@shared_task(bind=True, name="bench.paced")
def paced(self: Any, events: int = 500, rate: float = 100.0) -> int:
    """Report progress `events` times at `rate` per second, on a fixed schedule."""
    progress = track(self)
    start = time.monotonic()
    for i in range(1, events + 1):
        delay = start + i / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        progress.update(i, total=events)
    return events
