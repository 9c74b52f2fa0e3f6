"""A connection's outbound queue: bounded memory for clients that read slowly.

Frames go straight to the server while the client keeps up. When the bytes
the server could not yet write to the socket pass HIGH_WATER (daphne exposes
them through consumers/serve.py; other servers report 0 and never queue),
frames wait here instead: a newer progress-only event of a task replaces
its queued one (PROTOCOL.md §4 rule 5); state changes and final frames are
kept. A client that leaves frames unread too long, or lets too many queue,
is disconnected: it resumes later with `since`/`epoch`.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import Enum

# Bytes the server may hold unwritten for one connection before we queue.
HIGH_WATER = 256 * 1024
DRAIN_POLL = 0.05  # seconds between looks at a backed-up transport

Send = Callable[[str], Awaitable[None]]
SendNow = Callable[[str], bool]  # writes a text frame at once, or says it cannot
Backlog = Callable[[], int]
Overflow = Callable[[], Awaitable[None]]


class QueueVerdict(Enum):
    SENT = "sent"
    QUEUED = "queued"
    OVERFLOW = "overflow"  # the client does not read: it is being disconnected


@dataclass(slots=True)
class _Queued:
    frame: str
    task_id: str | None
    progress_only: bool
    since: float


def no_backlog() -> int:
    return 0


def no_send_now(_frame: str) -> bool:
    return False


class SendQueue:
    # One per connection, idle nearly always: no instance dict, and a deque
    # only while frames wait (docs/BENCHMARKS.md, "Idle connections").
    __slots__ = ("_backlog", "_on_overflow", "_queue", "_send", "_send_now", "_writer",
                 "max_frames", "max_wait", "overflowed")

    def __init__(self, send: Send, backlog: Backlog, on_overflow: Overflow,
                 max_frames: int, max_wait: float, send_now: SendNow = no_send_now) -> None:
        self._send = send
        self._send_now = send_now
        self._backlog = backlog
        self._on_overflow = on_overflow
        self.max_frames = max_frames
        self.max_wait = max_wait
        self._queue: deque[_Queued] | None = None
        self._writer: asyncio.Task[None] | None = None
        self.overflowed = False

    def __len__(self) -> int:
        return len(self._queue) if self._queue else 0

    async def put(self, frame: str, task_id: str | None = None,
                  progress_only: bool = False) -> QueueVerdict:
        if self.overflowed:
            return QueueVerdict.OVERFLOW
        if not self._queue and self._backlog() <= HIGH_WATER:
            if not self._send_now(frame):
                await self._send(frame)
            return QueueVerdict.SENT
        if not (progress_only and self._replace_queued(task_id, frame)):
            if self._queue is None:
                self._queue = deque()
            self._queue.append(_Queued(frame, task_id, progress_only, time.monotonic()))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._drain())
        return await self._check()

    def _replace_queued(self, task_id: str | None, frame: str) -> bool:
        """Coalesce with the task's newest queued frame if that is progress-only too."""
        for item in reversed(self._queue or ()):
            if item.task_id == task_id:
                if item.progress_only:
                    item.frame = frame
                    return True
                return False
        return False

    async def _check(self) -> QueueVerdict:
        oldest = self._queue[0].since if self._queue else None
        too_old = oldest is not None and time.monotonic() - oldest > self.max_wait
        if len(self) > self.max_frames or too_old:
            self.overflowed = True
            self._queue = None
            await self._on_overflow()
            return QueueVerdict.OVERFLOW
        return QueueVerdict.QUEUED

    async def _drain(self) -> None:
        while self._queue:
            if self._backlog() > HIGH_WATER:
                if await self._check() is QueueVerdict.OVERFLOW:
                    return
                await asyncio.sleep(DRAIN_POLL)
                continue
            item = self._queue.popleft()
            if not self._queue:
                self._queue = None
            await self._send(item.frame)

    async def flush(self) -> None:
        """Wait until every queued frame is written (or the queue gave up)."""
        writer = self._writer
        if writer is not None and writer is not asyncio.current_task():
            await asyncio.wait([writer])

    async def close(self) -> None:
        """Stop the writer and forget what is queued (the connection is going away)."""
        self._queue = None
        writer, self._writer = self._writer, None
        if writer is not None and writer is not asyncio.current_task() and not writer.done():
            writer.cancel()
            await asyncio.wait([writer])

# ASGI scope extensions through which the server reports a connection's
# unwritten bytes, and writes a text frame without the ASGI send's layers
# (both set by consumers/serve.py for daphne; other servers use plain `send`).
BACKLOG_EXTENSION = "taskpulse.send_backlog"
SEND_NOW_EXTENSION = "taskpulse.send_text_now"
