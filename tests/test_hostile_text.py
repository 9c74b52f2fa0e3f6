"""Text with lone surrogates in a progress message, an error or a result: the task
ends SUCCESS or FAILURE with the text made safe (U+FFFD), never LOST or crashed."""

from __future__ import annotations

import uuid

import pytest

from progress.tokens import issue_token
from tests.client import Ws, connect
from tests.conftest import Stack

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("fail", [False, True])
async def test_lone_surrogates_end_the_task_normally(stack: Stack, fail: bool) -> None:
    """The message, the result and the error message arrive with U+FFFD in place."""
    from tests.tasks import surrogates

    task_id = str(uuid.uuid4())
    token = issue_token(task_id)
    async with connect(stack.ws) as conn:
        ws = Ws(conn)
        await ws.subscribe(task_id, token)
        await ws.recv()
        surrogates.apply_async(kwargs={"fail": fail}, task_id=task_id)
        frames = await ws.frames_until_final(task_id, timeout=30)
    messages = [f["progress"]["message"] for f in frames if f.get("state") == "PROGRESS"]
    assert "half \ufffd a character" in messages
    final = frames[-1]
    if fail:
        assert final["state"] == "FAILURE"
        assert final["error"] == {"type": "ValueError", "message": "bad \ufffd input"}
    else:
        assert final["state"] == "SUCCESS" and final["result"] == "done \ufffd"
