"""The demo task of PROTOCOL.md §7, startable over HTTP on the example site only.

`demo.count` is the Celery task. The same task on the site's other task systems
(project/demo/systems.py) is registered by tasks_django_q.py and
tasks_django_tasks.py, imported below when their integration is enabled: the
demo page starts it on each system side by side.
"""

from typing import Any

from celery import shared_task

from progress.control.startable import anyone, startable
from progress.publisher import track
from project.demo import systems
from project.demo.counting import MAX_DELAY, MAX_SECONDS, MAX_STEPS, count_with, validate_count

__all__ = ["MAX_DELAY", "MAX_SECONDS", "MAX_STEPS", "count", "validate_count"]


# Startable without login on the example site only (clients and acceptance tests use it).
@startable(validate_count, allow=anyone)
@shared_task(bind=True, name="demo.count")
def count(
    self: Any, steps: int = 10, delay: float = 0.5, fail_at: int | None = None
) -> dict[str, int]:
    """Count 1..steps, sleeping `delay` per step; fail at step `fail_at` if given."""
    return count_with(track(self), steps, delay, fail_at)


systems.import_demo_tasks()
