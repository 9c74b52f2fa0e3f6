"""channels_redis' private `_consistent_hash`, which places group channels on shards.

A task's records must land on the shard its group channel is subscribed on.
TaskPulse's layer (consumers/layer.py) picks it with progress/store/shards.py
`shard_hash()` too; channels_redis' own pub/sub layer uses this private
function, so `shard_hash()` is it while it maps names as the tested release
did (SHARD_HASH), and `tested_hash`, TaskPulse's copy, otherwise.
"""

from __future__ import annotations

import binascii
from collections.abc import Callable

from progress import compat

try:
    from channels_redis.utils import _consistent_hash
except ImportError:  # a release that moved it: the guard's `requires` reports it
    _consistent_hash = None

HASH_SAMPLE_NAMES = tuple(f"tp__group__task.{name}" for name in (
    "a", "b", "0", "9", "x" * 80, "celery-1f0e", "7d2c4e0a-5b1f-4f7e-9a43-2f6d1c9e8b01"))
HASH_SAMPLE_RINGS = (2, 3, 5, 7, 16)


def tested_hash(value: str, ring_size: int) -> int:
    """channels_redis 4.3's `_consistent_hash`: CRC32 of the name, 12 bits, over the ring."""
    if ring_size == 1:
        return 0
    return int((binascii.crc32(value.encode("utf8")) & 0xFFF) / (4096 / float(ring_size)))


def _hash_maps_as_tested() -> list[str]:
    if _consistent_hash is None:
        return []  # reported by `requires`
    differ = [(name, n) for name in HASH_SAMPLE_NAMES for n in HASH_SAMPLE_RINGS
              if int(_consistent_hash(name, n)) != tested_hash(name, n)]
    return [f"_consistent_hash maps {len(differ)} sample names differently"] if differ else []


SHARD_HASH = compat.Guard(
    name="channels_redis' shard hash",
    fallback="records and TaskPulse's channel layer place tasks with TaskPulse's copy of the "
             "tested hash (a channels_redis pub/sub layer is refused when sharding)",
    distributions=("channels-redis",),
    requires=("channels_redis.utils:_consistent_hash",),
    calls=(("channels_redis.utils:_consistent_hash", "value, ring_size"),),
    extra=(_hash_maps_as_tested,),
)


def consistent_hash() -> Callable[[str, int], int] | None:
    """channels_redis' own function while the guard passes, else None."""
    if _consistent_hash is not None and compat.enabled(SHARD_HASH):
        return _consistent_hash  # type: ignore[no-any-return]
    return None
