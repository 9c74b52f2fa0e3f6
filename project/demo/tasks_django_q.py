"""The demo task on Django-Q2 (imported by tasks.py when its integration is enabled):
started over HTTP as `project.demo.tasks_django_q.count`, run by `manage.py qcluster`."""

from progress.control.startable import anyone, startable
from progress.integrations.django_q import q_task
from progress.publisher import track
from project.demo.counting import count_with, validate_count


def count(steps: int = 10, delay: float = 0.5, fail_at: int | None = None) -> dict[str, int]:
    """PROTOCOL.md §7's demo task, as a plain function: `track()` finds the running task."""
    return count_with(track(), steps, delay, fail_at)


# The function stays a plain function (async_task(count, ...) works as usual); the
# HTTP API starts it through its QTask.
count_task = startable(validate_count, allow=anyone)(q_task(count))
