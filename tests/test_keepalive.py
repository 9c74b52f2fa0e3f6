"""WebSocket keepalive (consumers/serve.py): idle clients are pinged, dead peers dropped, and a
live but quiet client is never cut off (no absolute lifetime)."""

import asyncio
import base64
import os
import socket
import time
from collections.abc import Iterator

import pytest
import redis

from tests.client import Ws, connect
from tests.faultkit import PrivateStack, private_stack

pytestmark = pytest.mark.integration

PING_INTERVAL, PING_TIMEOUT = 1, 2
OPCODE_PING = 0x9


@pytest.fixture(scope="module")
def stack(redis_client: redis.Redis) -> Iterator[PrivateStack]:
    env = {"TASKPULSE_PING_INTERVAL": str(PING_INTERVAL),
           "TASKPULSE_PING_TIMEOUT": str(PING_TIMEOUT)}
    with private_stack(env, worker=False) as running:
        yield running


def raw_handshake(port: int) -> socket.socket:
    """A WebSocket peer that completes the handshake and then never answers anything."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall((f"GET /ws/progress/ HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                  "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                  f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(4096)
    assert head.startswith(b"HTTP/1.1 101"), head
    return sock


def test_dead_peer_is_pinged_then_dropped(stack: PrivateStack) -> None:
    """A peer that never answers pings is disconnected after the interval plus the timeout."""
    sock = raw_handshake(stack.ports[0])
    opened = time.monotonic()
    received = b""
    try:
        while chunk := sock.recv(4096):
            received += chunk
            assert time.monotonic() - opened < PING_INTERVAL + PING_TIMEOUT + 10
    except ConnectionResetError:
        pass  # dropped with a reset rather than a FIN: dropped all the same
    finally:
        sock.close()
    assert received and received[0] & 0x0F == OPCODE_PING  # it was pinged first
    assert time.monotonic() - opened < PING_INTERVAL + PING_TIMEOUT + 10


async def test_quiet_live_client_stays_connected(stack: PrivateStack) -> None:
    """A client that answers pings but sends nothing for several timeouts is still served."""
    async with connect(stack.ws()) as conn:
        await asyncio.sleep(PING_INTERVAL + PING_TIMEOUT + 2)  # idle on purpose: the scenario
        ws = Ws(conn)
        await ws.send({"type": "ping", "id": "still-here"})
        assert await ws.recv() == {"type": "pong", "id": "still-here"}
