"""Follow a task from Python: `awatch(task_id)` (async) and `watch(task_id)` (sync).

For code that reaches TaskPulse's Redis (a script, a test, a notebook, a view
that waits): each yields the task's PROTOCOL.md §3 objects in order, the
current one first, until the final one, with the guarantees of §4:

- subscribed to the task's channel before its record is read, so nothing falls
  between the first object and the live ones; an event seen twice is dropped;
- a gap (a dropped message, a lost Redis connection) is filled from the task's
  history, or, when history cannot cover it or the task took a new epoch, the
  task's current object comes next (its `seq` jumps, as after a `reset`
  snapshot);
- a lost Redis connection (a restart, a fail-over) is retried with growing
  pauses, for as long as the caller's `timeout` allows.

The delivery rules are PROTOCOL.md's (progress/wire/delivery.py), shared with
the WebSocket consumer. Code on another machine follows a task over the
WebSocket instead: progress/watching_remote.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterator
from typing import Any

import msgpack
import redis

from progress.store import keys, shards
from progress.store.connections import async_client, async_clients
from progress.store.process_store import async_store
from progress.store.records import AsyncRecordStore
from progress.wire.delivery import Subscription, Verdict, judge
from progress.wire.ids import is_valid_task_id
from progress.wire.objects import unknown_object
from progress.wire.types import TaskObject

logger = logging.getLogger(__name__)

# Pauses between attempts to reach Redis again, the last one repeated.
RECONNECT_PAUSES = (0.1, 0.25, 0.5, 1.0, 2.0)
# How often a wait for the next message wakes to check the caller's deadline.
POLL = 1.0
# What a lost connection looks like, whichever redis-py layer notices it first.
CONNECTION_LOST = (redis.ConnectionError, redis.TimeoutError, ConnectionError, OSError)


class Follower:
    """One task's position and the §4 rules that move it (shared with the
    Server-Sent Events stream, progress/web/sse_stream.py)."""

    def __init__(self, task_id: str) -> None:
        self.sub = Subscription(task_id, None, 0)
        self.unknown_sent = False
        # Whether the last catch_up's objects are missed events from history (the
        # position held) rather than the record's current object.
        self.from_history = False

    async def catch_up(self, store: AsyncRecordStore,
                       live_epoch: str | None = None) -> list[TaskObject]:
        """The objects that bring the caller up to date from the record."""
        sub = self.sub
        resuming = sub.epoch is not None and live_epoch in (None, sub.epoch)
        found = await store.read(sub.task_id, sub.last_seq if resuming else None)
        sub.stale = False
        self.from_history = False
        snapshot = found.snapshot
        if snapshot is None:
            sub.epoch, sub.last_seq = None, 0
            if self.unknown_sent:
                return []
            self.unknown_sent = True
            return [unknown_object(sub.task_id)]
        if resuming and snapshot.epoch == sub.epoch and found.missed is not None:
            missed: list[TaskObject] = [json.loads(text) for text in found.missed]
            fresh = [event for event in missed if event["seq"] > sub.last_seq]
            self.from_history = True
            if fresh:
                sub.last_seq = fresh[-1]["seq"]
            return fresh
        current: TaskObject = json.loads(snapshot.json)
        sub.epoch, sub.last_seq = snapshot.epoch, snapshot.seq
        return [current]

    def live(self, message: dict[str, Any]) -> tuple[Verdict, TaskObject | None]:
        """What to do with a published event (progress/wire/types.py TaskEventMessage)."""
        verdict = judge(self.sub, message["epoch"], message["seq"])
        if verdict is not Verdict.FORWARD:
            return verdict, None
        self.sub.epoch, self.sub.last_seq = message["epoch"], message["seq"]
        event: TaskObject = json.loads(message["data"])
        return verdict, event


class Deadline:
    """A watch's `timeout`, checked at every wait (not an asyncio.timeout around the
    generator: that would cancel the caller's task between two objects)."""

    def __init__(self, timeout: float | None) -> None:
        self.at = None if timeout is None else time.monotonic() + timeout

    def left(self) -> float | None:
        """Seconds left (None: no deadline); TimeoutError once it passed."""
        if self.at is None:
            return None
        left = self.at - time.monotonic()
        if left <= 0:
            raise TimeoutError("the task did not reach a final state in time")
        return left

    def bounded(self, wait: float) -> float:
        """`wait`, or less when the deadline comes first."""
        left = self.left()
        return wait if left is None else min(wait, left)


