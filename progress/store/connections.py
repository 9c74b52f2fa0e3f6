"""Redis connections, one set per shard (progress/store/shards.py): one pool per
process for sync code, one per event loop for async, and the worker's
publisher's own script connection.

A shard is a redis:// URL or a Sentinel master; a Sentinel client asks every
sentinel for the master (progress/store/sentinel.py) on every new connection
and at most every SENTINEL_CHECK_INTERVAL when a connection is taken, and
drops its connections to a replaced master, so it follows a fail-over.
The worker's publisher keeps its connection open across calls: opening one
per call is what makes the usual `async_to_sync(group_send)` cost ~3 ms.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import quote

import redis
import redis.asyncio as aioredis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry
from redis.sentinel import SentinelConnectionPool

from progress.process_state import LoopSlot, ProcessSlot
from progress.store import shards
from progress.store.script_runner import SOCKET_TIMEOUT, Arg, Call, ScriptRunner
from progress.store.sentinel import (
    SENTINEL_CHECK_INTERVAL,
    AsyncFollowingSentinelPool,
    AsyncMajoritySentinel,
    FollowingSentinelPool,
    MajoritySentinel,
    Survey,
    last_named,
)
from progress.store.servers import HostEntry, SentinelHost

logger = logging.getLogger(__name__)

HEALTH_CHECK_INTERVAL = 15
RETRIES = 6  # ~0.05 .. 1.6 s apart: rides out a Redis restart (or a fail-over) of a few seconds
ASYNC_POOL_SIZE = 50  # Redis connections per server process and shard for record reads

# This process's sync clients (a forked pool child opens its own, never uses its
# parent's sockets) and each event loop's async ones; both forgotten when the
# shards' settings change (process_state.py).
_sync_clients: ProcessSlot[list[redis.Redis]] = ProcessSlot(
    lambda: [_sync_client_of(host) for host in shards.servers()], settings=shards.SETTINGS)
_async_clients: LoopSlot[list[aioredis.Redis]] = LoopSlot(
    lambda: [_async_client_of(host) for host in shards.servers()], settings=shards.SETTINGS)


def _options() -> dict[str, Any]:
    return {
        "socket_timeout": SOCKET_TIMEOUT,
        "socket_connect_timeout": SOCKET_TIMEOUT,
        "health_check_interval": HEALTH_CHECK_INTERVAL,
        "retry_on_error": [redis.ConnectionError, redis.TimeoutError],
    }


def _retry() -> Retry:
    return Retry(ExponentialBackoff(cap=1.6, base=0.05), RETRIES)


def _async_retry() -> aioredis.retry.Retry:
    return aioredis.retry.Retry(ExponentialBackoff(cap=1.6, base=0.05), RETRIES)


def _sentinel_args(host: SentinelHost) -> tuple[list[tuple[str, int]], dict[str, Any]]:
    """The sentinels, and the connection options for the master (its password)."""
    options = {"password": host["password"]} if "password" in host else {}
    return list(host["sentinels"]), options


def sync_clients() -> list[redis.Redis]:
    """This process's client of every shard; a forked pool child gets its own,
    never its parent's sockets."""
    return _sync_clients.get()


def sync_client(shard: int = 0) -> redis.Redis:
    """The client of one shard (the only one, by default)."""
    return sync_clients()[shard]


def _sync_client_of(host: HostEntry) -> redis.Redis:
    if isinstance(host, str):
        return redis.Redis.from_url(host, retry=_retry(), **_options())
    sentinels, master_options = _sentinel_args(host)
    sentinel = MajoritySentinel(sentinels,
                                sentinel_kwargs=host.get("sentinel_kwargs"), **master_options)
    client: redis.Redis = sentinel.master_for(  # type: ignore[no-untyped-call]
        host["master_name"], connection_pool_class=FollowingSentinelPool, retry=_retry(),
        **_options())
    return client


def async_clients() -> list[aioredis.Redis]:
    """This event loop's client of every shard."""
    return _async_clients.get()


def async_client(shard: int = 0) -> aioredis.Redis:
    return async_clients()[shard]


def _async_client_of(host: HostEntry) -> aioredis.Redis:
    # A blocking pool: when many clients subscribe at once, reads wait for
    # a free connection. redis-py's default pool refuses past 100 in use
    # ("Too many connections"), which a storm of subscribers reached.
    pool_options = {"max_connections": ASYNC_POOL_SIZE, "timeout": SOCKET_TIMEOUT,
                    "retry": _async_retry(), **_options()}
    if isinstance(host, str):
        pool = aioredis.BlockingConnectionPool.from_url(host, **pool_options)
        return aioredis.Redis.from_pool(pool)
    sentinels, master_options = _sentinel_args(host)
    sentinel = AsyncMajoritySentinel(sentinels,
                                     sentinel_kwargs=host.get("sentinel_kwargs"),
                                     **master_options)
    client: aioredis.Redis = sentinel.master_for(
        host["master_name"], connection_pool_class=AsyncFollowingSentinelPool, **pool_options)
    return client


