"""Which Redis server (shard) holds a task: its record, history and PUBLISH.

The shards are TaskPulse's Redis servers (progress/store/servers.py),
channels_redis host entries in the order the channel layer lists them, and a
task lives on the shard where the layer subscribes to its group channel: the
same `_consistent_hash` of the same name. So the record script's PUBLISH lands
where web processes listen.
"""

from __future__ import annotations

import functools
from typing import Any

from channels_redis.utils import _consistent_hash
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed
from django.dispatch import receiver

from progress import conf
from progress.store import keys
from progress.store.servers import NAMES, SETTING_PREFIX, HostEntry, resolve

# The Django settings the shards are read from: a change (in tests) forgets every client.
SETTINGS = frozenset({"TASKPULSE_SHARDS", "CHANNEL_LAYERS", "TASKPULSE_CHANNEL_LAYER",
                      *(SETTING_PREFIX + name for name in NAMES)})


@functools.cache
def servers() -> list[HostEntry]:
    """Every shard, in channel-layer order: `TASKPULSE_SHARDS` (host entries) when set,
    else what progress/store/servers.py resolves (one local server by default)."""
    explicit = getattr(settings, "TASKPULSE_SHARDS", None)
    hosts: list[HostEntry] = list(explicit) if explicit else resolve()
    layer_hosts = _channel_layer_hosts()
    if layer_hosts is not None and list(layer_hosts) != hosts:
        alias = conf.channel_layer_alias()
        raise ImproperlyConfigured(
            f"CHANNEL_LAYERS[{alias!r}]['CONFIG']['hosts'] must be TaskPulse's Redis servers, "
            "in the same order: a task's events are published on the shard its record is on, "
            "which must be the one the layer subscribes on; leave the alias out of "
            "CHANNEL_LAYERS and TaskPulse configures it "
            f"(layer: {layer_hosts!r}, shards: {hosts!r})")
    return hosts


def _channel_layer_hosts() -> list[Any] | None:
    """The hosts of TaskPulse's channel layer when the host site configured it itself."""
    layer = getattr(settings, "CHANNEL_LAYERS", {}).get(conf.channel_layer_alias(), {})
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
