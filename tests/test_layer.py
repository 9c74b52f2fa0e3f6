"""The channel layer tells consumers when its Redis connection came back (consumers/layer.py),
against a private redis-server that the test restarts (never the shared one)."""

import asyncio
from pathlib import Path

import pytest
import redis

from consumers.layer import RECONNECTED_TYPE, ResyncingPubSubChannelLayer
from tests.faultkit import own_redis, restart_redis


async def test_reconnect_is_announced_and_groups_work_again(tmp_path: Path) -> None:
    """After a Redis restart every channel gets `layer.reconnected`; group messages flow again."""
    with own_redis(str(tmp_path), persistent=False) as (url, server):
        layer = ResyncingPubSubChannelLayer(hosts=[url], prefix="tplayer")
        try:
            channel = await layer.new_channel()
            await layer.group_add("g", channel)
            await layer.group_send("g", {"type": "before"})
            assert (await asyncio.wait_for(layer.receive(channel), 10))["type"] == "before"
            await asyncio.to_thread(restart_redis, server, 0.5)
            message = await asyncio.wait_for(layer.receive(channel), 30)
            assert message == {"type": RECONNECTED_TYPE}
            # as progress/lua.py does: PUBLISH on the group's channel from another client
            publisher = redis.Redis.from_url(url)
            publisher.publish("tplayer__group__g", layer.serialize({"type": "after"}))
            publisher.close()
            assert (await asyncio.wait_for(layer.receive(channel), 10))["type"] == "after"
        finally:
            await layer.flush()


async def test_an_event_published_right_after_group_add_is_received(tmp_path: Path) -> None:
    """`group_add` returns once Redis has confirmed the SUBSCRIBE, so the consumer's
    record read that follows it cannot miss an event (consumers/subscriber.py)."""
    with own_redis(str(tmp_path), persistent=False) as (url, _server):
        layer = ResyncingPubSubChannelLayer(hosts=[url], prefix="tplayer")
        publisher = redis.Redis.from_url(url)
        try:
            channel = await layer.new_channel()
            for i in range(200):
                await layer.group_add(f"g{i}", channel)
                # another connection, as a worker's: no sleep between the two
                publisher.publish(f"tplayer__group__g{i}", layer.serialize({"type": "e", "i": i}))
                message = await asyncio.wait_for(layer.receive(channel), 5)
                assert message == {"type": "e", "i": i}
        finally:
            publisher.close()
            await layer.flush()


async def test_group_messages_reach_every_member_and_garbage_is_dropped(tmp_path: Path) -> None:
    """One PUBLISH reaches each local member; an undecodable one is dropped without
    holding up the next (the reader does not pause on it)."""
    with own_redis(str(tmp_path), persistent=False) as (url, _server):
        layer = ResyncingPubSubChannelLayer(hosts=[url], prefix="tplayer")
        publisher = redis.Redis.from_url(url)
        try:
            members = [await layer.new_channel() for _ in range(3)]
            for channel in members:
                await layer.group_add("shared", channel)
            publisher.publish("tplayer__group__shared", b"\xc1 not msgpack")
            publisher.publish("tplayer__group__shared", layer.serialize({"type": "ok"}))
            for channel in members:
                assert await asyncio.wait_for(layer.receive(channel), 0.5) == {"type": "ok"}
        finally:
            publisher.close()
            await layer.flush()


async def test_send_to_a_channel_of_this_process_is_delivered_as_a_copy() -> None:
    """A consumer's channel has no Redis subscription; `send` to it is delivered in process."""
    layer = ResyncingPubSubChannelLayer(hosts=["redis://127.0.0.1:6379/0"], prefix="tplayer")
    try:
        channel = await layer.new_channel()
        message = {"type": "note", "items": [1, 2]}
        await layer.send(channel, message)
        received = await asyncio.wait_for(layer.receive(channel), 1)
        assert received == message
        assert received is not message
    finally:
        await layer.flush()


async def test_group_add_fails_clearly_when_redis_is_unreachable() -> None:
    """No Redis at all: the subscriber is told (the consumer answers `unavailable`)."""
    from tests import processes

    layer = ResyncingPubSubChannelLayer(
        hosts=[f"redis://127.0.0.1:{processes.free_port()}/0"], prefix="tplayer")
    try:
        channel = await layer.new_channel()
        with pytest.raises(ConnectionError):
            await asyncio.wait_for(layer.group_add("g", channel), 10)
    finally:
        await layer.flush()


async def test_the_pub_sub_connection_probes_a_silent_peer(tmp_path: Path) -> None:
    """The subscriber's socket has TCP keepalive on (a vanished Redis is noticed)."""
    import socket

    from consumers.subscriber import KEEPALIVE_IDLE

    with own_redis(str(tmp_path), persistent=False) as (url, _server):
        layer = ResyncingPubSubChannelLayer(hosts=[url], prefix="tplayer")
        try:
            channel = await layer.new_channel()
            await layer.group_add("g", channel)
            [shard] = layer._get_layer()._shards
            transport = shard._transport()
            assert transport is not None
            sock = transport.get_extra_info("socket")
            assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == KEEPALIVE_IDLE
        finally:
            await layer.flush()
