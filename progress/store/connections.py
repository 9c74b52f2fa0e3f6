"""Redis connections, one set per shard (progress/store/shards.py): one pool per
process for sync code, one per event loop for async, and the worker's
publisher's own script connection.

A shard is a redis:// URL or a Sentinel master; a Sentinel client asks the
sentinels for the master on every new connection, so it follows a fail-over.
The worker's publisher keeps its connection open across calls: opening one
per call is what makes the usual `async_to_sync(group_send)` cost ~3 ms.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import quote

import redis
import redis.asyncio as aioredis
from django.core.signals import setting_changed
from django.dispatch import receiver
from redis.asyncio.sentinel import Sentinel as AsyncSentinel
from redis.asyncio.sentinel import SentinelConnectionPool as AsyncSentinelPool
from redis.backoff import ExponentialBackoff
from redis.retry import Retry
from redis.sentinel import Sentinel

from progress.store import shards
from progress.store.script_runner import SOCKET_TIMEOUT, Arg, Call, ScriptRunner
from progress.store.servers import HostEntry, SentinelHost

logger = logging.getLogger(__name__)

HEALTH_CHECK_INTERVAL = 15
RETRIES = 6  # ~0.05 .. 1.6 s apart: rides out a Redis restart (or a fail-over) of a few seconds
ASYNC_POOL_SIZE = 50  # Redis connections per server process and shard for record reads
SENTINEL_CHECK_INTERVAL = 1.0  # seconds between asking the sentinels which server is master

_sync_clients: dict[int, list[redis.Redis]] = {}
_async_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, list[aioredis.Redis]] = (
    weakref.WeakKeyDictionary()
)


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
    pid = os.getpid()
    clients = _sync_clients.get(pid)
    if clients is None:
        clients = [_sync_client_of(host) for host in shards.servers()]
        _sync_clients.clear()
        _sync_clients[pid] = clients
    return clients


def sync_client(shard: int = 0) -> redis.Redis:
    """The client of one shard (the only one, by default)."""
    return sync_clients()[shard]


def _sync_client_of(host: HostEntry) -> redis.Redis:
    if isinstance(host, str):
        return redis.Redis.from_url(host, retry=_retry(), **_options())
    sentinels, master_options = _sentinel_args(host)
    sentinel = Sentinel(sentinels,  # type: ignore[no-untyped-call]
                        sentinel_kwargs=host.get("sentinel_kwargs"), **master_options)
    client: redis.Redis = sentinel.master_for(  # type: ignore[no-untyped-call]
        host["master_name"], retry=_retry(), **_options())
    return client


def async_clients() -> list[aioredis.Redis]:
    """This event loop's client of every shard."""
    loop = asyncio.get_running_loop()
    clients = _async_clients.get(loop)
    if clients is None:
        clients = _async_clients[loop] = [_async_client_of(host) for host in shards.servers()]
    return clients


def async_client(shard: int = 0) -> aioredis.Redis:
    return async_clients()[shard]


class _BlockingSentinelPool(AsyncSentinelPool, aioredis.BlockingConnectionPool):
    """A Sentinel master's pool that waits for a free connection, as the URL pool does."""


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
    sentinel = AsyncSentinel(sentinels,  # type: ignore[no-untyped-call]
                             sentinel_kwargs=host.get("sentinel_kwargs"), **master_options)
    client: aioredis.Redis = sentinel.master_for(
        host["master_name"], connection_pool_class=_BlockingSentinelPool, **pool_options)
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


class SentinelScriptRunner:
    """A ScriptRunner on the master the sentinels name, called as a ScriptRunner is.

    ScriptRunner's connection is opened from a URL, which cannot follow a
    fail-over, so this one asks the sentinels (through the shard's Sentinel
    pool) once a second, and at the next call after a connection error, and
    moves to a new master when they name one. Asking once a second matters: a
    master Sentinel replaced while it was alive keeps taking writes until it is
    demoted (~10 s), and loses all of them then; moving early only pauses live
    delivery (web processes listen to the old master until then), and the
    consumers' resync fills the pause in from history.
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
        if now >= self._next_check:
            with self._lock:
                self._next_check = now + SENTINEL_CHECK_INTERVAL
                self._follow_master()
        if self._runner is None:
            raise redis.ConnectionError("no Redis master known yet (the sentinels did not answer)")
        try:
            return call(self._runner)
        except (redis.ConnectionError, redis.TimeoutError):
            self._next_check = 0.0  # the master may have gone: ask at the next call
            raise

    def _follow_master(self) -> None:
        try:
            # (It also drops the pool's idle connections to a replaced master.)
            host, port = self._pool.get_master_address()
        except redis.ConnectionError as exc:  # no sentinel answers: keep the master we have
            logger.warning("TaskPulse: cannot ask the sentinels for the master: %s", exc)
            return
        if (host, port) != self._address:
            if self._runner is not None:
                self._runner.close()
            name = f"[{host}]" if ":" in host else host
            self._runner = _script_runner(f"redis://{self._auth}{name}:{port}/0", self._script)
            self._address = (host, port)

    def close(self) -> None:
        """Reconnect at the next call, after asking the sentinels again."""
        self._next_check = 0.0
        if self._runner is not None:
            self._runner.close()


@receiver(setting_changed)
def _forget_clients(setting: str = "", **_: Any) -> None:
    if setting in shards.SETTINGS:
        _sync_clients.clear()
        _async_clients.clear()
