"""The channel layer tells consumers when its Redis connection came back (consumers/layer.py),
against a private redis-server that the test restarts (never the shared one)."""

import asyncio
from pathlib import Path

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
