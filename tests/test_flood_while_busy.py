"""A client flooding while its handler waits (here on a paused Redis) is closed with
1008 once its unhandled frames pass the bound: memory is not spent first."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest
import redis
import websockets

from progress.tokens import issue_token
from tests.client import Ws, connect
from tests.conftest import Stack

pytestmark = pytest.mark.integration

PAUSE_MS = 4000
FLOOD = 2000


async def test_flood_during_a_slow_handler_is_closed_at_once(
        stack: Stack, redis_client: redis.Redis) -> None:
    """With Redis paused the first subscribe's handler waits; the frames piling up
    behind it pass PROGRESS_INBOX_MAX_FRAMES and the socket closes with 1008 long
    before the pause ends."""
    ids = [f"t-flood-{uuid.uuid4().hex[:8]}-{i}" for i in range(FLOOD)]
    frames = [{"type": "subscribe", "task_id": i, "token": issue_token(i)} for i in ids]
    async with connect(stack.ws) as conn:
        ws = Ws(conn)
        await ws.send({"type": "ping", "id": 0})
        assert (await ws.recv())["type"] == "pong"
        redis_client.client_pause(PAUSE_MS, all=True)
        try:
            started = time.monotonic()
            try:
                for frame in frames:
                    await ws.send(frame)
            except websockets.ConnectionClosed:
                pass  # closed while we were still sending: the point
            with pytest.raises(websockets.ConnectionClosed) as closed:
                while True:
                    await asyncio.wait_for(conn.recv(), PAUSE_MS / 1000)
            elapsed = time.monotonic() - started
        finally:
            redis_client.client_unpause()
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008
    assert elapsed < PAUSE_MS / 1000 / 2
