"""Which Redis server (shard) holds a task: its record, history and PUBLISH.

The shards are TaskPulse's Redis servers (progress/store/servers.py),
channels_redis host entries in the order the channel layer lists them, and a
task lives on the shard where the layer subscribes to its group channel: the
same hash of the same name (`shard_hash()`, guarded below). So the record
script's PUBLISH lands where web processes listen.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.utils.module_loading import import_string

from progress import compat, conf
from progress.process_state import ProcessSlot
from progress.store import keys
from progress.store.servers import NAMES, SETTING_PREFIX, HostEntry, resolve
from progress.store.tuned import channels_redis_hash
from progress.store.tuned.channels_redis_hash import tested_hash

# The Django settings the shards are read from: a change (in tests) forgets every client.
SETTINGS = frozenset({"TASKPULSE_SHARDS", "CHANNEL_LAYERS", "TASKPULSE_CHANNEL_LAYER",
                      *(SETTING_PREFIX + name for name in NAMES)})


def servers() -> list[HostEntry]:
    """Every shard, in channel-layer order: `TASKPULSE_SHARDS` (host entries) when set,
    else what progress/store/servers.py resolves (one local server by default)."""
    return _servers.get()


def forget_servers() -> None:
    """Resolve the servers again at the next use (after the environment changed)."""
    _servers.forget()


def _resolve_servers() -> list[HostEntry]:
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


_servers: ProcessSlot[list[HostEntry]] = ProcessSlot(_resolve_servers, settings=SETTINGS)


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
    check_shard_hash()
    return int(shard_hash()(keys.group_channel(task_id), n))


# -- The shard hash guard ------------------------------------------------------
# A task's records must land on the shard its group channel is subscribed on.
# TaskPulse's layer (consumers/layer.py) picks that shard with shard_hash() too,
# so the two always agree; channels_redis' own pub/sub layer uses its private
# `_consistent_hash`, which shard_hash() is while it maps names as the tested
# release did. When it does not (gone, or changed), records and TaskPulse's
# layer use TaskPulse's copy (`tested_hash`), and a channels_redis layer (which
# cannot) is refused at start-up when there is more than one shard. The private
# function and its guard: progress/store/tuned/channels_redis_hash.py.

def shard_hash() -> Callable[[str, int], int]:
    """The function that picks a group channel's shard, for records and for the layer."""
    return channels_redis_hash.consistent_hash() or tested_hash


def check_shard_hash() -> None:
    """Refuse to start when a task's records could be written to another shard than the
    one the configured channel layer subscribes its group on."""
    if count() < 2 or shard_hash() is not tested_hash:
        return
    layer = getattr(settings, "CHANNEL_LAYERS", {}).get(conf.channel_layer_alias())
    backend = layer.get("BACKEND") if layer else None
    if backend is None or getattr(import_string(backend), "shards_with_taskpulse_hash", False):
        return  # TaskPulse's own layer: it shards with shard_hash() as well
    raise ImproperlyConfigured(
        f"TaskPulse cannot shard over {count()} Redis servers with the channel layer "
        f"{backend}: it places group channels with channels_redis' _consistent_hash, which "
        "is not the one TaskPulse was tested with "
        f"({compat.check(channels_redis_hash.SHARD_HASH).reason}), so "
        "records could be written where no web process listens. Use TaskPulse's layer "
        "(leave the alias out of CHANNEL_LAYERS), one Redis server, or a tested channels-redis.")
