"""The channel layer: channels_redis' pub/sub layer, lean on the receiving side.

What it changes, and why (figures in docs/BENCHMARKS.md, "Profile"):

- A consumer's own channel is an in-process `Inbox` only, with no Redis
  SUBSCRIBE: nothing sends to it from another process (group events are fanned
  out to it here, and so is `layer.reconnected`). The SUBSCRIBE channels_redis
  does per connection sat on every handshake's path, one at a time behind the
  shard's lock, and cost Redis memory per connection.
- Each Redis server's pub/sub connection is read by consumers/subscriber.py
  (hiredis on the socket's bytes, not redis-py's `get_message` per message).
- A group message is decoded once per PUBLISH and the same dict handed to
  every local member, instead of once per member (handlers must not mutate
  it). The consumer's loop (consumers/base.py) reads its inbox directly.
- Whatever was published while a pub/sub connection was down is gone: once
  it is back and subscribed again, the layer sends `layer.reconnected` to
  every consumer of the process, and each resyncs its subscriptions from the
  record store (consumers/progress.py).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from channels_redis.pubsub import RedisPubSubChannelLayer, RedisPubSubLoopLayer
from channels_redis.utils import _wrap_close

from consumers.inbox import Inbox
from consumers.subscriber import Subscriber

logger = logging.getLogger(__name__)

RECONNECTED_TYPE = "layer.reconnected"


class _LoopLayer(RedisPubSubLoopLayer):  # type: ignore[misc]
    channels: dict[str, Inbox]
    groups: dict[str, set[str]]
    _shards: list[Subscriber]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._shards = [Subscriber(shard.host, self._arrived, self._reconnected)
                        for shard in self._shards]

    def _arrived(self, name: bytes, data: bytes) -> None:
        try:
            message = self.channel_layer.deserialize(data)
        except Exception:
            logger.warning("TaskPulse: dropped an undecodable message on %r", name)
            return
        self.fan_out(name.decode(), message)

    def _reconnected(self) -> None:
        logger.warning("TaskPulse: channel layer reconnected to Redis; resyncing %d consumers",
                       len(self.channels))
        self.fan_out(None, {"type": RECONNECTED_TYPE})

    async def _subscribe_to_channel(self, channel: str) -> None:
        self.channels[channel] = Inbox()

    def fan_out(self, name: str | None, message: dict[str, Any]) -> None:
        """Hand a decoded message to the local channel `name`, or to every
        member of the group channel `name`, or (None) to every local channel."""
        if name is None:
            targets: Any = list(self.channels)
        elif name in self.channels:
            targets = (name,)
        else:
            targets = self.groups.get(name, ())
        for channel in targets:
            inbox = self.channels.get(channel)
            if inbox is not None:
                inbox.put_nowait(message)

    def inbox(self, channel: str) -> Inbox:
        """The queue a consumer's loop reads its channel's messages from."""
        return self.channels[channel]

    def forget(self, channel: str) -> None:
        """Drop a channel whose consumer is gone (Channels' `receive` did it on cancel)."""
        self.channels.pop(channel, None)

    async def send(self, channel: str, message: dict[str, Any]) -> None:
        if channel in self.channels:
            # One of this process's consumers: no Redis subscription exists for
            # it (see above), so deliver here; the round trip through the
            # serializer gives the receiver its own copy, as over Redis.
            serializer = self.channel_layer
            self.fan_out(channel, serializer.deserialize(serializer.serialize(message)))
            return
        await super().send(channel, message)

    async def receive(self, channel: str) -> Any:
        if channel not in self.channels:
            await self._subscribe_to_channel(channel)
        try:
            return await self.channels[channel].get()
        except asyncio.CancelledError:
            self.forget(channel)
            raise


class ResyncingPubSubChannelLayer(RedisPubSubChannelLayer):  # type: ignore[misc]
    def _get_layer(self) -> _LoopLayer:
        loop = asyncio.get_running_loop()
        layer: _LoopLayer | None = self._layers.get(loop)
        if layer is None:
            layer = self._layers[loop] = _LoopLayer(*self._args, **self._kwargs,
                                                     channel_layer=self)
            _wrap_close(self, loop)
        return layer
