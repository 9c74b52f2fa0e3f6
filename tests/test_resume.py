"""Resume, gap repair and reset (PROTOCOL.md §4 guarantees) against real processes."""

import asyncio
import json
import random
import re
import signal
import time
from collections.abc import Iterator
from typing import Any

import msgpack
import pytest
import redis

from progress.publisher import publish, store
from progress.store import keys, lua
from progress.store.connections import sync_client
from progress.store.records import EventDraft, event_args
from progress.tokens import issue_token
from progress.wire.event_json import progress_json
from progress.wire.states import State
from tests.client import Http, Ws, connect
from tests.conftest import Stack
from tests.faultkit import PrivateStack, Watcher, private_stack, watch_until_final

pytestmark = pytest.mark.integration

CHURN_TASKS = 200
CHURN_CLIENTS = 20


@pytest.fixture(scope="module")
def fault_stack(redis_client: redis.Redis) -> Iterator[PrivateStack]:
    with private_stack(concurrency=4) as running:
        yield running


@pytest.fixture
def task_id(request: pytest.FixtureRequest) -> Iterator[str]:
    name = re.sub(r"[^A-Za-z0-9_.-]", "-", request.node.name)
    tid = f"resume-{name}-{random.randrange(10**9)}"[-80:]
    yield tid
    store().delete(tid)


def progress(task_id: str, current: int) -> EventDraft:
    return EventDraft(task_id, State.PROGRESS, name="t",
                      progress=progress_json(current, 10, None, None, "{}"))


def publish_unheard(draft: EventDraft) -> None:
    """Record an event whose live message is lost (as in a channel-layer drop)."""
    args = event_args(draft)
    event = msgpack.unpackb(args.argument)
    event["channel"] = "nobody-listens-here"
    sync_client().register_script(lua.PUBLISH)(keys=args.keys, args=[msgpack.packb(event)])


async def next_for(ws: Ws, task_id: str) -> dict[str, Any]:
    while (frame := await ws.recv())["task_id"] != task_id:
        pass
    return frame


async def test_missed_live_event_is_backfilled(stack: Stack, task_id: str) -> None:
    """A live event that skips ahead makes the server fill the gap from history, in order."""
    publish(EventDraft(task_id, State.STARTED, name="t"))
    async with connect(stack.ws) as conn:
        ws = Ws(conn)
        await ws.subscribe(task_id, issue_token(task_id))
        assert (await next_for(ws, task_id))["seq"] == 1
        publish_unheard(progress(task_id, 1))
        publish_unheard(progress(task_id, 2))
        publish(progress(task_id, 3))
        publish(EventDraft(task_id, State.SUCCESS))
        frames = await ws.frames_until_final(task_id)
    assert [(f["type"], f["seq"]) for f in frames] == [("event", s) for s in (2, 3, 4, 5)]
    assert [f["progress"]["current"] for f in frames[:3]] == [1, 2, 3]


async def test_gap_beyond_history_sends_reset_snapshot(stack: Stack, task_id: str) -> None:
    """When history no longer covers a gap, the server sends a reset snapshot instead."""
    publish(EventDraft(task_id, State.STARTED, name="t"))
    async with connect(stack.ws) as conn:
        ws = Ws(conn)
        await ws.subscribe(task_id, issue_token(task_id))
        await next_for(ws, task_id)
        publish_unheard(progress(task_id, 1))
        sync_client().delete(keys.history_key(task_id))
        publish(progress(task_id, 2))
        frame = await next_for(ws, task_id)
    assert frame["type"] == "snapshot" and frame["reset"] is True and frame["seq"] == 3


async def test_resume_replays_missed_events(stack: Stack, task_id: str) -> None:
    """subscribe with since/epoch answers `resumed` at `since`, then exactly the missed events."""
    first = publish(EventDraft(task_id, State.STARTED, name="t"))
    for i in range(1, 4):
        publish(progress(task_id, i))
    snap = store().read(task_id).snapshot
    assert snap is not None and first.seq == 1
    async with connect(stack.ws) as conn:
        ws = Ws(conn)
        await ws.subscribe(task_id, issue_token(task_id), since=1, epoch=snap.epoch)
        resumed = await next_for(ws, task_id)
        replay = [await next_for(ws, task_id) for _ in range(3)]
    assert resumed == {"type": "resumed", "task_id": task_id, "epoch": snap.epoch, "seq": 1}
    assert [f["seq"] for f in replay] == [2, 3, 4]


