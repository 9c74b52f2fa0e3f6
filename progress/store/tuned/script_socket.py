"""The publisher's EVALSHA written and read on redis-py's own socket.

redis-py's client path (pool checkout, retry wrapper, response callbacks, and
`read_response()`'s layers around its hiredis parser, ~5 µs a call) costs more
than the round trip itself (docs/BENCHMARKS.md, "Publisher"). redis-py still
opens the connection (auth, db, TLS); then the packed command is written on
its socket (`_sock`, a private attribute) and the reply parsed by hiredis off
it. So it is guarded (SCRIPT_RUNNER; its self-test: takeover_check.py), and
progress/store/script_runner.py uses it only while the guard passes.
"""

from __future__ import annotations

from typing import Any

import redis
from redis.exceptions import NoScriptError

from progress import compat
from progress.store.tuned import takeover_check

try:
    import hiredis

    HAVE_HIREDIS = True
except ImportError:  # optional: redis-py's own reply parsing is used instead
    HAVE_HIREDIS = False

READ_CHUNK = 65536
CLIENT_NAME = "taskpulse-publisher"  # how the connection shows in CLIENT LIST


def _socket_takeover_works() -> list[str]:
    """Self-test: a connection opened as ScriptRunner opens it answers on its `_sock`."""
    return takeover_check.sync_socket_problems(CLIENT_NAME)


SCRIPT_RUNNER = compat.Guard(
    name="the publisher's direct EVALSHA",
    fallback="published calls go through redis-py's client (evalsha, pipelines)",
    distributions=("redis",),
    requires=(
        "redis.connection:ConnectionPool.from_url",
        "redis.connection:ConnectionPool.make_connection",
        "redis.connection:AbstractConnection.send_packed_command",
        "redis.connection:AbstractConnection.send_command",
        "redis.connection:AbstractConnection.read_response",
        "redis.connection:AbstractConnection.disconnect",
        "redis.exceptions:NoScriptError",
    ),
    assigns=(("redis.connection:AbstractConnection.connect_check_health", ("_sock",)),),
    calls=(
        ("redis.connection:ConnectionPool.from_url",
         "url, socket_timeout=, socket_connect_timeout=, client_name="),
        ("redis.connection:ConnectionPool.make_connection", "self"),
        ("redis.connection:AbstractConnection.send_packed_command",
         "self, command, check_health="),
        ("redis.connection:AbstractConnection.send_command", "self, name, script, source"),
        ("redis.connection:AbstractConnection.read_response", "self"),
        ("redis.connection:AbstractConnection.disconnect", "self"),
    ),
    extra=(_socket_takeover_works,),
)


class SocketCalls:
    """Writes and reads one redis-py connection's socket (the caller serialises calls)."""

    __slots__ = ("_reader", "_reader_sock")

    def __init__(self) -> None:
        self._reader: Any = None  # hiredis.Reader of the current socket
        self._reader_sock: Any = None

    def send(self, conn: Any, packed: bytes) -> None:
        sock = getattr(conn, "_sock", None)
        if not HAVE_HIREDIS or sock is None:  # not connected yet: redis-py connects
            conn.send_packed_command([packed], check_health=False)
            return
        try:
            sock.sendall(packed)
        except OSError as exc:
            raise _dropped(conn, "sending to Redis", exc) from exc

    def read(self, conn: Any) -> Any:
        """The reply, parsed by hiredis straight off the socket when it is installed.

        redis-py's read_response() wraps its (hiredis) parser in several layers
        that cost ~5 µs a call; redis-py still opens the socket (auth, db, TLS).
        """
        sock = getattr(conn, "_sock", None)
        if not HAVE_HIREDIS or sock is None:
            return conn.read_response()
        reader = self._reader
        if reader is None or self._reader_sock is not sock:
            reader = self._reader = hiredis.Reader()
            self._reader_sock = sock
        reply = reader.gets()
        try:
            while reply is False:
                data = sock.recv(READ_CHUNK)
                if not data:
                    raise redis.ConnectionError("Redis closed the connection")
                reader.feed(data)
                reply = reader.gets()
        except redis.ConnectionError:
            conn.disconnect()
            raise
        except OSError as exc:
            raise _dropped(conn, "reading from Redis", exc) from exc
        if isinstance(reply, hiredis.ReplyError):
            message = str(reply)
            if message.startswith("NOSCRIPT"):
                raise NoScriptError(message)
            raise redis.ResponseError(message)
        return reply


def _dropped(conn: Any, doing: str, exc: OSError) -> redis.RedisError:
    """Drop the connection (redis-py reconnects on the next call; the outbox decides
    whether to retry) and say what failed as redis-py would.

    try/except rather than a context manager: this wraps every published call,
    and an unraised try costs nothing."""
    conn.disconnect()
    if isinstance(exc, TimeoutError):
        return redis.TimeoutError(f"{doing} timed out: {exc}")
    return redis.ConnectionError(f"{doing} failed: {exc}")
