"""The launcher's pub/sub reader: hiredis on the socket redis-py opened
(consumers/tuning.py PubSubLinkOpener, installed by consumers/server/install.py).

channels_redis, and redis-py's public `PubSub` (consumers/subscriber.py
PubSubLink, the default), read a pub/sub connection one message at a time
through `PubSub.get_message` (a timeout context, a retry wrapper, the response
parser's push handling, a message dict): a quarter of the server's CPU when
every frame is its own PUBLISH (docs/BENCHMARKS.md, "Profile"). Here redis-py
only opens the connection (URLs, TLS, AUTH, Sentinel); then its transport is
taken over, its bytes go straight into a hiredis reader, and each message is
handed to the layer as it is parsed. Taking the socket over reads a private
attribute of redis-py's connection (`_writer`), so the launcher installs this
only while consumers/server/compat.py SUBSCRIBER_SOCKET passes.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import hiredis

from consumers.tuning import OnMessage, OnPong, OnSubscribed
from progress.store.resp import pack

logger = logging.getLogger(__name__)


class _Protocol(asyncio.Protocol):
    def __init__(self, on_message: OnMessage, on_subscribed: OnSubscribed,
                 on_pong: OnPong, stream: asyncio.BaseProtocol) -> None:
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


class SocketLink:
    """One connection, its socket read with hiredis (the tuned path)."""

    def __init__(self, connection: Any, protocol: _Protocol) -> None:
        self._connection = connection
        self.protocol = protocol
        self.lost = protocol.lost

    @classmethod
    async def open(cls, pool: Any, on_message: OnMessage, on_subscribed: OnSubscribed,
                   on_pong: OnPong) -> SocketLink:
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
