"""The channel layer: channels_redis' pub/sub layer that says when Redis came back.

redis-py re-subscribes a pub/sub connection by itself after a reconnect, but
whatever was published while it was away is gone. This layer then sends
`layer.reconnected` to every consumer of the process, and each resyncs its
subscriptions from the record store (consumers/progress.py).
"""

from __future__ import annotations

import asyncio
import collections
import functools
import logging
from collections.abc import Callable
from typing import Any

from channels_redis.pubsub import (
    RedisPubSubChannelLayer,
    RedisPubSubLoopLayer,
    RedisSingleShardConnection,
)
from redis.asyncio.client import PubSub

logger = logging.getLogger(__name__)

RECONNECTED_TYPE = "layer.reconnected"


class _ReconnectAwarePubSub(PubSub):
    def __init__(self, pool: Any, on_reconnect: Callable[[], None]) -> None:
        super().__init__(pool)
        self._on_reconnect = on_reconnect

    async def on_connect(self, connection: Any) -> None:
        # redis-py calls this on every reconnect (the first connection is made
        # before the callback is registered), after re-subscribing.
        await super().on_connect(connection)
        self._on_reconnect()


class _AnnouncingShard(RedisSingleShardConnection):  # type: ignore[misc]
    def _ensure_redis(self) -> None:
        if self._redis is None:
            super()._ensure_redis()
            redis_client: Any = self._redis
            self._pubsub = _ReconnectAwarePubSub(redis_client.connection_pool,
                                                 self._announce_reconnect)

    def _announce_reconnect(self) -> None:
        loop_layer: RedisPubSubLoopLayer = self.channel_layer
        message = loop_layer.channel_layer.serialize({"type": RECONNECTED_TYPE})
        logger.warning("TaskPulse: channel layer reconnected to Redis; resyncing %d consumers",
                       len(loop_layer.channels))
        for queue in list(loop_layer.channels.values()):
            queue.put_nowait(message)


class _LocalQueue:
    """The part of asyncio.Queue the layer uses (put_nowait, and one getter's get).

    One per connection: asyncio.Queue holds four deques (~3 KB even when
    empty); this holds a deque only while messages wait (docs/BENCHMARKS.md,
    "Idle connections").
    """

    __slots__ = ("_items", "_waiter")

    def __init__(self) -> None:
        self._items: collections.deque[Any] | None = None
        self._waiter: asyncio.Future[None] | None = None

    def put_nowait(self, item: Any) -> None:
        if self._items is None:
            self._items = collections.deque()
        self._items.append(item)
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def get(self) -> Any:
        while not self._items:
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        item = self._items.popleft()
        if not self._items:
            self._items = None
        return item


async def _local_channel(layer: RedisPubSubLoopLayer, channel: str) -> None:
    """Create a consumer's own channel as a local queue only, with no Redis SUBSCRIBE.

    Nothing sends to a consumer's channel from another process: group events
    are fanned out to it here, and so is `layer.reconnected`. The SUBSCRIBE
    channels_redis does per connection sat on every handshake's path, one at
    a time behind the shard's lock, and cost Redis memory per connection
    (docs/BENCHMARKS.md, "Connection storm" and "Idle connections").
    """
    layer.channels[channel] = _LocalQueue()


class ResyncingPubSubChannelLayer(RedisPubSubChannelLayer):  # type: ignore[misc]
    def _get_layer(self) -> RedisPubSubLoopLayer:
        layer = super()._get_layer()
        if not getattr(layer, "_taskpulse_announcing", False):
            layer._shards = [_AnnouncingShard(shard.host, layer) for shard in layer._shards]
            layer._subscribe_to_channel = functools.partial(_local_channel, layer)
            layer._taskpulse_announcing = True
        return layer
