"""A web process's pub/sub connection to one Redis server, read with hiredis directly.

channels_redis reads its pub/sub connection one message at a time through
redis-py's `PubSub.get_message` (a timeout context, a retry wrapper, the
response parser's push handling, a message dict): a quarter of the server's
CPU when every frame is its own PUBLISH (docs/BENCHMARKS.md, "Profile"). Here
redis-py only opens the connection (so URLs, TLS, AUTH and Sentinel work as
for every other client); then the socket's bytes go straight into a hiredis
reader, and each message is handed to the layer as it is parsed.

Ordering is what makes subscribing safe: `subscribe` returns once Redis has
confirmed the SUBSCRIBE, so a record read after it cannot miss an event that
neither the read nor the subscription sees. After a reconnect every channel is
subscribed again and, once Redis has confirmed that (a PING answered after the
SUBSCRIBE), `on_reconnect` runs so consumers resync from the records.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import socket
from collections.abc import Callable
from typing import Any

import hiredis
from channels_redis.utils import create_pool
from redis import asyncio as aioredis
from redis.exceptions import RedisError

logger = logging.getLogger(__name__)

OnMessage = Callable[[bytes, bytes], None]
RETRY_FIRST, RETRY_MAX = 0.1, 2.0  # seconds between reconnect attempts, doubling
KEEPALIVE_IDLE, KEEPALIVE_INTERVAL = 30, 10  # seconds (see _keep_alive)


def pack(*args: bytes) -> bytes:
    """A command in RESP."""
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        parts.append(b"$%d\r\n%s\r\n" % (len(arg), arg))
    return b"".join(parts)


def _keep_alive(transport: asyncio.Transport) -> None:
    """TCP keepalive probes: a subscriber only reads, so without them a Redis that
    vanished without closing the connection (a partition, a dead host) would
    never be noticed; with them it is after ~KEEPALIVE_IDLE + 3 x KEEPALIVE_INTERVAL s."""
    sock = transport.get_extra_info("socket")
    if sock is None or sock.family not in (socket.AF_INET, socket.AF_INET6):
        return
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for option, value in (("TCP_KEEPIDLE", KEEPALIVE_IDLE), ("TCP_KEEPINTVL", KEEPALIVE_INTERVAL),
                          ("TCP_KEEPCNT", 3)):
        if hasattr(socket, option):  # Linux names; other systems keep their defaults
            sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, option), value)


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


class Subscriber:
    """Subscriptions of one process on one Redis server (a channels_redis "shard").

    Offers what channels_redis' pub/sub layer calls on a shard: subscribe,
    unsubscribe, publish, flush.
    """

    def __init__(self, host: dict[str, Any], on_message: OnMessage,
                 on_reconnect: Callable[[], None]) -> None:
        self.host = host
        self._on_message = on_message
        self._on_reconnect = on_reconnect
        self._channels: set[bytes] = set()
        # Per channel, one future per SUBSCRIBE sent and not yet confirmed (in order).
        self._confirming: dict[bytes, collections.deque[asyncio.Future[None]]] = {}
        self._protocol: _Protocol | None = None
        self._runner: asyncio.Task[None] | None = None
        self._publisher: aioredis.Redis | None = None
        # One pool for the subscriber's life: a Sentinel connection holds only a
        # weak reference to its pool, which finds it the current master.
        self._pool: Any = None
        self._connected_once = False
        self._announce_due = False

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
        transport = self._transport()
        if transport is None and self._connected_once:
            return
        confirmed = asyncio.get_running_loop().create_future()
        self._confirming.setdefault(name, collections.deque()).append(confirmed)
        if transport is not None:
            transport.write(pack(b"SUBSCRIBE", name))
        # else the first connection is being made: it subscribes every channel.
        await asyncio.shield(confirmed)

    async def unsubscribe(self, channel: str) -> None:
        name = channel.encode()
        if name in self._channels:
            self._channels.discard(name)
            transport = self._transport()
            if transport is not None:
                transport.write(pack(b"UNSUBSCRIBE", name))

    async def publish(self, channel: str, message: bytes) -> None:
        if self._publisher is None:
            self._publisher = aioredis.Redis(connection_pool=create_pool(self.host))
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

    def _transport(self) -> asyncio.Transport | None:
        protocol = self._protocol
        if protocol is None or protocol.transport is None or protocol.transport.is_closing():
            return None
        return protocol.transport

    def _ensure_running(self) -> None:
        if self._runner is None or self._runner.done():
            self._runner = asyncio.ensure_future(self._run())

    def _confirmed(self, name: bytes) -> None:
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
                connection, protocol = await self._connect()
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
                    await protocol.lost
                finally:
                    self._protocol = None
                    self._release_waiters(None)
                    await connection.disconnect()
                logger.warning("TaskPulse: channel layer lost its Redis connection; reconnecting")
                continue
            if not self._connected_once:
                self._release_waiters(ConnectionError(f"channel layer: {failure}"))
            await asyncio.sleep(delay)
            delay = min(delay * 2, RETRY_MAX)

    async def _connect(self) -> tuple[Any, _Protocol]:
        if self._pool is None:
            self._pool = create_pool(self.host)
        connection: Any = self._pool.make_connection()
        await connection.connect()
        # redis-py opened the stream (URL, TLS, AUTH, Sentinel); take over its transport.
        transport: asyncio.Transport = connection._writer.transport
        protocol = _Protocol(self._on_message, self._confirmed, self._announce,
                             transport.get_protocol())
        transport.set_protocol(protocol)
        protocol.transport = transport
        _keep_alive(transport)
        self._protocol = protocol
        self._announce_due = self._connected_once
        self._connected_once = True
        if self._channels:
            # Announce once Redis has answered the PING sent after the SUBSCRIBE.
            transport.write(pack(b"SUBSCRIBE", *self._channels) + pack(b"PING"))
        else:
            self._announce()
        return connection, protocol

    def _announce(self) -> None:
        if self._announce_due:
            self._announce_due = False
            self._on_reconnect()