async def _subscribed(pubsub: Any, channel: str, deadline: Deadline) -> None:
    """SUBSCRIBE, and wait for Redis to confirm it: only then is reading the record safe."""
    await pubsub.subscribe(channel)
    while True:
        message = await pubsub.get_message(timeout=deadline.bounded(POLL))
        if message is not None and message["type"] == "subscribe":
            return


async def awatch(task_id: str, *,
                 timeout: float | None = None) -> AsyncGenerator[TaskObject, None]:
    """The task's §3 objects in order, the current one first, until the final one.

    A task with no record yields one UNKNOWN object and goes on waiting for it.
    `timeout` (seconds) bounds the whole watch: TimeoutError past it.
    """
    if not is_valid_task_id(task_id):
        raise ValueError(f"not a task id: {task_id!r} (PROTOCOL.md §1)")
    deadline = Deadline(timeout)
    follower = Follower(task_id)
    channel = keys.group_channel(task_id)
    failures = 0
    while True:
        pubsub = async_client(shards.shard_of(task_id)).pubsub()
        try:
            await _subscribed(pubsub, channel, deadline)
            store = async_store()
            for found in await follower.catch_up(store):
                yield found
                if found["final"]:
                    return
            failures = 0
            while True:
                message = await pubsub.get_message(ignore_subscribe_messages=True,
                                                   timeout=deadline.bounded(POLL))
                if message is None or message["type"] != "message":
                    continue
                published = msgpack.unpackb(message["data"])
                verdict, event = follower.live(published)
                if verdict is Verdict.RESYNC:
                    caught_up = await follower.catch_up(store, published["epoch"])
                else:
                    caught_up = [event] if event is not None else []
                for found in caught_up:
                    yield found
                    if found["final"]:
                        return
        except CONNECTION_LOST as exc:
            # Whatever was published meanwhile is gone: resubscribe, then catch up
            # from the record (history, or the current object).
            pause = RECONNECT_PAUSES[min(failures, len(RECONNECT_PAUSES) - 1)]
            failures += 1
            logger.info("TaskPulse: watching %s: Redis unreachable (%s); again in %.2fs",
                        task_id, exc, pause)
            await asyncio.sleep(deadline.bounded(pause))
        finally:
            with contextlib.suppress(*CONNECTION_LOST):
                await pubsub.aclose()  # type: ignore[no-untyped-call]


def watch(task_id: str, *, timeout: float | None = None) -> Iterator[TaskObject]:
    """`awatch` for synchronous code: the same objects, on a private event loop.

    Not for code already inside an event loop (a notebook cell runs in one):
    use `async for ... in awatch(...)` there.
    """
    return on_private_loop(awatch(task_id, timeout=timeout), _close_clients)


def on_private_loop(objects: AsyncGenerator[TaskObject, None],
                    cleanup: Callable[[], Awaitable[None]] | None = None,
                    ) -> Iterator[TaskObject]:
    """Iterate an async generator of objects from synchronous code, on an event loop
    of its own; `cleanup` runs on that loop at the end."""
    loop = asyncio.new_event_loop()
    try:
        while True:
            try:
                yield loop.run_until_complete(anext(objects))
            except StopAsyncIteration:
                return
    finally:
        loop.run_until_complete(objects.aclose())
        if cleanup is not None:
            loop.run_until_complete(cleanup())
        loop.close()


async def _close_clients() -> None:
    """Close the Redis clients a private loop opened (they live per event loop)."""
    for client in async_clients():
        await client.aclose()
