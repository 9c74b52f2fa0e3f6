"""A web process's pub/sub connection to one Redis server.

redis-py opens the connection (so URLs, TLS, AUTH and Sentinel work as for
every other client) and, by default, reads it through its public `PubSub`
(`PubSubLink`). The launcher installs a faster reader in its place
(consumers/tuning.py PubSubLinkOpener; consumers/server/socket_link.py, hiredis
on the socket, docs/BENCHMARKS.md "Profile"); both keep the promises below.

Ordering is what makes subscribing safe: `subscribe` returns once Redis has
confirmed the SUBSCRIBE, so a record read after it cannot miss an event that
neither the read nor the subscription sees. After a reconnect every channel is
subscribed again and, once Redis has confirmed that (a PING answered after the
SUBSCRIBE), `on_reconnect` runs so consumers resync from the records.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import socket
from collections.abc import Callable
from typing import Any

from redis import asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import SentinelConnectionPool
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from consumers import tuning
from progress.store.sentinel import SENTINEL_CHECK_INTERVAL, AsyncMajoritySentinel, last_named

logger = logging.getLogger(__name__)

OnMessage = tuning.OnMessage
RETRY_FIRST, RETRY_MAX = 0.1, 2.0  # seconds between reconnect attempts, doubling
# TCP keepalive probes: a subscriber only reads, so without them a Redis that
# vanished without closing the connection (a partition, a dead host) would
# never be noticed; with them it is after ~KEEPALIVE_IDLE + 3 x KEEPALIVE_INTERVAL s.
KEEPALIVE_IDLE, KEEPALIVE_INTERVAL, KEEPALIVE_COUNT = 30, 10, 3
PUBSUB_READ_TIMEOUT = 1.0  # seconds a PubSubLink read waits before it looks again


def _keepalive_options() -> dict[int, int]:
    options = {}
    for name, value in (("TCP_KEEPIDLE", KEEPALIVE_IDLE), ("TCP_KEEPINTVL", KEEPALIVE_INTERVAL),
                        ("TCP_KEEPCNT", KEEPALIVE_COUNT)):
        if hasattr(socket, name):  # Linux names; other systems keep their defaults
            options[getattr(socket, name)] = value
    return options


def pool_for(host: dict[str, Any]) -> Any:
    """A redis-py pool for one channels_redis host entry (a URL in "address", a Sentinel
    master, or connection arguments), with keepalive probes on TCP and no silent
    reconnects (a reconnect must be seen, to resync: see Subscriber._run)."""
    host = dict(host)
    if "address" in host:
        pool = aioredis.ConnectionPool.from_url(host.pop("address"), **host)
    elif "master_name" in host:
        master, sentinels = host.pop("master_name"), host.pop("sentinels")
        sentinel = AsyncMajoritySentinel(
            sentinels, sentinel_kwargs=host.pop("sentinel_kwargs", None))
        pool = SentinelConnectionPool(master, sentinel, **host)  # type: ignore[no-untyped-call]
    else:
        pool = aioredis.ConnectionPool(**host)
    if issubclass(pool.connection_class, aioredis.Connection):  # TCP (not a Unix socket)
        pool.connection_kwargs.update(socket_keepalive=True,
                                      socket_keepalive_options=_keepalive_options())
    pool.connection_kwargs["retry"] = Retry(NoBackoff(), 0)
    return pool


class PubSubLink:
    """One connection, read through redis-py's public PubSub (the guard's fallback).

    redis-py reconnects a PubSub by itself and subscribes it again, which
    would hide the gap from the consumers: any connect after the first marks
    this link lost, so Subscriber._run opens a new one and announces it."""

    def __init__(self, pool: Any, on_message: OnMessage,
                 on_subscribed: Callable[[bytes], None], on_pong: Callable[[], None]) -> None:
        self._pubsub: Any = aioredis.Redis(connection_pool=pool).pubsub()
        self._on_message = on_message
        self._on_subscribed = on_subscribed
        self._on_pong = on_pong
        self.lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._reader: asyncio.Future[None] | None = None
        self._unheard_pongs = 1  # the answer to open()'s PING announces nothing

    @classmethod
    async def open(cls, pool: Any, on_message: OnMessage,
                   on_subscribed: Callable[[bytes], None],
                   on_pong: Callable[[], None]) -> PubSubLink:
        link = cls(pool, on_message, on_subscribed, on_pong)
        try:
            await link._pubsub.ping()  # connects (or raises); its PONG is read below
            link._pubsub.connection.register_connect_callback(link._reconnected)
        except BaseException:
            await link.close()
            raise
        link._reader = asyncio.ensure_future(link._read())
        return link

    @property
    def alive(self) -> bool:
        return not self.lost.done()

    def _reconnected(self, _connection: Any) -> None:
        self._lose()

    def _lose(self) -> None:
        if not self.lost.done():
            self.lost.set_result(None)

    async def _read(self) -> None:
        try:
            while self.alive:
                message = await self._pubsub.get_message(timeout=PUBSUB_READ_TIMEOUT)
                if message is None:
                    continue
                kind = message["type"]
                if kind == "message":
                    self._on_message(message["channel"], message["data"])
                elif kind == "subscribe":
                    self._on_subscribed(message["channel"])
                elif kind == "pong":
                    if self._unheard_pongs:
                        self._unheard_pongs -= 1
                    else:
                        self._on_pong()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the connection (or redis-py) failed: reconnect
            logger.debug("TaskPulse: pub/sub read failed: %r", exc)
        self._lose()

    async def send(self, *commands: tuple[bytes, ...]) -> None:
        if not self.alive:
            return
        try:
            for command, *names in commands:
                if command == b"SUBSCRIBE":
                    await self._pubsub.subscribe(*names)
                elif command == b"UNSUBSCRIBE":
                    await self._pubsub.unsubscribe(*names)
                else:
                    await self._pubsub.execute_command(command, *names)
        except (RedisError, OSError):
            self._lose()

    async def close(self) -> None:
        self._lose()
        reader, self._reader = self._reader, None
        if reader is not None and reader is not asyncio.current_task():
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)
        with contextlib.suppress(RedisError, OSError):
            await self._pubsub.aclose()


class Subscriber:
    """Subscriptions of one process on one Redis server (a shard).

    Offers what the layer calls on a shard: subscribe, unsubscribe, publish, flush.
    """

    def __init__(self, host: dict[str, Any], on_message: OnMessage,
                 on_reconnect: Callable[[], None]) -> None:
        self.host = host
        self._on_message = on_message
        self._on_reconnect = on_reconnect
        self._open_link: tuning.PubSubLinkOpener = (
            tuning.INSTALLED.pubsub_link or PubSubLink.open)
        self._channels: set[bytes] = set()
        # Per channel, one future per SUBSCRIBE sent and not yet confirmed (in order).
        self._confirming: dict[bytes, collections.deque[asyncio.Future[None]]] = {}
        self._link: tuning.PubSubLink | None = None
        self._runner: asyncio.Task[None] | None = None
        self._publisher: aioredis.Redis | None = None
        # One pool for the subscriber's life: a Sentinel connection holds only a
        # weak reference to its pool, which finds it the current master.
        self._pool: Any = None
        self._connected_once = False
        self._announce_due = False
        self._resubscribing: set[bytes] = set()  # channels a reconnect has yet to confirm

    async def subscribe(self, channel: str) -> None:
        """Return once Redis confirms the subscription (or, while reconnecting, at once:
        the resync after the reconnect covers it)."""
        name = channel.encode()
        self._ensure_running()
        if name in self._channels:
            waiting = self._confirming.get(name)
            if waiting:
                await asyncio.shield(waiting[-1])
            return
        self._channels.add(name)
        link = self._live_link()
        if link is None and self._connected_once:
            return
        confirmed = asyncio.get_running_loop().create_future()
        self._confirming.setdefault(name, collections.deque()).append(confirmed)
        if link is not None:
            await link.send((b"SUBSCRIBE", name))
        # else the first connection is being made: it subscribes every channel.
        await asyncio.shield(confirmed)

    async def unsubscribe(self, channel: str) -> None:
        name = channel.encode()
        if name in self._channels:
            self._channels.discard(name)
            link = self._live_link()
            if link is not None:
                await link.send((b"UNSUBSCRIBE", name))

    async def publish(self, channel: str, message: bytes) -> None:
        if self._publisher is None:
            self._publisher = aioredis.Redis(connection_pool=pool_for(self.host))
        await self._publisher.publish(channel, message)

    async def flush(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            runner.cancel()
            await asyncio.gather(runner, return_exceptions=True)
        if self._publisher is not None:
            await self._publisher.aclose(close_connection_pool=True)
            self._publisher = None
        self._channels.clear()
        self._release_waiters(None)
        self._connected_once = False
        self._pool = None

    def _live_link(self) -> tuning.PubSubLink | None:
        link = self._link
        return link if link is not None and link.alive else None

    def _ensure_running(self) -> None:
        if self._runner is None or self._runner.done():
            self._runner = asyncio.ensure_future(self._run())

    def _confirmed(self, name: bytes) -> None:
        if self._resubscribing:
            # A reconnect is announced once every channel is subscribed again: on
            # the confirmations themselves, not on a PING answered after them,
            # which a loading Redis refuses (-LOADING) while it takes SUBSCRIBE.
            self._resubscribing.discard(name)
            if not self._resubscribing:
                self._announce()
        waiting = self._confirming.get(name)
        if waiting:
            waiter = waiting.popleft()
            if not waiting:
                del self._confirming[name]
            if not waiter.done():
                waiter.set_result(None)

    def _release_waiters(self, error: Exception | None) -> None:
        # The connection is gone. Once it had been made, whoever waits for a
        # confirmation is covered by the resync that follows the reconnect;
        # before that, the subscriber is told it failed.
        waiting, self._confirming = self._confirming, {}
        for waiters in waiting.values():
            for waiter in waiters:
                if waiter.done():
                    continue
                if error is None:
                    waiter.set_result(None)
                else:
                    waiter.set_exception(error)

    async def _run(self) -> None:
        delay = RETRY_FIRST
        while True:
            try:
                link = await self._connect()
            except (TimeoutError, OSError, RedisError) as exc:
                logger.warning("TaskPulse: channel layer cannot reach Redis (%s); "
                               "retrying in %.1fs", exc, delay)
                failure: Exception = exc
            except Exception as exc:  # a bug must not end the reader silently
                logger.exception("TaskPulse: channel layer failed to connect; retrying in %.1fs",
                                 delay)
                failure = exc
            else:
                delay = RETRY_FIRST
                try:
                    await self._until_lost_or_moved(link)
                finally:
                    self._link = None
                    self._release_waiters(None)
                    await link.close()
                logger.warning("TaskPulse: channel layer lost its Redis connection; reconnecting")
                continue
            if not self._connected_once:
                self._release_waiters(ConnectionError(f"channel layer: {failure}"))
            await asyncio.sleep(delay)
            delay = min(delay * 2, RETRY_MAX)

    async def _until_lost_or_moved(self, link: tuning.PubSubLink) -> None:
        """Until the connection is lost or, on a Sentinel master, the sentinels name
        another master: a master replaced while alive keeps its subscribers until it
        is demoted, seconds after the publishers moved, and they would hear nothing."""
        pool = self._pool
        if not isinstance(pool, SentinelConnectionPool):
            await link.lost
            return
        connected_to = pool.master_address  # set when the connection was opened
        while True:
            await asyncio.wait([link.lost], timeout=SENTINEL_CHECK_INTERVAL)
            if link.lost.done():
                return
            # Another client in this process (a record read) may have found it already.
            named = last_named(pool.sentinel_manager, pool.service_name)
            if named is None or named == connected_to:
                try:
                    named = await pool.get_master_address()  # type: ignore[no-untyped-call]
                except (RedisError, OSError) as exc:
                    logger.warning("TaskPulse: cannot ask the sentinels for the master: %s", exc)
                    continue
            if connected_to is not None and named != connected_to:
                logger.warning("TaskPulse: the Redis master moved to %s:%s; subscribing there",
                               *named)
                return

    async def _connect(self) -> tuning.PubSubLink:
        if self._pool is None:
            self._pool = pool_for(self.host)
        link = await self._open_link(
            self._pool, self._on_message, self._confirmed, self._announce)
        self._link = link
        self._announce_due = self._connected_once
        self._connected_once = True
        if self._channels:
            # Announce once Redis confirmed every channel (or answered the PING
            # sent after the SUBSCRIBE, whichever it does first).
            self._resubscribing = set(self._channels)
            await link.send((b"SUBSCRIBE", *self._channels), (b"PING",))
        else:
            self._announce()
        return link

    def _announce(self) -> None:
        if self._announce_due:
            self._announce_due = False
            self._on_reconnect()
