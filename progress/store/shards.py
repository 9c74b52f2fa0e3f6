"""Which Redis server (shard) holds a task: its record, history and PUBLISH.

The shards are TaskPulse's Redis servers (progress/store/servers.py),
channels_redis host entries in the order the channel layer lists them, and a
task lives on the shard where the layer subscribes to its group channel: the
same hash of the same name (`shard_hash()`, guarded below). So the record
script's PUBLISH lands where web processes listen.
"""

from __future__ import annotations

import binascii
import functools
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed
from django.dispatch import receiver
from django.utils.module_loading import import_string

from progress import compat, conf
from progress.store import keys
from progress.store.servers import NAMES, SETTING_PREFIX, HostEntry, resolve

try:
    from channels_redis.utils import _consistent_hash
except ImportError:  # a release that moved it: see shard_hash()
    _consistent_hash = None

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
    check_shard_hash()
    return int(shard_hash()(keys.group_channel(task_id), n))


# -- The shard hash guard ------------------------------------------------------
# A task's records must land on the shard its group channel is subscribed on.
# TaskPulse's layer (consumers/layer.py) picks that shard with shard_hash() too,
# so the two always agree; channels_redis' own pub/sub layer uses its private
# `_consistent_hash`, which shard_hash() is while it maps names as the tested
# release did. When it does not (gone, or changed), records and TaskPulse's
# layer use the copy below, and a channels_redis layer (which cannot) is
# refused at start-up when there is more than one shard.

HASH_SAMPLE_NAMES = tuple(f"tp__group__task.{name}" for name in (
    "a", "b", "0", "9", "x" * 80, "celery-1f0e", "7d2c4e0a-5b1f-4f7e-9a43-2f6d1c9e8b01"))
HASH_SAMPLE_RINGS = (2, 3, 5, 7, 16)


def _tested_hash(value: str, ring_size: int) -> int:
    """channels_redis 4.3's `_consistent_hash`: CRC32 of the name, 12 bits, over the ring."""
    if ring_size == 1:
        return 0
    return int((binascii.crc32(value.encode("utf8")) & 0xFFF) / (4096 / float(ring_size)))


def _hash_maps_as_tested() -> list[str]:
    if _consistent_hash is None:
        return []  # reported by `requires`
    differ = [(name, n) for name in HASH_SAMPLE_NAMES for n in HASH_SAMPLE_RINGS
              if int(_consistent_hash(name, n)) != _tested_hash(name, n)]
    return [f"_consistent_hash maps {len(differ)} sample names differently"] if differ else []


SHARD_HASH = compat.Guard(
    name="channels_redis' shard hash",
    fallback="records and TaskPulse's channel layer place tasks with TaskPulse's copy of the "
             "tested hash (a channels_redis pub/sub layer is refused when sharding)",
    distributions=("channels-redis",),
    requires=("channels_redis.utils:_consistent_hash",),
    extra=(_hash_maps_as_tested,),
)


def shard_hash() -> Callable[[str, int], int]:
    """The function that picks a group channel's shard, for records and for the layer."""
    if _consistent_hash is not None and compat.enabled(SHARD_HASH):
        return _consistent_hash  # type: ignore[no-any-return]
    return _tested_hash


def check_shard_hash() -> None:
    """Refuse to start when a task's records could be written to another shard than the
    one the configured channel layer subscribes its group on."""
    if count() < 2 or shard_hash() is _consistent_hash:
        return
    layer = getattr(settings, "CHANNEL_LAYERS", {}).get(conf.channel_layer_alias())
    backend = layer.get("BACKEND") if layer else None
    if backend is None or getattr(import_string(backend), "shards_with_taskpulse_hash", False):
        return  # TaskPulse's own layer: it shards with shard_hash() as well
    raise ImproperlyConfigured(
        f"TaskPulse cannot shard over {count()} Redis servers with the channel layer "
        f"{backend}: it places group channels with channels_redis' _consistent_hash, which "
        f"is not the one TaskPulse was tested with ({compat.check(SHARD_HASH).reason}), so "
        "records could be written where no web process listens. Use TaskPulse's layer "
        "(leave the alias out of CHANNEL_LAYERS), one Redis server, or a tested channels-redis.")


@receiver(setting_changed)
def _forget_shards(setting: str = "", **_: Any) -> None:
    if setting in SETTINGS:
        servers.cache_clear()
