"""Django's tasks framework end to end (issue 12): the `django-tasks` backport with
`django-tasks-db`'s database backend (SQLite) and its worker (`manage.py db_worker`),
a real daphne and a real WebSocket client."""

from __future__ import annotations

import json
import traceback
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
from django.test import override_settings

from progress import taskqueue
from progress.integrations.django_tasks import DjangoTasksQueue, signals
from progress.integrations.django_tasks.framework import frameworks
from progress.publisher import TaskCancelled, track
from progress.store import keys
from progress.store.connections import sync_client
from project.demo.systems import task_decorator
from tests.systems import harness, scenarios
from tests.systems.harness import SystemStack

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

SYSTEM = scenarios.System(
    demo="project.demo.tasks_django_tasks.count",
    work="tests.systems.tasks.work_task",
    enqueue_natively=(
        "import json\n"
        "from progress.tokens import issue_token\n"
        "from tests.systems.tasks import work_task\n"
        "task_id = str(work_task.enqueue(steps=2, delay=0.01).id)\n"
        "print(json.dumps({'id': task_id, 'token': issue_token(task_id)}))\n"),
    # task_enqueued comes after django-tasks-db stored the task (docs/INTEGRATION.md):
    # a worker that takes it at once records STARTED first.
    first_states=("PENDING", "STARTED"),
)


