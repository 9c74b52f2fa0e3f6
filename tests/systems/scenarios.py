"""The end-to-end scenarios every task system passes (issue 12), run by
tests/test_django_q.py and tests/test_django_tasks.py against a real worker and
a real daphne, watched over a real WebSocket."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from progress.publisher import NO_RUNNING_TASK, NoRunningTask, track
from tests.client import Ws, connect
from tests.systems.harness import (
    STALL_TIMEOUT,
    WATCH_TIMEOUT,
    Frames,
    SystemStack,
    assert_contiguous,
    assert_history,
    run_python,
)


@dataclass(frozen=True)
class System:
    demo: str  # the demo task's name (what POST /api/tasks/ starts; also the record's name)
    work: str  # tests.systems.tasks.work on this system
    enqueue_natively: str  # code printing {"id", "token"} of a task enqueued the system's way
    # The states a natively enqueued task's record may begin with: PENDING, unless the
    # system announces the enqueue only after a worker can take the task.
    first_states: tuple[str, ...] = ("PENDING",)


def progress_in_order_to_success(stack: SystemStack, system: System) -> None:
    task_id, token = stack.start(system.demo, steps=5, delay=0.05)
    frames = stack.watch(task_id, token)
    assert_contiguous(frames)
    final = frames[-1]
    assert final["state"] == "SUCCESS" and final["final"] is True, final
    assert final["result"] == {"steps": 5} and final["error"] is None
    assert final["name"] == system.demo
    history = stack.history(task_id)
    assert_history(history)
    states = [event["state"] for event in history]
    assert states[:2] == ["PENDING", "STARTED"] and states[-1] == "SUCCESS"
    assert set(states[2:-1]) == {"PROGRESS"}, states
    last = history[-2]["progress"]
    assert (last["current"], last["total"], last["message"]) == (5, 5, "step 5 of 5")


def failure_has_type_and_message(stack: SystemStack, system: System) -> None:
    task_id, token = stack.start(system.demo, steps=5, delay=0.02, fail_at=2)
    frames = stack.watch(task_id, token)
    assert_contiguous(frames)
    final = frames[-1]
    assert final["state"] == "FAILURE"
    # Type and message only: no traceback unless TASKPULSE_SEND_TRACEBACK allows it.
    assert final["error"] == {"type": "ValueError", "message": "failed at step 2"}
    assert final["progress"]["current"] == 1


def enqueued_natively_then_late_subscriber(stack: SystemStack, system: System) -> None:
    """The system's own enqueue call: its id is watchable at once (PENDING was recorded
    before the call returned); subscribed after the end, the snapshot is final."""
    started = run_python(stack.env, system.enqueue_natively)
    task_id, token = started["id"], started["token"]
    status, snapshot = stack.status(task_id, token)
    assert status == 200, snapshot
    final = stack.wait_final(task_id)
    assert final["state"] == "SUCCESS", final
    frames = stack.watch(task_id, token)
    assert len(frames) == 1 and frames[0]["type"] == "snapshot", frames
    assert frames[0]["final"] is True and frames[0]["seq"] == final["seq"]
    assert frames[0]["result"]["steps"] == 2
    states = stack.states(task_id)
    assert states[0] in system.first_states, states
    assert "PENDING" not in states[1:], states  # a late PENDING never sets a record back


def track_outside_a_task(stack: SystemStack, system: System) -> dict[str, Any]:
    """track() with no task running: the documented error, here and in a thread a task
    starts without carry(); with carry() the thread reports for its task."""
    with pytest.raises(NoRunningTask) as raised:
        track()
    assert str(raised.value) == NO_RUNNING_TASK
    task_id, token = stack.start(system.work, steps=1, outside=True)
    final = stack.watch(task_id, token)[-1]
    assert final["state"] == "SUCCESS", final
    result: dict[str, Any] = final["result"]
    assert result["outside_error"] == NO_RUNNING_TASK
    assert result["carried_id"] == result["task_id"] == task_id
    return result


def wait_states(stack: SystemStack, task_id: str, state: str, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while state not in stack.states(task_id):
        assert time.monotonic() < deadline, (state, stack.states(task_id), stack.worker.output())
        time.sleep(0.05)


async def cancel_over_websocket(stack: SystemStack, task_id: str, token: str) -> Frames:
    async with connect(stack.ws) as conn:
        ws = Ws(conn)
        await ws.subscribe(task_id, token)
        await ws.send({"type": "cancel", "task_id": task_id, "token": token})
        return await ws.frames_until_final(task_id, WATCH_TIMEOUT)


def cancel_queued_and_running(stack: SystemStack, system: System, tmp_path: Path) -> None:
    """One worker, busy with a running task: a task queued behind it is cancelled (it
    never runs), then the running one (it stops at its next progress call)."""
    running_id, running_token = stack.start(system.work, steps=400, delay=0.05)
    wait_states(stack, running_id, "PROGRESS")
    mark = tmp_path / "queued-task-ran"
    queued_id, queued_token = stack.start(system.work, steps=1, mark=str(mark))
    status, body = stack.cancel(queued_id, queued_token)
    assert (status, body) == (202, {"task_id": queued_id, "state": "REVOKED"})

    frames = asyncio.run(cancel_over_websocket(stack, running_id, running_token))
    assert {"type": "cancelling", "task_id": running_id} in frames
    assert_contiguous([f for f in frames if f["type"] != "cancelling"])
    final = frames[-1]
    assert final["state"] == "REVOKED" and final["error"]["type"] == "TaskCancelled", final
    assert final["progress"]["current"] < 400

    # The worker takes the cancelled task next, refuses it, and goes on.
    after_id, _ = stack.start(system.work, steps=1)
    assert stack.wait_final(after_id)["state"] == "SUCCESS"
    assert not mark.exists(), "the cancelled queued task ran"
    assert stack.states(queued_id) == ["PENDING", "REVOKED"]


async def watch_until_pid(stack: SystemStack, task_id: str, token: str) -> tuple[Ws, Any, int]:
    conn = await connect(stack.ws)
    ws = Ws(conn)
    await ws.subscribe(task_id, token)
    async with asyncio.timeout(WATCH_TIMEOUT):
        while True:
            frame = await ws.recv()
            pid = (frame.get("meta") or {}).get("pid")
            if frame.get("state") == "PROGRESS" and pid:
                return ws, conn, int(pid)


def killed_worker_is_lost_once(stack: SystemStack, system: System) -> int:
    """SIGKILL the worker process running a task: LOST after the stall timeout, once.
    The killed process's id is returned."""
    task_id, token = stack.start(system.work, steps=2000, delay=0.05, pid=True)

    async def kill_and_watch() -> tuple[int, Frames]:
        ws, conn, pid = await watch_until_pid(stack, task_id, token)
        try:
            os.kill(pid, signal.SIGKILL)
            killed_at = time.monotonic()
            frames = await ws.frames_until_final(task_id, WATCH_TIMEOUT)
            assert time.monotonic() - killed_at < STALL_TIMEOUT + 3
            return pid, frames
        finally:
            await conn.close()

    pid, frames = asyncio.run(kill_and_watch())
    final = frames[-1]
    assert final["state"] == "LOST" and final["error"]["type"] == "WorkerLost", final
    # Every sweeper (daphne's, the worker's) has looked again: still one LOST.
    time.sleep(STALL_TIMEOUT * 1.5)
    states = stack.states(task_id)
    assert states.count("LOST") == 1 and states[-1] == "LOST", states
    assert_history(stack.history(task_id))
    return pid


def stalled_worker_result_does_not_overwrite_lost(stack: SystemStack, system: System) -> None:
    """A worker that stops (SIGSTOP) past the stall timeout: LOST; resumed, it finishes
    the task, and its result does not replace LOST (the task was not run again)."""
    task_id, token = stack.start(system.work, steps=20, delay=0.05, pid=True)

    async def stop_and_watch() -> tuple[int, Frames]:
        ws, conn, pid = await watch_until_pid(stack, task_id, token)
        try:
            os.kill(pid, signal.SIGSTOP)
            return pid, await ws.frames_until_final(task_id, WATCH_TIMEOUT)
        finally:
            await conn.close()

    pid, frames = asyncio.run(stop_and_watch())
    try:
        assert frames[-1]["state"] == "LOST", frames[-1]
    finally:
        os.kill(pid, signal.SIGCONT)
    # One worker runs tasks one after the other: once the next one succeeded, the
    # resumed task has ended too.
    after_id, _ = stack.start(system.work, steps=1)
    assert stack.wait_final(after_id)["state"] == "SUCCESS"
    states = stack.states(task_id)
    assert states.count("LOST") == 1 and states[-1] == "LOST", states
    assert "SUCCESS" not in states
