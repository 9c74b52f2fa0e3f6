"""Django-Q2 end to end (issue 12): a real cluster (`manage.py qcluster`, Redis
broker, one worker), a real daphne and a real WebSocket client; and a site with
Django-Q2 only, in a virtualenv without Celery (tests/systems/no_celery.py)."""

from __future__ import annotations

import asyncio
import json
import secrets
import traceback
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from django.test import override_settings

from progress.integrations.django_q.results import error_of
from progress.publisher import TaskCancelled
from tests import fresh_site, processes
from tests.systems import harness, no_celery, scenarios
from tests.systems.harness import SystemStack

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

SYSTEM = scenarios.System(
    demo="project.demo.tasks_django_q.count",
    work="tests.work.django_q",
    enqueue_natively=(
        "import json\n"
        "from django_q.tasks import async_task\n"
        "from progress.tokens import issue_token\n"
        "task_id = async_task('tests.systems.tasks.work', steps=2, delay=0.01)\n"
        "print(json.dumps({'id': task_id, 'token': issue_token(task_id)}))\n"),
)


@pytest.fixture(scope="module")
def qstack(redis_client: redis.Redis,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[SystemStack]:
    with harness.running_stack(harness.qcluster, tmp_path_factory.mktemp("django_q")) as stack:
        yield stack


def test_progress_in_order_to_success(qstack: SystemStack) -> None:
    scenarios.progress_in_order_to_success(qstack, SYSTEM)


def test_failure_has_type_and_message(qstack: SystemStack) -> None:
    scenarios.failure_has_type_and_message(qstack, SYSTEM)


def test_async_task_id_is_watchable_and_late_subscriber_gets_final(qstack: SystemStack) -> None:
    scenarios.enqueued_natively_then_late_subscriber(qstack, SYSTEM)


def test_track_outside_a_task_says_what_to_do(qstack: SystemStack) -> None:
    scenarios.track_outside_a_task(qstack, SYSTEM)


def test_cancel_queued_and_running(qstack: SystemStack, tmp_path: Path) -> None:
    scenarios.cancel_queued_and_running(qstack, SYSTEM, tmp_path)


def test_cancelled_task_that_ignores_it_is_terminated(qstack: SystemStack) -> None:
    """A running task that makes no progress call for TASKPULSE_CANCEL_GRACE after a
    cancel: its cluster worker is ended, the task REVOKED, and a new worker takes over."""
    task_id, token = qstack.start(SYSTEM.work, steps=1, block=60)
    scenarios.wait_states(qstack, task_id, "STARTED")
    status, body = qstack.cancel(task_id, token)
    assert status == 202 and body["state"] == "STARTED", body
    final = qstack.wait_final(task_id, timeout=harness.CANCEL_GRACE + 10)
    assert final["state"] == "REVOKED", final
    assert final["error"] == {"type": "TaskRevokedError", "message": "task terminated"}
    after_id, _ = qstack.start(SYSTEM.work, steps=1)
    assert qstack.wait_final(after_id)["state"] == "SUCCESS"
    assert qstack.states(task_id).count("REVOKED") == 1


def test_stopped_worker_is_lost_and_its_late_result_ignored(qstack: SystemStack) -> None:
    scenarios.stalled_worker_result_does_not_overwrite_lost(qstack, SYSTEM)


def test_killed_worker_is_lost_once(qstack: SystemStack) -> None:
    pid = scenarios.killed_worker_is_lost_once(qstack, SYSTEM)
    # The cluster put a new worker in the killed one's place: tasks run again.
    task_id, _ = qstack.start(SYSTEM.work, steps=1, pid=True)
    final = qstack.wait_final(task_id)
    assert final["state"] == "SUCCESS" and final["meta"]["pid"] != pid



def test_retried_where_the_broker_presents_failed_tasks_again(redis_client: redis.Redis,
                                                              tmp_path: Path) -> None:
    """Django-Q2's ORM broker with `max_attempts = 2`: the first failure is RETRY, the
    broker presents the task again (a new STARTED), the last failure is FAILURE."""
    with harness.running_stack(harness.qcluster, tmp_path, TASKPULSE_TEST_Q_ORM="1") as stack:
        task_id, _ = stack.start(SYSTEM.work, steps=1, delay=0.01, fail="nope")
        final = stack.wait_final(task_id)
        history = stack.history(task_id)
    assert final["state"] == "FAILURE" and final["error"] == {"type": "RuntimeError",
                                                              "message": "nope"}
    assert [event["state"] for event in history] == [
        "PENDING", "STARTED", "PROGRESS", "RETRY", "STARTED", "PROGRESS", "FAILURE"]
    assert history[3]["error"] == final["error"]
    harness.assert_history(history)


def test_a_site_with_django_q_only_and_no_celery(redis_client: redis.Redis,
                                                 tmp_path: Path) -> None:
    """The wheel with its `django-q` extra in a fresh virtualenv (no Celery there): a
    site's `async_task` runs on its qcluster and is watched to SUCCESS over stock
    daphne, and nothing imported Celery."""
    wheel = no_celery.build_wheel(tmp_path)
    venv = no_celery.make_venv(tmp_path, wheel)
    python = str(venv / "bin" / "python")
    prefix = f"tpnoc{secrets.token_hex(3)}"
    site = no_celery.make_site(tmp_path, prefix, harness.REDIS_URL)
    env = fresh_site.clean_env(venv / "bin", DJANGO_SETTINGS_MODULE="nqsite.settings")
    listed = fresh_site.run([python, "-m", "pip", "list", "--format=json"], site, env)
    installed = {package["name"].lower() for package in json.loads(listed)}
    assert "django-q2" in installed and not installed & set(no_celery.QUEUE_LIBRARIES)
    fresh_site.run([python, "manage.py", "migrate", "--noinput"], site, env)
    port = processes.free_port()
    cluster = no_celery.SiteProc("qcluster", [python, "manage.py", "qcluster"], env,
                                 ready_marker="running.", cwd=site, cluster=True)
    web = no_celery.SiteProc("daphne", [str(venv / "bin" / "daphne"), "-b", "127.0.0.1",
                                        "-p", str(port), "nqsite.asgi:application"],
                             env, cwd=site)
    try:
        cluster.start()
        web.start()
        cluster.wait_marker()
        processes.wait_http_ok(f"http://127.0.0.1:{port}/healthz", proc=web)
        printed = fresh_site.run([python, "-c", no_celery.ENQUEUE], site, env)
        started = json.loads(printed.strip().splitlines()[-1])
        assert started["queues"] == ["django_q"], started
        assert not started["celery_installed"] and started["loaded"] == [], started
        assert started["progress"].startswith(str(venv)), started  # the wheel's, not ours
        frames = asyncio.run(harness.watch(processes.ws_url(port),
                                           started["id"], started["token"]))
        harness.assert_contiguous(frames)
        final = frames[-1]
        assert final["state"] == "SUCCESS", (final, cluster.output())
        assert final["result"] == {"counted": 4} and final["name"] == "jobs.tasks.count"
        assert final["progress"]["current"] == 4
    finally:
        web.stop()
        cluster.stop()
        harness.delete_stack_keys(redis_client, prefix)


# -- what the worker stores for a failed task, read back (no cluster needed) ----------


class ExportFailed(Exception):
    """An exception of the site's own (the traceback names it with its module)."""


def stored(exc: BaseException) -> str:
    """What a Django-Q2 worker keeps as the result of a task that raised `exc`."""
    try:
        raise exc
    except BaseException as raised:
        return f"{raised} : {traceback.format_exc()}"


@pytest.mark.parametrize(("exc", "expected"), [
    (ValueError("failed at step 2"), {"type": "ValueError", "message": "failed at step 2"}),
    (ExportFailed("disk full : retry later"),
     {"type": "ExportFailed", "message": "disk full : retry later"}),
    (KeyError("row"), {"type": "KeyError", "message": "'row'"}),
    (RuntimeError(), {"type": "RuntimeError", "message": ""}),
    (ValueError("two\nlines"), {"type": "ValueError", "message": "two\nlines"}),
    (TaskCancelled("task t was cancelled"),
     {"type": "TaskCancelled", "message": "task t was cancelled"}),
])
def test_error_type_and_message_from_the_stored_result(exc: BaseException,
                                                       expected: dict[str, str]) -> None:
    assert error_of(stored(exc)) == expected


def test_error_of_an_unexpected_result() -> None:
    assert error_of("Function nope is not defined") == {
        "type": "Error", "message": "Function nope is not defined"}
    assert error_of(None) == {"type": "Error", "message": "None"}


def test_traceback_only_when_the_setting_allows() -> None:
    with override_settings(TASKPULSE_SEND_TRACEBACK=True):
        info = error_of(stored(ValueError("boom")))
    assert info["traceback"].startswith("Traceback (most recent call last):\n")
    assert info["traceback"].rstrip().endswith("ValueError: boom")
