"""An SSE stream's outbound queue: what the stream has for its client and the client
has not yet taken, bounded like a WebSocket's (consumers/outbox.py, PROTOCOL.md §4
rule 5).

While the client is behind (the stream's write is pending, or the server holds
too much unwritten), a newer progress-only message of a task replaces its queued
one; state changes and final objects are kept. Past
TASKPULSE_SEND_QUEUE_MAX_FRAMES / _MAX_BYTES, the process's budget
(TASKPULSE_SEND_QUEUE_PROCESS_MAX_BYTES, shared with the WebSockets), or with a
message unread for TASKPULSE_SLOW_READER_TIMEOUT, the queue gives up: the stream
is cut and the client resumes with Last-Event-ID.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from dataclasses import dataclass

from progress import conf
from progress.web.backlog import PROCESS_QUEUED
from progress.web.resume_ids import Position


@dataclass(slots=True)
class Message:
    text: str  # the SSE lines (event, data), without the id and the blank line
    task: int | None  # the task's index on the stream (None: not a task's)
    position: Position | None  # where the task stands once the client has this
    progress_only: bool
    size: int
    since: float = 0.0


class StreamQueue:
    __slots__ = ("_bytes", "_items", "_ready", "backed_up", "max_bytes", "max_frames",
                 "max_wait", "overflowed")

    def __init__(self) -> None:
        self._items: deque[Message] = deque()
        self._bytes = 0
        self._ready = asyncio.Event()
        self.max_frames = conf.send_queue_max_frames()
        self.max_bytes = conf.send_queue_max_bytes()
        self.max_wait = conf.slow_reader_timeout()
        self.overflowed = False
        # Set by the stream while its client is behind: only then may progress coalesce
        # (PROTOCOL.md §4 rule 5: a reader that keeps up sees every event).
        self.backed_up = False

    def put(self, message: Message) -> None:
        if self.overflowed:
            return
        message.since = time.monotonic()
        if not (message.progress_only and self.backed_up and self._replace_queued(message)):
            self._items.append(message)
            self._count(message.size)
        if (len(self._items) > self.max_frames or self._bytes > self.max_bytes
                or PROCESS_QUEUED.bytes > conf.send_queue_process_max_bytes()
                or self.too_old()):
            self.give_up()
        self._ready.set()

    def _replace_queued(self, message: Message) -> bool:
        for item in reversed(self._items):
            if item.task == message.task:
                if not item.progress_only:
                    return False
                self._count(message.size - item.size)
                item.text, item.position, item.size = message.text, message.position, message.size
                return True
        return False

    def _count(self, size: int) -> None:
        self._bytes += size
        PROCESS_QUEUED.bytes += size

    def too_old(self) -> bool:
        return bool(self._items) and time.monotonic() - self._items[0].since > self.max_wait

    def give_up(self) -> None:
        """Drop what is queued (the stream is cut; its client resumes)."""
        self.overflowed = True
        self._items.clear()
        self._count(-self._bytes)
        self._ready.set()

    async def wait(self, timeout: float | None) -> None:
        """Until a message is queued (or the queue gave up), at most `timeout` seconds."""
        if self._items or self.overflowed:
            return
        self._ready.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._ready.wait(), timeout)

    def take(self) -> list[Message]:
        taken = list(self._items)
        self._items.clear()
        self._count(-self._bytes)
        return taken
