"""A start request's arguments reach the task's function and nothing else (issue 15,
item 1), on Celery, Django-Q2 and the tasks framework: keyword arguments named like
the task system's own options (`sync`, `hook`, `chain`, `timeout`, `q_options`,
`queue`, `countdown`, `link`, ...) are the function's, run by the real worker, and
name no callable the system would run besides it."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from tests import processes
from tests.client import Http
from tests.systems import harness
from tests.systems.harness import SystemStack
from tests.systems.tasks import TRACE, TRACE_ENV

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

# How long a hook, chain or link the start request named has to leave its trace.
TRACE_GRACE = 3.0

# Keyword arguments a client sends to a startable function that takes **kwargs.
OPTION_LIKE_KWARGS: dict[str, Any] = {
    # Django-Q2's async_task reads these as its options (q_options too, and task_name
    # even beside it): run in the web process, call TRACE after or with the task.
    "sync": True, "hook": TRACE, "chain": [TRACE], "timeout": 99999, "task_name": "renamed",
    "q_options": {"sync": True, "hook": TRACE, "timeout": 99999}, "group": "taken",
    "save": False, "cached": True, "ack_failure": True, "cluster": "elsewhere",
    "broker": "elsewhere", "func": TRACE,
    # Celery's apply_async options, and its own parameters.
    "queue": "nowhere", "countdown": 99999, "expires": 1, "link": TRACE,
    "task_id": "chosen-by-client", "args": [TRACE], "kwargs": {"hook": TRACE},
    "headers": {"x": 1}, "ignore_result": True,
    # The tasks framework's options (Task.using) and its context.
    "priority": 99, "queue_name": "nowhere", "run_after": "2999-01-01T00:00:00Z",
    "backend": "nowhere", "context": TRACE,
}
ARGS = [1, "two", {"sync": True}]

WORKERS: dict[str, Callable[[dict[str, str]], processes.Proc]] = {
    "celery": lambda env: processes.worker(env, f"{env['TASKPULSE_PREFIX']}-w", concurrency=1),
    "django_q": harness.qcluster,
    "django_tasks": harness.db_worker,
}
ECHO_TASKS = {
    "celery": "tests.echo.celery",
    "django_q": "tests.echo.django_q",
    "django_tasks": "tests.systems.tasks.echo_task",
}


@pytest.fixture(scope="module", params=sorted(WORKERS))
def system(request: pytest.FixtureRequest, redis_client: redis.Redis,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, SystemStack, Path]]:
    """A site with every task system enabled, and the real worker of one of them."""
    name: str = request.param
    directory = tmp_path_factory.mktemp(name)
    trace = directory / "trace"
    with harness.running_stack(WORKERS[name], directory, **{TRACE_ENV: str(trace)}) as stack:
        yield name, stack, trace


def process_tree(pid: int) -> list[int]:
    """`pid` and its ancestors (from /proc)."""
    chain: list[int] = []
    while pid > 1:
        chain.append(pid)
        stat = Path(f"/proc/{pid}/stat").read_text()
        pid = int(stat.rsplit(")", 1)[1].split()[1])
    return chain


def start(stack: SystemStack, task: str, args: list[Any],
          kwargs: dict[str, Any]) -> tuple[int, Any]:
    http = Http(stack.base)
    headers = {"Content-Type": "application/json", "X-CSRFToken": http.csrf()}
    return http.request("POST", "/api/tasks/", {"task": task, "args": args, "kwargs": kwargs},
                        headers)


def assert_no_trace(trace: Path) -> None:
    deadline = time.monotonic() + TRACE_GRACE
    while time.monotonic() < deadline:
        assert not trace.exists(), f"an unregistered callable ran: {trace.read_text()}"
        time.sleep(0.1)


def test_option_named_arguments_reach_only_the_function(
        system: tuple[str, SystemStack, Path]) -> None:
    """Arguments named like the system's options run the function in the worker with
    exactly those arguments; nothing runs in the web process, nothing else runs."""
    name, stack, trace = system
    status, body = start(stack, ECHO_TASKS[name], ARGS, OPTION_LIKE_KWARGS)
    assert status == 202, (status, body, stack.web.output())
    final = stack.wait_final(body["task_id"])
    assert final["state"] == "SUCCESS", (final, stack.worker.output())
    result = final["result"]
    ran_in, web_pid, worker_pid = process_tree(result["pid"]), stack.web.pid, stack.worker.pid
    assert web_pid not in ran_in, "the task ran in the web process"
    assert worker_pid in ran_in, (ran_in, worker_pid)
    assert result["args"] == ARGS
    assert result["kwargs"] == OPTION_LIKE_KWARGS
    assert_no_trace(trace)
