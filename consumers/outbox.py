"""A connection's outbound queue: bounded memory for clients that read slowly.

Frames go straight to the server while the client keeps up. When the bytes
the server could not yet write to the socket pass HIGH_WATER (the launcher
reports them: consumers/server/daphne_server.py; else consumers/base.py SendWatch),
frames wait here instead: a newer progress-only event of a task replaces
its queued one (PROTOCOL.md §4 rule 5); state changes and final frames are
kept. A client that leaves frames unread too long, or lets too many frames or
bytes queue, is disconnected: it resumes later with `since`/`epoch`. The bytes
queued across the process have one budget too: the connection that would pass
it is the one disconnected (docs/GUARANTEES.md, "Memory budget").
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import Enum

# Defined with the SSE stream's, which shares them (HIGH_WATER: the bytes the server
# may hold unwritten for one connection before we queue).
from progress.web.backlog import BACKLOG_EXTENSION as BACKLOG_EXTENSION
from progress.web.backlog import DRAIN_POLL as DRAIN_POLL
from progress.web.backlog import HIGH_WATER as HIGH_WATER
from progress.web.backlog import PROCESS_QUEUED
from progress.web.backlog import Backlog as Backlog
from progress.web.backlog import no_backlog as no_backlog
from progress.wire.coalescing import replaceable

Send = Callable[[str], Awaitable[None]]
SendNow = Callable[[str], bool]  # writes a text frame at once, or says it cannot
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
    size: int


def _task_of(item: _Queued) -> str | None:
    return item.task_id


def _is_progress_only(item: _Queued) -> bool:
    return item.progress_only


def encoded_size(frame: str) -> int:
    """The bytes a text frame is sent as (UTF-8); no copy for ASCII, the common case."""
    return len(frame) if frame.isascii() else len(frame.encode())


_process = PROCESS_QUEUED  # shared with the SSE streams' queues


def queued_in_process() -> int:
    """Bytes waiting in every connection's queue in this process, now."""
    return _process.bytes


def no_send_now(_frame: str) -> bool:
    return False


class SendQueue:
    # One per connection, idle nearly always: no instance dict, and a deque
    # only while frames wait (docs/BENCHMARKS.md, "Idle connections").
    __slots__ = ("_backlog", "_bytes", "_on_overflow", "_queue", "_send", "_send_now",
                 "_writer", "max_bytes", "max_frames", "max_wait", "overflowed",
                 "process_max_bytes")

    def __init__(self, send: Send, backlog: Backlog, on_overflow: Overflow,
                 max_frames: int, max_wait: float, send_now: SendNow = no_send_now, *,
                 max_bytes: int, process_max_bytes: int) -> None:
        self._send = send
        self._send_now = send_now
        self._backlog = backlog
        self._on_overflow = on_overflow
        self.max_frames = max_frames
        self.max_wait = max_wait
        # Frames can be 64 KiB each (a snapshot's result): a frame count alone
        # let 1000 of them, ~60 MB, wait for one client.
        self.max_bytes = max_bytes
        self.process_max_bytes = process_max_bytes
        self._queue: deque[_Queued] | None = None
        self._bytes = 0  # encoded sizes of the frames in _queue
        self._writer: asyncio.Task[None] | None = None
        self.overflowed = False

    def __del__(self) -> None:
        # A connection torn down without close() must not keep its share of
        # the process budget for good.
        self._forget()

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
        size = encoded_size(frame)
        if not (progress_only and self._replace_queued(task_id, frame, size)):
            if self._queue is None:
                self._queue = deque()
            self._queue.append(_Queued(frame, task_id, progress_only, time.monotonic(), size))
            self._count(size)
        if _process.bytes > self.process_max_bytes:
            # This connection asked past the process's budget: it goes, not one
            # whose frames were queued within it.
            return await self._give_up()
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._drain())
        return await self._check()

    def _count(self, size: int) -> None:
        self._bytes += size
        _process.bytes += size

    def _forget(self) -> None:
        """Drop what is queued, and its bytes from the process's count."""
        self._queue = None
        self._count(-self._bytes)

    def _replace_queued(self, task_id: str | None, frame: str, size: int) -> bool:
        """Coalesce with the task's newest queued frame if that is progress-only too."""
        queue = self._queue or ()
        i = replaceable(queue, task_id, _task_of, _is_progress_only)
        if i is None:
            return False
        item = queue[i]
        self._count(size - item.size)
        item.frame, item.size = frame, size
        return True

    async def _check(self) -> QueueVerdict:
        oldest = self._queue[0].since if self._queue else None
        too_old = oldest is not None and time.monotonic() - oldest > self.max_wait
        if len(self) > self.max_frames or self._bytes > self.max_bytes or too_old:
            return await self._give_up()
        return QueueVerdict.QUEUED

    async def _give_up(self) -> QueueVerdict:
        self.overflowed = True
        self._forget()
        await self._on_overflow()
        return QueueVerdict.OVERFLOW

    async def _drain(self) -> None:
        while self._queue:
            if self._backlog() > HIGH_WATER:
                if await self._check() is QueueVerdict.OVERFLOW:
                    return
                await asyncio.sleep(DRAIN_POLL)
                continue
            item = self._queue.popleft()
            self._count(-item.size)
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
        self._forget()
        writer, self._writer = self._writer, None
        if writer is not None and writer is not asyncio.current_task() and not writer.done():
            writer.cancel()
            await asyncio.wait([writer])

# ASGI scope extensions through which the server reports a connection's
# unwritten bytes, and writes a text frame without the ASGI send's layers
# (both set by the launcher, consumers/server/daphne_server.py; others use plain `send`).
SEND_NOW_EXTENSION = "taskpulse.send_text_now"
