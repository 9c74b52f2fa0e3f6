"""Socket caps hold before a connection costs more: per server process (close 4013,
try again later) and per client address (close 4029), against a real daphne.
tests/test_conformance.py checks the same codes on every supported server."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import AsyncExitStack

import pytest
import websockets

from progress.wire import close_codes
from tests import processes
from tests.client import Ws, connect

pytestmark = pytest.mark.integration

RECV_TIMEOUT = 10.0


@pytest.fixture
def limited_server(request: pytest.FixtureRequest, redis_client: object) -> Iterator[str]:
    """A daphne with the caps the test's parameters name; its WebSocket URL."""
    max_sockets, per_client = request.param
    env = processes.stack_env("tpcaps", "tpcaps", {
        "TASKPULSE_MAX_SOCKETS": str(max_sockets),
        "TASKPULSE_MAX_SOCKETS_PER_CLIENT": str(per_client)})
    port = processes.free_port()
    web = processes.start_daphne(env, port)
    try:
        yield processes.ws_url(port)
    finally:
        web.stop()


async def open_sockets(url: str, count: int, stack: AsyncExitStack) -> list[Ws]:
    """`count` sockets that answer a ping (so each is really open and counted)."""
    sockets = []
    for i in range(count):
        ws = Ws(await stack.enter_async_context(connect(url)))
        await ws.send({"type": "ping", "id": i})
        assert (await ws.recv(RECV_TIMEOUT))["type"] == "pong"
        sockets.append(ws)
    return sockets


async def close_code_of_one_more(url: str) -> int | None:
    async with connect(url) as conn:
        try:
            await asyncio.wait_for(conn.recv(), RECV_TIMEOUT)
        except websockets.ConnectionClosed as closed:
            return closed.rcvd.code if closed.rcvd else None
    return None


@pytest.mark.parametrize("limited_server", [(100, 2)], indirect=True)
async def test_one_address_holds_at_most_its_share(limited_server: str) -> None:
    """The third socket from one address is closed with 4029; the two open ones still work."""
    async with AsyncExitStack() as stack:
        _first, second = await open_sockets(limited_server, 2, stack)
        assert await close_code_of_one_more(limited_server) == close_codes.TOO_MANY_SOCKETS
        await second.send({"type": "ping", "id": "still"})
        assert (await second.recv(RECV_TIMEOUT))["id"] == "still"


@pytest.mark.parametrize("limited_server", [(3, 0)], indirect=True)
async def test_a_full_process_says_try_again_later(limited_server: str) -> None:
    """Past TASKPULSE_MAX_SOCKETS a new socket is closed with 4013; once one leaves,
    the next is accepted."""
    async with AsyncExitStack() as stack:
        await open_sockets(limited_server, 3, stack)
        assert await close_code_of_one_more(limited_server) == close_codes.TRY_AGAIN_LATER
    async with AsyncExitStack() as stack:
        await open_sockets(limited_server, 1, stack)
