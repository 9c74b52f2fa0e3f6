"""A WebSocket consumer on Channels' public API, its client's frames bounded.

`InboxConsumer` is Channels' `AsyncWebsocketConsumer` with two additions, both
on the ASGI API alone and so the same on every server:

- the client's frames read but not handled yet are counted and bounded
  (`ClientBacklog`, TASKPULSE_INBOX_MAX_*): Channels asks for the next frame
  only once the last is handled, and while a handler waits on Redis a flood
  would sit in the server's input queue, unbounded. A reader task copies the
  client's frames into an `Inbox`, counting each in, and closes with FLOODING
  past the bound;
- on a server that reports no send backlog (stock daphne, uvicorn: no
  BACKLOG_EXTENSION in the scope) the consumer measures one itself
  (`SendWatch`): a send the server cannot finish at once (uvicorn waits while
  its transport is paused by a client that does not read) is finished in the
  background, and until it is, the backlog reads as full, so the outbox queues,
  coalesces and bounds what follows (docs/GUARANTEES.md, "Stock daphne and
  uvicorn").

Channels' own `__call__` and `dispatch` run, unless a server installed a
faster loop (consumers/tuning.py ConsumerLoop: the launcher's
consumers/server/consumer_loop.py).
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from channels.generic.websocket import AsyncWebsocketConsumer

from consumers import tuning
from consumers.inbox import Inbox
from consumers.outbox import BACKLOG_EXTENSION, HIGH_WATER
from progress import conf
from progress.wire import close_codes

logger = logging.getLogger(__name__)

Receive = tuning.Receive
Send = tuning.Send


class PumpFailed:
    """What a reader task puts in the inbox when its receive failed."""

    __slots__ = ("error",)

    def __init__(self, error: BaseException) -> None:
        self.error = error


WEBSOCKET_RECEIVE = "websocket.receive"


class ClientBacklog:
    """The client's frames read from the server but not handled yet, bounded
    (TASKPULSE_INBOX_MAX_FRAMES, TASKPULSE_INBOX_MAX_BYTES) before they cost memory:
    the rate limit only sees a frame when it is handled, and a slow handler
    (a Redis read) lets a flooding client queue without end otherwise."""

    __slots__ = ("bytes", "flooded", "frames")

    def __init__(self) -> None:
        self.frames = 0
        self.bytes = 0
        self.flooded = False

    def admit(self, message: dict[str, Any]) -> bool:
        """Count a frame in; False (and flooded from now on) past the bound."""
        if self.flooded:
            return False
        self.frames += 1
        self.bytes += _size(message)
        if self.frames > conf.inbox_max_frames() or self.bytes > conf.inbox_max_bytes():
            self.flooded = True
            return False
        return True

    def handled(self, message: dict[str, Any]) -> None:
        self.frames -= 1
        self.bytes -= _size(message)


def _size(message: dict[str, Any]) -> int:
    return len(message.get("text") or message.get("bytes") or b"")


async def pump(receive: Receive, inbox: Inbox, backlog: ClientBacklog | None = None,
                on_flood: Callable[[], Awaitable[None]] | None = None) -> None:
    """Copy what `receive` returns into `inbox` until cancelled; the client's frames
    counted in `backlog`, and `on_flood` awaited at the frame that passes its bound."""
    try:
        while True:
            message = await receive()
            if (backlog is not None and message.get("type") == WEBSOCKET_RECEIVE
                    and not backlog.admit(message)):
                if backlog.frames and on_flood is not None:
                    # The frame that passed the bound: close now, not once the
                    # handler in progress is done (it may wait on Redis).
                    backlog.frames = backlog.bytes = 0
                    await on_flood()
                continue  # dropped: the connection is being closed for flooding
            inbox.put_nowait(message)
    except asyncio.CancelledError:
        raise
    except BaseException as exc:  # surface it in the consumer's task, not here
        inbox.put_nowait(PumpFailed(exc))


async def next_message(inbox: Inbox, backlog: ClientBacklog) -> dict[str, Any]:
    """The next message for the consumer to handle, the client's counted out."""
    while True:
        message = await inbox.get()
        if isinstance(message, PumpFailed):
            raise message.error
        if message.get("type") == WEBSOCKET_RECEIVE:
            if backlog.flooded:
                continue  # closing for a flood: frames still queued go unhandled
            backlog.handled(message)
        return message  # type: ignore[no-any-return]


