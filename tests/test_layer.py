"""The channel layer (consumers/layer.py, consumers/subscriber.py) against a private
redis-server per test, which a test may restart (never the shared one)."""

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis

from consumers.layer import RECONNECTED_TYPE, ResyncingPubSubChannelLayer
from consumers.server.socket_link import SocketLink
from consumers.subscriber import KEEPALIVE_IDLE
from tests import processes
from tests.faultkit import own_redis, restart_redis
from tests.launcher_tunings import install_launcher_tunings

PREFIX = "tplayer"


@pytest.fixture(autouse=True)
def as_the_launcher(monkeypatch: pytest.MonkeyPatch) -> None:
    """The layer as the launcher runs it (hiredis on the pub/sub socket); the public
    path (redis-py's PubSub) keeps the same promises: tests/test_compat.py."""
    install_launcher_tunings(monkeypatch)


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[tuple[str, processes.Proc]]:
    with own_redis(str(tmp_path), persistent=False) as found:
        yield found


@pytest.fixture
def publisher(private_redis: tuple[str, processes.Proc]) -> Iterator[redis.Redis]:
    """Another connection, as a worker's: it PUBLISHes as progress/store/lua.py does."""
    client = redis.Redis.from_url(private_redis[0])
    yield client
    client.close()


@contextlib.asynccontextmanager
async def layer_on(url: str) -> AsyncIterator[ResyncingPubSubChannelLayer]:
    layer = ResyncingPubSubChannelLayer(hosts=[url], prefix=PREFIX)
    try:
        yield layer
    finally:
        await layer.flush()


async def test_reconnect_is_announced_and_groups_work_again(
        private_redis: tuple[str, processes.Proc], publisher: redis.Redis) -> None:
    """After a Redis restart every channel gets `layer.reconnected`; group messages flow again."""
    url, server = private_redis
    async with layer_on(url) as layer:
        channel = await layer.new_channel()
        await layer.group_add("g", channel)
        await layer.group_send("g", {"type": "before"})
        assert (await asyncio.wait_for(layer.receive(channel), 10))["type"] == "before"
        await asyncio.to_thread(restart_redis, server, 0.5)
        message = await asyncio.wait_for(layer.receive(channel), 30)
        assert message == {"type": RECONNECTED_TYPE}
        publisher.publish(f"{PREFIX}__group__g", layer.serialize({"type": "after"}))
        assert (await asyncio.wait_for(layer.receive(channel), 10))["type"] == "after"


async def test_an_event_published_right_after_group_add_is_received(
        private_redis: tuple[str, processes.Proc], publisher: redis.Redis) -> None:
    """`group_add` returns once Redis has confirmed the SUBSCRIBE, so the consumer's
    record read that follows it cannot miss an event (consumers/subscriber.py)."""
    async with layer_on(private_redis[0]) as layer:
        channel = await layer.new_channel()
        for i in range(200):
            await layer.group_add(f"g{i}", channel)
            # no sleep between the two
            publisher.publish(f"{PREFIX}__group__g{i}", layer.serialize({"type": "e", "i": i}))
            message = await asyncio.wait_for(layer.receive(channel), 5)
            assert message == {"type": "e", "i": i}


async def test_group_messages_reach_every_member_and_garbage_is_dropped(
        private_redis: tuple[str, processes.Proc], publisher: redis.Redis) -> None:
    """One PUBLISH reaches each local member; an undecodable one is dropped without
    holding up the next (the reader does not pause on it)."""
    async with layer_on(private_redis[0]) as layer:
        members = [await layer.new_channel() for _ in range(3)]
        for channel in members:
            await layer.group_add("shared", channel)
        publisher.publish(f"{PREFIX}__group__shared", b"\xc1 not msgpack")
        publisher.publish(f"{PREFIX}__group__shared", layer.serialize({"type": "ok"}))
        for channel in members:
            assert await asyncio.wait_for(layer.receive(channel), 0.5) == {"type": "ok"}


async def test_send_to_a_channel_of_this_process_is_delivered_as_a_copy(
        private_redis: tuple[str, processes.Proc]) -> None:
    """A consumer's channel has no Redis subscription; `send` to it is delivered in process."""
    async with layer_on(private_redis[0]) as layer:
        channel = await layer.new_channel()
        message = {"type": "note", "items": [1, 2]}
        await layer.send(channel, message)
        received = await asyncio.wait_for(layer.receive(channel), 1)
        assert received == message
        assert received is not message


async def test_group_add_fails_clearly_when_redis_is_unreachable() -> None:
    """No Redis at all: the subscriber is told (the consumer answers `unavailable`)."""
    async with layer_on(f"redis://127.0.0.1:{processes.free_port()}/0") as layer:
        channel = await layer.new_channel()
        with pytest.raises(ConnectionError):
            await asyncio.wait_for(layer.group_add("g", channel), 10)


async def test_the_pub_sub_connection_probes_a_silent_peer(
        private_redis: tuple[str, processes.Proc]) -> None:
    """The subscriber's socket has TCP keepalive on (a vanished Redis is noticed)."""
    async with layer_on(private_redis[0]) as layer:
        channel = await layer.new_channel()
        await layer.group_add("g", channel)
        [shard] = layer._get_layer()._shards
        link = shard._live_link()
        assert isinstance(link, SocketLink)
        transport = link.transport
        assert transport is not None
        sock = transport.get_extra_info("socket")
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == KEEPALIVE_IDLE


async def test_reconnect_is_announced_when_redis_refuses_ping(
        publisher: redis.Redis, private_redis: tuple[str, processes.Proc]) -> None:
    """A Redis that takes SUBSCRIBE but refuses PING (loading its AOF after a restart)
    still gets the reconnect announced, once it confirmed every channel again."""
    from tests.fakeredis_loading import PingRefusingProxy

    url, _server = private_redis
    host, port = url.split("//", 1)[1].split("/", 1)[0].split(":")
    with PingRefusingProxy(host, int(port)) as proxy:
        async with layer_on(proxy.url) as layer:
            channel = await layer.new_channel()
            await layer.group_add("g", channel)
            await asyncio.sleep(0.2)
            proxy.drop()
            message = await asyncio.wait_for(layer.receive(channel), 15)
            assert message == {"type": RECONNECTED_TYPE}
            publisher.publish(f"{PREFIX}__group__g", layer.serialize({"type": "after"}))
            assert (await asyncio.wait_for(layer.receive(channel), 10))["type"] == "after"
