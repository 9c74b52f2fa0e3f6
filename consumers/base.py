"""A WebSocket consumer with one loop reading one inbox.

Channels' `AsyncConsumer.__call__` waits on the client and on the channel
layer with `await_many_dispatch`: per message an `asyncio.wait`, a new task
for the next receive, and three event-loop turns between the layer and the
handler. Here the layer puts its messages straight into the consumer's inbox
(consumers/layer.py), one long-lived task copies the client's messages into
the same inbox, and the consumer's own task dispatches them in arrival order:
one turn per message, and nothing created per message (docs/BENCHMARKS.md,
"Profile"). Handlers still run one at a time, as in Channels.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable
from typing import Any

from channels.consumer import get_handler_name
from channels.exceptions import StopConsumer
from channels.generic.websocket import AsyncWebsocketConsumer
from channels.layers import get_channel_layer

from consumers.inbox import Inbox

Receive = Callable[[], Awaitable[dict[str, Any]]]


class _PumpFailed:
    __slots__ = ("error",)

    def __init__(self, error: BaseException) -> None:
        self.error = error


async def _pump(receive: Receive, inbox: Inbox) -> None:
    try:
        while True:
            inbox.put_nowait(await receive())
    except asyncio.CancelledError:
        raise
    except BaseException as exc:  # surface it in the consumer's task, not here
        inbox.put_nowait(_PumpFailed(exc))


class InboxConsumer(AsyncWebsocketConsumer):  # type: ignore[misc]
    async def __call__(self, scope: dict[str, Any], receive: Receive,
                       send: Callable[[dict[str, Any]], Awaitable[None]]) -> None:
        self.scope = scope
        self.base_send = send
        self.channel_layer = get_channel_layer(self.channel_layer_alias)
        own_inbox = None
        if self.channel_layer is not None:
            self.channel_name = await self.channel_layer.new_channel()
            own_inbox = getattr(self.channel_layer, "inbox", None)
        inbox: Inbox = own_inbox(self.channel_name) if own_inbox else Inbox()
        pumps = [asyncio.ensure_future(_pump(receive, inbox))]
        if self.channel_layer is not None and own_inbox is None:
            # another channel layer: read it as Channels does
            pumps.append(asyncio.ensure_future(
                _pump(functools.partial(self.channel_layer.receive, self.channel_name), inbox)))
        try:
            while True:
                message = await inbox.get()
                if isinstance(message, _PumpFailed):
                    raise message.error
                await self.dispatch(message)
        except StopConsumer:
            pass
        finally:
            for pump in pumps:
                pump.cancel()
            if own_inbox is not None:
                self.channel_layer.forget(self.channel_name)

    async def dispatch(self, message: dict[str, Any]) -> None:
        # Not AsyncConsumer.dispatch: it closes stale Django database
        # connections before every message, a thread-pool hop per frame, and
        # TaskPulse's consumers use no database (docs/BENCHMARKS.md, "Profile").
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            raise ValueError(f"no handler for message type {message.get('type')!r}")
        await handler(message)
