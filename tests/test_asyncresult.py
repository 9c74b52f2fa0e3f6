"""AsyncResult interop: Celery's own result API shows PROGRESS and its meta during a run."""

import time
import uuid
from typing import Any

import pytest
from celery.result import AsyncResult
from django.test import override_settings

from progress.publisher.reporter import TaskProgress
from progress.store.records import EventDraft, PublishOutcome
from progress.wire.states import State
from tests.conftest import Stack

POLL_TIMEOUT = 20.0


def wait_for_state(result: AsyncResult, state: str) -> Any:  # type: ignore[type-arg]
    deadline = time.monotonic() + POLL_TIMEOUT
    while time.monotonic() < deadline:
        if result.state == state:
            return result.info
        time.sleep(0.02)
    raise AssertionError(f"{result.id} never reached {state}; last {result.state}")


@pytest.mark.integration
def test_progress_visible_through_asyncresult(stack: Stack) -> None:
    """As in the classic Celery recipe: state PROGRESS with current/total, then SUCCESS."""
    from tests.tasks import slow_steps

    started = slow_steps.apply_async(kwargs={"steps": 20, "delay": 0.1})
    info = wait_for_state(AsyncResult(started.id), "PROGRESS")
    assert info["total"] == 20 and 1 <= info["current"] <= 20
    assert info["percent"] == round(info["current"] * 100 / 20, 2)
    assert set(info) == {"current", "total", "percent", "message", "eta", "meta"}
    assert started.get(timeout=POLL_TIMEOUT) == {"steps": 20}
    assert AsyncResult(started.id).state == "SUCCESS"


@pytest.mark.integration
def test_failure_still_reads_as_failure(stack: Stack) -> None:
    """A task that reported progress and then raised reads FAILURE with its exception."""
    from tests.tasks import fails_after

    started = fails_after.apply_async(kwargs={"steps": 2, "delay": 0.01})
    with pytest.raises(ValueError, match="gave up after 2"):
        started.get(timeout=POLL_TIMEOUT)
    assert AsyncResult(started.id).state == "FAILURE"


class FakeBackend:
    def __init__(self) -> None:
        self.stored: list[tuple[str, Any, str]] = []

    def store_result(self, task_id: str, result: Any, state: str, request: Any = None) -> None:
        self.stored.append((task_id, result, state))


class FakeTask:
    def __init__(self) -> None:
        self.backend = FakeBackend()
        self.request = None


def sink(draft: EventDraft, fraction: float | None) -> PublishOutcome:
    return PublishOutcome(1, False, draft.state.value)


@pytest.mark.parametrize("enabled", [True, False])
def test_interop_setting(enabled: bool) -> None:
    """TASKPULSE_ASYNCRESULT switches the result-backend write; the meta has the progress."""
    task = FakeTask()
    with override_settings(TASKPULSE_ASYNCRESULT=enabled, TASKPULSE_MIN_INTERVAL=0):
        progress = TaskProgress(f"unit-{uuid.uuid4()}", sink, "t", task)
    progress.update(3, total=4, message="m", meta={"k": "v"})
    if not enabled:
        assert task.backend.stored == []
        return
    [(task_id, meta, state)] = task.backend.stored
    assert task_id == progress.task_id and state == State.PROGRESS.value
    assert meta == {"current": 3, "total": 4, "percent": 75.0, "message": "m", "eta": None,
                    "meta": {"k": "v"}}


def test_trailing_flush_never_writes_the_backend() -> None:
    """Held-back values flushed at a state change skip the backend (Celery wrote the state)."""
    task = FakeTask()
    with override_settings(TASKPULSE_MIN_INTERVAL=60):
        progress = TaskProgress(f"unit-{uuid.uuid4()}", sink, "t", task)
    progress.update(1, total=4)
    progress.update(2)
    progress.publish_held_back()
    assert [m["current"] for _, m, _ in task.backend.stored] == [1]
    progress.close(flush=False)


def test_mirror_never_overwrites_success(redis_client: Any) -> None:
    """Like Celery's own store_result, a late PROGRESS write leaves a stored SUCCESS alone."""
    from celery import current_app

    from progress.integrations.celery.interop import store_progress

    backend = current_app.backend
    task_id = f"unit-{uuid.uuid4()}"
    backend.store_result(task_id, {"done": True}, "SUCCESS")
    store_progress(None, task_id, {"current": 1, "total": 2, "percent": 50.0, "message": None,
                                   "eta": None, "meta": {}})
    assert AsyncResult(task_id).state == "SUCCESS"
    other = f"unit-{uuid.uuid4()}"
    store_progress(None, other, {"current": 1, "total": 2, "percent": 50.0, "message": None,
                                 "eta": None, "meta": {}})
    result: Any = AsyncResult(other)  # celery-types knows only the built-in states
    assert result.state == "PROGRESS" and result.info["current"] == 1
    backend.forget(task_id)
    backend.forget(other)


def test_mirror_uses_the_direct_path_on_our_redis() -> None:
    """With the project's settings the backend is our Redis, so one script replaces store_result."""
    from celery import current_app

    from progress.integrations.celery.interop import _is_our_redis

    assert _is_our_redis(current_app.backend)


def test_no_result_backend_is_quietly_skipped(caplog: pytest.LogCaptureFixture) -> None:
    """Without a result backend the mirror does nothing and logs nothing."""
    from celery import current_app
    from celery.backends.base import DisabledBackend

    class NoBackendTask:
        backend = DisabledBackend(app=current_app)
        request = None

    with override_settings(TASKPULSE_MIN_INTERVAL=0):
        progress = TaskProgress(f"unit-{uuid.uuid4()}", sink, "t", NoBackendTask())
    progress.update(1, total=2)
    assert not [r for r in caplog.records if "result backend" in r.getMessage()]
