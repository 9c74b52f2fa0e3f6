"""Which Redis server (shard) holds a task: its record, history and PUBLISH.

The shards are `settings.TASKPULSE_SHARDS`, channels_redis host entries in
the order the channel layer lists them, and a task lives on the shard where
the layer subscribes to its group channel: the same `_consistent_hash` of
the same name. So the record script's PUBLISH lands where web processes listen.
"""

from __future__ import annotations

import functools
from typing import Any, TypedDict

from channels_redis.utils import _consistent_hash
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed
from django.dispatch import receiver

from progress import conf
from progress.store import keys


class SentinelHost(TypedDict, total=False):
    """A shard behind Redis Sentinel, as channels_redis' create_pool() takes it."""

    master_name: str
    sentinels: list[tuple[str, int]]
    sentinel_kwargs: dict[str, Any]
    password: str


HostEntry = str | SentinelHost  # a redis:// URL, or a Sentinel master
# The Django settings the shards are read from: a change (in tests) forgets every client.
SETTINGS = frozenset({"TASKPULSE_SHARDS", "REDIS_URL", "CHANNEL_LAYERS"})


@functools.cache
def servers() -> list[HostEntry]:
    """Every shard, in channel-layer order (one entry: REDIS_URL, the default)."""
    hosts: list[HostEntry] = list(getattr(settings, "TASKPULSE_SHARDS", None)
                                  or [conf.redis_url()])
    layer_hosts = _channel_layer_hosts()
    if layer_hosts is not None and list(layer_hosts) != hosts:
        raise ImproperlyConfigured(
            "CHANNEL_LAYERS['default']['CONFIG']['hosts'] must be TASKPULSE_SHARDS, in the "
            "same order: a task's events are published on the shard its record is on, which "
            f"must be the one the layer subscribes on (layer: {layer_hosts!r}, shards: {hosts!r})")
    return hosts


def _channel_layer_hosts() -> list[Any] | None:
    layer = getattr(settings, "CHANNEL_LAYERS", {}).get("default", {})
    if not str(layer.get("BACKEND", "")).endswith("PubSubChannelLayer"):
        return None  # not a Redis pub/sub layer (e.g. a test's in-memory one): nothing to agree
    hosts = layer.get("CONFIG", {}).get("hosts")
    return None if hosts is None else list(hosts)


def count() -> int:
    return len(servers())


def shard_of(task_id: str) -> int:
    """The index in servers() of the shard holding `task_id` (a task or a group id)."""
    n = count()
    if n == 1:
        return 0
    return _shard_of(conf.key_prefix(), n, task_id)


@functools.lru_cache(maxsize=65536)
def _shard_of(prefix: str, n: int, task_id: str) -> int:
    # channels_redis' own function over the group channel, not a copy of it: if
    # it ever changes, records move with the subscriptions.
    return int(_consistent_hash(keys.group_channel(task_id), n))


@receiver(setting_changed)
def _forget_shards(setting: str = "", **_: Any) -> None:
    if setting in SETTINGS:
        servers.cache_clear()
