"""Cancel (PROTOCOL.md §4 `cancel`, §6): a queued task never runs and is REVOKED at once."""

import asyncio
import json
import time
import uuid

import pytest

from progress.tokens import WATCH_AND_CANCEL, issue_token
from project.demo.tasks import count
from tests.client import Ws, connect
from tests.conftest import Stack

pytestmark = pytest.mark.integration


async def test_cancel_queued_task_is_revoked_at_once(stack: Stack) -> None:
    """A task still in the queue: `cancelling`, then REVOKED; a second cancel: not_cancellable."""
    task_id = str(uuid.uuid4())
    count.apply_async(kwargs={"steps": 1}, task_id=task_id, queue=f"nobody-{task_id}")
    token = issue_token(task_id, WATCH_AND_CANCEL)
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


async def test_cancelling_a_group_cancels_its_members(stack: Stack) -> None:
    """Cancel on a group's id stops every member: the running ones at their next progress
    call, the queued ones at once; the group ends final with each member REVOKED."""
    from progress.integrations.celery.groups import start_group
    from progress.publisher import store
    from progress.store.groups import member_ids
    from tests.tasks import slow_steps

    group_id = start_group([slow_steps.s(steps=200, delay=0.05) for _ in range(4)])
    token = issue_token(group_id, WATCH_AND_CANCEL)
    async with connect(stack.ws) as conn:
        ws = Ws(conn)
        await ws.subscribe(group_id, token)
        await ws.recv()
        await ws.send({"type": "cancel", "task_id": group_id, "token": token})
        frames = await ws.frames_until_final(group_id, timeout=40)
    assert {"type": "cancelling", "task_id": group_id} in frames
    assert frames[-1]["final"] is True
    members = member_ids(group_id)
    assert len(members) == 4
    # A group still PENDING when cancelled (its members not started yet) is REVOKED
    # at once, like any queued task; its members follow as each worker takes or
    # stops them.
    deadline = time.monotonic() + 30
    while True:
        states = [json.loads(store().read(member).snapshot.json)["state"]  # type: ignore[union-attr]
                  for member in members]
        if states == ["REVOKED"] * 4 or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.2)
    assert states == ["REVOKED"] * 4


def test_a_repeated_cancel_revokes_nothing_again(monkeypatch: pytest.MonkeyPatch) -> None:
    """The second cancel of a running task answers as the first but sends no revoke."""
    from progress import taskqueue
    from progress.control.cancel import CancelOutcome, cancel
    from progress.publisher import publish, store
    from progress.store.records import EventDraft
    from progress.wire.states import State

    revoked: list[str] = []
    monkeypatch.setattr(taskqueue, "revoke",
                        lambda task_id, terminate=False: revoked.append(task_id))
    task_id = f"t-twice-{uuid.uuid4().hex[:6]}"
    publish(EventDraft(task_id, State.STARTED, name="t"))
    assert cancel(task_id) == (CancelOutcome.ACCEPTED, "STARTED")
    assert cancel(task_id) == (CancelOutcome.ACCEPTED, "STARTED")
    assert revoked == [task_id]
    store().delete(task_id)
