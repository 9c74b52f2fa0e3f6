"""Start-up self-tests for the guards that take over a redis-py connection's socket
(progress/store/tuned/script_socket.py SCRIPT_RUNNER; consumers/server/socket_link.py through
consumers/server/compat.py SUBSCRIBER_SOCKET).

Each opens a redis-py connection the way TaskPulse does, to a throwaway
loopback stand-in that answers like Redis, then does what the tuned path does
with the socket or transport it takes over: write PING on it and read the
bytes back. A redis-py that keeps the socket elsewhere, or leaves a reply of
its own connection handshake unread (the tuned path would take it for the
answer to its first command), fails here instead of in production.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

PING = b"*1\r\n$4\r\nPING\r\n"
PONG = b"+PONG\r\n"
OK = b"+OK\r\n"
TIMEOUT = 2.0  # seconds any step of a self-test may take


def _commands(buffer: bytearray) -> Iterator[list[bytes]]:
    """Complete RESP commands (arrays of bulk strings) taken off the front of `buffer`."""
    while True:
        try:
            end = buffer.index(b"\r\n")
            count, at, args = int(buffer[1:end]), end + 2, []
            for _ in range(count):
                end = buffer.index(b"\r\n", at)
                size = int(buffer[at + 1:end])
                if len(buffer) < end + 2 + size + 2:
                    return
                args.append(bytes(buffer[end + 2:end + 2 + size]))
                at = end + 2 + size + 2
        except ValueError:  # not all of it has arrived
            return
        del buffer[:at]
        yield args


def _reply(args: list[bytes]) -> bytes:
    """+PONG to PING, HELLO's map (RESP3, redis-py's default), +OK to the rest (AUTH,
    SELECT, CLIENT SETNAME/SETINFO/MAINT_NOTIFICATIONS)."""
    command = args[0].upper() if args else b""
    if command == b"PING":
        return PONG
    if command == b"HELLO":
        proto = args[1] if len(args) > 1 else b"2"
        return (b"%%3\r\n$6\r\nserver\r\n$5\r\nredis\r\n$7\r\nversion\r\n$5\r\n7.4.0\r\n"
                b"$5\r\nproto\r\n:%s\r\n" % proto)
    return OK


def _answer(conn: socket.socket) -> None:
    buffer = bytearray()
    with conn:
        conn.settimeout(TIMEOUT)
        while data := conn.recv(65536):
            buffer += data
            conn.sendall(b"".join(map(_reply, _commands(buffer))))


@contextmanager
def stand_in() -> Iterator[str]:
    """A loopback server answering one connection like Redis; yields its redis:// URL."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(TIMEOUT)

    def serve() -> None:
        try:
            conn, _ = listener.accept()
            _answer(conn)
        except OSError:
            pass  # the self-test reports what it missed

    server = threading.Thread(target=serve, name="taskpulse-redis-stand-in", daemon=True)
    server.start()
    try:
        yield f"redis://127.0.0.1:{listener.getsockname()[1]}/0"
    finally:
        listener.close()
        server.join(TIMEOUT)


def _read_exactly(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size and (chunk := sock.recv(size - len(data))):
        data += chunk
    return data


def sync_socket_problems(client_name: str) -> list[str]:
    """What ScriptRunner does: redis-py connects on the first send_packed_command, then
    the reply is read straight off the connection's `_sock`."""
    import redis

    with stand_in() as url:
        pool = redis.ConnectionPool.from_url(url, socket_timeout=TIMEOUT,
                                             socket_connect_timeout=TIMEOUT,
                                             client_name=client_name)
        conn: Any = pool.make_connection()
        try:
            conn.send_packed_command([PING], check_health=False)
            sock = getattr(conn, "_sock", None)
            if not isinstance(sock, socket.socket):
                return [f"a connected redis-py connection's _sock is {type(sock).__name__}, "
                        "not a socket"]
            reply = _read_exactly(sock, len(PONG))
        finally:
            conn.disconnect()
            pool.disconnect()
    return [] if reply == PONG else [
        f"read {reply!r} off redis-py's socket after PING, not {PONG!r}"]


class _Collect(asyncio.Protocol):
    def __init__(self, stream: asyncio.BaseProtocol) -> None:
        self.stream = stream
        self.data = b""
        self.complete: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def data_received(self, data: bytes) -> None:
        self.data += data
        if self.data.endswith(PONG) and not self.complete.done():
            self.complete.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        self.stream.connection_lost(exc)  # as consumers/server/socket_link.py does
        if not self.complete.done():
            self.complete.set_result(None)


async def _take_over_transport(url: str) -> list[str]:
    from redis import asyncio as aioredis

    pool = aioredis.ConnectionPool.from_url(url, socket_timeout=TIMEOUT,
                                            socket_connect_timeout=TIMEOUT)
    conn: Any = pool.make_connection()  # type: ignore[no-untyped-call]
    await conn.connect()
    try:
        writer = getattr(conn, "_writer", None)
        transport = getattr(writer, "transport", None)
        if not isinstance(transport, asyncio.Transport):
            return [f"a connected redis-py asyncio connection's _writer.transport is "
                    f"{type(transport).__name__}, not an asyncio.Transport"]
        collect = _Collect(transport.get_protocol())
        transport.set_protocol(collect)
        transport.write(PING)
        try:
            await asyncio.wait_for(collect.complete, TIMEOUT)
        except TimeoutError:
            return ["nothing came through redis-py's asyncio transport after it was taken over"]
        reply = collect.data
    finally:
        await conn.disconnect()
        await pool.disconnect()
    # A reply redis-py left unread would do no harm here (the subscriber's parser
    # skips replies it does not wait for), but nothing else may come before PONG.
    return [] if reply in (PONG, OK + PONG) else [
        f"read {reply!r} off redis-py's asyncio transport after PING, not {PONG!r}"]


def async_transport_problems() -> list[str]:
    """What consumers/server/socket_link.py does: redis-py's asyncio connection connects, then its
    stream's transport gets a protocol of TaskPulse's. Run on a loop of its own in a
    thread (the first use may be inside a running loop)."""
    found: list[str] = []

    def run() -> None:
        try:
            with stand_in() as url:
                found.extend(asyncio.run(_take_over_transport(url)))
        except Exception as exc:  # reported as the self-test's failure
            found.append(f"taking over redis-py's asyncio transport failed: {exc!r}")

    thread = threading.Thread(target=run, name="taskpulse-redis-self-test", daemon=True)
    thread.start()
    thread.join(4 * TIMEOUT)
    return found if not thread.is_alive() else ["the redis-py asyncio self-test did not finish"]
