"""A WebSocket consumer with one loop reading one inbox.

Channels' `AsyncConsumer.__call__` waits on the client and on the channel
layer with `await_many_dispatch`: per message an `asyncio.wait`, a new task
for the next receive, and three event-loop turns between the layer and the
handler. Here the layer puts its messages straight into the consumer's inbox
(consumers/layer.py), one long-lived task copies the client's messages into
the same inbox, and the consumer's own task dispatches them in arrival order:
one turn per message, and nothing created per message (docs/BENCHMARKS.md,
"Profile"). Handlers still run one at a time, as in Channels.

This replaces what Channels' `__call__` and `dispatch` do, so it runs only
while consumers/compat.py CONSUMER_LOOP finds the Channels release the suite
ran with; otherwise Channels' own loop and dispatch run.

On a server that reports no send backlog (stock daphne, uvicorn: no
BACKLOG_EXTENSION in the scope) the consumer measures one itself
(`SendWatch`): a send the server cannot finish at once (uvicorn waits while
its transport is paused by a client that does not read) is finished in the
background, and until it is, the backlog reads as full, so the outbox queues,
coalesces and bounds what follows (docs/GUARANTEES.md, "Stock daphne and
uvicorn").
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from channels.exceptions import StopConsumer
from channels.generic.websocket import AsyncWebsocketConsumer
from channels.layers import get_channel_layer

from consumers.inbox import Inbox
from consumers.outbox import BACKLOG_EXTENSION, HIGH_WATER
from progress import conf
from progress.compat import enabled
from progress.wire import close_codes

logger = logging.getLogger(__name__)

Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
# Close codes this process's server refused (stock daphne: 1008, 1009).
_refused_close_codes: set[int] = set()


class _PumpFailed:
    __slots__ = ("error",)

    def __init__(self, error: BaseException) -> None:
        self.error = error


WEBSOCKET_RECEIVE = "websocket.receive"


class ClientBacklog:
    """The client's frames read from the server but not handled yet, bounded
    (PROGRESS_INBOX_MAX_FRAMES, PROGRESS_INBOX_MAX_BYTES) before they cost memory:
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


async def _pump(receive: Receive, inbox: Inbox, backlog: ClientBacklog | None = None,
                on_flood: Callable[[], Awaitable[None]] | None = None) -> None:
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
        inbox.put_nowait(_PumpFailed(exc))


def handler_name(message: dict[str, Any]) -> str:
    """The method a message goes to: its type with dots as underscores (as Channels)."""
    if "type" not in message:
        raise ValueError("Incoming message has no 'type' attribute")
    name = str(message["type"]).replace(".", "_")
    if name.startswith("_"):
        raise ValueError("Malformed type in message (leading underscore)")
    return name


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


def _own_loop() -> bool:
    from consumers.compat import CONSUMER_LOOP

    return enabled(CONSUMER_LOOP)


class InboxConsumer(AsyncWebsocketConsumer):  # type: ignore[misc]
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
        if not _own_loop():
            await super().__call__(scope, receive, send)
            return
        self.scope = scope
        self.base_send = send
        self.channel_layer = get_channel_layer(self.channel_layer_alias)
        own_inbox = None
        if self.channel_layer is not None:
            self.channel_name = await self.channel_layer.new_channel()
            self.channel_receive = functools.partial(self.channel_layer.receive,
                                                     self.channel_name)
            own_inbox = getattr(self.channel_layer, "inbox", None)
        inbox: Inbox = own_inbox(self.channel_name) if own_inbox else Inbox()
        backlog = ClientBacklog()
        pumps = [asyncio.ensure_future(_pump(receive, inbox, backlog, self._flooded))]
        if self.channel_layer is not None and own_inbox is None:
            # another channel layer: read it as Channels does
            pumps.append(asyncio.ensure_future(_pump(self.channel_receive, inbox)))
        try:
            while True:
                message = await inbox.get()
                if isinstance(message, _PumpFailed):
                    raise message.error
                if message.get("type") == WEBSOCKET_RECEIVE:
                    if backlog.flooded:
                        continue  # closing for a flood: frames still queued go unhandled
                    backlog.handled(message)
                await self.dispatch(message)
        except StopConsumer:
            pass
        finally:
            for pump in pumps:
                pump.cancel()
            if own_inbox is not None:
                self.channel_layer.forget(self.channel_name)

    async def _flooded(self) -> None:
        logger.info("TaskPulse: closing a connection whose unhandled frames passed the bound")
        await self.close(close_codes.POLICY_VIOLATION)

    async def dispatch(self, message: dict[str, Any]) -> None:
        if not _own_loop():
            await super().dispatch(message)
            return
        # Not AsyncConsumer.dispatch: it closes stale Django database
        # connections before every message, a thread-pool hop per frame, and
        # TaskPulse's consumers use no database (docs/BENCHMARKS.md, "Profile").
        handler = getattr(self, handler_name(message), None)
        if handler is None:
            raise ValueError(f"no handler for message type {message.get('type')!r}")
        await handler(message)

    async def close(self, code: int | None = None, reason: str | None = None) -> None:
        """Close with `code`; a server that refuses it (stock daphne: autobahn lets an
        application send only 1000 and 3000-4999, so 1008/1009 raise) closes with 1000."""
        if code is not None and code in _refused_close_codes:
            code = close_codes.NORMAL
        try:
            await super().close(code, reason)
        except Exception:
            if code in (None, close_codes.NORMAL):
                raise
            if code not in _refused_close_codes:
                _refused_close_codes.add(code)
                logger.warning("TaskPulse: this server refuses WebSocket close code %d; "
                               "closing with 1000 instead (docs/GUARANTEES.md, \"Stock daphne "
                               "and uvicorn\")", code)
            await super().close(close_codes.NORMAL)
