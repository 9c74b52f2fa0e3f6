"""What a client can make a server process hold (GUARANTEES rule 9): frames queued for a
socket that never reads are bounded in bytes, a `pong` echoes a short `id` only, and the
bytes queued across a process have one budget."""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import Iterator

import pytest
import redis
import websockets
from django.test import override_settings

from consumers.base import SendWatch
from consumers.frames import PING_ID_MAX_CHARS, FrameError, Ping, parse_frame
from consumers.outbox import HIGH_WATER, QueueVerdict, SendQueue, queued_in_process
from progress.store.connections import sync_client
from progress.store.records import EventDraft
from progress.tokens import issue_token
from progress.wire.encoding import dumps
from progress.wire.errors import ErrorCode
from progress.wire.states import State
from tests.client import Ws, connect
from tests.faultkit import PrivateStack, private_stack, rss_kib
from tests.publishing import PublishingStore
from tests.test_slow_reader import server_holds, small_window_socket

RESULT_CHARS = 60_000  # a snapshot of ~60 KB, as in the report
SEND_INTERVAL = 0.025  # 40 frames/s: within the rate limit (50/s, burst 100)
ATTACK_SECONDS = 20.0
# Measured without the byte bound: +76 MB in 20 s (frames queued until 1000 of them or
# 30 s); with it +3-4 MB: a never-reading socket holds at most 256 KiB unwritten (plus one
# frame) and 1 MiB queued before it is cut off.
RSS_GROWTH_LIMIT_KIB = 15 * 1024
SAMPLE_INTERVAL = 0.2


class Transport:
    """A connection whose client never reads: the server holds everything written."""

    def __init__(self) -> None:
        self.cut = 0

    async def send(self, frame: str) -> None:
        raise AssertionError("nothing is written while the backlog is full")

    def backlog(self) -> int:
        return HIGH_WATER + 1

    async def overflow(self) -> None:
        self.cut += 1


def queue(t: Transport, max_bytes: int, process_max_bytes: int = 2**40) -> SendQueue:
    return SendQueue(t.send, t.backlog, t.overflow, 1000, 60.0,
                     max_bytes=max_bytes, process_max_bytes=process_max_bytes)


async def test_queue_bound_counts_bytes_not_frames() -> None:
    """Two 60 KB frames pass a 100 KB bound long before 1000 frames: the reader is cut."""
    t = Transport()
    q = queue(t, max_bytes=100_000)
    assert await q.put("x" * 60_000, "a") is QueueVerdict.QUEUED
    assert await q.put("y" * 60_000, "a") is QueueVerdict.OVERFLOW
    assert t.cut == 1 and len(q) == 0


async def test_coalesced_progress_counts_its_newest_frame_only() -> None:
    """A progress frame replaced by a newer one no longer counts against the bound."""
    t = Transport()
    q = queue(t, max_bytes=100_000)
    for _ in range(10):
        assert await q.put("p" * 60_000, "a", progress_only=True) is QueueVerdict.QUEUED
    await q.close()


async def test_non_ascii_frames_count_their_encoded_bytes() -> None:
    """A frame counts the bytes it is sent as (UTF-8), not its characters."""
    t = Transport()
    q = queue(t, max_bytes=100_000)
    assert await q.put("é" * 60_000, "a") is QueueVerdict.OVERFLOW  # 120 000 bytes


async def test_process_budget_cuts_the_connection_asking_past_it() -> None:
    """Bytes queued across a process have one budget: the queue that would pass it is cut,
    the ones within it are not, and a closed queue gives its bytes back."""
    before = queued_in_process()
    first, second = Transport(), Transport()
    q1 = queue(first, max_bytes=100_000, process_max_bytes=before + 100_000)
    q2 = queue(second, max_bytes=100_000, process_max_bytes=before + 100_000)
    assert await q1.put("x" * 60_000, "a") is QueueVerdict.QUEUED
    assert await q2.put("y" * 60_000, "b") is QueueVerdict.OVERFLOW
    assert (first.cut, second.cut) == (0, 1)
    assert queued_in_process() == before + 60_000
    await q1.close()
    assert queued_in_process() == before


async def test_byte_bound_holds_on_a_server_that_reports_no_backlog() -> None:
    """Stock servers report no backlog: SendWatch counts a send the server holds (uvicorn
    waits while its transport is paused) as a full one, so the byte bound holds there."""
    held = asyncio.get_running_loop().create_future()

    async def paused_server(message: dict[str, object]) -> None:
        await held  # a client that does not read: the transport stays paused

    watch = SendWatch(paused_server)

    async def send(frame: str) -> None:
        await watch.send({"type": "websocket.send", "text": frame})

    t = Transport()
    q = SendQueue(send, watch.backlog, t.overflow, 1000, 60.0,
                  max_bytes=100_000, process_max_bytes=2**40)
    try:
        assert await q.put("x" * 60_000, "a") is QueueVerdict.SENT  # held by the server
        assert await q.put("y" * 60_000, "a") is QueueVerdict.QUEUED
        assert await q.put("z" * 60_000, "a") is QueueVerdict.OVERFLOW
        assert t.cut == 1
    finally:
        watch.cancel()


