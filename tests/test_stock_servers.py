"""TaskPulse on stock servers: `daphne project.asgi:application` and `uvicorn
project.asgi:application`, none of consumers/serve.py (docs/GUARANTEES.md, "Stock
daphne and uvicorn"). Real processes on free ports, against a private Celery worker
(TASKPULSE_MIN_INTERVAL=0, so a task can outrun a reader) on its own prefix and queue.

What holds there is checked as on the tuned launcher; what differs is checked to
differ exactly as documented (the slow-reader bound on stock daphne)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import pytest
import redis
import websockets

from progress.tokens import WATCH_AND_CANCEL, issue_token
from progress.wire import close_codes
from tests import processes
from tests.client import Http, Ws, connect
from tests.faultkit import (
    PrivateStack,
    Served,
    private_stack,
    resume_to_final,
    rss_kib,
    send_task,
    served_by,
)
from tests.test_compat import stopped_blocking_reader

pytestmark = pytest.mark.integration

SLOW_READER_TIMEOUT = 3.0
# ~24 MB of progress frames (messages are cut at TASKPULSE_MESSAGE_MAX_CHARS, 1000), far
# more than any socket buffer holds
STEPS, PAD = 20_000, 1000
RSS_GROWTH_LIMIT_KIB = 16 * 1024


SERVERS = {"daphne": processes.stock_daphne, "uvicorn": processes.uvicorn}




@pytest.fixture(scope="module")
def worker_stack(redis_client: redis.Redis) -> Iterator[PrivateStack]:
    """A Celery worker (and no tuned daphne) on a private prefix and queue."""
    env = {"TASKPULSE_MIN_INTERVAL": "0", "DJANGO_DEBUG": "1",
           "TASKPULSE_SLOW_READER_TIMEOUT": str(SLOW_READER_TIMEOUT)}
    with private_stack(env, webs=0) as running:
        yield running


@pytest.fixture(scope="module", params=sorted(SERVERS))
def served(request: pytest.FixtureRequest, worker_stack: PrivateStack) -> Iterator[Served]:
    with served_by(request.param, SERVERS[request.param], worker_stack) as running:
        yield running


async def watch(url: str, task_id: str, token: str) -> list[dict[str, Any]]:
    async with connect(url) as conn:
        ws = Ws(conn)
        await ws.subscribe(task_id, token)
        return await ws.frames_until_final(task_id)


async def test_progress_in_order_to_success(served: Served) -> None:
    """subscribe -> snapshot, PROGRESS events with contiguous seqs, SUCCESS."""
    status, started = Http(served.http).start(steps=5, delay=0.1)
    assert status == 202, started
    frames = await watch(served.ws, started["task_id"], started["token"])
    assert frames[0]["type"] == "snapshot"
    assert all(f["type"] == "event" for f in frames[1:])
    seqs = [f["seq"] for f in frames]
    assert seqs == list(range(seqs[0], seqs[-1] + 1))
    assert "PROGRESS" in [f["state"] for f in frames]
    assert frames[-1]["state"] == "SUCCESS" and frames[-1]["result"] == {"steps": 5}


async def test_late_subscriber_gets_final_snapshot(served: Served) -> None:
    """A client subscribing after the task finished gets one final snapshot."""
    _, started = Http(served.http).start(steps=2, delay=0)
    await watch(served.ws, started["task_id"], started["token"])
    async with connect(served.ws) as conn:
        ws = Ws(conn)
        await ws.subscribe(started["task_id"], started["token"])
        snapshot = await ws.recv()
        assert snapshot["type"] == "snapshot" and snapshot["final"]
        assert snapshot["state"] == "SUCCESS" and snapshot["result"] == {"steps": 2}
        await ws.send({"type": "ping", "id": 1})
        assert await ws.recv() == {"type": "pong", "id": 1}


async def test_cancel_running_task(served: Served) -> None:
    """cancel answers `cancelling`, then REVOKED arrives."""
    task_id = send_task(served.stack, "tests.slow_steps", steps=100, delay=0.05)
    token = issue_token(task_id, WATCH_AND_CANCEL)
    async with connect(served.ws) as conn:
        frames = await Ws(conn).cancel_when_running(task_id, token)
    assert {"type": "cancelling", "task_id": task_id} in frames
    assert frames[-1]["state"] == "REVOKED"


async def test_flood_close_code(served: Served) -> None:
    """A flooding client is closed with 4008 on both servers (PROTOCOL.md §4 revision 2)."""
    async with connect(served.ws) as flooder:
        for i in range(400):
            await flooder.send(json.dumps({"type": "ping", "id": i}))
        replies: list[dict[str, Any]] = []
        with pytest.raises(websockets.ConnectionClosed) as caught:
            while True:
                replies.append(await Ws(flooder).recv())
    assert caught.value.rcvd is not None
    assert caught.value.rcvd.code == close_codes.FLOODING
    # Rate-limited first, or closed at once when the frames arrive faster than the
    # consumer handles them (the client backlog bound, consumers/base.py).
    assert {r.get("code") for r in replies if r["type"] == "error"} <= {"rate_limited"}


async def test_oversized_frame_close_code(served: Served) -> None:
    """A frame over TASKPULSE_MAX_FRAME_BYTES closes the connection with 4009 on both
    servers (both read the frame whole first)."""
    async with connect(served.ws) as conn:
        await conn.send("x" * (64 * 1024 + 1))
        with pytest.raises(websockets.ConnectionClosed) as caught:
            await Ws(conn).recv()
    assert caught.value.rcvd is not None
    assert caught.value.rcvd.code == close_codes.MESSAGE_TOO_BIG


async def test_stopped_reader(served: Served) -> None:
    """A reader that stops while its task floods it.

    uvicorn holds a send while its transport is paused; the consumer counts that as
    a full backlog (consumers/base.py SendWatch), so the reader is cut off within the
    bound, the server's memory stays bounded, and it resumes to SUCCESS.
    Stock daphne reports no backlog and Twisted buffers every frame: the reader is
    not cut off, and reads every state change and SUCCESS once it reads again."""
    baseline = rss_kib(served.proc.pid)
    task_id = send_task(served.stack, "tests.chatty", steps=STEPS, pad=PAD)
    reading = asyncio.create_task(asyncio.to_thread(
        stopped_blocking_reader, served.port, task_id, None, SLOW_READER_TIMEOUT + 5))
    peak = baseline
    while not reading.done():
        await asyncio.sleep(0.5)
        peak = max(peak, rss_kib(served.proc.pid))
    watcher, cut = await reading
    assert watcher.violations == []
    if served.kind == "daphne":
        assert not cut and watcher.final[task_id]["state"] == "SUCCESS"
        return
    assert cut and task_id not in watcher.final and watcher.frames < STEPS // 4
    assert peak - baseline < RSS_GROWTH_LIMIT_KIB, (baseline, peak)
    await resume_to_final(served.ws, task_id, watcher)
