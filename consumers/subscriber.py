"""A web process's pub/sub connection to one Redis server.

channels_redis reads its pub/sub connection one message at a time through
redis-py's `PubSub.get_message` (a timeout context, a retry wrapper, the
response parser's push handling, a message dict): a quarter of the server's
CPU when every frame is its own PUBLISH (docs/BENCHMARKS.md, "Profile"). Here
redis-py only opens the connection (so URLs, TLS, AUTH and Sentinel work as
for every other client); then the socket's bytes go straight into a hiredis
reader, and each message is handed to the layer as it is parsed. Taking the
socket over reads a private attribute of redis-py's connection (`_writer`),
so it is guarded (consumers/compat.py SUBSCRIBER_SOCKET): on a redis-py the
suite did not run with, the same connection is read through redis-py's
public `PubSub` instead (`_PubSubLink`), with the same promises below.

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

import hiredis
from redis import asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from progress.compat import enabled

logger = logging.getLogger(__name__)

OnMessage = Callable[[bytes, bytes], None]
RETRY_FIRST, RETRY_MAX = 0.1, 2.0  # seconds between reconnect attempts, doubling
# TCP keepalive probes: a subscriber only reads, so without them a Redis that
# vanished without closing the connection (a partition, a dead host) would
# never be noticed; with them it is after ~KEEPALIVE_IDLE + 3 x KEEPALIVE_INTERVAL s.
KEEPALIVE_IDLE, KEEPALIVE_INTERVAL, KEEPALIVE_COUNT = 30, 10, 3
PUBSUB_READ_TIMEOUT = 1.0  # seconds a _PubSubLink read waits before it looks again


def pack(*args: bytes) -> bytes:
    """A command in RESP."""
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        parts.append(b"$%d\r\n%s\r\n" % (len(arg), arg))
    return b"".join(parts)


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
        sentinel = Sentinel(  # type: ignore[no-untyped-call]
            sentinels, sentinel_kwargs=host.pop("sentinel_kwargs", None))
        pool = SentinelConnectionPool(master, sentinel, **host)  # type: ignore[no-untyped-call]
    else:
        pool = aioredis.ConnectionPool(**host)
    if issubclass(pool.connection_class, aioredis.Connection):  # TCP (not a Unix socket)
        pool.connection_kwargs.update(socket_keepalive=True,
                                      socket_keepalive_options=_keepalive_options())
    pool.connection_kwargs["retry"] = Retry(NoBackoff(), 0)
    return pool


class _Protocol(asyncio.Protocol):
    def __init__(self, on_message: OnMessage, on_subscribed: Callable[[bytes], None],
                 on_pong: Callable[[], None], stream: asyncio.BaseProtocol) -> None:
        self._parser = hiredis.Reader()
        self._stream = stream
        self._on_message = on_message
        self._on_subscribed = on_subscribed
        self._on_pong = on_pong
        self.transport: asyncio.Transport | None = None
        self.lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def data_received(self, data: bytes) -> None:
        self._parser.feed(data)
        try:
            while (reply := self._parser.gets()) is not False:
                # RESP2 answers in arrays, RESP3 in push notifications (a list
                # subclass), and PING in subscribed mode with ["pong", ""] or +PONG.
                kind = reply[0] if isinstance(reply, list) else reply
                if kind == b"message":
                    self._on_message(reply[1], reply[2])
                elif kind == b"subscribe":
                    self._on_subscribed(reply[1])
                elif kind == b"pong" or kind == b"PONG":
                    self._on_pong()
                elif isinstance(reply, hiredis.ReplyError):
                    logger.error("TaskPulse: Redis refused a pub/sub command: %s", reply)
        except hiredis.ProtocolError:
            logger.exception("TaskPulse: unreadable reply on the pub/sub connection; reconnecting")
            if self.transport is not None:
                self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        # Tell the stream redis-py opened too, so its connection closes cleanly.
        self._stream.connection_lost(exc)
        if not self.lost.done():
            self.lost.set_result(None)


class _SocketLink:
    """One connection, its socket read with hiredis (the tuned path)."""

    def __init__(self, connection: Any, protocol: _Protocol) -> None:
        self._connection = connection
        self.protocol = protocol
        self.lost = protocol.lost

    @classmethod
    async def open(cls, pool: Any, on_message: OnMessage,
                   on_subscribed: Callable[[bytes], None],
                   on_pong: Callable[[], None]) -> _SocketLink:
        connection: Any = pool.make_connection()
        await connection.connect()
        # redis-py opened the stream (URL, TLS, AUTH, Sentinel); take over its transport.
        transport: asyncio.Transport = connection._writer.transport
        protocol = _Protocol(on_message, on_subscribed, on_pong, transport.get_protocol())
        transport.set_protocol(protocol)
        protocol.transport = transport
        return cls(connection, protocol)

    @property
    def transport(self) -> asyncio.Transport | None:
        transport = self.protocol.transport
        return None if transport is None or transport.is_closing() else transport

    @property
    def alive(self) -> bool:
        return self.transport is not None

    async def send(self, *commands: tuple[bytes, ...]) -> None:
        transport = self.transport
        if transport is not None:
            transport.write(b"".join(pack(*command) for command in commands))

    async def close(self) -> None:
        await self._connection.disconnect()


class _PubSubLink:
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
                   on_pong: Callable[[], None]) -> _PubSubLink:
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
    def transport(self) -> None:
        return None

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
        from consumers.compat import SUBSCRIBER_SOCKET

        self.host = host
        self._on_message = on_message
        self._on_reconnect = on_reconnect
        self._link_class: Any = _SocketLink if enabled(SUBSCRIBER_SOCKET) else _PubSubLink
        self._channels: set[bytes] = set()
        # Per channel, one future per SUBSCRIBE sent and not yet confirmed (in order).
        self._confirming: dict[bytes, collections.deque[asyncio.Future[None]]] = {}
        self._link: _SocketLink | _PubSubLink | None = None
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

    def _live_link(self) -> _SocketLink | _PubSubLink | None:
        link = self._link
        return link if link is not None and link.alive else None

    def _transport(self) -> asyncio.Transport | None:
        """The socket's transport (the tuned path only; None while reconnecting)."""
        link = self._live_link()
        return None if link is None else link.transport

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
                    await link.lost
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

    async def _connect(self) -> _SocketLink | _PubSubLink:
        if self._pool is None:
            self._pool = pool_for(self.host)
        link: _SocketLink | _PubSubLink = await self._link_class.open(
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