async def _finish(step: Coroutine[Any, Any, None], waiting: Any) -> None:
    """Run a coroutine that has already run up to its first suspension (it yielded
    `waiting`, an asyncio future, or None for a bare yield) to its end, as a task does."""
    try:
        while True:
            if waiting is None:
                await asyncio.sleep(0)
            else:
                await asyncio.wait([waiting])  # its outcome is the coroutine's to read
            waiting = step.send(None)
    except StopIteration:
        return
    except asyncio.CancelledError:
        step.close()
        raise


class SendWatch:
    """A send backlog for servers that report none: sends start at once, in the
    caller; one the server cannot finish then (it waits for its transport to
    drain) finishes in the background, and `backlog()` reads as over the outbox's
    HIGH_WATER until it has. Frames stay in order: a frame waits for the one
    before it (the outbox sends none while the backlog is full). What comes after the
    close is dropped, as daphne drops it (uvicorn raises)."""

    __slots__ = ("_closed", "_pending", "_send")

    def __init__(self, send: Send) -> None:
        self._send = send
        self._pending: asyncio.Task[None] | None = None
        self._closed = False

    def backlog(self) -> int:
        return HIGH_WATER + 1 if self._pending is not None else 0

    async def send(self, message: dict[str, Any]) -> None:
        if self._closed:
            return  # uvicorn raises for anything after the close; daphne drops it
        if message["type"] == "websocket.send":
            pending = self._pending
            if pending is not None:
                await asyncio.wait([pending])
        step = self._send(message).__await__()
        try:
            # A close the server refuses raises here, and the socket is not closed.
            waiting = step.send(None)
        except StopIteration:
            self._closed = self._closed or message["type"] == "websocket.close"
            return
        self._closed = self._closed or message["type"] == "websocket.close"
        task = asyncio.ensure_future(_finish(step, waiting))  # type: ignore[arg-type]
        task.add_done_callback(self._finished)
        self._pending = task

    def _finished(self, task: asyncio.Task[None]) -> None:
        if self._pending is task:
            self._pending = None
        if not task.cancelled() and task.exception() is not None:
            # The connection went away while the frame waited: the consumer
            # hears of it as websocket.disconnect.
            logger.debug("TaskPulse: a send failed: %r", task.exception())

    def cancel(self) -> None:
        if self._pending is not None:
            self._pending.cancel()


async def stop_readers(*tasks: asyncio.Future[Any]) -> None:
    """Cancel the reader tasks and wait for them to end, so none outlives its
    connection (and a failure in one is not left unretrieved)."""
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


class InboxConsumer(AsyncWebsocketConsumer):  # type: ignore[misc]
    # Set once the consumer closes the socket: frames still queued behind the
    # close (a flood's) are handled but not answered, since a server refuses a
    # send on a closing socket (autobahn raises) and the client is leaving.
    closing = False

    async def close(self, code: int | None = None, reason: str | None = None) -> None:
        self.closing = True
        await super().close(code, reason)

    async def send(self, text_data: str | None = None, bytes_data: bytes | None = None,
                   close: bool = False) -> None:
        if not self.closing:
            await super().send(text_data, bytes_data, close)

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        watch = None
        if BACKLOG_EXTENSION not in scope.get("extensions", {}):
            watch = SendWatch(send)
            send = watch.send
            scope = {**scope, "extensions": {**scope.get("extensions", {}),
                                             BACKLOG_EXTENSION: watch.backlog}}
        try:
            await self._run(scope, receive, send)
        finally:
            if watch is not None:
                watch.cancel()

    async def _run(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        tuned = tuning.INSTALLED.consumer_loop
        if tuned is not None:
            await tuned.run(self, scope, receive, send)
            return
        await self._run_channels_loop(scope, receive, send)

    async def _run_channels_loop(self, scope: dict[str, Any], receive: Receive,
                                 send: Send) -> None:
        """Channels' own loop, reading the client through the same bounded inbox.

        Channels asks for the client's next frame only once the last one is handled:
        while a handler waits (on Redis, say) a flood would sit in the server's input
        queue, unbounded. A pump reads the client meanwhile and counts each frame in
        (ClientBacklog) before it is queued, so a flood closes as on the tuned loop."""
        inbox = Inbox()
        backlog = ClientBacklog()
        reader = asyncio.ensure_future(pump(receive, inbox, backlog, self.close_flooded))
        try:
            await super().__call__(scope, functools.partial(next_message, inbox, backlog),
                                   send)
        finally:
            await stop_readers(reader)

    async def close_flooded(self) -> None:
        logger.info("TaskPulse: closing a connection whose unhandled frames passed the bound")
        await self.close(close_codes.FLOODING)

    async def dispatch(self, message: dict[str, Any]) -> None:
        tuned = tuning.INSTALLED.consumer_loop
        if tuned is not None:
            await tuned.dispatch(self, message)
            return
        await super().dispatch(message)