# -- the fast script connection of a shard (progress/store/script_runner.py) ----------


def _script_runner(url: str, script: str) -> ScriptRunner:
    return ScriptRunner(url, script)


def script_runner(shard: int, script: str) -> ScriptRunner | SentinelScriptRunner:
    """`script` on a connection of its own to the shard (for the worker's publisher)."""
    host = shards.servers()[shard]
    if isinstance(host, str):
        return _script_runner(host, script)
    return SentinelScriptRunner(sync_client(shard).connection_pool, host.get("password"), script)


def master_survey(shard: int) -> Survey | None:
    """What the sentinels say of the shard's master now (None: the shard is a URL)."""
    pool = sync_client(shard).connection_pool
    if not isinstance(pool, SentinelConnectionPool):
        return None
    found: Survey = pool.sentinel_manager.survey(pool.service_name)
    return found


def server_client(shard: int, address: tuple[str, int]) -> redis.Redis:
    """A client of the shard's server at `address` only (it follows no fail-over); close it."""
    host = shards.servers()[shard]
    password = host.get("password") if not isinstance(host, str) else None
    return redis.Redis(host=address[0], port=address[1], password=password, **_options())


class SentinelScriptRunner:
    """A ScriptRunner on the master the sentinels name, called as a ScriptRunner is.

    ScriptRunner's connection is opened from a URL, which cannot follow a
    fail-over, so this one asks the sentinels (through the shard's Sentinel
    pool, so every sentinel: progress/store/sentinel.py) every
    SENTINEL_CHECK_INTERVAL, at the next call after a connection error, and at
    once on a READONLY reply (the master it writes to was demoted), and moves
    to a new master when they name one. Asking often matters: a master
    Sentinel replaced while it was alive keeps taking writes until it is
    demoted (5-10 s later), and loses all of them then.
    """

    def __init__(self, pool: Any, password: str | None, script: str) -> None:
        self._pool = pool  # the shard's redis.sentinel.SentinelConnectionPool
        self._auth = f":{quote(password, safe='')}@" if password else ""
        self._script = script
        self._runner: ScriptRunner | None = None
        self._address: tuple[str, int] | None = None
        self._next_check = 0.0
        self._lock = threading.Lock()  # the task's thread and the outbox's may both call

    def __call__(self, keys: tuple[str, ...], args: tuple[Arg, ...],
                 leading: tuple[Arg, ...] = ()) -> Any:
        return self._on_master(lambda runner: runner(keys, args, leading=leading))

    def many(self, calls: Sequence[Call]) -> list[Any]:
        result: list[Any] = self._on_master(lambda runner: runner.many(calls))
        return result

    def _on_master(self, call: Callable[[ScriptRunner], Any]) -> Any:
        now = time.monotonic()
        if now >= self._next_check or self._named_elsewhere():
            with self._lock:
                self._next_check = now + SENTINEL_CHECK_INTERVAL
                self._follow_master()
        runner = self._runner
        if runner is None:
            raise redis.ConnectionError("no Redis master known yet (the sentinels did not answer)")
        try:
            return call(runner)
        except (redis.ConnectionError, redis.TimeoutError):
            self._next_check = 0.0  # the master may have gone: ask at the next call
            raise
        except redis.ResponseError as exc:
            if not str(exc).startswith("READONLY"):
                raise
        # The server was demoted to a replica: move now, and run the call on the new
        # master (the record script takes each event once, so a retry is safe).
        with self._lock:
            moved = self._follow_master()
        if not moved or self._runner is None:
            self._next_check = 0.0
            raise redis.ConnectionError("the Redis master was demoted; no new one named yet")
        return call(self._runner)

    def _named_elsewhere(self) -> bool:
        """Another client in this process (the heartbeat) found a new master."""
        named = last_named(self._pool.sentinel_manager, self._pool.service_name)
        return named is not None and self._address is not None and named != self._address

    def _follow_master(self) -> bool:
        """Ask the sentinels; True if they name another master than the one used."""
        try:
            # (It also drops the pool's idle connections to a replaced master.)
            host, port = self._pool.get_master_address()
        except redis.ConnectionError as exc:  # no sentinel answers: keep the master we have
            logger.warning("TaskPulse: cannot ask the sentinels for the master: %s", exc)
            return False
        if (host, port) == self._address:
            return False
        if self._runner is not None:
            self._runner.close()
            logger.info("TaskPulse: publishing to the new Redis master %s:%d", host, port)
        name = f"[{host}]" if ":" in host else host
        self._runner = _script_runner(f"redis://{self._auth}{name}:{port}/0", self._script)
        self._address = (host, port)
        return True

    def close(self) -> None:
        """Reconnect at the next call, after asking the sentinels again."""
        self._next_check = 0.0
        if self._runner is not None:
            self._runner.close()

