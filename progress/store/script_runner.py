"""One Lua script on one dedicated Redis connection, called with as little Python
as possible around the round trip.

redis-py's client path (pool checkout, retry wrapper, response callbacks)
costs more than the round trip itself on this hardware (see docs/BENCHMARKS.md,
"Publisher"); the publisher runs the same script thousands of times, so it
packs and sends EVALSHA on its own connection instead. Errors stay redis-py's
(`ConnectionError`, `TimeoutError`), so the outbox treats them as before.

Reading and writing the connection's socket (`_sock`) reaches into redis-py:
that part lives in progress/store/tuned/script_socket.py, guarded
(SCRIPT_RUNNER, progress/compat.py; its self-test writes and reads a connected
socket, progress/store/tuned/takeover_check.py). On a redis-py that no longer
passes it, the same calls go through redis-py's public client
(`evalsha`, a pipeline for `many`), one log line says so, and a published
call costs about one client round trip more (docs/BENCHMARKS.md, "Publisher").
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Sequence
from typing import Any

import redis
from redis.exceptions import NoScriptError

from progress import compat
from progress.store.resp import array_header, pack_bulk
from progress.store.tuned.script_socket import CLIENT_NAME, SCRIPT_RUNNER, SocketCalls

# Seconds a Redis connection may take to connect or answer (every TaskPulse client).
SOCKET_TIMEOUT = 5.0

MAX_HEADS = 4096  # packed command heads kept: a few per task publishing in this process

Arg = str | int | float | bytes
Call = tuple[Sequence[str], Sequence[Arg], Sequence[Arg]]  # keys, args, leading



class ScriptRunner:
    """Thread-safe: calls are serialised on the one connection (they are one round trip each)."""

    def __init__(self, url: str, script: str, client_name: str = CLIENT_NAME) -> None:
        self._script = script
        self._sha = hashlib.sha1(script.encode()).hexdigest()
        self._sha_bytes = self._sha.encode()
        self._pool = redis.ConnectionPool.from_url(
            url, socket_timeout=SOCKET_TIMEOUT, socket_connect_timeout=SOCKET_TIMEOUT,
            client_name=client_name)
        # redis-py's connection methods are untyped; this class is their typed face.
        self._conn: Any = self._pool.make_connection()
        self._lock = threading.Lock()
        self._socket = SocketCalls()  # the tuned path: EVALSHA on redis-py's socket
        self._heads: dict[tuple[tuple[str, ...], tuple[Arg, ...], int], bytes] = {}
        # The public path, when the guard is off: redis-py's client on the same pool.
        self._client: redis.Redis | None = (
            None if compat.enabled(SCRIPT_RUNNER) else redis.Redis(connection_pool=self._pool))

    def __call__(self, keys: Sequence[str], args: Sequence[Arg],
                 leading: Sequence[Arg] = ()) -> Any:
        """EVALSHA with KEYS `keys` and ARGV `leading` followed by `args`.

        The command up to `args` is packed once and the bytes reused, so pass
        in `leading` what repeats from call to call (a task's events repeat
        their keys and most arguments) and in `args` only what changes.
        """
        if self._client is not None:
            with self._lock:
                return self._client_call(self._client, keys, leading, args)
        packed = self._pack(keys, leading, args)
        with self._lock:
            try:
                return self._evalsha(packed)
            except (redis.ConnectionError, redis.TimeoutError):
                # An idle connection the server (or a restart) closed: one fresh try,
                # then the caller (the outbox) decides what to do. The call may have
                # run before the connection failed: the record script takes each
                # event once (its event id, lua.record_event), so a retry is safe.
                self._conn.disconnect()
                return self._evalsha(packed)

    def many(self, calls: Sequence[Call]) -> list[Any]:
        """Several calls (keys, args, leading) in one round trip, pipelined; their replies
        in order. The first goes alone when the script may not be loaded yet."""
        if self._client is not None:
            return self._client_many(self._client, calls)
        packed = [self._pack(keys, leading, args) for keys, args, leading in calls]
        if not packed:
            return []
        with self._lock:
            replies = [self._evalsha(packed[0])]
            conn = self._conn
            self._socket.send(conn, b"".join(packed[1:]))
            # Read every reply before raising: one left unread would be taken for the
            # answer to the next call. Any other failure drops the connection.
            errors: list[redis.ResponseError] = []
            try:
                for _ in packed[1:]:
                    try:
                        replies.append(self._socket.read(conn))
                    except redis.ResponseError as exc:
                        errors.append(exc)
                        replies.append(exc)
            except BaseException:
                conn.disconnect()
                raise
            if errors:
                raise errors[0]
            return replies

    def _evalsha(self, packed: bytes) -> Any:
        conn = self._conn
        self._socket.send(conn, packed)
        try:
            return self._socket.read(conn)
        except NoScriptError:  # first call on this server, or after SCRIPT FLUSH / restart
            conn.send_command("SCRIPT", "LOAD", self._script)
            conn.read_response()
            return self._evalsha(packed)

    def _pack(self, keys: Sequence[str], leading: Sequence[Arg], args: Sequence[Arg]) -> bytes:
        # RESP by hand: redis-py's pack_command costs a fifth of the whole call here.
        shape = (tuple(keys), tuple(leading), len(args))
        head = self._heads.get(shape)
        if head is None:
            if len(self._heads) >= MAX_HEADS:
                self._heads.clear()
            head = self._heads[shape] = self._pack_head(*shape)
        return head + pack_bulk([value.encode() if type(value) is str else _to_bytes(value)
                                 for value in args])

    def _pack_head(self, keys: tuple[str, ...], leading: tuple[Arg, ...], n_args: int) -> bytes:
        """EVALSHA, the sha, KEYS and the leading ARGV of a call with `n_args` more."""
        values = [_to_bytes(value) for value in (*keys, *leading)]
        return array_header(len(values) + n_args + 3) + pack_bulk(
            [b"EVALSHA", self._sha_bytes, str(len(keys)).encode(), *values])

    def _client_call(self, client: redis.Redis, keys: Sequence[str], leading: Sequence[Arg],
                     args: Sequence[Arg]) -> Any:
        try:
            return client.evalsha(self._sha, len(keys), *keys, *leading, *args)
        except NoScriptError:
            client.script_load(self._script)
            return client.evalsha(self._sha, len(keys), *keys, *leading, *args)

    def _client_many(self, client: redis.Redis, calls: Sequence[Call]) -> list[Any]:
        if not calls:
            return []
        with self._lock:
            (keys, args, leading), rest = calls[0], calls[1:]
            replies = [self._client_call(client, keys, leading, args)]  # loads the script
            if rest:
                pipe = client.pipeline(transaction=False)
                for keys, args, leading in rest:
                    pipe.evalsha(self._sha, len(keys), *keys, *leading, *args)
                replies += pipe.execute()
            return replies

    def close(self) -> None:
        with self._lock:
            if self._client is not None:
                self._pool.disconnect()
            self._conn.disconnect()


def _to_bytes(value: Arg) -> bytes:
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, bytes):
        return value
    if isinstance(value, float):
        return repr(value).encode()
    return str(value).encode()
