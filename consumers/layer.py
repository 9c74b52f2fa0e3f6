"""The channel layer: Redis pub/sub, channels_redis' wire format, lean on the receiving side.

A Channels layer (the public layer interface: new_channel, send, receive,
group_add, group_discard, group_send, flush) speaking what channels_redis'
`RedisPubSubChannelLayer` speaks on Redis: a group is the pub/sub channel
`{prefix}__group__{group}` on the shard `progress.store.shards.shard_hash()`
picks, messages are channels_redis' serializer's bytes (msgpack by default).
So the record script's PUBLISH (progress/store/lua.py) reaches it, and it
can be configured with channels_redis' `hosts`, `prefix`,
`symmetric_encryption_keys` and `serializer_format`. It is its own code,
not a subclass of channels_redis' internals. What it does differently, and
why (figures in docs/BENCHMARKS.md, "Profile"):

- A consumer's own channel is an in-process `Inbox` only, with no Redis
  SUBSCRIBE: nothing sends to it from another process (group events are fanned
  out to it here, and so is `layer.reconnected`). The SUBSCRIBE channels_redis
  does per connection sat on every handshake's path, one at a time behind the
  shard's lock, and cost Redis memory per connection.
- Each Redis server's pub/sub connection is read by consumers/subscriber.py
  (hiredis on the socket under the launcher: consumers/server/socket_link.py).
  `group_add` returns once Redis has confirmed the SUBSCRIBE.
- A group message is decoded once per PUBLISH and the same dict handed to
  every local member, instead of once per member (handlers must not mutate
  it). The launcher's consumer loop (consumers/server/consumer_loop.py) reads its
  inbox directly (`inbox`); Channels' own loop reads it through `receive`.
- Whatever was published while a pub/sub connection was down is gone: once
  it is back and subscribed again, the layer sends `layer.reconnected` to
  every consumer of the process, and each resyncs its subscriptions from the
  record store (consumers/progress.py).
"""

from __future__ import annotations

import asyncio
import logging
import types
import uuid
import weakref
from typing import Any, ClassVar

from channels_redis.serializers import registry

from consumers.inbox import Inbox
from consumers.subscriber import Subscriber

logger = logging.getLogger(__name__)

RECONNECTED_TYPE = "layer.reconnected"
DEFAULT_HOSTS: list[Any] = ["redis://localhost:6379"]


def decode_hosts(hosts: Any) -> list[dict[str, Any]]:
    """channels_redis' `hosts` setting as connection arguments, one dict per server:
    a URL, a (host, port) pair, or a dict (a Sentinel master, or redis-py arguments)."""
    if isinstance(hosts, str | bytes):
        raise ValueError("hosts must be a list of Redis servers, even if there is only one")
    decoded = []
    for entry in hosts or DEFAULT_HOSTS:
        if isinstance(entry, dict):
            decoded.append(dict(entry))
        elif isinstance(entry, tuple | list):
            decoded.append({"host": entry[0], "port": entry[1]})
        else:
            decoded.append({"address": entry})
    return decoded