@pytest.fixture(scope="module")
def tstack(redis_client: redis.Redis,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[SystemStack]:
    with harness.running_stack(harness.db_worker,
                               tmp_path_factory.mktemp("django_tasks")) as stack:
        yield stack


def test_progress_in_order_to_success(tstack: SystemStack) -> None:
    scenarios.progress_in_order_to_success(tstack, SYSTEM)


def test_failure_has_type_and_message(tstack: SystemStack) -> None:
    scenarios.failure_has_type_and_message(tstack, SYSTEM)


def test_enqueued_id_is_watchable_and_late_subscriber_gets_final(tstack: SystemStack) -> None:
    scenarios.enqueued_natively_then_late_subscriber(tstack, SYSTEM)


def test_track_outside_a_task_says_what_to_do(tstack: SystemStack) -> None:
    result = scenarios.track_outside_a_task(tstack, SYSTEM)
    # track(context) names the same task as track(): the id the HTTP API returned,
    # although the backend gave the task an id of its own.
    assert result["context_id"] == result["task_id"]


def test_cancel_queued_and_running(tstack: SystemStack, tmp_path: Path) -> None:
    scenarios.cancel_queued_and_running(tstack, SYSTEM, tmp_path)


def test_stopped_worker_is_lost_and_its_late_result_ignored(tstack: SystemStack) -> None:
    scenarios.stalled_worker_result_does_not_overwrite_lost(tstack, SYSTEM)


def test_killed_worker_is_lost_once(tstack: SystemStack) -> None:
    scenarios.killed_worker_is_lost_once(tstack, SYSTEM)
    # db_worker runs tasks in its own process: nothing replaces it; start another.
    tstack.restart_worker()
    task_id, _ = tstack.start(SYSTEM.work, steps=1)
    assert tstack.wait_final(task_id)["state"] == "SUCCESS"


# -- in this process, on the framework's ImmediateBackend (no worker needed) -------------


def immediate_job(context: Any, steps: int = 2, fail: str | None = None) -> dict[str, Any]:
    progress = track(context)
    for i in range(1, steps + 1):
        progress.update(i, total=steps)
    if fail:
        raise RuntimeError(fail)
    return {"context_id": progress.task_id, "track_id": track().task_id}


@pytest.fixture
def immediate_queue(redis_client: redis.Redis) -> Iterator[tuple[DjangoTasksQueue, Any]]:
    """The integration's hooks connected, and `immediate_job` as a task of the
    ImmediateBackend (it runs inside the enqueue call)."""
    backend = {"default": {"BACKEND": "django_tasks.backends.immediate.ImmediateBackend"}}
    queue = DjangoTasksQueue()
    # Connected already when this process's settings enable the integration.
    installed = queue.name in {enabled.name for enabled in taskqueue.enabled()}
    with override_settings(TASKS=backend, TASKPULSE_MIN_INTERVAL=0):
        job = task_decorator()(takes_context=True)(immediate_job)
        if not installed:
            queue.install()
        try:
            yield queue, job
        finally:
            if not installed:
                signals.disconnect(frameworks())


def states_of(task_id: str) -> list[dict[str, Any]]:
    return [json.loads(e) for e in sync_client().lrange(keys.history_key(task_id), 0, -1)]


def test_the_queue_owns_framework_tasks(immediate_queue: tuple[DjangoTasksQueue, Any]) -> None:
    queue, job = immediate_queue
    assert queue.owns(job) and not queue.owns(immediate_job)
    assert queue.task_name(job) == "tests.test_django_tasks.immediate_job"
    assert list(queue.signature(job).parameters) == ["steps", "fail"]  # not `context`


def test_started_under_taskpulse_id(immediate_queue: tuple[DjangoTasksQueue, Any],
                                    task_id: str) -> None:
    """start() (the HTTP API's): the backend picks its own id, the record is TaskPulse's,
    and track(context) and track() report for it."""
    queue, job = immediate_queue
    queue.start(job, [], {"steps": 3}, task_id)
    events = states_of(task_id)
    assert [e["state"] for e in events] == ["PENDING", "STARTED", *["PROGRESS"] * 3, "SUCCESS"]
    assert [e["seq"] for e in events] == list(range(1, 7))
    assert events[-1]["result"] == {"context_id": task_id, "track_id": task_id}
    assert events[-1]["name"] == "tests.test_django_tasks.immediate_job"


def test_failure_in_process(immediate_queue: tuple[DjangoTasksQueue, Any], task_id: str) -> None:
    queue, job = immediate_queue
    queue.start(job, [], {"steps": 1, "fail": "boom"}, task_id)
    final = states_of(task_id)[-1]
    assert final["state"] == "FAILURE" and final["error"] == {"type": "RuntimeError",
                                                              "message": "boom"}


def test_enqueued_natively_in_process(immediate_queue: tuple[DjangoTasksQueue, Any]) -> None:
    _, job = immediate_queue
    result = job.enqueue(steps=1)
    try:
        final = states_of(str(result.id))[-1]
        assert final["state"] == "SUCCESS" and final["result"]["context_id"] == str(result.id)
    finally:
        sync_client().delete(keys.record_key(str(result.id)), keys.history_key(str(result.id)))


@dataclass
class StoredError:
    exception_class_path: str
    traceback: str


@dataclass
class FailedResult:
    errors: list[StoredError]


def recorded(exc: BaseException) -> StoredError:
    """What a backend records for a task that raised `exc` (its class path, traceback)."""
    try:
        raise exc
    except BaseException as raised:
        path = f"{type(raised).__module__}.{type(raised).__qualname__}"
        return StoredError(path, traceback.format_exc())


@pytest.mark.parametrize(("exc", "expected"), [
    (ValueError("failed at step 2"), {"type": "ValueError", "message": "failed at step 2"}),
    (KeyError("row"), {"type": "KeyError", "message": "'row'"}),
    (RuntimeError(), {"type": "RuntimeError", "message": ""}),
    (ValueError("two\nlines"), {"type": "ValueError", "message": "two\nlines"}),
])
def test_error_from_the_recorded_traceback(exc: BaseException, expected: dict[str, str]) -> None:
    """Outside the worker's exception handler the recorded error is all there is."""

    result = FailedResult([recorded(exc)])
    assert signals.error_of(result) == (expected, False)


def test_cancelled_from_the_recorded_traceback() -> None:
    stopped = recorded(TaskCancelled("task t was cancelled"))
    info, cancelled = signals.error_of(FailedResult([stopped]))
    assert cancelled and info == {"type": "TaskCancelled", "message": "task t was cancelled"}
