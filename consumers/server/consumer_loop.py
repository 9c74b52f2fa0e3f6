"""The launcher's consumer loop: one loop reading one inbox (consumers/tuning.py ConsumerLoop).

Channels' `AsyncConsumer.__call__` waits on the client and on the channel
layer with `await_many_dispatch`: per message an `asyncio.wait`, a new task
for the next receive, and three event-loop turns between the layer and the
handler. Here TaskPulse's layer puts its messages straight into the consumer's
inbox (consumers/layer.py `inbox`), one long-lived task copies the client's
messages into the same inbox, and the consumer's own task dispatches them in
arrival order: one turn per message, and nothing created per message
(docs/BENCHMARKS.md, "Profile"). Handlers still run one at a time, as in Channels.

It replaces what Channels' `__call__` and `dispatch` do, so the launcher
installs it only while consumers/server/compat.py CONSUMER_LOOP finds in
Channels what it replaces (consumers/server/install.py).
"""

from __future__ import annotations

import asyncio
import functools
from typing import Any

from channels.exceptions import StopConsumer
from channels.layers import get_channel_layer

from consumers.base import ClientBacklog, Receive, Send, next_message, pump, stop_readers
from consumers.inbox import Inbox


def handler_name(message: dict[str, Any]) -> str:
    """The method a message goes to: its type with dots as underscores (as Channels)."""
    if "type" not in message:
        raise ValueError("Incoming message has no 'type' attribute")
    name = str(message["type"]).replace(".", "_")
    if name.startswith("_"):
        raise ValueError("Malformed type in message (leading underscore)")
    return name


class OneInboxLoop:
    """consumers/tuning.py ConsumerLoop: Channels' `__call__` and `dispatch`, leaner."""

    async def run(self, consumer: Any, scope: dict[str, Any], receive: Receive,
                  send: Send) -> None:
        consumer.scope = scope
        consumer.base_send = send
        layer = consumer.channel_layer = get_channel_layer(consumer.channel_layer_alias)
        own_inbox = None
        if layer is not None:
            consumer.channel_name = await layer.new_channel()
            consumer.channel_receive = functools.partial(layer.receive, consumer.channel_name)
            own_inbox = getattr(layer, "inbox", None)
        inbox: Inbox = own_inbox(consumer.channel_name) if own_inbox else Inbox()
        backlog = ClientBacklog()
        readers = [asyncio.ensure_future(pump(receive, inbox, backlog, consumer.close_flooded))]
        if layer is not None and own_inbox is None:
            # another channel layer: read it as Channels does
            readers.append(asyncio.ensure_future(pump(consumer.channel_receive, inbox)))
        try:
            while True:
                await consumer.dispatch(await next_message(inbox, backlog))
        except StopConsumer:
            pass
        finally:
            await stop_readers(*readers)
            if own_inbox is not None:
                layer.forget(consumer.channel_name)

    async def dispatch(self, consumer: Any, message: dict[str, Any]) -> None:
        # Not AsyncConsumer.dispatch: it closes stale Django database
        # connections before every message, a thread-pool hop per frame, and
        # TaskPulse's consumers use no database (docs/BENCHMARKS.md, "Profile").
        handler = getattr(consumer, handler_name(message), None)
        if handler is None:
            raise ValueError(f"no handler for message type {message.get('type')!r}")
        await handler(message)
