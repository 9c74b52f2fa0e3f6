"""A start whose task system cannot reach its broker (issue 15, item 6): a real
daphne whose Celery broker, Django-Q2 broker and tasks-framework database are all
unreachable answers the protocol's JSON 503, and the task's record ends FAILURE,
so a watcher gets the final instead of waiting on a task that was never sent."""

from __future__ import annotations

import asyncio
import json
import secrets
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from progress.tokens import issue_token
from progress.web.views import QUEUE_RETRY_AFTER
from project.demo.systems import CELERY, DEMO_TASKS, DJANGO_Q, DJANGO_TASKS
from tests import processes
from tests.client import Http
from tests.systems import harness
from tests.systems.harness import SystemStack

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

# Each start is answered within this (Celery retries a refused connection for ~1 s).
ANSWER_TIMEOUT = 10.0


@pytest.fixture(scope="module")
def site(redis_client: redis.Redis,
         tmp_path_factory: pytest.TempPathFactory) -> Iterator[SystemStack]:
    """daphne with every task system enabled, each with its broker down: Celery's and
    Django-Q2's on a closed local port, the tasks framework's database in a directory
    that does not exist. No worker: nothing could take a task anyway."""
    directory = tmp_path_factory.mktemp("broker_down")
    closed = f"redis://127.0.0.1:{processes.free_port()}/0"
    prefix = f"tpsys{secrets.token_hex(3)}"
    env = harness.system_env(prefix, directory / "missing" / "tasks.sqlite3",
                             CELERY_BROKER_URL=closed, TASKPULSE_TEST_Q_REDIS=closed)
    client = redis.Redis.from_url(harness.REDIS_URL, socket_timeout=5)
    port = processes.free_port()
    web = processes.start_daphne(env, port)
    try:
        # No worker: the stack's `worker` is the web process (never restarted here).
        yield SystemStack(prefix, env, port, web, web, harness.db_worker, client)
    finally:
        web.stop()
        harness.delete_stack_keys(client, prefix)
        client.close()


def post_start(site: SystemStack, task: str) -> tuple[int, dict[str, str], Any]:
    """POST a start as a browser page does: status, headers, body (JSON, else bytes)."""
    http = Http(site.base)
    request = urllib.request.Request(
        f"{site.base}/api/tasks/", data=json.dumps({"task": task, "kwargs": {}}).encode(),
        method="POST", headers={"Content-Type": "application/json",
                                "X-CSRFToken": http.csrf()})
    try:
        with http.opener.open(request, timeout=ANSWER_TIMEOUT) as response:
            status, headers, raw = response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        status, headers, raw = exc.code, dict(exc.headers), exc.read()
    try:
        return status, headers, json.loads(raw)
    except ValueError:  # Django's HTML error page
        return status, headers, raw


def record_ids(site: SystemStack) -> set[str]:
    """The ids of every task record the site holds (its own key prefix)."""
    marker = f"{site.prefix}:task:"
    return {key.decode()[len(marker):].strip("{}")
            for key in site.client.scan_iter(match=f"{marker}*", count=1000)}


@pytest.mark.parametrize("system", [CELERY, DJANGO_Q, DJANGO_TASKS])
def test_start_with_broker_down_is_503_and_final(site: SystemStack, system: str) -> None:
    """503 with the JSON error and Retry-After, and the record FAILURE: a watcher of the
    task gets that final at once."""
    before = record_ids(site)
    status, headers, body = post_start(site, DEMO_TASKS[system])
    assert status == 503, (status, body, site.web.output())
    assert headers.get("Content-Type") == "application/json"
    assert headers.get("Retry-After") == str(QUEUE_RETRY_AFTER)
    assert body["error"]["code"] == "unavailable", body
    assert "unavailable" in body["error"]["detail"], body
    (task_id,) = record_ids(site) - before
    final = site.history(task_id)[-1]
    assert final["state"] == "FAILURE" and final["final"] is True, site.history(task_id)
    assert final["error"]["type"] == "QueueUnavailable"
    assert final["error"]["message"].startswith(f"never sent: {system} could not reach"), final
    assert "127.0.0.1" not in json.dumps(final), "the broker's address reached a watcher"
    frames = asyncio.run(harness.watch(site.ws, task_id, issue_token(task_id), timeout=10))
    assert frames == [{**frames[0], "type": "snapshot", "state": "FAILURE", "final": True}]

