"""The one-task endpoint (/ws/progress/<id>/?token=...) subscribes on the client's
behalf at connect: when that cannot be done (Redis unreachable) the client hears of
it as `unavailable` for that task, as a `subscribe` frame would, instead of a socket
that says nothing."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import pytest

from progress.tokens import issue_token
from progress.wire.errors import ErrorCode
from tests import processes
from tests.client import Ws, connect
from tests.faultkit import own_redis

pytestmark = pytest.mark.integration


async def test_a_failed_subscribe_at_connect_is_answered_unavailable(tmp_path: Path) -> None:
    with own_redis(str(tmp_path), persistent=False) as (url, server):
        env = processes.stack_env("tponetask", "tponetask", {"REDIS_URL": url})
        port = processes.free_port()
        web = processes.start_daphne(env, port)
        try:
            server.stop(signal.SIGKILL)  # Redis goes away; the web process stays up
            task_id = "one-task-endpoint-1"
            url_of_task = f"{processes.ws_url(port)}{task_id}/?token={issue_token(task_id)}"
            async with connect(url_of_task) as conn:
                frame = await Ws(conn).recv(timeout=20)
                assert frame == {"type": "error", "code": ErrorCode.UNAVAILABLE.value,
                                 "detail": frame["detail"], "task_id": task_id}
                # the socket stays open: the client may subscribe again later
                await Ws(conn).send({"type": "ping", "id": 1})
                assert await asyncio.wait_for(Ws(conn).recv(), 10) == {"type": "pong", "id": 1}
        finally:
            web.stop()
