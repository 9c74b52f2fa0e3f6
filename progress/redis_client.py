"""Redis connections: one pool per process for sync code, one per event loop for async.

The worker's publisher keeps its connection open across calls: opening one
per call is what makes the usual `async_to_sync(group_send)` cost ~3 ms.
"""

import asyncio
import os
import weakref

import redis
import redis.asyncio as aioredis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from progress import conf

SOCKET_TIMEOUT = 5.0
HEALTH_CHECK_INTERVAL = 15
RETRIES = 6  # ~0.05 .. 1.6 s apart: rides out a Redis restart of a few seconds
ASYNC_POOL_SIZE = 50  # Redis connections per server process for record reads

_sync_clients: dict[int, redis.Redis] = {}
_async_clients: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, aioredis.Redis]" = (
    weakref.WeakKeyDictionary()
)


def _retry() -> Retry:
    return Retry(ExponentialBackoff(cap=1.6, base=0.05), RETRIES)


def sync_client() -> redis.Redis:
    """This process's client; a forked pool child gets its own, never its parent's sockets."""
    pid = os.getpid()
    client = _sync_clients.get(pid)
    if client is None:
        client = redis.Redis.from_url(
            conf.redis_url(),
            socket_timeout=SOCKET_TIMEOUT,
            socket_connect_timeout=SOCKET_TIMEOUT,
            health_check_interval=HEALTH_CHECK_INTERVAL,
            retry=_retry(),
            retry_on_error=[redis.ConnectionError, redis.TimeoutError],
        )
        _sync_clients.clear()
        _sync_clients[pid] = client
    return client


def async_client() -> aioredis.Redis:
    loop = asyncio.get_running_loop()
    client = _async_clients.get(loop)
    if client is None:
        # A blocking pool: when many clients subscribe at once, reads wait for
        # a free connection. redis-py's default pool refuses past 100 in use
        # ("Too many connections"), which a storm of subscribers reached.
        pool = aioredis.BlockingConnectionPool.from_url(
            conf.redis_url(),
            max_connections=ASYNC_POOL_SIZE,
            timeout=SOCKET_TIMEOUT,
            socket_timeout=SOCKET_TIMEOUT,
            socket_connect_timeout=SOCKET_TIMEOUT,
            health_check_interval=HEALTH_CHECK_INTERVAL,
            retry=aioredis.retry.Retry(ExponentialBackoff(cap=1.6, base=0.05), RETRIES),
            retry_on_error=[redis.ConnectionError, redis.TimeoutError],
        )
        client = aioredis.Redis.from_pool(pool)
        _async_clients[loop] = client
    return client
