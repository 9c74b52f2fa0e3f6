"""`track()` with no argument (issue 12, point 1): the running task from a context
variable its integration sets; `carry()` into threads; `track(self)`,
`track(context)` and `track(task_id)` naming the same reporter; the documented
error outside a task."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import pytest
import redis
from django.test import override_settings

from progress import publisher
from progress.publisher import (
    NO_RUNNING_TASK,
    NoRunningTask,
    carry,
    current_progress,
    enter_task,
    forget,
    running_task,
    track,
)
from tests.publishing import PublishingStore


@pytest.fixture
def running(task_id: str) -> Iterator[str]:
    """`task_id` announced as the task running here, as an integration does."""
    scope = enter_task(task_id, "tests.job", system_id=f"system-{task_id}")
    try:
        yield task_id
    finally:
        scope.leave()
        forget(task_id)


def test_outside_a_task_the_error_says_what_to_do() -> None:
    for call in (track, current_progress, lambda: carry(print)):
        with pytest.raises(NoRunningTask) as raised:
            call()
        assert str(raised.value) == NO_RUNNING_TASK
        assert isinstance(raised.value, RuntimeError)
    assert "carry(" in NO_RUNNING_TASK and "track(self)" in NO_RUNNING_TASK
    assert "track(context)" in NO_RUNNING_TASK and "track(task_id)" in NO_RUNNING_TASK


def test_track_finds_the_running_task(running: str) -> None:
    progress = track()
    assert progress.task_id == running and progress.name == "tests.job"
    assert track() is progress is track(running) is current_progress()
    assert running_task() is not None and running_task().task_id == running  # type: ignore[union-attr]


def test_leaving_the_task_ends_it_here(task_id: str) -> None:
    scope = enter_task(task_id)
    scope.leave()
    with pytest.raises(NoRunningTask):
        track()


def test_tasks_nest_and_unwind(task_id: str) -> None:
    outer = enter_task(task_id)
    inner = enter_task(f"{task_id}-inner")
    assert track().task_id == f"{task_id}-inner"
    inner.leave()
    assert track().task_id == task_id
    outer.leave()
    forget(task_id)
    forget(f"{task_id}-inner")


def test_a_plain_thread_has_no_task_but_a_carried_one_does(running: str) -> None:
    seen: dict[str, Any] = {}

    def plain() -> None:
        try:
            track()
        except NoRunningTask as exc:
            seen["plain"] = exc

    def carried(label: str) -> None:
        seen[label] = track().task_id

    threads = [threading.Thread(target=plain),
               threading.Thread(target=carry(carried), args=("thread",))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    with ThreadPoolExecutor(2) as pool:
        pool.submit(carry(carried), "pool").result(10)
        # The pool's thread does not keep the task after the carried call.
        assert pool.submit(running_task).result(10) is None
    assert isinstance(seen["plain"], NoRunningTask)
    assert seen["thread"] == seen["pool"] == running


def test_asyncio_to_thread_takes_the_task_along(running: str) -> None:
    async def main() -> str:
        return await asyncio.to_thread(lambda: track().task_id)

    assert asyncio.run(main()) == running


def test_the_system_id_names_the_same_reporter(running: str) -> None:
    """A task the HTTP API started runs under the system's own id too: track() with
    that id, or the tasks framework's context, reports for TaskPulse's id."""

    @dataclass
    class Result:
        id: str

    @dataclass
    class Context:
        task_result: Result

    progress = track()
    assert track(f"system-{running}") is progress
    assert track(Context(Result(f"system-{running}"))) is progress


def test_the_alias_ends_with_the_task(task_id: str) -> None:
    scope = enter_task(task_id, system_id=f"system-{task_id}")
    scope.leave()
    assert track(f"system-{task_id}").task_id == f"system-{task_id}"
    forget(f"system-{task_id}")


def test_a_tasks_framework_context_outside_its_run(task_id: str) -> None:
    """track(context) with no announced task: the context's own id and task path."""

    class Task:
        module_path = "jobs.tasks.export"

    class Result:
        id = task_id
        task = Task()

    class Context:
        task_result = Result()

    progress = track(Context())
    assert progress.task_id == task_id and progress.name == "jobs.tasks.export"
    forget(task_id)


def test_track_self_still_names_a_bound_task(task_id: str) -> None:
    class Request:
        id = task_id

    class Bound:
        request = Request()
        name = "tests.bound"

    progress = track(Bound())
    assert progress.task_id == task_id and progress.name == "tests.bound"
    forget(task_id)


def test_celery_task_of_this_thread_is_found_without_announcing() -> None:
    """Celery's signal hooks need not announce anything: track() falls back to the
    task Celery runs in this thread (and carry() takes it along)."""
    from celery import _state, current_app

    task_stack: Any = _state._task_stack  # type: ignore[attr-defined]  # Celery's own stack

    @current_app.task(bind=True, name="tests.track_context.bound")
    def bound(self: Any) -> None:
        return None

    bound.push_request(id="celery-thread-task")
    task_stack.push(bound)
    try:
        progress = track()
        assert progress.task_id == "celery-thread-task" and progress._task is bound
        seen: list[str] = []

        def helper() -> None:
            seen.append(track().task_id)

        thread = threading.Thread(target=carry(helper))
        thread.start()
        thread.join(10)
        assert seen == ["celery-thread-task"]
    finally:
        task_stack.pop()
        bound.pop_request()
        forget("celery-thread-task")


def test_a_running_task_of_another_system_is_not_mirrored_to_celery(
        running: str, redis_client: redis.Redis, store: PublishingStore) -> None:
    """The AsyncResult mirror writes Celery's result key for Celery tasks only: the
    reporter of an announced task carries the running task, which Celery's mirror
    does not take for one of its own."""
    with override_settings(TASKPULSE_MIN_INTERVAL=0, TASKPULSE_ASYNCRESULT=True):
        publisher.forget(running)
        track().update(1, total=2)
    snapshot = store.read(running).snapshot
    assert snapshot is not None and '"current":1' in snapshot.json
    assert redis_client.exists(f"celery-task-meta-{running}") == 0
