"""The demo task on Django's tasks framework (imported by tasks.py when its
integration is enabled): started over HTTP as `project.demo.tasks_django_tasks.count`,
run by the backend's worker (`manage.py db_worker`)."""

from typing import Any

from progress.control.startable import anyone, startable
from progress.publisher import track
from project.demo.counting import count_with, validate_count
from project.demo.systems import task_decorator

task = task_decorator()


@startable(validate_count, allow=anyone)
@task(takes_context=True)
def count(context: Any, steps: int = 10, delay: float = 0.5,
          fail_at: int | None = None) -> dict[str, int]:
    """PROTOCOL.md §7's demo task: `track(context)` (or `track()`) reports its progress."""
    return count_with(track(context), steps, delay, fail_at)
