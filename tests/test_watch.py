"""progress.watch / progress.awatch (progress/watching.py) against real workers and Redis:
ordered §3 objects to the final one, failure, an unknown task, a Redis restart."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.test import override_settings

import progress
from progress.watching_remote import WatchRefused, awatch_remote, watch_remote
from progress.wire.types import TaskObject
from tests.client import Http
from tests.conftest import Stack
from tests.faultkit import PrivateStack, own_redis, private_stack, restart_redis, send_task

pytestmark = pytest.mark.integration


def assert_in_order(objects: list[TaskObject]) -> None:
    seqs = [o["seq"] for o in objects]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), seqs
    assert [o["final"] for o in objects].count(True) == 1 and objects[-1]["final"]


@pytest.fixture(scope="module")
def worker_stack(redis_client: Any) -> Iterator[PrivateStack]:
    """A Celery worker on a private prefix; this test process watches that prefix."""
    with private_stack({"TASKPULSE_MIN_INTERVAL": "0"}, webs=0) as running, \
            override_settings(TASKPULSE_KEY_PREFIX=running.prefix):
        yield running


async def test_awatch_follows_a_task_to_success(worker_stack: PrivateStack) -> None:
    task_id = send_task(worker_stack, "tests.slow_steps", steps=8, delay=0.05)
    objects = [o async for o in progress.awatch(task_id, timeout=30)]
    assert objects[0]["task_id"] == task_id
    assert_in_order(objects)
    assert "PROGRESS" in [o["state"] for o in objects]
    assert objects[-1]["state"] == "SUCCESS" and objects[-1]["result"] == {"steps": 8}


def test_watch_sync_sees_a_failure(worker_stack: PrivateStack) -> None:
    task_id = send_task(worker_stack, "tests.fails_after", steps=3)
    objects = list(progress.watch(task_id, timeout=30))
    assert_in_order(objects)
    assert objects[-1]["state"] == "FAILURE" and objects[-1]["error"]["type"]


def test_late_watcher_gets_the_final_object_only(worker_stack: PrivateStack) -> None:
    task_id = send_task(worker_stack, "tests.slow_steps", steps=2, delay=0)
    list(progress.watch(task_id, timeout=30))
    again = list(progress.watch(task_id, timeout=5))
    assert len(again) == 1 and again[0]["state"] == "SUCCESS"


async def test_unknown_task_yields_unknown_then_times_out(worker_stack: PrivateStack) -> None:
    seen: list[TaskObject] = []
    with pytest.raises(TimeoutError):
        async for found in progress.awatch("never-started-0", timeout=1.0):
            seen.append(found)
    assert [o["state"] for o in seen] == ["UNKNOWN"]


def test_a_bad_task_id_is_refused() -> None:
    with pytest.raises(ValueError, match="not a task id"):
        next(progress.watch("no spaces allowed"))


async def test_awatch_survives_a_redis_restart(tmp_path: Path) -> None:
    """Redis (with AOF) restarts mid-task: the watcher reconnects and catches up from
    history, so every object arrives once, in order, to SUCCESS."""
    with own_redis(str(tmp_path)) as (url, server), \
            private_stack({"TASKPULSE_MIN_INTERVAL": "0"}, webs=0, redis_url=url) as stack, \
            override_settings(TASKPULSE_KEY_PREFIX=stack.prefix, TASKPULSE_REDIS_URL=url):
        task_id = send_task(stack, "tests.slow_steps", steps=40, delay=0.1)
        restarted = threading.Event()
        objects: list[TaskObject] = []

        async def restart_when_running() -> None:
            while not any(o["state"] == "PROGRESS" for o in objects):
                await asyncio.sleep(0.05)
            await asyncio.to_thread(restart_redis, server, 1.0)
            restarted.set()

        restarter = asyncio.create_task(restart_when_running())
        async for found in progress.awatch(task_id, timeout=60):
            objects.append(found)
        await restarter
    assert restarted.is_set()
    assert_in_order(objects)
    assert objects[-1]["state"] == "SUCCESS" and objects[-1]["result"] == {"steps": 40}


def test_watch_remote_over_the_websocket_to_success(stack: Stack) -> None:
    """From a machine without Redis access: the same objects over the WebSocket."""
    status, started = Http(stack.http).start(steps=6, delay=0.05)
    assert status == 202, started
    objects = list(watch_remote(stack.ws, started["task_id"], started["token"], timeout=30))
    assert_in_order(objects)
    assert objects[-1]["state"] == "SUCCESS" and objects[-1]["result"] == {"steps": 6}


async def test_awatch_remote_resumes_across_a_web_restart(stack: Stack) -> None:
    """The web process restarts mid-task: the remote watcher reconnects and resumes with
    since/epoch, so nothing is missed or repeated."""
    status, started = Http(stack.http).start(steps=30, delay=0.1)
    assert status == 202, started
    objects: list[TaskObject] = []
    restarted = False
    async for found in awatch_remote(stack.ws, started["task_id"], started["token"],
                                     timeout=60):
        objects.append(found)
        if found["state"] == "PROGRESS" and not restarted:
            await asyncio.to_thread(stack.restart_web)
            restarted = True
    assert restarted
    assert_in_order(objects)
    assert objects[-1]["state"] == "SUCCESS"


def test_remote_refusal_is_an_error(stack: Stack) -> None:
    with pytest.raises(WatchRefused, match="forbidden"):
        next(watch_remote(stack.ws, "some-task", "not-a-token", timeout=10))


def test_the_api_doc_example(worker_stack: PrivateStack, capsys: pytest.CaptureFixture[str],
                             ) -> None:
    """docs/API.md's wait_for_export, as written: the result, and a line per object."""
    from tests.test_api_docs import example

    wait_for_export = example("def wait_for_export").wait_for_export
    task_id = send_task(worker_stack, "tests.slow_steps", steps=4, delay=0.05)
    assert wait_for_export(task_id) == {"steps": 4}
    assert "SUCCESS" in capsys.readouterr().out
    failing = send_task(worker_stack, "tests.fails_after", steps=1)
    with pytest.raises(RuntimeError, match="FAILURE"):
        wait_for_export(failing)
