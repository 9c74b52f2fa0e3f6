"""Cancel (PROTOCOL.md §4 `cancel`, §6): a queued task never runs and is REVOKED at once."""

import uuid

import pytest

from progress.tokens import issue_token
from project.demo.tasks import count
from tests.client import Ws, connect
from tests.conftest import Stack

pytestmark = pytest.mark.integration


async def test_cancel_queued_task_is_revoked_at_once(stack: Stack) -> None:
    """A task still in the queue: `cancelling`, then REVOKED; a second cancel: not_cancellable."""
    task_id = str(uuid.uuid4())
    count.apply_async(kwargs={"steps": 1}, task_id=task_id, queue=f"nobody-{task_id}")
    token = issue_token(task_id)
    async with connect(stack.ws) as conn:
        ws = Ws(conn)
        await ws.subscribe(task_id, token)
        assert (await ws.recv())["state"] == "PENDING"
        await ws.send({"type": "cancel", "task_id": task_id, "token": token})
        frames = await ws.frames_until_final(task_id, timeout=15)
        await ws.send({"type": "cancel", "task_id": task_id, "token": token})
        again = await ws.recv()
    assert {"type": "cancelling", "task_id": task_id} in frames
    assert frames[-1]["state"] == "REVOKED" and frames[-1]["error"]["type"] == "TaskRevokedError"
    assert again["type"] == "error" and again["code"] == "not_cancellable"