class _LoopLayer:
    """The layer's state on one event loop: its consumers' inboxes, its groups, one
    Subscriber per Redis server."""

    extensions: ClassVar[list[str]] = ["groups", "flush"]

    def __init__(self, proxy: ResyncingPubSubChannelLayer) -> None:
        self.channel_layer = proxy
        self.prefix = proxy.prefix
        self.channels: dict[str, Inbox] = {}
        self.groups: dict[str, set[str]] = {}  # group channel -> local channel names
        self._shards = [Subscriber(host, self._arrived, self._reconnected)
                        for host in proxy.hosts]
        self._hash: Any = None

    def _get_shard(self, name: str) -> Subscriber:
        if len(self._shards) == 1:
            return self._shards[0]
        if self._hash is None:
            from progress.store.shards import shard_hash

            self._hash = shard_hash()  # the records' own choice (shards.py's guard)
        return self._shards[int(self._hash(name, len(self._shards)))]

    def _group_channel(self, group: str) -> str:
        return f"{self.prefix}__group__{group}"

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
        """Drop a channel whose consumer is gone (Channels' `receive` does it on cancel)."""
        self.channels.pop(channel, None)

    async def new_channel(self, prefix: str = "specific.") -> str:
        channel = f"{self.prefix}{prefix}{uuid.uuid4().hex}"
        self.channels[channel] = Inbox()
        return channel

    async def send(self, channel: str, message: dict[str, Any]) -> None:
        serializer = self.channel_layer
        if channel in self.channels:
            # One of this process's consumers: no Redis subscription exists for
            # it (see above), so deliver here; the round trip through the
            # serializer gives the receiver its own copy, as over Redis.
            self.fan_out(channel, serializer.deserialize(serializer.serialize(message)))
            return
        await self._get_shard(channel).publish(channel, serializer.serialize(message))

    async def receive(self, channel: str) -> Any:
        inbox = self.channels.get(channel)
        if inbox is None:
            inbox = self.channels[channel] = Inbox()
        try:
            return await inbox.get()
        except asyncio.CancelledError:
            self.forget(channel)
            raise

    async def group_add(self, group: str, channel: str) -> None:
        if channel not in self.channels:
            raise RuntimeError("group_add() needs a channel of this process "
                               f"(self.channel_layer.group_add({group!r}, self.channel_name))")
        name = self._group_channel(group)
        self.groups.setdefault(name, set()).add(channel)
        await self._get_shard(name).subscribe(name)

    async def group_discard(self, group: str, channel: str) -> None:
        name = self._group_channel(group)
        members = self.groups.get(name)
        if not members or channel not in members:
            return
        members.discard(channel)
        if not members:
            del self.groups[name]
            await self._get_shard(name).unsubscribe(name)

    async def group_send(self, group: str, message: dict[str, Any]) -> None:
        name = self._group_channel(group)
        await self._get_shard(name).publish(name, self.channel_layer.serialize(message))

    async def flush(self) -> None:
        self.channels = {}
        self.groups = {}
        for shard in self._shards:
            await shard.flush()


class ResyncingPubSubChannelLayer:
    """The layer Channels is configured with (CHANNEL_LAYERS BACKEND); its state lives
    per event loop, as with channels_redis, and is flushed when that loop closes."""

    extensions: ClassVar[list[str]] = ["groups", "flush"]
    # progress/store/shards.py: this layer places group channels with shard_hash().
    shards_with_taskpulse_hash = True

    def __init__(self, hosts: Any = None, prefix: str = "asgi",
                 symmetric_encryption_keys: Any = None, serializer_format: str = "msgpack",
                 **_ignored: Any) -> None:
        # channels_redis' other options (on_disconnect, capacity, ...) mean nothing here.
        self.hosts = decode_hosts(hosts)
        self.prefix = prefix
        self._serializer = registry.get_serializer(
            serializer_format, symmetric_encryption_keys=symmetric_encryption_keys)
        self._layers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopLayer] = (
            weakref.WeakKeyDictionary())

    def serialize(self, message: dict[str, Any]) -> bytes:
        data: bytes = self._serializer.serialize(message)
        return data

    def deserialize(self, data: bytes) -> Any:
        return self._serializer.deserialize(data)

    def _get_layer(self) -> _LoopLayer:
        loop = asyncio.get_running_loop()
        layer = self._layers.get(loop)
        if layer is None:
            layer = self._layers[loop] = _LoopLayer(self)
            _flush_before_close(self, loop)
        return layer

    async def new_channel(self, prefix: str = "specific.") -> str:
        return await self._get_layer().new_channel(prefix)

    async def send(self, channel: str, message: dict[str, Any]) -> None:
        await self._get_layer().send(channel, message)

    async def receive(self, channel: str) -> Any:
        return await self._get_layer().receive(channel)

    async def group_add(self, group: str, channel: str) -> None:
        await self._get_layer().group_add(group, channel)

    async def group_discard(self, group: str, channel: str) -> None:
        await self._get_layer().group_discard(group, channel)

    async def group_send(self, group: str, message: dict[str, Any]) -> None:
        await self._get_layer().group_send(group, message)

    async def flush(self) -> None:
        await self._get_layer().flush()

    def inbox(self, channel: str) -> Inbox:
        return self._get_layer().inbox(channel)

    def forget(self, channel: str) -> None:
        self._get_layer().forget(channel)


def _flush_before_close(proxy: ResyncingPubSubChannelLayer,
                        loop: asyncio.AbstractEventLoop) -> None:
    """Close the loop's Redis connections when the loop closes (asyncio has no hook for
    it: the loop's `close` is wrapped, as channels_redis does)."""
    original = loop.close

    def close(self: asyncio.AbstractEventLoop) -> None:
        layer = proxy._layers.pop(loop, None)
        if layer is not None and not loop.is_running():
            loop.run_until_complete(layer.flush())
        loop.close = original  # type: ignore[method-assign]
        original()

    loop.close = types.MethodType(close, loop)  # type: ignore[method-assign]