async def test_resume_at_the_final_event_ends_the_subscription(stack: Stack,
                                                              task_id: str) -> None:
    """A client resuming at the final seq gets `resumed` and nothing more."""
    publish(EventDraft(task_id, State.STARTED, name="t"))
    publish(EventDraft(task_id, State.SUCCESS))
    snap = store().read(task_id).snapshot
    assert snap is not None
    async with connect(stack.ws) as conn:
        ws = Ws(conn)
        await ws.subscribe(task_id, issue_token(task_id), since=2, epoch=snap.epoch)
        assert (await next_for(ws, task_id))["type"] == "resumed"
        await ws.send({"type": "ping", "id": 1})
        assert await ws.recv() == {"type": "pong", "id": 1}


@pytest.mark.parametrize("why", ["other-epoch", "history-gone", "record-gone"])
async def test_resume_that_cannot_be_served_resets(stack: Stack, task_id: str, why: str) -> None:
    """A resume with another epoch, or past the history, or of a lost record, gets a reset."""
    publish(EventDraft(task_id, State.STARTED, name="t"))
    publish(progress(task_id, 1))
    snap = store().read(task_id).snapshot
    assert snap is not None
    epoch = "someotherepoch" if why == "other-epoch" else snap.epoch
    if why == "history-gone":
        sync_client().delete(keys.history_key(task_id))
    if why == "record-gone":
        store().delete(task_id)
    async with connect(stack.ws) as conn:
        ws = Ws(conn)
        await ws.subscribe(task_id, issue_token(task_id), since=1, epoch=epoch)
        frame = await next_for(ws, task_id)
    assert frame["type"] == "snapshot" and frame["reset"] is True
    assert frame["state"] == ("UNKNOWN" if why == "record-gone" else "PROGRESS")


async def churn_client(url: str, tokens: dict[str, str], watcher: Watcher,
                       rng: random.Random, deadline: float) -> int:
    """Watch `tokens`' tasks, dropping the connection after a random number of frames."""
    drops = 0
    while set(tokens) - set(watcher.final):
        if time.monotonic() > deadline:
            raise TimeoutError(f"not final: {set(tokens) - set(watcher.final)}")
        async with connect(url) as conn:
            for task_id, token in tokens.items():
                if task_id not in watcher.final:
                    await conn.send(json.dumps({"type": "subscribe", "task_id": task_id,
                                                "token": token, **watcher.resume_args(task_id)}))
            for _ in range(rng.randint(1, 12)):
                if not set(tokens) - set(watcher.final):
                    break
                raw = await asyncio.wait_for(conn.recv(), max(0.01, deadline - time.monotonic()))
                watcher.check(json.loads(raw))
            drops += 1
    return drops


async def test_churn_with_random_disconnects(fault_stack: PrivateStack) -> None:
    """200 tasks, watched by clients that hang up at random points and resume: every task's
    final state is seen, without gaps or duplicates."""
    http = Http(fault_stack.http())
    tokens = http.start_many(CHURN_TASKS, steps=6, delay=0.02)
    ids = list(tokens)
    rng = random.Random(20261121)
    deadline = time.monotonic() + 120
    watchers = [Watcher() for _ in range(CHURN_CLIENTS)]
    shares = [{t: tokens[t] for t in ids[i::CHURN_CLIENTS]} for i in range(CHURN_CLIENTS)]
    drops = await asyncio.gather(*(
        churn_client(fault_stack.ws(), share, w, random.Random(rng.random()), deadline)
        for share, w in zip(shares, watchers, strict=True)))
    assert sum(drops) > CHURN_CLIENTS  # the clients really did hang up mid-way
    for share, w in zip(shares, watchers, strict=True):
        assert w.violations == []
        assert {t: f["state"] for t, f in w.final.items()} == dict.fromkeys(share, "SUCCESS")


async def test_daphne_restart_mid_run(fault_stack: PrivateStack) -> None:
    """The server process is killed and restarted while tasks run: clients reconnect, resume
    and see SUCCESS."""
    http = Http(fault_stack.http())
    tokens = http.start_many(8, steps=40, delay=0.1)
    watcher = Watcher()
    watching = asyncio.create_task(watch_until_final(fault_stack.ws(), tokens, watcher, 60))
    try:
        await asyncio.sleep(1.5)  # the clients are mid-way through the tasks
        await asyncio.to_thread(fault_stack.restart_web, 0, signal.SIGKILL)  # no goodbyes
        await asyncio.wait_for(asyncio.shield(watching), 60)
    finally:
        if not watching.done():
            watching.cancel()
            await asyncio.wait([watching])
    assert watcher.violations == []
    assert {t: f["state"] for t, f in watcher.final.items()} == dict.fromkeys(tokens, "SUCCESS")
    assert watching.result() >= 2  # the clients did lose the server and reconnect
