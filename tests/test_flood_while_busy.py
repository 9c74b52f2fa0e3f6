"""A client flooding while its handler waits (here on a paused Redis) is closed with
FLOODING once its unhandled frames pass the bound: memory is not spent first. On the
tuned consumer loop and on Channels' own (the fallback when its guard is off) alike."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator

import pytest
import redis
import websockets

from progress.compat import UNTESTED_ENV
from progress.tokens import issue_token
from progress.wire import close_codes
from tests import processes
from tests.client import Ws, connect
from tests.conftest import SESSION_PREFIX

pytestmark = pytest.mark.integration

PAUSE_MS = 4000
FLOOD = 2000


@pytest.fixture(params=["tuned loop", "Channels' loop"])
def server(request: pytest.FixtureRequest, redis_client: redis.Redis) -> Iterator[str]:
    """The WebSocket URL of a daphne running the consumer loop the parameter names:
    the session's (the tuned loop), or one with every guard off (Channels' own)."""
    if request.param == "tuned loop":
        yield request.getfixturevalue("stack").ws
        return
    env = processes.stack_env(SESSION_PREFIX, SESSION_PREFIX, {UNTESTED_ENV: "*"})
    port = processes.free_port()
    web = processes.start_daphne(env, port)
    try:
        yield processes.ws_url(port)
    finally:
        web.stop()


async def test_flood_during_a_slow_handler_is_closed_at_once(
        server: str, redis_client: redis.Redis) -> None:
    """With Redis paused the first subscribe's handler waits; the frames piling up
    behind it pass TASKPULSE_INBOX_MAX_FRAMES and the socket closes with FLOODING long
    before the pause ends."""
    ids = [f"t-flood-{uuid.uuid4().hex[:8]}-{i}" for i in range(FLOOD)]
    frames = [{"type": "subscribe", "task_id": i, "token": issue_token(i)} for i in ids]
    async with connect(server) as conn:
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
    assert closed.value.rcvd is not None and closed.value.rcvd.code == close_codes.FLOODING
    assert elapsed < PAUSE_MS / 1000 / 2
