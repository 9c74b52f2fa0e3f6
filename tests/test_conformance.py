"""PROTOCOL.md §4 as a client sees it, the same on every server TaskPulse supports:
the tuned launcher, the launcher with every tuning off (TASKPULSE_UNTESTED=*, the
public code paths a new upstream release falls back to), stock daphne and uvicorn.

Each case runs against each server as a real process (with a real Celery worker and
Redis): ordered delivery to the final state, resume with since/epoch, and every close
code of §4 (revision 2): 4008 flood, 4009 frame too big, 4029 per-client socket cap,
4013 process at capacity. `.ci/run` also runs this file against the newest releases
pip resolves (TASKPULSE_UNPINNED=1), so a release that changes what a client sees
fails CI here before a user installs it.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from contextlib import AsyncExitStack
from typing import Any

import pytest
import redis
import websockets

from progress.tokens import issue_token
from progress.wire import close_codes
from tests import processes
from tests.client import RECV_TIMEOUT, Ws
from tests.faultkit import PrivateStack, Served, private_stack, send_task, served_by

pytestmark = pytest.mark.integration

MAX_SOCKETS, PER_CLIENT = 6, 2
SERVER_ENV = {"TASKPULSE_MAX_SOCKETS": str(MAX_SOCKETS),
              "TASKPULSE_MAX_SOCKETS_PER_CLIENT": str(PER_CLIENT),
              "TASKPULSE_MIN_INTERVAL": "0", "DJANGO_DEBUG": "1"}
OVERSIZED = 100 * 1024  # over the 64 KiB limit, under any transport limit


def launcher(env: dict[str, str], port: int) -> processes.Proc:
    return processes.daphne(env, port)


def public_launcher(env: dict[str, str], port: int) -> processes.Proc:
    proc = processes.daphne({**env, "TASKPULSE_UNTESTED": "*"}, port)
    proc.name = f"daphne-public:{port}"
    return proc


SERVERS = {"launcher": launcher, "launcher-public": public_launcher,
           "stock-daphne": processes.stock_daphne, "uvicorn": processes.uvicorn}




@pytest.fixture(scope="module")
def worker_stack(redis_client: redis.Redis) -> Iterator[PrivateStack]:
    with private_stack(SERVER_ENV, webs=0) as running:
        yield running


@pytest.fixture(scope="module", params=sorted(SERVERS))
def served(request: pytest.FixtureRequest, worker_stack: PrivateStack) -> Iterator[Served]:
    with served_by(request.param, SERVERS[request.param], worker_stack) as running:
        yield running


def connect_from(url: str, address: str = processes.LOCALHOST) -> Any:
    """A WebSocket client whose connection comes from `address` (127.0.0.0/8 is all
    this machine's): a distinct client address for the per-client caps."""
    return websockets.connect(url, open_timeout=10, local_addr=(address, 0))


async def close_code(conn: Any) -> int | None:
    """Read until the server closes; its close code."""
    with pytest.raises(websockets.ConnectionClosed) as caught:
        while True:
            await asyncio.wait_for(conn.recv(), RECV_TIMEOUT)
    return caught.value.rcvd.code if caught.value.rcvd else None


async def open_sockets(url: str, address: str, count: int, stack: AsyncExitStack) -> None:
    """`count` sockets from `address`, each answering a ping (so each is counted)."""
    for i in range(count):
        ws = Ws(await stack.enter_async_context(connect_from(url, address)))
        await ws.send({"type": "ping", "id": i})
        assert (await ws.recv())["type"] == "pong"


def contiguous(frames: list[dict[str, Any]]) -> bool:
    seqs = [f["seq"] for f in frames if "seq" in f]
    return seqs == list(range(seqs[0], seqs[0] + len(seqs)))


async def test_progress_in_order_to_success(served: Served) -> None:
    task_id = send_task(served.stack, "tests.slow_steps", steps=5, delay=0.05)
    async with connect_from(served.ws) as conn:
        ws = Ws(conn)
        await ws.subscribe(task_id, issue_token(task_id))
        frames = await ws.frames_until_final(task_id)
    assert frames[0]["type"] == "snapshot"
    assert all(f["type"] == "event" for f in frames[1:]) and contiguous(frames)
    assert frames[-1]["state"] == "SUCCESS"


async def test_resume_after_a_drop(served: Served) -> None:
    """Drop the socket mid-task; subscribe again with since/epoch: `resumed`, then the
    missed events in order, nothing twice, to SUCCESS."""
    task_id = send_task(served.stack, "tests.slow_steps", steps=20, delay=0.1)
    token = issue_token(task_id)
    async with connect_from(served.ws) as conn:
        ws = Ws(conn)
        await ws.subscribe(task_id, token)
        last = await ws.until_progress()
    await asyncio.sleep(0.5)  # events go by while nobody watches
    async with connect_from(served.ws) as conn:
        ws = Ws(conn)
        await ws.subscribe(task_id, token, since=last["seq"], epoch=last["epoch"])
        frames = await ws.frames_until_final(task_id)
    assert frames[0] == {"type": "resumed", "task_id": task_id, "epoch": last["epoch"],
                         "seq": last["seq"]}
    events = frames[1:]
    assert events[0]["seq"] == last["seq"] + 1 and contiguous(events)
    assert events[-1]["state"] == "SUCCESS"


async def test_flood_closes_4008(served: Served) -> None:
    async with connect_from(served.ws) as flooder:
        for i in range(400):
            await flooder.send(json.dumps({"type": "ping", "id": i}))
        assert await close_code(flooder) == close_codes.FLOODING


async def test_oversized_frame_closes_4009(served: Served) -> None:
    async with connect_from(served.ws) as conn:
        await conn.send("x" * OVERSIZED)
        assert await close_code(conn) == close_codes.MESSAGE_TOO_BIG


async def test_per_client_socket_cap_closes_4029(served: Served) -> None:
    async with AsyncExitStack() as stack:
        await open_sockets(served.ws, "127.0.0.2", PER_CLIENT, stack)
        async with connect_from(served.ws, "127.0.0.2") as one_more:
            assert await close_code(one_more) == close_codes.TOO_MANY_SOCKETS
        # another address is still welcome
        await open_sockets(served.ws, "127.0.0.3", 1, stack)


async def until_accepted(opening: Any) -> AsyncExitStack:
    """Run `opening(stack)` until the server accepts every socket it opens: sockets
    an earlier test closed leave the server's count a moment later. The open stack."""
    async with asyncio.timeout(10):
        while True:
            stack = AsyncExitStack()
            try:
                await opening(stack)
                return stack
            except websockets.ConnectionClosed:
                await stack.aclose()
                await asyncio.sleep(0.2)


async def test_full_process_closes_4013(served: Served) -> None:
    async def fill(stack: AsyncExitStack) -> None:
        for i in range(MAX_SOCKETS // PER_CLIENT):
            await open_sockets(served.ws, f"127.0.0.{10 + i}", PER_CLIENT, stack)

    async with await until_accepted(fill), connect_from(served.ws, "127.0.0.30") as one_more:
        assert await close_code(one_more) == close_codes.TRY_AGAIN_LATER
    # once they left, a new one is accepted
    async with await until_accepted(
            lambda stack: open_sockets(served.ws, "127.0.0.30", 1, stack)):
        pass
