"""One Server-Sent Events stream: its tasks, their positions, and the §4 rules.

The stream joins each task's group on the process's TaskPulse channel layer (the
WebSockets' own: one Redis pub/sub connection per shard, whatever the number of
streams), then reads each record (progress/watching.py `Follower`: the same
catch-up rules as `awatch`). A reader task turns what the layer delivers into
SSE messages on a bounded queue (progress/web/sse_queue.py); the response's
iterator writes them, each with an `id:` holding every task's position
(progress/web/resume_ids.py), and ends with `event: end` once all are final.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import redis
from channels.layers import get_channel_layer
from django.core.exceptions import ImproperlyConfigured

from progress import conf
from progress.store import keys
from progress.store.process_store import async_store
from progress.watching import Follower
from progress.web.backlog import DRAIN_POLL, HIGH_WATER, Backlog
from progress.web.resume_ids import START, Position, encode
from progress.web.sse_queue import Message, StreamQueue
from progress.wire import server_frames
from progress.wire.delivery import Verdict
from progress.wire.encoding import dumps
from progress.wire.errors import ErrorCode
from progress.wire.states import State
from progress.wire.types import TaskObject

logger = logging.getLogger(__name__)

# What the channel layer delivers (progress/store/lua.py publishes "task.event";
# consumers/layer.py sends "layer.reconnected" after a lost Redis connection).
TASK_EVENT = "task.event"
LAYER_RECONNECTED = "layer.reconnected"
# What a failed Redis read looks like, whichever layer notices it first.
REDIS_DOWN = (redis.RedisError, ConnectionError, OSError, TimeoutError)
# How long the browser waits before it reconnects a dropped stream (ms).
RETRY_MS = 1000
KEEPALIVE = b": keepalive\n\n"
END = "event: end\ndata: {}\n\n"

# A message's SSE lines for a frame: (kind, frame JSON, the task object or None);
# None leaves the frame out (the HTML format shows objects only).
Render = Callable[[str, str, TaskObject | None], str | None]

# Clean-ups scheduled from Django's response close (another thread): kept until done.
_closing: set[asyncio.Task[None]] = set()


def json_lines(kind: str, frame: str, _task: TaskObject | None) -> str:
    """The JSON format: the WebSocket frame on one `data:` line, its type as `event:`."""
    return f"event: {kind}\ndata: {frame}\n"


class Stream:
    """The tasks of one SSE response, from subscription to clean-up."""

    def __init__(self, tasks: list[str], resume: list[Position] | None, render: Render,
                 backlog: Backlog, on_close: Callable[[], None]) -> None:
        self.tasks = tasks
        self.index = {task: i for i, task in enumerate(tasks)}
        self.followers = [Follower(task) for task in tasks]
        self.resuming = resume is not None
        self.positions = list(resume) if resume is not None else [START] * len(tasks)
        self.done = [position.final for position in self.positions]  # nothing more to queue
        self.render = render
        self.backlog = backlog
        self.on_close = on_close
        self.queue = StreamQueue()
        self.layer: Any = None
        self.channel = ""
        self.store = async_store()
        self.loop = asyncio.get_running_loop()
        self.opened = asyncio.Event()
        self.reader: asyncio.Task[None] | None = None
        self.closed = False

    async def open(self) -> None:
        """Subscribe to every task not yet final, then queue what brings the client up
        to date. Redis errors propagate (the view answers 503); nothing stays behind."""
        alias = conf.channel_layer_alias()
        self.layer = get_channel_layer(alias)
        if self.layer is None:
            raise ImproperlyConfigured(
                f"no channel layer {alias!r}: serve the site's ASGI application with "
                "consumers.routing.websocket_application() (it registers TaskPulse's layer)")
        try:
            self.channel = await self.layer.new_channel("sse.")
            # Started now so that its receive owns the channel's inbox (cancelling it
            # frees the inbox); it reads nothing before the catch-up below is queued.
            self.reader = asyncio.create_task(self._read())
            for i, task in enumerate(self.tasks):
                if self.done[i]:
                    continue
                if self.resuming:
                    self._resume_from(i, self.positions[i])
                # Joined before the record is read: no event falls in between.
                await self.layer.group_add(keys.group_name(task), self.channel)
            for i in range(len(self.tasks)):
                if not self.done[i]:
                    await self._catch_up(i, first=True)
        except BaseException:
            await self.shutdown()
            raise
        self.opened.set()

    def _resume_from(self, i: int, position: Position) -> None:
        sub = self.followers[i].sub
        sub.epoch, sub.last_seq = position.epoch, position.seq
        self.followers[i].unknown_sent = True  # the client has the task's UNKNOWN at least

    async def _catch_up(self, i: int, live_epoch: str | None = None, first: bool = False) -> None:
        follower = self.followers[i]
        since = follower.sub.last_seq
        objects = await follower.catch_up(self.store, live_epoch)
        if follower.from_history:
            if first:  # the resume the client asked for
                epoch = follower.sub.epoch or ""
                self._put(i, "resumed", server_frames.resumed(self.tasks[i], epoch, since),
                          None, Position(epoch, since, False))
            for event in objects:
                self._put_object(i, "event", event)
        else:
            for current in objects:
                self._put_object(i, "snapshot", current, reset=not first or self.resuming)

    async def _catch_up_or_report(self, i: int, live_epoch: str | None = None) -> None:
        try:
            await self._catch_up(i, live_epoch)
        except asyncio.CancelledError:
            raise
        except REDIS_DOWN as exc:
            # The next live event (or the layer's reconnect) tries again.
            logger.warning("TaskPulse SSE: catching up %s failed: %s", self.tasks[i], exc)
            self.followers[i].sub.stale = True
            frame = server_frames.error(ErrorCode.UNAVAILABLE,
                                        "missed events could not be read yet; they are sent "
                                        "when the store answers", self.tasks[i])
            self._put(i, "error", frame, None, None)

    def _put_object(self, i: int, kind: str, task: TaskObject, reset: bool = False,
                    encoded: str | None = None) -> None:
        sub = self.followers[i].sub
        progress_only = (kind == "event" and task["state"] == State.PROGRESS
                         and sub.last_state == State.PROGRESS)
        sub.last_state = task["state"]
        frame = server_frames.object_frame(kind, encoded or dumps(task), reset)
        self._put(i, kind, frame, task, Position(task["epoch"], task["seq"], task["final"]),
                  progress_only)
        if task["final"]:
            self.done[i] = True

    def _put(self, i: int, kind: str, frame: str, task: TaskObject | None,
             position: Position | None, progress_only: bool = False) -> None:
        text = self.render(kind, frame, task)
        if text is None:
            if position is None:
                return
            text = ""  # nothing to show, but the position moves on
        size = len(text) if text.isascii() else len(text.encode())
        self.queue.put(Message(text, i, position, progress_only, size))

    async def _read(self) -> None:
        await self.opened.wait()
        while True:
            message = await self.layer.receive(self.channel)
            if self.queue.overflowed:
                continue  # cut off: only the clean-up is left
            try:
                await self._handle(message)
            except asyncio.CancelledError:
                raise
            except Exception:
                # Never a stream that silently stops: cut it, and the client resumes.
                logger.exception("TaskPulse SSE: failed on %s; cutting the stream",
                                 message.get("type"))
                self.queue.give_up()

    async def _handle(self, message: dict[str, Any]) -> None:
        kind = message.get("type")
        if kind == TASK_EVENT:
            await self._live(message)
        elif kind == LAYER_RECONNECTED:
            # Whatever was published while Redis was away is gone: catch up.
            for i in range(len(self.tasks)):
                if not self.done[i]:
                    await self._catch_up_or_report(i)

    async def _live(self, message: dict[str, Any]) -> None:
        i = self.index.get(message["task_id"])
        if i is None or self.done[i]:
            return
        verdict, event = self.followers[i].live(message)
        if verdict is Verdict.FORWARD and event is not None:
            # A final task's group is left at the stream's end (shutdown): its events
            # meanwhile are dropped above.
            self._put_object(i, "event", event, encoded=message["data"])
        elif verdict is Verdict.RESYNC:
            await self._catch_up_or_report(i, message["epoch"])

    async def __aiter__(self) -> AsyncIterator[bytes]:
        """The response body: `retry:`, then the messages, then `end` (or a cut)."""
        try:
            yield f"retry: {RETRY_MS}\n\n".encode()
            keepalive = conf.sse_keepalive() or None
            while True:
                await self.queue.wait(keepalive)
                if not await self._client_keeps_up():
                    return  # cut: the client resumes with Last-Event-ID
                taken = self.queue.take()
                if not taken:
                    yield KEEPALIVE
                    continue
                chunk = [self._with_id(message) for message in taken]
                finished = all(position.final for position in self.positions)
                if finished:
                    chunk.append(END)
                    # Before the last write, not after it: the client closes as soon as
                    # it reads `end`, and the response's own end must follow at once.
                    await self.shutdown()
                self.queue.backed_up = True  # until the server took the chunk
                yield "".join(chunk).encode()
                self.queue.backed_up = False
                if finished:
                    return
        finally:
            await self.shutdown()

    async def _client_keeps_up(self) -> bool:
        """Wait while the server holds too much unwritten (tuned daphne reports it; other
        servers' sends wait instead); False once the queue gave up."""
        while not self.queue.overflowed and self.backlog() > HIGH_WATER:
            self.queue.backed_up = True
            if self.queue.too_old():
                self.queue.give_up()
                break
            await asyncio.sleep(DRAIN_POLL)
        self.queue.backed_up = False
        if self.queue.overflowed:
            logger.info("TaskPulse SSE: cutting a stream whose client stopped reading")
            return False
        return True

    def _with_id(self, message: Message) -> str:
        if message.task is not None and message.position is not None:
            self.positions[message.task] = message.position
        return f"{message.text}id: {encode(self.positions)}\n\n"

    def close(self) -> None:
        """Django's clean-up of the response (from a worker thread): make sure the
        subscriptions go even when the body was never iterated (an early disconnect)."""
        if not self.closed:
            self.loop.call_soon_threadsafe(self._shutdown_later)

    def _shutdown_later(self) -> None:
        if not self.closed:
            task = self.loop.create_task(self.shutdown())
            _closing.add(task)
            task.add_done_callback(_closing.discard)

    async def shutdown(self) -> None:
        """Leave every group, stop the reader, free the queue; once."""
        if self.closed:
            return
        self.closed = True
        self.queue.give_up()
        try:
            if self.reader is not None:
                self.reader.cancel()
                await asyncio.wait([self.reader])
            if self.layer is not None and self.channel:
                for task in self.tasks:
                    with contextlib.suppress(*REDIS_DOWN):
                        await self.layer.group_discard(keys.group_name(task), self.channel)
        finally:
            self.on_close()