@pytest.mark.parametrize("ping_id", ["x" * (PING_ID_MAX_CHARS + 1), 10**PING_ID_MAX_CHARS])
def test_ping_with_a_long_id_is_bad_frame(ping_id: str | int) -> None:
    """A `pong` echoes its `id`: one longer than the documented limit is refused."""
    with pytest.raises(FrameError) as refused:
        parse_frame(json.dumps({"type": "ping", "id": ping_id}))
    assert refused.value.code is ErrorCode.BAD_FRAME


def test_ping_with_an_id_at_the_limit_is_answered() -> None:
    """An id of PING_ID_MAX_CHARS characters is still a ping."""
    frame = parse_frame(json.dumps({"type": "ping", "id": "x" * PING_ID_MAX_CHARS}))
    assert frame == Ping("x" * PING_ID_MAX_CHARS)


# -- against a real daphne and Redis -------------------------------------------------------


@pytest.fixture(scope="module")
def server(redis_client: redis.Redis) -> Iterator[PrivateStack]:
    """A daphne of this module's own (its memory is what is measured), no worker."""
    with private_stack(worker=False) as running:
        yield running


@pytest.fixture
def big_task(server: PrivateStack) -> Iterator[str]:
    """A finished task whose record holds a ~60 KB result, in the server's key space."""
    task_id = f"big-{secrets.token_hex(6)}"
    with override_settings(TASKPULSE_KEY_PREFIX=server.prefix):
        store = PublishingStore(sync_client())
        store.publish(EventDraft(task_id, State.SUCCESS, name="big",
                                 result_json=dumps("r" * RESULT_CHARS)))
        yield task_id
        store.delete(task_id)


async def never_reading(server: PrivateStack, frame: str, deadline: float) -> int:
    """Send `frame` every SEND_INTERVAL s from a socket that never reads, until `deadline`,
    opening another whenever the server cuts one off; how many were cut off."""
    cut = 0
    port = server.ports[0]
    while time.monotonic() < deadline:
        sock = small_window_socket(port)
        client_port = sock.getsockname()[1]
        async with websockets.connect(server.ws(), sock=sock, max_queue=1, ping_interval=None,
                                      close_timeout=1, open_timeout=10) as conn:
            try:
                while time.monotonic() < deadline:
                    await conn.send(frame)
                    await asyncio.sleep(SEND_INTERVAL)
                    if not server_holds(port, client_port):
                        raise ConnectionResetError("the server dropped the connection")
            except (websockets.ConnectionClosed, OSError):
                cut += 1
    return cut


async def well_behaved(server: PrivateStack, task_id: str, deadline: float) -> int:
    """Subscribe and ping once a second until `deadline`, checking every answer; how
    many rounds were answered."""
    rounds = 0
    async with connect(server.ws()) as conn:
        ws = Ws(conn)
        while time.monotonic() < deadline:
            await ws.subscribe(task_id, issue_token(task_id))
            snapshot = await ws.recv(timeout=5)
            assert snapshot["type"] == "snapshot" and len(snapshot["result"]) == RESULT_CHARS
            await ws.send({"type": "ping", "id": rounds})
            assert await ws.recv(timeout=5) == {"type": "pong", "id": rounds}
            rounds += 1
            await asyncio.sleep(1.0)
    return rounds


async def peak_rss(pid: int, deadline: float) -> int:
    peak = rss_kib(pid)
    while time.monotonic() < deadline:
        await asyncio.sleep(SAMPLE_INTERVAL)
        peak = max(peak, rss_kib(pid))
    return peak


@pytest.mark.integration
async def test_a_long_ping_id_is_refused(server: PrivateStack) -> None:
    """A ping whose id is over the limit gets `bad_frame`, not a pong echoing it; the
    connection stays open."""
    async with connect(server.ws()) as conn:
        ws = Ws(conn)
        await ws.send({"type": "ping", "id": "x" * (PING_ID_MAX_CHARS + 1)})
        refused = await ws.recv()
        await ws.send({"type": "ping", "id": "x" * PING_ID_MAX_CHARS})
        answered = await ws.recv()
    assert refused["type"] == "error" and refused["code"] == ErrorCode.BAD_FRAME.value
    assert answered == {"type": "pong", "id": "x" * PING_ID_MAX_CHARS}


@pytest.mark.integration
async def test_never_reading_sockets_cost_bounded_memory(server: PrivateStack,
                                                         big_task: str) -> None:
    """A never-reading socket re-subscribing to a task with a 60 KB result, and another
    sending 60 KB pings, both within the rate limit for 20 s: the server's memory grows
    less than 15 MB, the subscriber is cut off (again after each reconnect), and a
    client that reads is served throughout."""
    pid = server.webs[0].pid
    await well_behaved(server, big_task, time.monotonic() + 2)  # warm the code paths
    baseline = rss_kib(pid)
    deadline = time.monotonic() + ATTACK_SECONDS
    subscribe = json.dumps({"type": "subscribe", "task_id": big_task,
                            "token": issue_token(big_task)})
    ping = json.dumps({"type": "ping", "id": "p" * RESULT_CHARS})
    cut, _, rounds, peak = await asyncio.gather(
        never_reading(server, subscribe, deadline), never_reading(server, ping, deadline),
        well_behaved(server, big_task, deadline), peak_rss(pid, deadline + 2))
    assert peak - baseline < RSS_GROWTH_LIMIT_KIB, (baseline, peak)
    assert cut >= 1
    assert rounds >= ATTACK_SECONDS / 2
