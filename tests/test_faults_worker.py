"""Worker faults against real processes: a killed pool child, a killed worker, a stuck task."""

import asyncio
import json
import os
import signal
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from progress.tokens import WATCH_AND_CANCEL, issue_token
from tests.client import Ws, connect
from tests.faultkit import PrivateStack, private_stack, send_task

pytestmark = pytest.mark.integration

STALL = 4.0
LOST_WAIT = 0.5  # Celery's wait before it reports a dead pool child's task: well below STALL
SETTLE = 8.0  # the sweep interval, process start-up and a loaded CI machine


@pytest.fixture(scope="module")
def stack(redis_client: redis.Redis) -> Iterator[PrivateStack]:
    """A stack with a short stall timeout and two server processes (two sweepers)."""
    env = {"TASKPULSE_STALL_TIMEOUT": str(STALL), "TASKPULSE_CANCEL_GRACE": "1",
           "CELERY_WORKER_LOST_WAIT": str(LOST_WAIT)}
    with private_stack(env, webs=2) as running:
        yield running


async def until_blocking(ws: Ws, task_id: str) -> dict[str, Any]:
    """Frames up to the task's first progress event (it carries the pool child's pid)."""
    while True:
        frame = await ws.recv(30)
        if frame.get("task_id") == task_id and frame.get("state") == "PROGRESS":
            return frame


def history_states(stack: PrivateStack, task_id: str) -> list[str]:
    raw = redis.Redis().lrange(f"{stack.prefix}:hist:{{{task_id}}}", 0, -1)
    return [json.loads(e)["state"] for e in raw]


async def test_killed_pool_child_shows_failure(stack: PrivateStack) -> None:
    """SIGKILL of the pool child running a task: FAILURE (WorkerLostError) at once."""
    task_id = send_task(stack, "tests.blocks", seconds=60)
    async with connect(stack.ws()) as conn:
        ws = Ws(conn)
        await ws.subscribe(task_id, issue_token(task_id))
        progress = await until_blocking(ws, task_id)
        os.kill(progress["meta"]["pid"], signal.SIGKILL)
        killed = time.monotonic()
        frames = await ws.frames_until_final(task_id, timeout=STALL + SETTLE)
    assert frames[-1]["state"] == "FAILURE", frames[-1]
    assert frames[-1]["error"]["type"] == "WorkerLostError"
    assert time.monotonic() - killed < STALL


async def test_killed_worker_shows_lost_exactly_once(stack: PrivateStack) -> None:
    """SIGKILL of the whole worker: LOST within the stall timeout, marked once by two servers."""
    task_id = send_task(stack, "tests.blocks", seconds=60)
    try:
        async with connect(stack.ws(0)) as first, connect(stack.ws(1)) as second:
            a, b = Ws(first), Ws(second)
            await a.subscribe(task_id, issue_token(task_id))
            await b.subscribe(task_id, issue_token(task_id))
            await until_blocking(a, task_id)
            assert stack.worker is not None
            stack.worker.kill()
            killed = time.monotonic()
            ends = await asyncio.gather(a.frames_until_final(task_id, STALL + SETTLE),
                                        b.frames_until_final(task_id, STALL + SETTLE))
        elapsed = time.monotonic() - killed
        for frames in ends:
            assert frames[-1]["state"] == "LOST" and frames[-1]["final"] is True
            assert frames[-1]["error"]["type"] == "WorkerLost"
        assert ends[0][-1]["seq"] == ends[1][-1]["seq"]
        assert history_states(stack, task_id).count("LOST") == 1
        assert elapsed < STALL + SETTLE
    finally:
        stack.start_worker()


async def test_cancel_of_a_blocked_task_terminates_it(stack: PrivateStack) -> None:
    """A cancelled task that never reaches a progress call is terminated: REVOKED."""
    task_id = send_task(stack, "tests.blocks", seconds=60)
    token = issue_token(task_id, WATCH_AND_CANCEL)
    async with connect(stack.ws()) as conn:
        ws = Ws(conn)
        await ws.subscribe(task_id, token)
        await until_blocking(ws, task_id)
        await ws.send({"type": "cancel", "task_id": task_id, "token": token})
        frames = await ws.frames_until_final(task_id, timeout=20)
    assert {"type": "cancelling", "task_id": task_id} in frames
    assert frames[-1]["state"] == "REVOKED"


async def test_healthy_long_task_is_not_lost(stack: PrivateStack) -> None:
    """A task running several stall timeouts with heartbeats ends SUCCESS, never LOST."""
    task_id = send_task(stack, "tests.blocks", seconds=STALL * 2)
    async with connect(stack.ws()) as conn:
        ws = Ws(conn)
        await ws.subscribe(task_id, issue_token(task_id))
        frames = await ws.frames_until_final(task_id, timeout=STALL * 2 + 30)
    assert frames[-1]["state"] == "SUCCESS"
    assert "LOST" not in history_states(stack, task_id)
